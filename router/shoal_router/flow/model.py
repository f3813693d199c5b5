"""Value types of the flow-control core: what a front end hands in, what it gets back."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class FlowConfig:
    """Bounds and timings of the dispatcher (the HTTP router builds it from its flags; the EPP likewise)."""

    max_queued: int = 1024  # requests waiting in the router (saturation queue and hold-at-zero together)
    max_queued_bytes: int = 256 * 1024 * 1024  # their bodies, summed
    queue_timeout_s: float = 60.0  # longest wait for capacity while some replica is ready (then 429)
    hold_timeout_s: float = 300.0  # longest wait while no replica is ready (then 503)
    hold_retry_after_s: int = 5  # Retry-After when the hold queue is full
    replica_queue: int = 0  # requests a replica may queue beyond its maxConcurrency before it counts as full
    busy_hold_s: float = (
        0.25  # a replica that answered 429 takes nothing new for this long (or a fresh report)
    )
    load_stale_s: float = 2.0  # reports older than this no longer count other senders' load
    tick_s: float = 0.05  # re-evaluation period while requests wait (busy marks expire without an event)
    fair_reserve: float = 0.25  # share of slots kept for under-share tenants while several are active
    fair_reserve_max: float = (
        0.5  # the reserve grows with protected tenants' recent demand up to this (0: fixed)
    )
    # A tenant counts as active this long after its last request. Long against a quiet tenant's gaps:
    # forgotten, it loses its reserve, the flood fills every slot, and its next request waits for one.
    fair_window_s: float = 10.0
    engine_priority: bool = False  # leases carry an engine priority (band, then light before heavy)


class Outcome(enum.Enum):
    """What happened to one attempt on a leased endpoint, as the front end saw it."""

    SUCCESS = "success"  # the replica answered (any status that is not one of the below)
    BUSY = "busy"  # the replica answered 429: alive but full; the request may wait and go again
    CONNECT_FAILED = (
        "connect_failed"  # refused / reset / dropped before an answer: ejected until a probe works
    )
    UPSTREAM_ERROR = "upstream_error"  # 502/503/504 or a broken stream: counts towards outlier ejection
    TIMEOUT = "timeout"  # no response headers in time: counts towards outlier ejection
    CANCELLED = "cancelled"  # the client went away: says nothing about the replica


@dataclass(frozen=True, slots=True)
class LoadReport:
    """A replica's own view of its load (model-server `X-Shoal-*` headers or `GET /load`)."""

    inflight: int
    queued: int
    max_concurrency: int
    max_queue: int
    ready: bool = True


@dataclass(frozen=True, slots=True)
class FlowRequest:
    """Request metadata a front end extracts. Everything the dispatcher decides on, nothing it forwards."""

    tenant: str = ""  # fairness id: API key name, x-gateway-inference-fairness-id, or ""
    priority: int = 0  # band: higher is dispatched first, lower is shed first
    weight: float = 1.0  # share of its band under saturation (weighted fair queuing)
    tokens_per_minute: int = 0  # the tenant's token quota (0: none)
    size_bytes: int = 0  # body size (the queue is bounded in bytes too)
    deadline: float | None = None  # absolute time on the dispatcher's clock; None: the config's timeouts
    affinity_key: str | None = None  # prompt prefix for affinity strategies
    model: str = ""
    request_id: str = ""
    candidates: frozenset[str] | None = None  # only these endpoint ids (the gateway's subset hint)


@dataclass(slots=True)
class Rejected(Exception):
    """A typed refusal a front end renders as-is: HTTP status, OpenAI-style error, Retry-After."""

    status: int
    code: str  # queue_full, shed, queue_timeout, tokens_quota, no_replica_ready, no_replica_queue_full, ...
    message: str
    retry_after_s: int | None = None
    extra_headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)

    @property
    def kind(self) -> str:
        return "rate_limit_error" if self.status == 429 else "server_error"

    def body(self) -> bytes:
        err = {"message": self.message, "type": self.kind, "param": None, "code": self.code}
        return json.dumps({"error": err}).encode()

    def headers(self) -> dict[str, str]:
        out = dict(self.extra_headers)
        if self.retry_after_s is not None:
            out["Retry-After"] = str(self.retry_after_s)
        out["Content-Type"] = "application/json"
        return out


class FlowMetrics(Protocol):
    def flow_queued(self, priority: int, tenant: str, delta: int) -> None: ...
    def flow_dispatched(self, priority: int, tenant: str, wait_s: float) -> None: ...
    def flow_shed(self, priority: int, tenant: str, reason: str) -> None: ...
    def set_pending(self, value: int) -> None: ...


class NoFlowMetrics:
    def flow_queued(self, priority: int, tenant: str, delta: int) -> None:
        pass

    def flow_dispatched(self, priority: int, tenant: str, wait_s: float) -> None:
        pass

    def flow_shed(self, priority: int, tenant: str, reason: str) -> None:
        pass

    def set_pending(self, value: int) -> None:
        pass
