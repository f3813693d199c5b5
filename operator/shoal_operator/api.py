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
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import ConfigDict, Field

from shoal_operator.api_autoscaling import (
    AutoscalerStatus,
    AutoscalingSpec,
)
from shoal_operator.api_routing import RoutingSpec
from shoal_operator.api_schema import (
    DNS1123_LABEL,
    ArgValue,
    FreeObject,
    Quantity,
    _Model,
    cel,
    obj_default,
)

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


def _uri_rules(what: str) -> dict[str, Any]:
    return cel(
        (
            "self.matches('^(pvc|hf|s3|file)://.+$')",
            f"{what} must start with pvc://, hf://, s3:// or file:// and name something",
        ),
        (
            "!self.startsWith('pvc://') || self.matches('^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/.*)?$')",
            "pvc:// URIs look like pvc://CLAIM/PATH where CLAIM is a valid PersistentVolumeClaim name",
        ),
        (
            "!self.startsWith('file://') || self.startsWith('file:///')",
            "file:// URIs need an absolute path: file:///PATH",
        ),
    )


class _UriParts:
    """`scheme` and `location` of a model or adapter `uri` (validated by the CRD's URI rules)."""

    if TYPE_CHECKING:
        uri: str

    @property
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0]

    @property
    def location(self) -> str:
        """The URI without its scheme (for file:// the absolute path)."""
        return self.uri.split("://", 1)[1]


class ModelSpec(_UriParts, _Model):
    name: str = Field(
        min_length=1,
        max_length=256,
        description="Model name served by the OpenAI API (`model` field of requests).",
    )
    uri: str = Field(
        min_length=1,
        max_length=2048,
        description="Where the weights are: pvc://CLAIM/PATH, hf://ORG/NAME, s3://BUCKET/PATH or file:///PATH.",
        json_schema_extra=_uri_rules("model.uri"),
    )
    cache: ModelCache = Field(default_factory=ModelCache, json_schema_extra=obj_default())


class AdapterSpec(_UriParts, _Model):
    """A LoRA adapter of the base model, served as its own model name."""

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9._:/-]*[A-Za-z0-9])?$",
        description="Model name clients send (`model` field) to use this adapter.",
    )
    uri: str = Field(
        min_length=1,
        max_length=1024,
        description="Where the adapter is: pvc://CLAIM/PATH, hf://ORG/NAME, s3://BUCKET/PATH or file:///PATH.",
        json_schema_extra=_uri_rules("adapters[].uri"),
    )


class LoraSpec(_Model):
    """LoRA serving limits (vLLM's max_loras and max_lora_rank)."""

    max_loras: int = Field(default=4, ge=1, le=256, description="Adapters used in one batch at once.")
    max_lora_rank: int = Field(default=16, ge=1, le=512, description="Largest adapter rank served.")


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


class ServingSpec(_Model):
    max_queue_per_replica: int = Field(
        default=64, ge=0, le=100000, description="Admission queue per replica."
    )
    max_concurrency: int = Field(default=32, ge=1, le=10000, description="Requests in the engine at once.")
    request_timeout_seconds: int = Field(default=600, ge=1, le=86400)
    drain_seconds: int = Field(
        default=30, ge=0, le=3600, description="Time to finish in-flight work on stop."
    )
    scheduling_policy: Literal["fcfs", "priority"] = Field(
        default="fcfs", description="vLLM's; priority: requests' engine priority from their band and tenant."
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
    adapters: list[AdapterSpec] = Field(
        default_factory=list,
        description="LoRA adapters served besides the base model; changes are applied to running replicas "
        "without a restart.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "maxItems": 64,  # bounds the CEL cost of the URI rules (evaluated per item)
        },
    )
    lora: LoraSpec | None = Field(
        default=None, description="LoRA limits; LoRA is enabled when this or `adapters` is set."
    )

    @property
    def lora_enabled(self) -> bool:
        return self.lora is not None or bool(self.adapters)

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!self.autoscaling.scaleToZero.enabled || self.routing.mode != 'Service'",
                "autoscaling.scaleToZero needs routing.mode: Router or Gateway (the router or the endpoint picker "
                "holds requests while a replica starts)",
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


class RoutingStatus(_Model):
    mode: str = ""
    inference_pool: str | None = Field(default=None, description="Gateway mode: the InferencePool's name.")
    endpoint_picker: str | None = Field(
        default=None, description="Gateway mode: the endpoint picker's Service (host:port)."
    )


class AdapterStatus(_Model):
    name: str
    ready_replicas: int = Field(default=0, description="Ready replicas that serve this adapter.")
    ready: bool = Field(default=False, description="Every ready replica serves it.")
    message: str = ""


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
    routing: RoutingStatus | None = None
    adapters: list[AdapterStatus] | None = Field(default=None, description="LoRA adapters' readiness.")


class NamedObject(_Model):
    """A shoal custom resource's metadata, kept as a plain dictionary, with the accessors the operator uses."""

    metadata: dict[str, Any] = Field(default_factory=dict)

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


class InferenceService(NamedObject):
    """A parsed InferenceService."""

    api_version: str = "shoal.dev/v1alpha1"
    kind: str = "InferenceService"
    spec: InferenceServiceSpec
    status: InferenceServiceStatus = Field(default_factory=InferenceServiceStatus)


# Names of the CRD (see common/shoal_common/names.py).
NAME_RULE = (
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 56",
    "metadata.name must be a DNS label starting with a letter, at most 56 characters "
    "(it names Services, and X-router must fit 63)",
)
