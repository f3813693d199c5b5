"""Pure helpers of the actuation loop: pod counts from a pod list, and the status the autoscaler writes."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from shoal_common import names
from shoal_common.timestamps import parse_rfc3339

from shoal_operator import conditions

from .model import Decision


@dataclass
class PodCounts:
    ready: int = 0
    starting: int = 0
    unschedulable: int = 0
    #: Seconds each ready pod took from creation to its Ready condition.
    startups: list[float] = field(default_factory=list)

    @property
    def startup_seconds(self) -> float | None:
        """The median startup of the ready pods (None: no ready pod with both timestamps)."""
        return statistics.median(self.startups) if self.startups else None


#: A Ready transition later than this after creation is taken for a readiness flap of a running pod, not
#: its startup (the condition keeps only its last transition), and is left out.
MAX_STARTUP_S = 900.0


def startup(meta: dict[str, Any], ready: dict[str, Any]) -> float | None:
    """Creation to Ready, from the pod's own timestamps (None when either is missing or unreadable, or
    when the pod was Ready too long after its creation for that to be its startup)."""
    try:
        created = parse_rfc3339(str(meta["creationTimestamp"]))
        became_ready = parse_rfc3339(str(ready["lastTransitionTime"]))
    except (KeyError, ValueError):
        return None
    seconds = (became_ready - created).total_seconds()
    return seconds if 0 <= seconds <= MAX_STARTUP_S else None


def count_pods(items: list[dict[str, Any]]) -> dict[tuple[str, str], PodCounts]:
    """Per (namespace, InferenceService): ready, starting (incl. unschedulable) and unschedulable pods."""
    out: dict[tuple[str, str], PodCounts] = {}
    for pod in items:
        meta = pod.get("metadata", {})
        isvc = (meta.get("labels") or {}).get(names.LABEL_ISVC)
        if not isvc or meta.get("deletionTimestamp"):
            continue
        status = pod.get("status", {}) or {}
        phase = status.get("phase")
        if phase in ("Succeeded", "Failed"):
            continue
        conds = {c.get("type"): c for c in status.get("conditions") or []}
        counts = out.setdefault((str(meta.get("namespace")), str(isvc)), PodCounts())
        ready = conds.get("Ready") or {}
        if ready.get("status") == "True":
            counts.ready += 1
            seconds = startup(meta, ready)
            if seconds is not None:
                counts.startups.append(seconds)
            continue
        counts.starting += 1
        sched = conds.get("PodScheduled") or {}
        if phase == "Pending" and sched.get("status") == "False" and sched.get("reason") == "Unschedulable":
            counts.unschedulable += 1
    return out


def live_pods(items: list[dict[str, Any]]) -> dict[tuple[str, str], frozenset[str]]:
    """Per (namespace, InferenceService): names of its pods that exist and are not terminating."""
    out: dict[tuple[str, str], set[str]] = {}
    for pod in items:
        meta = pod.get("metadata", {})
        isvc = (meta.get("labels") or {}).get(names.LABEL_ISVC)
        if isvc and not meta.get("deletionTimestamp") and meta.get("name"):
            out.setdefault((str(meta.get("namespace")), str(isvc)), set()).add(str(meta["name"]))
    return {k: frozenset(v) for k, v in out.items()}


def last_decision(d: Decision) -> dict[str, Any]:
    """``status.autoscaler.lastDecision`` for a decision that changed the count."""
    return {
        "from": d.current,
        "to": d.desired,
        "reason": d.reason.value,
        "inputs": {**d.inputs, "message": d.message[:1000]},
    }


def _metrics_condition(conds: list[dict[str, Any]], d: Decision) -> list[dict[str, Any]]:
    if d.metrics_unavailable:
        return conditions.set_condition(
            conds, conditions.METRICS_AVAILABLE, False, d.condition_reason, d.unavailable_reason[:1000]
        )
    return conditions.set_condition(
        conds, conditions.METRICS_AVAILABLE, True, "MetricsFresh", "every configured metric is fresh"
    )


def _limited_condition(conds: list[dict[str, Any]], d: Decision, pods: PodCounts) -> list[dict[str, Any]]:
    if pods.unschedulable:
        message = f"{pods.unschedulable} model-server pods cannot be scheduled (no node with free GPUs?)"
        return conditions.set_condition(conds, conditions.SCALING_LIMITED, True, "PodsUnschedulable", message)
    if d.limited_at_max:
        message = f"metrics ask for more than maxReplicas ({d.desired}): {d.message[:800]}"
        return conditions.set_condition(conds, conditions.SCALING_LIMITED, True, "TooManyReplicas", message)
    return conditions.set_condition(
        conds, conditions.SCALING_LIMITED, False, "DesiredWithinRange", "the desired count is within bounds"
    )


def status_patch(
    body: dict[str, Any],
    d: Decision,
    pods: PodCounts,
    last_scale_time: str | None,
    decision: dict[str, Any] | None,
) -> dict[str, Any]:
    """The autoscaler's part of the status (server-side apply body for the /status subresource)."""
    existing = (body.get("status") or {}).get("conditions") or []
    conds = conditions.only(existing, conditions.AUTOSCALER_TYPES)
    conds = _limited_condition(_metrics_condition(conds, d), d, pods)
    autoscaler: dict[str, Any] = {"desiredReplicas": d.desired}
    if last_scale_time:
        autoscaler["lastScaleTime"] = last_scale_time
    if decision:
        autoscaler["lastDecision"] = decision
    meta = body.get("metadata", {})
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "status": {"autoscaler": autoscaler, "conditions": conds},
    }
