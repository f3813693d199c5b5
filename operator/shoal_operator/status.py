"""Pure status computation: the InferenceService, its live Deployments and known problems in, status out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shoal_operator import conditions as cond
from shoal_operator.api import InferenceService
from shoal_operator.builders import BuildOptions, gateway, selector_string, url


@dataclass(frozen=True)
class Problem:
    """Bad input or a stuck child: becomes Degraded=True with this reason and a Warning Event."""

    reason: str
    message: str


@dataclass
class Observed:
    model: dict[str, Any] | None = None  # live `X-model` Deployment
    router: dict[str, Any] | None = None  # live `X-router` Deployment (Router mode)
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class Rollout:
    desired: int
    replicas: int
    updated: int
    ready: int
    available: int
    observed: bool  # the Deployment controller has seen the latest Deployment spec
    failure: Problem | None

    @property
    def rolled_out(self) -> bool:
        """Every pod runs the current template (no old ReplicaSet pods left)."""
        return self.observed and self.updated >= min(self.desired, 1) and self.replicas <= self.updated

    @property
    def settled(self) -> bool:
        return self.rolled_out and self.updated == self.desired and self.available >= self.desired


def rollout(deployment: dict[str, Any] | None) -> Rollout:
    if deployment is None:
        return Rollout(0, 0, 0, 0, 0, False, None)
    spec = deployment.get("spec", {})
    st = deployment.get("status", {}) or {}
    generation = deployment.get("metadata", {}).get("generation", 0)
    failure = None
    for c in st.get("conditions", []) or []:
        if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
            failure = Problem(c.get("reason") or "ReplicaFailure", c.get("message", ""))
        elif c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
            failure = Problem("ProgressDeadlineExceeded", c.get("message", ""))
    return Rollout(
        desired=int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1),
        replicas=int(st.get("replicas", 0) or 0),
        updated=int(st.get("updatedReplicas", 0) or 0),
        ready=int(st.get("readyReplicas", 0) or 0),
        available=int(st.get("availableReplicas", 0) or 0),
        observed=int(st.get("observedGeneration", 0) or 0) >= int(generation or 0),
        failure=failure,
    )


Verdict = tuple[bool, str, str]  # (status, reason, message) of one condition


def _ready(
    isvc: InferenceService, observed: Observed, model: Rollout, router: Rollout | None, endpoint: str
) -> Verdict:
    """Ready: something serves the current generation."""
    desired = isvc.spec.replicas
    if observed.model is None:
        return False, "Pending", "the model-server Deployment does not exist yet"
    if desired == 0:
        router_ok = router is not None and router.available >= 1
        message = (
            "scaled to zero; the router holds requests while a replica starts"
            if router_ok
            else "scaled to zero and no router is available"
        )
        return router_ok, "ScaledToZero", message
    if not model.rolled_out:
        return False, "RollingOut", f"{model.updated}/{desired} replicas updated, {model.available} available"
    if model.available < 1:
        return (
            False,
            "NoReplicaAvailable",
            f"0/{desired} replicas available (loading the model or waiting for a node)",
        )
    if router is not None and router.available < 1:
        return gateway.front_end_not_ready(isvc)
    return True, "Serving", f"{model.ready}/{desired} replicas ready at {endpoint}"


def _progressing(observed: Observed, model: Rollout, router: Rollout | None, desired: int) -> Verdict:
    """Progressing: the Deployments are moving towards the spec."""
    if observed.model is None:
        return True, "Creating", "creating the children"
    if any(r is not None and not r.settled for r in (model, router)):
        reason = "RollingOut" if not model.rolled_out else "ScalingReplicas"
        return (
            True,
            reason,
            f"{model.available}/{desired} model-server replicas available, {model.updated} updated",
        )
    return False, "Stable", f"{model.available}/{desired} replicas available"


def _degraded(observed: Observed, model: Rollout, router: Rollout | None) -> Verdict:
    """Degraded: bad input the CRD cannot reject, or a child that cannot make progress."""
    problems = list(observed.problems)
    for r, what in ((model, "model-server"), (router, "router")):
        if r is not None and r.failure is not None:
            problems.append(Problem(r.failure.reason, f"{what} Deployment: {r.failure.message}"))
    if problems:
        return True, problems[0].reason, "; ".join(p.message for p in problems)
    return False, "AsExpected", ""


def compute(
    isvc: InferenceService,
    observed: Observed,
    opts: BuildOptions,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The operator's part of `status` (conditions Ready/Progressing/Degraded and the counters)."""
    gen = isvc.generation
    model = rollout(observed.model)
    router = rollout(observed.router) if isvc.spec.routing.mode != "Service" else None  # Gateway: the endpoint picker plays the router
    desired = isvc.spec.replicas
    endpoint = url(isvc, opts)
    conds = [c.dump() for c in isvc.status.conditions]
    for type_, (value, reason, message) in (
        (cond.READY, _ready(isvc, observed, model, router, endpoint)),
        (cond.PROGRESSING, _progressing(observed, model, router, desired)),
        (cond.DEGRADED, _degraded(observed, model, router)),
    ):
        conds = cond.set_condition(conds, type_, value, reason, message, observed_generation=gen, now=now)

    return {
        "conditions": cond.only(conds, cond.OPERATOR_TYPES),
        "replicas": model.replicas,
        "readyReplicas": model.ready,
        "selector": selector_string(isvc),
        "url": endpoint,
        "observedGeneration": gen,
        "routing": gateway.routing_status(isvc),
    }
