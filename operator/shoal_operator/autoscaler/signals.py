"""Stage 1 of the policy: each signal judged once, into a typed reading (a usable value or why not)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from .kinds import LOAD_SIGNALS, PER_REQUEST_SIGNALS, POD_SIGNALS, Signal
from .model import Observation, PolicyConfig, PolicyInput, Reading, Unusable, UnusableKind, Usable

ZERO = Usable(0.0, 0.0)


def evaluate(cfg: PolicyConfig, inp: PolicyInput) -> dict[Signal, Reading]:
    """Every signal's reading. The load signals go first: a latency quantile without requests is judged
    against them (fresh zero load means idle, not broken)."""
    readings: dict[Signal, Reading] = {}
    for sig in LOAD_SIGNALS:
        readings[sig] = judge(cfg, inp, sig, idle=False)
    idle = _is_zero(readings[Signal.QUEUE_DEPTH]) and _is_zero(readings[Signal.RUNNING_REQUESTS])
    for sig in Signal:
        if sig not in readings:
            readings[sig] = judge(cfg, inp, sig, idle=idle)
    return readings


def _is_zero(reading: Reading) -> bool:
    return isinstance(reading, Usable) and reading.value == 0


def judge(cfg: PolicyConfig, inp: PolicyInput, sig: Signal, *, idle: bool) -> Reading:
    """One signal. `idle`: queue depth and running requests are both usable and zero."""
    obs = inp.observations.get(sig)
    if obs is None:
        return Unusable(UnusableKind.NOT_QUERIED, f"{sig}: not queried")
    if obs.error is not None:
        return Unusable(obs.failure or UnusableKind.QUERY_FAILED, f"{sig}: {obs.error}")
    if obs.value is None:
        return _no_value(inp, sig, idle=idle)
    if math.isnan(obs.value) and sig in PER_REQUEST_SIGNALS and idle:
        # histogram_quantile over a window without requests is NaN. When the request counters are fresh
        # and zero, that NaN means "idle", not "metrics broken": without this, an idle service could
        # never scale down. A broken Prometheus makes the counters unusable too, so it still holds.
        return ZERO
    return _value(cfg, inp, sig, obs)


def _no_value(inp: PolicyInput, sig: Signal, *, idle: bool) -> Reading:
    if sig in POD_SIGNALS and inp.ready_replicas == 0:
        return ZERO  # no ready pod, so no series is expected: nothing is happening
    if sig is Signal.ROUTER_PENDING:
        return ZERO  # the router exports the gauge only once it has held something
    if sig in PER_REQUEST_SIGNALS and idle:
        return ZERO  # a histogram has no series before its first request
    return Unusable(UnusableKind.NO_DATA, f"{sig}: no data")


def _value(cfg: PolicyConfig, inp: PolicyInput, sig: Signal, obs: Observation) -> Reading:
    value = float(obs.value if obs.value is not None else math.nan)
    if math.isnan(value) or math.isinf(value):
        return Unusable(UnusableKind.INVALID_VALUE, f"{sig}: value is {obs.value}")
    if obs.timestamp is None:
        return Unusable(UnusableKind.NO_TIMESTAMP, f"{sig}: no sample timestamp")
    age = inp.now - obs.timestamp
    if age > cfg.metrics_max_age_seconds:
        return Unusable(
            UnusableKind.STALE, f"{sig}: stale ({age:.0f}s old > {cfg.metrics_max_age_seconds:.0f}s)"
        )
    if value < 0:
        return Unusable(UnusableKind.INVALID_VALUE, f"{sig}: negative value {obs.value}")
    return Usable(value, age)


def value_of(readings: Mapping[Signal, Reading], sig: Signal) -> float | None:
    reading = readings.get(sig)
    return reading.value if isinstance(reading, Usable) else None
