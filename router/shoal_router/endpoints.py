"""Endpoint state: what discovery reports, what the router has in flight, and outlier ejection.

Discovery replaces the set of endpoints (`EndpointPool.update`); the proxy acquires and releases endpoints
around each attempt and reports the outcome. Strategies only ever see `eligible()` snapshots.

Eligible for a new request: ready, not terminating, and not ejected. An ejected endpoint comes back after
its back-off as a probe (at most one request in flight); a success restores it, a failure ejects it again
for twice as long (capped). When every ready endpoint is ejected the pool ignores ejection (panic mode):
sending to a possibly-bad replica beats holding or failing every request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from shoal_router.strategies.base import EndpointView

log = logging.getLogger("shoal_router.endpoints")


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


@dataclass(slots=True)
class EndpointPool:
    policy: EjectionPolicy = field(default_factory=EjectionPolicy)
    metrics: PoolMetrics = field(default_factory=_NoMetrics)
    clock: Callable[[], float] = field(default=lambda: asyncio.get_running_loop().time())
    _states: dict[str, EndpointState] = field(default_factory=dict)
    _ready_event: asyncio.Event | None = None
    synced: bool = False  # discovery delivered at least one full view

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
        """Snapshot for a strategy: routable endpoints not in `exclude`, ejected ones left out unless every
        routable endpoint is ejected (panic)."""
        now = self.clock()
        excluded = set(exclude)
        routable = [st for st in self._states.values() if self._routable(st) and st.url not in excluded]
        healthy: list[EndpointView] = []
        for st in routable:
            if st.ejected_until > now:
                continue
            if st.ejected_until and not st.probing:
                st.probing = True  # back-off over: let one request probe it
            if st.probing and st.inflight > 0:
                continue
            healthy.append(EndpointView(st.url, st.inflight))
        if healthy or not routable:
            return healthy
        return [EndpointView(st.url, st.inflight) for st in routable]  # panic: all ejected

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
