"""LoRA adapters in the model-server: slot model, sim engine hook, /v1/models and the admin routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from shoal_server.admission import Admission
from shoal_server.app import ServerState, build_asgi
from shoal_server.engines.adapters import AdapterError, AdapterRegistry, LoraSettings, SlotCache
from shoal_server.engines.base import Sampling
from shoal_server.engines.sim import SimEngine, SimTiming
from shoal_server.lora_api import load_configured_adapters

from .conftest import MODEL, make_config

pytestmark = pytest.mark.unit

FAST = SimTiming(decode_tokens_per_s=2000, prefill_tokens_per_s=1e6)


def test_slot_cache_lru_and_pins() -> None:
    slots = SlotCache(2)
    first = slots.acquire("a")
    assert first is not None and first.loaded
    again = slots.acquire("a")  # a second sequence on the same adapter: a hit, two pins
    assert again is not None and not again.loaded
    grant_b = slots.acquire("b")
    assert grant_b is not None and grant_b.loaded and grant_b.evicted is None
    # every slot pinned by running sequences: a third adapter must wait
    assert slots.acquire("c") is None
    slots.release("a")
    slots.release("a")
    grant_c = slots.acquire("c")
    assert grant_c is not None and grant_c.evicted == "a"
    hit = slots.acquire("b")
    assert hit is not None and not hit.loaded
    assert slots.resident() == ["c", "b"]


def test_registry_rules() -> None:
    reg = AdapterRegistry("base", max_adapters=2)
    assert reg.add("x", "/p/x") is True
    assert reg.add("x", "/p/x") is False  # idempotent
    with pytest.raises(AdapterError) as conflict:
        reg.add("x", "/p/other")
    assert conflict.value.status == 409
    with pytest.raises(AdapterError):
        reg.add("base", "/p/b")  # the base model's name
    with pytest.raises(AdapterError):
        reg.add("bad name", "/p")
    reg.add("y", "/p/y")
    with pytest.raises(AdapterError) as full:
        reg.add("z", "/p/z")
    assert full.value.code == "too_many_adapters"
    assert reg.int_id("x") != reg.int_id("y")
    reg.remove("x")
    with pytest.raises(AdapterError) as gone:
        reg.remove("x")
    assert gone.value.status == 404


async def _run(engine: SimEngine, adapter: str | None, text: str = "hello there") -> str:
    prompt = engine.tokenize(text)
    parts = [d.text async for d in engine.generate("r", prompt, Sampling(max_tokens=6), adapter=adapter)]
    return "".join(parts)


async def test_sim_adapter_output_loads_and_evictions() -> None:
    engine = SimEngine(MODEL, FAST, lora=LoraSettings(max_loras=2, load_s=0.0))
    await engine.start()
    try:
        for name in ("a1", "a2", "a3"):
            await engine.add_adapter(name, f"/adapters/{name}")
        base = await _run(engine, None)
        a1 = await _run(engine, "a1")
        assert a1 != base and a1 == await _run(engine, "a1")  # deterministic, and not the base's answer
        await _run(engine, "a2")
        await _run(engine, "a3")  # third adapter over two slots: evicts a1 (LRU)
        await _run(engine, "a1")  # back again: another load, evicts a2
        metrics = engine.metrics_text().decode()
        assert "shoal_sim_lora_loads_total 4.0" in metrics
        assert "shoal_sim_lora_evictions_total 2.0" in metrics
        assert engine.slots.resident() == ["a3", "a1"]
    finally:
        await engine.shutdown()


async def test_sim_adapter_load_time_is_charged() -> None:
    engine = SimEngine(MODEL, FAST, lora=LoraSettings(max_loras=1, load_s=0.2))
    await engine.start()
    try:
        await engine.add_adapter("a1", "/a1")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await _run(engine, "a1")
        cold = loop.time() - t0
        t0 = loop.time()
        await _run(engine, "a1")
        warm = loop.time() - t0
        assert cold >= 0.2 > warm
    finally:
        await engine.shutdown()


@asynccontextmanager
async def lora_app(**cfg: object) -> AsyncIterator[tuple[httpx.AsyncClient, ServerState]]:
    config = make_config(enable_lora=True, **cfg)
    engine = SimEngine(MODEL, FAST, lora=LoraSettings(max_loras=2, load_s=0.0))
    state = ServerState(config, engine, Admission(config.max_concurrency, config.max_queue))
    await engine.start()
    await load_configured_adapters(state)
    state.set_loaded()
    transport = httpx.ASGITransport(app=build_asgi(state))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=10) as client:
            yield client, state
    finally:
        await engine.shutdown()


def _chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


async def test_models_lists_adapters_and_routes_by_model() -> None:
    async with lora_app(adapters=(("sql", "/adapters/sql"),)) as (client, _):
        cards = (await client.get("/v1/models")).json()["data"]
        assert [(c["id"], c["parent"]) for c in cards] == [(MODEL, None), ("sql", MODEL)]
        base = (await client.post("/v1/chat/completions", json=_chat(MODEL))).json()
        sql = (await client.post("/v1/chat/completions", json=_chat("sql"))).json()
        assert sql["model"] == "sql"
        assert sql["choices"][0]["message"]["content"] != base["choices"][0]["message"]["content"]
        missing = await client.post("/v1/chat/completions", json=_chat("nope"))
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "model_not_found"
        metrics = (await client.get("/metrics")).text
        assert 'shoal_server_model_requests_total{model="sql"} 1.0' in metrics
        assert "shoal_server_lora_adapters_loaded 1.0" in metrics
        assert 'shoal_server_lora_adapter_info{adapter="sql"} 1.0' in metrics


async def test_live_load_and_unload() -> None:
    async with lora_app() as (client, _):
        assert (await client.post("/v1/chat/completions", json=_chat("live"))).status_code == 404
        added = await client.post("/v1/load_lora_adapter", json={"lora_name": "live", "lora_path": "/a/live"})
        assert added.status_code == 200, added.text
        assert (await client.post("/v1/chat/completions", json=_chat("live"))).status_code == 200
        assert "live" in [c["id"] for c in (await client.get("/v1/models")).json()["data"]]
        assert (await client.get("/load")).json()["adapters"] == ["live"]  # what routers poll
        removed = await client.post("/v1/unload_lora_adapter", json={"lora_name": "live"})
        assert removed.status_code == 200
        assert (await client.post("/v1/chat/completions", json=_chat("live"))).status_code == 404
        assert (await client.get("/load")).json()["adapters"] == []
        again = await client.post("/v1/unload_lora_adapter", json={"lora_name": "live"})
        assert again.status_code == 404 and again.json()["error"]["code"] == "adapter_not_found"
        bad = await client.post("/v1/load_lora_adapter", json={"lora_name": "x"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "lora_path"
        conflict = await client.post("/v1/load_lora_adapter", json={"lora_name": MODEL, "lora_path": "/p"})
        assert conflict.status_code == 400
        assert "shoal_server_lora_adapters_loaded 0.0" in (await client.get("/metrics")).text


async def test_admin_routes_absent_without_lora() -> None:
    config = make_config()
    engine = SimEngine(MODEL, FAST)
    state = ServerState(config, engine, Admission(4, 4))
    state.set_loaded()
    transport = httpx.ASGITransport(app=build_asgi(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        resp = await client.post("/v1/load_lora_adapter", json={"lora_name": "a", "lora_path": "/a"})
        assert resp.status_code in (404, 405)
