"""Strategies are pure functions over a snapshot."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shoal_router.strategies import (
    EndpointView,
    LeastLoad,
    PickContext,
    PrefixHash,
    RoundRobin,
    make_strategy,
)

pytestmark = pytest.mark.unit


def views(*loads: int) -> list[EndpointView]:
    return [EndpointView(f"http://10.0.0.{i}:8000", load) for i, load in enumerate(loads)]


def test_round_robin_cycles_in_id_order() -> None:
    eps = views(5, 0, 9)
    picks = [RoundRobin().pick(eps, PickContext(seq=s)).endpoint for s in range(6)]
    assert picks == [e.id for e in eps] * 2


def test_least_load_prefers_the_idle_replica() -> None:
    eps = views(10, 0)
    assert all(
        LeastLoad().pick(eps, PickContext(rng=random.Random(s))).endpoint == eps[1].id for s in range(50)
    )


@given(st.lists(st.integers(0, 50), min_size=2, max_size=12), st.integers(0, 2**32))
def test_least_load_never_picks_the_unique_maximum(loads: list[int], seed: int) -> None:
    eps = views(*loads)
    pick = LeastLoad().pick(eps, PickContext(rng=random.Random(seed)))
    chosen = next(e for e in eps if e.id == pick.endpoint)
    if loads.count(max(loads)) == 1 and len(set(loads)) > 1:
        assert chosen.inflight < max(loads)


def test_least_load_is_reproducible_from_its_inputs() -> None:
    eps = views(1, 2, 3, 4, 5)
    a = [LeastLoad().pick(eps, PickContext(rng=random.Random(7))).endpoint for _ in range(3)]
    b = [LeastLoad().pick(eps, PickContext(rng=random.Random(7))).endpoint for _ in range(3)]
    assert a == b


def test_prefix_hash_is_sticky_and_spreads_keys() -> None:
    eps = views(0, 0, 0, 0)
    s = PrefixHash()
    owners = {k: s.pick(eps, PickContext(key=f"prefix-{k}")).endpoint for k in range(400)}
    for k in range(400):
        assert s.pick(eps, PickContext(key=f"prefix-{k}")).endpoint == owners[k]
    spread = Counter(owners.values())
    assert len(spread) == 4 and min(spread.values()) > 50


def test_prefix_hash_minimal_disruption_when_a_replica_leaves() -> None:
    eps = views(0, 0, 0, 0)
    s = PrefixHash()
    before = {k: s.pick(eps, PickContext(key=str(k))).endpoint for k in range(400)}
    gone = eps[3].id
    after = {k: s.pick(eps[:3], PickContext(key=str(k))).endpoint for k in range(400)}
    moved = [k for k in before if before[k] != after[k]]
    assert all(before[k] == gone for k in moved)  # only the departed replica's keys move


@settings(max_examples=200)
@given(
    st.lists(st.integers(0, 40), min_size=2, max_size=10),
    st.text(max_size=20),
    st.sampled_from([1.0, 1.25, 2.0]),
)
def test_prefix_hash_respects_the_load_bound(loads: list[int], key: str, factor: float) -> None:
    eps = views(*loads)
    pick = PrefixHash(load_factor=factor).pick(eps, PickContext(key=key))
    chosen = next(e for e in eps if e.id == pick.endpoint)
    import math

    capacity = math.ceil(factor * (sum(loads) + 1) / len(loads))
    assert chosen.inflight + 1 <= capacity


def test_hot_prefix_cannot_pile_onto_one_replica() -> None:
    """Simulate a burst of one prefix: in-flight counts stay within the bound of the mean."""
    eps = {f"http://10.0.0.{i}:8000": 0 for i in range(4)}
    s = PrefixHash(load_factor=1.25)
    for _ in range(100):
        snap = [EndpointView(k, v) for k, v in eps.items()]
        eps[s.pick(snap, PickContext(key="the same system prompt")).endpoint] += 1
    assert max(eps.values()) <= 1.25 * 100 / 4 + 1


def test_make_strategy() -> None:
    assert make_strategy("LeastLoad").name == "LeastLoad"
    assert make_strategy("PrefixHash").needs_key
    with pytest.raises(ValueError):
        make_strategy("Random")
