"""The HTTP front end's flow-control behaviour through a real router and fake upstreams on 127.0.0.1:
priority bands from the objective header, fair shares by fairness id, key options, request-id cap."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import httpx
import pytest
from shoal_router.auth import parse_keys_file_entries, parse_secret_entries
from shoal_router.flow.classify import TenantPolicy
from shoal_router.flow.model import LoadReport
from unit.router.fakes import eventually, running_router, upstreams

pytestmark = pytest.mark.unit

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


async def test_higher_band_overtakes_queued_lower_band() -> None:
    async with (
        upstreams(1, header_delay_s=0.2) as (up,),
        running_router(
            upstream_urls=[up.url], objectives=(("chat", 1), ("batch", -1)), load_poll_interval_s=0
        ) as r,
        httpx.AsyncClient(base_url=r.url, timeout=30) as c,
    ):
        r.router.pool.report_load(up.url, LoadReport(0, 0, 1, 0))  # one slot

        def send(objective: str, tag: str) -> asyncio.Task[httpx.Response]:
            body = {**CHAT, "messages": [{"role": "user", "content": tag}]}
            headers = {"x-gateway-inference-objective": objective}
            return asyncio.create_task(c.post("/v1/chat/completions", json=body, headers=headers))

        tasks = [send("batch", "first")]
        await eventually(lambda: r.router.pool.get(up.url).inflight == 1)  # type: ignore[union-attr]
        tasks += [send("batch", "low1"), send("batch", "low2")]
        await eventually(lambda: r.router.dispatcher.queued == 2)
        tasks.append(send("chat", "high"))
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert [x.status_code for x in results] == [200] * 4
        order = [q["body"]["messages"][0]["content"] for q in up.requests]
        assert order == ["first", "high", "low1", "low2"]
        metrics = (await c.get("/metrics")).text
        assert 'shoal_router_flow_dispatched_total{priority="1",tenant="default"} 1.0' in metrics
        assert 'shoal_router_flow_wait_seconds_count{priority="-1",tenant="default"} 3.0' in metrics


async def test_fair_share_between_tenants_by_fairness_id() -> None:
    async with (
        upstreams(1, header_delay_s=0.05) as (up,),
        running_router(upstream_urls=[up.url], load_poll_interval_s=0) as r,
        httpx.AsyncClient(base_url=r.url, timeout=30) as c,
    ):
        r.router.pool.report_load(up.url, LoadReport(0, 0, 1, 0))

        def send(tenant: str) -> asyncio.Task[httpx.Response]:
            body = {**CHAT, "messages": [{"role": "user", "content": tenant}]}
            headers = {"x-gateway-inference-fairness-id": tenant}
            return asyncio.create_task(c.post("/v1/chat/completions", json=body, headers=headers))

        tasks = [send("noisy") for _ in range(10)]
        await eventually(lambda: r.router.dispatcher.queued == 9)
        tasks += [send("quiet") for _ in range(2)]
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
        order = [q["body"]["messages"][0]["content"] for q in up.requests]
        # the quiet tenant does not wait behind the noisy one's backlog: served within the next few
        assert order.index("quiet") <= 3 and len(order) - order[::-1].index("quiet") - 1 <= 5, order


async def test_request_id_is_capped_and_load_headers_stay_inside() -> None:
    async with (
        upstreams(1) as (up,),
        running_router(upstream_urls=[up.url]) as r,
        httpx.AsyncClient(base_url=r.url) as c,
    ):
        resp = await c.post("/v1/chat/completions", json=CHAT, headers={"X-Request-ID": "x" * 5000})
        assert resp.status_code == 200
        assert resp.headers["x-request-id"] == "x" * 128
        assert up.requests[0]["headers"]["X-Request-ID"] == "x" * 128
        assert not any(h.lower().startswith("x-shoal-") for h in resp.headers)


def test_key_options_are_backwards_compatible() -> None:
    entries = parse_keys_file_entries(
        "alice:sk-a priority=high weight=2 tokens-per-minute=600\nsk-b\nbad:sk-c colour=red\n"
    )
    assert entries["sk-a"].name == "alice"
    assert entries["sk-a"].policy == TenantPolicy(priority=1, weight=2.0, tokens_per_minute=600)
    assert entries["sk-b"].policy == TenantPolicy()
    assert "sk-c" not in entries  # a bad option skips that line only
    secret = {"ops": base64.b64encode(b"k1 priority=-2\nk2\n").decode()}
    got = parse_secret_entries(secret)
    assert got["k1"].policy.priority == -2 and got["k1"].name == "ops" and got["k2"].name == "ops"


def test_cli_host_alias_and_flow_flags() -> None:
    from shoal_cli.main import build_parser
    from shoal_router.config import from_args

    up = ["router", "--upstream", "127.0.0.1:8001"]
    assert from_args(build_parser().parse_args([*up, "--host", "127.0.0.2"])).listen_host == "127.0.0.2"
    old = from_args(build_parser().parse_args([*up, "--listen-host", "127.0.0.3"]))
    assert old.listen_host == "127.0.0.3"  # the deprecated spelling still works
    config = from_args(
        build_parser().parse_args(
            [*up, "--objective", "chat=critical", "--objective", "batch=-1", "--max-pending", "7"]
        )
    )
    assert dict(config.objectives) == {"chat": 2, "batch": -1}
    assert config.flow().max_queued == 7
    with pytest.raises(ValueError):
        from_args(build_parser().parse_args([*up, "--objective", "chat"]))
    with pytest.raises(ValueError):
        from_args(build_parser().parse_args([*up, "--load-poll-interval", "-1"]))


async def test_streamed_answers_count_against_the_token_quota(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("carol:sk-carol tokens-per-minute=20\n")
    async with upstreams(1, chunks=30) as (up,):
        from shoal_router.server import default_sources

        async with running_router(upstream_urls=[up.url], api_keys_file=str(keys)) as r:
            src = [s for s in default_sources(r.router.config) if s.__name__ == "keys_file"]
            await src[0](r.router)
            headers = {"Authorization": "Bearer sk-carol"}
            async with httpx.AsyncClient(base_url=r.url) as c:
                first = await c.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers)
                assert first.status_code == 200 and first.text.rstrip().endswith("data: [DONE]")
                assert first.headers["x-ratelimit-limit-tokens"] == "20"
                # 30 content events (no usage chunk asked for) were counted on the fly: over the quota
                over = await c.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers)
                assert over.status_code == 429
                assert over.json()["error"]["code"] == "tokens_quota"
                assert over.headers["x-ratelimit-remaining-tokens"] == "0"
                assert int(over.headers["retry-after"]) >= 30  # 10+ tokens short at 20 per minute
