"""Endpoint pool (eligibility, terminating, ejection), token buckets, retry budget, keys, prompt prefix."""

from __future__ import annotations

import base64

import pytest
from shoal_router.auth import ApiKeys, bearer_token, key_id, parse_keys_file, parse_secret_data
from shoal_router.endpoints import DiscoveredEndpoint, EjectionPolicy, EndpointPool
from shoal_router.limits import RateLimiter, RetryBudget, TokenBucket
from shoal_router.prompt import prompt_prefix

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def ids(pool: EndpointPool, exclude: tuple[str, ...] = ()) -> list[str]:
    return sorted(v.id for v in pool.eligible(exclude))


async def test_eligibility_follows_conditions() -> None:
    pool = EndpointPool(clock=Clock())
    pool.update(
        [
            DiscoveredEndpoint("http://a"),
            DiscoveredEndpoint("http://b", ready=False),
            DiscoveredEndpoint("http://c", ready=False, serving=True, terminating=True),
            DiscoveredEndpoint("http://d", ready=True, terminating=True),
        ]
    )
    assert ids(pool) == ["http://a"]
    assert ids(pool, ("http://a",)) == []
    assert pool.has_ready()


async def test_removed_endpoint_kept_until_its_requests_finish() -> None:
    pool = EndpointPool(clock=Clock())
    pool.update([DiscoveredEndpoint("http://a"), DiscoveredEndpoint("http://b")])
    pool.acquire("http://a")
    pool.update([DiscoveredEndpoint("http://b")])
    assert ids(pool) == ["http://b"]
    state = pool.get("http://a")
    assert state is not None and state.removed
    pool.release("http://a")
    assert pool.get("http://a") is None


async def test_ready_event_tracks_ready_endpoints() -> None:
    pool = EndpointPool(clock=Clock())
    pool.update([DiscoveredEndpoint("http://a", ready=False)])
    assert not pool.has_ready()
    pool.update([DiscoveredEndpoint("http://a")])
    await pool.wait_ready()  # returns at once


async def test_ejection_probe_and_exponential_backoff() -> None:
    clock = Clock()
    pool = EndpointPool(policy=EjectionPolicy(consecutive_failures=2, base_s=10, max_s=25), clock=clock)
    pool.update([DiscoveredEndpoint("http://a"), DiscoveredEndpoint("http://b")])
    pool.report_failure("http://a", "x")
    assert ids(pool) == ["http://a", "http://b"]
    pool.report_failure("http://a", "x")
    assert ids(pool) == ["http://b"]  # ejected for 10 s
    clock.t += 10
    assert ids(pool) == ["http://a", "http://b"]  # probing: one request may go
    pool.acquire("http://a")
    assert ids(pool) == ["http://b"]  # the probe is in flight; nothing else until it answers
    pool.release("http://a")
    pool.report_failure("http://a", "x")  # the probe failed: ejected again, twice as long
    clock.t += 19
    assert ids(pool) == ["http://b"]
    clock.t += 1
    assert ids(pool) == ["http://a", "http://b"]
    pool.report_failure("http://a", "x")  # third ejection: capped at max_s
    st = pool.get("http://a")
    assert st is not None and st.ejected_until == clock.t + 25
    clock.t += 25
    pool.report_success("http://a")
    assert st.ejections == 0 and ids(pool) == ["http://a", "http://b"]


async def test_panic_mode_when_everything_is_ejected() -> None:
    clock = Clock()
    pool = EndpointPool(policy=EjectionPolicy(consecutive_failures=1), clock=clock)
    pool.update([DiscoveredEndpoint("http://a")])
    pool.report_failure("http://a", "x")
    assert ids(pool) == ["http://a"]  # better a suspect replica than none


def test_token_bucket() -> None:
    b = TokenBucket(rate=2, burst=2, tokens=2, updated=0)
    assert b.take(0) == 0 and b.take(0) == 0
    assert b.take(0) == pytest.approx(0.5)
    assert b.take(0.5) == 0


def test_rate_limiter_per_identity() -> None:
    clock = Clock()
    rl = RateLimiter(rate=1, burst=1, clock=clock)
    assert rl.check("a") == 0
    assert rl.check("a") > 0
    assert rl.check("b") == 0
    clock.t += 1
    assert rl.check("a") == 0


def test_retry_budget_ratio_and_floor() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.1, min_per_s=0, clock=clock)
    assert not budget.try_withdraw()
    for _ in range(10):
        budget.deposit()
    assert budget.try_withdraw()
    assert not budget.try_withdraw()
    floor = RetryBudget(ratio=0.0, min_per_s=1, clock=clock, window_s=1)
    assert floor.try_withdraw()
    assert not floor.try_withdraw()
    clock.t += 1
    assert floor.try_withdraw()


def test_api_keys() -> None:
    keys = ApiKeys(enabled=True)
    keys.replace(parse_keys_file("# x\nalice: sk-1\nsk-2\n\n"))
    a = keys.lookup("sk-1")
    assert a is not None and a.name == "alice" and a.id == key_id("sk-1")
    b = keys.lookup("sk-2")
    assert b is not None and b.name == b.id
    assert keys.lookup("sk-3") is None
    assert "sk-1" not in repr(keys.lookup("sk-1"))
    secret = {"alice": base64.b64encode(b"k1").decode(), "ops": base64.b64encode(b"k2\nk3\n").decode()}
    assert parse_secret_data(secret) == {"k1": "alice", "k2": "ops", "k3": "ops"}
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token(None, "k") == "k"


def test_prompt_prefix() -> None:
    chat = (
        b'{"messages": [{"role": "system", "content": "You are kind."}, {"role": "user", "content": "hi"}]}'
    )
    assert prompt_prefix(chat, 1000) == "system:You are kind.\nuser:hi\n"
    assert prompt_prefix(chat, 10) == "system:You"
    parts = b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "abc"}]}]}'
    assert prompt_prefix(parts, 100) == "user:abc\n"
    assert prompt_prefix(b'{"prompt": "abcdef"}', 3) == "abc"
    assert prompt_prefix(b'{"prompt": ["first", "second"]}', 100) == "first"
    assert prompt_prefix(b'{"prompt": [1, 2, 3]}', 100) == "1,2,3"
    assert prompt_prefix(b"not json", 100) is None
    assert prompt_prefix(b"", 100) is None


async def test_adapter_holders_from_load_reports() -> None:
    from shoal_router.flow.capacity import parse_adapters
    from shoal_router.flow.model import FlowRequest
    from shoal_router.frontdoor import adapter_scope

    pool = EndpointPool(clock=Clock())
    pool.update([DiscoveredEndpoint("http://a"), DiscoveredEndpoint("http://b")])
    assert not pool.serves_adapters() and pool.adapter_holders("sql") is None
    pool.report_adapters("http://a", parse_adapters({"inflight": 0, "adapters": ["sql", 3, ""]}))
    pool.report_adapters("http://b", parse_adapters({"inflight": 0}))  # an older server: unknown
    assert pool.serves_adapters()
    assert pool.adapter_holders("sql") == frozenset({"http://a"})
    assert pool.adapter_holders("base") is None  # nobody lists it: any replica answers
    assert parse_adapters({"adapters": "sql"}) is None and parse_adapters([]) is None

    body = b'{"model": "sql", "prompt": "x"}'
    scoped = adapter_scope(pool, False, FlowRequest(), body)
    assert scoped.candidates == frozenset({"http://a"}) and scoped.affinity_key == "sql"
    assert adapter_scope(pool, True, FlowRequest(affinity_key="x"), body).affinity_key == "x"
    assert adapter_scope(pool, False, FlowRequest(), b'{"model": "base"}').candidates is None
    assert adapter_scope(pool, False, FlowRequest(), b"[not json").candidates is None

    pool.report_adapters("http://b", frozenset({"sql"}))
    assert pool.adapter_holders("sql") == frozenset({"http://a", "http://b"})
    pool.update([DiscoveredEndpoint("http://b")])  # a left: no longer a holder
    assert pool.adapter_holders("sql") == frozenset({"http://b"})
