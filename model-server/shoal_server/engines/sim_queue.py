"""The simulated engine's waiting queue and its preemption rule (vLLM's `--scheduling-policy`). Pure.

`fcfs`: sequences wait in arrival order. `priority`: in (priority, arrival) order, lower priority values
first, as in vLLM; a preempted sequence keeps its arrival time, so it goes back ahead of later ones of its
priority. Preemption (priority policy only): when the batch is full and the best waiting sequence has a
strictly better priority than the worst running one (the highest (priority, arrival)), that one is
preempted, as vLLM V0's priority scheduler did. Equal priorities never preempt each other, so a flood of
one priority cannot thrash.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator
from typing import Generic, Literal, Protocol, TypeVar

SchedulingPolicy = Literal["fcfs", "priority"]
SCHEDULING_POLICIES: tuple[SchedulingPolicy, ...] = ("fcfs", "priority")


class Queued(Protocol):
    @property
    def priority(self) -> int: ...

    @property
    def arrival(self) -> float: ...


S = TypeVar("S", bound=Queued)


def order_key(seq: Queued, policy: SchedulingPolicy) -> tuple[int, float]:
    """Lower is served first."""
    return (seq.priority if policy == "priority" else 0, seq.arrival)


def worst(running: Iterable[S], policy: SchedulingPolicy) -> S | None:
    """The running sequence a preemption would take: the last in serving order."""
    return max(running, key=lambda s: order_key(s, policy), default=None)


def should_preempt(waiting: Queued, running: Queued, policy: SchedulingPolicy) -> bool:
    return policy == "priority" and waiting.priority < running.priority


def prefill_together(first: Queued, other: Queued, policy: SchedulingPolicy) -> bool:
    """May `other` join the batch in the same step as `first` (the step's best newcomer)? Under the
    priority policy only at the same priority: the step lasts as long as all its prefills, and a worse
    one's must not delay a better one's first token (it joins one step later)."""
    return policy != "priority" or other.priority <= first.priority


class WaitQueue(Generic[S]):
    """Sequences waiting for the batch, kept in serving order (ties: first pushed first)."""

    def __init__(self, policy: SchedulingPolicy) -> None:
        self.policy = policy
        self._items: list[tuple[tuple[int, float], int, S]] = []
        self._counter = itertools.count()

    def push(self, seq: S) -> None:
        bisect.insort(self._items, (order_key(seq, self.policy), next(self._counter), seq), key=_sort_key)

    def head(self) -> S | None:
        return self._items[0][2] if self._items else None

    def pop(self) -> S:
        return self._items.pop(0)[2]

    def remove(self, seq: S) -> bool:
        for i, (_, _, item) in enumerate(self._items):
            if item is seq:
                del self._items[i]
                return True
        return False

    def __contains__(self, seq: object) -> bool:
        return any(item is seq for _, _, item in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[S]:
        return (item for _, _, item in self._items)


def _sort_key(entry: tuple[tuple[int, float], int, object]) -> tuple[tuple[int, float], int]:
    return entry[0], entry[1]
