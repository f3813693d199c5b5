"""The engine protocol: what the OpenAI layer needs from an engine, and nothing more.

The OpenAI layer (`shoal_server.openai_api`) validates requests, renders chat messages through the
engine's chat template, checks the prompt fits, then streams `Delta`s from `Engine.generate`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shoal_server.engines.adapters import AdapterRegistry


class EngineInputError(ValueError):
    """The request is well-formed JSON but the engine cannot serve it (maps to HTTP 400)."""


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    ignore_eos: bool = False


@dataclass(frozen=True)
class Prompt:
    """A prompt already rendered (chat template applied) and tokenized by the engine."""

    text: str
    token_ids: Sequence[int] = field(default_factory=tuple)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class Delta:
    """New output since the previous delta of the same request."""

    text: str
    num_tokens: int
    finish_reason: str | None = None  # "stop" | "length" | None while generating
    # Set when deltas are coalesced (non-streaming): when the first token came, in seconds after the
    # request was handed to the engine.
    first_token_latency_s: float | None = None


class Engine(Protocol):
    kind: str
    max_model_len: int
    vocab_size: int  # token-id prompts must stay in [0, vocab_size)
    adapters: AdapterRegistry  # LoRA adapters served besides the base model (listed in /v1/models)

    async def start(self) -> None:
        """Load the model; the server is ready once this returns."""

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        """Apply the model's chat template (with the generation prompt)."""
        ...

    def tokenize(self, text: str, add_special_tokens: bool = True) -> Prompt:
        """Tokenize; rendered chat passes add_special_tokens=False (the template has them)."""
        ...

    def generate(
        self,
        request_id: str,
        prompt: Prompt,
        sampling: Sampling,
        stream: bool = True,
        adapter: str | None = None,
        priority: int = 0,
    ) -> AsyncIterator[Delta]:
        """Stream deltas; closing the iterator early (client gone, deadline) aborts the request.
        With stream=False an engine may return one final delta (cheaper: no per-token wake-ups).
        `adapter`: a registered LoRA adapter's name, or None for the base model. `priority`: vLLM's
        (lower is served first; anything but 0 only under the priority scheduling policy)."""
        ...

    async def add_adapter(self, name: str, path: str) -> bool:
        """Register a LoRA adapter (True if new); raises AdapterError when it cannot."""
        ...

    async def remove_adapter(self, name: str) -> None:
        """Unregister a LoRA adapter; raises AdapterError(404) when unknown."""
        ...

    async def shutdown(self) -> None: ...

    def metrics_text(self) -> bytes:
        """Engine metrics in Prometheus text format (vLLM's `vllm:*` series)."""
        ...
