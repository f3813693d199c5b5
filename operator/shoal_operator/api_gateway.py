"""The InferenceGateway resource: one OpenAI endpoint in front of several InferenceServices.

The operator deploys one multi-model entry point (`shoal router --models-gateway NAME`) per
InferenceGateway. The entry point reads this object and the InferenceServices it selects from the API
server itself, so a new InferenceService, a changed label or new split weights apply within a watch
event, with no restart and no ConfigMap refresh delay. The CRD is generated from these models
(`crds/shoal.dev_inferencegateways.yaml`, `crdgen.py`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shoal_operator.api import Condition, NamedObject
from shoal_operator.api_routing import RateLimit
from shoal_operator.api_schema import DNS1123_LABEL, _Model

SECRET_NAME = DNS1123_LABEL.replace("$", "") + r"(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class ServiceSelector(_Model):
    match_labels: dict[str, str] = Field(
        default_factory=dict, description="InferenceServices whose labels include all of these."
    )


class InferenceGatewaySpec(_Model):
    selector: ServiceSelector | None = Field(
        default=None,
        description="Which InferenceServices of the namespace it fronts, by their labels; absent: all.",
    )
    splits: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="Public model name -> {target model: integer weight} (a canary: {chat-v1: 90, "
        "chat-v2: 10}); a target is a served model or adapter. Changes apply without a restart.",
        json_schema_extra={
            "maxProperties": 256,
            "additionalProperties": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 16,
                "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 1000000},
                "x-kubernetes-validations": [
                    {
                        "rule": "self.exists(t, self[t] > 0)",
                        "message": "every split needs at least one weight > 0",
                    }
                ],
            },
        },
    )
    replicas: int = Field(default=1, ge=1, le=100, description="Entry-point router replicas.")
    strategy: Literal["LeastLoad", "PrefixHash", "PrefixLoad", "RoundRobin", "AdapterAffinity"] = Field(
        default="AdapterAffinity",
        description="Picking within a pool (AdapterAffinity: an adapter's requests stay on the replicas "
        "holding it; base-model requests by least load).",
    )
    api_keys_secret: str | None = Field(
        default=None,
        max_length=253,
        pattern=SECRET_NAME,
        description="Secret in the namespace whose values are API keys (as routing.apiKeysSecret).",
    )
    rate_limit: RateLimit | None = Field(default=None, description="Per API key, across all models.")
    request_timeout_seconds: int = Field(default=600, ge=1, le=86400)


class InferenceGatewayStatus(_Model):
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    replicas: int | None = None
    ready_replicas: int | None = None
    url: str | None = None
    observed_generation: int | None = None


class InferenceGateway(NamedObject):
    api_version: str = "shoal.dev/v1alpha1"
    kind: str = "InferenceGateway"
    spec: InferenceGatewaySpec = Field(default_factory=InferenceGatewaySpec)
    status: InferenceGatewayStatus = Field(default_factory=InferenceGatewayStatus)


NAME_RULE = (
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 56",
    "metadata.name must be a DNS label starting with a letter, at most 56 characters (it names the "
    "entry point's Service, and X-entry must fit 63)",
)
