"""PrefixLoad: affinity when loads are close, spreading under a one-prefix burst, bounded memory."""

from __future__ import annotations

import random
from collections import Counter

from shoal_router.strategies import EndpointView, PickContext, make_strategy
from shoal_router.strategies.prefix_load import PrefixLoad, block_hashes, choose

SYSTEM = "You are a helpful assistant for tenant {t}. " * 20


def _ctx(key: str, seed: int = 0) -> PickContext:
    return PickContext(key=key, rng=random.Random(seed))


def test_block_hashes_are_chained_prefix_ids():
    a = block_hashes("x" * 64 + "y" * 64)
    b = block_hashes("x" * 64 + "z" * 64)
    assert len(a) == 2 and a[0] == b[0] and a[1] != b[1]
    assert block_hashes("short") == []


def test_same_prefix_sticks_to_its_endpoint_at_equal_load():
    s = PrefixLoad()
    eps = [EndpointView(f"e{i}", 0) for i in range(4)]
    first = s.pick(eps, _ctx(SYSTEM.format(t=1) + "q1")).endpoint
    for q in range(20):
        assert s.pick(eps, _ctx(SYSTEM.format(t=1) + f"q{q}", seed=q)).endpoint == first


def test_tenants_spread_over_endpoints():
    s = PrefixLoad()
    eps = [EndpointView(f"e{i}", 0) for i in range(4)]
    owners = {t: s.pick(eps, _ctx(SYSTEM.format(t=t), seed=t)).endpoint for t in range(40)}
    assert len(set(owners.values())) == 4  # random ties on a cold index spread tenants


def test_load_beats_affinity_past_the_weight():
    s = PrefixLoad(prefix_weight=2.0)
    key = SYSTEM.format(t=7)
    owner = s.pick([EndpointView("a", 0), EndpointView("b", 0)], _ctx(key)).endpoint
    other = "b" if owner == "a" else "a"
    # owner 3 deeper than the other: a full hit (worth 2) no longer pays
    pick = s.pick([EndpointView(owner, 3), EndpointView(other, 0)], _ctx(key)).endpoint
    assert pick == other


def test_one_prefix_burst_has_no_hot_spot():
    """Everyone sends the same prefix; the router's counts rise as picks are made (nothing completes)."""
    s = PrefixLoad()
    load = Counter({f"e{i}": 0 for i in range(4)})
    for i in range(200):
        eps = [EndpointView(k, v) for k, v in load.items()]
        load[s.pick(eps, _ctx(SYSTEM.format(t=0), seed=i)).endpoint] += 1
    assert max(load.values()) <= 1.5 * (200 / 4) + 1


def test_choose_is_pure_and_respects_the_bound():
    eps = [EndpointView("a", 9), EndpointView("b", 1)]
    chosen, reason = choose(eps, {"a": 1.0}, prefix_weight=100.0, load_factor=1.25, rng=random.Random(0))
    assert chosen.id == "b" and "bound" in reason  # a is over 1.25 x mean, however good its hit


def test_index_is_bounded():
    s = PrefixLoad(blocks_per_endpoint=10)
    eps = [EndpointView("a", 0)]
    for t in range(50):
        s.pick(eps, _ctx(SYSTEM.format(t=t)))
    assert len(s._index["a"]) == 10


def test_registered_by_name():
    assert make_strategy("PrefixLoad").name == "PrefixLoad"
