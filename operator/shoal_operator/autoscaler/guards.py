"""Stage 3 of the policy: the guards that limit a recommendation (cold start, step limits, bounds).

Each guard takes the draft decision and returns it unchanged or held back, with the reason and a message
that says which guard acted and on what numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .model import Draft, PolicyConfig, PolicyInput, Reason, ScaleEvent, StepBehavior


@dataclass(frozen=True)
class Situation:
    """What the guards look at besides the draft."""

    current: int
    demand: float  # queued + running + held requests
    #: The demand expected when pods started now are Ready (`outlook.py`; the demand when not growing).
    demand_ahead: float
    panicking: bool
    #: A scale-up happened within the scale-up period (one unlimited panic jump per period).
    jumped_recently: bool
    events: tuple[ScaleEvent, ...]
    now: float


def situation(
    cfg: PolicyConfig,
    current: int,
    demand: float,
    demand_ahead: float,
    panicking: bool,
    events: tuple[ScaleEvent, ...],
    now: float,
) -> Situation:
    jumped = any(
        e.to_replicas > e.from_replicas and now - e.time < cfg.scale_up.period_seconds for e in events
    )
    return Situation(current, demand, max(demand, demand_ahead), panicking, jumped, events, now)


# ------------------------------------------------------------------------------------- cold start


def cold_start(cfg: PolicyConfig, draft: Draft, inp: PolicyInput, s: Situation) -> Draft:
    """Pods on their way are capacity: no scale-down while they start, and a scale-up while they start
    goes no further than the backlog needs at a replica's comfortable load, plus one.

    The queue grows while pods load, so a queue-driven recommendation overshoots then; the backlog
    itself does not (#19). "Comfortable" is the scale-down floor's `scale_down_utilization` of a
    replica's capacity: the two guards bracket the same load model. (Holding every scale-up until the
    starting pods were Ready, as before, left a service at 2 replicas for 35 s with TTFT at 5x its
    target in the live benchmark while HPA went to 5.)"""
    starting = inp.starting_schedulable
    current = s.current
    if draft.desired < current and starting > 0:
        draft = Draft(current, Reason.COLD_START, f"not scaling down while {starting} pods start")
    if draft.desired < current and s.panicking:
        draft = Draft(current, Reason.PANIC_HOLD, "panic mode: no scale-down")
    backlog_need = capacity_floor(cfg, s.demand_ahead)
    if draft.desired > current and inp.starting_replicas > 0 and backlog_need is not None:
        capped = max(current, backlog_need + 1)
        if draft.desired > capped:
            message = (
                f"{draft.message}; {inp.starting_replicas} pods still starting and the backlog of "
                f"{_backlog(s)} needs {backlog_need}: capped at {capped}"
            )
            draft = Draft(capped, Reason.COLD_START if capped == current else draft.reason, message)
    return draft


# ------------------------------------------------------------------------------------- capacity


def capacity_floor(cfg: PolicyConfig, demand: float) -> int | None:
    """Fewest replicas that carry `demand` requests at `scale_down_utilization` of each one's capacity."""
    cap = cfg.capacity()
    if cap is None:
        return None
    full = cfg.replica_capacity is None  # the capacity is the user's RunningRequests target
    utilization = 1.0 if full else min(max(cfg.scale_down_utilization, 0.05), 1.0)
    return math.ceil(demand / (cap * utilization) - 1e-9)


def capacity(cfg: PolicyConfig, draft: Draft, s: Situation) -> Draft:
    """No scale-down below what the load in flight needs, whichever metrics were configured."""
    if draft.desired >= s.current:
        return draft
    floor = capacity_floor(cfg, s.demand)
    if floor is None or draft.desired >= floor:
        return draft
    desired = min(floor, s.current)
    reason = Reason.CAPACITY_HOLD if desired == s.current else draft.reason
    message = f"{draft.message}; {s.demand:g} requests in flight need {floor} replicas"
    return Draft(desired, reason, message)


# ------------------------------------------------------------------------------------- step limits


def up_limit(b: StepBehavior, current: int, events: tuple[ScaleEvent, ...], now: float) -> int:
    """Most replicas allowed now: the count at the start of the period, grown by the step limits."""
    added = sum(
        e.to_replicas - e.from_replicas
        for e in events
        if e.to_replicas > e.from_replicas and now - e.time < b.period_seconds
    )
    start = max(current - added, 1)
    limit = 1 << 30
    if b.max_percent_per_step is not None:
        limit = max(math.ceil(start * (1.0 + b.max_percent_per_step / 100.0) - 1e-9), start + 1)
    if b.max_replicas_per_step is not None:
        limit = min(limit, start + max(b.max_replicas_per_step, 1))
    return max(limit, current)


def down_limit(b: StepBehavior, current: int, events: tuple[ScaleEvent, ...], now: float) -> int:
    """Fewest replicas allowed now; at most one scale-down per period, by at most maxPercentPerStep."""
    recent = [e for e in events if e.to_replicas < e.from_replicas and now - e.time < b.period_seconds]
    if recent:
        return current
    limit = 0
    if b.max_percent_per_step is not None:
        limit = math.floor(current * (1.0 - b.max_percent_per_step / 100.0) + 1e-9)
    if b.max_replicas_per_step is not None:
        limit = max(limit, current - max(b.max_replicas_per_step, 1))
    return min(max(limit, 0), current)


def backlog_follow(cfg: PolicyConfig, draft: Draft, s: Situation) -> int:
    """In panic, after the period's jump: as far toward the draft as the backlog needs at full capacity,
    plus one (the current count when that is unknown or not more).

    A burst's first jump is capped at the backlog seen in its first seconds, which is small; the burst
    keeps arriving while pods start. Waiting a whole period for the next jump made shoal climb a
    staircase (1 -> 2, 15 s later -> 8) in #19's live benchmark while the HPA jumped 1 -> 5. The cap
    holds each step to requests that are really there, so it cannot run away on a noisy sample."""
    if not s.panicking:
        return s.current
    cap = cfg.capacity()
    if cap is None:
        return s.current
    backlog_need = math.ceil(s.demand_ahead / cap - 1e-9) + 1
    return max(s.current, min(draft.desired, backlog_need))


def _backlog(s: Situation) -> str:
    if s.demand_ahead > s.demand:
        return f"{s.demand:g} ({s.demand_ahead:.0f} when new pods are Ready)"
    return f"{s.demand:g}"


def _limited(draft: Draft, limit: int, current: int, what: str) -> Draft:
    reason = Reason.RATE_LIMITED if limit == current else draft.reason
    return Draft(limit, reason, f"{draft.message}; {what} limited to {limit} this period")


def step_limits(cfg: PolicyConfig, draft: Draft, s: Situation) -> Draft:
    """HPA's behavior policies: growth per scale-up period, one bounded step per scale-down period, and
    a scale-down too small to be worth its drains waits (batched)."""
    current = s.current
    if draft.desired > current:
        if s.panicking and not s.jumped_recently:
            return replace(draft, reason=Reason.PANIC_SCALE_UP)  # one unlimited jump per period
        limit = up_limit(cfg.scale_up, current, s.events, s.now)
        follow = backlog_follow(cfg, draft, s)
        if follow > limit:
            message = f"{draft.message}; panic: following the backlog of {_backlog(s)} to {follow}"
            return Draft(follow, Reason.PANIC_SCALE_UP, message)
        return _limited(draft, limit, current, "scale-up") if draft.desired > limit else draft
    if draft.desired < current:
        min_step = max(1, math.ceil(current * cfg.min_scale_down_percent / 100.0 - 1e-9))
        if current - draft.desired < min_step and draft.desired > cfg.floor:
            message = (
                f"{draft.message}; removing {current - draft.desired} is less than the minimum step of "
                f"{min_step}"
            )
            return Draft(current, Reason.STABILIZING, message)
        limit = down_limit(cfg.scale_down, current, s.events, s.now)
        if draft.desired < limit:
            return _limited(draft, limit, current, "scale-down")
    return draft


# ------------------------------------------------------------------------------------- bounds

_AT_MAX_FROM = (Reason.SCALE_UP, Reason.PANIC_SCALE_UP, Reason.WITHIN_TOLERANCE, Reason.RATE_LIMITED)


def bounds(cfg: PolicyConfig, draft: Draft, current: int, raw: int | None) -> tuple[Draft, bool]:
    """minReplicas and maxReplicas; also whether the metrics ask for more than maxReplicas."""
    floor, ceiling = cfg.floor, cfg.ceiling
    wanted = draft.desired
    if draft.desired > ceiling:
        reason = Reason.ABOVE_MAX if current > ceiling else draft.reason
        draft = Draft(ceiling, reason, f"{draft.message}; bounded by maxReplicas {ceiling}")
    if draft.desired < floor:
        reason = Reason.BELOW_MIN if current < floor else draft.reason
        draft = Draft(floor, reason, f"{draft.message}; bounded by minReplicas {floor}")
    limited = (raw is not None and raw > ceiling and draft.desired >= ceiling) or wanted > ceiling
    if limited and draft.desired == current and draft.reason in _AT_MAX_FROM:
        draft = replace(draft, reason=Reason.AT_MAX)
    return draft, limited
