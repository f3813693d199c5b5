"""`spec.routing` of an InferenceService: how requests reach the replicas, and the flow-control policy
the router or endpoint picker applies (bands by objective, tenants' policies)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from shoal_operator.api_schema import DNS1123_LABEL, _Model, cel

Band = Annotated[int, Field(ge=-1000, le=1000)]


class RateLimit(_Model):
    requests_per_second: float = Field(ge=0, description="Per API key.")
    burst: int | None = Field(default=None, ge=1)


class TenantSpec(_Model):
    """One tenant's flow-control policy (the EPP's `--tenant ID priority=P weight=W tokens-per-minute=N`)."""

    priority: Band | None = Field(default=None, description="Priority band; default: by objective, else 0.")
    weight: float = Field(default=1.0, ge=0.01, le=1000, description="Share of its band under saturation.")
    tokens_per_minute: int = Field(default=0, ge=0, description="Token quota (prompt + completion); 0: none.")

    def flag(self, tenant: str) -> str:
        opts = [tenant] + ([f"priority={self.priority}"] if self.priority is not None else [])
        opts += [f"weight={self.weight:g}", f"tokens-per-minute={self.tokens_per_minute}"]
        return " ".join(opts)


class RoutingSpec(_Model):
    mode: Literal["Router", "Service", "Gateway"] = Field(
        default="Router",
        description="Router: an LLM-aware router in front of the pods; Service: the Service targets the pods; "
        "Gateway: an InferencePool for your Gateway API gateway, with shoal's endpoint picker (docs/gateway.md).",
    )
    strategy: Literal["LeastLoad", "PrefixHash", "PrefixLoad", "RoundRobin", "AdapterAffinity"] = Field(
        default="LeastLoad",
        description="Replica picking. AdapterAffinity: a LoRA adapter's requests stay on the replicas holding it "
        "(within a load bound); base-model requests by least load.",
    )
    replicas: int = Field(default=1, ge=1, le=100, description="Router (or endpoint picker) replicas.")
    failure_mode: Literal["FailClose", "FailOpen"] = Field(
        default="FailClose",
        description="Gateway mode: what the gateway does when the endpoint picker is unreachable "
        "(FailClose: answer 5xx; FailOpen: forward to any pod of the pool).",
    )
    api_keys_secret: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS1123_LABEL.replace("$", "") + r"(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    )
    rate_limit: RateLimit | None = None
    objectives: dict[str, Band] = Field(
        default_factory=dict,
        description="x-gateway-inference-objective value -> priority band (higher: served first).",
        json_schema_extra={"maxProperties": 64},
    )
    tenants: dict[str, TenantSpec] | None = Field(
        default=None,
        description="Gateway mode: flow-control policy per x-gateway-inference-fairness-id (the gateway "
        "authenticates and sets it), passed to the endpoint picker as --tenant. Router mode: API-key options.",
        json_schema_extra={"maxProperties": 256},
    )

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.mode == 'Router' || (!has(self.apiKeysSecret) && !has(self.rateLimit))",
                "routing.apiKeysSecret and routing.rateLimit need routing.mode: Router",
            ),
            ("self.mode == 'Gateway' || !has(self.tenants)", "routing.tenants needs routing.mode: Gateway"),
            (
                "!has(self.tenants) || self.tenants.all(t, size(t) <= 128 && !t.contains(' '))",
                "routing.tenants: ids are at most 128 characters, without spaces",
            ),
        )
    )
