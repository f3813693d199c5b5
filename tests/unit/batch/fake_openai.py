"""A scriptable OpenAI-compatible server for the batch client's tests (aiohttp, 127.0.0.1, own thread).

Behaviour per prompt (the prompt text, or the last message's content, is the key): a list of actions
consumed one per request, then ``ok``. Actions:
  ("ok",)                 200 with the canned answer
  ("status", code, retry_after_or_None)   an error status, optionally with a Retry-After header value
  ("slow", seconds)       answer after a delay
  ("hang",)               never answer (until the server stops)
  ("drop",)               close the connection without answering
``fail_rate`` adds random 429/503 (seeded) to requests for keys that were never scripted.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Hit:
    at: float  # time.monotonic()
    key: str
    request_id: str | None
    path: str
    status: int
    authorization: str | None
    body: dict[str, Any]


@dataclass
class FakeOpenAI:
    model: str = "fake-model"
    answers: dict[str, str] = field(
        default_factory=dict
    )  # prompt -> response text (default: "echo: <prompt>")
    fail_rate: float = 0.0
    retry_after: str = "0"
    seed: int = 0
    latency_s: float = 0.0
    stream_chunk_delay_s: float = 0.0
    hits: list[Hit] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._plans: dict[str, deque[tuple[Any, ...]]] = defaultdict(deque)
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None

    # ---- scripting -------------------------------------------------------------------------------------
    def script(self, key: str, *actions: tuple[Any, ...]) -> None:
        with self._lock:
            self._plans[key].extend(actions)

    def hits_for(self, key: str) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.key == key]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> FakeOpenAI:
        ready = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(ready))
            except BaseException as exc:  # surfaced to start()
                errors.append(exc)
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake server did not start")
        if errors:
            raise errors[0]
        return self

    async def _serve(self, ready: threading.Event) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._complete)
        app.router.add_post("/v1/chat/completions", self._complete)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._stopping = asyncio.Event()
        ready.set()
        await self._stopping.wait()
        await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- handlers --------------------------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    def _next_action(self, key: str) -> tuple[Any, ...]:
        with self._lock:
            plan = self._plans.get(key)
            if plan:
                return plan.popleft()
            if plan is None and self.fail_rate and self._rng.random() < self.fail_rate:
                return ("status", self._rng.choice([429, 503]), self.retry_after)
            return ("ok",)

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        chat = "messages" in body
        key = body["messages"][-1]["content"] if chat else body["prompt"]
        action = self._next_action(key)
        status = 200 if action[0] in {"ok", "slow"} else action[1] if action[0] == "status" else 0
        with self._lock:
            self.hits.append(
                Hit(
                    time.monotonic(),
                    key,
                    request.headers.get("X-Request-ID"),
                    request.path,
                    status,
                    request.headers.get("Authorization"),
                    body,
                )
            )
        if action[0] == "status":
            headers = {"Retry-After": str(action[2])} if action[2] is not None else {}
            return web.json_response(
                {"error": {"message": f"injected {action[1]}"}}, status=action[1], headers=headers
            )
        if action[0] == "hang":
            assert self._stopping is not None
            await self._stopping.wait()
            raise web.HTTPServiceUnavailable()
        if action[0] == "drop":
            assert request.transport is not None
            request.transport.close()
            raise web.HTTPServiceUnavailable()
        if action[0] == "slow":
            await asyncio.sleep(action[1])
        elif self.latency_s:
            await asyncio.sleep(self.latency_s)
        text = self.answers.get(key, f"echo: {key}")
        usage = {"prompt_tokens": len(key.split()), "completion_tokens": len(text.split())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if body.get("stream"):
            return await self._stream(request, body, chat, text, usage)
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return web.json_response(
            {
                "id": "cmpl-1",
                "object": "chat.completion" if chat else "text_completion",
                "model": body.get("model"),
                "choices": [choice],
                "usage": usage,
            }
        )

    async def _stream(
        self, request: web.Request, body: dict[str, Any], chat: bool, text: str, usage: dict[str, int]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        words = text.split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            if self.stream_chunk_delay_s:
                await asyncio.sleep(self.stream_chunk_delay_s)
            choice: dict[str, Any] = {"index": 0, "finish_reason": None}
            if chat:
                choice["delta"] = {"content": piece}
            else:
                choice["text"] = piece
            await resp.write(b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n")
        final: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
        final["delta" if chat else "text"] = {} if chat else ""
        await resp.write(b"data: " + json.dumps({"choices": [final]}).encode() + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


if (
    __name__ == "__main__"
):  # a standalone flaky server: python tests/unit/batch/fake_openai.py PORT [FAIL_RATE]
    import sys

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    server = FakeOpenAI(port=port, fail_rate=rate).start()
    print(f"listening on {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
