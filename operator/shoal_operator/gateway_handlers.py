"""Thin kopf handlers of InferenceGateways: every watch event that is new to this process or carries a
generation the status has not observed reconciles the gateway; events of its entry-point Deployment
refresh the status (and a deleted one is re-created at once); the leader's drift repair re-applies every
gateway's children each drift period."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import kopf
from shoal_common import names

from shoal_operator.context import OperatorContext
from shoal_operator.drift import Retries, drift_loop
from shoal_operator.gateway_reconcile import GatewayReconciler
from shoal_operator.handlers import LeaderWork, rollout_signature
from shoal_operator.reconcile import TransientError

log = logging.getLogger("shoal.operator")

GATEWAY = (names.GROUP, names.VERSION, names.GATEWAY_PLURAL)


def register_gateway(registry: kopf.OperatorRegistry, reconciler: GatewayReconciler) -> None:
    seen: dict[tuple[str, str], tuple[Any, ...]] = {}

    @kopf.on.event(*GATEWAY, registry=registry)
    async def on_gateway_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        meta = body.get("metadata", {})
        if event.get("type") == "DELETED" or meta.get("deletionTimestamp"):
            reconciler.forget(str(meta.get("namespace")), str(meta.get("name")))
            return  # the children go with it (owner references)
        observed = (body.get("status") or {}).get("observedGeneration")
        if event.get("type") in (None, "ADDED") or observed != meta.get("generation"):
            full = copy.deepcopy(dict(body))
            await _run(lambda: reconciler.reconcile(full), str(meta.get("name")))

    @kopf.on.event("apps", "v1", "deployments", labels={names.LABEL_GATEWAY: kopf.PRESENT}, registry=registry)
    async def on_entry_point_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        meta = body.get("metadata", {})
        owner, namespace = (meta.get("labels") or {}).get(names.LABEL_GATEWAY), meta.get("namespace")
        if not owner or not namespace:
            return
        key = (str(namespace), str(meta.get("name")))
        if event.get("type") != "DELETED":
            signature = rollout_signature(dict(body))
            if seen.get(key) == signature or event.get("type") == "ADDED":
                seen[key] = signature
                return
            seen[key] = signature
        else:
            seen.pop(key, None)
        await _run(lambda: reconciler.refresh(str(namespace), str(owner)), str(owner))


def gateway_drift_work(ctx: OperatorContext, reconciler: GatewayReconciler, retries: Retries) -> LeaderWork:
    """Leader only, as for InferenceServices: every drift period, re-apply every gateway's children
    (a deleted Service or Role comes back; a hand-edited Deployment is set right)."""

    async def work() -> None:
        s = ctx.settings
        await drift_loop(
            ctx.kube,
            s.namespaces,
            reconciler.refresh,
            retries,
            s.drift_period_seconds,
            ctx.stop,
            names.GATEWAY_KIND,
        )

    return work


RETRIES = 5


async def _run(work: Callable[[], Coroutine[Any, Any, Any]], name: str) -> None:
    """Event handlers are not retried by kopf: a transient failure is retried here, a bounded number of
    times with a doubling delay (1 s to 16 s); after that the next event reconciles again."""
    for attempt in range(RETRIES):
        try:
            await work()
            return
        except TransientError as exc:
            delay = 2.0**attempt
            log.warning(
                "InferenceGateway reconcile failed; retrying",
                extra={"gateway": name, "error": str(exc), "retry_in_s": delay},
            )
            await asyncio.sleep(delay)
