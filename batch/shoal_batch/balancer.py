"""Picking an endpoint for each attempt: round-robin or least in flight. Pure (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Balance(StrEnum):
    ROUND_ROBIN = "round-robin"
    LEAST_INFLIGHT = "least-inflight"


@dataclass(slots=True)
class Endpoint:
    base_url: str  # e.g. http://127.0.0.1:8000 (without /v1)
    inflight: int = 0
    sent: int = 0
    failures: int = 0


def normalise_base_url(url: str) -> str:
    """``http://h:8000``, ``http://h:8000/`` and ``http://h:8000/v1`` all mean the same service."""
    base = url.strip().rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    if "://" not in base:
        base = "http://" + base
    return base


class Balancer:
    """Chooses among endpoints; ``avoid`` (the endpoint that just failed) is skipped when another exists."""

    def __init__(self, urls: list[str], policy: Balance = Balance.ROUND_ROBIN) -> None:
        if not urls:
            raise ValueError("at least one endpoint is required")
        self.endpoints = [Endpoint(normalise_base_url(u)) for u in urls]
        self.policy = policy
        self._next = 0

    def pick(self, avoid: Endpoint | None = None) -> Endpoint:
        eps = self.endpoints
        n = len(eps)
        if n == 1:
            return eps[0]
        start = self._next
        self._next = (self._next + 1) % n
        if self.policy is Balance.ROUND_ROBIN:
            chosen = eps[start]
            if chosen is avoid:
                chosen = eps[(start + 1) % n]
            return chosen
        best: Endpoint | None = None
        for i in range(n):  # rotate the scan start so ties are spread evenly
            ep = eps[(start + i) % n]
            if ep is avoid:
                continue
            if best is None or ep.inflight < best.inflight:
                best = ep
        return best if best is not None else eps[start]

    def acquire(self, ep: Endpoint) -> None:
        ep.inflight += 1
        ep.sent += 1

    def release(self, ep: Endpoint, *, failed: bool = False) -> None:
        ep.inflight -= 1
        if failed:
            ep.failures += 1
