"""PrefixHash: consistent hashing with bounded loads (CHWBL) on a prompt prefix.

Requests sharing a prompt prefix go to the same replica, whose KV cache already holds that prefix. The
bound keeps a hot prefix from piling onto one replica: walking the ring clockwise from the key's hash, the
first endpoint whose in-flight count stays within `load_factor` x the average load (after adding this
request) takes it. With load_factor 1.25 no replica carries more than 25% above the mean.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Sequence
from functools import lru_cache

from shoal_router.strategies.base import EndpointView, Pick, PickContext

VIRTUAL_NODES = 100


def _hash(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big")


@lru_cache(maxsize=64)
def _ring(ids: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The ring for a set of endpoints (pure, memoised: the set changes rarely)."""
    points = sorted((_hash(f"{eid}#{v}"), eid) for eid in ids for v in range(VIRTUAL_NODES))
    return tuple(p for p, _ in points), tuple(e for _, e in points)


class PrefixHash:
    name = "PrefixHash"
    needs_key = True

    def __init__(self, load_factor: float = 1.25) -> None:
        if load_factor < 1.0:
            raise ValueError("load_factor must be >= 1")
        self.load_factor = load_factor

    def pick(self, endpoints: Sequence[EndpointView], ctx: PickContext) -> Pick:
        by_id = {e.id: e for e in endpoints}
        if len(by_id) == 1:
            return Pick(endpoints[0].id, "only endpoint")
        hashes, owners = _ring(tuple(sorted(by_id)))
        total = sum(e.inflight for e in endpoints)
        capacity = math.ceil(self.load_factor * (total + 1) / len(by_id))
        start = bisect.bisect(hashes, _hash(ctx.key or ""))
        seen: set[str] = set()
        for step in range(len(hashes)):
            eid = owners[(start + step) % len(hashes)]
            if eid in seen:
                continue
            seen.add(eid)
            if by_id[eid].inflight + 1 <= capacity:
                reason = "prefix owner" if len(seen) == 1 else f"owner over bound {capacity}, next on ring"
                return Pick(eid, reason)
            if len(seen) == len(by_id):
                break
        # Unreachable in theory (someone is always at or below the mean); be total anyway.
        least = min(endpoints, key=lambda e: e.inflight)
        return Pick(least.id, "all over bound; least loaded")
