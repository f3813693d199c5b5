"""Thin kopf handlers: every trigger funnels into the one idempotent `Reconciler.reconcile`.

- every watch event of an InferenceService that is new to this process (resume, create) or whose
  `metadata.generation` differs from `status.observedGeneration` (update): full reconcile, retried with
  exponential backoff on API trouble;
- a timer every `drift_period_seconds`: full reconcile, repairing edited or deleted children;
- events of the operator's Deployments: a deleted one is re-created at once, others refresh the status
  (Ready follows the pods without waiting for the timer).

The autoscaler hook: with `autoscaler_enabled`, startup imports `shoal_operator.autoscaler.loop` lazily
and runs `await loop.run(ctx)` (ctx: `OperatorContext`) in the replica holding the leader Lease only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import logging
import random
from typing import Any

import kopf
from kopf._cogs.structs import ids as kopf_ids
from kopf._cogs.structs import references as kopf_references
from kopf._core.intents import handlers as kopf_handlers
from shoal_common import names

from shoal_operator.context import OperatorContext
from shoal_operator.kube import path_for
from shoal_operator.leader import LeaseElector, run_while_leader
from shoal_operator.reconcile import Reconciler, TransientError

log = logging.getLogger("shoal.operator")

ISVC = (names.GROUP, names.VERSION, names.PLURAL)
PERSISTENCE_PREFIX = "operator.shoal.dev"


def backoff_seconds(retry: int) -> float:
    """Exponential backoff with jitter for transient API failures: 1, 2, 4 ... 300 s."""
    base: float = min(300.0, 2.0 ** min(retry, 9))
    return base * random.uniform(0.8, 1.2)


def configure_kopf(settings: kopf.OperatorSettings, ctx: OperatorContext) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PERSISTENCE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PERSISTENCE_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{PERSISTENCE_PREFIX}/finalizer"
    settings.posting.level = logging.WARNING  # kopf's own per-handler messages are not Events
    settings.watching.server_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.peering.priority = ctx.settings.peering_priority
    if ctx.settings.worker_limit:
        settings.batching.worker_limit = ctx.settings.worker_limit


def rollout_signature(deployment: dict[str, Any]) -> tuple[Any, ...]:
    st = deployment.get("status") or {}
    conds = tuple((c.get("type"), c.get("status"), c.get("reason")) for c in st.get("conditions", []) or [])
    return (
        (deployment.get("metadata") or {}).get("generation"),
        (deployment.get("spec") or {}).get("replicas"),
        st.get("observedGeneration"),
        st.get("replicas"),
        st.get("updatedReplicas"),
        st.get("readyReplicas"),
        st.get("availableReplicas"),
        conds,
    )


def connection_info(ctx: OperatorContext) -> kopf.ConnectionInfo:
    creds = ctx.kube.creds
    return kopf.ConnectionInfo(
        server=creds.server,
        ca_path=creds.ca_path,
        ca_data=base64.b64encode(creds.ca_data) if creds.ca_data else None,
        insecure=creds.insecure or None,
        certificate_path=creds.cert_path,
        private_key_path=creds.key_path,
        token=creds.bearer(),
        default_namespace=creds.default_namespace,
    )


def build_registry(ctx: OperatorContext, reconciler: Reconciler) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    settings = ctx.settings

    @kopf.on.startup(registry=registry)
    async def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings, ctx)
        if ctx.settings.autoscaler_enabled:
            start_autoscaler(ctx)

    @kopf.on.cleanup(registry=registry)
    async def _cleanup(**_: Any) -> None:
        ctx.stop.set()
        if ctx.background:
            await asyncio.wait(ctx.background, timeout=10)

    @kopf.on.login(registry=registry)
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(ctx)

    seen: dict[tuple[str, str], tuple[Any, ...]] = {}
    retry_tasks: set[asyncio.Task[None]] = set()
    failures: dict[tuple[str, str], int] = {}

    async def reconcile_now(body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        fresh = not (body.get("status") or {}).get("observedGeneration")
        try:
            await reconciler.reconcile(body, fresh=fresh)
            failures.pop(key, None)
        except TransientError as exc:
            attempt = failures[key] = failures.get(key, 0) + 1
            delay = backoff_seconds(attempt)
            log.warning(
                "reconcile failed; retrying",
                extra={"inferenceservice": key[1], "retry_in_s": round(delay, 1), "error": str(exc)},
            )

            async def retry_later() -> None:
                await asyncio.sleep(delay)
                try:
                    await reconciler.refresh(key[0], key[1], apply_children=True)
                    failures.pop(key, None)
                except TransientError:
                    failures[key] = failures.get(key, 0) + 1  # the drift timer keeps trying

            task = asyncio.create_task(retry_later())
            retry_tasks.add(task)
            task.add_done_callback(retry_tasks.discard)

    # Level-triggered: kopf's change-detecting handlers (on.create/update/resume) would write bookkeeping
    # annotations into every InferenceService; instead every watch event is looked at and the object is
    # reconciled when it is new to this process (initial listing = resume, ADDED) or its generation is not
    # the one the status reports (create and update alike). Status-only changes (our own writes) are skipped.
    @kopf.on.event(*ISVC, registry=registry)
    async def on_isvc_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        meta = body.get("metadata", {})
        if event.get("type") == "DELETED" or meta.get("deletionTimestamp"):
            reconciler.forget(meta.get("namespace", ""), meta.get("name", ""), meta.get("uid"))
            return
        observed = (body.get("status") or {}).get("observedGeneration")
        if event.get("type") in (None, "ADDED") or observed != meta.get("generation"):
            await reconcile_now(copy.deepcopy(dict(body)))

    async def drift(name: str, namespace: str | None, **_: Any) -> None:
        try:
            await reconciler.refresh(namespace or "", name, apply_children=True)
        except TransientError as exc:
            log.warning("drift check failed; next period retries", extra={"error": str(exc)})

    # A timer without kopf's finalizer: deleting an InferenceService must never wait for the operator
    # (its children go by owner references). Same construction as kopf.timer(), requires_finalizer=False.
    registry._spawning.append(
        kopf_handlers.TimerHandler(
            fn=drift,
            id=kopf_ids.HandlerId("drift"),
            param=None,
            errors=None,
            timeout=None,
            retries=None,
            backoff=None,
            selector=kopf_references.Selector(*ISVC),
            labels=None,
            annotations=None,
            when=None,
            field=None,
            value=None,
            initial_delay=settings.drift_period_seconds,
            requires_finalizer=False,
            sharp=None,
            idle=None,
            interval=settings.drift_period_seconds,
        )
    )

    @kopf.on.event(
        "apps", "v1", "deployments", labels={names.LABEL_MANAGED_BY: names.MANAGED_BY}, registry=registry
    )
    async def _child_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        meta = body.get("metadata", {})
        owner = (meta.get("labels") or {}).get(names.LABEL_ISVC)
        namespace = meta.get("namespace")
        if not owner or not namespace:
            return
        kind = event.get("type")
        full = kind == "DELETED"
        key = (namespace, str(meta.get("name")))
        if full:
            seen.pop(key, None)
        else:
            # Only what the status is computed from; our own apply (ADDED, spec changes) already
            # reported its result, and metadata-only updates change nothing.
            signature = rollout_signature(dict(body))
            if seen.get(key) == signature or kind == "ADDED":
                seen[key] = signature
                return
            seen[key] = signature
        try:
            await reconciler.refresh(namespace, owner, apply_children=full)
        except TransientError as exc:
            log.warning("status refresh failed", extra={"inferenceservice": owner, "error": str(exc)})

    return registry


def start_autoscaler(ctx: OperatorContext) -> None:
    """Run `shoal_operator.autoscaler.loop.run(ctx)` while this replica holds the leader Lease."""
    try:
        from shoal_operator.autoscaler import loop  # type: ignore[attr-defined,unused-ignore]
    except ImportError as exc:
        log.warning("autoscaler not available; running without it", extra={"error": str(exc)})
        return
    namespace = ctx.settings.lease_namespace or ctx.kube.creds.default_namespace or "default"
    elector = LeaseElector(
        ctx.kube, namespace, ctx.settings.lease_name, ctx.identity, ctx.settings.lease_duration_seconds
    )

    async def work() -> None:
        await loop.run(ctx)

    task = asyncio.create_task(run_while_leader(elector, work, ctx.stop), name="autoscaler-leader")
    ctx.background.append(task)


async def ensure_peering(ctx: OperatorContext) -> bool:
    """Create the kopf peering object(s) if missing; False when the peering CRDs are not installed."""
    s = ctx.settings
    kube = ctx.kube
    kind = "ClusterKopfPeering" if s.clusterwide else "KopfPeering"
    if not await kube.has_api("kopf.dev/v1", kind.lower() + "s"):
        return False
    for namespace in [None] if s.clusterwide else s.namespaces:
        body: dict[str, Any] = {
            "apiVersion": "kopf.dev/v1",
            "kind": kind,
            "metadata": {"name": s.peering_name, **({"namespace": namespace} if namespace else {})},
        }
        with contextlib.suppress(Exception):
            if await kube.get(path_for(kind, namespace, s.peering_name)) is None:
                await kube.create(path_for(kind, namespace), body)
    return True
