"""Who a request belongs to and which band it travels in. Pure: both front ends call it with what they
read from the request (the API key's policy, the Gateway API Inference Extension headers)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shoal_router.flow.model import FlowRequest

OBJECTIVE_HEADER = "x-gateway-inference-objective"
FAIRNESS_HEADER = "x-gateway-inference-fairness-id"
PRIORITY_NAMES = {"critical": 2, "high": 1, "standard": 0, "normal": 0, "low": -1, "sheddable": -2}
MAX_TENANT_CHARS = 128


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """An API key's flow-control settings (the API-keys Secret's optional fields). None: not set."""

    priority: int | None = None
    weight: float = 1.0
    tokens_per_minute: int = 0


@dataclass(frozen=True, slots=True)
class Classification:
    tenant: str
    priority: int
    weight: float
    tokens_per_minute: int

    def flow_request(
        self,
        *,
        size_bytes: int = 0,
        affinity_key: str | None = None,
        model: str = "",
        request_id: str = "",
        candidates: frozenset[str] | None = None,
    ) -> FlowRequest:
        """The dispatcher's view of a request in this tenant and band (both front ends build it here)."""
        return FlowRequest(
            tenant=self.tenant,
            priority=self.priority,
            weight=self.weight,
            tokens_per_minute=self.tokens_per_minute,
            size_bytes=size_bytes,
            affinity_key=affinity_key,
            model=model,
            request_id=request_id,
            candidates=candidates,
        )


def engine_priority(band: int, light: bool) -> int:
    """The engine priority (vLLM's: lower is served first) of a request in `band` (higher is better):
    every band ahead of the bands below it, and inside a band a light tenant (within its weighted share
    of recent arrivals) ahead of heavy ones, so its requests are not stuck behind theirs in the engine."""
    return -2 * band + (0 if light else 1)


def parse_priority(value: str) -> int:
    """An integer band, or one of the names in PRIORITY_NAMES. ValueError otherwise."""
    text = value.strip().lower()
    if text in PRIORITY_NAMES:
        return PRIORITY_NAMES[text]
    return int(text)


def classify(
    *,
    key_name: str | None,
    policy: TenantPolicy | None,
    objective: str | None,
    fairness_id: str | None,
    objectives: Mapping[str, int],
    default_priority: int = 0,
    tenant_policies: Mapping[str, TenantPolicy] | None = None,
) -> Classification:
    """The tenant is the API key's name when keys are on (a client cannot pose as another tenant), else
    the fairness-id header, else "". The policy is the key's, else the configured one of a tenant named
    by the fairness id (the EPP's `--tenant`: the gateway authenticates and sets that header). The band
    is the policy's priority when it sets one (a client cannot raise itself with a header), else the
    objective header mapped by the router's config, else the default."""
    tenant = key_name if key_name is not None else (fairness_id or "").strip()[:MAX_TENANT_CHARS]
    if policy is None and key_name is None and tenant_policies:
        policy = tenant_policies.get(tenant)
    pol = policy or TenantPolicy()
    if pol.priority is not None:
        priority = pol.priority
    elif objective and objective.strip() in objectives:
        priority = objectives[objective.strip()]
    else:
        priority = default_priority
    return Classification(tenant, priority, pol.weight, pol.tokens_per_minute)


POLICY_OPTIONS = ("priority", "weight", "tokens-per-minute")


def parse_policy(options: list[str]) -> TenantPolicy:
    """`[priority=P] [weight=W] [tokens-per-minute=N]` (an API key's options, an EPP tenant's). ValueError
    on an unknown option or a bad value."""
    fields: dict[str, str] = {}
    for opt in options:
        name, sep, value = opt.partition("=")
        if not sep or name not in POLICY_OPTIONS:
            raise ValueError(f"unknown option {name!r} ({', '.join(POLICY_OPTIONS)})")
        fields[name] = value
    weight = float(fields.get("weight", "1"))
    tpm = int(fields.get("tokens-per-minute", "0"))
    if not weight > 0 or tpm < 0:
        raise ValueError("weight must be > 0 and tokens-per-minute >= 0")
    prio = parse_priority(fields["priority"]) if "priority" in fields else None
    return TenantPolicy(prio, weight, tpm)


def parse_tenants(items: list[str]) -> dict[str, TenantPolicy]:
    """`ID [priority=P] [weight=W] [tokens-per-minute=N]` per item (the EPP's `--tenant` flags)."""
    out: dict[str, TenantPolicy] = {}
    for item in items:
        if not item.split():
            raise ValueError("--tenant needs an id: 'ID [priority=P] [weight=W] [tokens-per-minute=N]'")
        tenant, *options = item.split()
        try:
            out[tenant[:MAX_TENANT_CHARS]] = parse_policy(options)
        except ValueError as exc:
            raise ValueError(f"tenant {item!r}: {exc}") from exc
    return out


def parse_objectives(items: list[str]) -> dict[str, int]:
    """`NAME=BAND` pairs (the router's `--objective` flags)."""
    out: dict[str, int] = {}
    for item in items:
        name, sep, band = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"objective {item!r}: expected NAME=PRIORITY")
        try:
            out[name.strip()] = parse_priority(band)
        except ValueError as exc:
            raise ValueError(
                f"objective {item!r}: priority must be an integer or one of {', '.join(PRIORITY_NAMES)}"
            ) from exc
    return out
