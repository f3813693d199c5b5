"""Waking a service at zero replicas from its routers directly, between the loop's cycles (#19).

At zero, the only sign of demand is the requests the routers hold, and through Prometheus that sign
arrives a scrape interval plus up to a whole loop period late; a held request's time to first token is
the pod's cold start plus that delay. While some service is at zero, the loop asks that service's
router pods for their held count (`GET /readyz`, the router's own `pending`) every `poll_seconds`, and
runs its next cycle as soon as one holds a request, with the count it read.

`router_targets` is pure (which router pods to ask, from the pod list the cycle already made); `probe`
is the thin HTTP edge.
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


def router_targets(pods: list[dict[str, Any]], at_zero: frozenset[ServiceKey]) -> dict[ServiceKey, list[str]]:
    """The `/readyz` URLs of the running router pods of the services at zero."""
    out: dict[ServiceKey, list[str]] = {}
    for pod in pods:
        meta = pod.get("metadata", {})
        labels = meta.get("labels") or {}
        key = (str(meta.get("namespace")), str(labels.get(names.LABEL_ISVC)))
        ip = (pod.get("status") or {}).get("podIP")
        if (
            key in at_zero
            and labels.get(names.LABEL_COMPONENT) == names.COMPONENT_ROUTER
            and ip
            and not meta.get("deletionTimestamp")
        ):
            host = f"[{ip}]" if ":" in ip else ip
            out.setdefault(key, []).append(f"http://{host}:{names.ROUTER_PORT}/readyz")
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


class RouterProbe:
    """`held` over one HTTP session, owned by the composition root."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def held(self, targets: Mapping[ServiceKey, list[str]]) -> dict[ServiceKey, float]:
        return await held(self.session, targets)


def probe_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S))
