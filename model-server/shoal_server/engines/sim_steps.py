"""The sim engine's timing model and step plan (vLLM's chunked prefill, `max_num_batched_tokens`). Pure.

`SimTiming`: a step with `b` sequences takes `(1 + batch_overhead * (b - 1)) / decode_tokens_per_s`
seconds (the decode part) plus its prefilled tokens / `prefill_tokens_per_s`.

A step computes at most `budget` tokens. Every decoding sequence takes one; the rest goes to the
sequences still prefilling, in scheduling order, each taking min(its remaining prefill, budget left),
so a long prompt is prefilled over several steps. A sequence yields its first token (or, after a
recompute preemption, its next one) in the step its prefill completes. Scheduling order: under the
`priority` policy better priorities first; within a priority, prefills already under way before the
step's newcomers (vLLM schedules its running requests before its waiting ones), then by arrival.

Without a budget (`None`) every prefill completes in the step it joins: the sim's unchunked model,
where a step lasts as long as all its newcomers' prefills.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from shoal_server.engines.sim_queue import Queued, SchedulingPolicy, order_key


@dataclass(frozen=True)
class SimTiming:
    prefill_tokens_per_s: float = 2000.0
    decode_tokens_per_s: float = 30.0  # one sequence alone
    max_batch: int = 16
    batch_overhead: float = 0.1  # each extra sequence adds this fraction of a single-sequence step
    startup_s: float = 0.0
    kv_cache_tokens: int = 65536
    prefix_cache_tokens: int = 0  # automatic prefix cache capacity (0: off); prefill skips cached blocks
    max_batched_tokens: int = 0  # tokens one step computes (chunked prefill); 0: off, a prefill is one step

    def __post_init__(self) -> None:
        if self.prefill_tokens_per_s <= 0 or self.decode_tokens_per_s <= 0:
            raise ValueError("simulated speeds must be > 0")
        if (
            self.max_batch < 1
            or self.kv_cache_tokens < 1
            or self.batch_overhead < 0
            or self.startup_s < 0
            or self.prefix_cache_tokens < 0
        ):
            raise ValueError("invalid simulated engine settings")
        if self.max_batched_tokens < 0 or 0 < self.max_batched_tokens < self.max_batch:
            # as vLLM: below the batch, a full batch of decodes would leave no token for any prefill
            raise ValueError("max_batched_tokens must be 0 (off) or at least max_batch")

    @property
    def token_budget(self) -> int | None:
        return self.max_batched_tokens or None

    def decode_step_s(self, batch: int) -> float:
        return (1.0 + self.batch_overhead * max(0, batch - 1)) / self.decode_tokens_per_s

    def prefill_s(self, prompt_tokens: int) -> float:
        return prompt_tokens / self.prefill_tokens_per_s

    def step_s(self, batch: int, new_prompt_tokens: int) -> float:
        return self.decode_step_s(batch) + self.prefill_s(new_prompt_tokens)

    def throughput(self, batch: int) -> float:
        """Steady-state decode tokens/s with `batch` sequences running."""
        return batch / self.decode_step_s(batch)


class Prefilling(Queued, Protocol):
    """A queued sequence (priority, arrival) with its prefill progress."""

    @property
    def to_prefill(self) -> int: ...  # prefill tokens still to compute (0: decoding)

    @property
    def prefill_started(self) -> bool: ...  # computed a chunk since its admission


P = TypeVar("P", bound=Prefilling)


def split_budget(decoding: int, remaining: Sequence[int], budget: int | None) -> tuple[int, ...]:
    """Prefill tokens each prefilling sequence computes this step, for `remaining` in scheduling
    order; the `decoding` sequences' one token each comes off the budget first."""
    if budget is None:
        return tuple(remaining)
    left = max(0, budget - decoding)
    out: list[int] = []
    for want in remaining:
        take = min(max(0, want), left)
        out.append(take)
        left -= take
    return tuple(out)


def prefill_key(seq: Prefilling, policy: SchedulingPolicy) -> tuple[int, int, float]:
    """Lower takes the budget first."""
    prio, arrival = order_key(seq, policy)
    return (prio, 0 if seq.prefill_started else 1, arrival)


@dataclass(frozen=True)
class StepPlan(Generic[P]):
    chunks: tuple[tuple[P, int], ...]  # (prefilling sequence, tokens it computes now), in budget order
    emitting: tuple[P, ...]  # the sequences that yield a token at the end of the step
    size: int  # sequences computing something in the step (what the decode part's cost counts)

    @property
    def prefilled(self) -> int:
        return sum(n for _, n in self.chunks)


def plan_step(running: Sequence[P], policy: SchedulingPolicy, budget: int | None) -> StepPlan[P]:
    """What the running sequences compute in the next step; `emitting` keeps `running`'s order."""
    decoding = [s for s in running if s.to_prefill <= 0]
    prefilling = sorted((s for s in running if s.to_prefill > 0), key=lambda s: prefill_key(s, policy))
    split = split_budget(len(decoding), [s.to_prefill for s in prefilling], budget)
    chunks = tuple(zip(prefilling, split, strict=True))
    # identity, not equality: a sequence's fields may equal another's
    yielding = {id(s) for s in decoding} | {id(s) for s, n in chunks if n >= s.to_prefill}
    emitting = tuple(s for s in running if id(s) in yielding)
    return StepPlan(chunks, emitting, len(decoding) + sum(1 for _, n in chunks if n > 0))
