"""The operator's own Prometheus metrics (a registry the composition root creates and serves)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from shoal_common.series import SeriesBuilder


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        s = SeriesBuilder(self.registry)
        self.reconcile_total = s.counter(
            "shoal_operator_reconcile_total",
            "InferenceService reconciles by result (ok, degraded, invalid, error, gone).",
            "result",
        )
        self.reconcile_duration = s.histogram(
            "shoal_operator_reconcile_duration_seconds",
            "Time of one InferenceService reconcile (children applied and status written).",
            (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.errors_total = s.counter(
            "shoal_operator_reconcile_errors_total",
            "Reconcile errors by kind (api, apply_rejected, invalid_spec).",
            "kind",
        )

    def observe_reconcile(self, result: str, seconds: float) -> None:
        self.reconcile_total.labels(result=result).inc()
        self.reconcile_duration.observe(seconds)

    def error(self, kind: str) -> None:
        self.errors_total.labels(kind=kind).inc()
