"""ASGI plumbing: request ids, a bounded body read, client-disconnect watching, and an SSE response
that frees the engine slot as soon as the client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from shoal_server.errors import APIError, body_too_large

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
REQUEST_ID_KEY = "shoal.request_id"
MAX_REQUEST_ID = 128  # longer client ids are cut: they land in logs, metrics exemplars and responses
T = TypeVar("T")


class RequestIdMiddleware:
    """Takes X-Request-ID from the request (or makes one) and returns it on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id":
                rid = value.decode("latin-1")[:MAX_REQUEST_ID]
                break
        rid = rid or uuid.uuid4().hex
        scope[REQUEST_ID_KEY] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id(request: Request) -> str:
    return str(request.scope.get(REQUEST_ID_KEY) or uuid.uuid4().hex)


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or APIError(413) once it passes `limit` bytes (checked before reading it all)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def wait_for_disconnect(receive: Receive) -> None:
    """Returns when the client goes away (call only after the request body was read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class ClientGone(Exception):
    pass


async def run_watching_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run `work`; cancel it and raise ClientGone if the client disconnects first."""
    work_task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(wait_for_disconnect(request.receive))
    try:
        done, _ = await asyncio.wait({work_task, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work_task.cancel()
        watch.cancel()
        raise
    if work_task in done:
        watch.cancel()
        return work_task.result()
    work_task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await work_task
    raise ClientGone()


class SSEResponse(Response):
    """Streams SSE chunks; if the client disconnects, stops at once and frees the engine slot."""

    def __init__(
        self, chunks: AsyncIterator[bytes], on_close: Callable[[int | None], Awaitable[None]]
    ) -> None:
        super().__init__(status_code=200, media_type="text/event-stream")
        self.chunks = chunks
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )

        async def pump() -> None:
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        status: int | None = None
        pump_task = asyncio.ensure_future(pump())
        watch = asyncio.ensure_future(wait_for_disconnect(receive))
        try:
            done, _ = await asyncio.wait({pump_task, watch}, return_when=asyncio.FIRST_COMPLETED)
            if pump_task not in done:
                status = 499  # client closed the connection
                pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await pump_task
        finally:
            watch.cancel()
            pump_task.cancel()
            await self.on_close(status)
