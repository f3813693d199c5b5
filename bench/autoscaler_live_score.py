"""Scoring of one live autoscaler run (`bench/autoscaler_live.py`): pure functions of the replay's
records (`shoal batch load --out`), the per-second samples of the InferenceService, and the trace.

Times are seconds from the replay's start (the load generator's own t0, the `sent_s` origin).

- SLO-violation seconds: seconds `s` of the replay where the TTFT p95 of the requests sent in the 10 s
  window `(s-10, s]` exceeds the target, or where any request failed with 429/5xx (or a transport error)
  whose response came in that second.
- replica-seconds (cost): model-server pods that exist (starting or ready), summed over the 1 s samples.
- time to first scale-up: from the load change (the moment the offered load first exceeds one replica's
  capacity, from the trace's generator: `autoscaler_live_spec.TRACES`) to the first sample whose desired
  count exceeds the count at that moment; time to Ready capacity: to the first sample where that many
  pods are ready.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]
WINDOW_S = 10


@dataclass(frozen=True)
class Sample:
    t: float  # seconds from the replay's start
    desired: int  # spec.replicas (what every autoscaler writes, through /scale)
    pods: int  # model-server pods not terminating (starting or ready)
    ready: int


def p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile (nan for no value)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(0.95 * len(ordered)) - 1))]


def failed(record: Record) -> bool:
    """A request the client saw fail: 429, 5xx, a timeout or a broken connection (4xx other than 429 would
    be the benchmark's own bug, and counts too)."""
    return bool(record.get("error"))


def _done_at(record: Record) -> float:
    return float(record.get("sent_s") or 0.0) + float(record.get("elapsed_s") or 0.0)


def violation_seconds(records: Iterable[Record], duration_s: float, ttft_target_s: float) -> list[int]:
    """The seconds (1..duration) in violation of the SLO, by the definition in the module docstring."""
    records = list(records)
    horizon = max(1, math.ceil(duration_s))
    by_second: list[list[float]] = [[] for _ in range(horizon + 1)]
    errors = [False] * (horizon + 1)
    for r in records:
        sent = float(r.get("sent_s") or 0.0)
        if failed(r):
            errors[min(horizon, max(1, math.ceil(_done_at(r))))] = True
        elif r.get("ttft_s") is not None:
            by_second[min(horizon, max(1, math.ceil(sent)))].append(float(r["ttft_s"]))
    bad = []
    for s in range(1, horizon + 1):
        window = [v for second in by_second[max(1, s - WINDOW_S + 1) : s + 1] for v in second]
        if errors[s] or (window and p95(window) > ttft_target_s):
            bad.append(s)
    return bad


#: A scale-up this long before the nominal load change is the autoscaler acting ahead of it (the change
#: point of a ramp is where it crosses one replica's nominal capacity, not a sharp edge).
AHEAD_S = 10.0


def scale_up_delays(samples: Sequence[Sample], start: float | None) -> tuple[float | None, float | None]:
    """(to the first scale-up decision, to that many ready pods), from the load change at `start`;
    negative when the autoscaler scaled up in the `AHEAD_S` before it."""
    if start is None or not samples:
        return None, None
    since = start - AHEAD_S
    before = [s for s in samples if s.t <= since]
    base = before[-1].desired if before else samples[0].desired
    decision = next((s for s in samples if s.t > since and s.desired > base), None)
    if decision is None:
        return None, None
    ready = next((s for s in samples if s.t >= decision.t and s.ready >= decision.desired), None)
    return round(decision.t - start, 1), (round(ready.t - start, 1) if ready else None)


def scale_events(samples: Sequence[Sample]) -> tuple[int, int]:
    """(changes of the desired count, reversals: a change opposite in direction to the previous one)."""
    events = reversals = 0
    last_dir = 0
    for a, b in itertools.pairwise(samples):
        if b.desired == a.desired:
            continue
        events += 1
        direction = 1 if b.desired > a.desired else -1
        reversals += int(last_dir != 0 and direction != last_dir)
        last_dir = direction
    return events, reversals


def replica_seconds(samples: Sequence[Sample]) -> float:
    """Pods (starting or ready) integrated over time, each sample standing for the time to the next."""
    total = 0.0
    for a, b in itertools.pairwise(samples):
        total += a.pods * max(0.0, b.t - a.t)
    return round(total, 1)


def score(
    records: Sequence[Record], samples: Sequence[Sample], change_s: float, ttft_target_s: float
) -> dict[str, Any]:
    duration = max([s.t for s in samples] + [_done_at(r) for r in records] + [0.0])
    decided, ready = scale_up_delays(samples, change_s)
    events, reversals = scale_events(samples)
    ok_ttft = [float(r["ttft_s"]) for r in records if not failed(r) and r.get("ttft_s") is not None]
    return {
        "requests": len(records),
        "failed": sum(1 for r in records if failed(r)),
        "slo_violation_s": len(violation_seconds(records, duration, ttft_target_s)),
        "replica_s": replica_seconds(samples),
        "load_change_s": change_s,
        "scale_up_decision_s": decided,
        "scale_up_ready_s": ready,
        "scale_events": events,
        "reversals": reversals,
        "ttft_p95_s": round(p95(ok_ttft), 3) if ok_ttft else None,
        "max_desired": max((s.desired for s in samples), default=0),
    }


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    cols = [
        ("trace", "trace"),
        ("autoscaler", "autoscaler"),
        ("slo_violation_s", "SLO-violation s"),
        ("replica_s", "replica-s"),
        ("failed", "failed"),
        ("requests", "requests"),
        ("scale_up_decision_s", "to decision s"),
        ("scale_up_ready_s", "to Ready s"),
        ("scale_events", "events"),
        ("reversals", "reversals"),
        ("ttft_p95_s", "TTFT p95 s"),
        ("max_desired", "max desired"),
    ]
    lines = ["| " + " | ".join(title for _, title in cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append(
            "| " + " | ".join("-" if row.get(k) is None else str(row.get(k)) for k, _ in cols) + " |"
        )
    return "\n".join(lines) + "\n"
