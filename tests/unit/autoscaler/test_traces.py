"""The policy on the two loads of #19, replayed cycle by cycle (3 s cycles, 5 s scrapes).

A small queueing model stands in for the replicas: each has `SLOTS` slots (maxConcurrency) and an
admission queue bounded at `QUEUE_BOUND`. The spec is the README's: QueueDepth 4 per replica plus
TimeToFirstToken p95 2 s, 1..8 replicas, no RunningRequests target.
"""

from __future__ import annotations

import math

import pytest
from shoal_operator.autoscaler.kinds import MetricKind, Signal
from shoal_operator.autoscaler.model import (
    Decision,
    MetricTarget,
    Observation,
    PolicyConfig,
    PolicyInput,
    PolicyState,
)
from shoal_operator.autoscaler.policy import decide

pytestmark = pytest.mark.unit

SLOTS = 16
QUEUE_BOUND = 64
START = 100_000.0


def readme_spec() -> PolicyConfig:
    return PolicyConfig(
        min_replicas=1,
        max_replicas=8,
        metrics=(
            MetricTarget(MetricKind.QUEUE_DEPTH, 4.0),
            MetricTarget(MetricKind.TIME_TO_FIRST_TOKEN, 2.0),
        ),
        replica_capacity=float(SLOTS),
    )


def observations(
    now: float, scraped: float, waiting: float, running: float, ttft: float
) -> dict[Signal, Observation]:
    return {
        Signal.QUEUE_DEPTH: Observation(waiting, scraped),
        Signal.RUNNING_REQUESTS: Observation(running, scraped),
        Signal.ROUTER_PENDING: Observation(0.0, scraped),
        Signal.TIME_TO_FIRST_TOKEN: Observation(ttft, scraped),
        Signal.KV_CACHE_USAGE: Observation(0.2, scraped),
    }


def test_scale_up_within_10s_of_the_queue_reaching_its_bound() -> None:
    """A burst at 3x one replica's capacity fills the admission queue to its bound in one scrape."""
    cfg = readme_spec()
    state: PolicyState | None = PolicyState(started_at=START - 3600)
    replicas, t = 1, START
    bound_seen: float | None = None
    first_up: Decision | None = None
    while t < START + 60 and first_up is None:
        scraped = START + 5 * math.floor((t - START) / 5)  # the newest scrape
        burst = scraped >= START + 5
        waiting = QUEUE_BOUND if burst else 0.0
        if burst and bound_seen is None:
            bound_seen = t
        ttft = 1.0 + (20.0 if burst else 0.0)  # client-visible: the queue wait is in it
        inp = PolicyInput(
            t, replicas, replicas, 0, 0, observations(t, scraped, waiting, SLOTS if burst else 2, ttft)
        )
        decision, state = decide(cfg, inp, state)
        if decision.desired > replicas:
            first_up = decision
        t += 3
    assert bound_seen is not None and first_up is not None
    assert t - 3 - bound_seen <= 10, (t, bound_seen, first_up)
    assert first_up.desired >= 3  # 3x one replica's capacity


def test_steady_load_has_no_scale_down_that_a_scale_up_reverses() -> None:
    """~26 requests in flight (7.5 req/s x 3.5 s). A replica slows once more than half its slots are busy:
    at 8 or fewer per replica TTFT is 0.5 s; past that it grows 1.5 s per request and the queue builds."""
    cfg = readme_spec()
    in_flight = 26.0
    state: PolicyState | None = PolicyState(started_at=START - 3600)
    replicas, t = 8, START
    history = [replicas]
    while t < START + 600:
        per = in_flight / replicas
        ttft = 0.5 if per <= SLOTS / 2 else 0.5 + (per - SLOTS / 2) * 1.5
        waiting = max(in_flight - replicas * SLOTS, 0.0) + (
            0.0 if per <= SLOTS / 2 else (per - SLOTS / 2) * replicas
        )
        running = in_flight - max(in_flight - replicas * SLOTS, 0.0)
        scraped = START + 5 * math.floor((t - START) / 5)
        decision, state = decide(
            cfg,
            PolicyInput(t, replicas, replicas, 0, 0, observations(t, scraped, waiting, running, ttft)),
            state,
        )
        if decision.desired != replicas:
            replicas = decision.desired
            history.append(replicas)
        t += 3
    reversals = [
        (a, b, c) for a, b, c in zip(history, history[1:], history[2:], strict=False) if b < a and c > b
    ]
    assert not reversals, history
    assert history[-1] < 8, history  # it did scale down, to what the load needs
    assert in_flight / history[-1] <= SLOTS / 2
