"""Typed status conditions: one helper that sets them (the operator's and the autoscaler's).

`set_condition` returns a new list; `lastTransitionTime` changes only when the status changes, so
re-applying an unchanged status is a no-op for the API server (no write, no event, no resourceVersion bump).
Conditions are a list-map keyed by `type` in the CRD, so with server-side apply each writer (field manager
`shoal-operator`: Ready, Progressing, Degraded; `shoal-autoscaler`: ScalingLimited, MetricsAvailable)
owns its own entries and never removes the other's.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from shoal_common.timestamps import rfc3339

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
SCALING_LIMITED = "ScalingLimited"
METRICS_AVAILABLE = "MetricsAvailable"

OPERATOR_TYPES = (READY, PROGRESSING, DEGRADED)
AUTOSCALER_TYPES = (SCALING_LIMITED, METRICS_AVAILABLE)

Status = Literal["True", "False", "Unknown"]


def as_status(value: bool | str) -> Status:
    if value is True or value == "True":
        return "True"
    if value is False or value == "False":
        return "False"
    return "Unknown"


def find(conditions: Iterable[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    for cond in conditions:
        if cond.get("type") == type_:
            return cond
    return None


def set_condition(
    conditions: Iterable[dict[str, Any]],
    type_: str,
    status: bool | str,
    reason: str,
    message: str = "",
    *,
    observed_generation: int | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Return `conditions` with `type_` set; other types are kept unchanged and in order."""
    conditions = list(conditions)
    new_status = as_status(status)
    previous = find(conditions, type_)
    if previous is not None and previous.get("status") == new_status and previous.get("lastTransitionTime"):
        transition = str(previous["lastTransitionTime"])
    else:
        transition = rfc3339(now)
    cond: dict[str, Any] = {
        "type": type_,
        "status": new_status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if observed_generation is not None:
        cond["observedGeneration"] = observed_generation
    out = [dict(c) for c in conditions if c.get("type") != type_]
    # keep the original position when it existed
    position = next((i for i, c in enumerate(conditions) if c.get("type") == type_), len(out))
    out.insert(position, cond)
    return out


def only(conditions: Iterable[dict[str, Any]], types: Iterable[str]) -> list[dict[str, Any]]:
    """The conditions of the given types (what one field manager applies)."""
    wanted = set(types)
    return [c for c in conditions if c.get("type") in wanted]


def transitioned(before: Iterable[dict[str, Any]], after: Iterable[dict[str, Any]], type_: str) -> bool:
    """Whether `type_` changed status (or appeared) between two lists."""
    old, new = find(before, type_), find(after, type_)
    return new is not None and (old is None or old.get("status") != new.get("status"))
