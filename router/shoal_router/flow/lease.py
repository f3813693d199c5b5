"""A lease: one request's hold on one endpoint, from the pick until the front end releases it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal_router.flow.model import FlowRequest, LoadReport, Outcome

if TYPE_CHECKING:
    from shoal_router.flow.dispatcher import Dispatcher


class Lease:
    """Report what happened (`report`), charge the tokens (`charge`), then `release` (idempotent; also a
    context manager). The endpoint's in-flight count covers the lease's whole life."""

    __slots__ = ("_dispatcher", "_released", "endpoint", "engine_priority", "reason", "request", "waited_s")

    def __init__(
        self,
        dispatcher: Dispatcher,
        request: FlowRequest,
        endpoint: str,
        reason: str,
        waited_s: float,
        engine_priority: int | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._released = False
        self.request = request
        self.endpoint = endpoint  # the endpoint id: http://host:port
        self.reason = reason  # why the strategy chose it (logs)
        self.waited_s = waited_s  # time spent in the queue before this lease
        # the replica engine's priority for it (x-shoal-priority); None: engine priorities are off
        self.engine_priority = engine_priority

    def report(self, outcome: Outcome, load: LoadReport | None = None) -> None:
        pool = self._dispatcher.pool
        if load is not None:
            pool.report_load(self.endpoint, load)
        if outcome is Outcome.SUCCESS:
            pool.report_success(self.endpoint)
        elif outcome is Outcome.BUSY:
            pool.report_success(self.endpoint)  # it answered: alive
            pool.mark_busy(self.endpoint, self._dispatcher.config.busy_hold_s)
        elif outcome is Outcome.CONNECT_FAILED:
            pool.eject_now(self.endpoint, "connection refused or reset")
        elif outcome in (Outcome.UPSTREAM_ERROR, Outcome.TIMEOUT):
            pool.report_failure(self.endpoint, outcome.value)

    def charge(self, tokens: int) -> None:
        if self.request.tokens_per_minute > 0:
            self._dispatcher.charge(self.request, tokens)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._dispatcher.released(self)
        self._dispatcher.pool.release(self.endpoint)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
