import asyncio
import time

import pytest
from shoal_server.engines.base import Prompt, Sampling
from shoal_server.engines.sim import SimEngine, SimTiming, sim_tokenize

pytestmark = pytest.mark.unit


def test_timing_model_batches_amortise_steps() -> None:
    t = SimTiming(prefill_tokens_per_s=1000, decode_tokens_per_s=20, batch_overhead=0.1)
    assert t.decode_step_s(1) == pytest.approx(0.05)
    assert t.decode_step_s(11) == pytest.approx(0.1)  # 10 extra sequences double the step
    assert t.prefill_s(500) == pytest.approx(0.5)
    assert t.step_s(1, 100) == pytest.approx(0.15)
    assert t.throughput(16) / t.throughput(1) == pytest.approx(16 / 2.5)
    assert t.throughput(16) > t.throughput(8) > t.throughput(1)


@pytest.mark.parametrize("kw", [{"decode_tokens_per_s": 0}, {"max_batch": 0}, {"batch_overhead": -1}])
def test_timing_model_rejects_nonsense(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SimTiming(**kw)  # type: ignore[arg-type]


async def collect(
    engine: SimEngine, rid: str, text: str, max_tokens: int, stop: tuple[str, ...] = ()
) -> tuple[str, str]:
    out, finish = [], ""
    async for d in engine.generate(rid, engine.tokenize(text), Sampling(max_tokens=max_tokens, stop=stop)):
        out.append(d.text)
        finish = d.finish_reason or finish
    return "".join(out), finish


async def test_deterministic_text_and_lengths() -> None:
    eng = SimEngine("m", SimTiming(decode_tokens_per_s=2000, prefill_tokens_per_s=1e6))
    await eng.start()
    try:
        a, fa = await collect(eng, "a", "hello there", 8)
        b, _ = await collect(eng, "b", "hello there", 8)
        c, _ = await collect(eng, "c", "something else entirely", 8)
        assert a == b != c
        assert fa == "length" and len(a.split()) == 8
        word = a.split()[2]
        stopped, fs = await collect(eng, "d", "hello there", 8, stop=(" " + word,))
        assert fs == "stop" and stopped == " ".join(a.split()[:2]).join([" ", ""])
    finally:
        await eng.shutdown()


async def test_continuous_batching_is_faster_than_sequential() -> None:
    timing = SimTiming(decode_tokens_per_s=200, prefill_tokens_per_s=1e6, max_batch=8, batch_overhead=0.1)
    eng = SimEngine("m", timing)
    await eng.start()
    try:
        t0 = time.monotonic()
        await collect(eng, "s", "x", 20)
        single = time.monotonic() - t0
        t0 = time.monotonic()
        await asyncio.gather(*(collect(eng, f"r{i}", f"p{i}", 20) for i in range(8)))
        batched = time.monotonic() - t0
        # 8 requests at once take ~1.7x one request (not 8x)
        assert batched < 4 * single
        assert eng.metrics.generation_tokens._value.get() == 20 * 9
    finally:
        await eng.shutdown()


async def test_max_batch_makes_requests_wait_and_abort_frees_them() -> None:
    eng = SimEngine("m", SimTiming(decode_tokens_per_s=100, max_batch=2))
    await eng.start()
    try:
        gens = [eng.generate(f"r{i}", Prompt("p", (1, 2)), Sampling(max_tokens=1000)) for i in range(3)]
        firsts = [asyncio.ensure_future(anext(g)) for g in gens]
        await asyncio.wait_for(asyncio.gather(*firsts[:2]), 2)
        assert eng.num_running == 2 and eng.num_waiting == 1
        assert eng.metrics.waiting._value.get() == 1
        await gens[0].aclose()  # abort: the waiting one gets its slot
        await asyncio.wait_for(firsts[2], 2)
        assert eng.num_running == 2 and eng.num_waiting == 0
        for g in gens[1:]:
            await g.aclose()
        assert eng.num_running == 0
    finally:
        await eng.shutdown()


async def test_startup_delay() -> None:
    eng = SimEngine("m", SimTiming(startup_s=0.05))
    t0 = time.monotonic()
    await eng.start()
    assert time.monotonic() - t0 >= 0.05
    await eng.shutdown()


def test_tokenizer_and_chat_template() -> None:
    eng = SimEngine("m", SimTiming())
    assert len(sim_tokenize("Hello, world!")) == 4
    text = eng.render_chat([{"role": "user", "content": "hi"}])
    assert text.endswith("<|im_start|>assistant\n") and "hi" in text
