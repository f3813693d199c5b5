"""Endpoint state: what discovery reports, what the router has in flight, and outlier ejection.

Discovery replaces the set of endpoints (`EndpointPool.update`); the proxy acquires and releases endpoints
around each attempt and reports the outcome. Strategies only ever see `eligible()` snapshots.

Eligible for a new request: ready, not terminating, and not ejected. An ejected endpoint comes back after
its back-off as a probe (at most one request in flight); a success restores it, a failure ejects it again
for twice as long (capped). A refused or reset connection ejects at once (`eject_now`), and the load poller's
next successful probe restores it.

Panic mode: only when every routable endpoint is ejected (none live, none probing) does the pool offer the
ejected ones, since a possibly-bad replica beats failing every request. As long as one endpoint is live (even
if it is busy, or the caller excluded it) an ejected endpoint is never offered: the request waits instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from shoal_router.flow import capacity
from shoal_router.flow.capacity import LoadView
from shoal_router.flow.model import LoadReport
from shoal_router.strategies.base import EndpointView

log = logging.getLogger("shoal_router.endpoints")

PROBE_HOLD_S = 1.0  # a failed load poll keeps a connect-ejected endpoint out at least this long


@dataclass(frozen=True, slots=True)
class DiscoveredEndpoint:
    """One endpoint as discovery sees it (EndpointSlice conditions, or static: always ready)."""

    url: str  # http://host:port, no trailing slash
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    name: str = ""  # pod name when known (logs only)


@dataclass(frozen=True, slots=True)
class EjectionPolicy:
    consecutive_failures: int = 5
    base_s: float = 10.0
    max_s: float = 300.0


class PoolMetrics(Protocol):
    def set_inflight(self, endpoint: str, value: int) -> None: ...
    def remove_endpoint(self, endpoint: str) -> None: ...
    def ejected(self, endpoint: str) -> None: ...


class _NoMetrics:
    def set_inflight(self, endpoint: str, value: int) -> None:
        pass

    def remove_endpoint(self, endpoint: str) -> None:
        pass

    def ejected(self, endpoint: str) -> None:
        pass


@dataclass(slots=True)
class EndpointState:
    url: str
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    name: str = ""
    inflight: int = 0
    consecutive_failures: int = 0
    ejections: int = 0  # consecutive ejections without a success in between (drives the back-off)
    ejected_until: float = 0.0
    probing: bool = False  # back-off over; one trial request decides
    removed: bool = False  # discovery dropped it; in-flight requests finish
    total_requests: int = 0
    connect_ejected: bool = False  # ejected for a refused/reset connection: a good probe restores it
    polled: bool = False  # the load poller has tried it once (its capacity is known, or known unknown)
    load: LoadView = field(default_factory=LoadView)
    adapters: frozenset[str] | None = None  # LoRA adapters it listed in its last `GET /load` (None: unknown)


@dataclass(slots=True)
class EndpointPool:
    policy: EjectionPolicy = field(default_factory=EjectionPolicy)
    metrics: PoolMetrics = field(default_factory=_NoMetrics)
    clock: Callable[[], float] = field(default=lambda: asyncio.get_running_loop().time())
    _states: dict[str, EndpointState] = field(default_factory=dict)
    _ready_event: asyncio.Event | None = None
    synced: bool = False  # discovery delivered at least one full view
    listeners: list[Callable[[], None]] = field(default_factory=list)  # called after any change
    await_first_poll: bool = False  # a load poller runs: a new endpoint gets nothing before its first poll
    _new_endpoint: asyncio.Event | None = None
    load_stale_s: float = 2.0

    # -- discovery side ------------------------------------------------------------------------------
    def update(self, endpoints: Iterable[DiscoveredEndpoint]) -> None:
        """Replace the discovered set. Known endpoints keep their in-flight counts and ejection state."""
        seen: set[str] = set()
        for d in endpoints:
            if d.url in seen:
                # the same address in two slices: ready if any says ready, terminating if all do
                dup = self._states[d.url]
                dup.ready = dup.ready or d.ready
                dup.serving = dup.serving or d.serving
                dup.terminating = dup.terminating and d.terminating
                continue
            seen.add(d.url)
            st = self._states.get(d.url)
            new = st is None
            if st is None:
                st = self._states[d.url] = EndpointState(url=d.url)
                self.metrics.set_inflight(d.url, 0)
            was = (st.ready, st.terminating, st.removed)
            st.ready, st.serving, st.terminating, st.name, st.removed = (
                d.ready,
                d.serving,
                d.terminating,
                d.name,
                False,
            )
            if (
                (new or was != (st.ready, st.terminating, st.removed))
                and self._routable(st)
                and not st.polled
            ):
                self.new_endpoint_event().set()  # new or newly ready: the poller looks at it now
            if was != (st.ready, st.terminating, st.removed):
                log.info(
                    "endpoint changed",
                    extra={"endpoint": d.url, "pod": d.name, "ready": d.ready, "terminating": d.terminating},
                )
        for url in list(self._states):
            if url not in seen:
                st = self._states[url]
                if not st.removed:
                    log.info("endpoint removed", extra={"endpoint": url, "inflight": st.inflight})
                st.removed = True
                if st.inflight == 0:
                    self._forget(url)
        self.synced = True
        self._signal()

    def _forget(self, url: str) -> None:
        del self._states[url]
        self.metrics.remove_endpoint(url)

    def _signal(self) -> None:
        event = self._event()
        if self.has_ready():
            event.set()
        else:
            event.clear()
        self._notify()

    def _notify(self) -> None:
        for listener in self.listeners:
            listener()

    def _event(self) -> asyncio.Event:
        if self._ready_event is None:
            self._ready_event = asyncio.Event()
        return self._ready_event

    # -- queries --------------------------------------------------------------------------------------
    @staticmethod
    def _routable(st: EndpointState) -> bool:
        return st.ready and not st.terminating and not st.removed

    def has_ready(self) -> bool:
        return any(self._routable(st) for st in self._states.values())

    async def wait_ready(self) -> None:
        """Return as soon as some endpoint is ready (immediately if one is)."""
        await self._event().wait()

    def eligible(self, exclude: Iterable[str] = ()) -> list[EndpointView]:
        """Snapshot for a strategy: routable endpoints not in `exclude` and not ejected. Ejected ones are
        offered only in panic (every routable endpoint ejected and none probing)."""
        now = self.clock()
        excluded = set(exclude)
        routable = [st for st in self._states.values() if self._routable(st)]
        healthy: list[EndpointView] = []
        live_elsewhere = False
        for st in routable:
            if st.ejected_until > now:
                continue
            if st.ejected_until and not st.probing:
                st.probing = True  # back-off over: let one request probe it
            if st.probing and st.inflight > 0:
                live_elsewhere = True  # its probe decides; nothing else goes there meanwhile
                continue
            if st.url in excluded:
                live_elsewhere = True
                continue
            healthy.append(self._view(st, now))
        if healthy or live_elsewhere:
            return healthy
        return [self._view(st, now) for st in routable if st.url not in excluded]  # panic: all ejected

    def _view(self, st: EndpointState, now: float) -> EndpointView:
        return EndpointView(st.url, st.inflight + capacity.others(st.load, now, self.load_stale_s))

    def get(self, url: str) -> EndpointState | None:
        return self._states.get(url)

    def states(self) -> list[EndpointState]:
        return list(self._states.values())

    # -- proxy side -----------------------------------------------------------------------------------
    def acquire(self, url: str) -> None:
        st = self._states[url]
        st.inflight += 1
        st.total_requests += 1
        self.metrics.set_inflight(url, st.inflight)

    def release(self, url: str) -> None:
        st = self._states.get(url)
        if st is None:
            return
        st.inflight -= 1
        if st.removed and st.inflight == 0:
            self._forget(url)
        else:
            self.metrics.set_inflight(url, st.inflight)
        self._notify()

    def report_success(self, url: str) -> None:
        st = self._states.get(url)
        if st is None:
            return
        if st.probing or st.ejections:
            log.info("endpoint recovered", extra={"endpoint": url})
        st.consecutive_failures = 0
        st.ejections = 0
        st.ejected_until = 0.0
        st.probing = False
        st.connect_ejected = False

    def report_failure(self, url: str, reason: str) -> None:
        st = self._states.get(url)
        if st is None:
            return
        st.consecutive_failures += 1
        if st.probing or st.consecutive_failures >= self.policy.consecutive_failures:
            backoff = min(self.policy.base_s * (2**st.ejections), self.policy.max_s)
            st.ejections += 1
            st.ejected_until = self.clock() + backoff
            st.probing = False
            st.consecutive_failures = 0
            self.metrics.ejected(url)
            log.warning(
                "endpoint ejected",
                extra={"endpoint": url, "reason": reason, "backoff_s": backoff, "ejections": st.ejections},
            )

    def eject_now(self, url: str, reason: str) -> None:
        """A refused or reset connection: the replica is taken out at once (no consecutive count), until a
        probe (the load poller, or one request after the back-off) succeeds."""
        st = self._states.get(url)
        if st is None:
            return
        if st.ejected_until > self.clock() and st.connect_ejected:
            return  # already out: the in-flight requests it dropped do not stretch the back-off
        st.connect_ejected = True
        st.consecutive_failures = self.policy.consecutive_failures
        self.report_failure(url, reason)
        self._notify()

    def new_endpoint_event(self) -> asyncio.Event:
        """Set when discovery adds an endpoint (the poller polls it at once and clears this)."""
        if self._new_endpoint is None:
            self._new_endpoint = asyncio.Event()
        return self._new_endpoint

    def usable_before_poll(self, st: EndpointState) -> bool:
        """A burst must not land on a replica whose limits are not known yet: with a poller running, an
        endpoint takes requests only once its first poll has finished (a few ms after discovery)."""
        return st.polled or not self.await_first_poll

    def polled(self, url: str) -> None:
        st = self._states.get(url)
        if st is not None and not st.polled:
            st.polled = True
            self._notify()

    def probe_result(self, url: str, ok: bool) -> None:
        """The load poller reached the replica (ok) or not. A good probe restores a connect-ejected
        endpoint at once; a failed one on a live endpoint ejects it."""
        st = self._states.get(url)
        if st is None:
            return
        if ok and st.connect_ejected:
            self.report_success(url)
            self._notify()
        elif not ok and st.connect_ejected:
            # still unreachable: no request is sent to probe it while the poller keeps failing
            st.ejected_until = max(st.ejected_until, self.clock() + PROBE_HOLD_S)
            st.probing = False
        elif not ok and self._routable(st):
            self.eject_now(url, "probe failed")

    def report_load(self, url: str, report: LoadReport) -> None:
        """A fresh load report from the replica (response headers or the poller)."""
        st = self._states.get(url)
        if st is None:
            return
        st.load.report = report
        st.load.at = self.clock()
        st.load.own_at_report = st.inflight
        self._notify()

    def report_adapters(self, url: str, adapters: frozenset[str] | None) -> None:
        """The adapters the replica serves now (the poller's `GET /load`); None keeps what was known."""
        st = self._states.get(url)
        if st is not None and adapters is not None:
            st.adapters = adapters

    def serves_adapters(self) -> bool:
        return any(st.adapters for st in self._states.values())

    def adapter_holders(self, model: str) -> frozenset[str] | None:
        """The endpoints that list `model` as a loaded adapter, or None when none does (then `model` is the
        base model, or unknown, and any replica answers it). A replica that turned Ready before the
        operator loaded its adapters is left out until it lists them."""
        holders = frozenset(
            url for url, st in self._states.items() if not st.removed and st.adapters and model in st.adapters
        )
        return holders or None

    def mark_busy(self, url: str, hold_s: float) -> None:
        """It answered 429: alive but full. Nothing new goes there for `hold_s` (a fresh report does not
        lift it: a replica refusing for reasons its report does not show must not be hammered)."""
        st = self._states.get(url)
        if st is not None:
            st.load.busy_until = self.clock() + hold_s
