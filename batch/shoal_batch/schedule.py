"""Open-loop schedules: a requests-per-second curve over time -> the instants requests are sent. Pure.

A curve is piecewise linear through points ``(t, rps)`` (two points at the same ``t`` make a step). Built-in
shapes (``constant``, ``step``, ``ramp``, ``sinusoid``) are written as ``kind:key=value,...``; a trace file
(CSV ``t,rps``, a JSON list, or JSONL of ``{"t": ..., "rps": ...}``) gives the points directly.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import random
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class Arrivals(StrEnum):
    UNIFORM = "uniform"  # evenly spaced at the instantaneous rate (deterministic)
    POISSON = "poisson"  # a non-homogeneous Poisson process with that rate (seeded)


class TraceError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RateCurve:
    """Requests per second over ``[0, duration]``: linear between consecutive points."""

    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if len(self.points) < 2:
            raise TraceError("a rate curve needs at least two points")
        previous = -math.inf
        for t, rps in self.points:
            if not (math.isfinite(t) and math.isfinite(rps)):
                raise TraceError("times and rates must be finite")
            if t < previous:
                raise TraceError("times must not decrease")
            if rps < 0:
                raise TraceError("rates must not be negative")
            previous = t
        if self.points[0][0] != 0:
            raise TraceError("a rate curve starts at t=0")

    @property
    def duration(self) -> float:
        return self.points[-1][0]

    def rate(self, t: float) -> float:
        pts = self.points
        if t <= 0:
            return pts[0][1]
        if t >= self.duration:
            return pts[-1][1]
        i = bisect_right([p[0] for p in pts], t) - 1
        (t0, r0), (t1, r1) = pts[i], pts[i + 1]
        return r0 if t1 == t0 else r0 + (r1 - r0) * (t - t0) / (t1 - t0)

    def total(self) -> float:
        """Expected number of requests over the whole curve (its integral)."""
        return sum(
            (t1 - t0) * (r0 + r1) / 2
            for (t0, r0), (t1, r1) in zip(self.points, self.points[1:], strict=False)
        )


def _inverse_segment(t0: float, r0: float, t1: float, r1: float, need: float) -> float:
    """Time in ``[t0, t1]`` at which the integral of the segment's rate from ``t0`` reaches ``need``."""
    width = t1 - t0
    if need <= 0:
        return t0
    slope = (r1 - r0) / width
    if abs(slope) < 1e-12:
        tau = need / r0
    else:
        # r0*tau + slope*tau^2/2 = need -> the non-negative root, in a cancellation-free form
        disc = max(0.0, r0 * r0 + 2.0 * slope * need)
        root = r0 + math.sqrt(disc)
        tau = 2.0 * need / root if root > 0 else width
    return t0 + min(max(tau, 0.0), width)


def arrival_times(
    curve: RateCurve,
    *,
    arrivals: Arrivals = Arrivals.UNIFORM,
    seed: int = 0,
    max_requests: int | None = None,
    max_duration: float | None = None,
) -> list[float]:
    """Send instants (seconds from the start), non-decreasing, bounded by count and duration.

    Uniform: the k-th request (k = 0, 1, ...) goes when the integral of the rate reaches k, so a constant
    10 rps sends at 0.0, 0.1, 0.2, ... Poisson: unit-mean exponential gaps in that integral.
    """
    end = curve.duration if max_duration is None else min(curve.duration, max_duration)
    limit = math.inf if max_requests is None else max_requests
    rng = random.Random(seed)
    times: list[float] = []
    target = 0.0 if arrivals is Arrivals.UNIFORM else rng.expovariate(1.0)
    area = 0.0  # integral of the rate up to the start of the current segment
    pts = curve.points
    for (t0, r0), (t1, r1) in itertools.pairwise(pts):
        if t0 >= end or len(times) >= limit:
            break
        if t1 == t0:
            continue
        seg_area = (t1 - t0) * (r0 + r1) / 2
        seg_end = area + seg_area
        while len(times) < limit and target < seg_end - 1e-9 * max(1.0, seg_end):
            t = _inverse_segment(t0, r0, t1, r1, target - area)
            if t >= end:
                return times
            times.append(t)
            target += 1.0 if arrivals is Arrivals.UNIFORM else rng.expovariate(1.0)
        area += seg_area
    return times


# ---- shapes and trace files ----------------------------------------------------------------------------


def _floats(value: str, key: str) -> list[float]:
    try:
        return [float(v) for v in value.split("/") if v.strip()]
    except ValueError as exc:
        raise TraceError(f"{key}: not a number list: {value!r}") from exc


def _kv(spec: str) -> tuple[str, dict[str, str]]:
    kind, _, rest = spec.partition(":")
    params: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise TraceError(f"expected key=value, got {part!r}")
        params[key.strip()] = value.strip()
    return kind.strip().lower(), params


def _need(params: dict[str, str], key: str, default: float | None = None) -> float:
    if key not in params:
        if default is None:
            raise TraceError(f"missing {key}=")
        return default
    try:
        return float(params[key])
    except ValueError as exc:
        raise TraceError(f"{key}: not a number: {params[key]!r}") from exc


SHAPES_HELP = (
    "constant:rps=R,duration=S | step:rps=R1/R2/...,hold=S | ramp:from=R,to=R,duration=S | "
    "sinusoid:mean=R,amplitude=A,period=S,duration=S | a trace file (CSV t,rps / JSON / JSONL)"
)


def shape_curve(spec: str) -> RateCurve:
    """A built-in shape from its spec string (see ``SHAPES_HELP``)."""
    kind, params = _kv(spec)
    known = {"constant", "step", "ramp", "sinusoid"}
    if kind not in known:
        raise TraceError(f"unknown shape {kind!r}; one of {sorted(known)} or a trace file")
    if kind == "constant":
        rps, duration = _need(params, "rps"), _need(params, "duration")
        return RateCurve(((0.0, rps), (duration, rps)))
    if kind == "step":
        rates = _floats(params.get("rps", ""), "rps")
        hold = _need(params, "hold")
        if not rates:
            raise TraceError("step needs rps=R1/R2/...")
        points: list[tuple[float, float]] = []
        for i, rps in enumerate(rates):
            points += [(i * hold, rps), ((i + 1) * hold, rps)]
        return RateCurve(tuple(points))
    if kind == "ramp":
        start, stop, duration = _need(params, "from"), _need(params, "to"), _need(params, "duration")
        return RateCurve(((0.0, start), (duration, stop)))
    mean, amplitude = _need(params, "mean"), _need(params, "amplitude")
    period, duration = _need(params, "period"), _need(params, "duration")
    if period <= 0 or duration <= 0:
        raise TraceError("period and duration must be positive")
    steps = max(2, min(100_000, math.ceil(duration / period * 64)))
    sin_points = tuple(
        (
            duration * i / steps,
            max(0.0, mean + amplitude * math.sin(2 * math.pi * (duration * i / steps) / period)),
        )
        for i in range(steps + 1)
    )
    return RateCurve(sin_points)


def curve_from_points(rows: Sequence[tuple[float, float]]) -> RateCurve:
    rows = list(rows)
    if rows and rows[0][0] > 0:
        rows.insert(0, (0.0, rows[0][1]))
    if len(rows) == 1:
        raise TraceError("a trace needs at least two points")
    return RateCurve(tuple(rows))


def parse_trace_text(text: str, *, fmt: str) -> RateCurve:
    """Points from a trace file's text; ``fmt`` is ``csv``, ``json`` or ``jsonl``."""
    rows: list[tuple[float, float]] = []
    try:
        if fmt == "csv":
            for record in csv.reader(text.splitlines()):
                if not record or record[0].strip().startswith("#"):
                    continue
                try:
                    rows.append((float(record[0]), float(record[1])))
                except ValueError:
                    if rows:  # only the first line may be a header
                        raise
        else:
            objs = (
                json.loads(text)
                if fmt == "json"
                else [json.loads(ln) for ln in text.splitlines() if ln.strip()]
            )
            for obj in objs:
                if isinstance(obj, dict):
                    rows.append((float(obj["t"]), float(obj["rps"])))
                else:
                    rows.append((float(obj[0]), float(obj[1])))
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise TraceError(f"bad trace ({fmt}): {exc}") from exc
    return curve_from_points(rows)


def load_curve(spec_or_path: str) -> RateCurve:
    """A trace file when ``spec_or_path`` names one, otherwise a built-in shape spec."""
    path = Path(spec_or_path)
    if path.is_file():
        suffix = path.suffix.lower()
        fmt = "csv" if suffix in {".csv", ".txt"} else "jsonl" if suffix == ".jsonl" else "json"
        return parse_trace_text(path.read_text(encoding="utf-8"), fmt=fmt)
    return shape_curve(spec_or_path)
