"""Waking a service at zero replicas from its front ends directly, between the loop's cycles (#19).

At zero, the only sign of demand is the requests the front ends hold (the router in Router mode, the
endpoint picker in Gateway mode), and through Prometheus that sign arrives a scrape interval plus up to
a whole loop period late; a held request's time to first token is the pod's cold start plus that delay.
While some service is at zero, the loop asks that service's front-end pods for their held count (the
same `pending` both serve: the router's `GET /readyz`, the endpoint picker's `GET /healthz` on its
metrics port) every `poll_seconds`, and runs its next cycle as soon as one holds a request, with the
count it read.

`front_end_targets` is pure (which pods to ask, from the pod list the cycle already made); `probe` is
the thin HTTP edge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
from shoal_common import names

from .kinds import ServiceKey

#: One router's answer must not hold a wake-up back: an unreachable router counts as holding nothing.
PROBE_TIMEOUT_S = 0.5


#: Where each front end reports what it holds: (port, path) by the pod's component label.
HELD_ENDPOINTS = {
    names.COMPONENT_ROUTER: (names.ROUTER_PORT, "/readyz"),
    names.COMPONENT_EPP: (names.EPP_METRICS_PORT, "/healthz"),
}


def front_end_targets(
    pods: list[dict[str, Any]], at_zero: frozenset[ServiceKey]
) -> dict[ServiceKey, list[str]]:
    """The held-count URLs of the running router and endpoint-picker pods of the services at zero."""
    out: dict[ServiceKey, list[str]] = {}
    for pod in pods:
        meta = pod.get("metadata", {})
        labels = meta.get("labels") or {}
        key = (str(meta.get("namespace")), str(labels.get(names.LABEL_ISVC)))
        ip = (pod.get("status") or {}).get("podIP")
        held_at = HELD_ENDPOINTS.get(str(labels.get(names.LABEL_COMPONENT)))
        if key in at_zero and held_at is not None and ip and not meta.get("deletionTimestamp"):
            host = f"[{ip}]" if ":" in ip else ip
            port, path = held_at
            out.setdefault(key, []).append(f"http://{host}:{port}{path}")
    return out


async def _pending(session: aiohttp.ClientSession, url: str) -> float:
    try:
        async with session.get(url) as resp:
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return 0.0
    value = body.get("pending") if isinstance(body, dict) else None
    return float(value) if isinstance(value, int | float) and value > 0 else 0.0


async def held(
    session: aiohttp.ClientSession, targets: Mapping[ServiceKey, list[str]]
) -> dict[ServiceKey, float]:
    """Requests each service's routers hold now (summed over its routers), for services holding any."""
    keys = [(key, url) for key, urls in targets.items() for url in urls]
    counts = await asyncio.gather(*(_pending(session, url) for _, url in keys))
    out: dict[ServiceKey, float] = {}
    for (key, _), count in zip(keys, counts, strict=True):
        if count > 0:
            out[key] = out.get(key, 0.0) + count
    return out


class FrontEndProbe:
    """`held` over one HTTP session, owned by the composition root."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def held(self, targets: Mapping[ServiceKey, list[str]]) -> dict[ServiceKey, float]:
        return await held(self.session, targets)


def probe_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S))
