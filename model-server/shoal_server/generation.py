"""One admitted request: owns the admission slot and the engine stream, and records it when it ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from shoal_server.engines.base import Delta, EngineInputError, Prompt
from shoal_server.errors import deadline_exceeded, invalid
from shoal_server.state import ServerState

log = logging.getLogger("shoal.server")


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
        priority: int = 0,
    ) -> None:
        self.state = state
        self.priority = priority  # its admission slot's priority (released with it)
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
        except EngineInputError as exc:  # the engine refused the request (e.g. vLLM's input checks)
            self.status = 400
            raise invalid(str(exc)) from None
        except TimeoutError:
            self.status = 504
            raise deadline_exceeded(self.state.config.request_timeout) from None
        self._observe(delta)
        return delta

    def _observe(self, delta: Delta) -> None:
        if delta.num_tokens and self.first_token_at is None:
            if delta.first_token_latency_s is not None:
                self.first_token_at = self.admitted_at + delta.first_token_latency_s
            else:
                self.first_token_at = time.monotonic()
            self.state.metrics.ttft.observe(self.first_token_at - self.arrival)
        self.completion_tokens += delta.num_tokens
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason

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
        st.admission.release(now - self.admitted_at, self.priority)
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
