"""Completion handling in one place: refuse early, tokenize, size the output, admit, generate, answer.

`/v1/completions` and `/v1/chat/completions` differ only in how the prompt is rendered and in the
response shape (`ResponseBuilder`); everything else (admission, deadline, disconnects, streaming,
errors from the catalogue in `shoal_server.errors`) is this one path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TypeVar

from fastapi import Request
from fastapi.responses import Response
from shoal_common.names import PRIORITY_HEADER

from shoal_server.admission import Rejected, Verdict
from shoal_server.asgi import (
    ClientGone,
    SSEResponse,
    error_response,
    read_body,
    request_id,
    run_watching_disconnect,
)
from shoal_server.engines.base import EngineInputError, Prompt, Sampling
from shoal_server.errors import (
    APIError,
    context_length_exceeded,
    draining,
    invalid,
    model_not_found,
    not_loaded,
    priority_not_enabled,
    queue_full,
    queue_timeout,
)
from shoal_server.generation import Generation
from shoal_server.openai_api import (
    INT64_MAX,
    INT64_MIN,
    ChatCompletionRequest,
    CompletionRequest,
    parse_request,
)
from shoal_server.responses import SSE_DONE, ResponseBuilder, sse
from shoal_server.state import ServerState

T = TypeVar("T")

log = logging.getLogger("shoal.server")

Request_ = CompletionRequest | ChatCompletionRequest
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


def effective_max_tokens(requested: int | None, default: int, max_model_len: int, prompt_tokens: int) -> int:
    """Tokens to generate: the request's own (which must fit the context with the prompt), else the
    default cut to the room the prompt leaves. Raises the context-length error (param set by caller)."""
    need = requested if requested is not None else 1
    if prompt_tokens + need > max_model_len:
        raise context_length_exceeded(max_model_len, prompt_tokens, need, param="")
    if requested is not None:
        return requested
    return min(default, max_model_len - prompt_tokens)


def check_token_ids(ids: Sequence[int], vocab_size: int) -> None:
    """Token-id prompts must name tokens of this model's vocabulary."""
    for i, token in enumerate(ids):
        if not 0 <= token < vocab_size:
            raise invalid(
                f"prompt[{i}]: token id {token} is out of range for this model's vocabulary "
                f"[0, {vocab_size})",
                param="prompt",
                code="invalid_token_id",
            )


def engine_priority(body_priority: int, header: str | None, policy: str) -> int:
    """The request's engine priority. Under the priority policy the router's or endpoint picker's
    `x-shoal-priority` header wins over the body's `priority` (they set it from the request's band and
    tenant, so a client cannot raise itself through them); under fcfs the header is ignored and a
    non-zero body priority is refused, as vLLM does."""
    if policy != "priority":
        if body_priority != 0:
            raise priority_not_enabled(body_priority)
        return 0
    if header is None:
        return body_priority
    try:
        value = int(header.strip())
    except ValueError:
        value = INT64_MAX + 1
    if not INT64_MIN <= value <= INT64_MAX:
        raise invalid(f"{PRIORITY_HEADER} must be a 64-bit integer", code="invalid_priority")
    return value


def sampling_from(req: Request_, max_tokens: int) -> Sampling:
    return Sampling(
        max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        stop=req.stops(),
        seed=req.seed,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        ignore_eos=req.ignore_eos,
    )


def rejection_error(rej: Rejected, inflight: int, queued: int) -> APIError:
    if rej.verdict is Verdict.REJECT_FULL:
        return queue_full(inflight, queued, rej.retry_after or 1)
    if rej.verdict is Verdict.REJECT_DRAINING:
        return draining()
    return not_loaded()


class Completions:
    """The completion path of one replica (both OpenAI routes)."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def refuse(self, err: APIError) -> Response:
        if err.reason:
            self.state.metrics.rejected.labels(err.reason).inc()
        self.state.metrics.requests.labels(str(err.status)).inc()
        return error_response(err)

    async def handle(self, request: Request, chat: bool) -> Response:
        arrival = time.monotonic()
        deadline = arrival + self.state.config.request_timeout
        rid = request_id(request)
        try:
            req, prompt, max_tokens = await self.prepare(request, chat)
            priority = engine_priority(
                req.priority, request.headers.get(PRIORITY_HEADER), self.state.config.scheduling_policy
            )
            await self.admit(request, deadline, priority)
        except APIError as err:
            log.info("request refused", extra={"request_id": rid, "status": err.status, "error": err.message})
            return self.refuse(err)
        except ClientGone:
            self.state.metrics.requests.labels("499").inc()
            return Response(status_code=499)
        engine = self.state.engine
        adapter = None if req.model == self.state.config.served_model_name else req.model
        self.state.metrics.model_requests.labels(req.model).inc()
        stream = engine.generate(
            rid, prompt, sampling_from(req, max_tokens), stream=req.stream, adapter=adapter, priority=priority
        )
        gen = Generation(self.state, rid, prompt, stream, arrival, deadline, priority)
        builder = ResponseBuilder(chat, rid, req.model)
        if req.stream:
            return await stream_response(request, gen, builder, req.include_usage())
        return await full_response(request, gen, builder)

    async def prepare(self, request: Request, chat: bool) -> tuple[Request_, Prompt, int]:
        """Everything checked before a slot is taken: state, body, model, prompt, output size."""
        state, cfg = self.state, self.state.config
        if state.draining:
            raise draining()
        if not state.loaded:
            raise not_loaded()
        body = await read_body(request, cfg.max_body_bytes)
        req: Request_
        req = parse_request(body, ChatCompletionRequest) if chat else parse_request(body, CompletionRequest)
        if req.model != cfg.served_model_name and req.model not in state.engine.adapters:
            raise model_not_found(req.model, cfg.served_model_name)
        prompt = self.tokenize(req)
        default = cfg.default_max_tokens if chat else COMPLETIONS_DEFAULT_MAX_TOKENS
        try:
            max_tokens = effective_max_tokens(
                req.requested_max_tokens(), default, state.engine.max_model_len, prompt.num_tokens
            )
        except APIError as err:
            err.param = "messages" if chat else "prompt"
            raise
        return req, prompt, max_tokens

    def tokenize(self, req: Request_) -> Prompt:
        engine = self.state.engine
        try:
            if isinstance(req, ChatCompletionRequest):
                return engine.tokenize(engine.render_chat(req.messages_as_dicts()), add_special_tokens=False)
            if isinstance(req.prompt, str):
                return engine.tokenize(req.prompt)
            if isinstance(req.prompt[0], str):
                return engine.tokenize(str(req.prompt[0]))
        except EngineInputError as exc:
            raise invalid(str(exc)) from None
        ids = tuple(int(t) for t in req.prompt)
        check_token_ids(ids, engine.vocab_size)
        return Prompt(text="", token_ids=ids)

    async def admit(self, request: Request, deadline: float, priority: int = 0) -> None:
        """A slot now, or after a wait in the bounded queue (in priority order); refusals and timeouts
        as APIError."""
        state = self.state
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                acquire = state.admission.acquire(priority)
                state.update_gauges()
                queued_s = await run_watching_disconnect(request, acquire)
        except Rejected as rej:
            raise rejection_error(rej, state.admission.inflight, state.admission.queued) from None
        except TimeoutError:
            raise queue_timeout() from None
        finally:
            state.update_gauges()
        state.metrics.queue_time.observe(queued_s)


async def _until_first_answer(request: Request, gen: Generation, work: Awaitable[T]) -> T | Response:
    """`work`'s result, or the answer to give instead (an error, or 499 when the client left); the
    generation is closed with that status either way, and any other failure closes it as a 500."""
    try:
        return await run_watching_disconnect(request, work)
    except APIError as err:
        await gen.close(err.status)
        return error_response(err)
    except ClientGone:
        await gen.close(499)
        return Response(status_code=499)
    except BaseException:
        await gen.close(500)
        raise


async def full_response(request: Request, gen: Generation, builder: ResponseBuilder) -> Response:
    async def collect() -> str:
        parts: list[str] = []
        while (delta := await gen.next_delta()) is not None:
            parts.append(delta.text)
        return "".join(parts)

    text = await _until_first_answer(request, gen, collect())
    if isinstance(text, Response):
        return text
    await gen.close(200)
    body = builder.full(text, gen.finish_reason, gen.prompt.num_tokens, gen.completion_tokens)
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


async def stream_response(
    request: Request, gen: Generation, builder: ResponseBuilder, include_usage: bool
) -> Response:
    # Wait for the first token before committing to 200, so early failures keep their status.
    first = await _until_first_answer(request, gen, gen.next_delta())
    if isinstance(first, Response):
        return first

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
