"""Thin kopf handlers: every trigger funnels into the one idempotent `Reconciler.reconcile`.

- every watch event of an InferenceService that is new to this process (resume, create) or whose
  `metadata.generation` differs from `status.observedGeneration` (update): full reconcile, retried with
  exponential backoff on API trouble;
- drift repair (`drift.py`, leader only): every `drift_period_seconds` a plain task lists the
  InferenceServices and re-reconciles them, repairing edited or deleted children;
- events of the operator's Deployments: a deleted one is re-created at once, others refresh the status
  (Ready follows the pods without waiting for the timer).

Leader-only work (drift repair and, when enabled, the autoscaler built by the composition root) runs in
the replica holding the leader Lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import kopf
from shoal_common import names

from shoal_operator.context import OperatorContext
from shoal_operator.drift import Retries, drift_loop
from shoal_operator.kube import bearer_token, path_for
from shoal_operator.leader import LeaseElector, run_while_leader
from shoal_operator.reconcile import Reconciler, TransientError

LeaderWork = Callable[[], Coroutine[Any, Any, None]]

log = logging.getLogger("shoal.operator")

ISVC = (names.GROUP, names.VERSION, names.PLURAL)
PERSISTENCE_PREFIX = "operator.shoal.dev"


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
    # Each object's kopf worker holds its event and the handler's state until it ends; unbounded, a burst of
    # 200 new services has them all alive at once and the operator's RSS peaks past 150 MB (never returned
    # to the OS). A bounded pool, with idle workers leaving after 0.5 s instead of 5 s so that their slots
    # turn over, kept it at 141 MB (from 159 MB); the burst took 23 s instead of 10 s (bench/RESULTS.md, #17).
    settings.queueing.worker_limit = ctx.settings.worker_limit
    settings.queueing.idle_timeout = 0.5


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


async def connection_info(ctx: OperatorContext) -> kopf.ConnectionInfo:
    """kopf's own connection (its watches) from the same kubernetes_asyncio configuration."""
    conf = ctx.kube.connection.configuration
    return kopf.ConnectionInfo(
        server=str(conf.host),
        ca_path=conf.ssl_ca_cert,
        insecure=not conf.verify_ssl or None,
        certificate_path=conf.cert_file,
        private_key_path=conf.key_file,
        token=await bearer_token(conf),
        default_namespace=ctx.kube.default_namespace,
    )


def build_registry(
    ctx: OperatorContext, reconciler: Reconciler, leader_work: list[LeaderWork] | None = None
) -> kopf.OperatorRegistry:
    """The kopf handlers; `leader_work` (e.g. the autoscaler) runs beside drift repair in the leader."""
    # InferenceGateways: the shared entry point (imported here: those modules import this one)
    from shoal_operator.gateway_handlers import gateway_drift_work, register_gateway
    from shoal_operator.gateway_reconcile import GatewayReconciler

    registry = kopf.OperatorRegistry()
    retries = Retries(lambda ns, name: reconciler.refresh(ns, name, apply_children=True))
    gateways = GatewayReconciler(ctx.kube, reconciler.config.build)
    gateway_retries = Retries(gateways.refresh)

    @kopf.on.startup(registry=registry)
    async def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings, ctx)
        drift = [drift_work(ctx, reconciler, retries), gateway_drift_work(ctx, gateways, gateway_retries)]
        start_leader_work(ctx, [*drift, *(leader_work or [])])

    @kopf.on.cleanup(registry=registry)
    async def _cleanup(**_: Any) -> None:
        ctx.stop.set()
        await retries.close()
        await gateway_retries.close()
        if ctx.background:
            await asyncio.wait(ctx.background, timeout=10)

    @kopf.on.login(registry=registry)
    async def _login(**_: Any) -> kopf.ConnectionInfo:
        return await connection_info(ctx)

    # Level-triggered: kopf's change-detecting handlers (on.create/update/resume) would write bookkeeping
    # annotations into every InferenceService; instead every watch event is looked at and the object is
    # reconciled when it is new to this process (initial listing = resume, ADDED) or its generation is not
    # the one the status reports (create and update alike). Status-only changes (our own writes) are skipped.
    @kopf.on.event(*ISVC, registry=registry)
    async def on_isvc_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        meta = body.get("metadata", {})
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        if event.get("type") == "DELETED" or meta.get("deletionTimestamp"):
            reconciler.forget(key[0], key[1], meta.get("uid"))
            retries.forget(key)
            return
        observed = (body.get("status") or {}).get("observedGeneration")
        if event.get("type") in (None, "ADDED") or observed != meta.get("generation"):
            full = copy.deepcopy(dict(body))
            try:
                await reconciler.reconcile(full, fresh=not observed)
            except TransientError as exc:
                retries.failed(key, str(exc))
            else:
                retries.succeeded(key)

    _register_child_events(registry, reconciler)
    register_gateway(registry, gateways)
    return registry


def _register_child_events(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    seen: dict[tuple[str, str], tuple[Any, ...]] = {}

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


def drift_work(ctx: OperatorContext, reconciler: Reconciler, retries: Retries) -> LeaderWork:
    async def refresh(namespace: str, name: str) -> None:
        await reconciler.refresh(namespace, name, apply_children=True)

    async def work() -> None:
        s = ctx.settings
        await drift_loop(ctx.kube, s.namespaces, refresh, retries, s.drift_period_seconds, ctx.stop)

    return work


def start_leader_work(ctx: OperatorContext, works: list[LeaderWork]) -> None:
    """Run `works` together while this replica holds the leader Lease (restarted on re-acquiring)."""
    namespace = ctx.settings.lease_namespace or ctx.kube.default_namespace or "default"
    elector = LeaseElector(
        ctx.kube, namespace, ctx.settings.leader_lease, ctx.identity, ctx.settings.lease_duration_seconds
    )

    async def work() -> None:
        await asyncio.gather(*(w() for w in works))

    task = asyncio.create_task(run_while_leader(elector, work, ctx.stop), name="leader-work")
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
