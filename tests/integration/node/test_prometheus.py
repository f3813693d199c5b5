"""Prometheus (built from the pin) discovers the real node's pods with kubernetes_sd and scrapes them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from integration.node.pods import pod, running_ip
from shoal_sandbox import Sandbox
from shoal_sandbox.build import binary_path
from shoal_sandbox.node.prometheus import POD_JOB
from shoal_sandbox.prometheus import PrometheusServer
from support.eventually import eventually
from support.kubectl import Kubectl


@pytest.fixture
def prometheus(real_sandbox: Sandbox, tmp_path: Path) -> Iterator[str]:
    binary = binary_path("prometheus")
    if not binary.is_file():
        pytest.fail(f"{binary} is not built: run `shoal sandbox build --node`", pytrace=False)
    server = PrometheusServer(tmp_path, real_sandbox.kubeconfig_path, "127.0.0.1").start(timeout=60)
    try:
        yield server.url
    finally:
        server.stop()


def test_prometheus_discovers_annotated_pods(kube: Kubectl, test_image: str, prometheus: str) -> None:
    labels = {
        "app": "metrics",
        "shoal.dev/inferenceservice": "demo",
        "app.kubernetes.io/component": "model-server",
    }
    scraped = pod("metrics", test_image, labels=labels)
    scraped["metadata"]["annotations"] = {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"}
    kube.apply(scraped, pod("quiet", test_image))  # no annotations: never a target
    ip = running_ip(kube, "metrics")
    running_ip(kube, "quiet")
    for _ in range(3):
        httpx.get(f"http://{ip}:8080/", timeout=5).raise_for_status()

    def sample() -> dict[str, object]:
        resp = httpx.get(
            f"{prometheus}/api/v1/query",
            params={"query": f'node_test_requests_total{{namespace="{kube.namespace}"}}'},
            timeout=5,
        )
        result = resp.json()["data"]["result"]
        assert len(result) == 1 and result[0]["value"][1] == "3", result
        return dict(result[0]["metric"])

    metric = eventually(sample, timeout=60, interval=1, retry_on=(AssertionError, httpx.HTTPError))
    assert metric["pod"] == "metrics"
    assert metric["inferenceservice"] == "demo"
    assert metric["component"] == "model-server"
    assert metric["instance"] == f"{ip}:8080"
    assert metric["job"] == POD_JOB
    active = httpx.get(f"{prometheus}/api/v1/targets", params={"state": "active"}, timeout=5).json()
    pods = {t["labels"].get("pod") for t in active["data"]["activeTargets"]}
    assert "quiet" not in pods
