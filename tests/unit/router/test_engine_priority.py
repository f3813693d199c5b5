"""Engine priorities (`--engine-priority`): the lease's priority from band and light/heavy tenant, the
router's x-shoal-priority header (a client's own is dropped), and the EPP's header mutation."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from shoal_router.config import from_args
from shoal_router.flow.classify import engine_priority
from shoal_router.flow.model import FlowRequest, LoadReport
from unit.epp.test_stream import CHAT as EPP_CHAT
from unit.epp.test_stream import ScriptedPicker, _body, _exchange, _headers, _set_headers, epp  # noqa: F401
from unit.router.fakes import running_router, upstreams
from unit.router.test_flow_dispatcher import make

pytestmark = pytest.mark.unit


def test_engine_priority_orders_bands_first_then_light_before_heavy() -> None:
    order = [(1, True), (1, False), (0, True), (0, False), (-1, True), (-1, False)]
    values = [engine_priority(band, light) for band, light in order]
    assert values == sorted(values) and len(set(values)) == len(values)  # strictly increasing: lower first
    assert engine_priority(0, True) == 0  # the default band's light tenants keep vLLM's default


async def test_leases_carry_the_engine_priority_only_when_enabled() -> None:
    _pool, off = make(["http://a"], LoadReport(0, 0, 32, 0))
    assert (await off.acquire(FlowRequest(tenant="x"))).engine_priority is None
    _pool, d = make(["http://a"], LoadReport(0, 0, 32, 0), engine_priority=True)
    noisy = [await d.acquire(FlowRequest(tenant="noisy")) for _ in range(10)]
    assert {x.engine_priority for x in noisy} == {1}  # alone: nobody to be light against
    quiet = await d.acquire(FlowRequest(tenant="quiet"))
    assert quiet.engine_priority == 0  # 1 of 11 recent arrivals: light
    heavy = await d.acquire(FlowRequest(tenant="noisy"))
    assert heavy.engine_priority == 1  # 11 of 12 against a half share: heavy, behind the quiet one
    high = await d.acquire(FlowRequest(tenant="noisy", priority=1))
    assert high.engine_priority == -1  # a higher band beats every lower one, heavy or not
    for lease in [*noisy, quiet, heavy, high]:
        lease.release()


async def test_router_sets_the_header_and_drops_a_clients() -> None:
    async with (
        upstreams(1) as (up,),
        running_router(upstream_urls=[up.url], load_poll_interval_s=0, engine_priority=True) as r,
        httpx.AsyncClient(base_url=r.url, timeout=30) as c,
    ):
        r.router.pool.report_load(up.url, LoadReport(0, 0, 8, 0))
        body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "priority": -100}
        headers = {"x-shoal-priority": "-100", "x-gateway-inference-objective": "chat"}
        assert (await c.post("/v1/chat/completions", json=body, headers=headers)).status_code == 200
        seen = up.requests[-1]
        assert seen["headers"]["x-shoal-priority"] == "1"  # overwritten: the router decides (a lone tenant)
        assert seen["body"]["priority"] == -100  # the body is forwarded untouched (the header wins)
    async with (
        upstreams(1) as (up,),
        running_router(upstream_urls=[up.url], load_poll_interval_s=0) as r,
        httpx.AsyncClient(base_url=r.url, timeout=30) as c,
    ):
        r.router.pool.report_load(up.url, LoadReport(0, 0, 8, 0))
        await c.post("/v1/chat/completions", json=body, headers=headers)
        assert "x-shoal-priority" not in {k.lower() for k in up.requests[-1]["headers"]}  # never a client's


def test_cli_flag() -> None:
    import argparse

    from shoal_router.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    ns = parser.parse_args(["router", "--upstream", "http://a", "--engine-priority"])
    assert from_args(ns).flow().engine_priority
    ns = parser.parse_args(["router", "--upstream", "http://a"])
    assert not from_args(ns).flow().engine_priority


async def test_epp_sets_or_removes_the_header(epp):  # noqa: F811
    stub, picker = epp
    body = json.dumps(EPP_CHAT).encode()
    client_headers = {":path": "/v1/chat/completions", "x-shoal-priority": "-9"}
    out = await _exchange(stub, [_headers(client_headers), _body(body, True)])
    mutation = out[0].request_headers.response.header_mutation
    assert list(mutation.remove_headers) == ["x-shoal-priority"]  # off: a client's copy never passes
    assert "x-shoal-priority" not in _set_headers(out[0])
    picker.engine_priority = 1
    out = await _exchange(stub, [_headers(client_headers), _body(body, True)])
    assert _set_headers(out[0])["x-shoal-priority"] == "1"  # on: overwritten with the core's value
    assert not out[0].request_headers.response.header_mutation.remove_headers


async def test_a_better_priority_overtakes_on_a_full_replica_one_per_worse_request() -> None:
    """#16: with every slot held by a low band, a high-band request goes to the replica at once (its
    engine serves it ahead, preempting one), as long as each overtaker is matched by a worse request."""
    _pool, d = make(["http://a"], LoadReport(0, 0, 2, 0), engine_priority=True, fair_reserve=0.0)
    low = [await d.acquire(FlowRequest(tenant="batch", priority=-1)) for _ in range(2)]  # full
    high = [await asyncio.wait_for(d.acquire(FlowRequest(tenant="chat", priority=1)), 0.5) for _ in range(2)]
    worst_high = max(x.engine_priority or 0 for x in high)
    assert worst_high < min(x.engine_priority or 0 for x in low) and d.queued == 0  # 2 worse: 2 pass
    third = asyncio.create_task(d.acquire(FlowRequest(tenant="chat", priority=1)))
    same = asyncio.create_task(d.acquire(FlowRequest(tenant="batch", priority=-1)))
    await asyncio.sleep(0.05)
    assert not third.done() and not same.done()  # no worse one left to displace; equals always wait
    for lease in low:
        lease.release()  # the worse ones finish: 2 in flight on 2 slots, still full
    await asyncio.sleep(0.05)
    assert not third.done()
    high[0].release()
    assert (await asyncio.wait_for(third, 1)).request.priority == 1  # the free slot, in band order
    for t in (same,):
        t.cancel()
    await asyncio.gather(same, return_exceptions=True)


async def test_inside_a_band_a_light_tenant_overtakes_the_heavy_flood_one_per_heavy_request() -> None:
    """A quiet tenant's request does not wait for the flood of its own band to free a slot: its engine
    priority is better than the heavy tenant's, so the engine would serve it first anyway."""
    _pool, d = make(["http://a"], LoadReport(0, 0, 2, 0), engine_priority=True, fair_reserve=0.0)
    noisy = [await d.acquire(FlowRequest(tenant="noisy")) for _ in range(2)]  # full, before anyone else
    assert {x.engine_priority for x in noisy} == {1}  # alone: not light against anyone
    quiet = await asyncio.wait_for(d.acquire(FlowRequest(tenant="quiet")), 0.5)  # its first request
    assert quiet.engine_priority == 0 and quiet.waited_s < 0.01
    flood = asyncio.create_task(d.acquire(FlowRequest(tenant="noisy")))
    second = asyncio.create_task(d.acquire(FlowRequest(tenant="quiet")))
    await asyncio.sleep(0.05)
    assert not flood.done()  # heavy over heavy: equal, it waits
    assert not second.done()  # half of the recent arrivals (a hair over, decayed): heavy now, it waits
    for lease in (*noisy, quiet):
        lease.release()
    for task in (flood, second):
        (await asyncio.wait_for(task, 1)).release()


async def test_a_lone_tenant_never_overtakes_its_own_requests() -> None:
    _pool, d = make(["http://a"], LoadReport(0, 0, 2, 0), engine_priority=True, fair_reserve=0.0)
    first = [await d.acquire(FlowRequest(tenant="only")) for _ in range(2)]
    more = asyncio.create_task(d.acquire(FlowRequest(tenant="only")))
    await asyncio.sleep(0.05)
    assert not more.done()  # equal priorities: it waits for a slot
    first[0].release()
    (await asyncio.wait_for(more, 1)).release()
    first[1].release()


async def test_without_engine_priorities_nothing_overtakes() -> None:
    _pool, d = make(["http://a"], LoadReport(0, 0, 1, 0), fair_reserve=0.0)
    low = await d.acquire(FlowRequest(tenant="batch", priority=-1))
    high = asyncio.create_task(d.acquire(FlowRequest(tenant="chat", priority=1)))
    await asyncio.sleep(0.05)
    assert not high.done()  # the engine is fcfs: it would queue behind the low one anyway
    low.release()
    (await asyncio.wait_for(high, 1)).release()
