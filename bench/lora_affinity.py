"""LoRA adapter affinity vs LeastLoad behind the multi-model entry point (sim engine, real processes).

20 adapters, `--max-loras 4`, 2 replicas, adapter popularity Zipf(s); the same seeded request sequence for
both strategies. Reported: adapter loads into batch slots per 1,000 requests (the replicas'
`shoal_sim_lora_loads_total`) and p95 time to first token seen by the client (streaming).

    python bench/lora_affinity.py --requests 600 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from shoal_common import processes
from shoal_common.ports import free_port

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def process(args: list[str], ready: str, log: Path, within: float = 60.0) -> Iterator[str]:
    port = free_port()
    cmd = [sys.executable, "-m", "shoal_cli", *args, "--host", "127.0.0.1", "--port", str(port)]
    proc = processes.spawn(cmd, log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + within
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{args[0]} exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + ready, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} not ready: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        processes.stop(proc, timeout=15)


def zipf_sequence(n: int, adapters: int, s: float, seed: int) -> list[str]:
    weights = [1.0 / (k + 1) ** s for k in range(adapters)]
    return random.Random(seed).choices([f"lora-{k}" for k in range(adapters)], weights=weights, k=n)


def loads(url: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith("shoal_sim_lora_loads_total "):
            return float(line.split(" ")[1])
    raise KeyError("shoal_sim_lora_loads_total")


async def drive(url: str, models: list[str], concurrency: int) -> list[float]:
    sem = asyncio.Semaphore(concurrency)
    ttfts: list[float] = []
    async with httpx.AsyncClient(
        base_url=url, timeout=60, limits=httpx.Limits(max_connections=concurrency)
    ) as c:

        async def one(model: str) -> None:
            body = {"model": model, "prompt": "fish " * 32, "max_tokens": 16, "stream": True}
            async with sem:
                t0 = time.perf_counter()
                async with c.stream("POST", "/v1/completions", json=body) as resp:
                    assert resp.status_code == 200, resp.status_code
                    first = True
                    async for _chunk in resp.aiter_raw():
                        if first:
                            ttfts.append(time.perf_counter() - t0)
                            first = False

        await asyncio.gather(*(one(m) for m in models))
    return ttfts


def run(strategy: str, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    lora = [a for k in range(args.adapters) for a in ("--lora", f"lora-{k}=/adapters/{k}")]
    server = ["model-server", "--engine", "sim", "--model", "base", "--log-level", "WARNING", "--max-loras", "4",
              "--sim-lora-load-s", str(args.load_s), "--sim-decode-tokens-per-s", "200", *lora]  # fmt: skip
    with (
        process(server, "/readyz", tmp / f"{strategy}-a.log") as a,
        process(server, "/readyz", tmp / f"{strategy}-b.log") as b,
    ):
        cfg = tmp / f"{strategy}.json"
        cfg.write_text(json.dumps({"pools": {"base": {"upstreams": [a, b]}}}))
        router = ["router", "--models-config", str(cfg), "--strategy", strategy, "--log-level", "WARNING",
                  "--no-access-log"]  # fmt: skip
        with process(router, "/readyz", tmp / f"{strategy}-router.log") as gw:
            deadline = time.monotonic() + 20
            while len(httpx.get(gw + "/v1/models").json()["data"]) < args.adapters + 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("catalog incomplete")
                time.sleep(0.2)
            before = loads(a) + loads(b)
            ttfts = sorted(
                asyncio.run(
                    drive(gw, zipf_sequence(args.requests, args.adapters, args.s, 7), args.concurrency)
                )
            )
            total = loads(a) + loads(b) - before
    return {
        "loads_per_1000": 1000 * total / args.requests,
        "p95_ttft_s": ttfts[int(0.95 * (len(ttfts) - 1))],
        "p50_ttft_s": ttfts[len(ttfts) // 2],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=600)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--adapters", type=int, default=20)
    p.add_argument("--s", type=float, default=1.1, help="Zipf exponent of adapter popularity")
    p.add_argument("--load-s", type=float, default=0.05, help="simulated adapter load time")
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in ("LeastLoad", "AdapterAffinity"):
            results[strategy] = run(strategy, args, Path(tmp))
            print(strategy, json.dumps(results[strategy]), flush=True)
    base, aff = results["LeastLoad"], results["AdapterAffinity"]
    print(
        f"loads ratio (affinity / least-load): {aff['loads_per_1000'] / max(base['loads_per_1000'], 1e-9):.2f}"
    )
    print(f"p95 TTFT ratio (affinity / least-load): {aff['p95_ttft_s'] / base['p95_ttft_s']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
