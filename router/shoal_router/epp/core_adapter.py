"""`Picker` over the router's shared core: the flow-control `Dispatcher` (queueing, hold-at-zero,
priorities, fairness, ejection) and its `EndpointPool`. Translation only; no decision is made here.

Ids: the core names endpoints by URL (`http://10.0.0.7:8000`); the gateway by `ip:port`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from shoal_router.endpoints import EndpointPool
from shoal_router.epp.picking import Picked, PickRequest, Refused
from shoal_router.flow.classify import FAIRNESS_HEADER, OBJECTIVE_HEADER, TenantPolicy, classify
from shoal_router.flow.dispatcher import Dispatcher
from shoal_router.flow.lease import Lease
from shoal_router.flow.model import FlowRequest, Outcome, Rejected
from shoal_router.frontdoor import scope_to_adapter

BUSY_STATUS = 429
UPSTREAM_ERROR_STATUS = frozenset({502, 503, 504})


def to_hostport(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


def to_url(hostport: str) -> str:
    return "http://" + hostport


def outcome_of(status: int | None) -> Outcome:
    """The core's verdict on a finished exchange, from the status the gateway saw."""
    if status is None or status == 0:
        return Outcome.CANCELLED  # no response seen: the client left, or the gateway gave up; no verdict
    if status == BUSY_STATUS:
        return Outcome.BUSY
    if status in UPSTREAM_ERROR_STATUS:
        return Outcome.UPSTREAM_ERROR
    return Outcome.SUCCESS


def flow_request(
    req: PickRequest,
    objectives: Mapping[str, int],
    tenants: Mapping[str, TenantPolicy] | None = None,
    size_bytes: int = 0,
) -> FlowRequest:
    c = classify(
        key_name=None,
        policy=None,
        objective=req.headers.get(OBJECTIVE_HEADER),
        fairness_id=req.headers.get(FAIRNESS_HEADER),
        objectives=objectives,
        tenant_policies=tenants,
    )
    return c.flow_request(
        size_bytes=size_bytes,
        affinity_key=req.key,
        model=req.model,
        request_id=req.request_id,
        candidates=frozenset(to_url(e) for e in req.subset) if req.subset is not None else None,
    )


@dataclass(slots=True)
class _Ticket:
    lease: Lease
    fallback: str | None = None  # core id of the endpoint that served instead of the lease's


class DispatcherPicker:
    def __init__(
        self,
        dispatcher: Dispatcher,
        pool: EndpointPool,
        fallbacks: int = 0,
        objectives: Mapping[str, int] = {},
        tenants: Mapping[str, TenantPolicy] = {},
    ) -> None:
        self.dispatcher = dispatcher
        self.pool = pool
        self.fallbacks = fallbacks
        self.objectives = dict(objectives)
        self.tenants = dict(tenants)

    async def pick(self, req: PickRequest) -> Picked:
        if req.subset is not None and not req.subset & self._routable():
            # proposal 004: nothing in the gateway's subset is eligible -> 503 now, never another endpoint
            raise Refused(503, "No endpoint of the gateway's subset is ready.", "no_endpoint")
        freq = flow_request(req, self.objectives, self.tenants, req.size_bytes)
        needs_key = self.dispatcher.strategy.needs_key
        if not needs_key and freq.affinity_key is not None:  # as the router: keys only for prompt hashing
            freq = replace(freq, affinity_key=None)
        freq = scope_to_adapter(self.pool, needs_key, freq, req.model or None)
        try:
            lease = await self.dispatcher.acquire(freq)
        except Rejected as rej:
            raise Refused(rej.status, rej.message, rej.code, rej.retry_after_s, rej.extra_headers) from rej
        endpoints = [to_hostport(lease.endpoint), *self._fallbacks(lease.endpoint, freq.candidates)]
        metered = freq.tokens_per_minute > 0
        return Picked(
            tuple(endpoints), lease.reason, lease.waited_s, _Ticket(lease), metered, lease.engine_priority
        )

    def _routable(self) -> set[str]:
        return {
            to_hostport(s.url) for s in self.pool.states() if s.ready and not s.terminating and not s.removed
        }

    def _fallbacks(self, primary: str, candidates: frozenset[str] | None) -> list[str]:
        """Least-loaded others, for the gateway to retry on (not counted in flight: they may never serve)."""
        if self.fallbacks <= 0:
            return []
        views = [v for v in self.pool.eligible({primary}) if candidates is None or v.id in candidates]
        views.sort(key=lambda v: v.inflight)
        return [to_hostport(v.id) for v in views[: self.fallbacks]]

    def served(self, picked: Picked, served: str) -> None:
        """The gateway fell back: the primary could not take the request (connect failure or reset)."""
        ticket: _Ticket = picked.token
        ticket.lease.report(Outcome.CONNECT_FAILED)
        url = to_url(served)
        if self.pool.get(url) is not None and ticket.fallback is None:
            self.pool.acquire(url)
            ticket.fallback = url

    def answer_headers(self, picked: Picked) -> dict[str, str]:
        ticket: _Ticket = picked.token
        state = self.dispatcher.quota(ticket.lease.request)
        return state.headers() if state is not None else {}

    def finish(self, picked: Picked, status: int | None, tokens: int = 0) -> None:
        ticket: _Ticket = picked.token
        if picked.metered and tokens > 0:
            ticket.lease.charge(tokens)
        outcome = outcome_of(status)
        if ticket.fallback is None:
            ticket.lease.report(outcome)
        else:
            if outcome is Outcome.SUCCESS:
                self.pool.report_success(ticket.fallback)
            self.pool.release(ticket.fallback)
        ticket.lease.release()

    def ready(self) -> bool:
        return self.pool.synced
