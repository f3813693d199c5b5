"""bench/autoscaler_live.py's pure parts: the scoring of a run and the objects it applies."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"
sys.path.insert(0, str(BENCH))

import autoscaler_live_spec as spec  # noqa: E402
from autoscaler_live_score import (  # noqa: E402
    Sample,
    replica_seconds,
    scale_events,
    scale_up_delays,
    score,
    violation_seconds,
)


def _ok(sent: float, ttft: float) -> dict[str, object]:
    return {"sent_s": sent, "elapsed_s": ttft + 1.0, "ttft_s": ttft, "error": None}


def _err(sent: float, elapsed: float, status: int = 429) -> dict[str, object]:
    return {"sent_s": sent, "elapsed_s": elapsed, "ttft_s": None, "error": {"type": "http", "status": status}}


def test_a_slow_window_and_a_429_second_are_violations() -> None:
    records = [_ok(t + 0.5, 0.3) for t in range(30)]  # fast all along
    records += [_ok(12.5, 5.0), _ok(13.5, 5.0)]  # one slow send in 11 is the p95 (nearest rank)
    records.append(_err(25.2, 0.1))  # answered 429 within second 26
    bad = violation_seconds(records, 30, 2.0)
    assert bad == [*range(13, 24), 26]  # windows (s-10, s] holding a slow send; the 429's second


def test_delays_events_reversals_and_cost() -> None:
    samples = [Sample(float(t), 1, 1, 1) for t in range(10)]
    samples += [Sample(10.0, 3, 3, 1), Sample(11.0, 3, 3, 1), Sample(40.0, 3, 3, 3), Sample(41.0, 2, 2, 2)]
    samples += [Sample(42.0, 4, 4, 2)]
    assert scale_up_delays(samples, 8.0) == (2.0, 32.0)
    # a scale-up shortly before the nominal change (a ramp's crossing) is ahead of it: negative, not the
    # next step up
    assert scale_up_delays(samples, 10.5) == (-0.5, 29.5)
    # one over 10 s before it is not this change's decision: the next step up is
    assert scale_up_delays(samples, 30.0) == (12.0, None)
    assert scale_events(samples) == (3, 2)  # up, down, up: two reversals
    assert replica_seconds(samples) == 10 * 1 + 3 * 1 + 3 * 29 + 3 * 1 + 2 * 1


def test_score_counts_failures_and_violations() -> None:
    records = [_ok(1.0, 0.2), _err(2.0, 0.5, 503)]
    samples = [Sample(0.0, 1, 1, 1), Sample(5.0, 1, 1, 1)]
    result = score(records, samples, 1.0, 2.0)
    assert (result["failed"], result["slo_violation_s"], result["replica_s"]) == (1, 1, 5.0)


def test_the_baselines_target_the_runs_inferenceservice_with_shoals_signals() -> None:
    hpa = spec.hpa("al-x", "sim", tuned=False)
    assert hpa["metadata"] == {"name": "sim", "namespace": "al-x"}
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "InferenceService" and "behavior" not in hpa["spec"]
    queue, ttft = (m["external"] for m in hpa["spec"]["metrics"])
    assert queue["target"] == {"type": "AverageValue", "averageValue": str(spec.QUEUE_TARGET)}
    assert (
        queue["metric"]["selector"]
        == ttft["metric"]["selector"]
        == {"matchLabels": {"inferenceservice": "sim"}}
    )
    tuned = spec.scaled_object("al-x", "sim", "http://198.18.0.1:9090", tuned=True)
    assert tuned["spec"]["pollingInterval"] == 5
    queries = [t["metadata"]["query"] for t in tuned["spec"]["triggers"]]
    assert all('namespace="al-x"' in q and 'inferenceservice="sim"' in q for q in queries)
    # shoal's signals: the routers' queue is demand, their queue wait is part of the TTFT
    assert (
        "shoal_router_flow_queued_requests" in queries[0] and "shoal_router_flow_wait_seconds" in queries[1]
    )
    assert {t["metadata"]["serverAddress"] for t in tuned["spec"]["triggers"]} == {"http://198.18.0.1:9090"}
    assert spec.isvc("sim", "hpa")["spec"]["autoscaling"] == {"enabled": False}
    shoal = spec.isvc("sim", "shoal")["spec"]["autoscaling"]
    assert shoal["enabled"] and shoal["maxReplicas"] == spec.MAX_REPLICAS


@pytest.mark.parametrize("trace", spec.TRACES, ids=lambda t: t.name)
def test_each_trace_window_is_at_most_3_minutes_and_its_load_rises_at_the_change(
    trace: spec.TraceRun,
) -> None:
    times = spec.trace_times(trace)
    assert trace.seconds <= 180 and times and max(times) <= trace.seconds

    def rate(start: float) -> float:
        return sum(1 for t in times if start <= t < start + 15) / 15

    before, after = rate(trace.change_s - 15), rate(trace.change_s + 15)
    assert after > trace.replica_rps and after > 1.4 * before  # past one replica's capacity, and rising
    # The peak needs at most 6 of the 8 replicas: the autoscaler, not the capacity limit, sets the SLO.
    peak = max(rate(start) for start in range(0, int(trace.seconds) - 15, 5))
    assert peak <= 0.75 * spec.MAX_REPLICAS * trace.replica_rps
