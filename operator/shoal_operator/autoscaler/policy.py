"""The scaling decision: a pure function from observed inputs (and the previous state) to a replica count.

No I/O, no clocks: the caller passes ``now``.  Every decision carries a machine-readable reason, a human
message with the numbers that led to it, and the inputs it saw, so ``status.autoscaler.lastDecision`` and
the Event explain themselves.  The algorithm is documented in ``docs/autoscaler.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum


class MetricType(StrEnum):
    """Metric kinds a user can put in ``spec.autoscaling.metrics``."""

    QUEUE_DEPTH = "QueueDepth"  # requests waiting (model-server admission queue + engine waiting), summed
    RUNNING_REQUESTS = "RunningRequests"  # requests being decoded, summed
    TIME_TO_FIRST_TOKEN = "TimeToFirstToken"  # a quantile in seconds (a per-service value)
    KV_CACHE_USAGE = "KVCacheUsage"  # mean KV-cache usage fraction of the ready pods (a per-service value)


class Signal(StrEnum):
    """Everything the metrics layer can observe; the configured metrics are a subset plus the load signals."""

    QUEUE_DEPTH = "QueueDepth"
    RUNNING_REQUESTS = "RunningRequests"
    TIME_TO_FIRST_TOKEN = "TimeToFirstToken"
    KV_CACHE_USAGE = "KVCacheUsage"
    ROUTER_PENDING = "RouterPending"  # requests the router holds because no replica is ready


#: Metrics whose value is a sum over pods: desired = ceil(sum / targetPerReplica).
SUM_METRICS = frozenset({MetricType.QUEUE_DEPTH, MetricType.RUNNING_REQUESTS})
#: Signals exported by model-server pods: no series is expected when no pod is ready.
POD_SIGNALS = frozenset(
    {Signal.QUEUE_DEPTH, Signal.RUNNING_REQUESTS, Signal.TIME_TO_FIRST_TOKEN, Signal.KV_CACHE_USAGE}
)
#: Signals computed from requests in a window: with no request in the window there is nothing to measure.
PER_REQUEST_SIGNALS = frozenset({Signal.TIME_TO_FIRST_TOKEN})


class Reason(StrEnum):
    """Reasons recorded in ``status.autoscaler.lastDecision.reason``, Events and the decisions counter."""

    SCALE_UP = "ScaleUp"
    SCALE_DOWN = "ScaleDown"
    PANIC_SCALE_UP = "PanicScaleUp"
    SCALE_FROM_ZERO = "ScaleFromZero"
    SCALE_TO_ZERO = "ScaleToZero"
    BELOW_MIN = "BelowMinReplicas"
    ABOVE_MAX = "AboveMaxReplicas"
    WITHIN_TOLERANCE = "WithinTolerance"
    STABILIZING = "ScaleDownStabilizing"
    RATE_LIMITED = "RateLimited"
    COLD_START = "ColdStartHold"
    PANIC_HOLD = "PanicHold"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    IDLE = "Idle"
    AT_MAX = "AtMaxReplicas"


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"
    NONE = "none"


# --------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class MetricTarget:
    type: MetricType
    #: targetPerReplica for sum metrics, targetSeconds for TTFT, a fraction (0..1) for KV-cache usage.
    target: float
    quantile: float = 0.95


@dataclass(frozen=True)
class StepBehavior:
    stabilization_seconds: float
    max_percent_per_step: float | None  # None: no percentage limit
    period_seconds: float
    max_replicas_per_step: int | None = None


def _default_up() -> StepBehavior:
    return StepBehavior(stabilization_seconds=0.0, max_percent_per_step=100.0, period_seconds=15.0)


def _default_down() -> StepBehavior:
    return StepBehavior(stabilization_seconds=300.0, max_percent_per_step=50.0, period_seconds=60.0)


@dataclass(frozen=True)
class PolicyConfig:
    """The autoscaling block of an InferenceService, as plain data (see ``adapter.py`` for the CR)."""

    min_replicas: int = 1
    max_replicas: int = 4
    metrics: tuple[MetricTarget, ...] = (MetricTarget(MetricType.QUEUE_DEPTH, 4.0),)
    tolerance: float = 0.1
    scale_up: StepBehavior = field(default_factory=_default_up)
    scale_down: StepBehavior = field(default_factory=_default_down)
    panic_threshold_percent: float = 200.0
    panic_window_seconds: float = 60.0
    scale_to_zero: bool = False
    idle_seconds: float = 600.0
    metrics_max_age_seconds: float = 30.0
    #: Scale-down decisions use each metric's mean over this window, scale-up decisions the mean over
    #: ``up_window_seconds`` (noise does not move replicas); panic detection uses the newest sample alone
    #: (a spike is seen at the first scrape).
    stable_window_seconds: float = 60.0
    up_window_seconds: float = 20.0
    #: A scale-down must remove at least this share of the replicas (at least one): scale-down events
    #: cost drains and cold caches, so they are batched rather than taken one replica a minute.
    min_scale_down_percent: float = 20.0
    #: Requests one replica serves at its target load; used to turn a backlog into a replica count
    #: (scale from zero, the cold-start cap).  Defaults to the RunningRequests target when configured.
    replica_capacity: float | None = None

    def capacity(self) -> float | None:
        if self.replica_capacity is not None and self.replica_capacity > 0:
            return self.replica_capacity
        for m in self.metrics:
            if m.type is MetricType.RUNNING_REQUESTS and m.target > 0:
                return m.target
        return None


# --------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Observation:
    """One signal for one service, as the metrics layer saw it.

    ``value is None and error is None`` means the query succeeded but returned no series for the service.
    ``timestamp`` is the newest scrape time behind the value (seconds since the epoch); ``series`` is the
    number of pod series that were aggregated (0 when unknown).
    """

    value: float | None
    timestamp: float | None = None
    error: str | None = None
    series: int = 0


@dataclass(frozen=True)
class PolicyInput:
    now: float
    #: InferenceService spec.replicas (what the scale subresource holds).
    spec_replicas: int
    ready_replicas: int
    #: Pods that exist, are not terminating and are not ready: Pending (incl. unschedulable) or loading.
    starting_replicas: int = 0
    #: Subset of starting_replicas: Pending with PodScheduled=False/Unschedulable (e.g. no free GPU).
    unschedulable_replicas: int = 0
    observations: Mapping[Signal, Observation] = field(default_factory=dict)


@dataclass(frozen=True)
class ScaleEvent:
    time: float
    from_replicas: int
    to_replicas: int


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between cycles (kept in memory by the loop, one per service)."""

    #: When this state was first used; scale-down needs a full stabilization window of history.
    started_at: float
    #: (time, recommendation) of recent cycles; a cycle with missing metrics records the current count.
    recommendations: tuple[tuple[float, int], ...] = ()
    events: tuple[ScaleEvent, ...] = ()
    panic_until: float | None = None
    idle_since: float | None = None
    #: (signal, sample timestamp, value) of the stable window, one entry per scrape.
    samples: tuple[tuple[str, float, float], ...] = ()


# --------------------------------------------------------------------------------------------- output


@dataclass(frozen=True)
class Decision:
    current: int
    desired: int
    reason: Reason
    message: str
    direction: Direction
    limited_at_max: bool = False
    metrics_unavailable: bool = False
    unavailable_reason: str = ""
    panic: bool = False
    #: Replica count each configured metric asked for (those that were usable).
    per_metric: Mapping[str, int] = field(default_factory=dict)
    #: The numbers the decision was based on, for status.autoscaler.lastDecision.inputs.
    inputs: Mapping[str, float | int | str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.desired != self.current


@dataclass(frozen=True)
class _Usable:
    value: float
    age: float


def _evaluate(cfg: PolicyConfig, inp: PolicyInput, signal: Signal) -> tuple[_Usable | None, str | None]:
    """(usable value, None) or (None, why it is unusable)."""
    obs = inp.observations.get(signal)
    if obs is None:
        return None, f"{signal}: not queried"
    if obs.error is not None:
        return None, f"{signal}: {obs.error}"
    if obs.value is None:
        if signal in POD_SIGNALS and inp.ready_replicas == 0:
            return _Usable(0.0, 0.0), None  # no ready pod, so no series is expected: nothing is happening
        if signal is Signal.ROUTER_PENDING:
            return _Usable(0.0, 0.0), None  # the router exports the gauge only once it has held something
        if signal in PER_REQUEST_SIGNALS and _fresh_and_idle(cfg, inp):
            return _Usable(0.0, 0.0), None  # a histogram has no series before its first request
        return None, f"{signal}: no data"
    if math.isnan(obs.value) and signal in PER_REQUEST_SIGNALS and _fresh_and_idle(cfg, inp):
        # histogram_quantile over a window without requests is NaN. When the request counters are fresh
        # and zero, that NaN means "idle", not "metrics broken": without this, an idle service could
        # never scale down. A broken Prometheus makes the counters unusable too, so it still holds.
        return _Usable(0.0, 0.0), None
    if math.isnan(obs.value) or math.isinf(obs.value):
        return None, f"{signal}: value is {obs.value}"
    if obs.timestamp is None:
        return None, f"{signal}: no sample timestamp"
    age = inp.now - obs.timestamp
    if age > cfg.metrics_max_age_seconds:
        return None, f"{signal}: stale ({age:.0f}s old > {cfg.metrics_max_age_seconds:.0f}s)"
    if obs.value < 0:
        return None, f"{signal}: negative value {obs.value}"
    return _Usable(obs.value, age), None


def _fresh_and_idle(cfg: PolicyConfig, inp: PolicyInput) -> bool:
    """Queue depth and running requests are both usable and zero."""
    for sig in (Signal.QUEUE_DEPTH, Signal.RUNNING_REQUESTS):
        usable, _ = _evaluate(cfg, inp, sig)
        if usable is None or usable.value != 0:
            return False
    return True


def _metric_recommendation(cfg: PolicyConfig, m: MetricTarget, value: float, inp: PolicyInput) -> int | None:
    """HPA's formula for one metric, with the dead band.  None: this metric has no opinion."""
    current = inp.spec_replicas
    if m.target <= 0:
        return None
    if m.type in SUM_METRICS:
        # Pods on their way count as capacity: the ratio is against the spec count, not the ready count.
        ratio = value / (m.target * max(current, 1))
        exact = value / m.target
    else:
        base = inp.ready_replicas
        if base == 0:
            return None  # a latency or cache figure from no pod says nothing about the count
        ratio = value / m.target
        exact = base * ratio
    if abs(ratio - 1.0) <= cfg.tolerance:
        return current
    if ratio > 1.0:
        # Land at the bottom of the dead band, not at its middle: the next few percent of growth then
        # stays inside the band instead of costing another scale event.
        exact *= 1.0 + cfg.tolerance
    proposal = math.ceil(exact - 1e-9)
    # Never let the direction of the proposal contradict the direction of the ratio (HPA does the same):
    # a latency above target with pods still loading must not read as a scale-down.
    if ratio > 1.0:
        return max(proposal, current)
    return min(proposal, current)


def _mean(samples: list[tuple[str, float, float]], sig: Signal, since: float, newest: float) -> float:
    window = [v for s, t, v in samples if s == sig and t > since]
    return sum(window) / len(window) if window else newest


def _need(cfg: PolicyConfig, demand: float) -> int | None:
    cap = cfg.capacity()
    if cap is None:
        return None
    return math.ceil(demand / cap - 1e-9)


def _up_limit(b: StepBehavior, current: int, events: tuple[ScaleEvent, ...], now: float) -> int:
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


def _down_limit(b: StepBehavior, current: int, events: tuple[ScaleEvent, ...], now: float) -> int:
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


def decide(cfg: PolicyConfig, inp: PolicyInput, state: PolicyState | None) -> tuple[Decision, PolicyState]:
    """One autoscaling decision.  Pure: the same arguments always give the same result."""
    now = inp.now
    current = max(inp.spec_replicas, 0)
    st = state if state is not None else PolicyState(started_at=now)
    floor = max(cfg.min_replicas, 1)
    ceiling = max(cfg.max_replicas, floor)

    inputs: dict[str, float | int | str] = {
        "specReplicas": current,
        "readyReplicas": inp.ready_replicas,
        "startingReplicas": inp.starting_replicas,
        "unschedulableReplicas": inp.unschedulable_replicas,
    }

    # -- the load signals (for scale from zero, scale to zero and the cold-start cap)
    load: dict[Signal, float | None] = {}
    for sig in (Signal.QUEUE_DEPTH, Signal.RUNNING_REQUESTS, Signal.ROUTER_PENDING):
        usable, _ = _evaluate(cfg, inp, sig)
        load[sig] = usable.value if usable is not None else None
        if usable is not None:
            inputs[str(sig)] = usable.value
    demand = sum(v for v in load.values() if v is not None)

    # -- the configured metrics
    per_metric: dict[str, int] = {}  # from the stable-window mean
    per_metric_now: dict[str, int] = {}  # from the newest sample (panic detection)
    unavailable: list[str] = []
    kept = [x for x in st.samples if x[1] > now - max(cfg.stable_window_seconds, cfg.up_window_seconds)]
    for m in cfg.metrics:
        sig = Signal(m.type.value)
        usable, why = _evaluate(cfg, inp, sig)
        if usable is None:
            unavailable.append(why or f"{m.type}: unavailable")
            continue
        stamp = now - usable.age
        if not any(x[0] == sig and x[1] == stamp for x in kept):
            kept.append((str(sig), stamp, usable.value))
        mean_down = _mean(kept, sig, now - cfg.stable_window_seconds, usable.value)
        mean_up = _mean(kept, sig, now - cfg.up_window_seconds, usable.value)
        inputs[str(m.type)] = usable.value
        inputs[f"{m.type}.mean{cfg.up_window_seconds:g}s"] = round(mean_up, 4)
        inputs[f"{m.type}.mean{cfg.stable_window_seconds:g}s"] = round(mean_down, 4)
        inputs[f"{m.type}.target"] = m.target
        rec_up = _metric_recommendation(cfg, m, mean_up, inp)
        rec_down = _metric_recommendation(cfg, m, mean_down, inp)
        if rec_up is not None and rec_down is not None:
            # Up on the short mean; down only as far as both means allow.
            cur = inp.spec_replicas
            per_metric[str(m.type)] = rec_up if rec_up > cur else min(max(rec_up, rec_down), cur)
        rec_now = _metric_recommendation(cfg, m, usable.value, inp)
        if rec_now is not None:
            per_metric_now[str(m.type)] = rec_now
    st = replace(st, samples=tuple(kept))
    all_available = not unavailable
    unavailable_reason = "; ".join(unavailable)
    raw = max(per_metric.values()) if per_metric else None
    raw_now = max(per_metric_now.values()) if per_metric_now else None

    def finish(
        desired: int,
        reason: Reason,
        message: str,
        *,
        new_state: PolicyState,
        limited: bool = False,
        panic: bool = False,
    ) -> tuple[Decision, PolicyState]:
        direction = (
            Direction.UP if desired > current else Direction.DOWN if desired < current else Direction.NONE
        )
        events = new_state.events
        if desired != current:
            events = (*events, ScaleEvent(now, current, desired))
        horizon = max(
            cfg.scale_up.period_seconds,
            cfg.scale_down.period_seconds,
            cfg.scale_up.stabilization_seconds,
            cfg.scale_down.stabilization_seconds,
        )
        events = tuple(e for e in events if now - e.time <= horizon)
        recs = tuple(r for r in new_state.recommendations if now - r[0] <= horizon)
        decision = Decision(
            current=current,
            desired=desired,
            reason=reason,
            message=message,
            direction=direction,
            limited_at_max=limited,
            metrics_unavailable=not all_available,
            unavailable_reason=unavailable_reason,
            panic=panic,
            per_metric=per_metric,
            inputs=inputs,
        )
        return decision, replace(new_state, events=events, recommendations=recs)

    # ------------------------------------------------------------------ at zero: wake up on held requests
    if current == 0:
        st0 = replace(st, idle_since=None, recommendations=(), panic_until=None)
        if demand > 0:
            need = _need(cfg, demand) or floor
            desired = min(max(need, floor), ceiling)
            return finish(
                desired,
                Reason.SCALE_FROM_ZERO,
                f"{demand:g} requests held or queued at zero replicas; starting {desired}",
                new_state=replace(st0, started_at=now),
                limited=need > ceiling,
            )
        if not cfg.scale_to_zero:
            return finish(floor, Reason.BELOW_MIN, f"0 replicas is below minReplicas {floor}", new_state=st0)
        if load[Signal.ROUTER_PENDING] is None:
            return finish(
                0,
                Reason.METRICS_UNAVAILABLE,
                f"at zero and the router's held requests are unknown ({unavailable_reason or 'no data'})",
                new_state=st0,
            )
        return finish(0, Reason.IDLE, "idle at zero replicas", new_state=st0)

    # ------------------------------------------------------------------ panic
    panic_until = st.panic_until
    if (
        raw_now is not None
        and raw_now > current
        and raw_now * 100.0 >= max(current, 1) * cfg.panic_threshold_percent
    ):
        panic_until = now + cfg.panic_window_seconds
    panicking = panic_until is not None and now < panic_until
    st = replace(st, panic_until=panic_until if panicking else None)
    if panicking and raw is not None and raw_now is not None and raw_now > raw:
        # Jump on the newest sample, but only as far as the backlog needs (plus one).
        jump = raw_now
        backlog = _need(cfg, demand)
        if backlog is not None:
            jump = min(jump, max(backlog + 1, current))
        raw = max(raw, jump)

    # ------------------------------------------------------------------ recommendation history
    recorded = raw if (raw is not None and all_available) else current
    previous = st.recommendations
    st = replace(st, recommendations=(*previous, (now, recorded)))

    # ------------------------------------------------------------------ idle → scale to zero
    idle = (
        cfg.scale_to_zero
        and all_available
        and inp.starting_replicas == 0
        and all(load[s] == 0.0 for s in (Signal.QUEUE_DEPTH, Signal.RUNNING_REQUESTS))
        and load[Signal.ROUTER_PENDING] == 0.0
        and inp.observations.get(Signal.ROUTER_PENDING) is not None
        and inp.observations[Signal.ROUTER_PENDING].error is None
    )
    idle_since = (st.idle_since if st.idle_since is not None else now) if idle else None
    st = replace(st, idle_since=idle_since)
    if idle and idle_since is not None and now - idle_since >= cfg.idle_seconds:
        return finish(
            0,
            Reason.SCALE_TO_ZERO,
            f"no queued, running or held requests for {now - idle_since:.0f}s (idleSeconds {cfg.idle_seconds:g})",
            new_state=replace(st, idle_since=None),
        )

    # ------------------------------------------------------------------ the recommendation
    if raw is None:
        desired = current
        reason = Reason.METRICS_UNAVAILABLE
        message = f"holding {current}: {unavailable_reason or 'no usable metric'}"
    else:
        up_cut = now - cfg.scale_up.stabilization_seconds
        down_cut = now - cfg.scale_down.stabilization_seconds
        up_rec = min([raw, *(r for t, r in previous if t > up_cut)]) if raw > current else raw
        down_rec = max([raw, *(r for t, r in previous if t > down_cut)])
        if st.started_at > down_cut:
            down_rec = max(down_rec, current)  # not a full window of history yet
        if up_rec > current:
            desired, reason = up_rec, Reason.SCALE_UP
            message = f"metrics ask for {raw} ({_fmt(per_metric)})"
        elif raw < current and down_rec < current:
            desired, reason = down_rec, Reason.SCALE_DOWN
            message = (
                f"metrics ask for {raw} ({_fmt(per_metric)}); highest in the last "
                f"{cfg.scale_down.stabilization_seconds:g}s is {down_rec}"
            )
        elif raw < current:
            desired, reason = current, Reason.STABILIZING
            message = (
                f"metrics ask for {raw} ({_fmt(per_metric)}) but asked for {down_rec} within the last "
                f"{cfg.scale_down.stabilization_seconds:g}s"
            )
        else:
            desired, reason = current, Reason.WITHIN_TOLERANCE
            message = f"metrics within tolerance of {current} replicas ({_fmt(per_metric)})"
        if desired < current and not all_available:
            desired, reason = current, Reason.METRICS_UNAVAILABLE
            message = f"not scaling down on missing data: {unavailable_reason}"
        elif desired == current and not all_available and reason is Reason.WITHIN_TOLERANCE:
            reason = Reason.METRICS_UNAVAILABLE
            message = f"holding {current}: {unavailable_reason}"

    # ------------------------------------------------------------------ cold start
    starting_schedulable = max(inp.starting_replicas - inp.unschedulable_replicas, 0)
    if desired < current and starting_schedulable > 0:
        desired, reason = current, Reason.COLD_START
        message = f"not scaling down while {starting_schedulable} pods start"
    if desired < current and panicking:
        desired, reason = current, Reason.PANIC_HOLD
        message = f"panic mode until {panic_until:.0f}: no scale-down"
    jumped_recently = any(
        e.to_replicas > e.from_replicas and now - e.time < cfg.scale_up.period_seconds for e in st.events
    )
    if desired > current and starting_schedulable > 0:
        # Pods on the way are capacity: the queue grows while they load, which is no reason to add
        # more.  Only a backlog that alone needs panic-level growth adds pods during a cold start.
        backlog_need = _need(cfg, demand)
        beyond = (
            backlog_need is not None and backlog_need * 100.0 >= current * cfg.panic_threshold_percent
        ) or (backlog_need is None and panicking)
        if not beyond or jumped_recently:
            desired, reason = current, Reason.COLD_START
            message = f"{message}; waiting for {starting_schedulable} starting pods before adding more"
    if desired > current and inp.starting_replicas > 0:
        backlog_need = _need(cfg, demand)
        if backlog_need is not None and desired > max(current, backlog_need + 1):
            capped = max(current, backlog_need + 1)
            message = (
                f"{message}; {inp.starting_replicas} pods still starting and the backlog of {demand:g} "
                f"needs {backlog_need}: capped at {capped}"
            )
            desired = capped
            if desired == current:
                reason = Reason.COLD_START

    # ------------------------------------------------------------------ rate limits
    if desired > current:
        if panicking and not jumped_recently:
            reason = Reason.PANIC_SCALE_UP  # one unlimited jump per scale-up period
        else:
            limit = _up_limit(cfg.scale_up, current, st.events, now)
            if desired > limit:
                message = f"{message}; scale-up limited to {limit} this period"
                desired = limit
                if desired == current:
                    reason = Reason.RATE_LIMITED
    elif desired < current:
        min_step = max(1, math.ceil(current * cfg.min_scale_down_percent / 100.0 - 1e-9))
        if current - desired < min_step and desired > floor:
            message = f"{message}; removing {current - desired} is less than the minimum step of {min_step}"
            desired, reason = current, Reason.STABILIZING
    if desired < current:
        limit = _down_limit(cfg.scale_down, current, st.events, now)
        if desired < limit:
            message = f"{message}; scale-down limited to {limit} this period"
            desired = limit
            if desired == current:
                reason = Reason.RATE_LIMITED

    # ------------------------------------------------------------------ bounds
    wanted = desired
    if desired > ceiling:
        desired = ceiling
        reason = Reason.ABOVE_MAX if current > ceiling else reason
        message = f"{message}; bounded by maxReplicas {ceiling}"
    if desired < floor:
        desired = floor
        reason = Reason.BELOW_MIN if current < floor else reason
        message = f"{message}; bounded by minReplicas {floor}"
    limited = (raw is not None and raw > ceiling and desired >= ceiling) or wanted > ceiling
    if (
        limited
        and desired == current
        and reason in (Reason.SCALE_UP, Reason.PANIC_SCALE_UP, Reason.WITHIN_TOLERANCE, Reason.RATE_LIMITED)
    ):
        reason = Reason.AT_MAX
    return finish(desired, reason, message, new_state=st, limited=limited, panic=panicking)


def _fmt(per_metric: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(per_metric.items())) or "none"
