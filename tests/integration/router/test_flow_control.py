"""Flow control against real processes: `shoal model-server --engine sim` replicas behind a real
`shoal router` (issue 16's acceptance). No client retries anywhere: each request is sent once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from integration.router.procs import model_servers, router
from support.flow_checks import (
    chat,
    high_band_overtakes_a_low_band_backlog,
    send_all,
    token_quota_for_one_tenant,
    two_tenants_get_fair_shares,
)

pytestmark = pytest.mark.integration


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
        await token_quota_for_one_tenant(r.url, alice, bob)


async def test_high_band_overtakes_a_low_band_backlog(tmp_path: Path) -> None:
    """Under saturation the high band is dispatched first and only the low band is shed."""
    with (
        model_servers(tmp_path, 1, "--max-concurrency", "2", "--max-queue", "2") as (a,),
        router(
            tmp_path, [a], "--objective", "chat=high", "--objective", "batch=low", "--max-pending", "10"
        ) as r,
    ):
        await high_band_overtakes_a_low_band_backlog(r.url)


async def test_two_tenants_get_fair_shares(tmp_path: Path) -> None:
    with (
        model_servers(tmp_path, 1, "--max-concurrency", "2", "--max-queue", "0") as (a,),
        router(tmp_path, [a]) as r,
    ):
        await two_tenants_get_fair_shares(r.url)
