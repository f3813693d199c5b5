"""The pure parts of flow control: the fair queue, capacity from load reports, quotas, usage, classes."""

from __future__ import annotations

import pytest
from shoal_router.flow import capacity
from shoal_router.flow.capacity import LoadView, parse_load_headers, parse_load_json
from shoal_router.flow.classify import TenantPolicy, classify, parse_objectives, parse_tenants
from shoal_router.flow.fairqueue import FairQueue
from shoal_router.flow.model import LoadReport
from shoal_router.flow.quota import TokenQuotas, format_duration
from shoal_router.flow.usage import UsageCounter, usage_of_json

pytestmark = pytest.mark.unit


def drain(q: FairQueue[str]) -> list[str]:
    out = []
    while (head := q.head()) is not None:
        out.append(head.item)
        q.remove(head, served=True)
    return out


def test_bands_first_then_weighted_fair_within_a_band() -> None:
    q: FairQueue[str] = FairQueue(100, 10**9)
    for i in range(10):
        q.push(f"a{i}", "A", 0, 1.0, 10)
    for i in range(2):
        q.push(f"b{i}", "B", 0, 1.0, 10)
    q.push("h0", "H", 5, 1.0, 10)
    order = drain(q)
    assert order[0] == "h0"  # the higher band goes first whatever arrived before it
    # B's two requests are interleaved with A's instead of waiting behind all ten
    assert order.index("b0") <= 2 and order.index("b1") <= 4
    assert q.count == 0 and q.bytes == 0


def test_weights_give_proportional_shares() -> None:
    q: FairQueue[str] = FairQueue(100, 10**9)
    for i in range(20):
        q.push(f"a{i}", "A", 0, 3.0, 1)
        q.push(f"b{i}", "B", 0, 1.0, 1)
    first = drain(q)[:16]
    assert sum(x.startswith("a") for x in first) == 12  # 3:1


def test_bounds_by_count_and_bytes_and_shedding_the_lowest_band() -> None:
    q: FairQueue[str] = FairQueue(3, 100)
    assert q.push("low0", "A", -1, 1.0, 10).entry is not None
    assert q.push("low1", "A", -1, 1.0, 10).entry is not None
    assert q.push("mid", "B", 0, 1.0, 10).entry is not None
    refused = q.push("low2", "A", -1, 1.0, 10)
    assert refused.entry is None and refused.shed is None  # full, and nobody lower to shed
    admit = q.push("high", "C", 1, 1.0, 10)
    assert admit.entry is not None and admit.shed is not None and admit.shed.item == "low1"  # newest lowest
    assert q.push("big", "C", 2, 1.0, 95).entry is None  # cannot fit even after shedding one
    assert drain(q) == ["high", "mid", "low0"]


def test_requeued_request_keeps_its_turn() -> None:
    q: FairQueue[str] = FairQueue(10, 10**9)
    q.push("a0", "A", 0, 1.0, 1)
    q.push("a1", "A", 0, 1.0, 1)
    q.push("back", "B", 0, 1.0, 1, front=True)
    assert drain(q)[0] == "back"


def test_free_slots_from_reports_and_own_inflight() -> None:
    view = LoadView()
    assert capacity.free_slots(view, 3, 0.0, 2.0, 0) is None  # never reported: unbounded
    view.report, view.at, view.own_at_report = LoadReport(4, 2, 4, 4), 10.0, 2
    # the replica has 6 of which 2 are ours: others hold 4, so 4 slots are taken before we send
    assert capacity.others(view, 10.5, 2.0) == 4
    assert capacity.free_slots(view, 0, 10.5, 2.0, 0) == 0
    assert capacity.free_slots(view, 0, 10.5, 2.0, 4) == 4  # allowed to queue 4 there
    assert capacity.free_slots(view, 0, 13.0, 2.0, 0) == 4  # stale: only our own count is known
    view.busy_until = 20.0
    assert capacity.free_slots(view, 0, 13.0, 2.0, 4) == 0


def test_parse_load_signals() -> None:
    headers = {
        "X-Shoal-Inflight": "3",
        "X-Shoal-Queued": "1",
        "X-Shoal-Max-Concurrency": "4",
        "X-Shoal-Max-Queue": "4",
    }
    assert parse_load_headers(headers) == LoadReport(3, 1, 4, 4)
    assert parse_load_headers({**headers, "X-Shoal-Queued": "x"}) is None
    assert parse_load_headers({}) is None
    assert parse_load_json({"inflight": 1, "queued": 0, "max_concurrency": 2, "max_queue": 0}) == LoadReport(
        1, 0, 2, 0
    )
    assert parse_load_json({"inflight": True, "queued": 0, "max_concurrency": 2, "max_queue": 0}) is None
    assert parse_load_json([1]) is None


def test_token_quota_bucket_and_headers() -> None:
    q = TokenQuotas()
    st = q.check("t", 600, 0.0)
    assert (st.limit, st.remaining, st.retry_after_s) == (600, 600, 0.0)
    q.charge("t", 600, 700, 0.0)  # one big answer takes it below zero
    st = q.check("t", 600, 0.0)
    assert st.remaining == 0 and st.retry_after_s == pytest.approx(10.1)  # 101 tokens at 10/s
    assert st.headers()["x-ratelimit-reset-tokens"] == "1m10s"
    assert q.check("t", 600, 11.0).retry_after_s == 0.0
    assert format_duration(0.25) == "250ms" and format_duration(6.0) == "6s"


def test_usage_from_json_and_streams() -> None:
    assert usage_of_json(b'{"usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}') == 7
    assert usage_of_json(b"[") is None
    c = UsageCounter(request_bytes=40)
    c.feed(b'data: {"choices": [{"delta": {"content": "a"}}]}\n\ndata: {"choices": []}\n\n')
    c.feed(b"data: [DONE]\n\n")
    assert c.total() == 10 + 2  # estimated prompt + one per event
    c.feed(
        b'data: {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}}'
    )
    assert c.total() == 14  # the engine's own count wins


def test_classification() -> None:
    objectives = parse_objectives(["chat=high", "batch=-3"])
    assert objectives == {"chat": 1, "batch": -3}
    with pytest.raises(ValueError):
        parse_objectives(["nope"])
    c = classify(key_name=None, policy=None, objective="batch", fairness_id="team-a", objectives=objectives)
    assert (c.tenant, c.priority) == ("team-a", -3)
    # a key's own priority wins over a header the client sets
    pol = TenantPolicy(priority=0, weight=2.0, tokens_per_minute=100)
    c = classify(key_name="alice", policy=pol, objective="chat", fairness_id="x", objectives=objectives)
    assert (c.tenant, c.priority, c.weight, c.tokens_per_minute) == ("alice", 0, 2.0, 100)
    c = classify(
        key_name="bob", policy=TenantPolicy(), objective="chat", fairness_id=None, objectives=objectives
    )
    assert (c.tenant, c.priority) == ("bob", 1)


def test_tenant_policies_by_fairness_id() -> None:
    """The EPP's `--tenant`: a policy for a fairness id (the gateway sets it); the policy's band wins over
    the objective header, a tenant without one keeps the header's band, an API key's name never matches."""
    tenants = parse_tenants(["alice priority=low weight=2 tokens-per-minute=60", "bob"])
    assert tenants == {"alice": TenantPolicy(-1, 2.0, 60), "bob": TenantPolicy()}
    for bad in ["", "carol weight=0", "carol colour=red", "carol tokens-per-minute=-1", "carol priority=x"]:
        with pytest.raises(ValueError):
            parse_tenants([bad])
    objectives = {"chat": 1}

    def cls(key: str | None, fid: str | None) -> tuple[str, int, float, int]:
        c = classify(
            key_name=key,
            policy=None,
            objective="chat",
            fairness_id=fid,
            objectives=objectives,
            tenant_policies=tenants,
        )
        return c.tenant, c.priority, c.weight, c.tokens_per_minute

    assert cls(None, " alice ") == ("alice", -1, 2.0, 60)
    assert cls(None, "bob") == ("bob", 1, 1.0, 0)
    assert cls(None, "zed") == ("zed", 1, 1.0, 0)
    assert cls("alice", "alice") == ("alice", 1, 1.0, 0)  # keys on: the key's (empty) policy, not --tenant


def test_full_queue_sheds_the_heaviest_tenant_of_the_same_band() -> None:
    q: FairQueue[str] = FairQueue(4, 10**9)
    for i in range(4):
        assert q.push(f"a{i}", "A", 0, 1.0, 1).entry is not None
    admit = q.push("b0", "B", 0, 1.0, 1)
    assert admit.entry is not None and admit.shed is not None and admit.shed.item == "a3"
    assert q.push("b1", "B", 0, 1.0, 1).shed.item == "a2"  # type: ignore[union-attr]
    assert q.push("b2", "B", 0, 1.0, 1).entry is None  # B now holds as many places as A: refused
    assert q.push("a9", "A", 0, 1.0, 1).entry is None  # and A cannot take them back
    assert sorted(drain(q)) == ["a0", "a1", "b0", "b1"]


def test_may_take_the_reserve_only_below_the_share() -> None:
    from shoal_router.flow.fairshare import may_take, reserve_slots

    assert reserve_slots(8, 0.125) == 1 and reserve_slots(8, 0) == 0 and reserve_slots(32, 0.125) == 4
    # free beyond the reserve: anyone; within it: only a tenant below its share (8 * 1/2 = 4)
    assert may_take(7, 1.0, 2.0, 8, 2, 1)
    assert not may_take(7, 1.0, 2.0, 8, 1, 1)
    assert may_take(0, 1.0, 2.0, 8, 1, 1)
    assert may_take(7, 1.0, 1.0, 8, 1, 1)  # alone: the share is everything
    assert not may_take(0, 1.0, 2.0, 8, 0, 1)


def test_demand_reserve_and_headroom() -> None:
    from shoal_router.flow.fairshare import Activity, demand_reserve

    assert demand_reserve(1, 0, 8, 0.5) == 1  # nothing to protect: the floor
    assert demand_reserve(1, 3, 8, 0.5) == 4  # headroom + 1
    assert demand_reserve(1, 9, 8, 0.5) == 4  # capped at half the slots
    assert demand_reserve(2, 9, 8, 0.0) == 2  # demand sizing off: the floor alone
    act = Activity(window_s=2.0)
    for _ in range(3):  # quiet: 3 arrivals, all started
        act.seen("quiet", 1.0, 0.0)
        act.started("quiet", 0.0)
    for _ in range(30):  # noisy: 30 arrivals, 6 started
        act.seen("noisy", 1.0, 0.0)
    for _ in range(6):
        act.started("noisy", 0.0)
    act.seen("vip", 1.0, 0.0, priority=1)  # a higher band
    act.started("vip", 0.0)
    act.finished("vip")
    for _ in range(2):
        act.finished("quiet")
    assert act.light("quiet", 0.5) and act.light("vip", 0.5) and not act.light("noisy", 0.5)
    # noisy (band 0) must leave room for quiet's peak (3, 1 in flight) and vip's (higher band: always)
    assert act.headroom("noisy", 0, 0.5, 12) == 2 + 1
    # quiet is protected from noisy, not noisy from quiet (heavy: most of the arrivals)
    assert act.headroom("quiet", 0, 0.5, 12) == 0 + 1
    assert act.headroom("vip", 1, 0.5, 12) == 0  # the top band protects nobody below it
    assert act.headroom("noisy", 0, 3.0, 12) == 0  # peaks older than the window are forgotten
