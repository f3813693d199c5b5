"""One entry point, many models: a real `shoal router --models-config` in front of real sim model-servers.

Two pools (`chat-v1`: two replicas with the LoRA adapter `sql`; `chat-v2`: one replica) and a 90/10
split `chat`. Where each request landed is read from the model-servers' own metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from shoal_router.multimodel.config import GatewayConfig, dump
from shoal_router.split import parse_splits

from .procs import Proc, _start, model_servers

pytestmark = pytest.mark.integration


def served(proc: Proc, model: str) -> float:
    text = httpx.get(proc.url + "/metrics", timeout=5).text
    needle = f'shoal_server_model_requests_total{{model="{model}"}} '
    for line in text.splitlines():
        if line.startswith(needle):
            return float(line.split(" ")[1])
    return 0.0


def answered(proc: Proc) -> float:
    """Every request the replica answered (any status)."""
    text = httpx.get(proc.url + "/metrics", timeout=5).text
    return sum(
        float(ln.rsplit(" ", 1)[1])
        for ln in text.splitlines()
        if ln.startswith("shoal_server_requests_total{")
    )


def chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


def write_config(path: Path, pools: dict[str, list[Proc]], splits: dict[str, dict[str, int]]) -> None:
    cfg = GatewayConfig(
        pools={name: tuple(p.url for p in procs) for name, procs in pools.items()},
        splits=parse_splits(splits),
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(dump(cfg))
    tmp.replace(path)  # atomic, as a kubelet swaps a ConfigMap's files


def wait_for(cond: object, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def model_ids(url: str, headers: dict[str, str] | None = None) -> dict[str, dict[str, object]]:
    resp = httpx.get(url + "/v1/models", headers=headers, timeout=5)
    return {c["id"]: c for c in resp.json()["data"]} if resp.status_code == 200 else {}


async def send_many(url: str, model: str, n: int, concurrency: int = 32) -> list[int]:
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def one() -> int:
            async with sem:
                return (await client.post("/v1/chat/completions", json=chat(model))).status_code

        return list(await asyncio.gather(*(one() for _ in range(n))))


@contextlib.contextmanager
def setup(tmp_path: Path, *extra: str) -> Iterator[tuple[Proc, list[Proc], list[Proc], Path]]:
    fast = (
        "--sim-decode-tokens-per-s",
        "5000",
        "--sim-prefill-tokens-per-s",
        "1000000",
        "--max-concurrency",
        "64",
    )
    with (
        model_servers(
            tmp_path, 2, "--served-model-name", "chat-v1", "--lora", "sql=/adapters/sql", *fast
        ) as v1,
        model_servers(tmp_path, 1, "--served-model-name", "chat-v2", "--enable-lora", *fast) as v2,
    ):
        cfg = tmp_path / "models.json"
        write_config(cfg, {"chat-v1": v1, "chat-v2": v2}, {"chat": {"chat-v1": 90, "chat-v2": 10}})
        args = ["router", "--log-level", "WARNING", "--no-access-log", "--models-config", str(cfg)]
        args += ["--strategy", "AdapterAffinity", *extra]
        gw = _start(tmp_path, "gateway", args, "/readyz")
        try:
            headers = {"Authorization": "Bearer sk-team-a"} if extra else {}
            wait_for(
                lambda: {"chat-v1", "chat-v2", "sql"} <= set(model_ids(gw.url, headers)), 15, "the catalog"
            )
            yield gw, v1, v2, cfg
        finally:
            gw.stop()


def test_routes_by_model_split_and_unknown(tmp_path: Path) -> None:
    with setup(tmp_path) as (gw, v1, v2, cfg):
        cards = model_ids(gw.url)
        assert cards["chat-v1"]["owned_by"] == "chat-v1" and cards["chat-v2"]["owned_by"] == "chat-v2"
        assert cards["sql"]["parent"] == "chat-v1" and cards["sql"]["inference_service"] == "chat-v1"
        assert cards["chat"]["owned_by"] == "shoal-split"

        # each model lands on its own pool's replicas
        for model, n in (("chat-v1", 10), ("chat-v2", 7)):
            assert asyncio.run(send_many(gw.url, model, n)) == [200] * n
        assert asyncio.run(send_many(gw.url, "sql", 5, concurrency=1)) == [200] * 5  # one at a time
        assert sum(served(p, "chat-v1") for p in v1) == 10 and served(v2[0], "chat-v1") == 0
        assert served(v2[0], "chat-v2") == 7 and sum(served(p, "chat-v2") for p in v1) == 0
        assert sum(served(p, "sql") for p in v1) == 5
        # adapter affinity: one adapter's requests stay on its home replica (no load, so no overflow)
        assert sorted(served(p, "sql") for p in v1) == [0, 5]

        # unknown model: 404 from the entry point, no replica sees it
        before = [answered(p) for p in (*v1, *v2)]
        resp = httpx.post(gw.url + "/v1/chat/completions", json=chat("nope"), timeout=5)
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found"
        assert [answered(p) for p in (*v1, *v2)] == before
        # the replicas' admin routes are not reachable through the entry point
        admin = httpx.post(gw.url + "/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "/x"})
        assert admin.status_code == 404

        # 90/10 split over 2,000 requests: 10% +- 3% to the canary
        codes = asyncio.run(send_many(gw.url, "chat", 2000))
        assert codes.count(200) == 2000
        canary = served(v2[0], "chat-v2") - 7
        stable = sum(served(p, "chat-v1") for p in v1) - 10
        assert canary + stable == 2000
        assert 140 <= canary <= 260, canary

        # new weights take effect without a restart
        write_config(cfg, {"chat-v1": v1, "chat-v2": v2}, {"chat": {"chat-v1": 0, "chat-v2": 1}})
        wait_for(
            lambda: (
                model_ids(gw.url)["chat"]["targets"]
                == [{"model": "chat-v1", "weight": 0}, {"model": "chat-v2", "weight": 1}]
            ),
            10,
            "reload",
        )
        before_v2 = served(v2[0], "chat-v2")
        assert asyncio.run(send_many(gw.url, "chat", 20)) == [200] * 20
        assert served(v2[0], "chat-v2") - before_v2 == 20
        assert gw.proc.poll() is None


def test_adapter_added_live_becomes_routable(tmp_path: Path) -> None:
    with setup(tmp_path) as (gw, _v1, v2, _cfg):
        assert httpx.post(gw.url + "/v1/chat/completions", json=chat("live"), timeout=5).status_code == 404
        added = httpx.post(
            v2[0].url + "/v1/load_lora_adapter", json={"lora_name": "live", "lora_path": "/a/live"}
        )
        assert added.status_code == 200
        wait_for(lambda: "live" in model_ids(gw.url), 10, "the live adapter in the catalog")
        assert httpx.post(gw.url + "/v1/chat/completions", json=chat("live"), timeout=5).status_code == 200
        assert served(v2[0], "live") == 1
        httpx.post(v2[0].url + "/v1/unload_lora_adapter", json={"lora_name": "live"})
        wait_for(lambda: "live" not in model_ids(gw.url), 10, "the adapter gone from the catalog")
        assert httpx.post(gw.url + "/v1/chat/completions", json=chat("live"), timeout=5).status_code == 404


def test_api_keys_and_rate_limit_are_the_routers(tmp_path: Path) -> None:
    """`--api-keys-file` / `--rate-limit-*`: the per-InferenceService router's code, once per request
    before the model is looked up; one bucket per key across every pool of the entry point."""
    keys = tmp_path / "keys.txt"
    keys.write_text("team-a:sk-team-a\n")
    limits = ("--rate-limit-rps", "0.5", "--rate-limit-burst", "4")
    with setup(tmp_path, "--api-keys-file", str(keys), *limits) as (gw, v1, v2, _cfg):
        url = gw.url + "/v1/chat/completions"
        before = [answered(p) for p in (*v1, *v2)]
        for body in (chat("chat-v1"), chat("nope")):
            resp = httpx.post(url, json=body, timeout=5)
            assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_api_key"
        wrong = httpx.post(url, json=chat("chat-v1"), headers={"Authorization": "Bearer sk-x"}, timeout=5)
        assert wrong.status_code == 401
        assert httpx.get(gw.url + "/v1/models", timeout=5).status_code == 401
        assert [answered(p) for p in (*v1, *v2)] == before  # refused callers reach no replica

        auth = {"Authorization": "Bearer sk-team-a"}
        # the catalog wait spent some of the key's burst; the bucket refills at 0.5/s
        wait_for(
            lambda: httpx.post(url, json=chat("chat-v1"), headers=auth, timeout=5).status_code == 200,
            15,
            "the key to be served",
        )
        assert served(v1[0], "chat-v1") + served(v1[1], "chat-v1") >= 1
        codes = [
            httpx.post(url, json=chat(m), headers=auth, timeout=5).status_code
            for m in ("chat-v1", "chat-v2", "sql", "nope", "chat-v1", "chat-v2", "sql", "chat-v1")
        ]
        # at most 4 left in the burst, over all pools (404s count too), then 429 with Retry-After
        assert codes.count(429) >= 4, codes
        assert set(codes) <= {200, 404, 429}
        limited = httpx.post(url, json=chat("chat-v2"), headers=auth, timeout=5)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        metrics = httpx.get(gw.url + "/metrics", timeout=5).text
        assert 'shoal_router_rejected_total{reason="unauthorized"}' in metrics
        assert 'shoal_router_rejected_total{reason="rate_limited"}' in metrics
