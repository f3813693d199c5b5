"""Composition root of one model-server replica: engine + admission + app + uvicorn + drain.

Lifecycle: listen at once (liveness answers while the model loads) -> load the engine in the
background (readiness turns true) -> on SIGTERM drain: readiness false and new requests 503 at once,
queued and in-flight requests finish (up to --drain-timeout), then uvicorn stops and we exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from types import FrameType

import uvicorn

from shoal_server.admission import Admission
from shoal_server.app import ServerState, build_asgi
from shoal_server.config import ServerConfig
from shoal_server.engines.adapters import LoraSettings
from shoal_server.engines.base import Engine
from shoal_server.engines.sim import SimEngine, SimTiming
from shoal_server.lora_api import load_configured_adapters

log = logging.getLogger("shoal.server")


def build_engine(cfg: ServerConfig) -> Engine:
    if cfg.engine == "sim":
        timing = SimTiming(
            prefill_tokens_per_s=cfg.sim_prefill_tokens_per_s,
            decode_tokens_per_s=cfg.sim_decode_tokens_per_s,
            max_batch=cfg.sim_max_batch,
            batch_overhead=cfg.sim_batch_overhead,
            prefix_cache_tokens=cfg.sim_prefix_cache_tokens,
            max_batched_tokens=cfg.sim_max_batched_tokens,
            startup_s=cfg.sim_startup_s,
        )
        lora = LoraSettings(
            max_loras=cfg.max_loras,
            max_lora_rank=cfg.max_lora_rank,
            max_adapters=cfg.max_adapters,
            load_s=cfg.sim_lora_load_s,
        )
        return SimEngine(
            cfg.served_model_name,
            timing,
            max_model_len=cfg.max_model_len(2048),
            lora=lora,
            policy=cfg.scheduling_policy,
        )
    from shoal_server.engines.vllm_engine import VllmEngine  # heavy: imports torch and vllm

    return VllmEngine(cfg)


class DrainingServer(uvicorn.Server):
    """uvicorn, except that SIGTERM/SIGINT start a drain instead of closing the listener at once."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded in _captured_signals: uvicorn would re-raise it after shutdown (exit code != 0).
        if self.state.draining:
            if sig == signal.SIGINT:  # a second Ctrl-C: stop now
                self.force_exit = True
                self.should_exit = True
            return
        if self._loop is None:
            self.should_exit = True
            return
        self._loop.call_soon_threadsafe(self.begin_drain, signal.Signals(sig).name)

    def begin_drain(self, why: str = "requested") -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.ensure_future(self._drain(why))

    async def _drain(self, why: str) -> None:
        state = self.state
        state.start_drain()
        adm = state.admission
        log.info(
            "drain started",
            extra={
                "reason": why,
                "inflight": adm.inflight,
                "queued": adm.queued,
                "timeout_s": state.config.drain_timeout,
            },
        )
        if await adm.wait_idle(state.config.drain_timeout):
            log.info("drain complete: no requests in flight")
        else:
            log.warning("drain timeout: stopping with requests in flight", extra={"inflight": adm.inflight})
        self.should_exit = True


async def serve(cfg: ServerConfig) -> int:
    engine = build_engine(cfg)
    state = ServerState(cfg, engine, Admission(cfg.max_concurrency, cfg.max_queue))
    uv_config = uvicorn.Config(
        build_asgi(state),
        host=cfg.host,
        port=cfg.port,
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=5,
    )
    server = DrainingServer(uv_config, state)

    async def load() -> None:
        log.info("loading engine", extra={"engine": cfg.engine, "model": cfg.model})
        try:
            await engine.start()
        except Exception as exc:
            log.exception("engine failed to start")
            state.load_error = f"{type(exc).__name__}: {exc}"
            server.exit_code = 1
            server.should_exit = True
            return
        try:
            await load_configured_adapters(state)
        except Exception as exc:
            log.exception("configured LoRA adapters failed to load")
            state.load_error = f"{type(exc).__name__}: {exc}"
            server.exit_code = 1
            server.should_exit = True
            return
        state.set_loaded()
        log.info("engine ready", extra={"engine": cfg.engine, "model": cfg.served_model_name})

    load_task = asyncio.create_task(load(), name="engine-load")
    try:
        await server.serve()
    finally:
        load_task.cancel()
        try:
            await engine.shutdown()
        except Exception:
            log.exception("engine shutdown failed")
    if server.started is False and server.exit_code == 0:
        return 1  # could not bind
    return server.exit_code


def run(cfg: ServerConfig) -> int:
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(serve(cfg))
