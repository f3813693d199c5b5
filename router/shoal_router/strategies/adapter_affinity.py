"""AdapterAffinity: requests for a LoRA adapter go to a replica that already holds it, within a load bound.

A replica runs at most `max_loras` adapters in its batch slots; using another costs a load (and the
eviction of the least recently used one). The router mirrors each replica's slots with the same LRU
(`SlotView`, fed by its own picks): an adapter request goes to the least loaded replica that holds the
adapter, as long as that replica stays within `load_factor` x the mean load. Otherwise (a cold adapter,
or every holder is over the bound) it goes where a load hurts least: a replica with a free slot first,
then the least loaded, ties broken by a hash of the adapter so cold adapters spread over the replicas
instead of one replica cycling through all of them. Requests for the base model (no key) go by least
load.
"""

from __future__ import annotations

import collections
import math
import zlib
from collections.abc import Sequence

from shoal_router.strategies.base import EndpointView, Pick, PickContext
from shoal_router.strategies.least_load import LeastLoad

MAX_TRACKED_ENDPOINTS = 4096  # bound on remembered replicas (ones gone long ago are dropped first)


class SlotView:
    """Per replica, the adapters it most recently ran (LRU, at most `slots`): what its slots hold."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._held: collections.OrderedDict[str, collections.OrderedDict[str, None]] = (
            collections.OrderedDict()
        )

    def holds(self, endpoint: str, adapter: str) -> bool:
        return adapter in self._held.get(endpoint, ())

    def free(self, endpoint: str) -> int:
        return self.slots - len(self._held.get(endpoint, ()))

    def use(self, endpoint: str, adapter: str) -> None:
        held = self._held.setdefault(endpoint, collections.OrderedDict())
        self._held.move_to_end(endpoint)
        held[adapter] = None
        held.move_to_end(adapter)
        while len(held) > self.slots:
            held.popitem(last=False)
        while len(self._held) > MAX_TRACKED_ENDPOINTS:
            self._held.popitem(last=False)


def _spread(adapter: str, endpoint: str) -> int:
    return zlib.crc32(f"{adapter}|{endpoint}".encode())


class AdapterAffinity:
    name = "AdapterAffinity"
    needs_key = False  # the key is the adapter name, set by the front end, not a prompt prefix

    def __init__(self, load_factor: float = 1.25, max_loras: int = 4) -> None:
        if load_factor < 1.0 or max_loras < 1:
            raise ValueError("load_factor must be >= 1 and max_loras >= 1")
        self.load_factor = load_factor
        self.view = SlotView(max_loras)
        self._least = LeastLoad()

    def pick(self, endpoints: Sequence[EndpointView], ctx: PickContext) -> Pick:
        key = ctx.key
        if key is None:
            return self._least.pick(endpoints, ctx)
        total = sum(e.inflight for e in endpoints)
        bound = math.ceil(self.load_factor * (total + 1) / len(endpoints))
        holders = [e for e in endpoints if self.view.holds(e.id, key) and e.inflight + 1 <= bound]
        if holders:
            chosen = min(holders, key=lambda e: (e.inflight, _spread(key, e.id)))
            reason = "adapter resident"
        else:
            chosen = min(
                endpoints,
                key=lambda e: (self.view.free(e.id) <= 0, e.inflight, _spread(key, e.id)),
            )
            reason = (
                "adapter cold: free slot" if self.view.free(chosen.id) > 0 else "adapter cold: least loaded"
            )
        self.view.use(chosen.id, key)
        return Pick(chosen.id, reason)
