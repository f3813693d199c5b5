"""Overtaking a full replica with a better engine priority (engine priorities on; #16).

A replica whose engine schedules by priority (vLLM's `--scheduling-policy priority`, the sim engine's
`priority`) serves a better request ahead of worse ones it has already admitted, preempting one when its
batch is full. A router that holds a better request while every slot holds worse ones makes it wait for a
completion the engine would not have made it wait for: in #16's noisy-neighbour benchmark (60 s phases)
6 of 59 high-band requests waited over 1 s in the router, which set their p95.

So a request may go to a full replica while this router has more requests of a strictly worse engine
priority in flight there than the replica is over its limit: each overtaking request is matched by a worse
one it displaces, and the overflow stays bounded by this router's own worse requests. The model-server
admits it past `maxConcurrency` by the same rule (`shoal_server.admission.may_overtake`).

Engine priorities order bands first, then, inside a band, a light tenant ahead of heavy ones
(`classify.engine_priority`), so a light tenant overtakes the flood of its own band too. That needs the
light/heavy split to be stable: with a 2 s activity window a quiet tenant was forgotten between its
requests, the flood was then "light" as well and overtook its own requests, and the quiet tenant's p95
got worse (6.6x of alone). With the window at 10 s, and a lone tenant never light (nothing to be light
against), it does not.
"""

from __future__ import annotations

import collections


class InflightPriorities:
    """This router's in-flight requests per endpoint and engine priority (lower is better)."""

    def __init__(self) -> None:
        self._by_endpoint: dict[str, collections.Counter[int]] = {}

    def add(self, endpoint: str, priority: int) -> None:
        self._by_endpoint.setdefault(endpoint, collections.Counter())[priority] += 1

    def remove(self, endpoint: str, priority: int) -> None:
        counts = self._by_endpoint.get(endpoint)
        if counts is None:
            return
        counts[priority] -= 1
        if counts[priority] <= 0:
            del counts[priority]
        if not counts:
            del self._by_endpoint[endpoint]

    def worse_than(self, endpoint: str, priority: int) -> int:
        """Requests in flight on `endpoint` with a strictly worse engine priority than `priority`."""
        counts = self._by_endpoint.get(endpoint)
        return sum(n for p, n in counts.items() if p > priority) if counts else 0


def may_overtake(worse: int, overflow: int | None) -> bool:
    """Whether a request may go to a full replica, with `worse` of this router's requests there at a
    strictly worse priority and the replica `overflow` requests past its limit (None: unknown or busy)."""
    return overflow is not None and worse > overflow
