"""The InferenceService resource: pydantic models that are the one schema source.

The CRD (`crds/shoal.dev_inferenceservices.yaml`) is generated from these models by `crdgen.py`; the
operator and the autoscaler parse objects with them. Python names are snake_case, the YAML is camelCase
(aliases). Defaults here are also emitted as CRD defaults, so the API server stores fully defaulted
objects and the Python defaults never disagree with the cluster's.

Validation that a single field cannot express lives in `x-kubernetes-validations` (CEL) rules attached
with `cel(...)`; the API server enforces them, and `validate_spec` repeats the ones that matter for the
operator so a unit test can check a spec without a cluster.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

# ---------------------------------------------------------------------------------------------------
# Schema helpers (also read by crdgen)

QUANTITY_PATTERN = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"

# A Kubernetes resource quantity ("4", 4, "500m", "16Gi"): int-or-string, like core types.
Quantity = Annotated[
    int | str,
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]

# An arbitrary Kubernetes object embedded as is (tolerations, affinity, valueFrom): kept, not checked here.
FreeObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]

# Engine argument values: strings, numbers or booleans ("--KEY=VALUE"; true means a bare flag).
ArgValue = Annotated[
    str | int | float | bool,
    WithJsonSchema({"x-kubernetes-preserve-unknown-fields": True}),
]

URI_SCHEMES = ("pvc", "hf", "s3", "file")
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """`json_schema_extra` carrying CEL rules: (rule, message) pairs."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]}


def obj_default() -> dict[str, Any]:
    """Emit `default: {}` so the API server fills the nested defaults when the block is omitted."""
    return {"default": {}}


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        validate_default=True,
    )

    def dump(self) -> dict[str, Any]:
        """The camelCase dictionary as it appears in YAML (None fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# ---------------------------------------------------------------------------------------------------
# Spec


class ModelCache(_Model):
    """Volume where a downloaded model (hf://, s3://) is cached inside the pod."""

    size: Quantity = Field(default="20Gi", description="Size limit of the cache volume.")
    storage_class_name: str | None = Field(
        default=None,
        description="When set, the cache is a per-pod ephemeral PVC of this storage class; "
        "otherwise an emptyDir.",
    )


class ModelSpec(_Model):
    name: str = Field(
        min_length=1,
        max_length=256,
        description="Model name served by the OpenAI API (`model` field of requests).",
    )
    uri: str = Field(
        min_length=1,
        max_length=2048,
        description="Where the weights are: pvc://CLAIM/PATH, hf://ORG/NAME, s3://BUCKET/PATH or file:///PATH.",
        json_schema_extra=cel(
            (
                "self.matches('^(pvc|hf|s3|file)://.+$')",
                "model.uri must start with pvc://, hf://, s3:// or file:// and name something",
            ),
            (
                "!self.startsWith('pvc://') || self.matches('^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/.*)?$')",
                "pvc:// URIs look like pvc://CLAIM/PATH where CLAIM is a valid PersistentVolumeClaim name",
            ),
            (
                "!self.startsWith('file://') || self.startsWith('file:///')",
                "file:// URIs need an absolute path: file:///PATH",
            ),
        ),
    )
    cache: ModelCache = Field(default_factory=ModelCache, json_schema_extra=obj_default())

    @property
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0]

    @property
    def location(self) -> str:
        """The URI without its scheme (for file:// the absolute path)."""
        return self.uri.split("://", 1)[1]


class EnvVar(_Model):
    name: str = Field(min_length=1, max_length=256)
    value: str | None = None
    value_from: FreeObject | None = None


class SimEngine(_Model):
    """Knobs of the simulated engine (kind: sim)."""

    prefill_tokens_per_second: float | None = Field(default=None, ge=1)
    decode_tokens_per_second: float | None = Field(default=None, ge=1)
    max_batch: int | None = Field(default=None, ge=1)
    startup_seconds: float | None = Field(default=None, ge=0, description="Simulated model load time.")


class EngineSpec(_Model):
    kind: Literal["vllm", "sim"] = Field(default="vllm", description="vllm, or sim for the simulated engine.")
    image: str | None = Field(
        default=None,
        min_length=1,
        description="Model-server image; default: the operator's --model-server-image.",
    )
    args: dict[str, ArgValue] = Field(
        default_factory=dict,
        description="Engine arguments, passed as --engine-arg KEY=VALUE (e.g. max-model-len: 4096).",
        json_schema_extra={"maxProperties": 64},
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        description="Extra environment variables of the model-server container.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "maxItems": 64,
        },
    )
    sim: SimEngine | None = None


class ResourcesSpec(_Model):
    gpus: int = Field(default=0, ge=0, le=64, description="GPUs per replica.")
    gpu_resource_name: str = Field(
        default="nvidia.com/gpu",
        max_length=253,
        pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$",
        description="Extended resource name of the GPU.",
    )
    cpu: Quantity | None = Field(default=None, description="CPU request per replica.")
    memory: Quantity | None = Field(default=None, description="Memory request and limit per replica.")
    shared_memory: Quantity = Field(default="1Gi", description="Size of /dev/shm (memory-backed).")


class SchedulingSpec(_Model):
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[FreeObject] = Field(default_factory=list)
    affinity: FreeObject | None = None
    priority_class_name: str | None = None


MetricType = Literal["QueueDepth", "RunningRequests", "TimeToFirstToken", "KVCacheUsage"]
PER_REPLICA_METRICS: tuple[str, ...] = ("QueueDepth", "RunningRequests", "KVCacheUsage")


class MetricSpec(_Model):
    type: MetricType
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
    return [MetricSpec(type="QueueDepth", target_per_replica=4)]


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
    prometheus_query_overrides: dict[MetricType, str] | None = Field(
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


class ServingSpec(_Model):
    max_queue_per_replica: int = Field(
        default=64, ge=0, le=100000, description="Admission queue per replica."
    )
    max_concurrency: int = Field(default=32, ge=1, le=10000, description="Requests in the engine at once.")
    request_timeout_seconds: int = Field(default=600, ge=1, le=86400)
    drain_seconds: int = Field(
        default=30, ge=0, le=3600, description="Time to finish in-flight work on stop."
    )


class RateLimit(_Model):
    requests_per_second: float = Field(ge=0, description="Per API key.")
    burst: int | None = Field(default=None, ge=1)


class RoutingSpec(_Model):
    mode: Literal["Router", "Service"] = Field(
        default="Router",
        description="Router: an LLM-aware router in front of the pods; Service: the Service targets the pods.",
    )
    strategy: Literal["LeastLoad", "PrefixHash", "RoundRobin"] = "LeastLoad"
    replicas: int = Field(default=1, ge=1, le=100, description="Router replicas.")
    api_keys_secret: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS1123_LABEL.replace("$", "") + r"(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    )
    rate_limit: RateLimit | None = None

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.mode == 'Router' || (!has(self.apiKeysSecret) && !has(self.rateLimit))",
                "routing.apiKeysSecret and routing.rateLimit need routing.mode: Router",
            ),
        )
    )


class MetricsScraper(_Model):
    namespace: str = Field(
        default="monitoring", pattern=DNS1123_LABEL, max_length=63, description="Namespace of Prometheus."
    )
    pod_labels: dict[str, str] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "prometheus"},
        description="Labels of the Prometheus pods (they scrape /metrics on the model-server port).",
    )


class NetworkPolicySpec(_Model):
    enabled: bool = Field(
        default=True,
        description="Render a NetworkPolicy: model-server pods accept traffic only from this service's "
        "router or endpoint-picker pods, Prometheus, and the namespaces listed here (in Service mode also "
        "their own namespace).",
    )
    allowed_namespaces: list[Annotated[str, Field(pattern=DNS1123_LABEL, max_length=63)]] = Field(
        default_factory=list,
        max_length=64,
        description="Namespaces whose pods may call the model-server pods directly (e.g. a gateway's).",
    )
    prometheus: MetricsScraper = Field(default_factory=MetricsScraper, json_schema_extra=obj_default())


class InferenceServiceSpec(_Model):
    model: ModelSpec
    engine: EngineSpec = Field(default_factory=EngineSpec, json_schema_extra=obj_default())
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, json_schema_extra=obj_default())
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec, json_schema_extra=obj_default())
    replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Model-server replicas; the scale subresource writes it (kubectl scale, the autoscaler). "
        "Leave it out of GitOps manifests when autoscaling is enabled.",
    )
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec, json_schema_extra=obj_default())
    serving: ServingSpec = Field(default_factory=ServingSpec, json_schema_extra=obj_default())
    routing: RoutingSpec = Field(default_factory=RoutingSpec, json_schema_extra=obj_default())
    network_policy: NetworkPolicySpec = Field(
        default_factory=NetworkPolicySpec, json_schema_extra=obj_default()
    )

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!self.autoscaling.scaleToZero.enabled || self.routing.mode == 'Router'",
                "autoscaling.scaleToZero needs routing.mode: Router (the router holds requests while a replica starts)",
            ),
            (
                "!has(self.engine.sim) || self.engine.kind == 'sim'",
                "engine.sim settings are only valid with engine.kind: sim",
            ),
        )
    )


# ---------------------------------------------------------------------------------------------------
# Status

ConditionType = Literal["Ready", "Progressing", "Degraded", "ScalingLimited", "MetricsAvailable"]


class Condition(_Model):
    type: str = Field(description="Ready, Progressing, Degraded, ScalingLimited or MetricsAvailable.")
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


class ScaleDecision(_Model):
    from_: int = Field(alias="from")
    to: int
    reason: str
    inputs: FreeObject = Field(default_factory=dict)


class AutoscalerStatus(_Model):
    desired_replicas: int | None = None
    last_scale_time: datetime | None = None
    last_decision: ScaleDecision | None = None


class InferenceServiceStatus(_Model):
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    replicas: int | None = Field(
        default=None, description="Model-server pods (the scale subresource reads it)."
    )
    ready_replicas: int | None = None
    selector: str | None = Field(default=None, description="Label selector of the model-server pods.")
    url: str | None = None
    observed_generation: int | None = None
    autoscaler: AutoscalerStatus | None = None


class InferenceService(_Model):
    """A parsed InferenceService (metadata kept as a plain dictionary)."""

    api_version: str = "shoal.dev/v1alpha1"
    kind: str = "InferenceService"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: InferenceServiceSpec
    status: InferenceServiceStatus = Field(default_factory=InferenceServiceStatus)

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", "default"))

    @property
    def uid(self) -> str:
        return str(self.metadata.get("uid", ""))

    @property
    def generation(self) -> int:
        return int(self.metadata.get("generation", 0) or 0)


# Names of the CRD (see common/shoal_common/names.py).
NAME_RULE = (
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 56",
    "metadata.name must be a DNS label starting with a letter, at most 56 characters "
    "(it names Services, and X-router must fit 63)",
)
