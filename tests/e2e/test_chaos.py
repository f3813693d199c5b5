"""Chaos on the real node: each fault strikes under steady load through the router (non-streamed open-loop
load plus streaming clients). Goals: no non-streamed request lost; streams cut only on a killed replica;
no duplicate or orphaned children after convergence; never a scale-down while metrics are missing.
Each test prints its figures (`CHAOS {...}` lines; bench/RESULTS.md keeps a run's)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from e2e.load import FAST_BEHAVIOR, MODEL_PODS, MixedLoad, desired_and_ready, failures, sim_isvc, wait_router
from e2e.support import Kube, eventually, ready_pods
from shoal_common import names
from shoal_sandbox.cluster import ClusterStack
from shoal_sandbox.cluster_manifests import RELEASE_NAMESPACE
from shoal_sandbox.stack_support import condition

STEADY = ((0.0, 5.0), (50.0, 5.0))  # 5 req/s for 50 s: ~250 non-streamed requests per fault
FAULT_AT_S = 12.0


def figures(fault: str, load: MixedLoad, **extra: Any) -> None:
    print("CHAOS " + json.dumps({"fault": fault, **load.summary(), **extra}), flush=True)


def under_load(url: str, model: str, fault: Callable[[], None]) -> MixedLoad:
    load = MixedLoad(url, model, STEADY)
    load.start()
    time.sleep(FAULT_AT_S)
    fault()
    load.join(240)
    assert not load.is_alive(), "the load did not finish in time"
    assert load.open_loop.error is None, repr(load.open_loop.error)
    return load


@pytest.fixture
def served(stack: ClusterStack, kube: Kube, ns: str) -> str:
    """Two model-server replicas behind two routers (a router pod may go without taking the endpoint)."""
    isvc = sim_isvc("chaos", autoscaling={"enabled": False}, replicas=2)
    isvc["spec"]["routing"]["replicas"] = 2
    kube.apply(isvc, ns)
    model = f"{names.LABEL_ISVC}=chaos,{MODEL_PODS}"
    routers = f"{names.LABEL_ISVC}=chaos,{names.LABEL_COMPONENT}={names.COMPONENT_ROUTER}"
    eventually(lambda: len(ready_pods(kube, ns, model)) == 2, timeout=180, what="2 ready replicas")
    eventually(lambda: len(ready_pods(kube, ns, routers)) == 2, timeout=180, what="2 ready routers")
    return wait_router(stack, ns, "chaos")


@pytest.mark.timeout(420)
@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_a_control_plane_restart_under_load_loses_nothing(
    stack: ClusterStack, kube: Kube, ns: str, served: str, component: str
) -> None:
    load = under_load(served, "chaos", lambda: stack.restart_control_plane(component))
    t0 = time.monotonic()
    eventually(
        lambda: condition(kube.get("InferenceService", ns, "chaos"), "Ready"), timeout=120, what="Ready"
    )
    stack.check_children()
    figures(f"{component} restarted", load, converged_s=round(time.monotonic() - t0, 1))
    assert load.report.failed == 0, failures(load.report)
    assert not load.cut, load.cut[:3]
    assert load.report.ok >= 200 and load.complete >= 4, load.summary()


@pytest.mark.timeout(300)
def test_a_router_pod_deleted_under_load_loses_nothing(
    stack: ClusterStack, kube: Kube, ns: str, served: str
) -> None:
    routers = f"{names.LABEL_ISVC}=chaos,{names.LABEL_COMPONENT}={names.COMPONENT_ROUTER}"
    victim = ready_pods(kube, ns, routers)[0]["metadata"]["name"]
    load = under_load(served, "chaos", lambda: kube.delete("Pod", ns, victim))
    figures("router pod deleted", load)
    assert load.report.failed == 0, failures(load.report)
    assert not load.cut, load.cut[:3]
    eventually(lambda: len(ready_pods(kube, ns, routers)) == 2, timeout=120, what="the router replaced")


@pytest.mark.timeout(300)
def test_a_replica_sigkilled_under_load_cuts_only_its_own_streams(
    stack: ClusterStack, kube: Kube, ns: str, served: str
) -> None:
    model = f"{names.LABEL_ISVC}=chaos,{MODEL_PODS}"
    victim = ready_pods(kube, ns, model)[0]
    load = under_load(served, "chaos", lambda: stack.kill_container(victim, "model-server"))
    figures("model-server replica SIGKILLed", load)
    assert load.report.failed == 0, failures(load.report)
    # Only streams that were on the killed replica may be cut: at most one per streaming client.
    assert len(load.cut) <= load.streamers, load.cut


@pytest.mark.timeout(420)
def test_a_prometheus_outage_holds_replicas_and_loses_nothing(
    stack: ClusterStack, kube: Kube, ns: str
) -> None:
    """Prometheus goes away first; then three replicas come up and serve light load that one replica would
    carry. For at least 60 s without metrics the autoscaler holds all three (missing metrics are never a
    reason to scale down); once Prometheus is back, it scales down."""
    autoscaling = {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 3,
        "metrics": [{"type": "QueueDepth", "targetPerReplica": 4}],
        "behavior": {**FAST_BEHAVIOR, "scaleDown": {**FAST_BEHAVIOR["scaleDown"], "stabilizationSeconds": 0}},
    }
    assert stack.prometheus is not None
    model = f"{names.LABEL_ISVC}=outage,{MODEL_PODS}"
    desired_seen: list[int] = []
    stack.prometheus.stop()
    try:
        kube.apply(sim_isvc("outage", autoscaling=autoscaling, replicas=3), ns)
        eventually(lambda: len(ready_pods(kube, ns, model)) == 3, timeout=180, what="3 ready replicas")
        load = MixedLoad(wait_router(stack, ns, "outage"), "outage", STEADY)
        load.start()
        for _ in range(60):  # 60 s of load without metrics, sampling what the autoscaler wants
            desired_seen.append(desired_and_ready(kube, ns, "outage")[0])
            time.sleep(1)
    finally:
        stack.prometheus.start()
    load.join(240)
    assert not load.is_alive() and load.open_loop.error is None, load.open_loop.error
    figures("Prometheus stopped 60 s", load, desired_during_outage=sorted(set(desired_seen)))
    assert load.report.failed == 0, failures(load.report)
    assert not load.cut, load.cut[:3]
    assert desired_seen and min(desired_seen) == 3, desired_seen  # held, never scaled down blind
    # Metrics back: now it may (and does) scale down to what the light load needs.
    eventually(
        lambda: desired_and_ready(kube, ns, "outage")[0] < 3, timeout=120, interval=1, what="scale-down"
    )


def light_isvc(name: str) -> dict[str, Any]:
    isvc = sim_isvc(name, autoscaling={"enabled": False}, replicas=0)
    isvc["spec"]["routing"] = {"mode": "Service"}
    return isvc


@pytest.mark.timeout(420)
def test_the_operator_sigkilled_mid_reconcile_of_20_converges_without_duplicates(
    stack: ClusterStack, kube: Kube, ns: str
) -> None:
    services = [f"burst-{i}" for i in range(20)]
    for name in services:
        kube.apply(light_isvc(name), ns)

    def reconciled() -> list[str]:
        done = []
        for obj in kube.list("InferenceService", ns):
            st = obj.get("status") or {}
            if st.get("observedGeneration") == obj["metadata"]["generation"]:
                done.append(obj["metadata"]["name"])
        return done

    eventually(lambda: len(reconciled()) >= 1, timeout=120, interval=0.1, what="the first reconcile")
    at_kill = len(reconciled())
    operator = kube.list("Pod", RELEASE_NAMESPACE, "app.kubernetes.io/component=operator")[0]
    stack.kill_container(operator, "operator")
    t0 = time.monotonic()
    eventually(lambda: len(reconciled()) == 20, timeout=300, interval=1, what="all 20 reconciled")
    converged = time.monotonic() - t0
    eventually(stack.operator_ready, timeout=120, what="the restarted operator ready again")
    # Children: exactly one of each per InferenceService, every one owned by a live InferenceService.
    uids = {o["metadata"]["uid"]: o["metadata"]["name"] for o in kube.list("InferenceService", ns)}
    deployments = kube.list("Deployment", ns)
    owners = [
        next(r["uid"] for r in d["metadata"].get("ownerReferences", []) if r["kind"] == names.KIND)
        for d in deployments
    ]
    assert sorted(uids[o] for o in owners) == sorted(services), owners
    services_of = [s for s in kube.list("Service", ns) if s["metadata"].get("ownerReferences")]
    assert all(r["uid"] in uids for s in services_of for r in s["metadata"]["ownerReferences"])
    assert len(services_of) == len({s["metadata"]["name"] for s in services_of})
    stack.check_children()
    result = {"fault": "operator SIGKILLed mid-reconcile", "reconciled_at_kill": at_kill}
    print("CHAOS " + json.dumps({**result, "converged_s": round(converged, 1)}), flush=True)
    assert at_kill < 20, "the operator finished before the kill; the test did not test the fault"
