"""One way to declare Prometheus series for every shoal process: a builder bound to the process's own
registry (no module-level singletons, so tests can run several servers in one interpreter).

    s = SeriesBuilder(registry)
    self.requests = s.counter("shoal_router_requests", "Requests answered, by status code.", "code")

Names, label names and help texts are a public API (docs/metrics.md); the builder only removes the
repeated `registry=` plumbing so that each series is declared on one line of intent.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class SeriesBuilder:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def counter(self, name: str, help_text: str, *labels: str) -> Counter:
        """A counter; Prometheus exports it as `<name>_total`."""
        return Counter(name, help_text, labels, registry=self.registry)

    def gauge(self, name: str, help_text: str, *labels: str) -> Gauge:
        return Gauge(name, help_text, labels, registry=self.registry)

    def histogram(self, name: str, help_text: str, buckets: Sequence[float], *labels: str) -> Histogram:
        return Histogram(name, help_text, labels, buckets=buckets, registry=self.registry)
