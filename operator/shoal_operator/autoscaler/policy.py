"""The scaling decision: a pure pipeline from observed inputs (and the previous state) to a replica count.

1. evaluate (`signals.py`): each signal judged once into a typed reading, a value or `Unusable(kind, ...)`;
2. recommend (`recommend.py`): per-metric counts, panic, idle and zero, the stabilization windows;
3. guards (`guards.py`): cold start, capacity, step limits, bounds.

No I/O, no clocks: the caller passes ``now``.  Every decision carries a typed reason, the typed unusable
signals, a human message with the numbers that led to it, and the inputs it saw, so
``status.autoscaler.lastDecision`` and the Event explain themselves.  The algorithm is documented in
``docs/autoscaler.md``.
"""

from __future__ import annotations

from dataclasses import replace

from . import guards, outlook, recommend
from .kinds import LOAD_SIGNALS, MetricKind, Signal
from .model import (
    Decision,
    Direction,
    Draft,
    MetricTarget,
    Observation,
    PolicyConfig,
    PolicyInput,
    PolicyState,
    Reason,
    ScaleEvent,
    StepBehavior,
    Unusable,
    UnusableKind,
)
from .signals import evaluate, value_of

#: The metric kinds a user can put in ``spec.autoscaling.metrics`` (the one enum, see kinds.py).
MetricType = MetricKind

__all__ = [
    "Decision",
    "Direction",
    "MetricKind",
    "MetricTarget",
    "MetricType",
    "Observation",
    "PolicyConfig",
    "PolicyInput",
    "PolicyState",
    "Reason",
    "Signal",
    "StepBehavior",
    "Unusable",
    "UnusableKind",
    "decide",
]

Inputs = dict[str, float | int | str]


def decide(cfg: PolicyConfig, inp: PolicyInput, state: PolicyState | None) -> tuple[Decision, PolicyState]:
    """One autoscaling decision.  Pure: the same arguments always give the same result."""
    now = inp.now
    current = max(inp.spec_replicas, 0)
    st = state if state is not None else PolicyState(started_at=now)

    readings = evaluate(cfg, inp)
    load = {sig: value_of(readings, sig) for sig in LOAD_SIGNALS}
    demand = sum(v for v in load.values() if v is not None)
    view = recommend.metrics_view(cfg, inp, readings, st.samples)
    st, ahead = _outlook(replace(st, samples=view.samples), inp, load, demand)
    inputs = _inputs(inp, current, load, view, ahead)

    def finish(
        draft: Draft, new_state: PolicyState, *, limited: bool = False, panic: bool = False
    ) -> tuple[Decision, PolicyState]:
        decision = Decision(
            current=current,
            desired=draft.desired,
            reason=draft.reason,
            message=draft.message,
            direction=_direction(current, draft.desired),
            limited_at_max=limited,
            panic=panic,
            unusable=view.unusable,
            per_metric=view.per_metric,
            inputs=inputs,
        )
        return decision, _remember(cfg, new_state, current, draft.desired, now)

    if current == 0:
        draft, limited = recommend.at_zero(cfg, demand, load[Signal.ROUTER_PENDING], view)
        st = replace(st, idle_since=None, recommendations=(), panic_until=None)
        if draft.reason is Reason.SCALE_FROM_ZERO:
            st = replace(st, started_at=now)
        return finish(draft, st, limited=limited)

    panic = recommend.panic(cfg, view, st.panic_until, now, current, demand, ahead.ahead)
    previous = st.recommendations
    recorded = panic.raw if (panic.raw is not None and view.all_available) else current
    idle_since = recommend.idle_since(cfg, inp, load, view, st.idle_since)
    st = replace(
        st, panic_until=panic.until, recommendations=(*previous, (now, recorded)), idle_since=idle_since
    )
    if idle_since is not None and now - idle_since >= cfg.idle_seconds:
        message = (
            f"no queued, running or held requests for {now - idle_since:.0f}s "
            f"(idleSeconds {cfg.idle_seconds:g})"
        )
        return finish(Draft(0, Reason.SCALE_TO_ZERO, message), replace(st, idle_since=None))

    draft = recommend.stable(cfg, panic.raw, previous, st.started_at, now, current, view)
    draft = _say_outlook(draft, panic.ahead_sized and draft.desired > current, ahead)
    situation = guards.situation(cfg, current, demand, ahead.ahead, panic.panicking, st.events, now)
    draft = guards.cold_start(cfg, draft, inp, situation)
    draft = guards.capacity(cfg, draft, situation)
    draft = guards.step_limits(cfg, draft, situation)
    draft, limited = guards.bounds(cfg, draft, current, panic.raw)
    return finish(draft, st, limited=limited, panic=panic.panicking)


def _outlook(
    st: PolicyState, inp: PolicyInput, load: dict[Signal, float | None], demand: float
) -> tuple[PolicyState, outlook.Outlook]:
    """The state with this cycle's demand remembered, and the backlog expected when new pods are Ready."""
    # Growth is only measured on a whole demand: a load signal dropping out is not a change in load.
    history = outlook.remember(st.demand_history, inp.now, demand) if None not in load.values() else ()
    return replace(st, demand_history=history), outlook.outlook(history, demand, inp.startup_seconds)


def _say_outlook(draft: Draft, sized_on_it: bool, ahead: outlook.Outlook) -> Draft:
    """A scale-up the outlook sized says so, with its numbers."""
    return replace(draft, message=f"{draft.message}; panic: {ahead.describe()}") if sized_on_it else draft


def _inputs(
    inp: PolicyInput,
    current: int,
    load: dict[Signal, float | None],
    view: recommend.MetricView,
    ahead: outlook.Outlook,
) -> Inputs:
    """The numbers behind the decision (status.autoscaler.lastDecision.inputs)."""
    inputs: Inputs = {
        "specReplicas": current,
        "readyReplicas": inp.ready_replicas,
        "startingReplicas": inp.starting_replicas,
        "unschedulableReplicas": inp.unschedulable_replicas,
        **{str(sig): v for sig, v in load.items() if v is not None},
        **view.inputs,
    }
    if ahead.startup_s is not None:
        inputs["podStartupSeconds"] = round(ahead.startup_s, 1)
    if ahead.growth_per_s is not None:
        inputs["demandGrowthPerSecond"] = round(ahead.growth_per_s, 3)
        inputs["demandWhenNewPodsReady"] = round(ahead.ahead, 1)
    return inputs


def _direction(current: int, desired: int) -> Direction:
    if desired > current:
        return Direction.UP
    return Direction.DOWN if desired < current else Direction.NONE


def _remember(cfg: PolicyConfig, st: PolicyState, current: int, desired: int, now: float) -> PolicyState:
    """Record a scale event, and forget events and recommendations older than any window needs."""
    events = st.events
    if desired != current:
        events = (*events, ScaleEvent(now, current, desired))
    horizon = max(
        cfg.scale_up.period_seconds,
        cfg.scale_down.period_seconds,
        cfg.scale_up.stabilization_seconds,
        cfg.scale_down.stabilization_seconds,
    )
    return replace(
        st,
        events=tuple(e for e in events if now - e.time <= horizon),
        recommendations=tuple(r for r in st.recommendations if now - r[0] <= horizon),
    )
