"""What the EPP front end needs from the picking core, as a narrow protocol.

The EPP never picks, queues, ejects or discovers by itself: `Picker` is implemented by an adapter over
the router's shared core (see `core_adapter.py`). Endpoint ids here are the gateway's `ip:port`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class PickRequest:
    request_id: str
    model: str = ""
    key: str | None = None  # prompt prefix: the affinity key
    stream: bool = False
    subset: frozenset[str] | None = None  # the gateway's candidate endpoints (ip:port), None: no hint
    headers: dict[str, str] = field(default_factory=dict)  # for priority / fairness ids
    size_bytes: int = 0  # the body's size (the queue is bounded in bytes)


@dataclass(frozen=True, slots=True)
class Picked:
    endpoints: tuple[str, ...]  # primary first, then fallbacks (ip:port)
    reason: str
    held_s: float = 0.0
    token: Any = None  # the core's handle on this request (its lease); handed back to served / finish
    metered: bool = False  # the tenant has a token quota: count the answer's tokens for `finish`
    engine_priority: int | None = None  # x-shoal-priority for the replica; None: engine priorities off


class Refused(Exception):
    """No endpoint for this request: answered with an ImmediateResponse."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        retry_after_s: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.retry_after_s = retry_after_s
        self.headers = dict(headers or {})  # e.g. a token quota's x-ratelimit-* headers

    @property
    def kind(self) -> str:
        return "rate_limit_error" if self.status == 429 else "server_error"


class Picker(Protocol):
    async def pick(self, req: PickRequest) -> Picked:
        """Choose endpoints (holding, bounded, while none is ready); raises `Refused`. The primary is
        counted in flight until `finish`."""
        ...

    def served(self, picked: Picked, served: str) -> None:
        """The gateway reports that `served` answered instead of the primary (it fell back)."""
        ...

    def answer_headers(self, picked: Picked) -> dict[str, str]:
        """Headers added to the answer (the tenant's x-ratelimit-* when it has a token quota)."""
        ...

    def finish(self, picked: Picked, status: int | None, tokens: int = 0) -> None:
        """The exchange ended: HTTP `status`, or None when no response was seen; `tokens` the answer
        used (prompt + completion), charged to the tenant's quota when `picked.metered`."""
        ...

    def ready(self) -> bool:
        """Discovery has synced (gRPC readiness)."""
        ...
