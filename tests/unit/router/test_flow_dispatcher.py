"""The dispatcher: saturation queueing, priorities, shedding, deadlines, quotas and the ejection rules."""

from __future__ import annotations

import asyncio

import pytest
from shoal_router.endpoints import DiscoveredEndpoint, EjectionPolicy, EndpointPool
from shoal_router.flow.dispatcher import Dispatcher
from shoal_router.flow.lease import Lease
from shoal_router.flow.model import FlowConfig, FlowRequest, LoadReport, Outcome, Rejected
from shoal_router.strategies import LeastLoad

pytestmark = pytest.mark.unit


def make(urls: list[str], report: LoadReport | None = None, **cfg: object) -> tuple[EndpointPool, Dispatcher]:
    pool = EndpointPool(policy=EjectionPolicy(consecutive_failures=3, base_s=10))
    pool.update(DiscoveredEndpoint(u) for u in urls)
    config = FlowConfig(**{"tick_s": 0.01, **cfg})  # type: ignore[arg-type]
    d = Dispatcher(pool, LeastLoad(), config)
    if report is not None:
        for u in urls:
            pool.report_load(u, report)
    return pool, d


async def test_waits_for_a_free_slot_then_dispatches_in_order() -> None:
    _pool, d = make(["http://a"], LoadReport(0, 0, 2, 0))
    first = [await d.acquire(FlowRequest()) for _ in range(2)]
    waiting = [asyncio.create_task(d.acquire(FlowRequest(request_id=str(i)))) for i in range(3)]
    await asyncio.sleep(0.05)
    assert d.queued == 3 and not any(t.done() for t in waiting)
    first[0].report(Outcome.SUCCESS)
    first[0].release()
    lease = await asyncio.wait_for(waiting[0], 1)
    assert lease.request.request_id == "0" and lease.waited_s > 0
    assert d.queued == 2
    for t in waiting[1:]:
        t.cancel()
    await asyncio.gather(*waiting[1:], return_exceptions=True)
    assert d.queued == 0


async def test_queue_bound_gives_429_with_retry_after_and_deadline_429() -> None:
    _pool, d = make(["http://a"], LoadReport(0, 0, 1, 0), max_queued=1, queue_timeout_s=0.2)
    held = await d.acquire(FlowRequest())
    waiter = asyncio.create_task(d.acquire(FlowRequest()))
    await asyncio.sleep(0.02)
    with pytest.raises(Rejected) as full:
        await d.acquire(FlowRequest())
    assert full.value.status == 429 and full.value.code == "queue_full" and full.value.retry_after_s
    with pytest.raises(Rejected) as late:
        await waiter
    assert late.value.status == 429 and late.value.code == "queue_timeout"
    assert b'"type": "rate_limit_error"' in late.value.body()
    held.release()


async def test_higher_band_first_and_lowest_shed() -> None:
    _pool, d = make(["http://a"], LoadReport(0, 0, 1, 0), max_queued=2)
    held = await d.acquire(FlowRequest())
    low = asyncio.create_task(d.acquire(FlowRequest(priority=-1, tenant="low")))
    mid = asyncio.create_task(d.acquire(FlowRequest(priority=0, tenant="mid")))
    await asyncio.sleep(0.02)
    high = asyncio.create_task(d.acquire(FlowRequest(priority=1, tenant="high")))
    with pytest.raises(Rejected) as shed:
        await low
    assert shed.value.code == "shed" and shed.value.status == 429
    held.release()
    got = await asyncio.wait_for(high, 1)
    assert got.request.tenant == "high"
    got.release()
    assert (await asyncio.wait_for(mid, 1)).request.tenant == "mid"


async def test_busy_replica_is_not_dead_and_dead_is_never_used_while_one_lives() -> None:
    pool, d = make(["http://a", "http://b"])
    la = await d.acquire(FlowRequest(), exclude=["http://b"])
    assert la.endpoint == "http://a"
    lb = await d.acquire(FlowRequest(), exclude=["http://a"])
    lb.report(Outcome.CONNECT_FAILED)  # b refused: out at once
    lb.release()
    la.report(Outcome.BUSY)  # a is full, not dead
    la.release()
    # the request does not go to the ejected b: it waits for a's busy mark to pass
    lease = await asyncio.wait_for(d.acquire(FlowRequest(), requeue=True), 2)
    assert lease.endpoint == "http://a"
    # a retry that excludes a finds nobody else alive: typed, not a send to b
    with pytest.raises(Rejected) as ex:
        await d.acquire(FlowRequest(), exclude=["http://a"])
    assert ex.value.code == "exhausted"
    pool.probe_result("http://b", True)  # the poller reached b again
    assert sorted(v.id for v in pool.eligible()) == ["http://a", "http://b"]
    lease.release()


async def test_single_replica_probe_is_exclusive() -> None:
    """Issue 14: with one replica, the one-probe-at-a-time rule held only with two or more."""
    pool = EndpointPool(policy=EjectionPolicy(consecutive_failures=1, base_s=0.05))
    pool.update([DiscoveredEndpoint("http://a")])
    pool.report_failure("http://a", "x")
    await asyncio.sleep(0.06)
    assert [v.id for v in pool.eligible()] == ["http://a"]  # back-off over: a probe may go
    pool.acquire("http://a")
    assert pool.eligible() == []  # the probe is in flight: nothing else until it answers
    pool.release("http://a")


async def test_hold_at_zero_counts_pending_and_times_out_503() -> None:
    pool, d = make([], hold_timeout_s=0.1)
    pool.update([DiscoveredEndpoint("http://a", ready=False)])
    task = asyncio.create_task(d.acquire(FlowRequest()))
    await asyncio.sleep(0.02)
    assert d.pending == 1
    with pytest.raises(Rejected) as r:
        await task
    assert r.value.status == 503 and r.value.code == "no_replica_ready" and d.pending == 0
    task = asyncio.create_task(d.acquire(FlowRequest()))
    await asyncio.sleep(0.02)
    pool.update([DiscoveredEndpoint("http://a")])
    lease: Lease = await asyncio.wait_for(task, 1)
    assert lease.endpoint == "http://a" and d.pending == 0


async def test_other_senders_load_counts() -> None:
    pool, d = make(["http://a", "http://b"])
    pool.report_load("http://a", LoadReport(4, 0, 4, 0))  # another router filled a
    pool.report_load("http://b", LoadReport(0, 0, 4, 0))
    leases = [await d.acquire(FlowRequest()) for _ in range(4)]
    assert {x.endpoint for x in leases} == {"http://b"}
    for x in leases:
        x.release()


async def test_token_quota_rejects_with_headers_and_spares_others() -> None:
    _pool, d = make(["http://a"])
    req = FlowRequest(tenant="t", tokens_per_minute=60)
    lease = await d.acquire(req)
    lease.charge(100)
    lease.release()
    with pytest.raises(Rejected) as r:
        await d.acquire(req)
    assert r.value.status == 429 and r.value.code == "tokens_quota"
    h = r.value.headers()
    assert h["x-ratelimit-limit-tokens"] == "60" and h["x-ratelimit-remaining-tokens"] == "0"
    assert int(h["Retry-After"]) == 41  # 41 tokens short at 1 token/s
    other = await d.acquire(FlowRequest(tenant="u", tokens_per_minute=60))
    other.release()


async def test_candidates_subset_is_honoured() -> None:
    _pool, d = make(["http://a", "http://b"])
    for _ in range(5):
        lease = await d.acquire(FlowRequest(candidates=frozenset({"http://b"})))
        assert lease.endpoint == "http://b"
        lease.release()


async def test_fair_share_reserve_keeps_a_slot_for_the_quiet_tenant() -> None:
    _pool, d = make(["http://a"], LoadReport(0, 0, 8, 0), fair_reserve=0.125, fair_reserve_max=0)
    (await d.acquire(FlowRequest(tenant="quiet"))).release()  # the quiet tenant was here a moment ago
    noisy = [asyncio.create_task(d.acquire(FlowRequest(tenant="noisy"))) for _ in range(10)]
    await asyncio.sleep(0.05)
    assert sum(t.done() for t in noisy) == 7  # one slot of eight is held back
    quiet = await asyncio.wait_for(d.acquire(FlowRequest(tenant="quiet")), 0.5)  # no wait for a release
    assert quiet.endpoint == "http://a" and quiet.waited_s < 0.01
    quiet.release()
    for t in noisy:
        t.cancel()
    await asyncio.gather(*noisy, return_exceptions=True)


async def test_a_quiet_tenant_keeps_its_reserve_through_the_gaps_between_its_requests() -> None:
    """A tenant sending one request every few seconds is still active 5 s after its last one (a 2 s
    window forgot it in one gap of seven at 1 request/s, and the flood then took every slot); once the
    window has passed with nothing from it, the flood may use every slot."""
    now = [1000.0]
    pool = EndpointPool(policy=EjectionPolicy(consecutive_failures=3, base_s=10), clock=lambda: now[0])
    pool.update([DiscoveredEndpoint("http://a")])
    config = FlowConfig(tick_s=0.01, fair_reserve=0.125, fair_reserve_max=0, fair_window_s=10)
    d = Dispatcher(pool, LeastLoad(), config)
    pool.report_load("http://a", LoadReport(0, 0, 8, 0))
    (await d.acquire(FlowRequest(tenant="quiet"))).release()
    now[0] += 5.0
    pool.report_load("http://a", LoadReport(0, 0, 8, 0))
    noisy = [asyncio.create_task(d.acquire(FlowRequest(tenant="noisy"))) for _ in range(10)]
    await asyncio.sleep(0.05)
    assert sum(t.done() for t in noisy) == 7  # one slot of eight is still kept for the quiet tenant
    now[0] += 10.0  # the window passes with nothing from the quiet tenant
    pool.report_load("http://a", LoadReport(7, 0, 8, 0))
    await asyncio.sleep(0.05)
    assert sum(t.done() for t in noisy) == 8
    for t in noisy:
        if t.done():
            t.result().release()
        t.cancel()
    await asyncio.gather(*noisy, return_exceptions=True)


async def test_the_reserve_grows_to_the_quiet_tenants_recent_burst() -> None:
    """The quiet tenant just had 3 requests in flight at once: 3 + 1 of 8 slots are kept from the flood
    (the floor alone would keep 1), so its next burst of 3 starts at once."""
    _pool, d = make(["http://a"], LoadReport(0, 0, 8, 0), fair_reserve=0.125, fair_reserve_max=0.5)
    burst = [await d.acquire(FlowRequest(tenant="quiet")) for _ in range(3)]
    for x in burst:
        x.release()
    noisy = [asyncio.create_task(d.acquire(FlowRequest(tenant="noisy"))) for _ in range(10)]
    await asyncio.sleep(0.05)
    assert sum(t.done() for t in noisy) == 4
    again = [await asyncio.wait_for(d.acquire(FlowRequest(tenant="quiet")), 0.5) for _ in range(3)]
    assert all(x.waited_s < 0.01 for x in again)
    for x in again:
        x.release()
    for t in noisy:
        t.cancel()
    await asyncio.gather(*noisy, return_exceptions=True)


async def test_a_lone_tenant_uses_every_slot() -> None:
    pool, d = make(["http://a"], LoadReport(0, 0, 8, 0), fair_reserve=0.125)
    leases = [await asyncio.wait_for(d.acquire(FlowRequest(tenant="only")), 0.5) for _ in range(8)]
    assert pool.get("http://a").inflight == 8  # type: ignore[union-attr]
    for x in leases:
        x.release()


async def test_failing_polls_keep_a_dead_replica_out_and_a_good_one_restores_it() -> None:
    clock = [100.0]
    pool = EndpointPool(policy=EjectionPolicy(base_s=0.5), clock=lambda: clock[0])
    pool.update([DiscoveredEndpoint("http://a"), DiscoveredEndpoint("http://b")])
    pool.probe_result("http://b", False)  # refused: out at once, before any request fails on it
    assert [v.id for v in pool.eligible()] == ["http://a"]
    clock[0] += 0.6  # the back-off is over, but the poller still cannot reach it: no request probe
    pool.probe_result("http://b", False)
    clock[0] += 0.5
    assert [v.id for v in pool.eligible()] == ["http://a"]
    pool.probe_result("http://b", True)
    assert sorted(v.id for v in pool.eligible()) == ["http://a", "http://b"]


async def test_a_new_endpoint_takes_nothing_before_its_first_poll() -> None:
    pool, d = make([])
    pool.await_first_poll = True  # what poll_loads sets
    pool.update([DiscoveredEndpoint("http://a")])
    assert pool.new_endpoint_event().is_set()  # wakes the poller at once
    task = asyncio.create_task(d.acquire(FlowRequest()))
    await asyncio.sleep(0.03)
    assert not task.done() and d.queued == 1  # a burst cannot land before the limits are known
    pool.report_load("http://a", LoadReport(0, 0, 1, 0))
    pool.polled("http://a")
    lease = await asyncio.wait_for(task, 1)
    assert lease.endpoint == "http://a"
    lease.release()


def test_fair_window_flag_reaches_the_dispatcher_and_is_bounded() -> None:
    import argparse

    from shoal_router.cli import register
    from shoal_router.config import from_args

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    ns = parser.parse_args(["router", "--upstream", "http://a"])
    assert from_args(ns).flow().fair_window_s == 10.0
    ns = parser.parse_args(["router", "--upstream", "http://a", "--fair-window", "30"])
    assert from_args(ns).flow().fair_window_s == 30.0
    for bad in ("0", "-1", "601"):
        ns = parser.parse_args(["router", "--upstream", "http://a", "--fair-window", bad])
        with pytest.raises(ValueError, match="--fair-window must be more than 0"):
            from_args(ns).validate()
