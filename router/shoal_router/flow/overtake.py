"""Overtaking a full replica with a better engine priority (engine priorities on; #16).

A replica whose engine schedules by priority (vLLM's `--scheduling-policy priority`, the sim engine's
`priority`) serves a better request ahead of worse ones it has already admitted, preempting one when its
batch is full. A router that holds a high-band request while every slot holds low-band ones makes it wait
for a completion the engine would not have made it wait for: in #16's noisy-neighbour benchmark (60 s
phases) 6 of 59 high-band requests waited over 1 s in the router, which set their p95.

So a request may go to a full replica while this router has more requests of a lower priority band in
flight there than the replica is over its limit: each overtaking request is matched by a lower-band one
it displaces, and the overflow stays bounded by this router's own lower-band requests. The model-server
admits it past `maxConcurrency` because its engine priority is better (`shoal_server.admission.
may_overtake`). Bands only: inside a band the light/heavy engine priorities order the engine's queue,
but overtaking there made the light tenant's p95 worse in the 60 s benchmark (6.6x of alone against 2.1x),
so within a band requests wait for a slot in fair-queuing order.
"""

from __future__ import annotations

import collections


class InflightBands:
    """This router's in-flight requests per endpoint and priority band (higher is better)."""

    def __init__(self) -> None:
        self._by_endpoint: dict[str, collections.Counter[int]] = {}

    def add(self, endpoint: str, band: int) -> None:
        self._by_endpoint.setdefault(endpoint, collections.Counter())[band] += 1

    def remove(self, endpoint: str, band: int) -> None:
        counts = self._by_endpoint.get(endpoint)
        if counts is None:
            return
        counts[band] -= 1
        if counts[band] <= 0:
            del counts[band]
        if not counts:
            del self._by_endpoint[endpoint]

    def below(self, endpoint: str, band: int) -> int:
        """Requests in flight on `endpoint` in a lower band than `band`."""
        counts = self._by_endpoint.get(endpoint)
        return sum(n for b, n in counts.items() if b < band) if counts else 0


def may_overtake(lower: int, overflow: int | None) -> bool:
    """Whether a request may go to a full replica, with `lower` of this router's requests there in a
    lower band and the replica `overflow` requests past its limit (None: unknown or busy)."""
    return overflow is not None and lower > overflow
