"""Flow control against real processes: `shoal model-server --engine sim` replicas behind a real
`shoal router` (issue 16's acceptance). No client retries anywhere: each request is sent once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from integration.router.procs import model_servers, router

pytestmark = pytest.mark.integration


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


async def test_replica_killed_under_a_burst_loses_no_request(tmp_path: Path) -> None:
    """The issue's scenario with default flags: 100 requests, then 200 at once, one of the two replicas
    SIGKILLed 0.3 s into the burst. Every non-streamed request answers 200, without client retries."""
    with model_servers(tmp_path, 2) as (a, b), router(tmp_path, [a, b]) as r:
        first = await send_all(r.url, 100, chat())
        assert [x.status_code for x in first].count(200) == 100

        async def kill_later() -> None:
            await asyncio.sleep(0.3)
            b.kill()

        started = time.monotonic()
        killer = asyncio.create_task(kill_later())
        burst = await asyncio.wait_for(send_all(r.url, 200, chat()), 150)
        await killer
        codes = [x.status_code for x in burst]
        failed = {c: codes.count(c) for c in set(codes) if c != 200}
        assert failed == {}, f"failed requests by status: {failed}\n{r.log()}"
        assert time.monotonic() - started < 150
        # the killed replica is out of rotation: the router's metrics say so
        async with httpx.AsyncClient(base_url=r.url) as c:
            metrics = (await c.get("/metrics")).text
        assert 'shoal_router_endpoints{state="ejected"} 1.0' in metrics


async def test_saturated_replica_queues_in_the_router_then_sheds_with_retry_after(tmp_path: Path) -> None:
    with model_servers(tmp_path, 1, "--max-concurrency", "4", "--max-queue", "4") as (a,):
        # the replica reports its load on every answer and at /load
        async with httpx.AsyncClient(base_url=a.url) as c:
            load = (await c.get("/load")).json()
            models = await c.get("/v1/models")
        assert (load["max_concurrency"], load["max_queue"], load["inflight"]) == (4, 4, 0)
        assert models.headers["x-shoal-max-concurrency"] == "4"

        # within the router's queue bound: all 100 succeed (the replica alone would refuse 92 of them)
        with router(tmp_path, [a]) as r:
            results = await asyncio.wait_for(send_all(r.url, 100, chat(4)), 120)
            assert [x.status_code for x in results].count(200) == 100

        # past the bound (20 queued): the excess gets 429 + Retry-After at once, nothing hangs, no 502
        with router(tmp_path, [a], "--max-pending", "20") as r:
            started = time.monotonic()
            results = await asyncio.wait_for(send_all(r.url, 100, chat(4)), 120)
            codes = [x.status_code for x in results]
            assert set(codes) <= {200, 429}, codes
            assert codes.count(200) >= 24  # 4 on the replica + 20 in the router's queue
            refused = [x for x in results if x.status_code == 429]
            assert refused, "the bound was exceeded, so some requests must be refused"
            for x in refused:
                assert int(x.headers["retry-after"]) >= 1
                err = x.json()["error"]
                assert err["type"] == "rate_limit_error" and err["code"] == "queue_full"
            assert time.monotonic() - started < 120


async def test_token_quota_per_tenant(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("alice:sk-alice tokens-per-minute=60\nbob:sk-bob\n")
    with model_servers(tmp_path, 1) as (a,), router(tmp_path, [a], "--api-keys-file", str(keys)) as r:
        alice = {"Authorization": "Bearer sk-alice"}
        bob = {"Authorization": "Bearer sk-bob"}
        async with httpx.AsyncClient(base_url=r.url, timeout=60) as c:
            first = await c.post("/v1/chat/completions", json=chat(16), headers=alice)
            assert first.status_code == 200
            used = first.json()["usage"]["total_tokens"]
            assert first.headers["x-ratelimit-limit-tokens"] == "60"
            assert int(first.headers["x-ratelimit-remaining-tokens"]) <= 60 - used + 1
            over = None
            for _ in range(10):  # bounded: 60 tokens run out within a few answers of >= 16 tokens
                resp = await c.post("/v1/chat/completions", json=chat(16), headers=alice)
                if resp.status_code == 429:
                    over = resp
                    break
                assert resp.status_code == 200
            assert over is not None, "alice never hit her token quota"
            assert over.json()["error"]["code"] == "tokens_quota"
            assert over.headers["x-ratelimit-limit-tokens"] == "60"
            assert over.headers["x-ratelimit-remaining-tokens"] == "0"
            assert over.headers["x-ratelimit-reset-tokens"].endswith("s")
            assert int(over.headers["retry-after"]) >= 1
            # bob has no quota and is unaffected
            for _ in range(5):
                assert (await c.post("/v1/chat/completions", json=chat(16), headers=bob)).status_code == 200


async def test_high_band_overtakes_a_low_band_backlog(tmp_path: Path) -> None:
    """Under saturation the high band is dispatched first and only the low band is shed."""
    with (
        model_servers(tmp_path, 1, "--max-concurrency", "2", "--max-queue", "2") as (a,),
        router(
            tmp_path, [a], "--objective", "chat=high", "--objective", "batch=low", "--max-pending", "10"
        ) as r,
    ):
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(base_url=r.url, timeout=120, limits=limits) as c:

            async def send(objective: str) -> tuple[str, int, float]:
                headers = {"x-gateway-inference-objective": objective}
                resp = await c.post("/v1/chat/completions", json=chat(12), headers=headers)
                return objective, resp.status_code, time.monotonic()

            low = [asyncio.create_task(send("batch")) for _ in range(20)]
            await asyncio.sleep(0.5)  # the low band fills the replica and the router's queue
            high = [asyncio.create_task(send("chat")) for _ in range(4)]
            results = await asyncio.wait_for(asyncio.gather(*low, *high), 120)
        high_done = [t for o, s, t in results if o == "chat" and s == 200]
        low_done = sorted(t for o, s, t in results if o == "batch" and s == 200)
        assert len(high_done) == 4, results  # never shed: the low band makes room
        assert all(s in (200, 429) for _, s, _ in results)
        assert any(o == "batch" and s == 429 for o, s, _ in results)  # the low band absorbed the shedding
        # the high requests overtook the low backlog: done before most of the low requests still queued
        assert max(high_done) < low_done[-3], (high_done, low_done)
