"""PrefixLoad: prefix-cache affinity weighed against load.

The strategy remembers, per endpoint, which prompt-prefix blocks it was sent recently (a bounded LRU of
chained block hashes: block i's hash covers the whole prefix up to it, as vLLM's prefix cache keys its KV
blocks). For a new request each endpoint scores

    cost = inflight - prefix_weight * (matched leading blocks / blocks in the prompt)

and the cheapest endpoint wins: a full prefix hit is worth `prefix_weight` requests of queue. Endpoints
more than `load_factor` x the mean load (after this request) are not eligible while another is, so one
hot prefix spreads over more replicas instead of piling onto its owner (the llm-d / KubeAI hot-spot
complaint). The index is an approximation of the replicas' caches: it never reads them.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import OrderedDict
from collections.abc import Sequence

from shoal_router.strategies.base import EndpointView, Pick, PickContext

BLOCK_CHARS = 64  # ~16 tokens: the granularity of prefix matching
_DEFAULT_RNG = random.Random()


def block_hashes(key: str, block_chars: int = BLOCK_CHARS) -> list[bytes]:
    """Chained hashes of the key's full blocks (a trailing partial block is ignored, as in vLLM)."""
    out: list[bytes] = []
    prev = b""
    for i in range(0, len(key) - block_chars + 1, block_chars):
        prev = hashlib.blake2b(prev + key[i : i + block_chars].encode(), digest_size=8).digest()
        out.append(prev)
    return out


def matched_blocks(blocks: Sequence[bytes], cached: OrderedDict[bytes, None] | None) -> int:
    """How many leading blocks an endpoint holds (chained hashes: stop at the first miss)."""
    if not cached:
        return 0
    n = 0
    for b in blocks:
        if b not in cached:
            break
        n += 1
    return n


def choose(
    endpoints: Sequence[EndpointView],
    hits: dict[str, float],
    prefix_weight: float,
    load_factor: float,
    rng: random.Random,
) -> tuple[EndpointView, str]:
    """Pure decision: bounded-load filter, then the lowest cost; ties broken at random."""
    total = sum(e.inflight for e in endpoints)
    bound = math.ceil(load_factor * (total + 1) / len(endpoints))
    eligible = [e for e in endpoints if e.inflight + 1 <= bound] or list(endpoints)
    costs = [(e.inflight - prefix_weight * hits.get(e.id, 0.0), e) for e in eligible]
    best = min(c for c, _ in costs)
    tied = [e for c, e in costs if c == best]
    chosen = tied[0] if len(tied) == 1 else rng.choice(tied)
    hit = hits.get(chosen.id, 0.0)
    return chosen, f"prefix hit {hit:.2f} inflight {chosen.inflight} (bound {bound})"


class PrefixLoad:
    name = "PrefixLoad"
    needs_key = True

    def __init__(
        self,
        prefix_weight: float = 4.0,
        load_factor: float = 1.5,
        blocks_per_endpoint: int = 16384,
        block_chars: int = BLOCK_CHARS,
    ) -> None:
        if prefix_weight < 0 or load_factor < 1.0 or blocks_per_endpoint < 1 or block_chars < 1:
            raise ValueError("prefix_weight >= 0, load_factor >= 1, blocks_per_endpoint and block_chars >= 1")
        self.prefix_weight = prefix_weight
        self.load_factor = load_factor
        self.capacity = blocks_per_endpoint
        self.block_chars = block_chars
        self._index: dict[str, OrderedDict[bytes, None]] = {}

    def pick(self, endpoints: Sequence[EndpointView], ctx: PickContext) -> Pick:
        if len(endpoints) == 1:
            self._remember(endpoints[0].id, block_hashes(ctx.key or "", self.block_chars))
            return Pick(endpoints[0].id, "only endpoint")
        blocks = block_hashes(ctx.key or "", self.block_chars)
        hits = {
            e.id: matched_blocks(blocks, self._index.get(e.id)) / len(blocks) if blocks else 0.0
            for e in endpoints
        }
        chosen, reason = choose(
            endpoints, hits, self.prefix_weight, self.load_factor, ctx.rng or _DEFAULT_RNG
        )
        self._remember(chosen.id, blocks)
        self._forget_missing(endpoints)
        return Pick(chosen.id, reason)

    def _remember(self, endpoint: str, blocks: list[bytes]) -> None:
        cache = self._index.setdefault(endpoint, OrderedDict())
        for b in blocks:
            cache[b] = None
            cache.move_to_end(b)
        while len(cache) > self.capacity:
            cache.popitem(last=False)

    def _forget_missing(self, endpoints: Sequence[EndpointView]) -> None:
        """Bound the index to endpoints seen recently (a replaced pod's cache is gone with it)."""
        if len(self._index) > 4 * len(endpoints) + 16:
            live = {e.id for e in endpoints}
            for eid in [k for k in self._index if k not in live]:
                del self._index[eid]
