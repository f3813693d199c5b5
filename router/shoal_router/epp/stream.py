"""One ext_proc stream = one HTTP request through the gateway.

Envoy (FULL_DUPLEX_STREAMED) sends the request headers and body chunks without waiting. The EPP buffers
the body (bounded), parses it once, asks the core for an endpoint (which may hold while the pool has no
ready replica), then answers the headers with the destination and echoes the body back in chunks.
Response headers and body chunks pass straight back; the served endpoint and status are reported to the
core when the exchange ends, however it ends (the `finally`).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from shoal_common.names import PRIORITY_HEADER

from shoal_router.epp import responses as r
from shoal_router.epp.body import BodyError, echo_chunks, parse_body
from shoal_router.epp.messages import (
    buffered_request_body,
    header_map,
    response_status,
    served_endpoint,
    subset_hint,
)
from shoal_router.epp.metrics import EppMetrics
from shoal_router.epp.picking import Picked, Picker, PickRequest, Refused
from shoal_router.flow.usage import UsageCounter
from shoal_router.split import SplitTable, rewrite_model

log = logging.getLogger("shoal_router.epp")


@dataclass(frozen=True, slots=True)
class StreamLimits:
    max_body_bytes: int = 16 * 1024 * 1024
    prefix_chars: int = 256
    prompt_key: bool = True  # extract the prompt prefix (the strategy hashes prompts)


@dataclass(slots=True)
class _Exchange:
    """State of one stream."""

    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    subset: frozenset[str] | None = None
    decided: bool = False
    picked: Picked | None = None  # what the core gave us (released in _finish)
    endpoint: str | None = None  # where the gateway sends it: the primary, or the fallback that served
    served: str | None = None
    status: int | None = None
    usage: UsageCounter | None = None  # the answer's tokens, when the tenant has a token quota
    buffered: bool = False  # Envoy sends the request body BUFFERED (else FULL_DUPLEX_STREAMED)
    finished: bool = False


class ExtProcStream:
    """Handles one `Process` call; `run` is an async generator of responses."""

    def __init__(
        self, picker: Picker, metrics: EppMetrics, limits: StreamLimits, splits: SplitTable | None = None
    ) -> None:
        self.picker = picker
        self.metrics = metrics
        self.limits = limits
        self.splits = splits
        self.x = _Exchange()

    async def run(
        self, requests: AsyncIterator[pb.ProcessingRequest]
    ) -> AsyncIterator[pb.ProcessingResponse]:
        try:
            async for req in requests:
                kind = req.WhichOneof("request") or ""
                if kind.startswith("response_"):  # one answer each, no await: no generator in between
                    yield self._on_response(kind, req)
                else:
                    async for resp in self._on_request(kind, req):
                        yield resp
                if self.x.finished:
                    return
        finally:
            self._finish()

    async def _on_request(self, kind: str, req: pb.ProcessingRequest) -> AsyncIterator[pb.ProcessingResponse]:
        x = self.x
        if kind == "request_headers":
            x.headers = header_map(req.request_headers.headers)
            x.subset = subset_hint(req)
            x.buffered = buffered_request_body(req)
            if req.request_headers.end_of_stream:
                async for resp in self._decide(end_of_body=True, send_body=False):
                    yield resp
            elif x.buffered:  # Envoy waits for this answer before it sends the (whole) body
                yield r.continue_request_headers()
        elif kind == "request_body":
            async for resp in self._on_request_body(req):
                yield resp
        elif kind == "request_trailers":
            if not x.decided:
                async for resp in self._decide(end_of_body=False, send_body=True):
                    yield resp
            yield r.continue_request_trailers()

    async def _on_request_body(self, req: pb.ProcessingRequest) -> AsyncIterator[pb.ProcessingResponse]:
        x = self.x
        x.body += req.request_body.body
        if len(x.body) > self.limits.max_body_bytes:
            x.finished = True
            self.metrics.refused.labels("too_large").inc()
            yield r.immediate(
                413,
                f"Request body larger than {self.limits.max_body_bytes} bytes.",
                "invalid_request_error",
                "request_too_large",
            )
        elif req.request_body.end_of_stream or x.buffered:  # BUFFERED: one message holds the whole body
            async for resp in self._decide(end_of_body=req.request_body.end_of_stream, send_body=True):
                yield resp

    def _on_response(self, kind: str, req: pb.ProcessingRequest) -> pb.ProcessingResponse:
        x = self.x
        if kind == "response_headers":
            x.status = response_status(req.response_headers.headers)
            self._observe_served(req)
            extra = (
                self.picker.answer_headers(x.picked) if x.picked is not None and x.picked.metered else None
            )
            if req.response_headers.end_of_stream:
                self._finish()
            return r.continue_response_headers(extra)
        if kind == "response_body":
            self._observe_served(req)
            body = req.response_body
            if x.usage is not None:
                x.usage.feed(body.body)
            if body.end_of_stream:
                self._finish()
            return r.response_body_chunk(body.body, body.end_of_stream)
        self._finish()  # response trailers: the end
        return r.continue_response_trailers()

    async def _decide(self, *, end_of_body: bool, send_body: bool) -> AsyncIterator[pb.ProcessingResponse]:
        x = self.x
        x.decided = True
        body = bytes(x.body)
        rid = x.headers.get(r.REQUEST_ID_HEADER) or uuid.uuid4().hex
        try:
            parsed = parse_body(body, self.limits.prefix_chars, self.limits.prompt_key)
        except BodyError as exc:
            x.finished = True
            self.metrics.refused.labels("bad_request").inc()
            yield r.immediate(400, str(exc), "invalid_request_error", "invalid_request_body", param=exc.param)
            return
        extra = {r.REQUEST_ID_HEADER: rid}
        target = (
            self.splits.target(parsed.model) if self.splits is not None and parsed.model else parsed.model
        )
        rewritten = target != parsed.model
        if rewritten:  # a weighted split: the replica gets the target's name (shared split.py)
            body = rewrite_model(json.loads(body), target)
            parsed = parse_body(body, self.limits.prefix_chars, self.limits.prompt_key)
            extra["content-length"] = str(len(body))
        picked = await self._pick(
            PickRequest(rid, parsed.model, parsed.key, parsed.stream, x.subset, x.headers, len(body))
        )
        if isinstance(picked, pb.ProcessingResponse):
            yield picked
            return
        # The engine priority rides in a header (overwriting a client's): cheaper than rewriting the body
        # and the same for streamed and buffered bodies; without one, a client's copy is removed.
        drop: tuple[str, ...] = ()
        if picked.engine_priority is not None:
            extra[PRIORITY_HEADER] = str(picked.engine_priority)
        elif PRIORITY_HEADER in x.headers:
            drop = (PRIORITY_HEADER,)
        if x.buffered and send_body:
            # BUFFERED: Envoy holds the headers and the body; the pick rides on the body's answer and the
            # body stays in Envoy (replaced only when a split rewrote it). Envoy keeps its copy, so
            # FailOpen can still forward it if this EPP dies while the request waits here.
            yield r.route_to(
                picked.endpoints, extra, in_body=True, body=body if rewritten else None, remove_headers=drop
            )
            return
        yield r.route_to(picked.endpoints, extra, remove_headers=drop)
        if send_body:
            chunks = echo_chunks(body)
            for i, chunk in enumerate(chunks):
                yield r.request_body_chunk(chunk, end_of_body and i == len(chunks) - 1)

    async def _pick(self, req: PickRequest) -> Picked | pb.ProcessingResponse:
        """The core's pick (recorded on the exchange), or the refusal to send as an ImmediateResponse."""
        x = self.x
        t0 = time.perf_counter()
        try:
            picked = await self.picker.pick(req)
        except Refused as ref:
            x.finished = True
            self.metrics.refused.labels(ref.code).inc()
            log.info("refused", extra={"request_id": req.request_id, "status": ref.status, "code": ref.code})
            return r.immediate(
                ref.status,
                ref.message,
                ref.kind,
                ref.code,
                retry_after_s=ref.retry_after_s,
                extra_headers=ref.headers,
            )
        self.metrics.pick_seconds.observe(time.perf_counter() - t0)
        x.picked = picked
        x.endpoint = picked.endpoints[0]
        if picked.metered:
            x.usage = UsageCounter(req.size_bytes)
        self.metrics.picks.inc()
        return picked

    def _observe_served(self, req: pb.ProcessingRequest) -> None:
        x = self.x
        served = served_endpoint(req)
        if served and x.picked and served != x.endpoint and x.served is None:
            self.picker.served(x.picked, served)
            self.metrics.fallbacks.inc()
            x.endpoint = served
        if served:
            x.served = served

    def _finish(self) -> None:
        x = self.x
        x.finished = True
        if x.picked is not None:
            picked, x.picked = x.picked, None
            self.picker.finish(picked, x.status, x.usage.total() if x.usage is not None else 0)
