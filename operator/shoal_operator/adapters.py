"""LoRA adapters applied live: the operator brings each ready replica's adapters to `spec.adapters`.

Why the operator calls the replicas (vLLM's `POST /v1/load_lora_adapter` / `unload_lora_adapter`, which
the model-server serves) rather than the pods watching a mounted ConfigMap: a change takes effect within
one reconcile (a kubelet refreshes mounted ConfigMaps only every minute or so), the same calls tell the
operator which replica serves which adapter (`status.adapters`), and the pod template never changes, so
no rollout. A replica that starts later gets the list when it turns ready (its Deployment's status
change triggers a reconcile); until then routers send an adapter's requests only to replicas that list
it in `/v1/models`.

`plan` is the pure decision; `sync` is the thin I/O around it (bounded: one timeout per call, replicas
in parallel).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
from shoal_common import names

from shoal_operator.api import InferenceService
from shoal_operator.builders.common import selector_string
from shoal_operator.builders.model_server import adapter_path
from shoal_operator.kube import Kube

log = logging.getLogger("shoal.operator")

CALL_TIMEOUT_S = 10.0  # vLLM reads an adapter's weights inside the load call


@dataclass(frozen=True)
class Plan:
    load: list[tuple[str, str]]  # (name, path), in spec order
    unload: list[str]


def desired_adapters(isvc: InferenceService) -> dict[str, str]:
    return {a.name: adapter_path(isvc, a) for a in isvc.spec.adapters}


def plan(desired: dict[str, str], loaded: dict[str, str]) -> Plan:
    """Unload what is gone or moved (a changed URI reloads), load what is missing."""
    unload = [n for n, path in loaded.items() if desired.get(n) != path]
    load = [(n, path) for n, path in desired.items() if loaded.get(n) != path]
    return Plan(load=load, unload=unload)


def loaded_adapters(models_doc: dict[str, Any]) -> dict[str, str]:
    """`/v1/models` -> {adapter: path}: the cards with a parent (the base model has none)."""
    out: dict[str, str] = {}
    for card in models_doc.get("data") or []:
        if isinstance(card, dict) and card.get("parent") and isinstance(card.get("id"), str):
            out[card["id"]] = str(card.get("root") or "")
    return out


def ready_pod_urls(pods: list[dict[str, Any]]) -> list[str]:
    urls = []
    for pod in pods:
        status = pod.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
        )
        if ready and status.get("podIP") and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            urls.append(f"http://{status['podIP']}:{_http_port(pod)}")
    return urls


def _http_port(pod: dict[str, Any]) -> int:
    """The container port named `http` (the model-server's), else the model-server's default."""
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == "http" and p.get("containerPort"):
                return int(p["containerPort"])
    return names.MODEL_SERVER_PORT


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, str]) -> None:
    async with session.post(url, json=body) as resp:
        if resp.status >= 400 and not (resp.status == 404 and url.endswith("/unload_lora_adapter")):
            raise RuntimeError(f"{url}: HTTP {resp.status}: {(await resp.text())[:300]}")


async def sync_replica(session: aiohttp.ClientSession, base: str, desired: dict[str, str]) -> set[str]:
    """Bring one replica to `desired`; returns the adapters it serves afterwards (errors: logged)."""
    loaded: dict[str, str] = {}
    try:
        async with session.get(f"{base}/v1/models") as resp:
            resp.raise_for_status()
            loaded = loaded_adapters(await resp.json())
        todo = plan(desired, loaded)
        for name in todo.unload:
            await _post(session, f"{base}/v1/unload_lora_adapter", {"lora_name": name})
            loaded.pop(name, None)
        for name, path in todo.load:
            await _post(session, f"{base}/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
            loaded[name] = path
    except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError) as exc:
        log.warning("adapter sync failed", extra={"replica": base, "error": str(exc)})
    return {n for n, p in loaded.items() if desired.get(n) == p}


def adapter_status(desired: list[str], served: list[set[str]]) -> list[dict[str, Any]]:
    """status.adapters: per adapter, how many ready replicas serve it; ready when all of them do."""
    out = []
    for name in desired:
        count = sum(1 for s in served if name in s)
        ready = bool(served) and count == len(served)
        message = "" if ready else f"served by {count} of {len(served)} ready replicas"
        out.append({"name": name, "readyReplicas": count, "ready": ready, "message": message})
    return out


async def sync(kube: Kube, isvc: InferenceService) -> list[dict[str, Any]] | None:
    """Apply `spec.adapters` to every ready replica; None when LoRA is off (no status.adapters)."""
    if not isvc.spec.lora_enabled:
        return None
    pods = await kube.list("Pod", isvc.namespace, label_selector=selector_string(isvc))
    urls = ready_pod_urls(pods)
    desired = desired_adapters(isvc)
    timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S * (len(desired) + 2))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        served = await asyncio.gather(*(sync_replica(session, u, desired) for u in urls))
    return adapter_status(list(desired), list(served))
