"""metrics.py with a fake Prometheus client: query count, parsing, errors."""

from __future__ import annotations

from typing import Any

import pytest
from shoal_operator.autoscaler.metrics import (
    DEFAULT_TEMPLATES,
    MetricsSource,
    ServiceQuery,
    build_query,
)
from shoal_operator.autoscaler.policy import Signal

pytestmark = pytest.mark.unit


class FakeClient:
    def __init__(self, rows: list[dict[str, Any]] | None = None, fail: bool = False) -> None:
        self.rows = rows or []
        self.fail = fail
        self.calls: list[str] = []

    def custom_query(self, query: str) -> list[dict[str, Any]]:
        self.calls.append(query)
        if self.fail:
            raise ConnectionError("connection refused")
        return self.rows


def row(ns: str, name: str, field: str, value: float) -> dict[str, Any]:
    return {
        "metric": {"namespace": ns, "inferenceservice": name, "shoal_field": field},
        "value": [1000.0, str(value)],
    }


def test_one_query_per_kind_whatever_the_number_of_services() -> None:
    for n in (1, 10, 200):
        client = FakeClient()
        services = [ServiceQuery("ns", f"s{i}", frozenset(Signal)) for i in range(n)]
        snap = MetricsSource("http://unused", client=client).collect(services)
        assert len(client.calls) == len(Signal) == len(snap.queries)


def test_parses_value_timestamp_and_series() -> None:
    client = FakeClient([row("a", "x", "value", 7), row("a", "x", "ts", 990.5), row("a", "x", "series", 3)])
    snap = MetricsSource("http://unused", client=client).collect(
        [
            ServiceQuery("a", "x", frozenset({Signal.QUEUE_DEPTH})),
            ServiceQuery("b", "y", frozenset({Signal.QUEUE_DEPTH})),
        ]
    )
    o = snap.for_service("a", "x")[Signal.QUEUE_DEPTH]
    assert (o.value, o.timestamp, o.series, o.error) == (7, 990.5, 3, None)
    missing = snap.for_service("b", "y")[Signal.QUEUE_DEPTH]
    assert missing.value is None and missing.error is None


def test_errors_are_reported_per_signal() -> None:
    snap = MetricsSource("http://unused", client=FakeClient(fail=True)).collect(
        [ServiceQuery("a", "x", frozenset({Signal.QUEUE_DEPTH, Signal.ROUTER_PENDING}))]
    )
    assert set(snap.errors) == {Signal.QUEUE_DEPTH, Signal.ROUTER_PENDING}
    assert "connection refused" in (snap.for_service("a", "x")[Signal.QUEUE_DEPTH].error or "")


def test_query_shape() -> None:
    q = build_query(DEFAULT_TEMPLATES[Signal.TIME_TO_FIRST_TOKEN], 0.99)
    assert "histogram_quantile(0.99" in q
    assert "by (namespace, inferenceservice, le)" in q
    assert q.count("up == 1") >= 3
    assert "vllm:num_requests_waiting|vllm_num_requests_waiting" in build_query(
        DEFAULT_TEMPLATES[Signal.QUEUE_DEPTH]
    )


def test_ttft_reads_the_client_visible_histogram_first() -> None:
    """#19: the engine's TTFT excludes the admission queue; the client-visible one comes first, the
    engine's only for pods without it."""
    q = build_query(DEFAULT_TEMPLATES[Signal.TIME_TO_FIRST_TOKEN], 0.95)
    client = q.index("shoal_server_time_to_first_token_seconds_bucket")
    engine = q.index("vllm:time_to_first_token_seconds_bucket")
    assert client < engine and q[client:engine].count(" or ") == 1


def test_pod_signals_count_only_live_pods() -> None:
    client = FakeClient()
    services = [
        ServiceQuery(
            "a", "x", frozenset({Signal.QUEUE_DEPTH, Signal.ROUTER_PENDING}), pods=frozenset({"x-model-1"})
        ),
        ServiceQuery("a", "y", frozenset({Signal.QUEUE_DEPTH}), pods=frozenset({"y-model.2"})),
    ]
    MetricsSource("http://unused", client=client).collect(services)
    queue = next(q for q in client.calls if "shoal_server_queue_depth" in q)
    pending = next(q for q in client.calls if "shoal_router_pending_requests" in q)
    assert queue.count('pod=~"x-model-1|y-model\\\\.2"') >= 3  # value, freshness and count selectors
    assert "pod=~" not in pending  # the router's own series are not the model-server pods'
