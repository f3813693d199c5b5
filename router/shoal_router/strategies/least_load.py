"""LeastLoad: fewest outstanding requests, by power-of-two random choices.

Two endpoints are drawn at random and the one with fewer requests in flight wins. Against full least-load
it keeps several router replicas (each with only its own counts) from herding onto the same replica, and
it costs O(1) per pick.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from shoal_router.strategies.base import EndpointView, Pick, PickContext

_DEFAULT_RNG = random.Random()


class LeastLoad:
    name = "LeastLoad"
    needs_key = False

    def pick(self, endpoints: Sequence[EndpointView], ctx: PickContext) -> Pick:
        n = len(endpoints)
        if n == 1:
            return Pick(endpoints[0].id, "only endpoint")
        rng = ctx.rng or _DEFAULT_RNG
        if n == 2:
            a, b = endpoints[0], endpoints[1]
        else:
            i, j = rng.sample(range(n), 2)
            a, b = endpoints[i], endpoints[j]
        if a.inflight == b.inflight:
            chosen = a if rng.random() < 0.5 else b
        else:
            chosen = a if a.inflight < b.inflight else b
        other = b if chosen is a else a
        return Pick(chosen.id, f"p2c inflight {chosen.inflight} vs {other.inflight}")
