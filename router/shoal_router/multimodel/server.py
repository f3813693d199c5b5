"""Composition root of `shoal router --models-config FILE`: one entry point for many models.

Background work: re-read the file when it changes (pools and splits without a restart), poll every
replica's `/v1/models` (which models and adapters it serves), and each pool's `GET /load` (the core's
poller). Routes: `GET /v1/models`, the two generation routes, health and metrics; every other `/v1/*`
path is a 404 here, so the replicas' admin routes (LoRA load/unload) are never reachable through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from shoal_router.config import RouterConfig
from shoal_router.multimodel.config import parse_text
from shoal_router.multimodel.gateway import ModelGateway
from shoal_router.server import key_sources
from shoal_router.serving import run, serve_app
from shoal_router.wire import error_response

log = logging.getLogger("shoal_router.multimodel")

GATEWAY_KEY: web.AppKey[ModelGateway] = web.AppKey("gateway")


def reload_if_changed(
    gateway: ModelGateway, path: Path, last: tuple[float, int] | None
) -> tuple[float, int] | None:
    """Apply the file when its (mtime, size) changed; a bad file is logged and the old config kept."""
    try:
        st = path.stat()
    except OSError as exc:
        log.warning("models config unreadable", extra={"path": str(path), "error": str(exc)})
        return last
    stamp = (st.st_mtime, st.st_size)
    if stamp == last:
        return last
    try:
        gateway.apply(parse_text(path.read_text(encoding="utf-8")))
    except (ValueError, OSError) as exc:
        log.error(
            "models config refused; keeping the previous one", extra={"path": str(path), "error": str(exc)}
        )
        return stamp
    log.info(
        "models config applied",
        extra={"path": str(path), "pools": sorted(gateway.pools), "splits": sorted(gateway.splits)},
    )
    return stamp


async def watch_file(gateway: ModelGateway, path: Path, interval_s: float) -> None:
    last: tuple[float, int] | None = None
    while True:
        last = reload_if_changed(gateway, path, last)
        await asyncio.sleep(interval_s)


async def poll_models(gateway: ModelGateway, interval_s: float) -> None:
    while True:
        with contextlib.suppress(Exception):
            await gateway.poll_models_once()
        await asyncio.sleep(interval_s)


def build_gateway_app(
    config: RouterConfig,
    models_config: str | None,
    pools_namespace: str | None = None,
    gateway_name: str | None = None,
    *,
    reload_s: float = 1.0,
    models_poll_s: float = 1.0,
    rng: random.Random | None = None,
) -> web.Application:
    gateway = ModelGateway(config, rng=rng)
    app = web.Application(client_max_size=config.max_body_bytes)
    app[GATEWAY_KEY] = gateway
    path = Path(models_config) if models_config else None

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, enable_cleanup_closed=True)
        gateway.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        gateway.discovered = pools_namespace is not None
        tasks = [
            asyncio.create_task(poll_models(gateway, models_poll_s)),
            *(asyncio.create_task(source(gateway)) for source in key_sources(config)),
        ]
        if path is not None:
            reload_if_changed(gateway, path, None)
            tasks.append(asyncio.create_task(watch_file(gateway, path, reload_s)))
        if pools_namespace is not None:
            from shoal_router.multimodel.kube_source import watch_kubernetes

            watch = watch_kubernetes(
                gateway, pools_namespace, config.selector, gateway_name, config.kubeconfig
            )
            tasks.append(asyncio.create_task(watch))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await gateway.close()
            await gateway.session.close()

    app.cleanup_ctx.append(lifecycle)
    _add_routes(app, gateway)
    return app


def _add_routes(app: web.Application, gateway: ModelGateway) -> None:

    async def models(request: web.Request) -> web.Response:
        return gateway.models_response(request)

    async def generate(request: web.Request) -> web.StreamResponse:
        return await gateway.handle(request)

    async def not_here(request: web.Request) -> web.Response:
        return error_response(
            404, f"No route {request.path} on this entry point.", "invalid_request_error", "not_found"
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        ready = gateway.configured and gateway.keys_loaded
        state = {
            "configured": gateway.configured,
            "keys_loaded": gateway.keys_loaded,
            "pools": sorted(gateway.pools),
            "models": sorted(gateway.catalog.where),
            "held": gateway.held(),
        }
        return web.json_response(state, status=200 if ready else 503)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=gateway.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", generate)
    app.router.add_post("/v1/completions", generate)
    app.router.add_route("*", "/v1/{tail:.*}", not_here)


async def serve(
    config: RouterConfig,
    models_config: str | None,
    pools_namespace: str | None = None,
    gateway_name: str | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    app = build_gateway_app(config, models_config, pools_namespace, gateway_name)
    details = {"models_config": models_config, "gateway": gateway_name, "pid": os.getpid()}
    await serve_app(app, config, "multi-model entry point", details, stop)


def main(
    config: RouterConfig,
    models_config: str | None,
    pools_namespace: str | None = None,
    gateway_name: str | None = None,
) -> int:
    """Checks the combination once, then serves (a bad one is a readable exit, not a crash loop)."""
    from shoal_router.multimodel.kube_source import parse_match_labels

    if models_config and not Path(models_config).is_file():
        raise SystemExit(f"shoal router: --models-config {models_config}: no such file")
    if gateway_name and not pools_namespace:
        raise SystemExit("shoal router: --models-gateway needs --models-namespace")
    if not models_config and not gateway_name:
        raise SystemExit("shoal router: the entry point needs --models-config or --models-gateway")
    try:
        parse_match_labels(config.selector)
    except ValueError as exc:
        raise SystemExit(f"shoal router: --selector: {exc}") from None
    return run(serve(config, models_config, pools_namespace, gateway_name), config.log_level)
