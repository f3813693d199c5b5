"""Fair-share reserve: the last few free slots are kept for tenants below their fair share.

Queue order alone (weighted fair queuing) decides who goes *next*, but a quiet tenant arriving while every
slot is busy still waits for a slot to free, which under a flood can take most of a request's service
time. So while several tenants are active, a tenant already holding its weighted share of the replicas'
slots may not take the last `reserve` free ones; a tenant below its share takes them at once. With one
active tenant the share is everything and nothing is held back. Pure functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def reserve_slots(capacity: int, fraction: float) -> int:
    """Slots held back for under-share tenants (at least one when enabled)."""
    if fraction <= 0 or capacity <= 1:
        return 0
    return max(1, math.ceil(capacity * fraction))


def may_take(
    inflight: int, weight: float, active_weight: float, capacity: int, free: int, reserve: int
) -> bool:
    """May a tenant with `inflight` requests out (weight `weight`, `active_weight` the sum over active
    tenants) take one of `free` slots out of `capacity`?"""
    if free <= 0:
        return False
    if reserve <= 0 or free > reserve or active_weight <= weight:
        return True
    share = capacity * weight / active_weight
    return inflight + 1 <= share


@dataclass(slots=True)
class Activity:
    """Tenants seen within `window_s`, their weights and their requests in flight."""

    window_s: float = 2.0
    last_seen: dict[str, tuple[float, float]] = field(default_factory=dict)  # tenant -> (time, weight)
    inflight: dict[str, int] = field(default_factory=dict)

    def seen(self, tenant: str, weight: float, now: float) -> None:
        self.last_seen[tenant] = (now, weight)

    def active_weight(self, now: float) -> float:
        cutoff = now - self.window_s
        stale = [t for t, (at, _) in self.last_seen.items() if at < cutoff and not self.inflight.get(t)]
        for t in stale:  # bounded memory: only recently active tenants are kept
            del self.last_seen[t]
        return sum(w for _, w in self.last_seen.values())

    def started(self, tenant: str) -> None:
        self.inflight[tenant] = self.inflight.get(tenant, 0) + 1

    def finished(self, tenant: str) -> None:
        left = self.inflight.get(tenant, 0) - 1
        if left > 0:
            self.inflight[tenant] = left
        else:
            self.inflight.pop(tenant, None)
