"""The simulated engine's prefix cache: prefill skips cached blocks; the cache is bounded and LRU."""

from __future__ import annotations

import time

from shoal_server.engines.base import Sampling
from shoal_server.engines.prefix_cache import PrefixCache
from shoal_server.engines.sim import SimEngine, SimTiming


def test_leading_blocks_hit_and_a_divergence_stops_the_match():
    c = PrefixCache(capacity_tokens=1000, block_tokens=4)
    a = list(range(10))  # two full blocks + a partial
    assert c.lookup(a) == 0
    c.insert(a)
    assert c.lookup(a) == 8
    assert c.lookup([*a[:4], 99, 98, 97, 96]) == 4  # first block shared, second differs
    assert c.lookup([7, *a]) == 0  # same tokens, shifted: nothing (keys cover the whole prefix)


def test_capacity_is_bounded_and_least_recently_used_goes_first():
    c = PrefixCache(capacity_tokens=8, block_tokens=4)  # two blocks
    x, y, z = [1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]
    c.insert(x)
    c.insert(y)
    assert c.lookup(x) == 4  # touch x: y is now the oldest
    c.insert(z)
    assert len(c) == 2 and c.lookup(y) == 0 and c.lookup(x) == 4 and c.lookup(z) == 4


def test_zero_capacity_caches_nothing():
    c = PrefixCache(0)
    c.insert(list(range(64)))
    assert c.lookup(list(range(64))) == 0


async def _ttft(eng: SimEngine, text: str) -> float:
    t0 = time.monotonic()
    async for _ in eng.generate("r", eng.tokenize(text), Sampling(max_tokens=1)):
        return time.monotonic() - t0
    raise AssertionError("no token")


async def test_engine_prefill_skips_the_cached_prefix():
    system = "you are a careful assistant who answers in short sentences " * 40  # ~400 tokens
    timing = SimTiming(prefill_tokens_per_s=2000, decode_tokens_per_s=1000, prefix_cache_tokens=10_000)
    eng = SimEngine("m", timing)
    await eng.start()
    try:
        cold = await _ttft(eng, system + "question one")
        warm = await _ttft(eng, system + "question two")
        assert cold > 0.15 and warm < cold / 3, (cold, warm)
        hits = eng.prefix_hits._value.get()
        assert hits >= 300
    finally:
        await eng.shutdown()


async def test_engine_without_cache_pays_full_prefill():
    system = "you are a careful assistant who answers in short sentences " * 40
    eng = SimEngine("m", SimTiming(prefill_tokens_per_s=2000, decode_tokens_per_s=1000))
    await eng.start()
    try:
        await _ttft(eng, system + "question one")
        assert await _ttft(eng, system + "question two") > 0.15
    finally:
        await eng.shutdown()
