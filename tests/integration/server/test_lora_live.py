"""LoRA adapters on real model-server processes (sim engine): start-time adapters, the operator's live
sync through the admin routes, per-model request counts in the metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import httpx
import pytest
from shoal_operator import adapters as sync

from .conftest import ServerProc, metric

pytestmark = pytest.mark.integration


def chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "fish?"}], "max_tokens": 4}


async def _sync_all(servers: list[ServerProc], desired: dict[str, str]) -> list[set[str]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        return list(await asyncio.gather(*(sync.sync_replica(session, s.url, desired) for s in servers)))


def test_start_adapters_live_sync_and_routing(server_factory: Callable[..., ServerProc]) -> None:
    base_args = ["--engine", "sim", "--model", "base", "--sim-decode-tokens-per-s", "500"]
    first = server_factory([*base_args, "--lora", "sql=/adapters/sql", "--max-loras", "2"])
    second = server_factory([*base_args, "--enable-lora"])
    ids = [c["id"] for c in first.get("/v1/models").json()["data"]]
    assert ids == ["base", "sql"]
    assert [c["id"] for c in second.get("/v1/models").json()["data"]] == ["base"]

    # The operator's sync: both replicas to {sql, chat}; the first keeps sql, loads chat.
    served = asyncio.run(_sync_all([first, second], {"sql": "/adapters/sql", "chat": "/adapters/chat"}))
    assert served == [{"sql", "chat"}, {"sql", "chat"}]
    for server in (first, second):
        models = sorted(c["id"] for c in server.get("/v1/models").json()["data"])
        assert models == ["base", "chat", "sql"]
        answer = httpx.post(server.url + "/v1/chat/completions", json=chat("chat"), timeout=10)
        assert answer.status_code == 200 and answer.json()["model"] == "chat"
        text = server.metrics()
        assert metric(text, "shoal_server_lora_adapters_loaded") == 2
        assert 'shoal_server_model_requests_total{model="chat"} 1.0' in text

    # Removed from the spec: unloaded live, then a 404 for it, the base model unaffected.
    served = asyncio.run(_sync_all([first, second], {"chat": "/adapters/chat"}))
    assert served == [{"chat"}, {"chat"}]
    gone = httpx.post(first.url + "/v1/chat/completions", json=chat("sql"), timeout=10)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
    assert httpx.post(first.url + "/v1/chat/completions", json=chat("base"), timeout=10).status_code == 200
    assert first.proc.poll() is None and second.proc.poll() is None  # no restart


def test_sync_reports_nothing_for_an_unreachable_replica() -> None:
    served = asyncio.run(
        _sync_all([ServerProc(proc=None, host="127.0.0.1", port=9, log_path=None)], {"a": "/a"})  # type: ignore[arg-type]
    )
    assert served == [set()]
    assert sync.adapter_status(["a"], served)[0]["ready"] is False
