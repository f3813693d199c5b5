"""The closed loop as in a cluster, on the sandbox's real node: the chart's operator (a pod) -> model-server
and router pods from shoal's images under the kubelet -> Prometheus (kubernetes_sd) -> autoscaler -> the
Service's ClusterIP -> router (EndpointSlice discovery) -> pods, under open-loop load from the batch client.
Bounded in time; the simulated engine keeps it light."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest
from e2e.support import Kube, eventually, ready_pods
from shoal_common import names
from shoal_sandbox.cluster import ClusterStack as Stack
from shoal_sandbox.stack_support import condition, load_example, prepare_model

pytestmark = [pytest.mark.e2e]

MODEL_PODS = f"{names.LABEL_COMPONENT}={names.COMPONENT_MODEL_SERVER}"


def sim_isvc(name: str, *, autoscaling: dict[str, Any] | None, replicas: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"name": name, "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
        "engine": {
            "kind": "sim",
            "sim": {
                "prefillTokensPerSecond": 4000,
                "decodeTokensPerSecond": 20,
                "maxBatch": 4,
                "startupSeconds": 1,
            },
        },
        "resources": {"gpus": 1, "cpu": "100m", "memory": "1Gi"},  # 6 replicas fit the 2-core node
        "serving": {
            "maxQueuePerReplica": 500,
            "maxConcurrency": 4,
            "requestTimeoutSeconds": 300,
            "drainSeconds": 30,
        },
        "routing": {"strategy": "LeastLoad"},
    }
    if autoscaling is not None:
        spec["autoscaling"] = autoscaling
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "shoal.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": spec,
    }


FAST_BEHAVIOR = {
    "scaleUp": {"stabilizationSeconds": 0, "periodSeconds": 2, "maxPercentPerStep": 500},
    "scaleDown": {"stabilizationSeconds": 20, "periodSeconds": 5, "maxPercentPerStep": 100},
}


def wait_router(stack: Stack, ns: str, name: str, timeout: float = 120) -> str:
    url: str = eventually(
        lambda: stack.router_url(ns, name), timeout=timeout, what=f"a ready router for {name}"
    )
    return url


def run_load(url: str, points: tuple[tuple[float, float], ...], max_tokens: int = 10) -> Any:
    from shoal_batch.config import LoadConfig
    from shoal_batch.runner import run_open_loop_async
    from shoal_batch.schedule import RateCurve

    cfg = LoadConfig(
        endpoints=[url],
        curve=RateCurve(points=points),
        max_attempts=1,  # no client retries: every failure the system lets through counts
        timeout_s=300.0,
        params={"max_tokens": max_tokens},
        drain_timeout_s=120.0,
        keep_records=True,
    )
    return asyncio.run(run_open_loop_async(cfg))


class LoadThread(threading.Thread):
    def __init__(self, url: str, points: tuple[tuple[float, float], ...]) -> None:
        super().__init__(daemon=True, name="load")
        self.url, self.points = url, points
        self.report: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.report = run_load(self.url, self.points)
        except BaseException as exc:
            self.error = exc


def desired_and_ready(kube: Kube, ns: str, name: str) -> tuple[int, int]:
    obj = kube.get("InferenceService", ns, name) or {}
    st, spec = obj.get("status") or {}, obj.get("spec") or {}
    desired = int((st.get("autoscaler") or {}).get("desiredReplicas") or spec.get("replicas") or 0)
    return desired, len(ready_pods(kube, ns, f"{names.LABEL_ISVC}={name},{MODEL_PODS}"))


def failures(report: Any) -> str:
    bad = [r for r in report.records or [] if r.get("error")]
    return f"{report.failed} failed: {report.errors}; first: {bad[:3]}"


@pytest.mark.timeout(900)
def test_load_step_scales_up_spreads_and_scales_down_without_failures(
    stack: Stack, kube: Kube, ns: str
) -> None:
    name = "step"
    autoscaling = {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 6,
        "metrics": [{"type": "QueueDepth", "targetPerReplica": 4}],
        "behavior": FAST_BEHAVIOR,
    }
    kube.apply(sim_isvc(name, autoscaling=autoscaling), ns)
    eventually(lambda: condition(kube.get("InferenceService", ns, name), "Ready"), timeout=180, what="Ready")
    url = wait_router(stack, ns, name)
    # 3 req/s, then a 5x step to 15 req/s for two minutes, then back to 3 req/s: >= 2,000 requests.
    points = ((0.0, 3.0), (20.0, 3.0), (20.0, 15.0), (140.0, 15.0), (140.0, 3.0), (200.0, 3.0))
    load = LoadThread(url, points)
    load.start()
    max_desired = max_ready = 0
    scaled_up_at: float | None = None
    t0 = time.monotonic()
    while load.is_alive() and time.monotonic() - t0 < 400:
        stack.check_children()
        desired, ready = desired_and_ready(kube, ns, name)
        max_desired, max_ready = max(max_desired, desired), max(max_ready, ready)
        if scaled_up_at is None and ready >= 3:
            scaled_up_at = time.monotonic() - t0
        load.join(1.0)
    assert not load.is_alive(), "load did not finish in time"
    assert load.error is None, repr(load.error)
    report = load.report
    assert report.ok >= 2000, (report.ok, report.total)
    assert report.failed == 0, failures(report)
    assert max_desired >= 3 and max_ready >= 3, (max_desired, max_ready)
    # Scaled up within the step (cold start included), not at the end of it.
    assert scaled_up_at is not None and scaled_up_at < 100, scaled_up_at
    # Load spread across replicas: several pods served a real share (Prometheus, labelled like a cluster).
    per_pod = stack.prom_vector(
        f'sum by (pod) (max_over_time(shoal_server_requests_total{{namespace="{ns}",inferenceservice="{name}"}}[15m]))'
    )
    busy = [p for p, v in per_pod.items() if v >= 0.05 * report.ok]
    assert len(busy) >= 2, per_pod
    # Load over: back down to minReplicas after the (shortened) stabilization window.
    eventually(
        lambda: desired_and_ready(kube, ns, name) == (1, 1), timeout=180, interval=1, what="scale-down to 1"
    )


@pytest.mark.timeout(300)
def test_scale_from_zero_holds_the_request_until_a_replica_is_ready(
    stack: Stack, kube: Kube, ns: str
) -> None:
    name = "zero"
    autoscaling = {
        "enabled": True,
        "minReplicas": 0,
        "maxReplicas": 2,
        "metrics": [{"type": "QueueDepth", "targetPerReplica": 4}],
        "scaleToZero": {"enabled": True, "idleSeconds": 600},
        "behavior": FAST_BEHAVIOR,
    }
    kube.apply(sim_isvc(name, autoscaling=autoscaling, replicas=0), ns)
    url = wait_router(stack, ns, name)
    assert desired_and_ready(kube, ns, name)[1] == 0
    assert not kube.list("Pod", ns, f"{names.LABEL_ISVC}={name},{MODEL_PODS}")
    t0 = time.monotonic()
    resp = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": name, "messages": [{"role": "user", "content": "wake up"}], "max_tokens": 5},
        timeout=180,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"]
    held_s = time.monotonic() - t0
    assert held_s > 0.5, "answered without waiting for a replica?"
    assert desired_and_ready(kube, ns, name)[1] >= 1


@pytest.mark.timeout(300)
def test_killing_a_model_server_under_load_loses_no_request(stack: Stack, kube: Kube, ns: str) -> None:
    name = "kill"
    kube.apply(sim_isvc(name, autoscaling={"enabled": False}, replicas=3), ns)
    sel = f"{names.LABEL_ISVC}={name},{MODEL_PODS}"
    eventually(lambda: len(ready_pods(kube, ns, sel)) == 3, timeout=180, what="3 ready replicas")
    url = wait_router(stack, ns, name)
    load = LoadThread(url, ((0.0, 8.0), (40.0, 8.0)))
    load.start()
    victim = ready_pods(kube, ns, sel)[0]
    ip = victim["status"]["podIP"]

    def serving() -> bool:
        text = httpx.get(f"http://{ip}:{names.MODEL_SERVER_PORT}/metrics", timeout=5).text
        return any(
            line.startswith("shoal_server_inflight") and float(line.split()[-1]) >= 1
            for line in text.splitlines()
        )

    eventually(serving, timeout=30, interval=0.1, what="requests in flight on the victim")
    stack.kill_container(victim, "model-server")  # SIGKILL, as an OOM kill or a crash would
    load.join(200)
    assert not load.is_alive()
    assert load.error is None, repr(load.error)
    summary = {k: v for k, v in load.report.to_dict().items() if k not in ("malformed_lines",)}
    assert load.report.ok >= 300, summary
    assert load.report.failed == 0, failures(load.report)


@pytest.mark.vllm
@pytest.mark.timeout(1200)
def test_real_model_answers_through_the_router_with_the_openai_client(
    stack: Stack, kube: Kube, ns: str
) -> None:
    import openai

    prepare_model(print)  # the models volume serves $SHOAL_CACHE/models: pvc://models/smollm2
    isvc = load_example("inferenceservice-smollm2.yaml")
    name = isvc["metadata"]["name"]
    kube.apply(isvc, ns)
    eventually(
        lambda: condition(kube.get("InferenceService", ns, name), "Ready"),
        timeout=900,
        interval=2,
        what="Ready",
    )
    url = wait_router(stack, ns, name)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="e2e", timeout=300, max_retries=0)
    resp = client.chat.completions.create(
        model=isvc["spec"]["model"]["name"],
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=32,
        temperature=0,
    )
    assert resp.choices[0].message.content, resp


def stream_chat(url: str, model: str, max_tokens: int) -> tuple[int, str | None, bool]:
    """One streamed chat completion: (content chunks, finish_reason, saw [DONE])."""
    import json

    chunks, finish, done = 0, None, False
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "tell me a long story"}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            choice = json.loads(line[6:])["choices"][0]
            chunks += bool((choice.get("delta") or {}).get("content"))
            finish = choice.get("finish_reason") or finish
    return chunks, finish, done


@pytest.mark.timeout(300)
def test_a_pod_deleted_mid_stream_drains_its_streams_and_leaves_the_router_first(
    stack: Stack, kube: Kube, ns: str
) -> None:
    """The kubelet's SIGTERM (after the preStop sleep) starts the model-server's drain: its in-flight
    streams finish, the router stops picking it as soon as it is terminating, and nothing fails."""
    from concurrent.futures import ThreadPoolExecutor

    name = "drain"
    kube.apply(sim_isvc(name, autoscaling={"enabled": False}, replicas=2), ns)
    sel = f"{names.LABEL_ISVC}={name},{MODEL_PODS}"
    eventually(lambda: len(ready_pods(kube, ns, sel)) == 2, timeout=180, what="2 ready replicas")
    url = wait_router(stack, ns, name)
    tokens = 120  # 6 s of decoding at 20 tokens/s: the deletion lands mid-stream
    with ThreadPoolExecutor(4) as pool:
        streams = [pool.submit(stream_chat, url, name, tokens) for _ in range(4)]
        victim = ready_pods(kube, ns, sel)[0]
        ip = victim["status"]["podIP"]

        def streaming() -> bool:
            text = httpx.get(f"http://{ip}:{names.MODEL_SERVER_PORT}/metrics", timeout=5).text
            return any(
                line.startswith("shoal_server_inflight") and float(line.split()[-1]) >= 1
                for line in text.splitlines()
            )

        eventually(streaming, timeout=30, interval=0.1, what="streams in flight on the victim")
        served_before = stack.prom(
            f'sum(shoal_server_requests_total{{namespace="{ns}",pod="{victim["metadata"]["name"]}"}})'
        )
        kube.delete("Pod", ns, victim["metadata"]["name"])
        # While it drains, new requests go to the other replica only (it is terminating: not ready).
        load = LoadThread(url, ((0.0, 4.0), (15.0, 4.0)))
        load.start()
        results = [s.result(timeout=120) for s in streams]
        load.join(120)
    for chunks, finish, done in results:
        assert done and finish == "length" and chunks >= tokens - 1, results
    assert not load.is_alive() and load.error is None, load.error
    assert load.report.failed == 0 and load.report.ok >= 40, failures(load.report)
    eventually(
        lambda: kube.get("Pod", ns, victim["metadata"]["name"]) is None, timeout=120, what="victim gone"
    )
    # Nothing but its own streams reached the victim after the deletion (Prometheus scraped it while it
    # drained; its count grew by at most the 4 streams it already had).
    per_pod = stack.prom_vector(
        f'max_over_time(shoal_server_requests_total{{namespace="{ns}",inferenceservice="{name}"}}[5m])'
    )
    victim_total = per_pod.get(victim["metadata"]["name"], 0.0)
    assert victim_total <= (served_before or 0.0) + 4, (served_before, per_pod)


def test_the_examples_and_the_operator_run_from_shoals_images_under_restricted(
    stack: Stack, kube: Kube, ns: str
) -> None:
    """The `restricted` Pod Security Standard is enforced in the operator's and the test's namespaces;
    the simulated example (the real-model example: the vllm test) and the chart's operator run there as
    pods from the locally built images under their declared non-root user."""
    isvc = load_example("inferenceservice-sim.yaml")
    isvc["spec"]["engine"]["sim"]["startupSeconds"] = 2
    kube.apply(isvc, ns)
    name = isvc["metadata"]["name"]
    eventually(lambda: condition(kube.get("InferenceService", ns, name), "Ready"), timeout=180, what="Ready")
    pods = kube.list("Pod", ns, f"{names.LABEL_ISVC}={name}") + kube.list(
        "Pod", "shoal-system", "app.kubernetes.io/component=operator"
    )
    assert {p["metadata"]["labels"][names.LABEL_COMPONENT] for p in pods} >= {
        "model-server",
        "router",
        "operator",
    }
    for pod_ns in (ns, "shoal-system"):
        labels = (kube.get("Namespace", None, pod_ns) or {})["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted", labels
    for p in pods:
        for status in p["status"]["containerStatuses"]:
            assert status["image"].startswith("ghcr.io/shoal-dev/shoal-"), status["image"]
            assert status["ready"], status
        assert p["spec"]["securityContext"]["runAsUser"] == 10001
    # A pod that breaks the standard is refused in these namespaces.
    from shoal_sandbox.kube import ApiError

    root_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "c", "image": pods[0]["spec"]["containers"][0]["image"]}]},
    }
    with pytest.raises(ApiError) as refused:
        kube.apply(root_pod, ns)
    assert refused.value.status == 403 and "violates PodSecurity" in str(refused.value)
