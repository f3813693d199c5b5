"""One attempt of one request against an OpenAI-compatible endpoint (aiohttp)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from shoal_batch.inputs import Item
from shoal_batch.retry import is_retryable_status, parse_retry_after

MAX_ERROR_BODY = 2048


@dataclass(slots=True)
class Outcome:
    """What one attempt produced: either ``text`` (success) or an error."""

    ok: bool
    latency_s: float
    text: str | None = None
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    ttft_s: float | None = None
    error_type: str | None = None
    status: int | None = None
    message: str | None = None
    retryable: bool = False
    retry_after_s: float | None = None


def request_body(item: Item, model: str | None, defaults: dict[str, Any], stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = dict(defaults)
    if model is not None:
        body["model"] = model
    body.update(item.params)
    if item.messages is not None:
        body["messages"] = item.messages
    else:
        body["prompt"] = item.prompt
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    else:
        body.pop("stream", None)
    return body


def path_for(item: Item) -> str:
    return "/v1/chat/completions" if item.messages is not None else "/v1/completions"


def _choice_text(choice: dict[str, Any], chat: bool) -> str:
    if chat:
        message = choice.get("message") or choice.get("delta") or {}
        content = message.get("content")
        return content if isinstance(content, str) else ""
    text = choice.get("text")
    return text if isinstance(text, str) else ""


def _failure(
    started: float, kind: str, message: str, *, status: int | None = None, retryable: bool
) -> Outcome:
    return Outcome(
        ok=False,
        latency_s=time.perf_counter() - started,
        error_type=kind,
        status=status,
        message=message,
        retryable=retryable,
    )


async def attempt(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    chat: bool,
    stream: bool,
    timeout_s: float,
) -> Outcome:
    """Send once; classify the result. Never raises for network or protocol failures."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            async with session.post(url, data=body, headers=headers) as resp:
                if resp.status != 200:
                    raw = await resp.content.read(MAX_ERROR_BODY)
                    outcome = _failure(
                        started,
                        f"http_{resp.status}",
                        raw.decode("utf-8", "replace").strip()[:500] or resp.reason or "",
                        status=resp.status,
                        retryable=is_retryable_status(resp.status),
                    )
                    outcome.retry_after_s = parse_retry_after(resp.headers.get("Retry-After"), time.time())
                    return outcome
                if stream:
                    return await _read_stream(resp, started, chat)
                payload = await resp.read()
    except TimeoutError:
        return _failure(started, "timeout", f"no complete response within {timeout_s:g} s", retryable=True)
    except aiohttp.ClientResponseError as exc:
        return _failure(started, "connection", f"{type(exc).__name__}: {exc}", retryable=True)
    except (aiohttp.ClientError, OSError) as exc:
        return _failure(started, "connection", f"{type(exc).__name__}: {exc}", retryable=True)
    latency = time.perf_counter() - started
    try:
        data = json.loads(payload)
        choice = data["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return _failure(
            started, "bad_response", f"unexpected response body: {exc!r}", status=200, retryable=False
        )
    return Outcome(
        ok=True,
        latency_s=latency,
        text=_choice_text(choice, chat),
        usage=data.get("usage"),
        finish_reason=choice.get("finish_reason"),
    )


@dataclass(slots=True)
class _StreamAnswer:
    """What the events of one streamed answer have said so far."""

    started: float
    chat: bool
    parts: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    ttft: float | None = None
    chunks: int = 0

    def add(self, event: Any) -> None:
        if event.get("usage"):
            self.usage = event["usage"]
        for choice in event.get("choices") or ():
            piece = _choice_text(choice, self.chat)
            if piece:
                if self.ttft is None:
                    self.ttft = time.perf_counter() - self.started
                self.parts.append(piece)
                self.chunks += 1
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def outcome(self, saw_done: bool) -> Outcome:
        if not saw_done and self.finish_reason is None:
            return _failure(
                self.started, "connection", "stream ended before [DONE]", status=200, retryable=True
            )
        return Outcome(
            ok=True,
            latency_s=time.perf_counter() - self.started,
            text="".join(self.parts),
            usage=self.usage
            if self.usage is not None
            else {"completion_tokens": self.chunks, "estimated": True},
            finish_reason=self.finish_reason,
            ttft_s=self.ttft,
        )


def _stream_event(data: bytes, started: float) -> Any:
    """One `data:` event decoded, or the failed Outcome that an unreadable or error event means."""
    try:
        event = json.loads(data)
    except ValueError:
        return _failure(started, "bad_response", "invalid JSON in stream", status=200, retryable=False)
    if "error" in event and not event.get("choices"):
        err = event["error"]
        msg = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        return _failure(started, "stream_error", str(msg)[:500], status=200, retryable=True)
    return event


async def _read_stream(resp: aiohttp.ClientResponse, started: float, chat: bool) -> Outcome:
    answer = _StreamAnswer(started, chat)
    saw_done = False
    async for raw_line in resp.content:
        line = raw_line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            saw_done = True
            break
        event = _stream_event(data, started)
        if isinstance(event, Outcome):
            return event
        answer.add(event)
    return answer.outcome(saw_done)


async def discover_model(
    session: aiohttp.ClientSession, base_url: str, headers: dict[str, str], timeout_s: float
) -> str:
    """The first model ``/v1/models`` lists."""
    async with asyncio.timeout(timeout_s), session.get(base_url + "/v1/models", headers=headers) as resp:
        resp.raise_for_status()
        data = await resp.json(content_type=None)
    models = data.get("data") or []
    if not models:
        raise LookupError(f"{base_url}/v1/models lists no model")
    return str(models[0]["id"])
