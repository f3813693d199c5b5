"""Chunked prefill in the sim engine (vLLM's `max_num_batched_tokens`): the pure step plan, and the
engine's first tokens and inter-token gaps under long prompts with and without a token budget."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from shoal_server.engines.base import Delta, Prompt, Sampling
from shoal_server.engines.sim import SimEngine, SimTiming
from shoal_server.engines.sim_steps import plan_step, split_budget

pytestmark = pytest.mark.unit


@dataclass
class S:
    name: str
    priority: int
    arrival: float
    to_prefill: int = 0
    prefill_started: bool = False


def test_split_budget_takes_decodes_first_then_prefills_in_order() -> None:
    assert split_budget(3, [100, 50, 200], 128) == (100, 25, 0)
    assert split_budget(0, [10, 20], 100) == (10, 20)
    assert split_budget(8, [5], 8) == (0,)  # decodes spend it all
    assert split_budget(9, [5], 8) == (0,)
    assert split_budget(2, [500, 7], None) == (500, 7)  # no budget: every prefill completes
    assert split_budget(1, [], 64) == ()


def test_plan_orders_prefills_by_priority_then_started_then_arrival() -> None:
    running = [
        S("dec", 5, 0.0),
        S("newer", 0, 1.0, to_prefill=30),
        S("partial", 0, 2.0, to_prefill=40, prefill_started=True),
        S("better", -1, 3.0, to_prefill=50),
        S("worse", 2, 0.5, to_prefill=60),
    ]
    plan = plan_step(running, "priority", 100)
    assert [(s.name, n) for s, n in plan.chunks] == [
        ("better", 50),
        ("partial", 40),
        ("newer", 9),
        ("worse", 0),
    ]
    assert [s.name for s in plan.emitting] == ["dec", "partial", "better"]  # running's order
    assert plan.size == 4 and plan.prefilled == 99  # "worse" got no token: not in the step
    fcfs = plan_step(running, "fcfs", 100)  # priorities ignored; prefills under way still go first
    assert [(s.name, n) for s, n in fcfs.chunks] == [
        ("partial", 40),
        ("worse", 59),
        ("newer", 0),
        ("better", 0),
    ]


def test_without_a_budget_every_prefill_completes_in_one_step() -> None:
    running = [S("a", 0, 0.0, to_prefill=900), S("b", 0, 1.0), S("c", 3, 2.0, to_prefill=5)]
    plan = plan_step(running, "priority", None)
    assert [s.name for s in plan.emitting] == ["a", "b", "c"]
    assert plan.size == 3 and plan.prefilled == 905


def test_a_budgeted_step_is_bounded_whatever_joins() -> None:
    t = SimTiming(prefill_tokens_per_s=1000, decode_tokens_per_s=20, max_batch=4, max_batched_tokens=64)
    running = [S(f"p{i}", 0, float(i), to_prefill=1000) for i in range(3)] + [S("d", 0, 9.0)]
    plan = plan_step(running, "fcfs", t.token_budget)
    assert plan.prefilled == 63 and [s.name for s in plan.emitting] == ["d"]
    assert t.step_s(plan.size, plan.prefilled) <= t.step_s(t.max_batch, t.max_batched_tokens)
    unbounded = plan_step(running, "fcfs", SimTiming(max_batch=4).token_budget)
    assert unbounded.prefilled == 3000


@pytest.mark.parametrize("kw", [{"max_batched_tokens": -1}, {"max_batched_tokens": 15}])
def test_budget_below_the_batch_is_rejected(kw: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="max_batched_tokens"):
        SimTiming(max_batch=16, **kw)
    assert SimTiming(max_batch=16, max_batched_tokens=16).token_budget == 16


LONG = Prompt("", tuple(range(1000)))  # 0.5 s of prefill at 2000 tokens/s


def timing(budget: int) -> SimTiming:
    return SimTiming(
        prefill_tokens_per_s=2000, decode_tokens_per_s=200, max_batch=4, max_batched_tokens=budget
    )


async def first(gen: AsyncIterator[Delta]) -> float:
    await anext(gen)
    return time.monotonic()


async def drain(gen: AsyncIterator[Delta]) -> int:
    return len([d async for d in gen])


async def urgent_ttft(budget: int) -> tuple[float, SimEngine]:
    """A short better-priority request's TTFT, sent while four long prompts fill the batch's step."""
    eng = SimEngine("m", timing(budget), policy="priority")
    await eng.start()
    flood = [eng.generate(f"a{i}", LONG, Sampling(max_tokens=50), priority=5) for i in range(4)]
    started = [asyncio.ensure_future(drain(g)) for g in flood]
    try:
        await asyncio.sleep(0.05)  # the engine is in a step with the flood's prefills
        assert eng.num_running == 4
        t0 = time.monotonic()
        urgent = eng.generate("b", Prompt("", (7, 8, 9)), Sampling(max_tokens=2), priority=-1)
        ttft = await asyncio.wait_for(first(urgent), 10) - t0
        assert await drain(urgent) == 1
        return ttft, eng
    finally:
        for task in started:  # cancelling a drain aborts its request in the engine
            task.cancel()
        await asyncio.gather(*started, return_exceptions=True)
        assert eng.num_running == 0 and eng.num_waiting == 0
        await eng.shutdown()


async def test_budget_bounds_a_better_priority_requests_ttft_under_a_flood_of_long_prompts() -> None:
    chunked, eng = await urgent_ttft(budget=100)
    unchunked, _ = await urgent_ttft(budget=0)
    # without a budget it waits out the step prefilling 4 x 1000 tokens (2 s); with one, the step in
    # progress and its own are each at most a decode part plus 100 / 2000 s
    step = eng.timing.step_s(eng.timing.max_batch, 100)
    assert chunked < unchunked / 4
    assert chunked < 4 * step
    assert unchunked > 1.0
    assert eng.preemptions._value.get() == 1  # it took a long prompt's slot
    assert eng.metrics.ttft._sum.get() > 0


async def gaps_while_a_long_prompt_joins(budget: int) -> float:
    """The longest gap between a decoding sequence's tokens while a long prompt is prefilled."""
    eng = SimEngine("m", timing(budget))
    await eng.start()
    try:
        dec = eng.generate("d", Prompt("", (1, 2)), Sampling(max_tokens=60))
        await anext(dec)
        long = asyncio.ensure_future(drain(eng.generate("l", LONG, Sampling(max_tokens=1))))
        stamps = [time.monotonic()]
        async for _ in dec:
            stamps.append(time.monotonic())
        await asyncio.wait_for(long, 10)
        assert eng.metrics.ttft._sum.get() > 0.5  # the long one still paid its whole prefill
        return max(b - a for a, b in itertools.pairwise(stamps))
    finally:
        await eng.shutdown()


async def test_decodes_keep_flowing_while_a_long_prompt_is_prefilled_in_chunks() -> None:
    chunked = await gaps_while_a_long_prompt_joins(100)
    unchunked = await gaps_while_a_long_prompt_joins(0)
    assert unchunked > 0.45  # one step held the whole 0.5 s prefill
    assert chunked < unchunked / 3


async def test_preempted_sequence_recomputes_through_the_budget_and_resumes_its_stream() -> None:
    t = SimTiming(prefill_tokens_per_s=20000, decode_tokens_per_s=400, max_batch=1, max_batched_tokens=64)
    eng = SimEngine("m", t, policy="priority")
    await eng.start()
    try:
        prompt = Prompt("", tuple(range(300)))  # 5 chunks of 64
        ref = [d.text async for d in eng.generate("ref", prompt, Sampling(max_tokens=20), priority=3)]
        low = eng.generate("low", prompt, Sampling(max_tokens=20), priority=3)
        got = [(await anext(low)).text for _ in range(5)]
        high = [d.text async for d in eng.generate("high", Prompt("", (5,)), Sampling(max_tokens=3))]
        got += [d.text async for d in low]
        assert got == ref and len(high) == 3  # nothing twice, nothing missing
        assert eng.preemptions._value.get() == 1
        assert eng.num_running == 0 and eng.num_waiting == 0
        assert eng.metrics.generation_tokens._value.get() == 43
        assert eng.metrics.prompt_tokens._value.get() == 601  # a recompute is not a new prompt
    finally:
        await eng.shutdown()


async def test_prefix_cache_hits_skip_chunks() -> None:
    t = SimTiming(
        prefill_tokens_per_s=2000, decode_tokens_per_s=200, max_batched_tokens=64, prefix_cache_tokens=4096
    )
    eng = SimEngine("m", t)
    await eng.start()
    try:
        prompt = Prompt("", tuple(range(640)))  # 10 chunks of 64 when nothing is cached
        ttfts = []
        for rid in ("cold", "warm"):
            t0 = time.monotonic()
            gen = eng.generate(rid, prompt, Sampling(max_tokens=1))
            ttfts.append(await first(gen) - t0)
            assert await drain(gen) == 0
        assert ttfts[0] > 0.3  # 640 tokens at 2000/s, over 10 steps
        assert ttfts[1] < ttfts[0] / 4  # only the last token is computed: one step
        assert eng.prefix_hits._value.get() == 639
    finally:
        await eng.shutdown()
