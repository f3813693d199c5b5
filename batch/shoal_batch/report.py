"""The run's report, computed from output records (the same dicts written to the output file). Pure."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); ``q`` in [0, 100]."""
    if not sorted_values:
        raise ValueError("no values")
    if not 0 <= q <= 100:
        raise ValueError("q must be in [0, 100]")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


@dataclass(frozen=True, slots=True)
class Distribution:
    count: int
    mean: float
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Distribution | None:
        data = sorted(values)
        if not data:
            return None
        return cls(
            count=len(data),
            mean=sum(data) / len(data),
            p50=percentile(data, 50),
            p95=percentile(data, 95),
            p99=percentile(data, 99),
            max=data[-1],
        )


@dataclass(slots=True)
class Report:
    total: int = 0  # valid input items
    ok: int = 0  # items with a successful record in the output
    failed: int = 0  # items whose record carries an error
    pending: int = 0  # items without a record (interrupted, or a load run's unsent tail)
    resumed: int = 0  # items skipped because a previous run had already done them
    malformed: int = 0
    malformed_lines: list[tuple[int, str]] = field(default_factory=list)
    attempts: int = 0
    retries: int = 0
    latency_s: Distribution | None = None  # successful requests
    ttft_s: Distribution | None = None  # successful streamed requests
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    graded: int = 0
    correct: int = 0
    # this invocation only
    completed_this_run: int = 0
    completion_tokens_this_run: int = 0
    wall_s: float = 0.0
    interrupted: bool = False
    dropped: int = 0  # open loop: sends skipped because the in-flight cap was reached
    schedule_lag_p99_s: float | None = None  # open loop: how late sends left, 99th percentile
    records: list[dict[str, Any]] | None = None  # every output record, when asked for (not in to_dict)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None

    @property
    def requests_per_s(self) -> float:
        return self.completed_this_run / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens_this_run / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "records"}
        for name in ("latency_s", "ttft_s"):
            if data[name] is not None:
                data[name] = asdict(data[name])
        data["malformed_lines"] = [{"line": n, "reason": r} for n, r in self.malformed_lines]
        data["accuracy"] = self.accuracy
        data["requests_per_s"] = self.requests_per_s
        data["tokens_per_s"] = self.tokens_per_s
        return data


def error_type(record: Mapping[str, Any]) -> str | None:
    error = record.get("error")
    if not error:
        return None
    if isinstance(error, Mapping):
        return str(error.get("type", "error"))
    return "error"


def summarise(records: Iterable[Mapping[str, Any]], *, total: int | None = None) -> Report:
    """Counts, distributions, tokens, error breakdown and accuracy over output records (one per id)."""
    report = Report()
    latencies: list[float] = []
    ttfts: list[float] = []
    errors: Counter[str] = Counter()
    n = 0
    for record in records:
        n += 1
        attempts = int(record.get("attempts") or 0)
        report.attempts += attempts
        report.retries += max(0, attempts - 1)
        kind = error_type(record)
        if kind is not None:
            report.failed += 1
            errors[kind] += 1
            continue
        report.ok += 1
        if record.get("latency_s") is not None:
            latencies.append(float(record["latency_s"]))
        if record.get("ttft_s") is not None:
            ttfts.append(float(record["ttft_s"]))
        usage = record.get("usage") or {}
        report.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        report.completion_tokens += int(usage.get("completion_tokens") or 0)
        if "correct" in record and record["correct"] is not None:
            report.graded += 1
            report.correct += bool(record["correct"])
    report.total = n if total is None else total
    report.pending = max(0, report.total - n)
    report.latency_s = Distribution.of(latencies)
    report.ttft_s = Distribution.of(ttfts)
    report.errors = dict(errors.most_common())
    return report


def _fmt_s(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def format_report(report: Report) -> str:
    """Plain-text report (also what the CLI prints at the end)."""
    lines = [
        f"items {report.total}: ok {report.ok}, failed {report.failed}, pending {report.pending}"
        f" (resumed {report.resumed}, malformed lines {report.malformed})",
        f"this run: {report.completed_this_run} completed in {report.wall_s:.2f} s "
        f"= {report.requests_per_s:.1f} req/s, {report.tokens_per_s:.1f} completion tokens/s"
        + (" [interrupted]" if report.interrupted else ""),
        f"attempts {report.attempts} (retries {report.retries}); tokens prompt {report.prompt_tokens},"
        f" completion {report.completion_tokens}",
    ]
    for name, dist in (("latency", report.latency_s), ("ttft", report.ttft_s)):
        if dist is not None:
            lines.append(
                f"{name}: p50 {_fmt_s(dist.p50)}, p95 {_fmt_s(dist.p95)}, p99 {_fmt_s(dist.p99)},"
                f" mean {_fmt_s(dist.mean)}, max {_fmt_s(dist.max)} (n={dist.count})"
            )
    if report.errors:
        lines.append("errors: " + ", ".join(f"{k} {v}" for k, v in report.errors.items()))
    if report.schedule_lag_p99_s is not None:
        lines.append(f"schedule lag p99: {_fmt_s(report.schedule_lag_p99_s)}")
    if report.dropped:
        lines.append(f"dropped (in-flight cap reached): {report.dropped}")
    if report.accuracy is not None:
        lines.append(f"accuracy: {report.correct}/{report.graded} = {report.accuracy:.2%}")
    for number, reason in report.malformed_lines[:20]:
        lines.append(f"malformed line {number}: {reason}")
    if len(report.malformed_lines) > 20:
        lines.append(f"... and {len(report.malformed_lines) - 20} more malformed lines")
    return "\n".join(lines)
