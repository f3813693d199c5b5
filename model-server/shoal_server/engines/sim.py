"""A simulated engine with vLLM's continuous-batching behaviour, for load and autoscaling tests.

Timing model (pure, `SimTiming` in `sim_steps`): the engine runs steps. Each step every running sequence
produces one token; a step with `b` sequences takes `(1 + batch_overhead * (b - 1)) / decode_tokens_per_s`
seconds, plus `prompt_tokens / prefill_tokens_per_s` for sequences that join in that step (their
prefill yields their first token). At most `max_batch` sequences run (and only as many as fit the
KV cache); the rest wait, as in vLLM. Output text is deterministic: a function of the prompt only.

Scheduling policy (vLLM's `--scheduling-policy`, rules in `sim_queue`): `fcfs` serves in arrival order;
`priority` serves lower `priority` values first, preempts the worst running sequence for a better
waiting one when the batch is full, and, without chunked prefill, lets a step's newcomers be of one
priority only (a worse one's prefill would lengthen the step that gives a better one its first token: it
joins at the next step). Preemption is by recompute, as in vLLM: the sequence goes back to waiting with
the tokens it has generated, and when readmitted it prefills prompt + generated tokens again, then
continues its stream from the next token (nothing is sent twice).

Chunked prefill (`max_batched_tokens` > 0, vLLM's `max_num_batched_tokens`; rules in `sim_steps`): a
step computes at most that many tokens, one per decoding sequence and the rest for prefills in
scheduling order, so a long prompt (or a recompute) is prefilled over several steps and a step lasts at
most `decode part + budget / prefill_tokens_per_s`. A step's newcomers may then mix priorities: the
budget bounds the step whoever joins, and a better priority takes the budget before a worse one, so a
worse newcomer only fills what is left and cannot delay a better one's first token by more than the
bounded step it shares. Admission to the batch ignores the budget: a newcomer takes its slot and KV
reservation (and its queue time is observed) at once, and waits there for budget; vLLM would keep it
waiting until a step has budget for it, which differs only in where it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import generate_latest
from shoal_common.series import SeriesBuilder

from shoal_server.engines.adapters import AdapterError, AdapterRegistry, LoraSettings, SlotCache
from shoal_server.engines.base import Delta, EngineInputError, Prompt, Sampling
from shoal_server.engines.prefix_cache import PrefixCache
from shoal_server.engines.sim_queue import (
    SchedulingPolicy,
    WaitQueue,
    prefill_together,
    should_preempt,
    worst,
)
from shoal_server.engines.sim_steps import SimTiming, plan_step
from shoal_server.metrics import VllmCompatMetrics

__all__ = ["SIM_VOCAB_SIZE", "SimEngine", "SimTiming", "sim_token_text", "sim_tokenize"]

_TEXT = (
    "the quick brown fox jumps over a lazy dog while small fish swim together in the bright shallow sea "
    "and every wave carries light across the sand so the shoal turns as one"
)
_WORDS = tuple(_TEXT.split(" "))
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
SIM_VOCAB_SIZE = 50000


def sim_tokenize(text: str) -> list[int]:
    return [zlib.crc32(piece.encode()) % SIM_VOCAB_SIZE for piece in _TOKEN_RE.findall(text)]


def sim_token_text(prompt_token_ids: tuple[int, ...], index: int, adapter: str | None = None) -> str:
    """Deterministic output; an adapter shifts it, so its answers differ from the base model's."""
    seed = zlib.crc32(repr(prompt_token_ids[-64:]).encode()) + (
        zlib.crc32(adapter.encode()) if adapter else 0
    )
    return " " + _WORDS[(seed + index * 7) % len(_WORDS)]


@dataclass
class _Seq:
    request_id: str
    prompt: tuple[int, ...]
    sampling: Sampling
    arrival: float
    out: asyncio.Queue[Delta] = field(default_factory=asyncio.Queue)
    generated: int = 0
    text: str = ""
    scheduled_at: float | None = None
    first_token_at: float | None = None
    done: bool = False
    adapter: str | None = None
    slotted: bool = False  # holds a pin on its adapter's slot
    priority: int = 0  # lower is served first (priority policy)
    preempted: bool = False  # back in waiting after a preemption: its next admission recomputes
    to_prefill: int = 0  # prefill (or recompute) tokens still to compute in the batch; 0: decoding
    prefill_started: bool = False  # computed a chunk since its admission (chunked prefill's order)

    @property
    def kv_tokens(self) -> int:
        return len(self.prompt) + self.generated


class SimEngine:
    kind = "sim"
    vocab_size = SIM_VOCAB_SIZE

    def __init__(
        self,
        model_name: str,
        timing: SimTiming,
        max_model_len: int = 2048,
        lora: LoraSettings | None = None,
        policy: SchedulingPolicy = "fcfs",
    ) -> None:
        self.model_name = model_name
        self.lora = lora or LoraSettings()
        self.adapters = AdapterRegistry(model_name, self.lora.max_adapters)
        self.slots = SlotCache(self.lora.max_loras)
        self.timing = timing
        self.max_model_len = max_model_len
        self.metrics = VllmCompatMetrics(model_name)
        self.policy: SchedulingPolicy = policy
        self._waiting: WaitQueue[_Seq] = WaitQueue(policy)
        self._running: list[_Seq] = []
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self.prefix_cache = PrefixCache(timing.prefix_cache_tokens)
        # vLLM's names: prompt tokens looked up in / found in the prefix cache
        series = SeriesBuilder(self.metrics.registry)
        self.prefix_queries = series.counter(
            "vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache."
        )
        self.prefix_hits = series.counter(
            "vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache."
        )
        self.lora_loads = series.counter(
            "shoal_sim_lora_loads", "Adapters brought into a batch slot (simulated)."
        )
        self.lora_evictions = series.counter(
            "shoal_sim_lora_evictions", "Adapters evicted from a batch slot (simulated)."
        )
        self.preemptions = series.counter(
            "vllm:num_preemptions", "Cumulative number of preemption from the engine."
        )

    async def add_adapter(self, name: str, path: str) -> bool:
        # The simulated engine reads no weights: registering is instant; the slot load is charged later.
        return self.adapters.add(name, path)

    async def remove_adapter(self, name: str) -> None:
        self.adapters.remove(name)
        self.slots.drop(name)

    async def start(self) -> None:
        if self.timing.startup_s:
            await asyncio.sleep(self.timing.startup_s)
        self._loop_task = asyncio.create_task(self._run(), name="sim-engine")

    async def shutdown(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        parts = [f"<|im_start|>{m['role']}\n{m.get('content') or ''}<|im_end|>\n" for m in messages]
        return "".join(parts) + "<|im_start|>assistant\n"

    def tokenize(self, text: str, add_special_tokens: bool = True) -> Prompt:
        return Prompt(text=text, token_ids=tuple(sim_tokenize(text)))

    def metrics_text(self) -> bytes:
        return generate_latest(self.metrics.registry)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        return len(self._running)

    async def generate(
        self,
        request_id: str,
        prompt: Prompt,
        sampling: Sampling,
        stream: bool = True,
        adapter: str | None = None,
        priority: int = 0,
    ) -> AsyncIterator[Delta]:
        if adapter is not None and adapter not in self.adapters:
            raise EngineInputError(str(AdapterError(f"adapter {adapter!r} is not loaded")))
        if priority != 0 and self.policy != "priority":
            raise EngineInputError(f"priority {priority} needs the priority scheduling policy")
        seq = _Seq(
            request_id,
            tuple(prompt.token_ids),
            sampling,
            time.monotonic(),
            adapter=adapter,
            priority=priority,
        )
        self._waiting.push(seq)
        self._update_gauges()
        self._wake.set()
        try:
            while True:
                delta = await seq.out.get()
                yield delta
                if delta.finish_reason is not None:
                    return
        finally:
            if not seq.done:  # aborted by the caller (client gone, deadline, shutdown)
                seq.done = True
                self._waiting.remove(seq)
                if seq in self._running:
                    self._running.remove(seq)
                self._release_slot(seq)
                self._update_gauges()

    def _update_gauges(self) -> None:
        self.metrics.waiting.set(len(self._waiting))
        self.metrics.running.set(len(self._running))
        used = sum(s.kv_tokens for s in self._running)
        self.metrics.kv_usage.set(min(1.0, used / self.timing.kv_cache_tokens))

    def _take_slot(self, seq: _Seq) -> float | None:
        """Pin the sequence's adapter in a slot: the seconds that costs, or None if no slot is free."""
        if seq.adapter is None:
            return 0.0
        grant = self.slots.acquire(seq.adapter)
        if grant is None:
            return None
        seq.slotted = True
        if not grant.loaded:
            return 0.0
        self.lora_loads.inc()
        if grant.evicted is not None:
            self.lora_evictions.inc()
            return self.lora.load_s + self.lora.evict_s
        return self.lora.load_s

    def _release_slot(self, seq: _Seq) -> None:
        if seq.slotted and seq.adapter is not None:
            seq.slotted = False
            self.slots.release(seq.adapter)
            if seq.adapter not in self.adapters:
                self.slots.drop(seq.adapter)

    def _schedule(self) -> tuple[list[_Seq], float]:
        """Move waiting sequences into the batch while they fit, preempting worse-priority running ones
        for better waiting ones (priority policy); returns the newcomers and the seconds spent loading
        their adapters into slots (a sequence whose adapter finds no slot waits, as in vLLM)."""
        joined: list[_Seq] = []
        skipped: list[_Seq] = []
        adapter_s = 0.0
        used = sum(self._kv_need(s) for s in self._running)
        passes = 2 * (len(self._waiting) + len(self._running)) + 1  # each pass admits, skips or preempts
        for _ in range(passes):
            seq = self._waiting.head()
            if seq is None:
                break
            if (
                joined
                and not self.timing.max_batched_tokens
                and not prefill_together(joined[0], seq, self.policy)
            ):
                break  # without a token budget a worse newcomer's prefill would lengthen the step
            need = self._kv_need(seq)
            full = len(self._running) >= self.timing.max_batch
            if full or (self._running and used + need > self.timing.kv_cache_tokens):
                victim = worst(self._running, self.policy)
                if victim is None or not should_preempt(seq, victim, self.policy):
                    break
                self._preempt(victim)
                used -= self._kv_need(victim)
                continue
            cost = self._take_slot(seq)
            self._waiting.pop()
            if cost is None:  # its adapter finds no slot: it waits, later ones may run (vLLM V1 skips it)
                skipped.append(seq)
                continue
            adapter_s += cost
            self._running.append(seq)
            used += need
            joined.append(seq)
        for seq in skipped:
            self._waiting.push(seq)  # back in their place (the queue's order is by arrival)
        return joined, adapter_s

    @staticmethod
    def _kv_need(seq: _Seq) -> int:
        """KV-cache tokens a sequence may hold by its end (what admission reserves)."""
        return len(seq.prompt) + seq.sampling.max_tokens

    def _preempt(self, seq: _Seq) -> None:
        """Recompute preemption: out of the batch, its KV cache dropped, back to waiting."""
        self._running.remove(seq)
        self._release_slot(seq)
        seq.preempted = True
        self._waiting.push(seq)
        self.preemptions.inc()

    async def _run(self) -> None:
        while True:
            if not self._waiting and not self._running:
                self._wake.clear()
                await self._wake.wait()
            now = time.monotonic()
            joined, adapter_s = self._schedule()
            for seq in joined:
                seq.to_prefill, seq.prefill_started = self._admitted(seq, now), False
            plan = plan_step(self._running, self.policy, self.timing.token_budget)
            for seq, chunk in plan.chunks:
                seq.to_prefill -= chunk
                seq.prefill_started = seq.prefill_started or chunk > 0
            self._update_gauges()
            await asyncio.sleep(self.timing.step_s(plan.size, plan.prefilled) + adapter_s)
            now = time.monotonic()
            for seq in plan.emitting:
                if not seq.done and not seq.preempted:
                    self._emit_token(seq, now)
            self._update_gauges()

    def _admitted(self, seq: _Seq, now: float) -> int:
        """Book a sequence joining the batch; returns the tokens its prefill computes (a preempted one
        recomputes its prompt and the tokens it had generated)."""
        if seq.preempted:
            seq.preempted = False
            return self._prefill_tokens(seq.prompt) + seq.generated
        seq.scheduled_at = now
        self.metrics.queue_time.observe(now - seq.arrival)
        self.metrics.prompt_tokens.inc(len(seq.prompt))
        return self._prefill_tokens(seq.prompt)

    def _prefill_tokens(self, prompt: tuple[int, ...]) -> int:
        """Prompt tokens to compute: the cached prefix is skipped (at least one token is always computed)."""
        if self.timing.prefix_cache_tokens == 0:
            return len(prompt)
        cached = min(self.prefix_cache.lookup(prompt), max(0, len(prompt) - 1))
        self.prefix_cache.insert(prompt)
        self.prefix_queries.inc(len(prompt))
        self.prefix_hits.inc(cached)
        return len(prompt) - cached

    def _emit_token(self, seq: _Seq, now: float) -> None:
        piece = sim_token_text(seq.prompt, seq.generated, seq.adapter)
        seq.generated += 1
        self.metrics.generation_tokens.inc()
        if seq.first_token_at is None:
            seq.first_token_at = now
            self.metrics.ttft.observe(now - seq.arrival)
        finish: str | None = None
        new_text = seq.text + piece
        for stop in seq.sampling.stop:
            cut = new_text.find(stop, max(0, len(seq.text) - len(stop) + 1))
            if cut >= 0:
                piece = new_text[:cut][len(seq.text) :]
                new_text = new_text[:cut]
                finish = "stop"
                break
        if finish is None and (
            seq.generated >= seq.sampling.max_tokens or len(seq.prompt) + seq.generated >= self.max_model_len
        ):
            finish = "length"
        seq.text = new_text
        if finish is not None:
            seq.done = True
            self._running.remove(seq)
            self._release_slot(seq)
            self.metrics.e2e.observe(now - seq.arrival)
        seq.out.put_nowait(Delta(text=piece, num_tokens=1, finish_reason=finish))
