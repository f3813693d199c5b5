"""Relaying one upstream answer to the client, streaming-first: the first piece is awaited while a retry
is still possible (nothing reached the client); from the first byte written the answer is committed, each
chunk is written as it arrives and the write awaits the socket's drain (backpressure to the upstream read).
An upstream failure mid-stream aborts the client connection, so the client sees a truncated transfer.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from shoal_router.flow.dispatcher import Dispatcher
from shoal_router.flow.lease import Lease
from shoal_router.flow.model import Outcome
from shoal_router.flow.usage import UsageCounter
from shoal_router.wire import CLIENT_CLOSED, RequestLog, copy_headers

UPSTREAM_BROKEN = (
    aiohttp.ClientPayloadError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
    aiohttp.SocketTimeoutError,
    TimeoutError,
)


class Retry(Exception):
    """This attempt failed before anything reached the client; try another replica."""

    def __init__(self, reason: str, status: int, answered: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.answered = answered  # False: refused/reset, the replica never answered (it is ejected)


class Busy(Exception):
    """The replica answered 429 (alive, full): the request waits in the queue and goes out again."""


async def relay(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    lease: Lease,
    entry: RequestLog,
    dispatcher: Dispatcher,
) -> web.StreamResponse:
    # The first piece of the body, as soon as it arrives. Nothing has reached the client yet, so an
    # upstream failure here is still retryable.
    try:
        first = await upstream.content.readany()
    except UPSTREAM_BROKEN as exc:
        lease.report(Outcome.CONNECT_FAILED)
        raise Retry(
            f"{entry.endpoint} broke before the first byte: {type(exc).__name__}", 502, answered=False
        ) from exc
    entry.bytes_out += len(first)
    usage = UsageCounter(lease.request.size_bytes) if lease.request.tokens_per_minute > 0 else None
    if usage is not None:
        usage.feed(first)
    if upstream.content.is_eof():
        # The whole body came in one piece (a small JSON answer): one write, one syscall. Nothing is
        # held back to do this; a longer body takes the streaming path below.
        small = web.Response(status=upstream.status, reason=upstream.reason, body=first)
        copy_headers(upstream, small, entry.request_id, drop_length=True)
        _charge(dispatcher, lease, usage, small)
        return small
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    copy_headers(upstream, response, entry.request_id, drop_length=False)
    _quota_headers(dispatcher, lease, response)
    # committed from here on: nothing is retried
    try:
        await response.prepare(request)
        await response.write(first)
        async for chunk in upstream.content.iter_any():
            entry.bytes_out += len(chunk)
            if usage is not None:
                usage.feed(chunk)
            await response.write(chunk)  # awaits drain: backpressure to the upstream read
    except UPSTREAM_BROKEN as exc:
        # upstream broke mid-stream: report, and abort the client connection so it sees truncation
        lease.report(Outcome.UPSTREAM_ERROR)
        entry.error = f"upstream stream broke: {type(exc).__name__}"
        if request.transport is not None:
            request.transport.abort()
        return response
    except ConnectionResetError:
        entry.error = "client disconnected"
        entry.status = CLIENT_CLOSED
        return response
    finally:
        if usage is not None:
            lease.charge(usage.total())
    await response.write_eof()
    return response


def _charge(
    dispatcher: Dispatcher, lease: Lease, usage: UsageCounter | None, response: web.StreamResponse
) -> None:
    if usage is not None:
        lease.charge(usage.total())
        _quota_headers(dispatcher, lease, response)


def _quota_headers(dispatcher: Dispatcher, lease: Lease, response: web.StreamResponse) -> None:
    state = dispatcher.quota(lease.request)
    if state is not None:
        response.headers.update(state.headers())
