from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
from shoal_server.admission import Admission
from shoal_server.app import ServerState, build_asgi
from shoal_server.config import ServerConfig
from shoal_server.engines.sim import SimEngine, SimTiming

MODEL = "sim-model"


def make_config(**kw: Any) -> ServerConfig:
    base = ServerConfig(engine="sim", model=MODEL, served_model_name=MODEL, max_concurrency=4, max_queue=4)
    return replace(base, **kw)


@asynccontextmanager
async def running_app(
    timing: SimTiming | None = None, loaded: bool = True, max_model_len: int = 256, **cfg: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, ServerState]]:
    config = make_config(**cfg)
    engine = SimEngine(
        MODEL,
        timing or SimTiming(decode_tokens_per_s=2000, prefill_tokens_per_s=1e6),
        max_model_len,
        policy=config.scheduling_policy,
    )
    state = ServerState(config, engine, Admission(config.max_concurrency, config.max_queue))
    if loaded:
        await engine.start()
        state.set_loaded()
    transport = httpx.ASGITransport(app=build_asgi(state))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=10) as client:
            yield client, state
    finally:
        await engine.shutdown()


@pytest.fixture
def app_factory() -> Callable[..., Any]:
    return running_app
