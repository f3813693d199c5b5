"""The policy's stages one at a time: evaluate (signals.py), recommend (recommend.py), guards (guards.py)."""

from __future__ import annotations

import math

import pytest
from shoal_operator.autoscaler import guards, recommend
from shoal_operator.autoscaler.kinds import MetricKind, Signal
from shoal_operator.autoscaler.model import (
    Draft,
    MetricTarget,
    Observation,
    PolicyConfig,
    PolicyInput,
    Reason,
    ScaleEvent,
    StepBehavior,
    Unusable,
    UnusableKind,
    Usable,
    condition_reason,
)
from shoal_operator.autoscaler.signals import evaluate

pytestmark = pytest.mark.unit

NOW = 10_000.0
Q = MetricKind.QUEUE_DEPTH
R = MetricKind.RUNNING_REQUESTS
TTFT = MetricKind.TIME_TO_FIRST_TOKEN


def inp(spec: int = 2, ready: int | None = None, starting: int = 0, **obs: Observation) -> PolicyInput:
    return PolicyInput(
        now=NOW,
        spec_replicas=spec,
        ready_replicas=spec - starting if ready is None else ready,
        starting_replicas=starting,
        observations={Signal(k): v for k, v in obs.items()},
    )


def fresh(value: float | None) -> Observation:
    return Observation(value, NOW - 1)


# ------------------------------------------------------------------------------------- 1. evaluate


def test_each_unusable_signal_has_its_kind() -> None:
    got = evaluate(
        PolicyConfig(),
        inp(
            QueueDepth=Observation(None, error="Prometheus query failed: infra maintenance"),
            RunningRequests=Observation(1.0, NOW - 100),
            TimeToFirstToken=fresh(math.inf),
            KVCacheUsage=Observation(0.5, None),
            RouterPending=fresh(None),
        ),
    )
    kinds = {s: r.kind for s, r in got.items() if isinstance(r, Unusable)}
    assert kinds == {
        Signal.QUEUE_DEPTH: UnusableKind.QUERY_FAILED,  # "infra" in the text is not an infinite value
        Signal.RUNNING_REQUESTS: UnusableKind.STALE,
        Signal.TIME_TO_FIRST_TOKEN: UnusableKind.INVALID_VALUE,
        Signal.KV_CACHE_USAGE: UnusableKind.NO_TIMESTAMP,
    }
    assert got[Signal.ROUTER_PENDING] == Usable(0.0, 0.0)  # not exported before the router held anything


def test_evaluate_usable_values_and_no_data() -> None:
    got = evaluate(PolicyConfig(), inp(QueueDepth=fresh(3.0), RunningRequests=fresh(None)))
    assert got[Signal.QUEUE_DEPTH] == Usable(3.0, 1.0)
    assert got[Signal.RUNNING_REQUESTS] == Unusable(UnusableKind.NO_DATA, "RunningRequests: no data")
    assert got[Signal.KV_CACHE_USAGE].kind is UnusableKind.NOT_QUERIED  # type: ignore[union-attr]


def test_nan_latency_is_idle_only_with_fresh_zero_load() -> None:
    idle = evaluate(
        PolicyConfig(), inp(QueueDepth=fresh(0), RunningRequests=fresh(0), TimeToFirstToken=fresh(math.nan))
    )
    assert idle[Signal.TIME_TO_FIRST_TOKEN] == Usable(0.0, 0.0)
    busy = evaluate(
        PolicyConfig(), inp(QueueDepth=fresh(0), RunningRequests=fresh(2), TimeToFirstToken=fresh(math.nan))
    )
    assert isinstance(busy[Signal.TIME_TO_FIRST_TOKEN], Unusable)


def test_condition_reason_from_kinds_not_text() -> None:
    assert (
        condition_reason([Unusable(UnusableKind.QUERY_FAILED, "x: inf nan infra")]) == "PrometheusUnavailable"
    )
    assert (
        condition_reason([Unusable(UnusableKind.NO_DATA, "a"), Unusable(UnusableKind.STALE, "b")])
        == "MetricsStale"
    )
    assert condition_reason([Unusable(UnusableKind.INVALID_VALUE, "maintenance")]) == "InvalidValue"


# ------------------------------------------------------------------------------------- 2. recommend


def test_metric_recommendation_sum_and_per_service_metrics() -> None:
    cfg = PolicyConfig(tolerance=0.1)
    assert recommend.metric_recommendation(cfg, MetricTarget(Q, 4), 40, inp(2)) == 11  # ceil(10 * 1.1)
    assert recommend.metric_recommendation(cfg, MetricTarget(Q, 4), 8.5, inp(2)) == 2  # inside the band
    assert (
        recommend.metric_recommendation(cfg, MetricTarget(TTFT, 1.0), 2.0, inp(4, ready=2, starting=2)) == 5
    )
    assert recommend.metric_recommendation(cfg, MetricTarget(TTFT, 1.0), 2.0, inp(2, ready=0)) is None


def test_panic_jumps_on_the_newest_sample_up_to_the_backlog() -> None:
    cfg = PolicyConfig(metrics=(MetricTarget(Q, 4),), replica_capacity=10)
    view = recommend.MetricView(per_metric={"QueueDepth": 3}, per_metric_now={"QueueDepth": 12})
    p = recommend.panic(cfg, view, None, NOW, current=2, demand=50, demand_ahead=50)
    assert p.panicking and p.until == NOW + cfg.panic_window_seconds
    assert p.raw == 6 and not p.ahead_sized  # min(12, backlog 5 + 1)
    calm = recommend.panic(
        cfg,
        recommend.MetricView(per_metric={"QueueDepth": 3}, per_metric_now={"QueueDepth": 3}),
        None,
        NOW,
        2,
        0,
        0,
    )
    assert not calm.panicking and calm.raw == 3 and calm.until is None


def test_panic_provisions_for_the_backlog_expected_when_new_pods_are_ready() -> None:
    cfg = PolicyConfig(metrics=(MetricTarget(Q, 4),), replica_capacity=10)
    view = recommend.MetricView(per_metric={"QueueDepth": 3}, per_metric_now={"QueueDepth": 12})
    # 50 requests now, 150 expected by the time new pods are Ready: 15 replicas, past the metric's 12
    p = recommend.panic(cfg, view, None, NOW, current=2, demand=50, demand_ahead=150)
    assert p.raw == 15 and p.ahead_sized
    # not growing: the backlog now (+1) caps the jump as before
    flat = recommend.panic(cfg, view, None, NOW, current=2, demand=50, demand_ahead=40)
    assert flat.raw == 6 and not flat.ahead_sized
    # no panic, no outlook: a growing backlog alone never moves the count outside a burst
    calm_view = recommend.MetricView(per_metric={"QueueDepth": 3}, per_metric_now={"QueueDepth": 3})
    calm = recommend.panic(cfg, calm_view, None, NOW, current=2, demand=50, demand_ahead=150)
    assert not calm.panicking and calm.raw == 3 and not calm.ahead_sized


def test_at_zero_wakes_on_backlog_and_idles_otherwise() -> None:
    cfg = PolicyConfig(min_replicas=0, max_replicas=4, scale_to_zero=True, replica_capacity=8)
    view = recommend.MetricView()
    assert recommend.at_zero(cfg, 100, 100, view) == (
        Draft(4, Reason.SCALE_FROM_ZERO, "100 requests held or queued at zero replicas; starting 4"),
        True,
    )
    assert recommend.at_zero(cfg, 0, 0.0, view)[0].reason is Reason.IDLE
    assert recommend.at_zero(cfg, 0, None, view)[0].reason is Reason.METRICS_UNAVAILABLE


def test_stable_takes_the_highest_recommendation_of_the_down_window() -> None:
    cfg = PolicyConfig()
    history = ((NOW - 200, 5), (NOW - 100, 4))
    d = recommend.stable(
        cfg, 2, history, NOW - 10_000, NOW, current=6, view=recommend.MetricView(per_metric={"QueueDepth": 2})
    )
    assert (d.desired, d.reason) == (5, Reason.SCALE_DOWN)
    missing = recommend.MetricView(
        per_metric={"QueueDepth": 2}, unusable=(Unusable(UnusableKind.STALE, "RunningRequests: stale"),)
    )
    d = recommend.stable(cfg, 2, (), NOW - 10_000, NOW, current=6, view=missing)
    assert (d.desired, d.reason) == (6, Reason.METRICS_UNAVAILABLE)


# ------------------------------------------------------------------------------------- 3. guards


def _situation(
    cfg: PolicyConfig,
    current: int,
    demand: float = 0,
    panicking: bool = False,
    events: tuple[ScaleEvent, ...] = (),
    demand_ahead: float | None = None,
) -> guards.Situation:
    ahead = demand if demand_ahead is None else demand_ahead
    return guards.situation(cfg, current, demand, ahead, panicking, events, NOW)


def test_cold_start_holds_scale_down_and_caps_scale_up_at_the_backlogs_need() -> None:
    # maxConcurrency 10, comfortable at 50% (scale_down_utilization): 5 requests per replica
    cfg = PolicyConfig(replica_capacity=10)
    starting = inp(4, ready=2, starting=2)
    down = guards.cold_start(cfg, Draft(2, Reason.SCALE_DOWN, "m"), starting, _situation(cfg, 4))
    assert (down.desired, down.reason) == (4, Reason.COLD_START)
    up = guards.cold_start(cfg, Draft(6, Reason.SCALE_UP, "m"), starting, _situation(cfg, 4, demand=60))
    assert (up.desired, up.reason) == (6, Reason.SCALE_UP)  # the backlog needs 12: not capped
    big = guards.cold_start(cfg, Draft(12, Reason.SCALE_UP, "m"), starting, _situation(cfg, 4, demand=20))
    assert (big.desired, big.reason) == (5, Reason.SCALE_UP)  # backlog 4 + 1
    held = guards.cold_start(cfg, Draft(6, Reason.SCALE_UP, "m"), starting, _situation(cfg, 4, demand=15))
    assert (held.desired, held.reason) == (4, Reason.COLD_START)  # backlog 3 + 1 <= 4
    # a growing backlog: the cap is what the backlog will need when the new pods are Ready
    growing = _situation(cfg, 4, demand=20, demand_ahead=40)
    ahead = guards.cold_start(cfg, Draft(12, Reason.SCALE_UP, "m"), starting, growing)
    assert (ahead.desired, ahead.reason) == (9, Reason.SCALE_UP)  # 40 needs 8, + 1
    assert "backlog of 20 (40 when new pods are Ready) needs 8" in ahead.message


def test_step_limits_up_down_and_minimum_step() -> None:
    cfg = PolicyConfig(scale_up=StepBehavior(0, 100, 15), max_replicas=50)
    assert guards.step_limits(cfg, Draft(10, Reason.SCALE_UP, "m"), _situation(cfg, 2)).desired == 4
    assert (
        guards.step_limits(cfg, Draft(10, Reason.SCALE_UP, "m"), _situation(cfg, 2, panicking=True)).reason
        is Reason.PANIC_SCALE_UP
    )
    recent_down = (ScaleEvent(NOW - 10, 8, 6),)
    held = guards.step_limits(cfg, Draft(3, Reason.SCALE_DOWN, "m"), _situation(cfg, 6, events=recent_down))
    assert (held.desired, held.reason) == (6, Reason.RATE_LIMITED)
    small = guards.step_limits(cfg, Draft(9, Reason.SCALE_DOWN, "m"), _situation(cfg, 10))
    assert (small.desired, small.reason) == (10, Reason.STABILIZING)  # 1 of 10 is under the 20% step


def test_bounds_clamp_and_report_at_max() -> None:
    cfg = PolicyConfig(min_replicas=2, max_replicas=5)
    d, limited = guards.bounds(cfg, Draft(9, Reason.SCALE_UP, "m"), 3, raw=9)
    assert (d.desired, limited) == (5, True)
    d, limited = guards.bounds(cfg, Draft(5, Reason.WITHIN_TOLERANCE, "m"), 5, raw=7)
    assert (d.reason, limited) == (Reason.AT_MAX, True)
    d, limited = guards.bounds(cfg, Draft(1, Reason.SCALE_DOWN, "m"), 1, raw=1)
    assert (d.desired, d.reason, limited) == (2, Reason.BELOW_MIN, False)
