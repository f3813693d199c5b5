import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from shoal_server.engines.sim import SimTiming

from .conftest import MODEL, running_app

pytestmark = pytest.mark.unit

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 5}
SLOW = SimTiming(decode_tokens_per_s=40, prefill_tokens_per_s=1e6)


def sse_events(text: str) -> list[Any]:
    events: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


async def test_models_health_ready_metrics() -> None:
    async with running_app() as (client, _):
        models = (await client.get("/v1/models")).json()
        assert models["data"][0]["id"] == MODEL
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        metrics = (await client.get("/metrics")).text
        for name in (
            "shoal_server_queue_depth",
            "shoal_server_inflight",
            "shoal_server_requests_total",
            "shoal_server_rejected_total",
            "shoal_server_time_to_first_token_seconds_bucket",
            "shoal_server_request_duration_seconds_bucket",
            "shoal_server_tokens_total",
            "vllm:num_requests_waiting",
            "vllm:num_requests_running",
            "vllm:kv_cache_usage_perc",
            "vllm:time_to_first_token_seconds_bucket",
            "vllm:e2e_request_latency_seconds_bucket",
            "vllm:request_queue_time_seconds_bucket",
        ):
            assert name in metrics, name


async def test_chat_completion() -> None:
    async with running_app() as (client, state):
        r = await client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["choices"][0]["message"]["content"].strip()
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"]["completion_tokens"] == 5 and body["usage"]["prompt_tokens"] > 0
        metrics = (await client.get("/metrics")).text
        assert 'shoal_server_requests_total{code="200"} 1.0' in metrics
        assert 'shoal_server_tokens_total{kind="completion"} 5.0' in metrics
        assert state.admission.inflight == 0


async def test_completion_prompt_forms() -> None:
    async with running_app() as (client, _):
        for prompt in ("Once upon a time", ["Once upon a time"], [1, 2, 3]):
            r = await client.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 3})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["object"] == "text_completion" and body["usage"]["completion_tokens"] == 3
        r = await client.post("/v1/completions", json={"model": MODEL, "prompt": "x"})
        assert r.json()["usage"]["completion_tokens"] == 16  # OpenAI's default for completions


async def test_chat_stream_with_usage() -> None:
    async with running_app() as (client, _):
        req = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        r = await client.post("/v1/chat/completions", json=req)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.text)
        assert events[-1] == "[DONE]"
        assert events[0]["choices"][0]["delta"]["role"] == "assistant"
        usage = events[-2]
        assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 5
        content = [e for e in events[1:-2] if e["choices"][0]["delta"].get("content")]
        assert len(content) == 5
        assert events[-3]["choices"][0]["finish_reason"] == "length"
        assert all("usage" in e and e["usage"] is None for e in events[:-2])


async def test_completion_stream_without_usage() -> None:
    async with running_app() as (client, _):
        r = await client.post(
            "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 4, "stream": True}
        )
        events = sse_events(r.text)
        assert events[-1] == "[DONE]"
        assert len(events) == 5 and all("usage" not in e for e in events[:-1])
        assert "".join(e["choices"][0]["text"] for e in events[:-1]).strip()


async def test_request_id_echoed_or_generated() -> None:
    async with running_app() as (client, _):
        r = await client.post("/v1/chat/completions", json=CHAT, headers={"X-Request-ID": "abc-123"})
        assert r.headers["x-request-id"] == "abc-123"
        assert r.json()["id"] == "chatcmpl-abc-123"
        r = await client.get("/healthz")
        assert len(r.headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/v1/chat/completions", b"{not json", 400, "not valid JSON"),
        ("/v1/chat/completions", b"[1, 2]", 400, "JSON object"),
        ("/v1/chat/completions", json.dumps({"model": MODEL}).encode(), 400, "messages"),
        ("/v1/chat/completions", json.dumps({**CHAT, "model": "nope"}).encode(), 404, "does not exist"),
        ("/v1/chat/completions", json.dumps({**CHAT, "messages": []}).encode(), 400, "messages"),
        ("/v1/chat/completions", json.dumps({**CHAT, "temperature": 5}).encode(), 400, "temperature"),
        ("/v1/chat/completions", json.dumps({**CHAT, "max_tokens": 0}).encode(), 400, "max_tokens"),
        ("/v1/chat/completions", json.dumps({**CHAT, "max_tokens": "many"}).encode(), 400, "max_tokens"),
        ("/v1/chat/completions", json.dumps({**CHAT, "n": 3}).encode(), 400, "n"),
        ("/v1/chat/completions", json.dumps({**CHAT, "max_tokens": 100000}).encode(), 400, "context length"),
        (
            "/v1/chat/completions",
            json.dumps({**CHAT, "messages": [{"role": "wizard", "content": "x"}]}).encode(),
            400,
            "role",
        ),
        (
            "/v1/completions",
            json.dumps({"model": MODEL, "prompt": "word " * 400}).encode(),
            400,
            "context length",
        ),
        ("/v1/completions", json.dumps({"model": MODEL}).encode(), 400, "prompt"),
        ("/v1/completions", json.dumps({"model": MODEL, "prompt": ["a", "b"]}).encode(), 400, "prompt"),
        ("/v1/completions", json.dumps({"model": MODEL, "prompt": "x", "stop": [""]}).encode(), 400, "stop"),
    ],
)
async def test_bad_input_is_4xx_with_openai_error(path: str, body: bytes, status: int, needle: str) -> None:
    async with running_app() as (client, _):
        r = await client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert needle.lower() in err["message"].lower()
        assert set(err) == {"message", "type", "param", "code"}
        metrics = (await client.get("/metrics")).text
        assert 'shoal_server_rejected_total{reason="invalid"} 1.0' in metrics


async def test_not_ready_until_loaded() -> None:
    async with running_app(loaded=False) as (client, state):
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
        r = await client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 503 and "Retry-After" in r.headers
        await state.engine.start()
        state.set_loaded()
        assert (await client.get("/readyz")).status_code == 200


async def test_overload_returns_429_with_retry_after() -> None:
    async with running_app(timing=SLOW, max_concurrency=2, max_queue=2) as (client, state):
        long = {**CHAT, "max_tokens": 30}
        busy = [asyncio.create_task(client.post("/v1/chat/completions", json=long)) for _ in range(4)]
        await eventually(lambda: state.admission.inflight == 2 and state.admission.queued == 2)
        r = await client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["type"] == "rate_limit_error"
        metrics = (await client.get("/metrics")).text
        assert "shoal_server_queue_depth 2.0" in metrics and "shoal_server_inflight 2.0" in metrics
        assert 'shoal_server_rejected_total{reason="queue_full"} 1.0' in metrics
        results = await asyncio.wait_for(asyncio.gather(*busy), 20)
        assert [x.status_code for x in results] == [200] * 4


async def test_deadline_gives_504_and_frees_slot() -> None:
    async with running_app(timing=SLOW, request_timeout=0.2, max_concurrency=1, max_queue=1) as (
        client,
        state,
    ):
        r = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 200})
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "timeout"
        assert state.admission.inflight == 0
        assert state.engine.num_running == 0  # type: ignore[attr-defined]
        # streaming: the deadline hits after the first token -> an error event, then [DONE]
        r = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 200, "stream": True})
        events = sse_events(r.text)
        assert events[-1] == "[DONE]" and "error" in events[-2]
        assert state.admission.inflight == 0


async def test_draining_rejects_new_requests_and_finishes_inflight() -> None:
    async with running_app(timing=SLOW) as (client, state):
        inflight = asyncio.create_task(client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 10}))
        await eventually(lambda: state.admission.inflight == 1)
        state.start_drain()
        assert (await client.get("/readyz")).status_code == 503
        r = await client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 503 and "draining" in r.json()["error"]["message"]
        assert (await asyncio.wait_for(inflight, 10)).status_code == 200
        assert await state.admission.wait_idle(1)


async def test_unhandled_content_never_500() -> None:
    async with running_app() as (client, _):
        for body in (b"", b"null", b'"x"', b'{"model": 1}', '{"model": "\u00e9"'.encode()):
            r = await client.post("/v1/chat/completions", content=body)
            assert 400 <= r.status_code < 500, (body, r.status_code)


async def eventually(cond: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def test_httpx_available() -> None:
    assert httpx.__version__


async def test_engine_parameter_refusal_is_400() -> None:
    from shoal_server.engines.base import EngineInputError

    async with running_app() as (client, state):
        engine = state.engine

        async def refuse(*_: Any, **__: Any) -> Any:
            raise EngineInputError("top_p must be in (0, 1]")
            yield  # pragma: no cover

        engine.generate = refuse  # type: ignore[method-assign]
        r = await client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 400 and "top_p" in r.json()["error"]["message"]
        r = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert r.status_code == 400
        assert state.admission.inflight == 0
