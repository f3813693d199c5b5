"""Pure parsing of Pods into endpoints, for `--discovery pods` (pod IP, Ready condition, deletion)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shoal_router.endpoints import DiscoveredEndpoint


def _container_port(pod: Mapping[str, Any], port_name: str) -> int | None:
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == port_name and p.get("containerPort"):
                return int(p["containerPort"])
    return None


def parse_pod(
    pod: Mapping[str, Any], port_name: str = "http", default_port: int = 8000
) -> DiscoveredEndpoint | None:
    """A pod is ready when its Ready condition is True, terminating once it has a deletionTimestamp (what
    the EndpointSlice controller would publish), and gone when it has no IP or has finished."""
    status = pod.get("status") or {}
    ip = status.get("podIP")
    if not ip or status.get("phase") in ("Succeeded", "Failed"):
        return None
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    terminating = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
    port = _container_port(pod, port_name) or default_port
    host = f"[{ip}]" if ":" in ip else ip
    return DiscoveredEndpoint(
        url=f"http://{host}:{port}",
        ready=ready and not terminating,
        serving=ready,
        terminating=terminating,
        name=str((pod.get("metadata") or {}).get("name") or ""),
    )


def merge_pods(
    pods: Iterable[Mapping[str, Any]], port_name: str = "http", default_port: int = 8000
) -> list[DiscoveredEndpoint]:
    out = [parse_pod(p, port_name, default_port) for p in pods]
    return [e for e in out if e is not None]


def selector_string(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
