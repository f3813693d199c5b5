"""AdapterAffinity: requests for one LoRA adapter go to the replicas that already hold it.

A replica has `max-loras` adapter slots; an adapter missing from them costs a load (and an eviction).
Keyed by the adapter's name (the request's `model`), consistent hashing with bounded loads gives each
adapter a home replica, so its weights stay resident there, and spreads the adapters evenly over the
replicas, so with more adapters than slots no replica cycles through all of them (thrashing). The bound
(`load_factor` x the mean load) sends a hot adapter's overflow to the next replica on the ring, which
then holds it too. Requests for the base model (no key) go by least load.
"""

from __future__ import annotations

from collections.abc import Sequence

from shoal_router.strategies.base import EndpointView, Pick, PickContext
from shoal_router.strategies.least_load import LeastLoad
from shoal_router.strategies.prefix_hash import PrefixHash


class AdapterAffinity:
    name = "AdapterAffinity"
    needs_key = False  # the key is the adapter name, set by the front end, not a prompt prefix

    def __init__(self, load_factor: float = 1.25) -> None:
        self._hash = PrefixHash(load_factor=load_factor)
        self._least = LeastLoad()

    def pick(self, endpoints: Sequence[EndpointView], ctx: PickContext) -> Pick:
        if ctx.key is None:
            return self._least.pick(endpoints, ctx)
        pick = self._hash.pick(endpoints, ctx)
        reason = "adapter home" if pick.reason == "prefix owner" else pick.reason
        return Pick(pick.endpoint, reason)
