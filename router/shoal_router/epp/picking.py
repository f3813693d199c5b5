"""What the EPP front end needs from the picking core, as a narrow protocol.

The EPP never picks, queues, ejects or discovers by itself: `Picker` is implemented by an adapter over
the router's shared core (see `core_adapter.py`). Endpoint ids here are the gateway's `ip:port`.
"""

from __future__ import annotations

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


@dataclass(frozen=True, slots=True)
class Picked:
    endpoints: tuple[str, ...]  # primary first, then fallbacks (ip:port)
    reason: str
    held_s: float = 0.0
    token: Any = None  # the core's handle on this request (its lease); handed back to served / finish


class Refused(Exception):
    """No endpoint for this request: answered with an ImmediateResponse."""

    def __init__(self, status: int, message: str, code: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.retry_after_s = retry_after_s

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

    def finish(self, picked: Picked, status: int | None) -> None:
        """The exchange ended: HTTP `status`, or None when no response was seen."""
        ...

    def ready(self) -> bool:
        """Discovery has synced (gRPC readiness)."""
        ...
