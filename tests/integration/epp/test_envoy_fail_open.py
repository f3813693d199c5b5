"""FailOpen when the EPP dies in the middle of requests, through a real Envoy (issue 15: "FailOpen falls
back to the pool"). One replica (1 slot, so the EPP queues the second request) behind Envoy's `pool`
cluster (override_host, round-robin without the header); the EPP is SIGKILLed while one request is at
the replica and another waits in the EPP's queue.

- request body BUFFERED: Envoy keeps the body, so both requests go on to the pool: no 5xx;
- request body FULL_DUPLEX_STREAMED (the Inference Extension's mode): Envoy has handed the body to the
  EPP and kept no copy, so it can only fail open before the first body chunk (envoyproxy/envoy#41276)
  and answers 500; asserted so that docs/gateway.md's statement stays true for the Envoy we test with.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from integration.epp.procs import wait_for

pytestmark = pytest.mark.integration

SLOW = ("--max-concurrency", "1", "--max-queue", "4", "--sim-decode-tokens-per-s", "20")


def chat(content: str, max_tokens: int = 20, stream: bool = False) -> dict[str, object]:
    return {
        "model": "sim",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


async def _kill_mid_request(started, request_body: str) -> tuple[int, int]:
    """Statuses of (the request at the replica, the request queued in the EPP) when the EPP dies."""
    rep = started.replica(*SLOW)
    epp = started.epp([rep.hostport])
    envoy = started.envoy(
        pool=[rep.hostport], mode="pool", epp_port=epp.port, fail_open=True, request_body=request_body
    )
    async with httpx.AsyncClient(base_url=envoy.url, timeout=60) as c:
        assert (await c.post("/v1/chat/completions", json=chat("warm", 2))).status_code == 200
        at_replica = asyncio.create_task(c.post("/v1/chat/completions", json=chat("a")))
        await asyncio.sleep(0.3)
        queued = asyncio.create_task(c.post("/v1/chat/completions", json=chat("b")))
        await asyncio.to_thread(
            wait_for, lambda: epp.metric("shoal_router_flow_queued_requests") == 1, 10, "b queued in the EPP"
        )
        epp.kill()
        a, b = await asyncio.wait_for(asyncio.gather(at_replica, queued), 60)
        wait_for(lambda: envoy.stat("cluster.epp.membership_healthy") == 0, 10, "Envoy marked the EPP down")
        for i in range(3):  # and new requests go to the pool
            assert (await c.post("/v1/chat/completions", json=chat(f"n{i}", 2))).status_code == 200
    return a.status_code, b.status_code


async def test_fail_open_with_a_buffered_body_survives_the_epp_dying_mid_request(started):
    assert await _kill_mid_request(started, "BUFFERED") == (200, 200)


async def test_fail_open_cannot_replay_a_full_duplex_body(started):
    a, b = await _kill_mid_request(started, "FULL_DUPLEX_STREAMED")
    assert a == 500 and b == 500


async def test_a_stream_survives_the_epp_dying_when_the_response_skips_the_epp(started):
    """The response side: with the response not sent to the EPP, a streamed answer already flowing is
    complete after the EPP dies (through the EPP it is cut: Envoy cannot fail open after a chunk)."""
    rep = started.replica("--sim-decode-tokens-per-s", "20")
    epp = started.epp([rep.hostport])
    envoy = started.envoy(
        pool=[rep.hostport],
        mode="pool",
        epp_port=epp.port,
        fail_open=True,
        request_body="BUFFERED",
        response_body=False,
    )
    events = []
    async with (
        httpx.AsyncClient(base_url=envoy.url, timeout=60) as c,
        c.stream("POST", "/v1/chat/completions", json=chat("s", 30, stream=True)) as r,
    ):
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                events.append(line)
                if len(events) == 3:
                    epp.kill()
    assert events[-1] == "data: [DONE]" and len(events) >= 31
