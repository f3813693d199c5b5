"""The multi-model entry point's runtime: one EndpointPool + Dispatcher + Proxy per pool (the flow-control
core, reused as is), the catalog of who serves which model, the splits, and the request handler.

Per request: read the body once, take its `model`, apply a split (the body's `model` is rewritten to the
chosen target), look the target up in the catalog (unknown: an OpenAI-style 404 that never reaches a
replica), then hand the request to that pool's Proxy, restricted to the replicas that list the model and
keyed by the adapter's name for adapter affinity.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from shoal_common.series import SeriesBuilder

from shoal_router import frontdoor
from shoal_router.auth import ApiKeys
from shoal_router.config import RouterConfig
from shoal_router.endpoints import DiscoveredEndpoint, EjectionPolicy, EndpointPool
from shoal_router.flow.dispatcher import Dispatcher
from shoal_router.flow.model import Rejected
from shoal_router.flow.poller import poll_loads
from shoal_router.frontdoor import Caller
from shoal_router.limits import RateLimiter, RetryBudget
from shoal_router.metrics import RouterMetrics
from shoal_router.multimodel import catalog as cat_mod
from shoal_router.multimodel.config import GatewayConfig
from shoal_router.proxy import Override, Proxy
from shoal_router.split import Split, resolve, rewrite_model
from shoal_router.strategies import make_strategy
from shoal_router.wire import error_response

log = logging.getLogger("shoal_router.multimodel")

MODELS_TIMEOUT_S = 2.0


@dataclass
class PoolRuntime:
    name: str
    pool: EndpointPool
    dispatcher: Dispatcher
    proxy: Proxy
    models: dict[str, Any] = field(default_factory=dict)  # endpoint -> its last /v1/models document
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class ModelGateway:
    def __init__(self, config: RouterConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.rng = rng or random.Random()
        self.metrics = RouterMetrics()
        # one set of keys and one rate limiter for every pool: a key's budget is per entry point
        self.keys = ApiKeys(enabled=bool(config.api_keys_file or config.api_keys_secret))
        self.keys_loaded = not config.api_keys_secret
        self.limiter = RateLimiter(config.rate_limit_rps, config.rate_burst, time.monotonic)
        self.pools: dict[str, PoolRuntime] = {}
        self.splits: dict[str, Split] = {}
        self.catalog = cat_mod.Catalog()
        self.declared: dict[str, str] = {}  # base model -> pool (InferenceService specs)
        self.session: aiohttp.ClientSession | None = None
        self.routed = SeriesBuilder(self.metrics.registry).counter(
            "shoal_router_model_requests",
            "Requests of the multi-model entry point by requested model and the model it went to "
            "(differs under a split); target `-` for unknown models (404).",
            "model",
            "target",
        )
        self.configured = False
        self.discovered = False  # pools from Kubernetes (kube_source), not from the models file

    # --- configuration ---------------------------------------------------------------------------
    def apply(self, gw: GatewayConfig) -> None:
        """The models file: its splits, and its pools unless pools come from Kubernetes (`discovered`)."""
        if not self.discovered:
            self.set_pools(
                {n: [DiscoveredEndpoint(url=u, name=u) for u in ups] for n, ups in gw.pools.items()}
            )
        self.splits = dict(gw.splits)
        self.configured = True
        self.rebuild()

    def set_pools(
        self, pools: Mapping[str, Sequence[DiscoveredEndpoint]], declared: Mapping[str, str] | None = None
    ) -> None:
        """Pools added, removed or re-pointed, and (from Kubernetes) each pool's base model by its spec.
        Runs in the event loop (needs `session`)."""
        if declared is not None:
            self.declared = {model: pool for model, pool in declared.items() if pool in pools}
        for name in list(self.pools):
            if name not in pools:
                self._drop_pool(name)
        for name, endpoints in pools.items():
            runtime = self.pools.get(name) or self._add_pool(name)
            runtime.pool.update(endpoints)
            urls = {e.url for e in endpoints}
            for gone in set(runtime.models) - urls:
                del runtime.models[gone]
        self.rebuild()

    def _add_pool(self, name: str) -> PoolRuntime:
        assert self.session is not None
        cfg = self.config
        loop = asyncio.get_running_loop()
        policy = EjectionPolicy(cfg.eject_consecutive_failures, cfg.eject_base_s, cfg.eject_max_s)
        pool = EndpointPool(policy=policy, metrics=self.metrics)
        pool.clock = loop.time
        strategy = make_strategy(cfg.strategy, load_factor=cfg.hash_load_factor)
        flow = _SummedPending(self.metrics, lambda: sum(rt.dispatcher.pending for rt in self.pools.values()))
        dispatcher = Dispatcher(pool, strategy, cfg.flow(), metrics=flow, rng=self.rng)
        proxy = Proxy(
            config=cfg,
            dispatcher=dispatcher,
            metrics=self.metrics,
            session=self.session,
            keys=self.keys,
            limiter=self.limiter,
            budget=RetryBudget(cfg.retry_budget_ratio, cfg.retry_budget_min_per_s, loop.time),
            objectives=dict(cfg.objectives),
        )
        runtime = PoolRuntime(name, pool, dispatcher, proxy)
        if cfg.load_poll_interval_s > 0:
            runtime.tasks.append(
                asyncio.create_task(poll_loads(self.session, pool, cfg.load_poll_interval_s))
            )
        self.pools[name] = runtime
        log.info("pool added", extra={"pool": name})
        return runtime

    def _drop_pool(self, name: str) -> None:
        runtime = self.pools.pop(name)
        for task in runtime.tasks:
            task.cancel()
        log.info("pool removed", extra={"pool": name})

    def held(self) -> dict[str, int]:
        """Requests each pool holds now (pools holding any): what the autoscaler's wake poll reads to
        wake the InferenceService behind a pool at zero (a pool is named after its InferenceService)."""
        return {name: rt.dispatcher.pending for name, rt in self.pools.items() if rt.dispatcher.pending > 0}

    def rebuild(self) -> None:
        answers = {name: dict(rt.models) for name, rt in self.pools.items()}
        self.catalog = cat_mod.build(answers, self.declared)

    async def close(self) -> None:
        for name in list(self.pools):
            tasks = self.pools[name].tasks
            self._drop_pool(name)
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # --- the replicas' model lists ------------------------------------------------------------------
    async def poll_models_once(self) -> None:
        assert self.session is not None
        jobs = []
        for runtime in self.pools.values():
            for state in runtime.pool.states():
                if state.ready and not state.terminating and not state.removed:
                    jobs.append(self._models_of(runtime, state.url))
        await asyncio.gather(*jobs)
        self.rebuild()

    async def _models_of(self, runtime: PoolRuntime, url: str) -> None:
        assert self.session is not None
        try:
            timeout = aiohttp.ClientTimeout(total=MODELS_TIMEOUT_S)
            async with self.session.get(url + "/v1/models", timeout=timeout) as resp:
                if resp.status == 200:
                    runtime.models[url] = await resp.json(content_type=None)
                    return
        except (aiohttp.ClientError, TimeoutError, ValueError):
            pass
        runtime.models.pop(url, None)  # unreachable or not answering: it serves nothing for now

    # --- requests ----------------------------------------------------------------------------------
    def admit(self, request: web.Request) -> Caller | web.Response:
        """The API key and the key's request rate, checked once per request before anything else (the
        same code as the per-InferenceService router's): an unknown caller learns nothing about models."""
        caller = frontdoor.authenticate(self.keys, request.headers, request.remote)
        refused = caller if isinstance(caller, Rejected) else frontdoor.rate_limit(self.limiter, caller)
        if refused is not None:
            reason = "unauthorized" if refused.status == 401 else "rate_limited"
            self.metrics.rejected.labels(reason).inc()
            return web.Response(status=refused.status, body=refused.body(), headers=refused.headers())
        assert isinstance(caller, Caller)
        return caller

    def models_response(self, request: web.Request) -> web.Response:
        caller = self.admit(request)
        if isinstance(caller, web.Response):
            return caller
        return web.json_response({"object": "list", "data": cat_mod.model_list(self.catalog, self.splits)})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        caller = self.admit(request)
        if isinstance(caller, web.Response):
            return caller
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            msg = f"Request body larger than {self.config.max_body_bytes} bytes."
            return error_response(413, msg, "invalid_request_error", "request_too_large")
        doc = _json_object(body)
        model = doc.get("model") if doc is not None else None
        if not isinstance(model, str) or not model:
            return _invalid("The request needs a JSON body with a string `model`.", "model")
        target = resolve(self.splits, model, self.rng.random())
        route = self.catalog.route(target)
        if route is None or route.pool not in self.pools:
            self.routed.labels(model, "-").inc()
            return _model_not_found(model, target)
        self.routed.labels(model, target).inc()
        if target != model:
            assert doc is not None
            body = rewrite_model(doc, target)
        override = Override(
            body=body,
            model=target,
            affinity_key=target if route.adapter else None,
            candidates=route.endpoints,
            caller=caller,
        )
        return await self.pools[route.pool].proxy.handle(request, override)


class _SummedPending:
    """A pool's flow metrics: the shared ones, except that `shoal_router_pending_requests` is the sum over
    the pools (each pool's dispatcher reports only its own count; the last writer must not win)."""

    def __init__(self, metrics: RouterMetrics, total: Callable[[], int]) -> None:
        self.metrics = metrics
        self.total = total

    def flow_queued(self, priority: int, tenant: str, delta: int) -> None:
        self.metrics.flow_queued(priority, tenant, delta)

    def flow_dispatched(self, priority: int, tenant: str, wait_s: float) -> None:
        self.metrics.flow_dispatched(priority, tenant, wait_s)

    def flow_shed(self, priority: int, tenant: str, reason: str) -> None:
        self.metrics.flow_shed(priority, tenant, reason)

    def set_pending(self, value: int) -> None:
        self.metrics.set_pending(self.total())


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _invalid(message: str, param: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
    return web.json_response(body, status=400)


def _model_not_found(model: str, target: str) -> web.Response:
    shown = model if model == target else f"{model} (split target {target})"
    body = {
        "error": {
            "message": f"The model `{shown}` does not exist; GET /v1/models lists the served models.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    return web.json_response(body, status=404)
