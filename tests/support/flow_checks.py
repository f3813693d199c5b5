"""Flow-control scenarios (issue 16) run against any front end's base URL: the HTTP router, or Envoy in
front of the EPP. Each sends real requests once (no client retries) and asserts the behaviour, so both
front ends are held to the same checks."""

from __future__ import annotations

import asyncio
import time

import httpx

OBJECTIVE = "x-gateway-inference-objective"
FAIRNESS = "x-gateway-inference-fairness-id"


def chat(max_tokens: int = 8, text: str = "hello") -> dict[str, object]:
    return {"model": "sim", "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}


async def send_all(
    url: str, n: int, body: dict[str, object], headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        return list(
            await asyncio.gather(
                *(c.post("/v1/chat/completions", json=body, headers=headers) for _ in range(n))
            )
        )


async def high_band_overtakes_a_low_band_backlog(url: str, high: str = "chat", low: str = "batch") -> None:
    """One replica (2 slots + 2 queued) behind a front end whose queue holds 10 and maps `high` / `low`
    objectives to bands: 20 low requests fill everything, then 4 high ones overtake the backlog and are
    never shed; only the low band gets 429s."""
    limits = httpx.Limits(max_connections=40)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:

        async def send(objective: str) -> tuple[str, int, float]:
            resp = await c.post("/v1/chat/completions", json=chat(12), headers={OBJECTIVE: objective})
            return objective, resp.status_code, time.monotonic()

        lows = [asyncio.create_task(send(low)) for _ in range(20)]
        await asyncio.sleep(0.5)  # the low band fills the replica and the front end's queue
        highs = [asyncio.create_task(send(high)) for _ in range(4)]
        results = await asyncio.wait_for(asyncio.gather(*lows, *highs), 120)
    high_done = [t for o, s, t in results if o == high and s == 200]
    low_done = sorted(t for o, s, t in results if o == low and s == 200)
    assert len(high_done) == 4, results  # never shed: the low band makes room
    assert all(s in (200, 429) for _, s, _ in results), results
    assert any(o == low and s == 429 for o, s, _ in results)  # the low band absorbed the shedding
    # the high requests overtook the low backlog: done before most of the low requests still queued
    assert max(high_done) < low_done[-3], (high_done, low_done)


async def two_tenants_get_fair_shares(url: str) -> None:
    """One replica (2 slots) behind a front end: tenant `flood` queues 30 requests, then tenant `quiet`
    queues 10. Weighted fair queuing interleaves them: `quiet` is not served after the flood's backlog,
    and while both wait they are served about equally (not first come, first served)."""
    limits = httpx.Limits(max_connections=60)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:

        async def send(tenant: str) -> tuple[str, int, float]:
            resp = await c.post("/v1/chat/completions", json=chat(6), headers={FAIRNESS: tenant})
            return tenant, resp.status_code, time.monotonic()

        floods = [asyncio.create_task(send("flood")) for _ in range(30)]
        await asyncio.sleep(0.3)
        quiets = [asyncio.create_task(send("quiet")) for _ in range(10)]
        results = await asyncio.wait_for(asyncio.gather(*floods, *quiets), 120)
    assert [s for _, s, _ in results] == [200] * 40, results
    order = [tenant for tenant, _, _ in sorted(results, key=lambda r: r[2])]
    last_quiet = max(i for i, tenant in enumerate(order) if tenant == "quiet")
    # FCFS would put all 10 quiet answers after the 30 flood ones (positions 30-39); fair queuing
    # alternates, so the last quiet one is done around position 20 while the flood still has a backlog
    assert last_quiet <= 27, order
    first_quiet = order.index("quiet")
    between = order[first_quiet : last_quiet + 1].count("flood")
    assert 4 <= between <= 14, order  # about one flood answer per quiet one while both were waiting


async def token_quota_for_one_tenant(url: str, over: dict[str, str], other: dict[str, str]) -> None:
    """The tenant sent with `over` headers has 60 tokens per minute: answers carry OpenAI's x-ratelimit-*
    headers, then it gets 429 + Retry-After with them; the `other` tenant has no quota and is unaffected."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        first = await c.post("/v1/chat/completions", json=chat(16), headers=over)
        assert first.status_code == 200, first.text
        used = first.json()["usage"]["total_tokens"]
        assert first.headers["x-ratelimit-limit-tokens"] == "60"
        assert int(first.headers["x-ratelimit-remaining-tokens"]) <= 60
        refused = None
        for _ in range(10):  # bounded: 60 tokens run out within a few answers of >= 16 tokens
            resp = await c.post("/v1/chat/completions", json=chat(16), headers=over)
            if resp.status_code == 429:
                refused = resp
                break
            assert resp.status_code == 200
            assert int(resp.headers["x-ratelimit-remaining-tokens"]) <= 60 - used + 1
        assert refused is not None, "the tenant never hit its token quota"
        assert refused.json()["error"]["code"] == "tokens_quota"
        assert refused.headers["x-ratelimit-limit-tokens"] == "60"
        assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
        assert refused.headers["x-ratelimit-reset-tokens"].endswith("s")
        assert int(refused.headers["retry-after"]) >= 1
        for _ in range(5):
            ok = await c.post("/v1/chat/completions", json=chat(16), headers=other)
            assert ok.status_code == 200 and "x-ratelimit-limit-tokens" not in ok.headers
