"""The entry point's pools share one metrics registry: the held-at-zero gauge is their sum; `held()` is
the count per pool."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from shoal_router.config import RouterConfig
from shoal_router.flow.model import FlowRequest
from shoal_router.multimodel.gateway import ModelGateway

pytestmark = pytest.mark.unit


def pending_gauge(gw: ModelGateway) -> float:
    text = gw.metrics.render().decode()
    line = next(ln for ln in text.splitlines() if ln.startswith("shoal_router_pending_requests "))
    return float(line.split(" ")[1])


async def test_pending_is_summed_over_pools() -> None:
    gw = ModelGateway(RouterConfig(discovery="models", load_poll_interval_s=0, pending_timeout_s=5))
    async with aiohttp.ClientSession() as session:
        gw.session = session
        gw.set_pools({"a": [], "b": []}, {"model-a": "a", "model-b": "b"})  # both at zero replicas
        held = [asyncio.create_task(gw.pools[p].dispatcher.acquire(FlowRequest())) for p in ("a", "a", "b")]
        for _ in range(100):
            if pending_gauge(gw) == 3:
                break
            await asyncio.sleep(0.01)
        assert pending_gauge(gw) == 3  # not the last pool's own count (1)
        assert gw.held() == {"a": 2, "b": 1}  # per pool, for the autoscaler's wake poll
        assert gw.catalog.route("model-b") is not None and gw.catalog.route("model-b").endpoints is None  # type: ignore[union-attr]
        held[2].cancel()
        for _ in range(100):
            if pending_gauge(gw) == 2:
                break
            await asyncio.sleep(0.01)
        assert pending_gauge(gw) == 2
        assert gw.held() == {"a": 2}  # a pool holding nothing is left out
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        await gw.close()
