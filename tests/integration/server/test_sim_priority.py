"""Priority scheduling on a real `shoal model-server --engine sim` process: a better-priority request
preempts a running one, whose stream then resumes without a duplicate or missing token."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx
import pytest

from .conftest import ServerProc, eventually, metric

pytestmark = pytest.mark.integration

MODEL = "sim"


def body(
    max_tokens: int, priority: int | None = None, content: str = "tell me about fish"
) -> dict[str, object]:
    out: dict[str, object] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    if priority is not None:
        out["priority"] = priority
    return out


async def stream(
    client: httpx.AsyncClient, payload: dict[str, object], headers: dict[str, str] | None = None
) -> list[tuple[float, str]]:
    """(arrival time, content) of each content chunk."""
    out: list[tuple[float, str]] = []
    async with client.stream("POST", "/v1/chat/completions", json=payload, headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"]
            if delta.get("content"):
                out.append((time.monotonic(), delta["content"]))
    return out


def test_better_priority_preempts_and_the_preempted_stream_resumes(
    server_factory: Callable[..., ServerProc],
) -> None:
    server = server_factory(
        [
            "--engine",
            "sim",
            "--model",
            MODEL,
            "--scheduling-policy",
            "priority",
            "--max-concurrency",
            "4",
            "--sim-max-batch",
            "1",
            "--sim-decode-tokens-per-s",
            "40",
        ]
    )

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            alone = await stream(client, body(16, priority=5))  # the reference text, never preempted
            low = asyncio.create_task(stream(client, body(16, priority=5)))
            await asyncio.to_thread(
                eventually,
                lambda: metric(server.metrics(), "vllm:generation_tokens_total") >= 16 + 3,
                10,
                "the low-priority request to be decoding",
            )
            # the router's header wins over the body's priority: this one is better than the running one
            high = await stream(client, body(4, priority=50, content="urgent"), {"x-shoal-priority": "-1"})
            low_out = await low
            assert [t for _, t in low_out] == [t for _, t in alone]  # no duplicate, nothing missing
            during = [t for t, _ in low_out if high[0][0] < t < high[-1][0]]
            assert during == []  # preempted while the high one ran (batch of one)
            assert low_out[-1][0] > high[-1][0]

    asyncio.run(scenario())
    text = server.metrics()
    assert metric(text, "vllm:num_preemptions_total") == 1
    assert metric(text, "vllm:num_requests_waiting") == 0
    assert metric(text, "vllm:num_requests_running") == 0


def test_fcfs_server_refuses_a_priority_like_vllm(server_factory: Callable[..., ServerProc]) -> None:
    server = server_factory(["--engine", "sim", "--model", MODEL])
    r = httpx.post(
        server.url + "/v1/chat/completions", json={**body(2, priority=1), "stream": False}, timeout=10
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "priority_not_enabled" and err["param"] == "priority"
    assert err["type"] == "invalid_request_error"
    ok = httpx.post(
        server.url + "/v1/chat/completions", json={**body(2, priority=0), "stream": False}, timeout=10
    )
    assert ok.status_code == 200
    assert metric(server.metrics(), "vllm:num_preemptions_total") == 0
