"""Priority scheduling (vLLM's `--scheduling-policy priority`): the sim engine's waiting order and
recompute preemption, the admission queue's order, and the HTTP surface (`priority`, x-shoal-priority)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from shoal_server.admission import Admission
from shoal_server.completion import engine_priority
from shoal_server.engines.base import Delta, EngineInputError, Prompt, Sampling
from shoal_server.engines.sim import SimEngine, SimTiming, sim_token_text
from shoal_server.engines.sim_queue import WaitQueue, should_preempt, worst
from shoal_server.errors import APIError

pytestmark = pytest.mark.unit


@dataclass
class Item:
    name: str
    priority: int
    arrival: float


def test_wait_queue_orders_by_priority_then_arrival_and_fcfs_ignores_priority() -> None:
    items = [Item("a", 1, 1.0), Item("b", 0, 2.0), Item("c", 1, 0.5), Item("d", -3, 3.0), Item("e", 0, 2.0)]
    q: WaitQueue[Item] = WaitQueue("priority")
    for it in items:
        q.push(it)
    assert [it.name for it in q] == ["d", "b", "e", "c", "a"]  # b and e tie: first pushed first
    f: WaitQueue[Item] = WaitQueue("fcfs")
    for it in items:
        f.push(it)
    assert [it.name for it in f] == ["c", "a", "b", "e", "d"]
    assert f.remove(items[0]) and not f.remove(items[0]) and items[0] not in f and len(f) == 4
    assert f.pop().name == "c" and f.head() is items[1]


def test_preemption_rule_takes_the_worst_and_only_for_a_strictly_better_priority() -> None:
    running = [Item("a", 0, 1.0), Item("b", 2, 1.0), Item("c", 2, 2.0)]
    assert worst(running, "priority") is running[2]  # worst priority, latest arrival
    assert worst(running, "fcfs") is running[2]
    assert should_preempt(Item("w", 1, 9.0), running[2], "priority")
    assert not should_preempt(Item("w", 2, 0.0), running[2], "priority")  # equal: never
    assert not should_preempt(Item("w", -5, 0.0), running[2], "fcfs")
    assert worst([], "priority") is None


async def first_tokens(engine: SimEngine, gens: dict[str, AsyncIterator[Delta]]) -> list[str]:
    """Names in the order their first token came."""
    order: list[str] = []

    async def one(name: str) -> None:
        await anext(gens[name])
        order.append(name)

    await asyncio.wait_for(asyncio.gather(*(one(n) for n in gens)), 10)
    return order


async def test_sim_serves_waiting_requests_in_priority_order() -> None:
    eng = SimEngine("m", SimTiming(decode_tokens_per_s=200, max_batch=1), policy="priority")
    await eng.start()
    try:
        blocker = eng.generate("block", Prompt("", (1,)), Sampling(max_tokens=5), priority=-10)
        first = asyncio.ensure_future(anext(blocker))
        await asyncio.wait_for(first, 5)
        gens = {
            name: eng.generate(name, Prompt("", (2,)), Sampling(max_tokens=1), priority=prio)
            for name, prio in (("low", 5), ("mid", 0), ("high", -1), ("mid2", 0))
        }
        # they queue behind the best-priority blocker (no preemption), then run best first
        order = asyncio.ensure_future(first_tokens(eng, gens))
        await asyncio.sleep(0.01)
        assert eng.num_waiting == 4 and eng.preemptions._value.get() == 0
        async for _ in blocker:
            pass
        assert await order == ["high", "mid", "mid2", "low"]
    finally:
        await eng.shutdown()


async def collect_timed(gen: AsyncIterator[Delta]) -> list[tuple[float, Delta]]:
    return [(time.monotonic(), d) async for d in gen]


async def test_sim_preempts_the_worst_running_and_its_stream_resumes_without_duplicates() -> None:
    timing = SimTiming(decode_tokens_per_s=100, prefill_tokens_per_s=1000, max_batch=1)
    eng = SimEngine("m", timing, policy="priority")
    await eng.start()
    try:
        prompt = Prompt("", tuple(range(1, 101)))  # 100 tokens: a 0.1 s prefill
        low = asyncio.ensure_future(
            collect_timed(eng.generate("low", prompt, Sampling(max_tokens=12), priority=3))
        )
        for _ in range(1000):  # bounded: 4 tokens take 0.14 s
            if eng.metrics.generation_tokens._value.get() >= 4:
                break
            await asyncio.sleep(0.005)
        t_high = time.monotonic()
        high = await collect_timed(eng.generate("high", Prompt("", (7,)), Sampling(max_tokens=3), priority=0))
        low_out = await asyncio.wait_for(low, 10)
    finally:
        await eng.shutdown()
    assert eng.preemptions._value.get() == 1
    # the high one ran before the low one finished (it did not wait for the low one's 12 tokens)
    assert t_high < high[-1][0] < low_out[-1][0]
    # the low one's tokens: none while the high one runs, every index exactly once, same text as unpreempted
    texts = [d.text for _, d in low_out]
    assert texts == [sim_token_text(prompt.token_ids, i) for i in range(12)]
    assert low_out[-1][1].finish_reason == "length"
    paused = [t for t, _ in low_out if high[0][0] <= t <= high[-1][0]]
    assert paused == []
    # readmission recomputes prompt + generated tokens (a prefill of >= 104 tokens: > 0.1 s)
    resumed = next(t for t, _ in low_out if t > high[-1][0])
    assert resumed - high[-1][0] >= 0.1
    assert eng.metrics.prompt_tokens._value.get() == 101  # each prompt counted once, as vLLM
    assert eng.num_waiting == 0 and eng.num_running == 0


async def test_sim_equal_priorities_never_preempt_and_fcfs_refuses_priorities() -> None:
    eng = SimEngine("m", SimTiming(decode_tokens_per_s=200, max_batch=1), policy="priority")
    fcfs = SimEngine("m", SimTiming(decode_tokens_per_s=200, max_batch=1))
    await eng.start()
    try:
        a = asyncio.ensure_future(collect_timed(eng.generate("a", Prompt("", (1,)), Sampling(max_tokens=6))))
        await asyncio.sleep(0.02)
        b = await collect_timed(eng.generate("b", Prompt("", (2,)), Sampling(max_tokens=2)))
        assert b[0][0] > (await a)[-1][0]  # b waited for a: same priority, no preemption
        assert eng.preemptions._value.get() == 0
        with pytest.raises(EngineInputError, match="priority scheduling policy"):
            await anext(fcfs.generate("x", Prompt("", (1,)), Sampling(max_tokens=1), priority=1))
    finally:
        await eng.shutdown()


async def test_sim_abort_while_preempted_leaves_nothing_behind() -> None:
    eng = SimEngine("m", SimTiming(decode_tokens_per_s=100, max_batch=1), policy="priority")
    await eng.start()
    try:
        low = eng.generate("low", Prompt("", (1,)), Sampling(max_tokens=100), priority=1)
        await asyncio.wait_for(anext(low), 5)
        high = eng.generate("high", Prompt("", (2,)), Sampling(max_tokens=50), priority=0)
        await asyncio.wait_for(anext(high), 5)
        assert eng.num_running == 1 and eng.num_waiting == 1 and eng.metrics.waiting._value.get() == 1
        await low.aclose()  # the client of the preempted one leaves
        assert eng.num_waiting == 0
        await high.aclose()
        assert eng.num_running == 0 and eng.metrics.running._value.get() == 0
    finally:
        await eng.shutdown()


async def test_admission_queue_serves_better_priorities_first() -> None:
    adm = Admission(max_concurrency=1, max_queue=8)
    adm.ready = True
    await adm.acquire(-10)  # the best there is in flight: nobody overtakes it (see test_admission)
    order: list[str] = []

    async def wait(name: str, prio: int) -> None:
        await adm.acquire(prio)
        order.append(name)

    tasks = [asyncio.ensure_future(wait(n, p)) for n, p in (("low", 2), ("a", 0), ("high", -1), ("b", 0))]
    await asyncio.sleep(0)
    gone = asyncio.ensure_future(wait("gone", -5))
    await asyncio.sleep(0)
    gone.cancel()  # a cancelled waiter leaves the queue
    await asyncio.sleep(0)
    assert adm.queued == 4
    for prio in (-10, -1, 0, 0):  # each release frees the slot of the one admitted before
        adm.release(0.1, prio)
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == ["high", "a", "b", "low"]


def test_engine_priority_header_wins_under_priority_and_fcfs_refuses_non_zero() -> None:
    assert engine_priority(3, None, "priority") == 3
    assert engine_priority(-100, "7", "priority") == 7  # the router's header overrides the client
    assert engine_priority(0, " -2 ", "priority") == -2
    assert engine_priority(0, "5", "fcfs") == 0  # ignored: the engine has no priorities
    with pytest.raises(APIError) as err:
        engine_priority(1, None, "fcfs")
    assert err.value.status == 400 and err.value.param == "priority"
    assert err.value.code == "priority_not_enabled"
    for bad in ("x", "1.5", str(2**63)):
        with pytest.raises(APIError, match="x-shoal-priority"):
            engine_priority(0, bad, "priority")


def chat(**kw: Any) -> dict[str, Any]:
    return {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **kw}


async def test_http_priority_field(app_factory: Callable[..., Any]) -> None:
    async with app_factory() as (client, _):
        r = await client.post("/v1/chat/completions", json=chat(priority=1))
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "priority_not_enabled"
        assert (
            await client.post("/v1/completions", json={"model": "sim-model", "prompt": "x", "priority": 0})
        ).status_code == 200
        r = await client.post("/v1/chat/completions", json=chat(priority="1"))
        assert r.status_code == 400 and r.json()["error"]["param"] == "priority"
    async with app_factory(scheduling_policy="priority") as (client, _):
        for body, headers in ((chat(priority=-4), {}), (chat(priority=9), {"x-shoal-priority": "-1"})):
            r = await client.post("/v1/chat/completions", json=body, headers=headers)
            assert r.status_code == 200, r.text
        r = await client.post(
            "/v1/completions",
            json={"model": "sim-model", "prompt": "x"},
            headers={"x-shoal-priority": "high"},
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_priority"


async def test_a_worse_prefill_never_shares_the_step_that_gives_a_better_one_its_first_token() -> None:
    timing = SimTiming(decode_tokens_per_s=100, prefill_tokens_per_s=1000, max_batch=4)
    for policy, together in (("priority", False), ("fcfs", True)):
        eng = SimEngine("m", timing, policy=policy)  # type: ignore[arg-type]
        await eng.start()
        try:
            t0 = time.monotonic()
            prio = {"a": 1, "b": 0} if policy == "priority" else {"a": 0, "b": 0}
            gens = {
                n: eng.generate(n, Prompt("", tuple(range(200))), Sampling(max_tokens=1), priority=p)
                for n, p in prio.items()
            }
            got = await asyncio.wait_for(asyncio.gather(*(collect_timed(g) for g in gens.values())), 5)
        finally:
            await eng.shutdown()
        a_first, b_first = got[0][0][0] - t0, got[1][0][0] - t0
        if together:  # fcfs: both prefills (0.4 s) in one step, as before
            assert abs(a_first - b_first) < 0.02 and b_first >= 0.4
        else:  # priority: b's step holds its own prefill only (0.2 s); a joins the next step
            assert a_first >= b_first + 0.2


def test_vllm_engine_gets_the_policy_in_its_engine_args_and_each_request_its_priority() -> None:
    from shoal_server.config import ServerConfig
    from shoal_server.engines.vllm_engine import VllmEngine

    cfg = ServerConfig(engine="vllm", model="/models/m", served_model_name="m", scheduling_policy="priority")
    engine = VllmEngine(cfg)
    assert engine.engine_args().scheduling_policy == "priority"  # vLLM's real AsyncEngineArgs
    assert (
        VllmEngine(ServerConfig(engine="vllm", model="/m", served_model_name="m"))
        .engine_args()
        .scheduling_policy
        == "fcfs"
    )
    seen: list[dict[str, Any]] = []

    class RecordingLLM:  # a narrow fake of AsyncLLM.generate: records its keyword arguments
        async def generate(self, *args: Any, **kw: Any) -> AsyncIterator[Any]:
            seen.append(kw)
            return
            yield

    engine._llm = RecordingLLM()
    engine._sampling_cls = lambda **kw: kw

    async def run(priority: int) -> None:
        async for _ in engine.generate("r", Prompt("", (1,)), Sampling(max_tokens=1), priority=priority):
            pass

    asyncio.run(run(-3))
    asyncio.run(run(0))
    assert seen == [{"priority": -3}, {}]  # 0 is vLLM's default: not passed
