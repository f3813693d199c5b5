"""Weighted model splits (canaries): a public model name -> several target models with weights.

Pure and shared: the router's multi-model entry point and the endpoint picker both call `choose` with a
uniform number in [0, 1), so a split behaves the same wherever it is applied, and a test can drive it
with fixed numbers. A target is a model name (an InferenceService's served model or an adapter).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

MAX_TARGETS = 16


@dataclass(frozen=True)
class Split:
    public: str
    targets: tuple[str, ...]
    weights: tuple[int, ...]

    def cumulative(self) -> tuple[int, ...]:
        return tuple(accumulate(self.weights))

    def share(self, target: str) -> float:
        total = sum(self.weights)
        return sum(w for t, w in zip(self.targets, self.weights, strict=True) if t == target) / total


def parse_split(public: str, doc: Any) -> Split:
    """`{"chat-v1": 90, "chat-v2": 10}` -> Split; ValueError naming the problem otherwise."""
    if not isinstance(public, str) or not public:
        raise ValueError("a split needs a non-empty public model name")
    if not isinstance(doc, Mapping) or not doc:
        raise ValueError(f"split {public!r}: expected a mapping of target model -> weight")
    if len(doc) > MAX_TARGETS:
        raise ValueError(f"split {public!r}: at most {MAX_TARGETS} targets")
    targets, weights = [], []
    for target, weight in doc.items():
        if not isinstance(target, str) or not target:
            raise ValueError(f"split {public!r}: target names must be non-empty strings")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 1_000_000:
            raise ValueError(f"split {public!r}: weight of {target!r} must be an integer in [0, 1000000]")
        targets.append(target)
        weights.append(weight)
    if sum(weights) == 0:
        raise ValueError(f"split {public!r}: at least one weight must be > 0")
    return Split(public, tuple(targets), tuple(weights))


def parse_splits(doc: Any) -> dict[str, Split]:
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ValueError("splits: expected a mapping of public model name -> {target: weight}")
    return {public: parse_split(public, targets) for public, targets in doc.items()}


def choose(split: Split, u: float) -> str:
    """The target for a uniform draw `u` in [0, 1): target i gets weight_i / total of the draws."""
    cum = split.cumulative()
    point = min(max(u, 0.0), 0.999999999) * cum[-1]
    return split.targets[bisect.bisect_right(cum, point)]


def resolve(splits: Mapping[str, Split], model: str, u: float) -> str:
    """The model a request for `model` goes to: a split's draw, else the name itself."""
    split = splits.get(model)
    return model if split is None else choose(split, u)


def rewrite_model(doc: Mapping[str, Any], target: str) -> bytes:
    """The request body with `model` set to the split's target (what the replica serves), compact JSON."""
    return json.dumps({**doc, "model": target}, separators=(",", ":")).encode()


class SplitTable:
    """The splits in force, replaced whole on reload (a reader sees the old or the new table, never a
    mix), with the uniform draw the front end uses."""

    def __init__(self, splits: Mapping[str, Split] | None = None, rng: Any = None) -> None:
        import random

        self.splits: dict[str, Split] = dict(splits or {})
        self.rng = rng or random.Random()

    def replace(self, splits: Mapping[str, Split]) -> None:
        self.splits = dict(splits)

    def target(self, model: str) -> str:
        return resolve(self.splits, model, self.rng.random())
