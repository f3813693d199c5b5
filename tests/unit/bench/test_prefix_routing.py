"""bench/prefix_routing.py's trace: every strategy replays the same arrivals, tenants and prompt lengths;
a salt (the vLLM mode's per-strategy cache reset) changes every prompt from its first character on."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench"
sys.path.insert(0, str(BENCH))

import prefix_routing  # noqa: E402


def _args(**kw: object) -> argparse.Namespace:
    base = {"seed": 7, "tenants": 8, "system_words": 50, "duration": 10.0, "rate": 3.0, "max_tokens": 4}
    return argparse.Namespace(**{**base, **kw})


def test_same_seed_same_trace_and_salts_change_only_the_head() -> None:
    plain = prefix_routing.trace(_args())
    again = prefix_routing.trace(_args())
    a = prefix_routing.trace(_args(), salt="Deployment 01. ")
    b = prefix_routing.trace(_args(), salt="Deployment 02. ")
    assert plain == again and len(plain) > 10
    assert [r.at for r in a] == [r.at for r in b] == [r.at for r in plain]
    for x, y, p in zip(a, b, plain, strict=True):
        assert len(x.prompt) == len(y.prompt) == len(p.prompt) + len("Deployment 01. ")
        assert x.prompt[:11] == y.prompt[:11] and x.prompt[11:13] != y.prompt[11:13]  # differ at the head
        assert x.prompt.endswith(p.prompt)  # the rest is the unsalted prompt
        assert x.max_tokens == 4


def test_tenants_share_long_system_prompts() -> None:
    reqs = prefix_routing.trace(_args(rate=20.0))
    heads = {r.prompt.split("\n", 1)[0] for r in reqs}
    assert 1 < len(heads) <= 8  # several tenants, each with one system prompt
    assert all(len(h.split()) > 50 for h in heads)
    assert len({r.prompt for r in reqs}) == len(reqs)  # every question differs
