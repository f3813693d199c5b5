"""Fair-share reserve: the last few free slots are kept for tenants below their fair share.

Queue order alone (weighted fair queuing) decides who goes *next*, but a quiet tenant arriving while every
slot is busy still waits for a slot to free, which under a flood can take most of a request's service
time. So while several tenants are active, a tenant already holding its weighted share of the replicas'
slots may not take the last `reserve` free ones; a tenant below its share takes them at once. With one
active tenant the share is everything and nothing is held back. Pure functions.

The reserve is sized by demand: at least the configured floor, and enough for the *protected* tenants (a
higher band than the taker's, or the same band and *light*) to get back to their recent peak of requests
in flight, plus one, capped at a share of all slots. A tenant is light while its share of recent arrivals
(decayed over the window) is within its weighted share: it is never held back by the reserve, even in a
burst above its share of slots (a slow engine makes a light tenant's requests pile up too). A quiet
tenant whose requests come in bursts of three then finds three free slots, and the flood keeps fewer
requests in the engine, whose batch (and so everyone's time to first token) is smaller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def reserve_slots(capacity: int, fraction: float) -> int:
    """Slots held back for under-share tenants (at least one when enabled)."""
    if fraction <= 0 or capacity <= 1:
        return 0
    return max(1, math.ceil(capacity * fraction))


def demand_reserve(floor: int, headroom: int, capacity: int, max_fraction: float) -> int:
    """Slots held back: the protected tenants' `headroom` (their recent peak minus what they have in
    flight) plus one, at least `floor`, at most `max_fraction` of `capacity` (0: the floor alone)."""
    if max_fraction <= 0 or capacity <= 1:
        return floor
    cap = max(floor, math.floor(capacity * max_fraction))
    return max(floor, min(cap, headroom + 1))


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
    """Tenants seen within `window_s`: their weights, bands, requests in flight and recent peak of them."""

    window_s: float = 10.0
    last_seen: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # (time, weight, band)
    inflight: dict[str, int] = field(default_factory=dict)
    peaks: dict[str, tuple[int, float]] = field(default_factory=dict)  # tenant -> (peak in flight, since)
    arrivals: dict[str, tuple[float, float]] = field(default_factory=dict)  # tenant -> (decayed count, at)

    def seen(self, tenant: str, weight: float, now: float, priority: int = 0) -> None:
        self.last_seen[tenant] = (now, weight, priority)
        self.arrivals[tenant] = (self._arrived(tenant, now) + 1.0, now)

    def _arrived(self, tenant: str, now: float) -> float:
        count, at = self.arrivals.get(tenant, (0.0, now))
        return count * math.exp(-max(0.0, now - at) / self.window_s)

    def _totals(self, now: float) -> tuple[float, float]:
        """(decayed arrivals, weight) summed over the active tenants."""
        total_weight = self.active_weight(now)
        return sum(self._arrived(t, now) for t in self.last_seen), total_weight

    def light(self, tenant: str, now: float, totals: tuple[float, float] | None = None) -> bool:
        """Is the tenant's share of recent arrivals within its weighted share of the active tenants?"""
        total, total_weight = totals or self._totals(now)
        if tenant not in self.last_seen or total <= 0 or total_weight <= 0:
            return True
        return self._arrived(tenant, now) / total <= self.last_seen[tenant][1] / total_weight

    def light_among_others(self, tenant: str, now: float) -> bool:
        """Light, and another tenant active to be light against: a lone tenant's requests are all alike
        (its engine priorities too, so it never overtakes its own requests)."""
        self.active_weight(now)  # forgets the tenants gone quiet
        return any(t != tenant for t in self.last_seen) and self.light(tenant, now)

    def active_weight(self, now: float) -> float:
        cutoff = now - self.window_s
        stale = [t for t, (at, _, _) in self.last_seen.items() if at < cutoff and not self.inflight.get(t)]
        for t in stale:  # bounded memory: only recently active tenants are kept
            del self.last_seen[t]
            self.peaks.pop(t, None)
            self.arrivals.pop(t, None)
        return sum(w for _, w, _ in self.last_seen.values())

    def started(self, tenant: str, now: float = 0.0) -> None:
        n = self.inflight[tenant] = self.inflight.get(tenant, 0) + 1
        peak, since = self.peaks.get(tenant, (0, now))
        if n >= peak or now - since > self.window_s:  # a peak older than the window is forgotten
            self.peaks[tenant] = (n, now)

    def headroom(self, taker: str, priority: int, now: float, capacity: int) -> int:
        """How many more requests the tenants protected from `taker` (band `priority`) had in flight at
        their recent peak than now: those above its band, and the light ones of its band."""
        room, totals = 0, self._totals(now)
        for tenant, (_, _, band) in self.last_seen.items():
            if tenant == taker or band < priority:
                continue
            peak, since = self.peaks.get(tenant, (0, now))
            if now - since > self.window_s:
                peak = 0
            if band > priority or self.light(tenant, now, totals):
                room += max(0, peak - self.inflight.get(tenant, 0))
        return room

    def finished(self, tenant: str) -> None:
        left = self.inflight.get(tenant, 0) - 1
        if left > 0:
            self.inflight[tenant] = left
        else:
            self.inflight.pop(tenant, None)
