"""Prometheus series of the EPP (public names: docs/metrics.md). They live in the same registry as the
core's series, so `shoal_router_pending_requests` (the scale-from-zero signal) is exported unchanged."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from shoal_common.series import SeriesBuilder

PICK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.1, 1.0, 10.0, 60.0, 300.0)


class EppMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        s = SeriesBuilder(registry)
        self.picks = s.counter("shoal_epp_picks", "Requests for which the EPP named a destination endpoint.")
        self.pick_seconds = s.histogram(
            "shoal_epp_pick_duration_seconds",
            "Time from the end of the request body to the pick (includes holding at zero).",
            PICK_BUCKETS,
        )
        self.refused = s.counter(
            "shoal_epp_refused",
            "Requests answered by the EPP itself with an ImmediateResponse, by code "
            "(bad_request, too_large, no_endpoint, no_replica_ready, no_replica_queue_full, ...).",
            "code",
        )
        self.fallbacks = s.counter(
            "shoal_epp_fallbacks",
            "Exchanges the gateway served from a fallback endpoint instead of the primary pick.",
        )
        self.streams = s.counter("shoal_epp_streams", "ext_proc streams opened by the gateway.")
