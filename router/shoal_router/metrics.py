"""Prometheus series of the router (names are a public API: docs/metrics.md). One registry per router, no
module-level singletons, so tests can run several routers in one process."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from shoal_common.series import SeriesBuilder

MAX_TENANT_LABELS = 100
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
FLOW_WAIT_BUCKETS = (0.0, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        s = SeriesBuilder(self.registry)
        self.requests = s.counter(
            "shoal_router_requests", "Requests answered by the router, by HTTP status code.", "code"
        )
        self.upstream_latency = s.histogram(
            "shoal_router_upstream_latency_seconds",
            "Time from sending a request upstream to its response headers (time to first byte).",
            LATENCY_BUCKETS,
        )
        self.request_duration = s.histogram(
            "shoal_router_request_duration_seconds",
            "Whole request time through the router, including holding and retries.",
            LATENCY_BUCKETS,
        )
        self.retries = s.counter(
            "shoal_router_retries", "Attempts retried on another replica before any byte reached the client."
        )
        self.retries_denied = s.counter(
            "shoal_router_retries_denied",
            "Retries not made because the retry budget or max attempts ran out.",
        )
        self.ejections = s.counter(
            "shoal_router_ejections", "Outlier ejections of an endpoint after repeated failures."
        )
        self.pending = s.gauge(
            "shoal_router_pending_requests",
            "Requests held because no replica is ready (the scale-from-zero signal).",
        )
        self.endpoint_inflight = s.gauge(
            "shoal_router_endpoint_inflight", "Requests in flight per upstream endpoint.", "endpoint"
        )
        self.endpoints = s.gauge(
            "shoal_router_endpoints",
            "Known endpoints by state (ready, terminating, ejected, not_ready).",
            "state",
        )
        self.rejected = s.counter(
            "shoal_router_rejected",
            "Requests refused by the router itself, by reason "
            "(unauthorized, rate_limited, too_large, queue_full, hold_timeout).",
            "reason",
        )
        self._flow_series(s)
        self._code_children: dict[int, Counter] = {}
        self._inflight_children: dict[str, Gauge] = {}  # bounded: one per known endpoint

    # PoolMetrics protocol
    def set_inflight(self, endpoint: str, value: int) -> None:
        # twice per request (acquire, release): the label child is cached (labels() costs microseconds)
        child = self._inflight_children.get(endpoint)
        if child is None:
            child = self._inflight_children[endpoint] = self.endpoint_inflight.labels(endpoint)
        child.set(value)

    def remove_endpoint(self, endpoint: str) -> None:
        self._inflight_children.pop(endpoint, None)
        with contextlib.suppress(KeyError):
            self.endpoint_inflight.remove(endpoint)

    def ejected(self, endpoint: str) -> None:
        self.ejections.inc()

    def _flow_series(self, s: SeriesBuilder) -> None:
        """Flow control, by priority band and tenant (the dispatcher's FlowMetrics)."""
        self._tenants: set[str] = set()
        self._dispatch_children: dict[tuple[int, str], tuple[Counter, Histogram]] = {}
        self.flow_queue = s.gauge(
            "shoal_router_flow_queued_requests",
            "Requests waiting in the router for a free replica slot (replicas ready but full), by band and tenant; "
            "requests held while no replica is ready are in shoal_router_pending_requests instead.",
            "priority",
            "tenant",
        )
        self.flow_dispatched_total = s.counter(
            "shoal_router_flow_dispatched",
            "Requests handed to a replica (after any wait), by priority band and tenant.",
            "priority",
            "tenant",
        )
        self.flow_shed_total = s.counter(
            "shoal_router_flow_shed",
            "Requests refused by flow control, by band, tenant and reason "
            "(queue_full, shed, timeout, tokens_quota).",
            "priority",
            "tenant",
            "reason",
        )
        self.flow_wait = s.histogram(
            "shoal_router_flow_wait_seconds",
            "Time a request waited in the router's queue before dispatch, by band and tenant.",
            FLOW_WAIT_BUCKETS,
            "priority",
            "tenant",
        )

    # FlowMetrics protocol (the dispatcher's)
    def _tenant(self, tenant: str) -> str:
        """Bounded label values: the first MAX_TENANT_LABELS tenants by name, the rest as "other"."""
        label = tenant or "default"
        if label in self._tenants:
            return label
        if len(self._tenants) >= MAX_TENANT_LABELS:
            return "other"
        self._tenants.add(label)
        return label

    def flow_queued(self, priority: int, tenant: str, delta: int) -> None:
        self.flow_queue.labels(str(priority), self._tenant(tenant)).inc(delta)

    def flow_dispatched(self, priority: int, tenant: str, wait_s: float) -> None:
        # on every request: the label children are cached (labels() costs microseconds each)
        children = self._dispatch_children.get((priority, tenant))
        if children is None:
            labels = (str(priority), self._tenant(tenant))
            children = (self.flow_dispatched_total.labels(*labels), self.flow_wait.labels(*labels))
            if len(self._dispatch_children) < 4 * MAX_TENANT_LABELS:
                self._dispatch_children[(priority, tenant)] = children
        children[0].inc()
        children[1].observe(wait_s)

    def flow_shed(self, priority: int, tenant: str, reason: str) -> None:
        self.flow_shed_total.labels(str(priority), self._tenant(tenant), reason).inc()

    def set_pending(self, value: int) -> None:
        self.pending.set(value)

    def count_response(self, code: int) -> None:
        child = self._code_children.get(code)
        if child is None:
            child = self._code_children[code] = self.requests.labels(str(code))
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
