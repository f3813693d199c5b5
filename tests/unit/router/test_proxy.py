"""The request path through a real router and real fake upstreams on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
from shoal_router.endpoints import DiscoveredEndpoint
from unit.router.fakes import eventually, running_router, upstreams

pytestmark = pytest.mark.unit

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


async def test_non_streaming_passthrough_and_request_id() -> None:
    async with (
        upstreams(1) as (up,),
        running_router(upstream_urls=[up.url]) as r,
        httpx.AsyncClient(base_url=r.url) as c,
    ):
        resp = await c.post("/v1/chat/completions", json=CHAT, headers={"X-Request-ID": "abc-123"})
        assert resp.status_code == 200
        assert resp.json()["choices"][0]["message"]["content"] == "hello from up0"
        assert resp.headers["x-request-id"] == "abc-123"
        assert up.requests[0]["headers"]["X-Request-ID"] == "abc-123"
        # generated when absent, and the same id goes upstream
        resp = await c.post("/v1/completions", json={"model": "fake", "prompt": "x"})
        rid = resp.headers["x-request-id"]
        assert len(rid) >= 16
        assert up.requests[1]["headers"]["X-Request-ID"] == rid
        models = await c.get("/v1/models")
        assert models.json()["data"][0]["id"] == "fake"


async def test_streaming_is_not_buffered() -> None:
    """The first SSE event reaches the client while the upstream is still holding back the rest."""
    gate = asyncio.Event()
    async with (
        upstreams(1, gate=gate, chunks=3) as (up,),
        running_router(upstream_urls=[up.url]) as r,
        httpx.AsyncClient(base_url=r.url) as c,
    ):
        async with c.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            lines = resp.aiter_lines()
            first = await asyncio.wait_for(anext(lines), 5)
            assert first.startswith("data: ") and "tok0" in first
            assert up.completed == 0  # upstream still waiting on the gate
            gate.set()
            rest = [line async for line in lines if line]
        assert rest[-1] == "data: [DONE]"
        assert up.completed == 1


async def test_body_size_limit() -> None:
    async with (
        upstreams(1) as (up,),
        running_router(upstream_urls=[up.url], max_body_bytes=1000) as r,
        httpx.AsyncClient(base_url=r.url) as c,
    ):
        big = {"model": "fake", "prompt": "x" * 5000}
        resp = await c.post("/v1/completions", json=big)
        assert resp.status_code == 413
        assert "larger than 1000" in resp.json()["error"]["message"]
        assert up.requests == []


async def test_retry_on_503_and_429_goes_to_another_replica() -> None:
    async with upstreams(2) as (a, b), running_router(upstream_urls=[a.url, b.url]) as r:
        a.always_status = 503
        b.always_status = None
        async with httpx.AsyncClient(base_url=r.url) as c:
            for _ in range(6):
                resp = await c.post("/v1/chat/completions", json=CHAT)
                assert resp.status_code == 200
                assert resp.json()["choices"][0]["message"]["content"] == "hello from up1"
        a.always_status = 429
        async with httpx.AsyncClient(base_url=r.url) as c:
            resp = await c.post("/v1/chat/completions", json=CHAT)
            assert resp.status_code == 200
        assert r.router.metrics.retries._value.get() >= 1


async def test_retry_on_connect_error() -> None:
    async with upstreams(1) as (up,):
        dead = "http://127.0.0.1:9"  # discard port: nothing listens
        async with running_router(upstream_urls=[dead, up.url], strategy="RoundRobin") as r:
            async with httpx.AsyncClient(base_url=r.url) as c:
                for _ in range(4):
                    resp = await c.post("/v1/chat/completions", json=CHAT)
                    assert resp.status_code == 200
            assert len(up.requests) == 4


async def test_last_answer_passed_through_when_every_replica_fails() -> None:
    async with (
        upstreams(2, always_status=503) as (a, b),
        running_router(upstream_urls=[a.url, b.url]) as r,
        httpx.AsyncClient(base_url=r.url) as c,
    ):
        resp = await c.post("/v1/chat/completions", json=CHAT)
        assert resp.status_code == 503
        assert "says 503" in resp.json()["error"]["message"]  # the replica's own answer
        assert len(a.requests) + len(b.requests) == 2  # each tried once


async def test_max_attempts_and_budget_limit_retries() -> None:
    async with (
        upstreams(4, always_status=503) as ups,
        running_router(upstream_urls=[u.url for u in ups], max_attempts=2) as r,
    ):
        async with httpx.AsyncClient(base_url=r.url) as c:
            resp = await c.post("/v1/chat/completions", json=CHAT)
            assert resp.status_code == 503
        assert sum(len(u.requests) for u in ups) == 2
    async with (
        upstreams(4, always_status=503) as ups,
        running_router(
            upstream_urls=[u.url for u in ups],
            retry_budget_ratio=0.0,
            retry_budget_min_per_s=0.0,
            eject_consecutive_failures=1000,
        ) as r,
    ):
        async with httpx.AsyncClient(base_url=r.url) as c:
            for _ in range(3):
                resp = await c.post("/v1/chat/completions", json=CHAT)
                assert resp.status_code == 503
        assert sum(len(u.requests) for u in ups) == 3  # an empty budget: no retries at all
        assert r.router.metrics.retries_denied._value.get() == 3


async def test_no_retry_once_streaming_started() -> None:
    async with (
        upstreams(2, break_after_first=True, chunks=3) as (a, b),
        running_router(upstream_urls=[a.url, b.url], strategy="RoundRobin") as r,
    ):
        async with httpx.AsyncClient(base_url=r.url) as c:
            with pytest.raises(httpx.HTTPError):
                async with c.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as resp:
                    assert resp.status_code == 200
                    async for _ in resp.aiter_lines():
                        pass
        assert len(a.requests) + len(b.requests) == 1  # committed after the first byte: no retry
        assert r.router.metrics.retries._value.get() == 0


async def test_retry_when_upstream_breaks_before_the_first_byte(caplog) -> None:
    caplog.set_level(logging.INFO)
    async with (
        upstreams(2) as (a, b),
        running_router(upstream_urls=[a.url, b.url], strategy="RoundRobin") as r,
    ):
        a.break_before_body = True  # round-robin: one of the two requests picks `a` first
        async with httpx.AsyncClient(base_url=r.url) as c:
            for _ in range(2):
                resp = await c.post("/v1/chat/completions", json={**CHAT, "stream": True})
                assert resp.status_code == 200
                assert resp.text.rstrip().endswith("data: [DONE]")
        assert len(a.requests) == 1 and len(b.requests) == 2
        assert r.router.metrics.retries._value.get() == 1
        assert "broke before the first byte" in str([rec.__dict__.get("reason") for rec in caplog.records])


async def test_client_disconnect_cancels_upstream() -> None:
    gate = asyncio.Event()  # never set: the upstream would wait forever
    async with (
        upstreams(1, gate=gate) as (up,),
        running_router(upstream_urls=[up.url]) as r,
        httpx.AsyncClient(base_url=r.url) as c,
    ):
        async with c.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as resp:
            lines = resp.aiter_lines()
            await asyncio.wait_for(anext(lines), 5)
            assert up.inflight == 1
        # leaving the block closes the client connection
        await eventually(lambda: up.cancelled == 1 and up.inflight == 0)
        await eventually(lambda: r.router.pool.get(up.url).inflight == 0)  # type: ignore[union-attr]


async def test_client_disconnect_while_waiting_for_headers_cancels_upstream() -> None:
    async with (
        upstreams(1, header_delay_s=30) as (up,),
        running_router(upstream_urls=[up.url]) as r,
        httpx.AsyncClient(base_url=r.url, timeout=httpx.Timeout(0.3)) as c,
    ):
        with pytest.raises(httpx.ReadTimeout):
            await c.post("/v1/chat/completions", json=CHAT)
        await eventually(lambda: up.cancelled == 1)


async def test_terminating_endpoint_receives_nothing_new() -> None:
    gate = asyncio.Event()
    async with (
        upstreams(2) as (a, b),
        running_router(upstream_urls=[a.url, b.url], strategy="RoundRobin") as r,
    ):
        a.gate = b.gate = gate
        async with httpx.AsyncClient(base_url=r.url) as c:
            # a long stream in flight on one replica
            long_stream = c.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True})
            resp = await long_stream.__aenter__()
            lines = resp.aiter_lines()
            await asyncio.wait_for(anext(lines), 5)
            on_a = len(a.requests) == 1
            terminating, other = (a, b) if on_a else (b, a)
            # discovery: that pod is terminating now (still serving)
            r.set_endpoints(
                DiscoveredEndpoint(terminating.url, ready=False, serving=True, terminating=True),
                DiscoveredEndpoint(other.url),
            )
            before = len(terminating.requests)
            for _ in range(20):
                assert (await c.post("/v1/chat/completions", json=CHAT)).status_code == 200
            assert len(terminating.requests) == before
            # the in-flight stream still finishes
            gate.set()
            rest = [line async for line in lines if line]
            assert rest[-1] == "data: [DONE]"
            await long_stream.__aexit__(None, None, None)


async def test_hold_until_a_replica_is_ready() -> None:
    async with upstreams(1) as (up,), running_router(upstream_urls=[]) as r:
        r.set_endpoints(DiscoveredEndpoint(up.url, ready=False))
        async with httpx.AsyncClient(base_url=r.url) as c:
            tasks = [asyncio.create_task(c.post("/v1/chat/completions", json=CHAT)) for _ in range(3)]
            await eventually(lambda: r.router.metrics.pending._value.get() == 3)
            metrics = (await c.get("/metrics")).text
            assert "shoal_router_pending_requests 3.0" in metrics
            assert (await c.get("/readyz")).status_code == 200  # ready to hold, so it stays in its Service
            assert up.requests == []
            r.set_endpoints(DiscoveredEndpoint(up.url, ready=True))
            results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
            assert [x.status_code for x in results] == [200, 200, 200]
            assert r.router.metrics.pending._value.get() == 0


async def test_hold_queue_bound_and_timeout() -> None:
    async with running_router(upstream_urls=[], max_pending=2, pending_timeout_s=0.5) as r:
        r.set_endpoints()
        async with httpx.AsyncClient(base_url=r.url) as c:
            held = [asyncio.create_task(c.post("/v1/chat/completions", json=CHAT)) for _ in range(2)]
            await eventually(lambda: r.router.metrics.pending._value.get() == 2)
            over = await c.post("/v1/chat/completions", json=CHAT)
            assert over.status_code == 429
            assert over.headers["retry-after"] == "5"
            timed_out = await asyncio.wait_for(asyncio.gather(*held), 5)
            assert [x.status_code for x in timed_out] == [503, 503]
            assert "No replica became ready within 0.5s" in timed_out[0].json()["error"]["message"]


async def test_outlier_ejection_and_recovery() -> None:
    async with (
        upstreams(2) as (bad, good),
        running_router(
            upstream_urls=[bad.url, good.url],
            strategy="RoundRobin",
            eject_consecutive_failures=3,
            eject_base_s=0.3,
            max_attempts=1,
        ) as r,
    ):
        bad.always_status = 502
        async with httpx.AsyncClient(base_url=r.url) as c:
            for _ in range(10):
                await c.post("/v1/chat/completions", json=CHAT)
            assert len(bad.requests) == 3  # ejected after 3 consecutive gateway failures
            assert r.router.metrics.ejections._value.get() == 1
            metrics = (await c.get("/metrics")).text
            assert 'shoal_router_endpoints{state="ejected"} 1.0' in metrics
            # still failing after the back-off: one probe, then ejected again (for twice as long)
            st = r.router.pool.get(bad.url)
            assert st is not None
            await eventually(lambda: st.ejected_until <= r.router.pool.clock(), within=3)
            for _ in range(4):
                await c.post("/v1/chat/completions", json=CHAT)
            assert len(bad.requests) == 4
            assert r.router.metrics.ejections._value.get() == 2
            assert st.ejections == 2
            # it recovers: the next probe succeeds and it takes traffic again
            bad.always_status = None
            await eventually(lambda: st.ejected_until <= r.router.pool.clock(), within=3)
            for _ in range(6):
                assert (await c.post("/v1/chat/completions", json=CHAT)).status_code == 200
            assert len(bad.requests) >= 6
            assert st.ejections == 0


async def test_api_keys_and_rate_limit(tmp_path, caplog) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# comment\nalice:sk-alice-secret\nsk-bob-secret\n")
    async with upstreams(1) as (up,):
        from shoal_router.server import default_sources

        async with running_router(
            upstream_urls=[up.url], api_keys_file=str(keys), rate_limit_rps=1, rate_limit_burst=2
        ) as r:
            src = [s for s in default_sources(r.router.config) if s.__name__ == "keys_file"]
            await src[0](r.router)
            caplog.set_level(logging.INFO)
            async with httpx.AsyncClient(base_url=r.url) as c:
                assert (await c.post("/v1/chat/completions", json=CHAT)).status_code == 401
                bad = await c.post(
                    "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer nope"}
                )
                assert bad.status_code == 401
                ok = {"Authorization": "Bearer sk-alice-secret"}
                assert (await c.post("/v1/chat/completions", json=CHAT, headers=ok)).status_code == 200
                assert (await c.post("/v1/chat/completions", json=CHAT, headers=ok)).status_code == 200
                limited = await c.post("/v1/chat/completions", json=CHAT, headers=ok)
                assert limited.status_code == 429
                assert int(limited.headers["retry-after"]) >= 1
                # another key has its own bucket
                bob = {"Authorization": "Bearer sk-bob-secret"}
                assert (await c.post("/v1/chat/completions", json=CHAT, headers=bob)).status_code == 200
            # the router's key is not forwarded, and never logged
            assert "Authorization" not in up.requests[0]["headers"]
            assert "sk-alice-secret" not in caplog.text and "sk-bob-secret" not in caplog.text
            access = [json.loads(json.dumps(rec.__dict__, default=str)) for rec in caplog.records]
            ids = {a.get("key_id") for a in access if a.get("name") == "shoal_router.access"}
            assert len({i for i in ids if i}) == 2


async def test_health_metrics_and_unknown_path() -> None:
    async with (
        upstreams(1) as (up,),
        running_router(upstream_urls=[up.url]) as r,
        httpx.AsyncClient(base_url=r.url) as c,
    ):
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/readyz")).json()["ready_endpoints"] == 1
        await c.post("/v1/chat/completions", json=CHAT)
        text = (await c.get("/metrics")).text
        for name in (
            'shoal_router_requests_total{code="200"} 1.0',
            "shoal_router_upstream_latency_seconds_bucket",
            "shoal_router_retries_total",
            "shoal_router_ejections_total",
            "shoal_router_pending_requests",
            f'shoal_router_endpoint_inflight{{endpoint="{up.url}"}} 0.0',
        ):
            assert name in text
        assert (await c.get("/nope")).status_code == 404
