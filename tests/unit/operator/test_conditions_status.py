"""conditions.set_condition and the pure status computation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from shoal_operator import conditions as cond
from shoal_operator.builders import BuildOptions
from shoal_operator.status import Observed, Problem, compute, rollout

from tests.unit.operator.helpers import isvc

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 1, tzinfo=UTC)
T1 = datetime(2025, 1, 2, tzinfo=UTC)


def test_transition_time_changes_only_on_status_change() -> None:
    c = cond.set_condition([], "Ready", False, "Pending", "x", now=T0, observed_generation=1)
    assert c == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Pending",
            "message": "x",
            "lastTransitionTime": "2025-01-01T00:00:00Z",
            "observedGeneration": 1,
        }
    ]
    same = cond.set_condition(c, "Ready", False, "Other", "y", now=T1)
    assert same[0]["lastTransitionTime"] == "2025-01-01T00:00:00Z" and same[0]["reason"] == "Other"
    flipped = cond.set_condition(same, "Ready", True, "Serving", now=T1)
    assert flipped[0]["lastTransitionTime"] == "2025-01-02T00:00:00Z"
    assert cond.transitioned(same, flipped, "Ready") and not cond.transitioned(c, same, "Ready")


def test_other_conditions_kept_in_place() -> None:
    c = cond.set_condition([], "MetricsAvailable", True, "Ok", now=T0)
    c = cond.set_condition(c, "Ready", True, "Serving", now=T0)
    c = cond.set_condition(c, "MetricsAvailable", False, "Stale", now=T1)
    assert [x["type"] for x in c] == ["MetricsAvailable", "Ready"]
    assert cond.only(c, cond.OPERATOR_TYPES) == [c[1]]


def _dep(
    replicas: int, *, updated: int, ready: int, available: int, total: int | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "metadata": {"generation": 2},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": extra.pop("observed", 2),
            "replicas": total if total is not None else updated,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            **extra,
        },
    }


def _conds(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


OPTS = BuildOptions()


def test_ready_when_available_and_rolled_out() -> None:
    obj = isvc({"replicas": 2, "routing": {"mode": "Service"}})
    st = compute(obj, Observed(model=_dep(2, updated=2, ready=2, available=2)), OPTS, now=T0)
    c = _conds(st)
    assert c["Ready"]["status"] == "True" and c["Progressing"]["status"] == "False"
    assert c["Degraded"]["status"] == "False"
    assert st["replicas"] == 2 and st["readyReplicas"] == 2 and st["observedGeneration"] == 3
    assert st["url"] == "http://chat.team-a.svc.cluster.local"
    assert all(x["observedGeneration"] == 3 for x in st["conditions"])


def test_scaling_up_stays_ready_but_progressing() -> None:
    obj = isvc({"replicas": 3, "routing": {"mode": "Service"}})
    c = _conds(compute(obj, Observed(model=_dep(3, updated=3, ready=1, available=1)), OPTS))
    assert c["Ready"]["status"] == "True"
    assert c["Progressing"]["status"] == "True" and c["Progressing"]["reason"] == "ScalingReplicas"


def test_rolling_out_is_not_ready() -> None:
    obj = isvc({"replicas": 2, "routing": {"mode": "Service"}})
    c = _conds(compute(obj, Observed(model=_dep(2, updated=1, ready=2, available=2, total=3)), OPTS))
    assert c["Ready"]["status"] == "False" and c["Ready"]["reason"] == "RollingOut"
    assert c["Progressing"]["status"] == "True"
    stale = _conds(compute(obj, Observed(model=_dep(2, updated=2, ready=2, available=2, observed=1)), OPTS))
    assert stale["Ready"]["status"] == "False"


def test_loading_is_not_ready() -> None:
    obj = isvc({"routing": {"mode": "Service"}})
    c = _conds(compute(obj, Observed(model=_dep(1, updated=1, ready=0, available=0)), OPTS))
    assert c["Ready"]["reason"] == "NoReplicaAvailable"


def test_router_mode_needs_router() -> None:
    obj = isvc()
    model = _dep(1, updated=1, ready=1, available=1)
    c = _conds(compute(obj, Observed(model=model, router=_dep(1, updated=1, ready=0, available=0)), OPTS))
    assert c["Ready"]["reason"] == "RouterNotReady"
    c = _conds(compute(obj, Observed(model=model, router=_dep(1, updated=1, ready=1, available=1)), OPTS))
    assert c["Ready"]["status"] == "True"


def test_scaled_to_zero() -> None:
    obj = isvc({"replicas": 0, "autoscaling": {"minReplicas": 0, "scaleToZero": {"enabled": True}}})
    c = _conds(
        compute(
            obj,
            Observed(
                model=_dep(0, updated=0, ready=0, available=0),
                router=_dep(1, updated=1, ready=1, available=1),
            ),
            OPTS,
        )
    )
    assert c["Ready"]["status"] == "True" and c["Ready"]["reason"] == "ScaledToZero"


def test_degraded_from_problems_and_replica_failure() -> None:
    obj = isvc({"routing": {"mode": "Service"}})
    failing = _dep(
        1,
        updated=0,
        ready=0,
        available=0,
        conditions=[
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "no class"}
        ],
    )
    st = compute(obj, Observed(model=failing, problems=[Problem("PVCNotFound", "claim x missing")]), OPTS)
    c = _conds(st)
    assert c["Degraded"]["status"] == "True" and c["Degraded"]["reason"] == "PVCNotFound"
    assert "claim x missing" in c["Degraded"]["message"] and "no class" in c["Degraded"]["message"]


def test_missing_deployment() -> None:
    c = _conds(compute(isvc(), Observed(), OPTS))
    assert c["Ready"]["reason"] == "Pending" and c["Progressing"]["reason"] == "Creating"


def test_rollout_parsing_defaults() -> None:
    r = rollout({"metadata": {"generation": 1}, "spec": {}, "status": {}})
    assert r.desired == 1 and not r.observed and not r.rolled_out


def test_status_is_stable_for_same_input() -> None:
    obj = isvc({"routing": {"mode": "Service"}})
    first = compute(obj, Observed(model=_dep(1, updated=1, ready=1, available=1)), OPTS, now=T0)
    again_obj = isvc({"routing": {"mode": "Service"}})
    again_obj.status.conditions = [
        type(again_obj.status).model_validate({"conditions": first["conditions"]}).conditions[i]
        for i in range(3)
    ]
    second = compute(again_obj, Observed(model=_dep(1, updated=1, ready=1, available=1)), OPTS, now=T1)
    assert second == first
