"""Pools from Kubernetes: every model-server pod of a namespace (optionally narrowed by a label selector),
grouped into pools by its InferenceService label. The models file then only needs the splits.

`group_pods` is the pure part; `watch_pods` is the list/watch loop the router's other sources use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from shoal_common import names

from shoal_router.discovery.kubernetes import KeyedView, api_client, list_watch
from shoal_router.discovery.pods import parse_pod
from shoal_router.endpoints import DiscoveredEndpoint
from shoal_router.multimodel.gateway import ModelGateway

log = logging.getLogger("shoal_router.multimodel")

MODEL_SERVER_SELECTOR = f"{names.LABEL_COMPONENT}={names.COMPONENT_MODEL_SERVER}"


def selector(extra: str) -> str:
    """Model-server pods, and (optionally) only those matching `extra` (e.g. `team=chat`)."""
    return f"{MODEL_SERVER_SELECTOR},{extra}" if extra else MODEL_SERVER_SELECTOR


def group_pods(pods: Iterable[Mapping[str, Any]], port: int = 8000) -> dict[str, list[DiscoveredEndpoint]]:
    """InferenceService name -> its pods as endpoints (pods without the label are not shoal's: skipped)."""
    out: dict[str, list[DiscoveredEndpoint]] = {}
    for pod in pods:
        isvc = ((pod.get("metadata") or {}).get("labels") or {}).get(names.LABEL_ISVC)
        endpoint = parse_pod(pod, "http", port)
        if isvc and endpoint is not None:
            out.setdefault(str(isvc), []).append(endpoint)
    return out


async def watch_pods(
    gateway: ModelGateway, namespace: str, extra_selector: str, kubeconfig: str | None
) -> None:
    """Forever: keep the gateway's pools equal to the model-server pods of `namespace`."""
    from kubernetes_asyncio import client

    async with await api_client(kubeconfig) as api:
        core = client.CoreV1Api(api)
        pods = KeyedView(lambda items: gateway.set_pools(group_pods(items)))

        def on_list(items: list[dict[str, Any]]) -> None:
            pods.replace(items)
            log.info("model-server pods listed", extra={"namespace": namespace, "pods": len(pods)})

        await list_watch(
            f"model-server pods of {namespace}",
            core.list_namespaced_pod,
            {"namespace": namespace, "label_selector": selector(extra_selector)},
            on_list,
            pods.apply,
            api.sanitize_for_serialization,
        )
