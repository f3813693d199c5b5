"""A replica turns Ready before the operator has loaded its adapters: the per-InferenceService router
sends an adapter's requests only to the replicas that list the adapter (their `GET /load`), and to every
replica once they all do. Real `shoal model-server --engine sim` replicas behind a real `shoal router`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from .procs import Proc, model_servers, router
from .test_multi_model import chat, send_many, served, wait_for

pytestmark = pytest.mark.integration

SLOW = ("--sim-decode-tokens-per-s", "200", "--sim-prefill-tokens-per-s", "1000000", "--enable-lora")


def load_adapter(proc: Proc, name: str) -> None:
    resp = httpx.post(proc.url + "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": "/a/" + name})
    assert resp.status_code == 200, resp.text


def test_adapter_requests_only_reach_replicas_that_list_it(tmp_path: Path) -> None:
    with model_servers(tmp_path, 2, *SLOW) as (holder, fresh), router(tmp_path, [holder, fresh]) as rt:
        # `fresh` is Ready but has no adapter yet (as a replica the operator has not reached)
        load_adapter(holder, "sql")
        # the router polls `GET /load` every 100 ms; until then a request might still go to `fresh`
        wait_for(lambda: asyncio.run(send_many(rt.url, "sql", 8)) == [200] * 8, 10, "the router's poll")
        fresh_before = served(fresh, "sql")  # 0: a replica without the adapter counts no request for it
        base_before = served(fresh, "sim")
        # concurrent requests: by load alone about half would go to `fresh` and get 404
        codes = asyncio.run(send_many(rt.url, "sql", 40, concurrency=16))
        assert codes == [200] * 40
        assert served(fresh, "sql") == fresh_before == 0 and served(holder, "sql") >= 40
        # the base model is served by every replica
        assert asyncio.run(send_many(rt.url, "sim", 40, concurrency=16)) == [200] * 40
        assert served(fresh, "sim") > base_before

        # once `fresh` lists the adapter too, it takes its share
        load_adapter(fresh, "sql")
        wait_for(
            lambda: asyncio.run(send_many(rt.url, "sql", 16)) == [200] * 16 and served(fresh, "sql") > 0,
            10,
            "the second holder to get adapter requests",
        )
        # a name no replica lists still reaches a replica, which answers the OpenAI 404
        unknown = httpx.post(rt.url + "/v1/chat/completions", json=chat("nope"), timeout=5)
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
