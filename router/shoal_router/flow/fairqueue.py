"""The saturation queue: priority bands, weighted fair queuing across tenants within a band, bounded by
count and bytes. Pure data structure (no asyncio, no clock): the dispatcher owns the waiting.

Within a band each tenant's requests get virtual finish tags (start = max(band virtual time, the tenant's
last tag), finish = start + 1/weight), and the smallest tag goes first: a tenant sending 10x the requests
gets its weight's share, not 10x. Across bands, strict priority: a higher band always goes first. When the
queue is full, room is made by shedding the newest request of the lowest band below the newcomer's; failing
that, within the newcomer's band, the newest request of the tenant holding the most places (longest queue
drop), so a flood from one tenant cannot lock the others out of the queue either.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class Entry(Generic[T]):
    item: T
    tenant: str
    priority: int
    size: int
    tag: float
    seq: int
    alive: bool = True


@dataclass(slots=True)
class _Band(Generic[T]):
    heap: list[tuple[float, int, Entry[T]]] = field(default_factory=list)
    vtime: float = 0.0
    last_tag: dict[str, float] = field(default_factory=dict)
    live: int = 0
    per_tenant: dict[str, int] = field(default_factory=dict)  # live entries by tenant


@dataclass(slots=True)
class Admit(Generic[T]):
    """Result of `push`: the entry (None when refused) and whoever was shed to make room."""

    entry: Entry[T] | None
    shed: Entry[T] | None = None


class FairQueue(Generic[T]):
    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.count = 0
        self.bytes = 0
        self._bands: dict[int, _Band[T]] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return self.count

    def _fits(self, size: int) -> bool:
        return self.count + 1 <= self.max_count and self.bytes + size <= self.max_bytes

    def push(
        self, item: T, tenant: str, priority: int, weight: float, size: int, front: bool = False
    ) -> Admit[T]:
        """Queue `item`. When full, shed the newest entry of a lower band if that makes room, else refuse.
        `front`: a request that already waited once (it went out and the replica was busy) keeps its turn."""
        shed: Entry[T] | None = None
        if not self._fits(size):
            victim = self._newest_below(priority) or self._newest_of_heaviest(priority, tenant)
            if victim is None or not self._fits_without(victim, size):
                return Admit(None)
            self.remove(victim)
            shed = victim
        band = self._bands.setdefault(priority, _Band())
        if front:
            tag = band.vtime
        else:
            start = max(band.vtime, band.last_tag.get(tenant, 0.0))
            tag = start + 1.0 / max(weight, 1e-6)
            band.last_tag[tenant] = tag
        entry = Entry(item, tenant, priority, size, tag, next(self._seq))
        heapq.heappush(band.heap, (tag, entry.seq, entry))
        band.live += 1
        band.per_tenant[tenant] = band.per_tenant.get(tenant, 0) + 1
        self.count += 1
        self.bytes += size
        return Admit(entry, shed)

    def _fits_without(self, victim: Entry[T], size: int) -> bool:
        return self.count <= self.max_count and self.bytes - victim.size + size <= self.max_bytes

    def _newest_below(self, priority: int) -> Entry[T] | None:
        lower = sorted(p for p, b in self._bands.items() if p < priority and b.live)
        if not lower:
            return None
        band = self._bands[lower[0]]
        live = [e for _, _, e in band.heap if e.alive]
        return max(live, key=lambda e: e.seq) if live else None

    def _newest_of_heaviest(self, priority: int, tenant: str) -> Entry[T] | None:
        band = self._bands.get(priority)
        if band is None or not band.per_tenant:
            return None
        heavy, count = max(band.per_tenant.items(), key=lambda kv: kv[1])
        if heavy == tenant or count <= band.per_tenant.get(tenant, 0) + 1:
            return None  # the newcomer's tenant already holds (about) as many places: refuse it instead
        live = [e for _, _, e in band.heap if e.alive and e.tenant == heavy]
        return max(live, key=lambda e: e.seq) if live else None

    def remove(self, entry: Entry[T], served: bool = False) -> None:
        """Take an entry out (dispatched when `served`; else timed out, cancelled, shed). Idempotent."""
        if not entry.alive:
            return
        entry.alive = False
        band = self._bands[entry.priority]
        band.live -= 1
        left = band.per_tenant[entry.tenant] - 1
        if left:
            band.per_tenant[entry.tenant] = left
        else:
            del band.per_tenant[entry.tenant]
        self.count -= 1
        self.bytes -= entry.size
        if served and band.vtime < entry.tag:
            band.vtime = entry.tag  # virtual time advances with service
        self._compact(entry.priority, band)

    def _compact(self, priority: int, band: _Band[T]) -> None:
        while band.heap and not band.heap[0][2].alive:
            heapq.heappop(band.heap)
        if band.live == 0:
            # an idle band forgets its tenants: bounded memory, and nobody banks credit while absent
            del self._bands[priority]

    def ordered(self) -> Iterator[Entry[T]]:
        """Live entries in dispatch order: bands high to low, virtual finish tag within a band."""
        for priority in sorted(self._bands, reverse=True):
            band = self._bands[priority]
            for _, _, entry in sorted(band.heap):
                if entry.alive:
                    yield entry

    def head(self) -> Entry[T] | None:
        for priority in sorted(self._bands, reverse=True):
            band = self._bands[priority]
            if band.heap:
                return band.heap[0][2]
        return None

    def lowest_priority(self) -> int | None:
        return min(self._bands) if self._bands else None
