"""Kubernetes sources: EndpointSlices of the model-server Service, and the API-keys Secret.

Both are list-then-watch loops with kubernetes_asyncio (no blocking I/O on the loop). Any error (the API
server restarting, a 410 Gone on an expired resourceVersion, a dropped stream) leads to a fresh list after
an exponential back-off with jitter; a successful list resets the back-off. The endpoint pool always
receives a full view, so a missed event is corrected by the next list.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from shoal_router.auth import KeyHolder, parse_secret_entries
from shoal_router.config import RouterConfig
from shoal_router.discovery.endpointslice import merge_slices
from shoal_router.discovery.pods import merge_pods, selector_string
from shoal_router.router import Router

log = logging.getLogger("shoal_router.discovery")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
WATCH_TIMEOUT_S = 300
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0


async def api_client(kubeconfig: str | None) -> Any:
    """An ApiClient from --kubeconfig, else in-cluster config, else $KUBECONFIG / ~/.kube/config."""
    from kubernetes_asyncio import client, config

    cfg = client.Configuration()
    if kubeconfig:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        await asyncio.to_thread(config.load_incluster_config, client_configuration=cfg)
    else:
        await config.load_kube_config(client_configuration=cfg)
    return client.ApiClient(configuration=cfg)


async def list_watch(
    what: str,
    list_fn: Callable[..., Awaitable[Any]],
    kwargs: dict[str, Any],
    on_list: Callable[[list[dict[str, Any]]], None],
    on_event: Callable[[str, dict[str, Any]], None],
    sanitize: Callable[[Any], Any],
) -> None:
    """Forever: list, deliver the full view, watch from its resourceVersion; on any error back off and
    re-list."""
    from kubernetes_asyncio import watch

    failures = 0
    while True:
        try:
            result = await list_fn(**kwargs)
            items = [sanitize(i) for i in result.items]
            on_list(items)
            failures = 0
            w = watch.Watch()
            async with w:
                async for event in w.stream(
                    list_fn,
                    resource_version=result.metadata.resource_version,
                    timeout_seconds=WATCH_TIMEOUT_S,
                    allow_watch_bookmarks=True,
                    **kwargs,
                ):
                    kind = event["type"]
                    if kind == "BOOKMARK":
                        continue
                    on_event(kind, event["raw_object"])
            # the watch ended normally (server-side timeout): list again at once
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** min(failures, 10)) * random.uniform(0.5, 1.0)
            log.warning(
                f"{what}: list/watch failed; re-listing",
                extra={"error": f"{type(exc).__name__}: {exc}", "retry_in_s": round(delay, 2)},
            )
            await asyncio.sleep(delay)


class KeyedView:
    """The objects a list/watch currently sees, by name; every change publishes the whole view."""

    def __init__(self, publish: Callable[[list[dict[str, Any]]], None]) -> None:
        self._items: dict[str, dict[str, Any]] = {}
        self._publish = publish

    def __len__(self) -> int:
        return len(self._items)

    def replace(self, items: list[dict[str, Any]]) -> None:
        self._items = {item["metadata"]["name"]: item for item in items}
        self._publish(list(self._items.values()))

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            self._items.pop(name, None)
        else:
            self._items[name] = obj
        self._publish(list(self._items.values()))


def endpoint_slice_source(config: RouterConfig) -> Callable[[Router], Coroutine[Any, Any, None]]:
    async def run(router: Router) -> None:
        from kubernetes_asyncio import client

        async with await api_client(config.kubeconfig) as api:
            v1 = client.DiscoveryV1Api(api)
            slices = KeyedView(lambda items: router.pool.update(merge_slices(items, config.port_name)))

            def on_list(items: list[dict[str, Any]]) -> None:
                slices.replace(items)
                log.info(
                    "endpoint slices listed",
                    extra={
                        "service": config.service,
                        "slices": len(slices),
                        "endpoints": len(router.pool.states()),
                    },
                )

            await list_watch(
                f"EndpointSlices of {config.namespace}/{config.service}",
                v1.list_namespaced_endpoint_slice,
                {"namespace": config.namespace, "label_selector": f"{SERVICE_NAME_LABEL}={config.service}"},
                on_list,
                slices.apply,
                api.sanitize_for_serialization,
            )

    return run


def pod_source(config: RouterConfig) -> Callable[[Router], Coroutine[Any, Any, None]]:
    """Endpoints from the Pods the Service selects (`--discovery pods`): for clusters whose EndpointSlices
    cannot carry the pod IPs (the sandbox's loopback pod IPs are rejected by EndpointSlice validation)."""

    async def run(router: Router) -> None:
        from kubernetes_asyncio import client

        async with await api_client(config.kubeconfig) as api:
            core = client.CoreV1Api(api)
            selector = config.selector
            failures = 0
            while not selector:
                try:
                    svc = await core.read_namespaced_service(config.service, config.namespace)
                    selector = selector_string(svc.spec.selector or {})
                    if not selector:
                        raise ValueError(f"Service {config.service} has no selector")
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** min(failures, 10))
                    log.warning(
                        "reading the Service's selector failed",
                        extra={"service": config.service, "error": str(exc), "retry_in_s": delay},
                    )
                    await asyncio.sleep(delay)
            pods = KeyedView(
                lambda items: router.pool.update(merge_pods(items, config.port_name, config.target_port))
            )

            def on_list(items: list[dict[str, Any]]) -> None:
                pods.replace(items)
                log.info("pods listed", extra={"selector": selector, "pods": len(pods)})

            await list_watch(
                f"Pods of {config.namespace}/{config.service}",
                core.list_namespaced_pod,
                {"namespace": config.namespace, "label_selector": selector},
                on_list,
                pods.apply,
                api.sanitize_for_serialization,
            )

    return run


def api_keys_secret_source(config: RouterConfig) -> Callable[[KeyHolder], Coroutine[Any, Any, None]]:
    assert config.api_keys_secret
    secret_name = config.api_keys_secret

    async def run(router: KeyHolder) -> None:
        from kubernetes_asyncio import client

        async with await api_client(config.kubeconfig) as api:
            v1 = client.CoreV1Api(api)

            def load(obj: dict[str, Any] | None) -> None:
                keys = parse_secret_entries((obj or {}).get("data"))
                router.keys.replace(keys)
                router.keys_loaded = True
                log.info("API keys loaded from Secret", extra={"secret": secret_name, "keys": len(keys)})

            def on_list(items: list[dict[str, Any]]) -> None:
                load(items[0] if items else None)

            def on_event(kind: str, obj: dict[str, Any]) -> None:
                load(None if kind == "DELETED" else obj)

            await list_watch(
                f"Secret {config.namespace}/{secret_name}",
                v1.list_namespaced_secret,
                {"namespace": config.namespace, "field_selector": f"metadata.name={secret_name}"},
                on_list,
                on_event,
                api.sanitize_for_serialization,
            )

    return run
