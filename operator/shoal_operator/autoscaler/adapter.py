"""From the CR's pydantic models (api.py) to the policy's plain configuration."""

from __future__ import annotations

from shoal_operator.api import InferenceServiceSpec
from shoal_operator.api_autoscaling import AutoscalingSpec

from .kinds import LOAD_SIGNALS, MetricKind, Signal
from .model import MetricTarget, PolicyConfig, StepBehavior


def policy_config(spec: InferenceServiceSpec) -> PolicyConfig:
    a: AutoscalingSpec = spec.autoscaling
    metrics: list[MetricTarget] = []
    for m in a.metrics:
        mtype = MetricKind(m.type)
        target = m.target_seconds if mtype is MetricKind.TIME_TO_FIRST_TOKEN else m.target_per_replica
        if target is None or target <= 0:
            continue  # the CRD rejects this; be defensive against objects stored before validation
        metrics.append(MetricTarget(mtype, float(target), m.quantile))
    up = a.behavior.scale_up
    down = a.behavior.scale_down
    return PolicyConfig(
        min_replicas=a.min_replicas,
        max_replicas=a.max_replicas,
        metrics=tuple(metrics),
        tolerance=a.tolerance,
        scale_up=StepBehavior(
            stabilization_seconds=float(up.stabilization_seconds),
            max_percent_per_step=None if up.max_percent_per_step is None else float(up.max_percent_per_step),
            period_seconds=float(up.period_seconds),
            max_replicas_per_step=up.max_replicas_per_step,
        ),
        scale_down=StepBehavior(
            stabilization_seconds=float(down.stabilization_seconds),
            max_percent_per_step=None
            if down.max_percent_per_step is None
            else float(down.max_percent_per_step),
            period_seconds=float(down.period_seconds),
            max_replicas_per_step=down.max_replicas_per_step,
        ),
        panic_threshold_percent=float(a.panic.threshold_percent),
        panic_window_seconds=float(a.panic.window_seconds),
        scale_to_zero=a.scale_to_zero.enabled,
        idle_seconds=float(a.scale_to_zero.idle_seconds),
        metrics_max_age_seconds=float(a.metrics_max_age_seconds),
        # Without a RunningRequests target, a replica's capacity is what the model-server admits at once.
        replica_capacity=None
        if any(m.type is MetricKind.RUNNING_REQUESTS for m in metrics)
        else float(spec.serving.max_concurrency),
    )


def signals(spec: InferenceServiceSpec) -> frozenset[Signal]:
    return frozenset(LOAD_SIGNALS) | {Signal.of(m.type) for m in spec.autoscaling.metrics}


def quantile(spec: InferenceServiceSpec) -> float:
    for m in spec.autoscaling.metrics:
        if m.type is MetricKind.TIME_TO_FIRST_TOKEN:
            return m.quantile
    return 0.95


def overrides(spec: InferenceServiceSpec) -> dict[Signal, str]:
    return {Signal.of(k): v for k, v in (spec.autoscaling.prometheus_query_overrides or {}).items()}
