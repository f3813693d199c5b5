"""Pure parsing of discovery.k8s.io/v1 EndpointSlice objects (as dicts, camelCase) into endpoints."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shoal_router.endpoints import DiscoveredEndpoint


def _port(slice_: Mapping[str, Any], port_name: str) -> int | None:
    ports = [p for p in slice_.get("ports") or [] if isinstance(p, Mapping) and p.get("port")]
    for p in ports:
        if p.get("name") == port_name:
            return int(p["port"])
    if len(ports) == 1:  # a single (possibly unnamed) port: take it
        return int(ports[0]["port"])
    return None


def parse_endpoint_slice(slice_: Mapping[str, Any], port_name: str = "http") -> list[DiscoveredEndpoint]:
    """Conditions follow the API's rules: `ready` nil means ready; `serving` nil means the same as ready;
    `terminating` nil means not terminating."""
    port = _port(slice_, port_name)
    if port is None:
        return []
    ipv6 = slice_.get("addressType") == "IPv6"
    out: list[DiscoveredEndpoint] = []
    for ep in slice_.get("endpoints") or []:
        cond = ep.get("conditions") or {}
        ready = cond.get("ready")
        ready = True if ready is None else bool(ready)
        serving = cond.get("serving")
        serving = ready if serving is None else bool(serving)
        terminating = bool(cond.get("terminating") or False)
        target = ep.get("targetRef") or {}
        for addr in ep.get("addresses") or []:
            host = f"[{addr}]" if ipv6 else addr
            out.append(
                DiscoveredEndpoint(
                    url=f"http://{host}:{port}",
                    ready=ready,
                    serving=serving,
                    terminating=terminating,
                    name=str(target.get("name") or ""),
                )
            )
    return out


def merge_slices(slices: Iterable[Mapping[str, Any]], port_name: str = "http") -> list[DiscoveredEndpoint]:
    out: list[DiscoveredEndpoint] = []
    for s in slices:
        out.extend(parse_endpoint_slice(s, port_name))
    return out
