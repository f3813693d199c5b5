"""Composition root of `shoal router`: reads the typed config once and wires discovery, the endpoint pool,
the strategy, limits, auth and the proxy into one aiohttp application.

Why aiohttp for both sides: one event loop, a C HTTP parser on both the server and the client, a keep-alive
connection pool to each replica, and a streaming API whose writes await the socket drain (backpressure)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import aiohttp
import aiohttp.abc
from aiohttp import web

from shoal_router.auth import ApiKeys, KeyHolder, parse_keys_file_entries
from shoal_router.config import RouterConfig
from shoal_router.endpoints import DiscoveredEndpoint, EjectionPolicy, EndpointPool
from shoal_router.flow.dispatcher import Dispatcher
from shoal_router.flow.poller import poll_loads
from shoal_router.limits import RateLimiter, RetryBudget
from shoal_router.metrics import RouterMetrics
from shoal_router.openapi import openapi_handler
from shoal_router.proxy import Proxy
from shoal_router.router import Router, Source
from shoal_router.serving import run, serve_app
from shoal_router.strategies import make_strategy
from shoal_router.wire import error_response

log = logging.getLogger("shoal_router")

ROUTER_KEY: web.AppKey[Router] = web.AppKey("router")

__all__ = ["ROUTER_KEY", "Router", "Source", "build_app", "build_router", "default_sources", "main", "serve"]


def build_router(config: RouterConfig, *, rng: random.Random | None = None) -> Router:
    metrics = RouterMetrics()
    pool = EndpointPool(
        policy=EjectionPolicy(config.eject_consecutive_failures, config.eject_base_s, config.eject_max_s),
        metrics=metrics,
    )
    dispatcher = Dispatcher(
        pool,
        make_strategy(config.strategy, load_factor=config.hash_load_factor),
        config.flow(),
        metrics=metrics,
        rng=rng,
    )
    keys = ApiKeys(enabled=bool(config.api_keys_file or config.api_keys_secret))
    router = Router(config=config, pool=pool, metrics=metrics, keys=keys, dispatcher=dispatcher)
    router.keys_loaded = not config.api_keys_secret
    return router


def build_app(
    router: Router,
    sources: list[Source] | None = None,
    resolver: aiohttp.abc.AbstractResolver | None = None,
) -> web.Application:
    """The aiohttp application. `sources` default to the config's (static upstreams / Kubernetes watches);
    tests pass their own or none and drive `router.pool.update` directly. `resolver` replaces DNS for
    upstream host names (tests)."""
    app = web.Application(client_max_size=router.config.max_body_bytes)
    app[ROUTER_KEY] = router
    app.cleanup_ctx.append(
        _lifecycle(router, default_sources(router.config) if sources is None else sources, resolver)
    )
    _add_routes(app, router)
    return app


def _lifecycle(
    router: Router, sources: list[Source], resolver: aiohttp.abc.AbstractResolver | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Startup and shutdown: the upstream session, the proxy, the sources and the load poller."""
    config = router.config

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        router.pool.clock = loop.time
        connector = aiohttp.TCPConnector(
            limit=0, keepalive_timeout=60, enable_cleanup_closed=True, resolver=resolver
        )
        router.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        router.proxy = Proxy(
            config=config,
            dispatcher=router.dispatcher,
            metrics=router.metrics,
            session=router.session,
            keys=router.keys,
            limiter=RateLimiter(config.rate_limit_rps, config.rate_burst, loop.time),
            budget=RetryBudget(config.retry_budget_ratio, config.retry_budget_min_per_s, loop.time),
            objectives=dict(config.objectives),
        )
        for source in sources:
            router.background.append(asyncio.create_task(source(router)))
        if config.load_poll_interval_s > 0:
            poll = poll_loads(router.session, router.pool, config.load_poll_interval_s)
            router.background.append(asyncio.create_task(poll))
        try:
            yield
        finally:
            for task in router.background:
                task.cancel()
            for task in router.background:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await router.session.close()

    return lifecycle


def _add_routes(app: web.Application, router: Router) -> None:
    async def proxy_handler(request: web.Request) -> web.StreamResponse:
        assert router.proxy is not None
        return await router.proxy.handle(request)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        # Ready once discovery has synced; NOT gated on a ready replica, or the router would drop out of
        # its Service exactly when it must hold requests during a scale from zero.
        ok = router.pool.synced and router.keys_loaded
        state = {
            "synced": router.pool.synced,
            "keys_loaded": router.keys_loaded,
            "ready_endpoints": sum(
                1 for s in router.pool.states() if s.ready and not s.terminating and not s.removed
            ),
            "pending": router.dispatcher.pending,
            "queued": router.dispatcher.queued,
        }
        return web.json_response(state, status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        _update_endpoint_states(router)
        return web.Response(
            body=router.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi_handler(router.config.max_body_bytes))
    for admin in ADMIN_PATHS:  # the replicas' LoRA admin routes are the operator's, never proxied
        app.router.add_route("*", admin, _no_route)
    app.router.add_route("*", "/v1/{tail:.*}", proxy_handler)


ADMIN_PATHS = ("/v1/load_lora_adapter", "/v1/unload_lora_adapter")


async def _no_route(request: web.Request) -> web.Response:
    return error_response(
        404, f"No route {request.path} on the router.", "invalid_request_error", "not_found"
    )


def _update_endpoint_states(router: Router) -> None:
    now = router.pool.clock()
    counts = {"ready": 0, "terminating": 0, "ejected": 0, "not_ready": 0}
    for s in router.pool.states():
        if s.removed:
            continue
        if s.terminating:
            counts["terminating"] += 1
        elif not s.ready:
            counts["not_ready"] += 1
        elif s.ejected_until > now:
            counts["ejected"] += 1
        else:
            counts["ready"] += 1
    for state, n in counts.items():
        router.metrics.endpoints.labels(state).set(n)


def default_sources(config: RouterConfig) -> list[Source]:
    sources: list[Source] = []
    if config.discovery == "static":

        async def static(router: Router) -> None:
            router.pool.update(DiscoveredEndpoint(url=u, name=u) for u in config.upstreams)

        sources.append(static)
    elif config.discovery == "pods":
        from shoal_router.discovery.kubernetes import pod_source

        sources.append(pod_source(config))
    else:
        from shoal_router.discovery.kubernetes import endpoint_slice_source

        sources.append(endpoint_slice_source(config))
    sources += key_sources(config)
    return sources


def key_sources(config: RouterConfig) -> list[Callable[[KeyHolder], Coroutine[Any, Any, None]]]:
    """The API keys' sources (a file, a Secret): one implementation for the router and the entry point."""
    sources: list[Callable[[KeyHolder], Coroutine[Any, Any, None]]] = []
    if config.api_keys_file:
        path = config.api_keys_file

        async def keys_file(holder: KeyHolder) -> None:
            text = await asyncio.to_thread(_read_text, path)
            holder.keys.replace(parse_keys_file_entries(text))
            log.info("API keys loaded from file", extra={"keys": len(holder.keys)})

        sources.append(keys_file)
    if config.api_keys_secret:
        from shoal_router.discovery.kubernetes import api_keys_secret_source

        sources.append(api_keys_secret_source(config))
    return sources


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


async def serve(config: RouterConfig, stop: asyncio.Event | None = None) -> None:
    router = build_router(config)
    details = {
        "strategy": config.strategy,
        "discovery": config.discovery,
        "service": config.service,
        "namespace": config.namespace,
        "upstreams": list(config.upstreams),
    }
    await serve_app(build_app(router), config, "router", details, stop)


def main(config: RouterConfig) -> int:
    return run(serve(config), config.log_level)
