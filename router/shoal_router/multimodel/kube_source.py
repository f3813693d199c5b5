"""Pools from Kubernetes: the model-server pods of a namespace, grouped into pools by their
InferenceService label; optionally only the InferenceServices whose labels match a selector; optionally
the splits and the selector from an `InferenceGateway` object (the one the operator deployed this entry
point for), so that a change to it applies at once, without a restart or a ConfigMap refresh.

`Selection` and the parsers are the pure part; `watch_kubernetes` runs the list/watch loops the router's
other sources use (one per kind) and publishes every change to the gateway.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from shoal_common import names

from shoal_router.discovery.kubernetes import KeyedView, api_client, list_watch
from shoal_router.discovery.pods import parse_pod
from shoal_router.endpoints import DiscoveredEndpoint
from shoal_router.multimodel.gateway import ModelGateway
from shoal_router.split import Split, parse_splits

log = logging.getLogger("shoal_router.multimodel")

MODEL_SERVER_SELECTOR = f"{names.LABEL_COMPONENT}={names.COMPONENT_MODEL_SERVER}"


def group_pods(pods: Iterable[Mapping[str, Any]], port: int = 8000) -> dict[str, list[DiscoveredEndpoint]]:
    """InferenceService name -> its pods as endpoints (pods without the label are not shoal's: skipped)."""
    out: dict[str, list[DiscoveredEndpoint]] = {}
    for pod in pods:
        isvc = ((pod.get("metadata") or {}).get("labels") or {}).get(names.LABEL_ISVC)
        endpoint = parse_pod(pod, "http", port)
        if isvc and endpoint is not None:
            out.setdefault(str(isvc), []).append(endpoint)
    return out


def parse_match_labels(selector: str) -> dict[str, str]:
    """`team=chat,tier=gold` -> {"team": "chat", "tier": "gold"}; only equality (what matchLabels says)."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in selector.split(","))):
        key, sep, value = part.replace("==", "=").partition("=")
        if not sep or not key.strip() or "!" in key:
            raise ValueError(f"selector {selector!r}: only key=value terms are supported")
        out[key.strip()] = value.strip()
    return out


def gateway_settings(obj: Mapping[str, Any]) -> tuple[dict[str, Split], dict[str, str] | None]:
    """An InferenceGateway's splits and its InferenceService selector (None: every one of the namespace)."""
    spec = obj.get("spec") or {}
    selector = spec.get("selector")
    labels = selector.get("matchLabels") if isinstance(selector, Mapping) else None
    if labels is not None and not isinstance(labels, Mapping):
        raise ValueError("spec.selector.matchLabels must be a mapping")
    match = {str(k): str(v) for k, v in labels.items()} if labels is not None else None
    return parse_splits(spec.get("splits")), match


@dataclass
class Selection:
    """What the watches saw. `pools()`: the selected InferenceServices' pods (a selected one without
    pods is an empty pool, which holds its requests); `declared()`: their base models by their specs."""

    match_labels: dict[str, str] | None = None  # None: every InferenceService of the namespace
    services: dict[str, dict[str, str]] | None = None  # name -> its labels (None: not watched)
    models: dict[str, str] = field(default_factory=dict)  # name -> spec.model.name
    pods: list[dict[str, Any]] = field(default_factory=list)

    def chosen(self) -> set[str] | None:
        if self.services is None:
            return None  # pods only: every InferenceService with a model-server pod
        wanted = (self.match_labels or {}).items()
        return {n for n, labels in self.services.items() if wanted <= labels.items()}

    def pools(self) -> dict[str, list[DiscoveredEndpoint]]:
        groups = group_pods(self.pods)
        chosen = self.chosen()
        return groups if chosen is None else {n: groups.get(n, []) for n in sorted(chosen)}

    def declared(self) -> dict[str, str]:
        """Base model -> InferenceService, for the selected ones (known only when they are watched)."""
        return {self.models[n]: n for n in sorted(self.chosen() or ()) if self.models.get(n)}


def _custom_lister(fn: Callable[..., Awaitable[Any]], plural: str) -> Callable[..., Awaitable[Any]]:
    """CustomObjectsApi's list in the shape `list_watch` wants (`.items`, `.metadata.resource_version`);
    the watch call passes through unchanged (its docstring, copied by wraps, tells the watch the type)."""

    @functools.wraps(fn)
    async def list_fn(**kwargs: Any) -> Any:
        ns = kwargs.pop("namespace")
        result = await fn(names.GROUP, names.VERSION, ns, plural, **kwargs)
        if kwargs.get("watch"):
            return result
        meta = SimpleNamespace(resource_version=result["metadata"].get("resourceVersion"))
        return SimpleNamespace(items=result.get("items") or [], metadata=meta)

    return list_fn


async def watch_kubernetes(
    gateway: ModelGateway,
    namespace: str,
    selector: str,
    gateway_name: str | None,
    kubeconfig: str | None,
) -> None:
    """Forever: keep the gateway's pools (and, with `gateway_name`, its splits) equal to the cluster's."""
    from kubernetes_asyncio import client

    sel = Selection(match_labels=parse_match_labels(selector) if selector else None)
    if selector or gateway_name:
        sel.services = {}  # watched below: until listed, nothing is selected
    async with await api_client(kubeconfig) as api:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        lister = functools.partial(_custom_lister, custom.list_namespaced_custom_object)
        clean = api.sanitize_for_serialization
        pods = KeyedView(lambda items: _publish(gateway, sel, pods=items))
        loops = [
            list_watch(
                f"model-server pods of {namespace}",
                core.list_namespaced_pod,
                {"namespace": namespace, "label_selector": MODEL_SERVER_SELECTOR},
                pods.replace,
                pods.apply,
                clean,
            )
        ]
        if selector or gateway_name:
            services = KeyedView(lambda items: _publish(gateway, sel, services=items))
            what = f"InferenceServices of {namespace}"
            kwargs = {"namespace": namespace}
            loops.append(
                list_watch(what, lister(names.PLURAL), kwargs, services.replace, services.apply, clean)
            )
        if gateway_name:
            own = KeyedView(lambda items: _configure(gateway, sel, items, gateway_name))
            kwargs = {"namespace": namespace, "field_selector": f"metadata.name={gateway_name}"}
            what = f"InferenceGateway {namespace}/{gateway_name}"
            loops.append(
                list_watch(what, lister(names.GATEWAY_PLURAL), kwargs, own.replace, own.apply, clean)
            )
        await asyncio.gather(*loops)


def _publish(
    gateway: ModelGateway,
    sel: Selection,
    pods: list[dict[str, Any]] | None = None,
    services: list[dict[str, Any]] | None = None,
) -> None:
    if pods is not None:
        sel.pods = pods
    if services is not None:
        sel.services = {
            str(s["metadata"]["name"]): dict((s["metadata"].get("labels") or {}).items()) for s in services
        }
        sel.models = {str(s["metadata"]["name"]): _model_name(s) for s in services}
    gateway.set_pools(sel.pools(), sel.declared() if sel.services is not None else None)


def _model_name(isvc: Mapping[str, Any]) -> str:
    model = (isvc.get("spec") or {}).get("model")
    name = model.get("name") if isinstance(model, Mapping) else None
    return name if isinstance(name, str) else ""


def _configure(gateway: ModelGateway, sel: Selection, items: list[dict[str, Any]], name: str) -> None:
    """The InferenceGateway's splits and selector; a spec that does not parse keeps the previous ones."""
    if not items:
        log.warning("InferenceGateway not found; keeping the last configuration", extra={"gateway": name})
        return
    try:
        splits, match = gateway_settings(items[0])
    except ValueError as exc:
        log.error("InferenceGateway refused; keeping the previous splits", extra={"error": str(exc)})
        return
    sel.match_labels = match
    gateway.splits = splits
    gateway.configured = True
    gateway.set_pools(sel.pools(), sel.declared())
    log.info("InferenceGateway applied", extra={"gateway": name, "splits": sorted(splits)})
