"""Waking a service at zero replicas from its front ends directly, between the loop's cycles (#19).

At zero, the only sign of demand is the requests the front ends hold (the router in Router mode, the
endpoint picker in Gateway mode, a namespace's shared entry point), and through Prometheus that sign
arrives a scrape interval plus up to a whole loop period late (an entry point's, never: it exports one
sum over its pools); a held request's time to first token is the pod's cold start plus that delay.
While some service is at zero, the loop asks that service's front-end pods for their held count (the
same `pending` the router's `GET /readyz` and the endpoint picker's `GET /healthz` on its metrics port
serve; `held[service]` of the entry point's `GET /readyz`) every `poll_seconds`, and runs its next
cycle as soon as one holds a request, with the count it read.

`front_end_targets` is pure (which pods to ask, from the pod list the cycle already made); `probe` is
the thin HTTP edge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from shoal_common import names

from .kinds import ServiceKey

#: One front end's answer must not hold a wake-up back: an unreachable one counts as holding nothing.
PROBE_TIMEOUT_S = 0.5


#: Where each front end reports what it holds: (port, path) by the pod's component label.
HELD_ENDPOINTS = {
    names.COMPONENT_ROUTER: (names.ROUTER_PORT, "/readyz"),
    names.COMPONENT_EPP: (names.EPP_METRICS_PORT, "/healthz"),
    names.COMPONENT_ENTRY_POINT: (names.ROUTER_PORT, "/readyz"),
}


@dataclass(frozen=True)
class HeldSource:
    """One place to read a service's held count: `pending` of a router or endpoint picker of its own, or
    `held[pool]` of a namespace's shared entry point (InferenceGateway), whose pools are named after
    the InferenceServices they serve."""

    url: str
    pool: str | None = None


def _url(pod: dict[str, Any], component: str) -> str | None:
    ip = (pod.get("status") or {}).get("podIP")
    if not ip or pod.get("metadata", {}).get("deletionTimestamp"):
        return None
    host = f"[{ip}]" if ":" in ip else ip
    port, path = HELD_ENDPOINTS[component]
    return f"http://{host}:{port}{path}"


def front_end_targets(
    pods: list[dict[str, Any]], at_zero: frozenset[ServiceKey]
) -> dict[ServiceKey, list[HeldSource]]:
    """Where to read the held count of each service at zero: its running routers and endpoint pickers,
    and the running entry points of its namespace."""
    out: dict[ServiceKey, list[HeldSource]] = {}
    for pod in pods:
        meta = pod.get("metadata", {})
        labels = meta.get("labels") or {}
        component, namespace = str(labels.get(names.LABEL_COMPONENT)), str(meta.get("namespace"))
        url = _url(pod, component) if component in HELD_ENDPOINTS else None
        if url is None:
            continue
        if component == names.COMPONENT_ENTRY_POINT:
            for key in sorted(k for k in at_zero if k[0] == namespace):
                out.setdefault(key, []).append(HeldSource(url, pool=key[1]))
            continue
        key = (namespace, str(labels.get(names.LABEL_ISVC)))
        if key in at_zero:
            out.setdefault(key, []).append(HeldSource(url))
    return out


def held_in(answer: object, pool: str | None) -> float:
    """The held count in a front end's answer (0 for anything malformed)."""
    if not isinstance(answer, dict):
        return 0.0
    if pool is None:
        value = answer.get("pending")
    else:
        per_pool = answer.get("held")
        value = per_pool.get(pool) if isinstance(per_pool, dict) else None
    return float(value) if isinstance(value, int | float) and value > 0 else 0.0


async def _answer(session: aiohttp.ClientSession, url: str) -> object:
    try:
        async with session.get(url) as resp:
            return await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def held(
    session: aiohttp.ClientSession, targets: Mapping[ServiceKey, list[HeldSource]]
) -> dict[ServiceKey, float]:
    """Requests each service's front ends hold now (summed over them), for services holding any. Each
    URL is asked once, however many services it answers for (an entry point serves several)."""
    urls = sorted({source.url for sources in targets.values() for source in sources})
    answers = dict(zip(urls, await asyncio.gather(*(_answer(session, url) for url in urls)), strict=True))
    out: dict[ServiceKey, float] = {}
    for key, sources in targets.items():
        count = sum(held_in(answers[s.url], s.pool) for s in sources)
        if count > 0:
            out[key] = count
    return out


class FrontEndProbe:
    """`held` over one HTTP session, owned by the composition root."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def held(self, targets: Mapping[ServiceKey, list[HeldSource]]) -> dict[ServiceKey, float]:
        return await held(self.session, targets)


def probe_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S))
