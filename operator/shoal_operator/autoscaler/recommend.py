"""Stage 2 of the policy: from the readings to a recommendation (panic, stable, idle, zero).

Pure functions of the configuration, the readings of stage 1 and the remembered state; the guards of
stage 3 (`guards.py`) then limit what is recommended here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from .kinds import SUM_METRICS, Signal
from .model import (
    Draft,
    MetricTarget,
    PolicyConfig,
    PolicyInput,
    Reading,
    Reason,
    Unusable,
)

Sample = tuple[str, float, float]  # (signal, sample timestamp, value)


def need(cfg: PolicyConfig, demand: float) -> int | None:
    """Replicas a backlog of `demand` requests needs at one replica's capacity (None: unknown)."""
    cap = cfg.capacity()
    if cap is None:
        return None
    return math.ceil(demand / cap - 1e-9)


def fmt(per_metric: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(per_metric.items())) or "none"


# ------------------------------------------------------------------------------------- per metric


def metric_recommendation(cfg: PolicyConfig, m: MetricTarget, value: float, inp: PolicyInput) -> int | None:
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


@dataclass(frozen=True)
class MetricView:
    """What the configured metrics ask for: on the windowed means, and on the newest sample (panic)."""

    per_metric: dict[str, int] = field(default_factory=dict)
    per_metric_now: dict[str, int] = field(default_factory=dict)
    unusable: tuple[Unusable, ...] = ()
    samples: tuple[Sample, ...] = ()
    inputs: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def raw(self) -> int | None:
        return max(self.per_metric.values()) if self.per_metric else None

    @property
    def raw_now(self) -> int | None:
        return max(self.per_metric_now.values()) if self.per_metric_now else None

    @property
    def all_available(self) -> bool:
        return not self.unusable

    @property
    def unavailable_text(self) -> str:
        return "; ".join(u.detail for u in self.unusable)


def _mean(samples: list[Sample], sig: Signal, since: float, newest: float) -> float:
    window = [v for s, t, v in samples if s == sig and t > since]
    return sum(window) / len(window) if window else newest


def metrics_view(
    cfg: PolicyConfig, inp: PolicyInput, readings: Mapping[Signal, Reading], samples: tuple[Sample, ...]
) -> MetricView:
    now = inp.now
    kept = [x for x in samples if x[1] > now - max(cfg.stable_window_seconds, cfg.up_window_seconds)]
    view = MetricView()
    unusable: list[Unusable] = []
    for m in cfg.metrics:
        sig = Signal.of(m.type)
        reading = readings[sig]
        if isinstance(reading, Unusable):
            unusable.append(reading)
            continue
        stamp = now - reading.age
        if not any(x[0] == sig and x[1] == stamp for x in kept):
            kept.append((str(sig), stamp, reading.value))
        mean_down = _mean(kept, sig, now - cfg.stable_window_seconds, reading.value)
        mean_up = _mean(kept, sig, now - cfg.up_window_seconds, reading.value)
        view.inputs[str(m.type)] = reading.value
        view.inputs[f"{m.type}.mean{cfg.up_window_seconds:g}s"] = round(mean_up, 4)
        view.inputs[f"{m.type}.mean{cfg.stable_window_seconds:g}s"] = round(mean_down, 4)
        view.inputs[f"{m.type}.target"] = m.target
        rec_up = metric_recommendation(cfg, m, mean_up, inp)
        rec_down = metric_recommendation(cfg, m, mean_down, inp)
        if rec_up is not None and rec_down is not None:
            # Up on the short mean; down only as far as both means allow.
            cur = inp.spec_replicas
            view.per_metric[str(m.type)] = rec_up if rec_up > cur else min(max(rec_up, rec_down), cur)
        rec_now = metric_recommendation(cfg, m, reading.value, inp)
        if rec_now is not None:
            view.per_metric_now[str(m.type)] = rec_now
    return MetricView(view.per_metric, view.per_metric_now, tuple(unusable), tuple(kept), view.inputs)


# ------------------------------------------------------------------------------------- panic


@dataclass(frozen=True)
class Panic:
    panicking: bool
    until: float | None
    #: The recommendation after the panic jump (the stable one when not panicking).
    raw: int | None
    #: The jump was sized on the backlog expected when new pods are Ready (the outlook), not on today's.
    ahead_sized: bool = False


def panic(
    cfg: PolicyConfig,
    view: MetricView,
    until: float | None,
    now: float,
    current: int,
    demand: float,
    demand_ahead: float,
) -> Panic:
    """Panic mode: the newest sample alone asks for `panic_threshold_percent` of the current count.

    The jump goes as far as the newest sample asks, but no further than the backlog needs (plus one)
    unless the backlog is growing: then at least as far as the backlog expected when the new pods are
    Ready needs (`outlook.py`), which is what a burst's first decision must provision for."""
    raw, raw_now = view.raw, view.raw_now
    if (
        raw_now is not None
        and raw_now > current
        and raw_now * 100.0 >= max(current, 1) * cfg.panic_threshold_percent
    ):
        until = now + cfg.panic_window_seconds
    panicking = until is not None and now < until
    ahead_sized = False
    if panicking and raw is not None and raw_now is not None and raw_now > raw:
        jump = raw_now
        backlog = need(cfg, demand)
        if backlog is not None:
            jump = min(jump, max(backlog + 1, current))
        ahead = need(cfg, demand_ahead) if demand_ahead > demand else None
        if ahead is not None and ahead > jump:
            jump, ahead_sized = ahead, ahead > raw
        raw = max(raw, jump)
    return Panic(panicking, until if panicking else None, raw, ahead_sized)


# ------------------------------------------------------------------------------------- zero and idle


def at_zero(cfg: PolicyConfig, demand: float, pending: float | None, view: MetricView) -> tuple[Draft, bool]:
    """At zero replicas: wake up on held or queued requests. (draft, limited at maxReplicas)."""
    floor, ceiling = cfg.floor, cfg.ceiling
    if demand > 0:
        wanted = need(cfg, demand) or floor
        desired = min(max(wanted, floor), ceiling)
        message = f"{demand:g} requests held or queued at zero replicas; starting {desired}"
        return Draft(desired, Reason.SCALE_FROM_ZERO, message), wanted > ceiling
    if not cfg.scale_to_zero:
        return Draft(floor, Reason.BELOW_MIN, f"0 replicas is below minReplicas {floor}"), False
    if pending is None:
        why = view.unavailable_text or "no data"
        return Draft(
            0, Reason.METRICS_UNAVAILABLE, f"at zero and the router's held requests are unknown ({why})"
        ), False
    return Draft(0, Reason.IDLE, "idle at zero replicas"), False


def idle_since(
    cfg: PolicyConfig,
    inp: PolicyInput,
    load: Mapping[Signal, float | None],
    view: MetricView,
    since: float | None,
) -> float | None:
    """Since when nothing has been queued, running or held (None: not idle now)."""
    pending = inp.observations.get(Signal.ROUTER_PENDING)
    idle = (
        cfg.scale_to_zero
        and view.all_available
        and inp.starting_replicas == 0
        and all(load[s] == 0.0 for s in (Signal.QUEUE_DEPTH, Signal.RUNNING_REQUESTS, Signal.ROUTER_PENDING))
        and pending is not None
        and pending.error is None
    )
    if not idle:
        return None
    return since if since is not None else inp.now


# ------------------------------------------------------------------------------------- stable


def stable(
    cfg: PolicyConfig,
    raw: int | None,
    previous: tuple[tuple[float, int], ...],
    started_at: float,
    now: float,
    current: int,
    view: MetricView,
) -> Draft:
    """The recommendation through the stabilization windows; never down on missing data."""
    if raw is None:
        return Draft(
            current,
            Reason.METRICS_UNAVAILABLE,
            f"holding {current}: {view.unavailable_text or 'no usable metric'}",
        )
    up_cut = now - cfg.scale_up.stabilization_seconds
    down_cut = now - cfg.scale_down.stabilization_seconds
    up_rec = min([raw, *(r for t, r in previous if t > up_cut)]) if raw > current else raw
    down_rec = max([raw, *(r for t, r in previous if t > down_cut)])
    if started_at > down_cut:
        down_rec = max(down_rec, current)  # not a full window of history yet
    asks = _asks(cfg, raw, view)
    window = f"{cfg.scale_down.stabilization_seconds:g}s"
    if up_rec > current:
        draft = Draft(up_rec, Reason.SCALE_UP, asks)
    elif raw < current and down_rec < current:
        draft = Draft(down_rec, Reason.SCALE_DOWN, f"{asks}; highest in the last {window} is {down_rec}")
    elif raw < current:
        draft = Draft(
            current, Reason.STABILIZING, f"{asks} but asked for {down_rec} within the last {window}"
        )
    else:
        draft = Draft(
            current,
            Reason.WITHIN_TOLERANCE,
            f"metrics within tolerance of {current} replicas ({fmt(view.per_metric)})",
        )
    if draft.desired < current and not view.all_available:
        return Draft(
            current, Reason.METRICS_UNAVAILABLE, f"not scaling down on missing data: {view.unavailable_text}"
        )
    if draft.desired == current and not view.all_available and draft.reason is Reason.WITHIN_TOLERANCE:
        return Draft(current, Reason.METRICS_UNAVAILABLE, f"holding {current}: {view.unavailable_text}")
    return draft


def _asks(cfg: PolicyConfig, raw: int, view: MetricView) -> str:
    """What the metrics ask for, saying which figures: a panic jump comes from the newest sample, not
    from the windowed means in the per-metric counts."""
    means = fmt(view.per_metric)
    if raw == view.raw:
        return f"metrics ask for {raw} ({means})"
    return (
        f"metrics ask for {raw} (panic, on the newest sample: {fmt(view.per_metric_now)}; "
        f"on the {cfg.up_window_seconds:g}s means: {means})"
    )
