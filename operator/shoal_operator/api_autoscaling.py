"""The autoscaling part of the InferenceService resource (spec.autoscaling, status.autoscaler)."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, Field

from shoal_operator.api_schema import FreeObject, _Model, cel, obj_default
from shoal_operator.autoscaler.kinds import MetricKind


class MetricSpec(_Model):
    type: MetricKind
    target_per_replica: float | None = Field(
        default=None,
        description="Target average per replica (QueueDepth, RunningRequests; KVCacheUsage as a 0..1 fraction).",
    )
    target_seconds: float | None = Field(default=None, description="Target latency (TimeToFirstToken).")
    quantile: float = Field(default=0.95, ge=0, le=1, description="Latency quantile (TimeToFirstToken).")

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!(self.type in ['QueueDepth', 'RunningRequests', 'KVCacheUsage']) || has(self.targetPerReplica)",
                "QueueDepth, RunningRequests and KVCacheUsage metrics need targetPerReplica",
            ),
            (
                "self.type != 'TimeToFirstToken' || has(self.targetSeconds)",
                "TimeToFirstToken metrics need targetSeconds",
            ),
            ("!has(self.targetPerReplica) || self.targetPerReplica > 0.0", "targetPerReplica must be > 0"),
            ("!has(self.targetSeconds) || self.targetSeconds > 0.0", "targetSeconds must be > 0"),
            (
                "self.type != 'KVCacheUsage' || !has(self.targetPerReplica) || self.targetPerReplica <= 1.0",
                "KVCacheUsage targetPerReplica is a fraction in (0, 1]",
            ),
        )
    )


def _default_metrics() -> list[MetricSpec]:
    return [MetricSpec(type=MetricKind.QUEUE_DEPTH, target_per_replica=4)]


class ScaleUpRules(_Model):
    stabilization_seconds: int = Field(default=0, ge=0, le=3600)
    max_replicas_per_step: int | None = Field(default=None, ge=1)
    max_percent_per_step: int | None = Field(default=100, ge=1)
    period_seconds: int = Field(default=15, ge=1, le=1800)


class ScaleDownRules(_Model):
    stabilization_seconds: int = Field(default=300, ge=0, le=3600)
    max_replicas_per_step: int | None = Field(default=None, ge=1)
    max_percent_per_step: int | None = Field(default=50, ge=1, le=100)
    period_seconds: int = Field(default=60, ge=1, le=1800)


class Behavior(_Model):
    scale_up: ScaleUpRules = Field(default_factory=ScaleUpRules, json_schema_extra=obj_default())
    scale_down: ScaleDownRules = Field(default_factory=ScaleDownRules, json_schema_extra=obj_default())


class Panic(_Model):
    threshold_percent: int = Field(
        default=200, ge=101, description="Enter panic mode above this % of target."
    )
    window_seconds: int = Field(default=60, ge=1, le=3600)


class ScaleToZero(_Model):
    enabled: bool = False
    idle_seconds: int = Field(default=600, ge=0, description="Idle time before scaling to zero.")


class AutoscalingSpec(_Model):
    enabled: bool = False
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=4, ge=1, le=1000)
    metrics: list[MetricSpec] = Field(
        default_factory=_default_metrics,
        json_schema_extra={
            "default": [{"type": "QueueDepth", "targetPerReplica": 4}],
            "maxItems": 8,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    tolerance: float = Field(default=0.1, ge=0, le=1, description="Dead band around the target (fraction).")
    behavior: Behavior = Field(default_factory=Behavior, json_schema_extra=obj_default())
    panic: Panic = Field(default_factory=Panic, json_schema_extra=obj_default())
    scale_to_zero: ScaleToZero = Field(default_factory=ScaleToZero, json_schema_extra=obj_default())
    metrics_max_age_seconds: int = Field(default=30, ge=1, description="Older samples count as missing.")
    prometheus_query_overrides: dict[MetricKind, str] | None = Field(
        default=None,
        description="PromQL template per metric type, replacing the built-in query.",
        json_schema_extra={
            "type": "object",
            "maxProperties": 4,
            "additionalProperties": {"type": "string", "maxLength": 4096},
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(k, k in ['QueueDepth', 'RunningRequests', 'TimeToFirstToken', 'KVCacheUsage'])",
                    "message": "prometheusQueryOverrides keys must be metric types "
                    "(QueueDepth, RunningRequests, TimeToFirstToken, KVCacheUsage)",
                }
            ],
        },
    )

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.minReplicas <= self.maxReplicas",
                "autoscaling.minReplicas must be <= autoscaling.maxReplicas",
            ),
            (
                "!self.enabled || size(self.metrics) > 0",
                "autoscaling.metrics needs at least one metric when autoscaling is enabled",
            ),
            (
                "!self.scaleToZero.enabled || self.minReplicas == 0",
                "autoscaling.scaleToZero.enabled requires autoscaling.minReplicas: 0",
            ),
            (
                "self.minReplicas > 0 || self.scaleToZero.enabled",
                "autoscaling.minReplicas: 0 requires autoscaling.scaleToZero.enabled: true",
            ),
        )
    )


class ScaleDecision(_Model):
    from_: int = Field(alias="from")
    to: int
    reason: str
    inputs: FreeObject = Field(default_factory=dict)


class AutoscalerStatus(_Model):
    desired_replicas: int | None = None
    last_scale_time: datetime | None = None
    last_decision: ScaleDecision | None = None
