"""Admission control: bounded concurrency plus a bounded wait queue, served in (priority, arrival)
order (lower priority values first, as vLLM's priority policy; all 0 under fcfs, so first come, first
served).

The decisions are pure functions (`decide`, `retry_after_seconds`); `Admission` is the small asyncio
wrapper around them that the app uses. Beyond capacity a request is rejected at once (429 with
Retry-After); it never hangs.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import enum
import itertools
import math
import time
from dataclasses import dataclass


class Verdict(enum.Enum):
    ADMIT = "admit"  # a concurrency slot is free: run now
    QUEUE = "queue"  # wait in the bounded queue for a slot
    REJECT_FULL = "queue_full"  # 429
    REJECT_DRAINING = "draining"  # 503
    REJECT_NOT_READY = "not_ready"  # 503


@dataclass(frozen=True)
class AdmissionState:
    inflight: int
    queued: int
    max_concurrency: int
    max_queue: int
    draining: bool = False
    ready: bool = True


def decide(state: AdmissionState, overtake: bool = False) -> Verdict:
    """What to do with one new request, given the current state (`overtake`: see `may_overtake`)."""
    if state.draining:
        return Verdict.REJECT_DRAINING
    if not state.ready:
        return Verdict.REJECT_NOT_READY
    # FIFO: a newcomer may only skip the queue when nobody is waiting.
    if state.inflight < state.max_concurrency and state.queued == 0:
        return Verdict.ADMIT
    if overtake:
        return Verdict.ADMIT
    if state.queued < state.max_queue:
        return Verdict.QUEUE
    return Verdict.REJECT_FULL


def may_overtake(
    priority: int,
    admitted: collections.Counter[int],
    best_waiting: int | None,
    inflight: int,
    max_concurrency: int,
) -> bool:
    """Whether a request may be admitted past `max_concurrency` (#16): the engine schedules by priority
    (vLLM's priority policy: lower first) and serves a better request ahead of worse admitted ones,
    preempting one when its batch is full, so holding it for a slot only adds the wait for a completion.
    Allowed when it is better than everyone waiting and more admitted requests are strictly worse than it
    than the admission is over its limit: each overtaking request is matched by a worse one it displaces.
    Under fcfs every priority is 0, so nothing overtakes."""
    if best_waiting is not None and best_waiting <= priority:
        return False
    worse = sum(n for p, n in admitted.items() if p > priority)
    return worse > inflight - max_concurrency


def retry_after_seconds(
    queued: int, max_concurrency: int, mean_service_s: float | None, floor: int = 1, ceiling: int = 60
) -> int:
    """Seconds a rejected client should wait: the time for the current queue to drain through the
    concurrency slots at the observed mean service time (whole seconds, clamped to [floor, ceiling])."""
    if mean_service_s is None or not math.isfinite(mean_service_s) or mean_service_s <= 0:
        return floor
    waves = (queued + 1) / max(1, max_concurrency)
    return int(min(ceiling, max(floor, math.ceil(waves * mean_service_s))))


class Rejected(Exception):
    def __init__(self, verdict: Verdict, retry_after: int | None = None) -> None:
        super().__init__(verdict.value)
        self.verdict = verdict
        self.retry_after = retry_after


class Admission:
    """Slots for in-flight requests plus a priority-ordered queue of waiters; not thread-safe (one event
    loop)."""

    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        if max_concurrency < 1 or max_queue < 0:
            raise ValueError("max_concurrency must be >= 1 and max_queue >= 0")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.inflight = 0
        self.draining = False
        self.ready = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # (priority, order, future)
        self._admitted: collections.Counter[int] = collections.Counter()  # in-flight requests per priority
        self._order = itertools.count()
        self._service_ewma: float | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def state(self) -> AdmissionState:
        return AdmissionState(
            self.inflight, self.queued, self.max_concurrency, self.max_queue, self.draining, self.ready
        )

    def retry_after(self) -> int:
        return retry_after_seconds(self.queued, self.max_concurrency, self._service_ewma)

    async def acquire(self, priority: int = 0) -> float:
        """Take a slot, waiting in the queue (behind waiters of better or equal priority) if needed;
        returns the seconds spent queued. Raises `Rejected` at once when the request cannot even be
        queued. Cancel-safe."""
        best_waiting = self._waiters[0][0] if self._waiters else None
        overtake = may_overtake(priority, self._admitted, best_waiting, self.inflight, self.max_concurrency)
        verdict = decide(self.state(), overtake)
        if verdict is Verdict.ADMIT:
            self._take(priority)
            return 0.0
        if verdict is not Verdict.QUEUE:
            raise Rejected(verdict, self.retry_after() if verdict is Verdict.REJECT_FULL else None)
        t0 = time.monotonic()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        bisect.insort(self._waiters, (priority, next(self._order), fut), key=lambda w: (w[0], w[1]))
        self._idle.clear()
        try:
            await fut  # resolved by release(), which has already counted us as in flight
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(None, priority)  # we were handed a slot but are going away: pass it on
            else:
                self._remove_waiter(fut)
            raise
        return time.monotonic() - t0

    def _take(self, priority: int) -> None:
        self.inflight += 1
        self._admitted[priority] += 1
        self._idle.clear()

    def _remove_waiter(self, fut: asyncio.Future[None]) -> None:
        self._waiters = [w for w in self._waiters if w[2] is not fut]
        self._check_idle()

    def release(self, service_s: float | None, priority: int = 0) -> None:
        """Give back the slot of a request of this priority (and record how long it was held, for
        Retry-After)."""
        if service_s is not None and service_s >= 0:
            prev = self._service_ewma
            self._service_ewma = service_s if prev is None else 0.8 * prev + 0.2 * service_s
        self.inflight -= 1
        self._admitted[priority] -= 1
        if self._admitted[priority] <= 0:
            del self._admitted[priority]
        while self._waiters and self.inflight < self.max_concurrency:
            waiting, _, fut = self._waiters.pop(0)
            if not fut.done():
                self._take(waiting)
                fut.set_result(None)
        self._check_idle()

    def _check_idle(self) -> None:
        if self.inflight == 0 and not self._waiters:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing is in flight or queued; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
