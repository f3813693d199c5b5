"""The closed loop as in a cluster, on the sandbox's real node: the chart's operator (a pod) -> model-server
and router pods from shoal's images under the kubelet -> Prometheus (kubernetes_sd) -> autoscaler -> the
Service's ClusterIP -> router (EndpointSlice discovery) -> pods, under open-loop load from the batch client.
Bounded in time; the simulated engine keeps it light."""

from __future__ import annotations

import time

import httpx
import pytest
from e2e.load import (
    FAST_BEHAVIOR,
    MODEL_PODS,
    LoadThread,
    desired_and_ready,
    failures,
    sim_isvc,
    stream_chat,
    wait_router,
)
from e2e.support import Kube, eventually, ready_pods
from shoal_common import names
from shoal_sandbox.cluster import ClusterStack as Stack
from shoal_sandbox.stack_support import condition, load_example, prepare_model

pytestmark = [pytest.mark.e2e]


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
