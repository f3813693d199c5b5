"""The pod runner runs pods on kwok nodes as real local processes on their loopback pod IPs."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
from e2e.support import Kube, eventually, pod_ready
from shoal_sandbox.runner_stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

APP = "sim"


def sim_deployment(replicas: int, startup_s: float = 0.5, decode_tps: float = 30.0) -> dict[str, Any]:
    labels = {"app": APP, "sandbox.shoal.dev/run": "local"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": APP},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": APP}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8000"},
                },
                "spec": {
                    "terminationGracePeriodSeconds": 20,
                    "containers": [
                        {
                            "name": "model-server",
                            "image": "ghcr.io/shoal-dev/shoal:0.1.0",
                            "command": [
                                "shoal",
                                "model-server",
                                "--engine",
                                "sim",
                                "--model",
                                "tiny",
                                "--host",
                                "0.0.0.0",
                                "--port",
                                "8000",
                                "--drain-timeout",
                                "15",
                                "--sim-startup-s",
                                str(startup_s),
                                "--sim-decode-tokens-per-s",
                                str(decode_tps),
                            ],
                            "env": [
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                            ],
                            "ports": [{"name": "http", "containerPort": 8000}],
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz", "port": "http"},
                                "periodSeconds": 1,
                                "failureThreshold": 1,
                            },
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                },
            },
        },
    }


def _inflight(ip: str) -> float:
    for line in httpx.get(f"http://{ip}:8000/metrics", timeout=5).text.splitlines():
        if line.startswith("shoal_server_inflight"):
            return float(line.split()[-1])
    return 0.0


def _pods(kube: Kube, ns: str) -> list[dict[str, Any]]:
    return [p for p in kube.list("Pod", ns, f"app={APP}") if not p["metadata"].get("deletionTimestamp")]


def test_deployment_pods_serve_on_their_own_loopback_ips(kube: Kube, stack: Stack, ns: str) -> None:
    kube.apply(sim_deployment(replicas=2), ns)

    def two_ready() -> list[dict[str, Any]] | None:
        pods = [p for p in _pods(kube, ns) if pod_ready(p)]
        return pods if len(pods) == 2 else None

    pods = eventually(two_ready, timeout=90, what="2 Ready pods")
    ips = {p["status"]["podIP"] for p in pods}
    assert len(ips) == 2, ips
    for ip in ips:
        assert ip.startswith("127."), ip
        resp = httpx.get(f"http://{ip}:8000/v1/models", timeout=5)
        assert resp.status_code == 200
        assert resp.json()["data"][0]["id"] == "tiny"
    # Two processes, not one: each answers only on its own IP, and the chat route works on both.
    for ip in ips:
        resp = httpx.post(
            f"http://{ip}:8000/v1/chat/completions",
            json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
    # The pod's status reports a running container, and the downward API reached the process.
    for p in pods:
        cs = p["status"]["containerStatuses"][0]
        assert "running" in cs["state"] and cs["ready"] is True
    # Readiness is what the router's pod discovery reads: both pods Ready, with their container ready.
    # (EndpointSlices stay empty here: the API server rejects loopback endpoint addresses.)


def test_pod_is_ready_only_once_its_process_is_ready(kube: Kube, stack: Stack, ns: str) -> None:
    kube.apply(sim_deployment(replicas=1, startup_s=4.0), ns)
    # Observe the pod from the moment it has an IP: it must not be Ready while /readyz is not 200.
    seen_not_ready_with_ip = False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        pods = _pods(kube, ns)
        if pods and pods[0].get("status", {}).get("podIP"):
            pod = pods[0]
            ip = pod["status"]["podIP"]
            if pod_ready(pod):
                resp = httpx.get(f"http://{ip}:8000/readyz", timeout=5)
                assert resp.status_code == 200, "pod Ready but its process is not"
                break
            seen_not_ready_with_ip = True
        time.sleep(0.2)
    else:
        pytest.fail("pod never became Ready")
    assert seen_not_ready_with_ip, "the pod was Ready before its process had started"


def test_deleting_a_pod_drains_its_process(kube: Kube, stack: Stack, ns: str) -> None:
    kube.apply(sim_deployment(replicas=1, decode_tps=20.0), ns)
    pod = eventually(
        lambda: next((p for p in _pods(kube, ns) if pod_ready(p)), None),
        timeout=90,
        what="a Ready pod",
    )
    ip, name = pod["status"]["podIP"], pod["metadata"]["name"]
    # A streamed request of ~3 s is in flight when the pod is deleted: the drain lets it finish.
    result: dict[str, Any] = {}

    def stream() -> None:
        chunks = 0
        body = {
            "model": "tiny",
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 60,
            "stream": True,
        }
        with httpx.stream("POST", f"http://{ip}:8000/v1/chat/completions", json=body, timeout=60) as resp:
            result["status"] = resp.status_code
            for line in resp.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    json.loads(line[6:])
                    chunks += 1
                if line == "data: [DONE]":
                    result["done"] = True
        result["chunks"] = chunks

    t = threading.Thread(target=stream)
    t.start()
    eventually(lambda: _inflight(ip) >= 1, timeout=10, what="the request in flight")
    kube.delete("Pod", ns, name)
    t.join(60)
    assert result.get("status") == 200 and result.get("done"), result
    assert result["chunks"] >= 50, result

    def process_gone() -> bool:
        try:
            httpx.get(f"http://{ip}:8000/healthz", timeout=1)
        except httpx.ConnectError:
            return True
        return False

    eventually(process_gone, timeout=40, what="the process to exit")
    eventually(lambda: kube.get("Pod", ns, name) is None, timeout=40, what="the pod object to go")
    log = stack.runner_state / "pods" / ns / name / "model-server.log"
    assert "drain started" in log.read_text()
