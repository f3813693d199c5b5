"""How full a replica is, from its own reports plus what this process sent since. Pure functions.

A replica reports (`LoadReport`) its running and queued requests and its limits. Other routers and EPPs
send to the same replicas, so the router's own in-flight count is not enough: the load others put there is
the report's total minus what this process had in flight when the report was taken. That share is trusted
for `load_stale_s`; after that only our own count is known.
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal_router.flow.model import LoadReport


@dataclass(slots=True)
class LoadView:
    """What the pool remembers about one replica's load."""

    report: LoadReport | None = None
    at: float = 0.0  # when the report arrived
    own_at_report: int = 0  # our in-flight count at that moment
    busy_until: float = 0.0  # it answered 429: nothing new until then (or a fresh report)


def others(view: LoadView, now: float, stale_s: float) -> int:
    """Requests other senders have on the replica (estimate)."""
    if view.report is None or now - view.at > stale_s:
        return 0
    return max(0, view.report.inflight + view.report.queued - view.own_at_report)


def limit(view: LoadView, replica_queue: int) -> int | None:
    """Requests the replica takes before more would only queue there (None: unknown, never reported)."""
    if view.report is None:
        return None
    return view.report.max_concurrency + min(replica_queue, view.report.max_queue)


def free_slots(
    view: LoadView, own_inflight: int, now: float, stale_s: float, replica_queue: int
) -> int | None:
    """Slots left for this process to fill: None when the replica reported no limits (unbounded), 0 when
    full or marked busy."""
    if view.busy_until > now:
        return 0
    cap = limit(view, replica_queue)
    if cap is None:
        return None
    return max(0, cap - own_inflight - others(view, now, stale_s))


def overflow(view: LoadView, own_inflight: int, now: float, stale_s: float, replica_queue: int) -> int | None:
    """Requests on the replica beyond its limit (0 at or under it); None when it is marked busy or never
    reported its limits (nothing may go past a limit that is not known)."""
    cap = limit(view, replica_queue)
    if view.busy_until > now or cap is None:
        return None
    return max(0, own_inflight + others(view, now, stale_s) - cap)


def occupancy(view: LoadView, own_inflight: int, now: float, stale_s: float) -> int:
    """Estimated requests on the replica (what load-aware strategies compare)."""
    return own_inflight + others(view, now, stale_s)


def parse_load_headers(headers: object) -> LoadReport | None:
    """The model-server's `X-Shoal-*` response headers (any mapping with .get), or None when absent/bad."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    try:
        values = [get(name) for name in LOAD_HEADERS]
        if any(v is None for v in values):
            return None
        inflight, queued, max_c, max_q = (int(str(v)) for v in values)
    except ValueError:
        return None
    if min(inflight, queued, max_q) < 0 or max_c < 1:
        return None
    return LoadReport(inflight, queued, max_c, max_q)


def parse_load_json(doc: object) -> LoadReport | None:
    """The body of `GET /load`."""
    if not isinstance(doc, dict):
        return None
    try:
        vals = [doc[k] for k in ("inflight", "queued", "max_concurrency", "max_queue")]
    except KeyError:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        return None
    inflight, queued, max_c, max_q = vals
    if min(inflight, queued, max_q) < 0 or max_c < 1:
        return None
    return LoadReport(inflight, queued, max_c, max_q, ready=bool(doc.get("ready", True)))


MAX_ADAPTERS = 4096  # a replica's `adapters` list beyond this is not believed (bounded memory per replica)


def parse_adapters(doc: object) -> frozenset[str] | None:
    """The LoRA adapters a `GET /load` body lists; None when it has no (valid) list (an older server)."""
    names = doc.get("adapters") if isinstance(doc, dict) else None
    if not isinstance(names, list) or len(names) > MAX_ADAPTERS:
        return None
    return frozenset(n for n in names if isinstance(n, str) and n)


LOAD_HEADERS = ("X-Shoal-Inflight", "X-Shoal-Queued", "X-Shoal-Max-Concurrency", "X-Shoal-Max-Queue")
