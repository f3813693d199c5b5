"""The HTTP front end over the flow-control core: auth, rate limit, then `Dispatcher.acquire` (which
queues while every replica is full or none is ready), forward, stream back, report, retry.

Streaming-first: request bodies are read once (they are bounded and needed for retries and prefix
hashing); responses are never buffered. Each upstream chunk is written to the client as it arrives and the
write awaits the socket's drain, so a slow client slows the upstream read (backpressure).

A retry happens only before the first byte reaches the client. A 429 means the replica is alive but full:
the request goes back into the router's queue (keeping its turn) until a slot frees or its deadline
passes, and is never sent to an ejected replica. A refused or reset connection ejects the replica and the
request is retried elsewhere; 502/503/504 answers are retried on another replica (drained unread). Once
the response has started it is committed: an upstream failure mid-stream aborts the client connection so
the client sees a truncated transfer, never a silently different answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from shoal_common.names import PRIORITY_HEADER

from shoal_router import frontdoor
from shoal_router.auth import ApiKeys
from shoal_router.config import RouterConfig
from shoal_router.flow.capacity import parse_load_headers
from shoal_router.flow.dispatcher import Dispatcher
from shoal_router.flow.lease import Lease
from shoal_router.flow.model import FlowRequest, Outcome, Rejected
from shoal_router.limits import RateLimiter, RetryBudget
from shoal_router.metrics import RouterMetrics
from shoal_router.prompt import prompt_prefix
from shoal_router.relay import Busy, Retry, relay
from shoal_router.wire import (
    CLIENT_CLOSED,
    GATEWAY_FAILURE_STATUS,
    RequestLog,
    error_response,
    upstream_headers,
)

access_log = logging.getLogger("shoal_router.access")
log = logging.getLogger("shoal_router.proxy")

# rejection codes whose metric label predates the flow-control core (a public series: keep the names)
_REASON = {"no_replica_ready": "hold_timeout", "no_replica_queue_full": "queue_full"}


@dataclass(frozen=True)
class Override:
    """Set by a front end that has already read and routed the request (the multi-model entry point):
    the body to forward (its `model` possibly rewritten by a split), the affinity key, and the replicas
    that serve the requested model."""

    body: bytes
    model: str = ""
    affinity_key: str | None = None
    candidates: frozenset[str] | None = None
    caller: frontdoor.Caller | None = None  # authenticated and rate-limited already (once per request)


class Proxy:
    def __init__(
        self,
        config: RouterConfig,
        dispatcher: Dispatcher,
        metrics: RouterMetrics,
        session: aiohttp.ClientSession,
        keys: ApiKeys,
        limiter: RateLimiter,
        budget: RetryBudget,
        objectives: Mapping[str, int] | None = None,
    ) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.pool = dispatcher.pool
        self.metrics = metrics
        self.session = session
        self.keys = keys
        self.limiter = limiter
        self.budget = budget
        self.objectives = dict(objectives or {})
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=config.connect_timeout_s,
            sock_connect=config.connect_timeout_s,
            sock_read=config.first_byte_timeout_s,
        )

    @property
    def pending(self) -> int:
        return self.dispatcher.pending

    # ------------------------------------------------------------------------------------------------
    async def handle(self, request: web.Request, override: Override | None = None) -> web.StreamResponse:
        start = time.perf_counter()  # not loop.time(): uvloop's clock has millisecond resolution
        rid = frontdoor.request_id(request.headers, uuid.uuid4().hex)
        entry = RequestLog(rid, request.method, request.path)
        response: web.StreamResponse | None = None
        try:
            response = await self._handle(request, entry, start, override)
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
            self._log(entry, time.perf_counter() - start)
        if response.status >= 400 and not response.prepared:
            response.headers["X-Request-ID"] = rid
        return response

    def _log(self, entry: RequestLog, duration: float) -> None:
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

    def _refuse(self, rej: Rejected, entry: RequestLog, reason: str | None = None) -> web.Response:
        self.metrics.rejected.labels(reason or _REASON.get(rej.code, rej.code)).inc()
        entry.error = rej.code
        return web.Response(status=rej.status, body=rej.body(), headers=rej.headers())

    async def _handle(
        self, request: web.Request, entry: RequestLog, start: float, override: Override | None = None
    ) -> web.StreamResponse:
        admitted = override.caller if override is not None else None
        caller = admitted or frontdoor.authenticate(self.keys, request.headers, request.remote)
        if isinstance(caller, Rejected):
            entry.error = "missing or invalid API key"
            self.metrics.rejected.labels("unauthorized").inc()
            return web.Response(status=caller.status, body=caller.body(), headers=caller.headers())
        entry.key_id = caller.key.id if caller.key else ""
        limited = None if admitted else frontdoor.rate_limit(self.limiter, caller)
        if limited is not None:
            return self._refuse(limited, entry, "rate_limited")
        try:
            # bounded by the application's client_max_size
            body = override.body if override is not None else await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.metrics.rejected.labels("too_large").inc()
            entry.error = "body too large"
            return error_response(
                413,
                f"Request body larger than {self.config.max_body_bytes} bytes.",
                "invalid_request_error",
                "request_too_large",
            )
        try:
            key = (
                prompt_prefix(body, self.config.prefix_chars) if self.dispatcher.strategy.needs_key else None
            )
        except RecursionError:
            key = None  # absurdly nested JSON: no affinity (the replica answers it with a 400)
        if override is not None and override.affinity_key is not None:
            key = override.affinity_key
        req = frontdoor.flow_request(
            caller,
            request.headers,
            self.objectives,
            size_bytes=len(body),
            affinity_key=key,
            request_id=entry.request_id,
        )
        if override is not None:
            req = replace(req, model=override.model, candidates=override.candidates)
        else:
            req = frontdoor.adapter_scope(self.pool, self.dispatcher.strategy.needs_key, req, body)
        self.budget.deposit()
        return await self._dispatch(request, req, body, entry, start)

    async def _dispatch(
        self, request: web.Request, req: FlowRequest, body: bytes, entry: RequestLog, start: float
    ) -> web.StreamResponse:
        headers = upstream_headers(request, entry.request_id, drop_auth=self.keys.enabled)
        last: Retry | None = None
        requeue = False
        for _ in range(10_000):  # bounded: every pass either answers, or waits in the queue (deadline)
            try:
                lease = await self.dispatcher.acquire(req, exclude=entry.tried, requeue=requeue)
            except Rejected as rej:
                if rej.code == "exhausted" and last is not None:
                    return self._exhausted(last, entry)
                return self._refuse(rej, entry)
            entry.held_ms += lease.waited_s * 1000
            entry.attempts += 1
            entry.endpoint, entry.pick = lease.endpoint, lease.reason
            try:
                return await self._attempt(request, lease, body, headers, entry, start)
            except Busy:
                # alive but full: back into the queue (keeping its turn) until the request's deadline
                entry.attempts -= 1
                if not requeue:
                    deadline = self.dispatcher.clock() + self.config.queue_timeout_s
                    req = replace(req, deadline=min(deadline, req.deadline or deadline))
                requeue = True
            except Retry as retry:
                last = retry
                if retry.answered:
                    entry.tried.append(lease.endpoint)  # an answer: do not ask the same replica again
                if not self._may_retry(entry):
                    return self._exhausted(retry, entry)
                self.metrics.retries.inc()
                log.info(
                    "retrying on another replica",
                    extra={
                        "request_id": entry.request_id,
                        "endpoint": lease.endpoint,
                        "reason": retry.reason,
                    },
                )
            finally:
                lease.release()
        return error_response(503, "Too many attempts.", "server_error", "upstream_unavailable")

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

    def _exhausted(self, last: Retry, entry: RequestLog) -> web.Response:
        entry.error = last.reason
        message = f"No replica could serve the request ({last.reason})."
        return error_response(last.status or 502, message, "server_error", "upstream_unavailable")

    async def _attempt(
        self,
        request: web.Request,
        lease: Lease,
        body: bytes,
        headers: CIMultiDict[str],
        entry: RequestLog,
        start: float,
    ) -> web.StreamResponse:
        url = lease.endpoint
        if lease.engine_priority is not None:  # per attempt: a retry may be placed at another priority
            headers[PRIORITY_HEADER] = str(lease.engine_priority)
        sent = time.perf_counter()
        try:
            upstream = await self.session.request(
                request.method,
                url + request.rel_url.raw_path_qs,
                data=body or None,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            lease.report(Outcome.CONNECT_FAILED)
            raise Retry(f"connect to {url} failed: {type(exc).__name__}", 502, answered=False) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            lease.report(Outcome.CONNECT_FAILED)
            raise Retry(f"{url} closed the connection before answering", 502, answered=False) from exc
        except (aiohttp.SocketTimeoutError, TimeoutError):
            lease.report(Outcome.TIMEOUT)
            entry.error = "first-byte timeout"
            return error_response(
                504,
                f"The replica did not answer within {self.config.first_byte_timeout_s:g}s.",
                "server_error",
                "upstream_timeout",
            )
        except aiohttp.ClientError as exc:
            lease.report(Outcome.UPSTREAM_ERROR)
            entry.error = f"{type(exc).__name__}: {exc}"
            return error_response(502, "Bad response from the replica.", "server_error", "bad_gateway")
        try:
            now = time.perf_counter()
            self.metrics.upstream_latency.observe(now - sent)
            entry.ttfb_ms = (now - start) * 1000
            self._judge(lease, upstream.status, upstream.headers, entry)
            return await relay(request, upstream, lease, entry, self.dispatcher)
        finally:
            if upstream.content.is_eof():
                upstream.release()  # fully read: the connection goes back to the pool
            else:
                upstream.close()  # unread (retry, client gone, error): drop it so the replica stops work

    def _judge(self, lease: Lease, status: int, headers: Any, entry: RequestLog) -> None:
        """Report the answer's meaning to the core; raise to go again (busy) or elsewhere (gateway error)."""
        load = parse_load_headers(headers)
        if status == 429:
            lease.report(Outcome.BUSY, load)
            raise Busy()
        if status in GATEWAY_FAILURE_STATUS:
            lease.report(Outcome.UPSTREAM_ERROR, load)
            if self._could_retry(entry):
                raise Retry(f"{lease.endpoint} answered {status}", status)
            return
        lease.report(Outcome.SUCCESS, load)

    def _could_retry(self, entry: RequestLog) -> bool:
        """Cheap pre-check (no budget withdrawal) so a last attempt's answer is passed through as is."""
        others = self.pool.eligible([*entry.tried, entry.endpoint])
        return entry.attempts < self.config.max_attempts and bool(others)

    # for tests and debugging
    def describe(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "endpoints": [
                {"url": s.url, "inflight": s.inflight, "ready": s.ready, "terminating": s.terminating}
                for s in self.pool.states()
            ],
        }
