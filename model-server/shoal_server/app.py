"""The HTTP app: OpenAI routes, health, metrics; admission, deadlines and disconnects per request.

`ServerState` holds the parts wired by the composition root (`shoal_server.server`); `create_app`
builds a FastAPI app around it. Everything is per instance, so tests run many apps in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import generate_latest

from shoal_server.admission import Admission, Rejected, Verdict
from shoal_server.config import ServerConfig
from shoal_server.engines.base import Delta, Engine, EngineInputError, Prompt
from shoal_server.metrics import ServerMetrics
from shoal_server.openai_api import (
    SSE_DONE,
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    ResponseBuilder,
    parse_request,
    sampling_from,
    sse,
)

log = logging.getLogger("shoal.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
REQUEST_ID_KEY = "shoal.request_id"
T = TypeVar("T")


@dataclass
class ServerState:
    config: ServerConfig
    engine: Engine
    admission: Admission
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    loaded: bool = False
    draining: bool = False
    load_error: str | None = None

    @property
    def ready(self) -> bool:
        return self.loaded and not self.draining

    def set_loaded(self) -> None:
        self.loaded = True
        self.admission.ready = True
        self.metrics.ready.set(1 if self.ready else 0)

    def start_drain(self) -> None:
        self.draining = True
        self.admission.draining = True
        self.metrics.ready.set(0)
        self.metrics.draining.set(1)

    def update_gauges(self) -> None:
        self.metrics.queue_depth.set(self.admission.queued)
        self.metrics.inflight.set(self.admission.inflight)


class RequestIdMiddleware:
    """Takes X-Request-ID from the request (or makes one) and returns it on every response."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id":
                rid = value.decode("latin-1")[:128]
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


class Generation:
    """One admitted request: owns the slot and the engine stream; `close()` frees both exactly once."""

    def __init__(
        self,
        state: ServerState,
        rid: str,
        prompt: Prompt,
        stream: AsyncIterator[Delta],
        arrival: float,
        deadline: float,
    ) -> None:
        self.state = state
        self.rid = rid
        self.prompt = prompt
        self.stream = stream
        self.arrival = arrival
        self.deadline = deadline
        self.admitted_at = time.monotonic()
        self.completion_tokens = 0
        self.first_token_at: float | None = None
        self.finish_reason: str | None = None
        self.status = 200
        self._closed = False

    async def next_delta(self) -> Delta | None:
        """The next delta, or None when finished; raises APIError(504) past the deadline."""
        if self.finish_reason is not None:
            return None
        remaining = self.deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                delta = await anext(self.stream)
        except StopAsyncIteration:
            self.finish_reason = self.finish_reason or "stop"
            return None
        except EngineInputError as exc:  # the engine refused the parameters (e.g. vLLM's SamplingParams)
            self.status = 400
            raise APIError(400, str(exc), reason="invalid") from None
        except TimeoutError:
            self.status = 504
            raise APIError(
                504,
                f"request exceeded the server's deadline of {self.state.config.request_timeout:g}s",
                type_="timeout_error",
                code="timeout",
                reason="timeout",
            ) from None
        if delta.num_tokens and self.first_token_at is None:
            if delta.first_token_latency_s is not None:
                self.first_token_at = self.admitted_at + delta.first_token_latency_s
            else:
                self.first_token_at = time.monotonic()
            self.state.metrics.ttft.observe(self.first_token_at - self.arrival)
        self.completion_tokens += delta.num_tokens
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason
        return delta

    async def close(self, status: int | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        if status is not None:
            self.status = status
        aclose = getattr(self.stream, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()  # aborts the engine request if it is still running
        now = time.monotonic()
        st = self.state
        st.admission.release(now - self.admitted_at)
        st.update_gauges()
        m = st.metrics
        m.requests.labels(str(self.status)).inc()
        m.duration.observe(now - self.arrival)
        m.tokens.labels("prompt").inc(self.prompt.num_tokens)
        m.tokens.labels("completion").inc(self.completion_tokens)
        log.info(
            "request finished",
            extra={
                "request_id": self.rid,
                "status": self.status,
                "duration_s": round(now - self.arrival, 4),
                "queue_s": round(self.admitted_at - self.arrival, 4),
                "ttft_s": None
                if self.first_token_at is None
                else round(self.first_token_at - self.arrival, 4),
                "prompt_tokens": self.prompt.num_tokens,
                "completion_tokens": self.completion_tokens,
                "finish_reason": self.finish_reason,
            },
        )


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


def create_app(state: ServerState) -> FastAPI:
    cfg = state.config
    app = FastAPI(title="shoal model-server", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> Response:
        if state.load_error:
            return JSONResponse({"status": "error", "error": state.load_error}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        if state.ready:
            return JSONResponse({"status": "ready"})
        reason = "draining" if state.draining else ("error" if state.load_error else "loading")
        return JSONResponse({"status": reason}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        state.update_gauges()
        body = generate_latest(state.metrics.registry) + state.engine.metrics_text()
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models() -> Response:
        card = {
            "id": cfg.served_model_name,
            "object": "model",
            "created": 0,
            "owned_by": "shoal",
            "root": cfg.model,
            "max_model_len": state.engine.max_model_len,
        }
        return JSONResponse({"object": "list", "data": [card]})

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Response:
        return await handle(request, chat=False)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Response:
        return await handle(request, chat=True)

    def refuse(err: APIError) -> JSONResponse:
        if err.reason:
            state.metrics.rejected.labels(err.reason).inc()
        state.metrics.requests.labels(str(err.status)).inc()
        return error_response(err)

    async def handle(request: Request, chat: bool) -> Response:
        arrival = time.monotonic()
        deadline = arrival + cfg.request_timeout
        rid = request_id(request)
        try:
            prompt, req = await prepare(request, chat)
        except APIError as err:
            log.info("request refused", extra={"request_id": rid, "status": err.status, "error": err.message})
            return refuse(err)
        # Admission: a slot now, a place in the bounded queue, or an immediate refusal.
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                acquire = state.admission.acquire()
                state.update_gauges()
                queued_s = await run_watching_disconnect(request, acquire)
        except Rejected as rej:
            state.update_gauges()
            return refuse(rejection_error(rej))
        except TimeoutError:
            state.update_gauges()
            return refuse(
                APIError(
                    504,
                    "request timed out waiting for a free slot",
                    "timeout_error",
                    code="timeout",
                    reason="timeout",
                )
            )
        except ClientGone:
            state.update_gauges()
            state.metrics.requests.labels("499").inc()
            return Response(status_code=499)
        state.metrics.queue_time.observe(queued_s)
        state.update_gauges()

        max_tokens = req.max_tokens
        if isinstance(req, ChatCompletionRequest) and req.max_completion_tokens is not None:
            max_tokens = req.max_completion_tokens
        default_max = cfg.default_max_tokens if chat else 16
        sampling = sampling_from(
            req, min(default_max, state.engine.max_model_len - prompt.num_tokens), max_tokens
        )
        gen = Generation(
            state,
            rid,
            prompt,
            state.engine.generate(rid, prompt, sampling, stream=req.stream),
            arrival,
            deadline,
        )
        builder = ResponseBuilder(chat, rid, cfg.served_model_name)
        if req.stream:
            return await stream_response(request, gen, builder, req.include_usage())
        return await full_response(request, gen, builder)

    async def prepare(
        request: Request, chat: bool
    ) -> tuple[Prompt, CompletionRequest | ChatCompletionRequest]:
        if state.draining:
            raise APIError(
                503, "server is draining; retry on another replica", "service_unavailable", reason="draining"
            )
        if not state.loaded:
            raise APIError(
                503,
                "model is still loading",
                "service_unavailable",
                headers={"Retry-After": "5"},
                reason="not_ready",
            )
        body = await request.body()
        req: CompletionRequest | ChatCompletionRequest
        req = parse_request(body, ChatCompletionRequest) if chat else parse_request(body, CompletionRequest)
        if req.model != cfg.served_model_name:
            raise APIError(
                404,
                f"the model `{req.model}` does not exist; this server serves `{cfg.served_model_name}`",
                param="model",
                code="model_not_found",
                reason="invalid",
            )
        engine = state.engine
        try:
            if isinstance(req, ChatCompletionRequest):
                prompt = engine.tokenize(
                    engine.render_chat(req.messages_as_dicts()), add_special_tokens=False
                )
            elif isinstance(req.prompt, str):
                prompt = engine.tokenize(req.prompt)
            elif isinstance(req.prompt[0], str):
                prompt = engine.tokenize(str(req.prompt[0]))
            else:
                prompt = Prompt(text="", token_ids=tuple(int(t) for t in req.prompt))
        except EngineInputError as exc:
            raise APIError(400, str(exc), reason="invalid") from None
        max_tokens = req.max_tokens
        if isinstance(req, ChatCompletionRequest) and req.max_completion_tokens is not None:
            max_tokens = req.max_completion_tokens
        limit = engine.max_model_len
        if prompt.num_tokens + (max_tokens or 1) > limit:
            raise APIError(
                400,
                f"this model's maximum context length is {limit} tokens; the prompt has {prompt.num_tokens} "
                f"tokens and {max_tokens or 1} more were requested",
                param="messages" if chat else "prompt",
                code="context_length_exceeded",
                reason="invalid",
            )
        return prompt, req

    def rejection_error(rej: Rejected) -> APIError:
        if rej.verdict is Verdict.REJECT_FULL:
            return APIError(
                429,
                f"server overloaded: {state.admission.inflight} requests in flight and "
                f"{state.admission.queued} queued; retry later",
                "rate_limit_error",
                code="queue_full",
                headers={"Retry-After": str(rej.retry_after or 1)},
                reason="queue_full",
            )
        if rej.verdict is Verdict.REJECT_DRAINING:
            return APIError(
                503, "server is draining; retry on another replica", "service_unavailable", reason="draining"
            )
        return APIError(
            503,
            "model is still loading",
            "service_unavailable",
            headers={"Retry-After": "5"},
            reason="not_ready",
        )

    async def full_response(request: Request, gen: Generation, builder: ResponseBuilder) -> Response:
        async def collect() -> str:
            parts: list[str] = []
            while (delta := await gen.next_delta()) is not None:
                parts.append(delta.text)
            return "".join(parts)

        try:
            text = await run_watching_disconnect(request, collect())
        except APIError as err:
            await gen.close(err.status)
            return error_response(err)
        except ClientGone:
            await gen.close(499)
            return Response(status_code=499)
        except BaseException:
            await gen.close(500)
            raise
        await gen.close(200)
        body = builder.full(text, gen.finish_reason, gen.prompt.num_tokens, gen.completion_tokens)
        return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")

    async def stream_response(
        request: Request, gen: Generation, builder: ResponseBuilder, include_usage: bool
    ) -> Response:
        # Wait for the first token before committing to 200, so early failures keep their status.
        try:
            first = await run_watching_disconnect(request, gen.next_delta())
        except APIError as err:
            await gen.close(err.status)
            return error_response(err)
        except ClientGone:
            await gen.close(499)
            return Response(status_code=499)
        except BaseException:
            await gen.close(500)
            raise

        async def chunks() -> AsyncIterator[bytes]:
            head = builder.first_chunk(include_usage)
            if head is not None:
                yield head
            delta = first
            while delta is not None:
                if delta.text or delta.finish_reason is not None:
                    yield builder.delta_chunk(delta.text, delta.finish_reason, include_usage)
                try:
                    delta = await gen.next_delta()
                except APIError as err:
                    gen.status = err.status
                    yield sse(err.body())
                    break
            if include_usage:
                yield builder.usage_chunk(gen.prompt.num_tokens, gen.completion_tokens)
            yield SSE_DONE

        return SSEResponse(chunks(), gen.close)

    return app


def build_asgi(state: ServerState) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The app wrapped in the request-id and load-report middlewares (what uvicorn serves)."""
    from shoal_server.load import LoadMiddleware

    return LoadMiddleware(RequestIdMiddleware(create_app(state)), state)
