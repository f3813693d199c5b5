"""Composition root of `shoal operator`: settings read once, parts wired, kopf run."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable

import kopf
from prometheus_client import start_http_server
from shoal_common.logging import configure_logging

from shoal_operator.autoscaler.loop import Autoscaler, AutoscalerMetrics, AutoscalerSettings
from shoal_operator.autoscaler.metrics import MetricsSource
from shoal_operator.autoscaler.wake import FrontEndProbe, probe_session
from shoal_operator.builders import BuildOptions
from shoal_operator.context import OperatorContext
from shoal_operator.handlers import LeaderWork, build_registry, ensure_peering
from shoal_operator.kube import ApiError, Kube, connect
from shoal_operator.metrics import OperatorMetrics
from shoal_operator.reconcile import Reconciler, ReconcilerConfig
from shoal_operator.settings import OperatorSettings

log = logging.getLogger("shoal.operator")


def identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


async def serve(settings: OperatorSettings, stop_flag: asyncio.Event | None = None) -> None:
    kube = Kube(
        await connect(settings.kubeconfig, settings.context), max_connections=settings.max_connections
    )
    metrics = OperatorMetrics()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=metrics.registry)
    ctx = OperatorContext(settings=settings, kube=kube, metrics=metrics, identity=identity())
    build = BuildOptions(
        model_server_image=settings.model_server_image,
        router_image=settings.router_image,
        image_pull_policy=settings.image_pull_policy,
        cluster_domain=settings.cluster_domain,
    )
    reconciler = Reconciler(kube, ReconcilerConfig(build=build), metrics, emit=ctx.emit_event)
    leader_work = [autoscaler_work(ctx)] if settings.autoscaler_enabled else []
    try:
        standalone = True
        if settings.peering:
            standalone = not await _with_retries(lambda: ensure_peering(ctx), what="reach the API server")
            if standalone:
                log.warning(
                    "kopf peering CRDs are not installed (crds/kopf.dev_peerings.yaml): running standalone"
                )
        log.info(
            "operator starting",
            extra={
                "namespaces": settings.namespaces or "all",
                "peering": None if standalone else settings.peering_name,
                "drift_period_s": settings.drift_period_seconds,
                "identity": ctx.identity,
            },
        )
        await kopf.operator(
            registry=build_registry(ctx, reconciler, leader_work),
            clusterwide=settings.clusterwide,
            namespaces=settings.namespaces,
            standalone=standalone,
            peering_name=None if standalone else settings.peering_name,
            priority=settings.peering_priority,
            identity=ctx.identity,  # type: ignore[arg-type]
            liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz"
            if settings.health_port
            else None,
            stop_flag=stop_flag,
        )
    finally:
        ctx.stop.set()
        await kube.aclose()


def autoscaler_work(ctx: OperatorContext) -> LeaderWork:
    """The autoscaler, handed its metrics source; it runs while this replica holds the leader Lease.

    Each leadership term starts with fresh policy state: what another leader decided meanwhile is not
    in this replica's memory (the status it recorded is read back instead)."""
    s = ctx.settings
    settings = AutoscalerSettings(
        period_seconds=s.autoscaler_period_seconds,
        namespaces=tuple(s.namespaces),
        wake_poll_seconds=s.autoscaler_wake_poll_seconds,
    )
    source = MetricsSource(s.prometheus_url)
    metrics = AutoscalerMetrics(ctx.registry)

    async def work() -> None:
        async with probe_session() as session:
            scaler = Autoscaler(
                ctx.kube, settings, source, metrics, ctx.emit_event, probe=FrontEndProbe(session)
            )
            await scaler.run(ctx.stop)

    return work


async def _with_retries(
    fn: Callable[[], Awaitable[bool]], *, what: str, attempts: int = 30, delay: float = 2.0
) -> bool:
    """Bounded retries while the API server is not reachable yet (e.g. the operator starts first)."""
    for attempt in range(1, attempts + 1):
        try:
            return await fn()
        except ApiError as exc:
            if attempt == attempts or not exc.transient:
                raise SystemExit(f"shoal operator: could not {what}: {exc}") from exc
            log.warning("could not %s (attempt %d): %s", what, attempt, exc)
            await asyncio.sleep(delay)
    return False


def run(settings: OperatorSettings) -> int:
    configure_logging(settings.log_level, settings.json_logs)
    if settings.log_level.upper() != "DEBUG":
        logging.getLogger("kopf").setLevel(logging.WARNING)
    asyncio.run(serve(settings))
    return 0
