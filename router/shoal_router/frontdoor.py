"""The HTTP front end's admission steps before the core: who is calling (API key), the per-key request
rate, the request's flow metadata (tenant, band, quota) for the dispatcher, and which replicas may serve
a LoRA adapter's request."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from shoal_router.auth import ApiKeys, KeyInfo, bearer_token
from shoal_router.endpoints import EndpointPool
from shoal_router.flow.classify import FAIRNESS_HEADER, OBJECTIVE_HEADER, classify
from shoal_router.flow.model import FlowRequest, Rejected
from shoal_router.limits import RateLimiter
from shoal_router.prompt import request_model

MAX_REQUEST_ID_CHARS = 128  # as the model-server caps it: a client cannot bloat logs and headers


@dataclass(frozen=True, slots=True)
class Caller:
    identity: str  # rate-limit bucket: the key id, or the client address without keys
    key: KeyInfo | None


def authenticate(keys: ApiKeys, headers: Mapping[str, str], remote: str | None) -> Caller | Rejected:
    if not keys.enabled:
        return Caller(remote or "unknown", None)
    token = bearer_token(headers.get("Authorization"), headers.get("api-key"))
    info = keys.lookup(token) if token else None
    if info is None:
        return Rejected(
            401,
            "invalid_api_key",
            "A valid API key is required: send 'Authorization: Bearer <key>'.",
            extra_headers={"WWW-Authenticate": "Bearer"},
        )
    return Caller(info.id, info)


def rate_limit(limiter: RateLimiter, caller: Caller) -> Rejected | None:
    if not limiter.enabled:
        return None
    wait = limiter.check(caller.identity)
    if wait <= 0:
        return None
    return Rejected(
        429, "rate_limit_exceeded", "Rate limit exceeded for this API key.", max(1, math.ceil(wait))
    )


def flow_request(
    caller: Caller,
    headers: Mapping[str, str],
    objectives: Mapping[str, int],
    *,
    size_bytes: int,
    affinity_key: str | None,
    request_id: str,
) -> FlowRequest:
    c = classify(
        key_name=caller.key.name if caller.key else None,
        policy=caller.key.policy if caller.key else None,
        objective=headers.get(OBJECTIVE_HEADER),
        fairness_id=headers.get(FAIRNESS_HEADER),
        objectives=objectives,
    )
    return c.flow_request(size_bytes=size_bytes, affinity_key=affinity_key, request_id=request_id)


def request_id(headers: Mapping[str, str], make: str) -> str:
    """The client's X-Request-ID (printable ASCII, capped), or `make`."""
    rid = (headers.get("X-Request-ID") or "")[:MAX_REQUEST_ID_CHARS]
    if rid and all(32 < ord(ch) < 127 for ch in rid):
        return rid
    return make


def adapter_scope(pool: EndpointPool, needs_key: bool, req: FlowRequest, body: bytes) -> FlowRequest:
    """`scope_to_adapter` for an HTTP body (parsed again only when some replica serves adapters)."""
    if not pool.serves_adapters():
        return req
    return scope_to_adapter(pool, needs_key, req, request_model(body))


def scope_to_adapter(pool: EndpointPool, needs_key: bool, req: FlowRequest, model: str | None) -> FlowRequest:
    """A request for a LoRA adapter goes only to the replicas that list it in `GET /load`: a new replica
    turns Ready before the operator has loaded its adapters and must not answer 404 meanwhile. When no
    replica lists the name (the base model, or an unknown name) any replica may answer it; a subset the
    request already has (the gateway's hint) is narrowed, never widened. The adapter's name is the
    affinity key unless the strategy hashes prompts (AdapterAffinity keeps it resident)."""
    holders = pool.adapter_holders(model) if model else None
    if model is None or holders is None:
        return req
    if req.candidates is not None:
        holders = holders & req.candidates
        if not holders:
            return req
    key = req.affinity_key if needs_key else model
    return replace(req, model=model, candidates=holders, affinity_key=key)
