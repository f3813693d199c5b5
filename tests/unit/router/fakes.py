"""Fake OpenAI upstreams and a router harness for the router tests (real sockets on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from shoal_router.config import RouterConfig
from shoal_router.endpoints import DiscoveredEndpoint
from shoal_router.server import Router, Source, build_app, build_router


@dataclass
class FakeUpstream:
    """A tiny OpenAI-compatible server whose behaviour the test steers."""

    name: str = "up"
    statuses: list[int] = field(default_factory=list)  # next answers' statuses (popped), then 200
    always_status: int | None = None
    chunks: int = 3
    gate: asyncio.Event | None = None  # streaming: sent after the first chunk, the rest wait for this
    break_after_first: bool = False  # streaming: drop the connection after the first chunk
    break_before_body: bool = False  # send 200 headers, then drop the connection
    header_delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    cancelled: int = 0
    completed: int = 0
    inflight: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._complete)
        app.router.add_post("/v1/completions", self._complete)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sock_port = self._runner.addresses[0][1]
        self.url = f"http://{host}:{sock_port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body, "path": request.path})
        self.inflight += 1
        try:
            if self.header_delay_s:
                await asyncio.sleep(self.header_delay_s)
            status = self.statuses.pop(0) if self.statuses else (self.always_status or 200)
            if status != 200:
                return web.json_response(
                    {"error": {"message": f"{self.name} says {status}", "type": "x"}},
                    status=status,
                    headers={"Retry-After": "1"} if status == 429 else None,
                )
            chat = request.path.endswith("chat/completions")
            if body.get("stream"):
                return await self._stream(request, chat)
            self.completed += 1
            text = f"hello from {self.name}"
            choice: dict[str, Any] = (
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                if chat
                else {"index": 0, "text": text, "finish_reason": "stop"}
            )
            return web.json_response(
                {
                    "id": "cmpl-1",
                    "object": "chat.completion" if chat else "text_completion",
                    "created": int(time.time()),
                    "model": body.get("model", "fake"),
                    "choices": [choice],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
                }
            )
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.inflight -= 1

    async def _stream(self, request: web.Request, chat: bool) -> web.StreamResponse:
        if self.break_before_body:  # raw headers straight to the socket, then drop the connection
            assert request.transport is not None
            request.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            request.transport.close()
            return web.Response()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for i in range(self.chunks):
            if chat:
                delta = {"role": "assistant", "content": f"tok{i} "} if i == 0 else {"content": f"tok{i} "}
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
                obj = "chat.completion.chunk"
            else:
                choice = {"index": 0, "text": f"tok{i} ", "finish_reason": None}
                obj = "text_completion"
            chunk = {"id": "c1", "object": obj, "created": 0, "model": "fake", "choices": [choice]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if i == 0:
                if self.break_after_first:
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
                if self.gate is not None:
                    await self.gate.wait()
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        self.completed += 1
        return resp


@asynccontextmanager
async def upstreams(n: int, **kwargs: Any) -> AsyncIterator[list[FakeUpstream]]:
    ups = [FakeUpstream(name=f"up{i}", **kwargs) for i in range(n)]
    try:
        for u in ups:
            await u.start()
        yield ups
    finally:
        for u in ups:
            await u.stop()


@dataclass
class RunningRouter:
    router: Router
    url: str

    def set_endpoints(self, *eps: DiscoveredEndpoint) -> None:
        self.router.pool.update(eps)


@asynccontextmanager
async def running_router(
    config: RouterConfig | None = None,
    *,
    upstream_urls: list[str] | None = None,
    sources: list[Source] | None = None,
    resolver: Any = None,
    **overrides: Any,
) -> AsyncIterator[RunningRouter]:
    """A router on 127.0.0.1 with a random port. Static `upstream_urls` are loaded into the pool directly."""
    base = config or RouterConfig(upstreams=tuple(upstream_urls or ["http://127.0.0.1:9"]), access_log=True)
    if overrides:
        from dataclasses import replace

        base = replace(base, **overrides)
    router = build_router(base)
    app = build_app(router, sources=sources if sources is not None else [], resolver=resolver)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    if upstream_urls is not None:
        router.pool.update(DiscoveredEndpoint(url=u) for u in upstream_urls)
    try:
        yield RunningRouter(router, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


async def eventually(predicate: Any, within: float = 5.0, interval: float = 0.01) -> None:
    """Bounded wait for a condition (no bare sleeps in assertions)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = predicate()
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


class LoopbackResolver:
    """Resolves every name to 127.0.0.1 (aiohttp resolver protocol): lets an EndpointSlice name hosts that
    the API server accepts while the traffic stays on loopback."""

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        pass
