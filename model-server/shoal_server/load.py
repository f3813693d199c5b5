"""The replica's load signal for routers and EPPs: every answer carries its queue depth, in-flight count
and limits as headers, and `GET /load` returns them as JSON (cheap: no engine call), so a router polling
every 100 ms sees load that other routers put here too.

`GET /load` also names the LoRA adapters the replica serves right now: a replica turns Ready before the
operator has loaded its adapters into it, and the router must not send an adapter's request there until
it lists the adapter."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOAD_PATH = "/load"


class _Admission(Protocol):
    @property
    def inflight(self) -> int: ...
    @property
    def max_concurrency(self) -> int: ...
    @property
    def max_queue(self) -> int: ...
    @property
    def queued(self) -> int: ...


class _Adapters(Protocol):
    def names(self) -> list[str]: ...


class _Engine(Protocol):
    @property
    def adapters(self) -> _Adapters: ...


class _State(Protocol):
    @property
    def admission(self) -> _Admission: ...
    @property
    def engine(self) -> _Engine: ...
    @property
    def draining(self) -> bool: ...
    @property
    def ready(self) -> bool: ...


def load_doc(state: _State) -> dict[str, Any]:
    a = state.admission
    return {
        "inflight": a.inflight,
        "queued": a.queued,
        "max_concurrency": a.max_concurrency,
        "max_queue": a.max_queue,
        "ready": state.ready,
        "draining": state.draining,
        "adapters": state.engine.adapters.names(),
    }


def load_headers(state: _State) -> list[tuple[bytes, bytes]]:
    a = state.admission
    return [
        (b"x-shoal-inflight", str(a.inflight).encode()),
        (b"x-shoal-queued", str(a.queued).encode()),
        (b"x-shoal-max-concurrency", str(a.max_concurrency).encode()),
        (b"x-shoal-max-queue", str(a.max_queue).encode()),
    ]


class LoadMiddleware:
    """Serves `GET /load` and stamps the load headers on every HTTP answer."""

    def __init__(self, app: ASGIApp, state: _State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("path") == LOAD_PATH and scope.get("method") in ("GET", "HEAD"):
            body = json.dumps(load_doc(self.state)).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})
            return

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *load_headers(self.state)]
            await send(message)

        await self.app(scope, receive, stamped)
