"""The dispatcher: one request in, a lease on an endpoint out, waiting in the bounded fair queue while
every live endpoint is full or none is ready. Front-end agnostic (the HTTP proxy and the EPP both use it).

Flow of one request: `acquire` checks the tenant's token quota, then places the request at once when the
queue is empty and an endpoint has a free slot; otherwise it queues it (bands, fair shares, bounds) and
waits until `_pump` hands it a lease, its deadline passes (429, or 503 while no replica is ready), or it is
shed for a higher band (429). Every state change (a lease released, a load report, discovery) pumps.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from shoal_router.endpoints import EndpointPool
from shoal_router.flow import capacity
from shoal_router.flow.classify import engine_priority
from shoal_router.flow.fairqueue import Entry, FairQueue
from shoal_router.flow.fairshare import Activity, demand_reserve, may_take, reserve_slots
from shoal_router.flow.lease import Lease
from shoal_router.flow.model import FlowConfig, FlowMetrics, FlowRequest, NoFlowMetrics, Rejected
from shoal_router.flow.overtake import InflightPriorities, may_overtake
from shoal_router.flow.quota import QuotaState, TokenQuotas
from shoal_router.strategies.base import EndpointView, PickContext, Strategy


@dataclass(slots=True)
class _Waiter:
    req: FlowRequest
    exclude: frozenset[str]
    fut: asyncio.Future[Lease]
    enqueued: float
    held: bool  # queued while no replica was ready (the scale-from-zero signal)
    seq: int = 0  # the request's number (round-robin)
    entry: Entry[_Waiter] | None = None


@dataclass(slots=True)
class _Rate:
    """Completions per second over the last `window_s` (for Retry-After estimates)."""

    window_s: float = 10.0
    times: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=10_000))

    def add(self, now: float) -> None:
        self.times.append(now)

    def per_s(self, now: float) -> float:
        while self.times and self.times[0] < now - self.window_s:
            self.times.popleft()
        return len(self.times) / self.window_s


class Dispatcher:
    def __init__(
        self,
        pool: EndpointPool,
        strategy: Strategy,
        config: FlowConfig | None = None,
        metrics: FlowMetrics | None = None,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.pool = pool
        self.strategy = strategy
        self.config = config or FlowConfig()
        self.metrics: FlowMetrics = metrics or NoFlowMetrics()
        self._clock = clock
        self.rng = rng or random.Random()
        self.quotas = TokenQuotas()
        self.pending = 0
        self._queue: FairQueue[_Waiter] = FairQueue(self.config.max_queued, self.config.max_queued_bytes)
        self._seq = 0
        self._rate = _Rate()
        self._activity = Activity(self.config.fair_window_s)
        self._priorities = InflightPriorities()  # engine priorities in flight, per endpoint (overtaking)
        self._pumping = False
        self._ticker: asyncio.TimerHandle | None = None
        pool.load_stale_s = self.config.load_stale_s
        pool.listeners.append(self.kick)

    def clock(self) -> float:
        """The dispatcher's time (the pool's clock unless one was given): deadlines are on it."""
        return (self._clock or self.pool.clock)()

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- the front end's calls ----------------------------------------------------------------------
    async def acquire(
        self, req: FlowRequest, *, exclude: Collection[str] = (), requeue: bool = False
    ) -> Lease:
        """A lease on an endpoint for `req`, waiting in the queue if needed. Raises `Rejected`.
        `exclude`: endpoints this request already failed on (a retry); `requeue`: it went out once and the
        replica was busy, so it keeps its turn and is not charged against the quota again."""
        if not requeue and req.tokens_per_minute > 0:
            self._check_quota(req)
        self._activity.seen(req.tenant, req.weight, self.clock(), req.priority)
        ex = frozenset(exclude)
        if not ex and not requeue:
            self._seq += 1  # one number per request, not per attempt (round-robin counts requests)
        if ex and self.pool.has_ready() and not self.pool.eligible(ex) and self.pool.eligible():
            raise Rejected(502, "exhausted", "Every live replica was tried.")
        seq = self._seq
        if not self._queue:
            lease = self._place(req, ex, 0.0, seq)
            if lease is not None:
                return lease
        return await self._wait(req, ex, requeue, seq)

    def quota(self, req: FlowRequest) -> QuotaState | None:
        """The tenant's token quota now (for the x-ratelimit-* headers on answers), None without one."""
        if req.tokens_per_minute <= 0:
            return None
        return self.quotas.check(req.tenant, req.tokens_per_minute, self.clock())

    def charge(self, req: FlowRequest, tokens: int) -> None:
        """Charge an answer's tokens (prompt + completion) to its tenant's quota."""
        self.quotas.charge(req.tenant, req.tokens_per_minute, tokens, self.clock())

    def kick(self) -> None:
        """Re-evaluate the queue (endpoints or their load changed)."""
        if self._queue:
            self._pump()

    # -- internals ----------------------------------------------------------------------------------
    def _check_quota(self, req: FlowRequest) -> None:
        state = self.quotas.check(req.tenant, req.tokens_per_minute, self.clock())
        if state.retry_after_s > 0:
            self.metrics.flow_shed(req.priority, req.tenant, "tokens_quota")
            raise Rejected(
                429,
                "tokens_quota",
                f"Token quota exceeded: {req.tokens_per_minute} tokens per minute for this API key.",
                max(1, math.ceil(state.retry_after_s)),
                state.headers(),
            )

    def _place(self, req: FlowRequest, exclude: frozenset[str], waited_s: float, seq: int) -> Lease | None:
        """Pick among live endpoints with a free slot (and the tenant's fair share allowing), or, with
        engine priorities, a full one this request may overtake on (`overtake.py`); None: wait."""
        now, cfg = self.clock(), self.config
        prio = (
            engine_priority(req.priority, self._activity.light_among_others(req.tenant, now))
            if cfg.engine_priority
            else None
        )
        usable: list[EndpointView] = []
        overtaking: list[EndpointView] = []
        free_total, cap_total, known = 0, 0, True
        for view in self.pool.eligible(exclude):
            st = self.pool.get(view.id)
            if (req.candidates is not None and view.id not in req.candidates) or st is None:
                continue
            if not self.pool.usable_before_poll(st):
                continue
            free = capacity.free_slots(st.load, st.inflight, now, cfg.load_stale_s, cfg.replica_queue)
            cap = capacity.limit(st.load, cfg.replica_queue)
            if free is None or cap is None:
                known = False
            else:
                free_total, cap_total = free_total + free, cap_total + cap
            if free is None or free > 0:
                usable.append(view)
            elif prio is not None and may_overtake(
                self._priorities.worse_than(view.id, prio),
                capacity.overflow(st.load, st.inflight, now, cfg.load_stale_s, cfg.replica_queue),
            ):
                overtaking.append(view)
        if not usable and overtaking:
            usable, known = overtaking, False  # it displaces a worse request: no share to check
        if not usable or (known and not self._fair(req, now, cap_total, free_total)):
            return None
        pick = self.strategy.pick(usable, PickContext(seq=seq, key=req.affinity_key, rng=self.rng))
        self.pool.acquire(pick.endpoint)
        if prio is not None:
            self._priorities.add(pick.endpoint, prio)
        self._activity.started(req.tenant, now)
        self.metrics.flow_dispatched(req.priority, req.tenant, waited_s)
        return Lease(self, req, pick.endpoint, pick.reason, waited_s, prio)

    def _fair(self, req: FlowRequest, now: float, cap_total: int, free_total: int) -> bool:
        floor = reserve_slots(cap_total, self.config.fair_reserve)
        if floor <= 0:
            return free_total > 0
        act, cfg = self._activity, self.config
        headroom = 0
        if cfg.fair_reserve_max > 0:
            if act.light(req.tenant, now):
                return free_total > 0  # within its share of arrivals: the reserve is for it
            headroom = act.headroom(req.tenant, req.priority, now, cap_total)
        return may_take(
            act.inflight.get(req.tenant, 0),
            req.weight,
            act.active_weight(now),
            cap_total,
            free_total,
            demand_reserve(floor, headroom, cap_total, cfg.fair_reserve_max),
        )

    def _enqueue(self, req: FlowRequest, exclude: frozenset[str], requeue: bool, seq: int) -> _Waiter:
        ready = self.pool.has_ready()
        fut: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(req, exclude, fut, self.clock(), held=not ready, seq=seq)
        admit = self._queue.push(waiter, req.tenant, req.priority, req.weight, req.size_bytes, front=requeue)
        if admit.entry is None:
            self.metrics.flow_shed(req.priority, req.tenant, "queue_full")
            raise self._full(ready)
        waiter.entry = admit.entry
        self._count_in(waiter)
        if admit.shed is not None:
            victim = admit.shed.item
            self._count_out(victim)
            self.metrics.flow_shed(victim.req.priority, victim.req.tenant, "shed")
            if not victim.fut.done():
                victim.fut.set_exception(
                    Rejected(
                        429,
                        "shed",
                        "The router is saturated and shed this lower-priority request; retry later.",
                        self._retry_after(),
                    )
                )
        return waiter

    async def _wait(self, req: FlowRequest, exclude: frozenset[str], requeue: bool, seq: int) -> Lease:
        waiter = self._enqueue(req, exclude, requeue, seq)
        limit_s = self.config.hold_timeout_s if waiter.held else self.config.queue_timeout_s
        deadline = waiter.enqueued + limit_s
        if req.deadline is not None:
            deadline = min(deadline, req.deadline)
        self._pump()
        try:
            async with asyncio.timeout(max(0.0, deadline - self.clock())):  # any clock, not only the loop's
                return await asyncio.shield(waiter.fut)
        except TimeoutError:
            self._leave(waiter)
            if waiter.fut.done() and not waiter.fut.cancelled() and waiter.fut.exception() is None:
                return waiter.fut.result()  # placed at the last moment: take it
            self.metrics.flow_shed(req.priority, req.tenant, "timeout")
            raise self._timed_out() from None
        except asyncio.CancelledError:
            self._leave(waiter)
            if waiter.fut.done() and not waiter.fut.cancelled() and waiter.fut.exception() is None:
                waiter.fut.result().release()  # the client left after we placed it: give the slot back
            raise

    def _leave(self, waiter: _Waiter) -> None:
        if waiter.entry is not None and waiter.entry.alive:
            self._queue.remove(waiter.entry)
            self._count_out(waiter)

    def _count_in(self, waiter: _Waiter) -> None:
        """Held at zero (no replica ready: `pending`, the scale-from-zero signal) or queued for capacity
        (replicas ready but full: `flow_queued`, part of the autoscaler's queue depth); never both."""
        if waiter.held:
            self.pending += 1
            self.metrics.set_pending(self.pending)
        else:
            self.metrics.flow_queued(waiter.req.priority, waiter.req.tenant, 1)

    def _count_out(self, waiter: _Waiter) -> None:
        if waiter.held:
            waiter.held = False
            self.pending -= 1
            self.metrics.set_pending(self.pending)
        else:
            self.metrics.flow_queued(waiter.req.priority, waiter.req.tenant, -1)

    def _pump(self) -> None:
        """Hand leases to waiters in dispatch order while endpoints have free slots."""
        if self._pumping:
            return
        self._pumping = True
        try:
            for _ in range(self.config.max_queued + 1):  # bounded: each round places one or stops
                if not self._place_one():
                    break
        finally:
            self._pumping = False
        self._arm_ticker()

    def _place_one(self) -> bool:
        head = self._queue.head()
        if head is None:
            return False
        if self._try(head):
            return True
        if not self._any_free():
            return False  # nobody can go: skip the scan
        # The head cannot go (its tenant is over its share, or it is limited to some endpoints): the
        # first waiter of each other tenant may. Within a tenant the order stays first come, first served.
        tried = {(head.item.req.tenant, head.item.req.candidates, head.item.exclude)}
        for entry in list(self._queue.ordered()):
            key = (entry.item.req.tenant, entry.item.req.candidates, entry.item.exclude)
            if key in tried:
                continue
            tried.add(key)
            if self._try(entry):
                return True
        return False

    def _any_free(self) -> bool:
        now, cfg = self.clock(), self.config
        for view in self.pool.eligible():
            st = self.pool.get(view.id)
            if st is not None and self.pool.usable_before_poll(st):
                free = capacity.free_slots(st.load, st.inflight, now, cfg.load_stale_s, cfg.replica_queue)
                if free is None or free > 0:
                    return True
        return False

    def _try(self, entry: Entry[_Waiter]) -> bool:
        waiter = entry.item
        if waiter.fut.done():  # cancelled meanwhile
            self._leave(waiter)
            return True
        now = self.clock()
        lease = self._place(waiter.req, waiter.exclude, now - waiter.enqueued, waiter.seq)
        if lease is None:
            return False
        self._queue.remove(entry, served=True)
        self._count_out(waiter)
        waiter.fut.set_result(lease)
        return True

    def _arm_ticker(self) -> None:
        """While requests wait, re-evaluate periodically: busy marks and stale reports expire silently."""
        if not self._queue or self._ticker is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._ticker = loop.call_later(self.config.tick_s, self._tick)

    def _tick(self) -> None:
        self._ticker = None
        self._pump()

    def released(self, lease: Lease) -> None:
        """A lease ended (called by `Lease.release`)."""
        self._rate.add(self.clock())
        self._activity.finished(lease.request.tenant)
        if lease.engine_priority is not None:  # counted on its endpoint when it was placed
            self._priorities.remove(lease.endpoint, lease.engine_priority)

    def _retry_after(self) -> int:
        """Seconds for the queue to drain at the recent completion rate, clamped to [1, 60]."""
        rate = self._rate.per_s(self.clock())
        if rate <= 0:
            return self.config.hold_retry_after_s
        return int(min(60, max(1, math.ceil((len(self._queue) + 1) / rate))))

    def _full(self, ready: bool) -> Rejected:
        if not ready:
            return Rejected(
                429,
                "no_replica_queue_full",
                "No replica is ready yet and the hold queue is full; retry later.",
                self.config.hold_retry_after_s,
            )
        return Rejected(
            429,
            "queue_full",
            f"Every replica is at capacity and {len(self._queue)} requests are already waiting; retry later.",
            self._retry_after(),
        )

    def _timed_out(self) -> Rejected:
        if not self.pool.has_ready():
            return Rejected(
                503,
                "no_replica_ready",
                f"No replica became ready within {self.config.hold_timeout_s:g}s (the service may be "
                "scaling from zero); retry later.",
                self.config.hold_retry_after_s,
            )
        return Rejected(
            429,
            "queue_timeout",
            "Every replica stayed at capacity until this request's deadline; retry later.",
            self._retry_after(),
        )
