"""RoundRobin: the request number modulo the endpoints, sorted by id. The baseline a plain Service gives."""

from __future__ import annotations

from collections.abc import Sequence

from shoal_router.strategies.base import EndpointView, Pick, PickContext


class RoundRobin:
    name = "RoundRobin"
    needs_key = False

    def pick(self, endpoints: Sequence[EndpointView], ctx: PickContext) -> Pick:
        ordered = sorted(endpoints, key=lambda e: e.id)
        return Pick(ordered[ctx.seq % len(ordered)].id, "round-robin")
