"""The request path: auth, rate limit, hold while no replica is ready, pick, forward, stream back, retry.

Streaming-first: request bodies are read once (they are bounded and needed for retries and prefix
hashing); responses are never buffered. Each upstream chunk is written to the client as it arrives and the
write awaits the socket's drain, so a slow client slows the upstream read (backpressure).

A retry on another replica happens only before the first byte reaches the client: connect errors, a
dropped connection before response headers, and 429/502/503 answers (drained unread). Once the response
has started it is committed: an upstream failure mid-stream aborts the client connection so the client
sees a truncated transfer, never a silently different answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from shoal_router.auth import ApiKeys, bearer_token
from shoal_router.config import RouterConfig
from shoal_router.endpoints import EndpointPool
from shoal_router.limits import RateLimiter, RetryBudget
from shoal_router.metrics import RouterMetrics
from shoal_router.prompt import prompt_prefix
from shoal_router.strategies import PickContext, Strategy

access_log = logging.getLogger("shoal_router.access")
log = logging.getLogger("shoal_router.proxy")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "expect"}
RETRYABLE_STATUS = frozenset({429, 502, 503})
GATEWAY_FAILURE_STATUS = frozenset({502, 503, 504})  # count towards outlier ejection (not 429, not 500)
CLIENT_CLOSED = 499
_UPSTREAM_BROKEN = (
    aiohttp.ClientPayloadError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
    aiohttp.SocketTimeoutError,
    TimeoutError,
)


def error_response(
    status: int, message: str, kind: str, code: str, headers: dict[str, str] | None = None
) -> web.Response:
    """An OpenAI-shaped error body, so SDKs surface the message."""
    body = json.dumps({"error": {"message": message, "type": kind, "code": code}})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


@dataclass(slots=True)
class RequestLog:
    request_id: str
    method: str
    path: str
    status: int = 0
    endpoint: str = ""
    attempts: int = 0
    key_id: str = ""
    held_ms: float = 0.0
    ttfb_ms: float = 0.0
    bytes_out: int = 0
    error: str = ""
    pick: str = ""
    tried: list[str] = field(default_factory=list)


class _Retry(Exception):
    """This attempt failed before anything reached the client; try another replica."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Proxy:
    def __init__(
        self,
        config: RouterConfig,
        pool: EndpointPool,
        strategy: Strategy,
        metrics: RouterMetrics,
        session: aiohttp.ClientSession,
        keys: ApiKeys,
        limiter: RateLimiter,
        budget: RetryBudget,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.strategy = strategy
        self.metrics = metrics
        self.session = session
        self.keys = keys
        self.limiter = limiter
        self.budget = budget
        self.rng = rng or random.Random()
        self.pending = 0
        self._seq = 0
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=config.connect_timeout_s,
            sock_connect=config.connect_timeout_s,
            sock_read=config.first_byte_timeout_s,
        )

    # ------------------------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        start = time.perf_counter()  # not loop.time(): uvloop's clock has millisecond resolution
        rid = request.headers.get("X-Request-ID") or uuid.uuid4().hex
        entry = RequestLog(rid, request.method, request.path)
        response: web.StreamResponse | None = None
        try:
            response = await self._handle(request, entry, start)
            entry.status = entry.status or response.status
        except asyncio.CancelledError:
            entry.status = CLIENT_CLOSED
            entry.error = entry.error or "client disconnected"
            raise
        except Exception as exc:
            entry.status = 500
            entry.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            duration = time.perf_counter() - start
            self.metrics.count_response(entry.status)
            self.metrics.request_duration.observe(duration)
            if self.config.access_log:
                access_log.info(
                    "request",
                    extra={
                        "request_id": entry.request_id,
                        "method": entry.method,
                        "path": entry.path,
                        "status": entry.status,
                        "endpoint": entry.endpoint,
                        "attempts": entry.attempts,
                        "key_id": entry.key_id,
                        "held_ms": round(entry.held_ms, 2),
                        "ttfb_ms": round(entry.ttfb_ms, 2),
                        "duration_ms": round(duration * 1000, 2),
                        "bytes_out": entry.bytes_out,
                        "pick": entry.pick,
                        "error": entry.error,
                    },
                )
        if response.status >= 400 and not response.prepared:
            response.headers["X-Request-ID"] = rid
        return response

    async def _handle(self, request: web.Request, entry: RequestLog, start: float) -> web.StreamResponse:
        # 1. who is calling
        identity = request.remote or "unknown"
        if self.keys.enabled:
            token = bearer_token(request.headers.get("Authorization"), request.headers.get("api-key"))
            info = self.keys.lookup(token) if token else None
            if info is None:
                self.metrics.rejected.labels("unauthorized").inc()
                entry.error = "missing API key" if token is None else "invalid API key"
                return error_response(
                    401,
                    "A valid API key is required: send 'Authorization: Bearer <key>'.",
                    "invalid_request_error",
                    "invalid_api_key",
                    {"WWW-Authenticate": "Bearer"},
                )
            entry.key_id = info.id
            identity = info.id
        # 2. rate limit
        if self.limiter.enabled:
            wait = self.limiter.check(identity)
            if wait > 0:
                self.metrics.rejected.labels("rate_limited").inc()
                entry.error = "rate limited"
                return error_response(
                    429,
                    "Rate limit exceeded for this API key.",
                    "rate_limit_error",
                    "rate_limit_exceeded",
                    {"Retry-After": str(max(1, math.ceil(wait)))},
                )
        # 3. the body (bounded by the application's client_max_size)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.metrics.rejected.labels("too_large").inc()
            entry.error = "body too large"
            return error_response(
                413,
                f"Request body larger than {self.config.max_body_bytes} bytes.",
                "invalid_request_error",
                "request_too_large",
            )
        headers = self._upstream_headers(request, entry.request_id)
        self._seq += 1
        key = prompt_prefix(body, self.config.prefix_chars) if self.strategy.needs_key else None
        ctx = PickContext(seq=self._seq, key=key, rng=self.rng)
        self.budget.deposit()

        last: _Retry | None = None
        while True:
            views = self.pool.eligible(entry.tried)
            if not views:
                if self.pool.has_ready():  # every ready replica already tried
                    assert last is not None
                    return self._exhausted(last, entry)
                held = await self._hold(entry)
                if held is not None:
                    return held
                continue
            pick = self.strategy.pick(views, ctx)
            url = pick.endpoint
            entry.tried.append(url)
            entry.attempts += 1
            entry.endpoint = url
            entry.pick = pick.reason
            self.pool.acquire(url)
            try:
                return await self._attempt(request, url, body, headers, entry, start)
            except _Retry as retry:
                last = retry
                if not self._may_retry(entry):
                    return self._exhausted(retry, entry)
                self.metrics.retries.inc()
                log.info(
                    "retrying on another replica",
                    extra={"request_id": entry.request_id, "endpoint": url, "reason": retry.reason},
                )
            finally:
                self.pool.release(url)

    def _may_retry(self, entry: RequestLog) -> bool:
        if entry.attempts >= self.config.max_attempts:
            self.metrics.retries_denied.inc()
            return False
        if not self.pool.eligible(entry.tried):
            return False  # nobody else to try
        if not self.budget.try_withdraw():
            self.metrics.retries_denied.inc()
            return False
        return True

    def _exhausted(self, last: _Retry, entry: RequestLog) -> web.Response:
        entry.error = last.reason
        status = last.status
        message = f"No replica could serve the request ({last.reason})."
        if status == 429:
            return error_response(429, message, "rate_limit_error", "overloaded", {"Retry-After": "1"})
        return error_response(status, message, "server_error", "upstream_unavailable")

    async def _hold(self, entry: RequestLog) -> web.Response | None:
        """No ready replica: wait (bounded count, bounded time) for one. None when one is ready."""
        cfg = self.config
        if self.pending >= cfg.max_pending:
            self.metrics.rejected.labels("queue_full").inc()
            entry.error = "hold queue full"
            return error_response(
                429,
                "No replica is ready yet and the hold queue is full; retry later.",
                "rate_limit_error",
                "no_replica_queue_full",
                {"Retry-After": str(cfg.pending_retry_after_s)},
            )
        t0 = time.perf_counter()
        self.pending += 1
        self.metrics.pending.inc()
        try:
            async with asyncio.timeout(cfg.pending_timeout_s):
                await self.pool.wait_ready()
        except TimeoutError:
            self.metrics.rejected.labels("hold_timeout").inc()
            entry.error = "hold timeout"
            return error_response(
                503,
                f"No replica became ready within {cfg.pending_timeout_s:g}s (the service may be scaling "
                "from zero); retry later.",
                "server_error",
                "no_replica_ready",
                {"Retry-After": str(cfg.pending_retry_after_s)},
            )
        finally:
            self.pending -= 1
            self.metrics.pending.dec()
            entry.held_ms += (time.perf_counter() - t0) * 1000
        return None

    def _upstream_headers(self, request: web.Request, rid: str) -> CIMultiDict[str]:
        out: CIMultiDict[str] = CIMultiDict()
        drop_auth = self.keys.enabled  # the key is the router's; do not hand it to the replicas
        for name, value in request.headers.items():
            lname = name.lower()
            if lname in REQUEST_DROP or (drop_auth and lname in ("authorization", "api-key")):
                continue
            out.add(name, value)
        out["X-Request-ID"] = rid
        if request.remote:
            prior = request.headers.get("X-Forwarded-For")
            out["X-Forwarded-For"] = f"{prior}, {request.remote}" if prior else request.remote
        return out

    async def _attempt(
        self,
        request: web.Request,
        url: str,
        body: bytes,
        headers: CIMultiDict[str],
        entry: RequestLog,
        start: float,
    ) -> web.StreamResponse:
        target = url + request.rel_url.raw_path_qs
        sent = time.perf_counter()
        try:
            upstream = await self.session.request(
                request.method,
                target,
                data=body or None,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            self.pool.report_failure(url, "connect")
            raise _Retry(f"connect to {url} failed: {type(exc).__name__}", 502) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            self.pool.report_failure(url, "disconnected")
            raise _Retry(f"{url} closed the connection before answering", 502) from exc
        except (aiohttp.SocketTimeoutError, TimeoutError):
            self.pool.report_failure(url, "first-byte timeout")
            entry.error = "first-byte timeout"
            return error_response(
                504,
                f"The replica did not answer within {self.config.first_byte_timeout_s:g}s.",
                "server_error",
                "upstream_timeout",
            )
        except aiohttp.ClientError as exc:
            self.pool.report_failure(url, "client error")
            entry.error = f"{type(exc).__name__}: {exc}"
            return error_response(502, "Bad response from the replica.", "server_error", "bad_gateway")

        try:
            now = time.perf_counter()
            self.metrics.upstream_latency.observe(now - sent)
            entry.ttfb_ms = (now - start) * 1000
            status = upstream.status
            if status in GATEWAY_FAILURE_STATUS:
                self.pool.report_failure(url, f"status {status}")
            else:
                self.pool.report_success(url)
            if status in RETRYABLE_STATUS and self._could_retry(entry):
                raise _Retry(f"{url} answered {status}", status)
            return await self._stream(request, upstream, entry)
        finally:
            if upstream.content.is_eof():
                upstream.release()  # fully read: the connection goes back to the pool
            else:
                upstream.close()  # unread (retry, client gone, error): drop it so the replica stops work

    def _could_retry(self, entry: RequestLog) -> bool:
        """Cheap pre-check (no budget withdrawal) so a last attempt's answer is passed through as is."""
        return entry.attempts < self.config.max_attempts and bool(self.pool.eligible(entry.tried))

    async def _stream(
        self, request: web.Request, upstream: aiohttp.ClientResponse, entry: RequestLog
    ) -> web.StreamResponse:
        # The first piece of the body, as soon as it arrives. Nothing has reached the client yet, so an
        # upstream failure here is still retryable.
        try:
            first = await upstream.content.readany()
        except _UPSTREAM_BROKEN as exc:
            self.pool.report_failure(entry.endpoint, "broken before first byte")
            raise _Retry(f"{entry.endpoint} broke before the first byte: {type(exc).__name__}", 502) from exc
        entry.bytes_out += len(first)
        if upstream.content.is_eof():
            # The whole body came in one piece (a small JSON answer): one write, one syscall. Nothing is
            # held back to do this; a longer body takes the streaming path below.
            small = web.Response(status=upstream.status, reason=upstream.reason, body=first)
            self._copy_headers(upstream, small, entry, drop_length=True)
            return small
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        self._copy_headers(upstream, response, entry, drop_length=False)
        # committed from here on: nothing is retried
        try:
            await response.prepare(request)
            await response.write(first)
            async for chunk in upstream.content.iter_any():
                entry.bytes_out += len(chunk)
                await response.write(chunk)  # awaits drain: backpressure to the upstream read
        except _UPSTREAM_BROKEN as exc:
            # upstream broke mid-stream: report, and abort the client connection so it sees truncation
            self.pool.report_failure(entry.endpoint, "broken stream")
            entry.error = f"upstream stream broke: {type(exc).__name__}"
            if request.transport is not None:
                request.transport.abort()
            return response
        except ConnectionResetError:
            entry.error = "client disconnected"
            entry.status = CLIENT_CLOSED
            return response
        await response.write_eof()
        return response

    @staticmethod
    def _copy_headers(
        upstream: aiohttp.ClientResponse, response: web.StreamResponse, entry: RequestLog, drop_length: bool
    ) -> None:
        for name, value in upstream.headers.items():
            lname = name.lower()
            if lname in HOP_BY_HOP or (drop_length and lname == "content-length"):
                continue
            response.headers.add(name, value)
        response.headers["X-Request-ID"] = entry.request_id

    # for tests and debugging
    def describe(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "endpoints": [
                {"url": s.url, "inflight": s.inflight, "ready": s.ready, "terminating": s.terminating}
                for s in self.pool.states()
            ],
        }
