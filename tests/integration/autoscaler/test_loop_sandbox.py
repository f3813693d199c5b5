"""The autoscaler loop against the sandbox (real API server, controller-manager, scheduler, kwok GPU nodes)
and a real Prometheus scraping local exporters that stand in for the model-server pods' /metrics.

The operator runs as a process (without its own autoscaler) so the Deployment follows spec.replicas; the
autoscaler runs in the test process, one `cycle()` at a time, so every step is deterministic.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from integration.autoscaler.promlab import Exporter, Prometheus
from prometheus_client import CollectorRegistry
from shoal_common import names, processes
from shoal_operator.autoscaler.loop import Autoscaler, AutoscalerMetrics, AutoscalerSettings
from shoal_operator.autoscaler.metrics import MetricsSource
from shoal_operator.kube import Kube, connect
from support.eventually import aeventually, eventually
from support.kubectl import Kubectl

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def crds(sandbox_kubeconfig: Path) -> Path:
    k = Kubectl(sandbox_kubeconfig)
    k.run("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    k.run("wait", "--for=condition=Established", "--timeout=60s", "crd/inferenceservices.shoal.dev")
    return sandbox_kubeconfig


@pytest.fixture
def operator(crds: Path, namespace: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = tmp_path / "operator.log"
    argv = [
        sys.executable, "-m", "shoal_cli", "operator", "--kubeconfig", str(crds), "--namespace", namespace,
        "--drift-period", "2", "--metrics-port", "0", "--no-autoscaler",
    ]  # fmt: skip
    env = {**os.environ, "SHOAL_PEERING": "false", "SHOAL_HEALTH_PORT": "0"}
    proc = processes.spawn(argv, log, env=env)
    yield proc
    processes.stop(proc, timeout=20)
    print("--- operator log tail ---\n" + processes.log_tail(log, 3000))


@pytest.fixture
def prom(tmp_path: Path) -> Iterator[Prometheus]:
    p = Prometheus(tmp_path / "prom")
    p.start()
    yield p
    p.stop()


@pytest.fixture
async def kube(crds: Path) -> AsyncIterator[Kube]:
    k = Kube(await connect(str(crds)))
    yield k
    await k.aclose()


def isvc(name: str, *, gpus: int = 1, replicas: int = 1, **autoscaling: Any) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "tiny", "uri": "hf://org/tiny"},
            "engine": {"kind": "sim", "sim": {"startupSeconds": 0.5}},
            "resources": {"gpus": gpus, "cpu": "10m", "memory": "64Mi"},
            "routing": {"mode": "Service"},
            "serving": {"drainSeconds": 1},
            "replicas": replicas,
            "autoscaling": {
                "enabled": True,
                "minReplicas": 1,
                "maxReplicas": 3,
                "metrics": [{"type": "QueueDepth", "targetPerReplica": 4}],
                **autoscaling,
            },
        },
    }


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def ready_pods(k: Kubectl, name: str) -> int:
    pods = k.json("get", "pods", "-l", f"{names.LABEL_ISVC}={name}", "-o", "json")["items"]
    return sum(
        1
        for p in pods
        if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    )


async def test_backlog_scales_through_scale_subresource_and_prometheus_outage_holds(
    crds: Path, namespace: str, operator: subprocess.Popen[bytes], prom: Prometheus, kube: Kube
) -> None:
    k = Kubectl(crds).ns(namespace)
    k.apply(isvc("chat"))
    eventually(lambda: ready_pods(k, "chat") == 1, timeout=120, desc="one ready model-server pod")

    # The exporter stands in for the real pod's /metrics, under its name: only live pods' series count.
    [real] = k.json("get", "pods", "-l", f"{names.LABEL_ISVC}=chat", "-o", "json")["items"]
    pod = Exporter(namespace, "chat", real["metadata"]["name"])
    try:
        pod.waiting.set(40)  # 40 waiting at a target of 4 per replica
        prom.set_targets([pod])
        prom.wait_scraped(1)
        scaler = Autoscaler(
            kube,
            AutoscalerSettings(namespaces=(namespace,)),
            MetricsSource(prom.url),
            AutoscalerMetrics(CollectorRegistry()),
            _events(kube),
        )

        async def scaled_up() -> bool:
            results = await scaler.cycle()
            assert results and results[0].decision.desired == 3, results
            return True

        await aeventually(scaled_up, timeout=20, desc="decision to scale to 3")
        obj = k.json("get", "infsvc", "chat", "-o", "json", "--show-managed-fields")
        assert obj["spec"]["replicas"] == 3
        owners = [
            m["manager"] for m in obj["metadata"]["managedFields"] if "f:replicas" in str(m.get("fieldsV1"))
        ]
        assert names.FIELD_MANAGER_AUTOSCALER in owners
        auto = obj["status"]["autoscaler"]
        assert (
            auto["desiredReplicas"] == 3
            and auto["lastDecision"]["from"] == 1
            and auto["lastDecision"]["to"] == 3
        )
        assert auto["lastDecision"]["inputs"]["QueueDepth"] == 40
        assert condition(obj, "MetricsAvailable")["status"] == "True"
        limited = condition(obj, "ScalingLimited")
        assert limited["status"] == "True" and limited["reason"] == "TooManyReplicas", (
            limited,
            obj["metadata"].get("managedFields"),
        )
        eventually(
            lambda: k.json("get", "deployment", "chat-model", "-o", "json")["spec"]["replicas"] == 3,
            timeout=60,
            desc="Deployment follows the scale subresource",
        )
        events = k.json("get", "events", "--field-selector", "involvedObject.name=chat", "-o", "json")[
            "items"
        ]
        assert any(e["reason"] in ("PanicScaleUp", "ScaleUp") and "1 -> 3" in e["message"] for e in events)

        # Prometheus goes away while the queue is empty: replicas hold, MetricsAvailable=False.
        pod.waiting.set(0)
        prom.stop()
        results = await scaler.cycle()
        assert results[0].decision.desired == 3
        obj = k.json("get", "infsvc", "chat", "-o", "json")
        assert obj["spec"]["replicas"] == 3
        cond = condition(obj, "MetricsAvailable")
        assert cond["status"] == "False" and cond["reason"] == "PrometheusUnavailable", cond
        # the operator's own conditions are untouched
        assert condition(obj, "Ready")
    finally:
        pod.close()


async def test_pods_pending_for_gpus_give_scaling_limited(
    crds: Path, namespace: str, operator: subprocess.Popen[bytes], prom: Prometheus, kube: Kube
) -> None:
    k = Kubectl(crds).ns(namespace)
    k.apply(isvc("big", gpus=9))  # no node has 9 GPUs

    def unschedulable() -> bool:
        pods = k.json("get", "pods", "-l", f"{names.LABEL_ISVC}=big", "-o", "json")["items"]
        return any(
            c.get("reason") == "Unschedulable" for p in pods for c in p["status"].get("conditions", [])
        )

    eventually(unschedulable, timeout=60, desc="an Unschedulable pod")
    scaler = Autoscaler(
        kube,
        AutoscalerSettings(namespaces=(namespace,)),
        MetricsSource(prom.url),
        AutoscalerMetrics(CollectorRegistry()),
    )
    started = time.monotonic()
    results = await scaler.cycle()
    assert time.monotonic() - started < 10
    assert results[0].decision.desired == 1
    obj = k.json("get", "infsvc", "big", "-o", "json")
    cond = condition(obj, "ScalingLimited")
    assert cond["status"] == "True" and cond["reason"] == "PodsUnschedulable", cond


def _events(kube: Kube) -> Any:
    from shoal_operator.context import OperatorContext
    from shoal_operator.metrics import OperatorMetrics
    from shoal_operator.settings import OperatorSettings

    ctx = OperatorContext(OperatorSettings(), kube, OperatorMetrics(), identity="test-autoscaler")
    return ctx.emit_event
