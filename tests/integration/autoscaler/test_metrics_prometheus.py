"""metrics.py against a real Prometheus scraping local exporters."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.autoscaler.promlab import Exporter, Prometheus
from shoal_operator.autoscaler.metrics import MetricsSource, ServiceQuery
from shoal_operator.autoscaler.policy import (
    MetricTarget,
    MetricType,
    PolicyConfig,
    PolicyInput,
    PolicyState,
    Signal,
    decide,
)
from support.eventually import eventually

pytestmark = pytest.mark.integration

ALL = frozenset(Signal)


@pytest.fixture
def prom(tmp_path: Path) -> Iterator[Prometheus]:
    p = Prometheus(tmp_path / "prom")
    p.start()
    yield p
    p.stop()


@pytest.fixture
def exporters() -> Iterator[list[Exporter]]:
    made: list[Exporter] = []
    yield made
    for e in made:
        e.close()


def _fleet(exporters: list[Exporter], n_services: int, pods: int = 2) -> list[ServiceQuery]:
    services = []
    for i in range(n_services):
        ns, name = f"team-{i % 2}", f"svc-{i}"
        for p in range(pods):
            e = Exporter(ns, name, f"{name}-model-{p}")
            e.waiting.set(i + 1)
            e.queue.set(1)
            e.running.set(10 * (p + 1))
            e.kv.set(0.2 * (p + 1))
            for _ in range(20):
                e.ttft.observe(0.3)
            exporters.append(e)
        services.append(ServiceQuery(ns, name, ALL, quantile=0.9))
    return services


def test_one_query_per_kind_for_many_services(prom: Prometheus, exporters: list[Exporter]) -> None:
    services = _fleet(exporters, n_services=6)
    prom.set_targets(exporters)
    prom.wait_scraped(len(exporters))
    source = MetricsSource(prom.url)

    def probe() -> object:
        for e in exporters:  # traffic keeps flowing, so the 1m rate of the histogram is not zero
            for _ in range(5):
                e.ttft.observe(0.3)
        snap = source.collect(services)
        for s in services:
            ttft = snap.for_service(s.namespace, s.name)[Signal.TIME_TO_FIRST_TOKEN].value
            assert ttft is not None and ttft > 0, (s, ttft)
        return snap

    snap = eventually(probe, timeout=30, interval=0.5, desc="ttft rate available")
    assert len(snap.queries) == len(Signal) == 5
    assert not snap.errors
    now = time.time()
    for i, s in enumerate(services):
        obs = snap.for_service(s.namespace, s.name)
        assert obs[Signal.QUEUE_DEPTH].value == 2 * (i + 1) + 2  # engine waiting + admission queue, 2 pods
        assert obs[Signal.RUNNING_REQUESTS].value == 30
        assert obs[Signal.RUNNING_REQUESTS].series == 2
        assert math.isclose(obs[Signal.KV_CACHE_USAGE].value or 0, 0.3)
        assert obs[Signal.ROUTER_PENDING].value == 0
        ttft = obs[Signal.TIME_TO_FIRST_TOKEN].value
        assert ttft is not None and 0.25 <= ttft <= 0.5
        ts = obs[Signal.RUNNING_REQUESTS].timestamp
        assert ts is not None and now - ts < 5  # the scrape time, not the evaluation time

    # Twelve services: still five queries.
    more = _fleet(exporters, n_services=12)
    prom.set_targets(exporters)
    prom.wait_scraped(len(exporters))
    assert len(source.collect(more).queries) == 5


def test_deleted_pod_series_are_ignored(prom: Prometheus, exporters: list[Exporter]) -> None:
    services = _fleet(exporters, n_services=1, pods=3)
    prom.set_targets(exporters)
    prom.wait_scraped(3)
    source = MetricsSource(prom.url)
    eventually(
        lambda: source.collect(services).for_service("team-0", "svc-0")[Signal.RUNNING_REQUESTS].value == 60,
        timeout=20,
        desc="three pods running 10+20+30",
    )
    # The third pod goes away: first its target disappears from discovery, then the process dies.
    gone = exporters.pop()
    prom.set_targets(exporters)
    gone.close()
    eventually(
        lambda: source.collect(services).for_service("team-0", "svc-0")[Signal.RUNNING_REQUESTS].value == 30,
        timeout=20,
        desc="series of the deleted pod dropped",
    )
    # A pod that stops answering (target still discovered, scrape fails) is dropped too.
    exporters[-1].close()
    eventually(
        lambda: source.collect(services).for_service("team-0", "svc-0")[Signal.RUNNING_REQUESTS].value == 10,
        timeout=20,
        desc="series of the unreachable pod dropped",
    )


def test_prometheus_down_means_unavailable_and_no_scale_down(
    prom: Prometheus, exporters: list[Exporter]
) -> None:
    services = _fleet(exporters, n_services=2)
    for e in exporters:
        e.running.set(0)
        e.waiting.set(0)
        e.queue.set(0)
    prom.set_targets(exporters)
    prom.wait_scraped(len(exporters))
    source = MetricsSource(prom.url, timeout_seconds=2)
    cfg = PolicyConfig(min_replicas=1, max_replicas=8, metrics=(MetricTarget(MetricType.QUEUE_DEPTH, 4),))
    state = PolicyState(started_at=time.time() - 3600)
    prom.stop()
    snap = source.collect(services)
    assert set(snap.errors) == set(Signal)
    assert len(snap.queries) == 5
    obs = snap.for_service("team-0", "svc-0")
    d, _ = decide(cfg, PolicyInput(time.time(), 6, 6, 0, 0, obs), state)
    assert d.desired == 6
    assert d.metrics_unavailable and "Prometheus query failed" in d.unavailable_reason


def test_per_service_override_costs_one_query(prom: Prometheus, exporters: list[Exporter]) -> None:
    services = _fleet(exporters, n_services=3)
    prom.set_targets(exporters)
    prom.wait_scraped(len(exporters))
    override = ServiceQuery(
        services[0].namespace,
        services[0].name,
        ALL,
        quantile=0.9,
        overrides={
            Signal.QUEUE_DEPTH: 'sum({__name__=~"vllm:num_requests_running|vllm_num_requests_running",'
            ' inferenceservice="svc-0"})'
        },
    )
    source = MetricsSource(prom.url)
    snap = eventually(
        lambda: (
            (s := source.collect([override, *services[1:]]))
            and s.for_service("team-0", "svc-0")[Signal.QUEUE_DEPTH].value == 30
            and s
        ),
        timeout=20,
        desc="override value",
    )
    assert len(snap.queries) == 6


def test_series_of_pods_no_longer_listed_do_not_count(prom: Prometheus, exporters: list[Exporter]) -> None:
    """#19: a recreated InferenceService of the same name found the old pods' series still up (reporting
    0 or more); only the pods the API server lists now count."""
    live, stale = Exporter("team", "chat", "chat-model-new"), Exporter("team", "chat", "chat-model-old")
    exporters += [live, stale]
    live.queue.set(3)
    stale.queue.set(50)
    prom.set_targets([live, stale])
    prom.wait_scraped(2)
    source = MetricsSource(prom.url)
    query = ServiceQuery("team", "chat", frozenset({Signal.QUEUE_DEPTH}), pods=frozenset({"chat-model-new"}))

    def probe() -> float | None:
        return source.collect([query]).for_service("team", "chat")[Signal.QUEUE_DEPTH].value

    assert eventually(probe, timeout=20, interval=0.5, desc="queue depth of the live pod") == 3
    unrestricted = ServiceQuery("team", "chat", frozenset({Signal.QUEUE_DEPTH}))
    assert source.collect([unrestricted]).for_service("team", "chat")[Signal.QUEUE_DEPTH].value == 53


def test_the_routers_queue_and_wait_count_for_the_live_model_pods(
    prom: Prometheus, exporters: list[Exporter]
) -> None:
    """#19 live: every replica full, the router held 593 requests while QueueDepth (restricted to the
    model-server pods) read 1 and the model-server's TTFT looked fine. The router's queue is demand and its
    wait is part of what a client waits for the first token."""
    model, router = Exporter("team", "chat", "chat-model-1"), Exporter("team", "chat", "chat-router-1")
    exporters += [model, router]
    model.queue.set(1)
    router.flow_queued.set(40)
    prom.set_targets([model, router])
    prom.wait_scraped(2)
    for _ in range(20):  # after the first scrape: a rate needs the counters to rise between two
        model.ttft.observe(0.3)  # the engine's TTFT: the model-server does not export the client one here
        router.flow_wait.observe(6.0)
    source = MetricsSource(prom.url)
    query = ServiceQuery(
        "team",
        "chat",
        frozenset({Signal.QUEUE_DEPTH, Signal.TIME_TO_FIRST_TOKEN}),
        pods=frozenset({"chat-model-1"}),
    )

    def probe() -> tuple[float | None, float | None]:
        obs = source.collect([query]).for_service("team", "chat")
        queue, ttft = obs[Signal.QUEUE_DEPTH].value, obs[Signal.TIME_TO_FIRST_TOKEN].value
        assert queue == 41 and ttft is not None and ttft > 1, (queue, ttft)  # both series scraped
        return queue, ttft

    _, ttft = eventually(probe, timeout=20, interval=0.5, desc="the router's queue and wait")
    assert ttft is not None and 6.0 < ttft <= 8.5  # the router's p95 wait (4-8 s bucket) + the engine's


def test_without_a_router_the_ttft_is_the_model_servers(prom: Prometheus, exporters: list[Exporter]) -> None:
    model = Exporter("team", "direct", "direct-model-1")
    exporters.append(model)
    prom.set_targets([model])
    prom.wait_scraped(1)
    for _ in range(20):
        model.ttft.observe(0.3)
    source = MetricsSource(prom.url)
    query = ServiceQuery(
        "team", "direct", frozenset({Signal.TIME_TO_FIRST_TOKEN}), pods=frozenset({"direct-model-1"})
    )

    def probe() -> float | None:
        return source.collect([query]).for_service("team", "direct")[Signal.TIME_TO_FIRST_TOKEN].value

    ttft = eventually(probe, timeout=20, interval=0.5, desc="the model-server's TTFT")  # 0.0: not yet
    assert ttft is not None and 0.25 < ttft <= 0.5
