"""The EPP's adapter over the real shared core (Dispatcher + EndpointPool, no fakes): subset hints, fallbacks,
refusals, hold at zero, and the accounting of what served."""

from __future__ import annotations

import asyncio

import pytest
from shoal_router.endpoints import DiscoveredEndpoint, EjectionPolicy, EndpointPool
from shoal_router.epp.core_adapter import DispatcherPicker, outcome_of, to_hostport
from shoal_router.epp.picking import PickRequest, Refused
from shoal_router.flow.classify import FAIRNESS_HEADER, TenantPolicy
from shoal_router.flow.dispatcher import Dispatcher
from shoal_router.flow.model import FlowConfig, LoadReport, Outcome
from shoal_router.strategies import LeastLoad

A, B, C = "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"


def make(
    endpoints: list[str], fallbacks: int = 0, tenants: dict[str, TenantPolicy] | None = None, **cfg: object
) -> tuple[EndpointPool, DispatcherPicker]:
    pool = EndpointPool(policy=EjectionPolicy(consecutive_failures=3, base_s=10))
    pool.update(DiscoveredEndpoint("http://" + e) for e in endpoints)
    d = Dispatcher(pool, LeastLoad(), FlowConfig(**{"tick_s": 0.01, **cfg}))  # type: ignore[arg-type]
    return pool, DispatcherPicker(d, pool, fallbacks, tenants=tenants or {})


def inflight(pool: EndpointPool) -> dict[str, int]:
    return {to_hostport(s.url): s.inflight for s in pool.states()}


async def test_picks_inside_the_subset_and_names_fallbacks():
    pool, picker = make([A, B, C], fallbacks=1)
    for _ in range(10):
        p = await picker.pick(PickRequest("r", subset=frozenset({B, C})))
        assert set(p.endpoints) <= {B, C} and len(p.endpoints) == 2 and p.endpoints[0] != p.endpoints[1]
        picker.finish(p, 200)
    assert inflight(pool) == {A: 0, B: 0, C: 0}


async def test_empty_subset_and_unknown_subset_are_503():
    _pool, picker = make([A])
    with pytest.raises(Refused) as info:
        await picker.pick(PickRequest("r", subset=frozenset()))
    assert info.value.status == 503
    with pytest.raises(Refused) as info:  # nothing in the subset is known: 503 at once, never elsewhere
        await picker.pick(PickRequest("r", subset=frozenset({C})))
    assert info.value.status == 503 and info.value.code == "no_endpoint"


async def test_held_while_no_replica_is_ready_then_released():
    pool = EndpointPool()
    d = Dispatcher(pool, LeastLoad(), FlowConfig(tick_s=0.01, hold_timeout_s=5))
    picker = DispatcherPicker(d, pool)
    pool.update([DiscoveredEndpoint("http://" + A, ready=False)])
    task = asyncio.create_task(picker.pick(PickRequest("r")))
    for _ in range(100):
        if d.pending == 1:
            break
        await asyncio.sleep(0.01)
    assert d.pending == 1 and not task.done()  # the scale-from-zero signal
    pool.update([DiscoveredEndpoint("http://" + A, ready=True)])
    picked = await asyncio.wait_for(task, 2)
    assert picked.endpoints == (A,) and d.pending == 0


async def test_hold_is_bounded():
    pool = EndpointPool()
    d = Dispatcher(pool, LeastLoad(), FlowConfig(tick_s=0.01, hold_timeout_s=0.1))
    picker = DispatcherPicker(d, pool)
    pool.update([])
    with pytest.raises(Refused) as info:
        await picker.pick(PickRequest("r"))
    assert info.value.status == 503 and info.value.code == "no_replica_ready"


async def test_saturated_queue_sheds_with_429_and_retry_after():
    pool, picker = make([A], max_queued=1)
    pool.report_load("http://" + A, LoadReport(inflight=0, queued=0, max_concurrency=1, max_queue=0))
    first = await picker.pick(PickRequest("1"))
    waiting = asyncio.create_task(picker.pick(PickRequest("2")))
    await asyncio.sleep(0.05)
    with pytest.raises(Refused) as info:
        await picker.pick(PickRequest("3"))
    assert info.value.status == 429 and info.value.retry_after_s and info.value.retry_after_s >= 1
    picker.finish(first, 200)
    second = await asyncio.wait_for(waiting, 2)
    picker.finish(second, 200)


async def test_served_by_a_fallback_ejects_the_pick_and_moves_the_count():
    pool, picker = make([A, B], fallbacks=1)
    p = await picker.pick(PickRequest("r"))
    primary, fallback = p.endpoints
    picker.served(p, fallback)
    assert inflight(pool)[fallback] == 1
    picker.finish(p, 200)
    assert inflight(pool) == {A: 0, B: 0}
    assert pool.get("http://" + primary).ejected_until > 0  # connect-ejected until a probe succeeds
    for _ in range(5):  # new picks avoid it
        q = await picker.pick(PickRequest("n"))
        assert q.endpoints[0] == fallback
        picker.finish(q, 200)


async def test_token_quota_of_a_tenant_by_fairness_id():
    """`--tenant alice tokens-per-minute=60`: her answers carry the x-ratelimit-* headers and are charged;
    once the bucket is empty she is refused 429 with the headers; bob is unaffected."""
    _, picker = make([A], tenants={"alice": TenantPolicy(tokens_per_minute=60)})
    alice = PickRequest("a", headers={FAIRNESS_HEADER: "alice"})
    bob = PickRequest("b", headers={FAIRNESS_HEADER: "bob"})
    p = await picker.pick(alice)
    assert p.metered and picker.answer_headers(p)["x-ratelimit-limit-tokens"] == "60"
    picker.finish(p, 200, tokens=70)
    with pytest.raises(Refused) as info:
        await picker.pick(alice)
    ref = info.value
    assert (ref.status, ref.code) == (429, "tokens_quota") and ref.retry_after_s and ref.retry_after_s >= 1
    assert ref.headers["x-ratelimit-remaining-tokens"] == "0"
    q = await picker.pick(bob)
    assert not q.metered and picker.answer_headers(q) == {}
    picker.finish(q, 200, tokens=10_000)


def test_status_to_outcome():
    assert outcome_of(None) is Outcome.CANCELLED
    assert outcome_of(200) is Outcome.SUCCESS and outcome_of(400) is Outcome.SUCCESS
    assert outcome_of(429) is Outcome.BUSY
    assert outcome_of(503) is Outcome.UPSTREAM_ERROR


async def test_adapter_requests_only_to_replicas_listing_the_adapter():
    pool, picker = make([A, B, C])
    pool.report_adapters("http://" + A, frozenset({"sql"}))
    pool.report_adapters("http://" + B, frozenset())  # Ready, adapters not loaded yet
    for _ in range(6):
        p = await picker.pick(PickRequest("r", model="sql"))
        assert p.endpoints == (A,)
        picker.finish(p, 200)
    # the base model (listed by nobody as an adapter) goes anywhere
    seen = set()
    for _ in range(6):
        p = await picker.pick(PickRequest("r", model="base"))
        seen.add(p.endpoints[0])
    assert seen == {A, B, C}
    # a gateway subset is narrowed, never widened; without a holder in it, it stays as it was
    pool.report_adapters("http://" + C, frozenset({"sql"}))
    p = await picker.pick(PickRequest("r", model="sql", subset=frozenset({B, C})))
    assert p.endpoints == (C,)
    p = await picker.pick(PickRequest("r", model="sql", subset=frozenset({B})))
    assert p.endpoints == (B,)
