"""Composition root of `shoal epp`: the router's core (discovery, pool, dispatcher, load poller; built by
the router's own `build_router`) behind three listeners: ext_proc gRPC (9002, TLS by default), gRPC
health (9003, plaintext, for kubelet gRPC probes) and Prometheus metrics (9090)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import aiohttp
import grpc
from aiohttp import web
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2_grpc

from shoal_router.epp.config import EppConfig
from shoal_router.epp.core_adapter import DispatcherPicker
from shoal_router.epp.health import HealthState
from shoal_router.epp.metrics import EppMetrics
from shoal_router.epp.service import ExternalProcessor
from shoal_router.epp.stream import StreamLimits
from shoal_router.epp.tls import server_credentials
from shoal_router.flow.poller import poll_loads
from shoal_router.multimodel.config import watch_splits
from shoal_router.router import Router
from shoal_router.server import build_router, default_sources
from shoal_router.serving import run, wait_for_stop
from shoal_router.split import SplitTable

log = logging.getLogger("shoal_router.epp")

HEALTH_REFRESH_S = 1.0
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),  # one body chunk per message; Envoy sends <= 64 KiB
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


async def _health_loop(state: HealthState) -> None:
    while True:
        await state.refresh()
        await asyncio.sleep(HEALTH_REFRESH_S)


def _metrics_app(router: Router) -> web.Application:
    from shoal_router.server import _update_endpoint_states  # the router's own series, same registry

    async def metrics(request: web.Request) -> web.Response:
        _update_endpoint_states(router)
        return web.Response(
            body=router.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "synced": router.pool.synced, "pending": router.dispatcher.pending}
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


def _background(router: Router, cfg: EppConfig) -> list[asyncio.Task[None]]:
    tasks = [asyncio.create_task(source(router)) for source in default_sources(cfg.core)]
    if cfg.core.load_poll_interval_s > 0:
        assert router.session is not None
        poll = poll_loads(router.session, router.pool, cfg.core.load_poll_interval_s)
        tasks.append(asyncio.create_task(poll))
    return tasks


def _grpc_servers(
    cfg: EppConfig, picker: DispatcherPicker, metrics: EppMetrics, limits: StreamLimits
) -> tuple[grpc.aio.Server, grpc.aio.Server, HealthState, SplitTable | None]:
    """The ext_proc server (TLS unless plaintext) and the plaintext gRPC health server, not yet started."""
    server = grpc.aio.server(options=GRPC_OPTIONS)
    splits = SplitTable() if cfg.splits_file else None
    pb_grpc.add_ExternalProcessorServicer_to_server(
        ExternalProcessor(picker, metrics, limits, splits), server
    )
    address = f"{cfg.core.listen_host}:{cfg.grpc_port}"
    if cfg.secure:
        server.add_secure_port(address, server_credentials(cfg.cert_file, cfg.key_file))
    else:
        server.add_insecure_port(address)
    health = HealthState(picker.ready)
    health_server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, health_server)
    health_server.add_insecure_port(f"{cfg.core.listen_host}:{cfg.health_port}")
    return server, health_server, health, splits


async def serve(
    cfg: EppConfig, stop: asyncio.Event | None = None, on_ready: Callable[[], None] | None = None
) -> None:
    router = build_router(cfg.core)
    router.pool.clock = asyncio.get_running_loop().time
    router.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60))
    picker = DispatcherPicker(
        router.dispatcher, router.pool, cfg.fallbacks, dict(cfg.core.objectives), dict(cfg.tenants)
    )
    limits = StreamLimits(
        max_body_bytes=cfg.max_body_bytes,
        prefix_chars=cfg.core.prefix_chars,
        prompt_key=router.dispatcher.strategy.needs_key,
    )
    metrics = EppMetrics(router.metrics.registry)

    server, health_server, health, splits = _grpc_servers(cfg, picker, metrics, limits)
    runner = web.AppRunner(_metrics_app(router), access_log=None)

    tasks = _background(router, cfg)
    tasks.append(asyncio.create_task(_health_loop(health)))
    if splits is not None and cfg.splits_file:
        tasks.append(asyncio.create_task(watch_splits(splits, cfg.splits_file)))
    try:
        await server.start()
        await health_server.start()
        await runner.setup()
        await web.TCPSite(runner, cfg.core.listen_host, cfg.metrics_port, reuse_address=True).start()
        log.info(
            "endpoint picker listening",
            extra={
                "grpc_port": cfg.grpc_port,
                "health_port": cfg.health_port,
                "metrics_port": cfg.metrics_port,
                "tls": cfg.secure,
                "strategy": cfg.core.strategy,
                "discovery": cfg.core.discovery,
            },
        )
        if on_ready is not None:
            on_ready()
        await wait_for_stop(stop)
        log.info("endpoint picker stopping", extra={"grace_s": cfg.core.shutdown_timeout_s})
    finally:
        await server.stop(cfg.core.shutdown_timeout_s)
        await health_server.stop(None)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await runner.cleanup()
        await router.session.close()


def main(cfg: EppConfig) -> int:
    return run(serve(cfg), cfg.core.log_level)
