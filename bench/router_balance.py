"""Load-balancing quality: p95 time to first token, LeastLoad vs RoundRobin, over 4 simulated
continuous-batching replicas with mixed short/long requests at ~80% load (the same seeded open-loop
Poisson trace for both strategies). Goal: LeastLoad p95 TTFT at least 30% lower.

    .venv/bin/python bench/router_balance.py [--duration 60] [--load 0.8]

Offered load is relative to slot capacity: replicas x max_batch slots, each request holding a slot for
max_tokens decode steps of a full batch, (1 + overhead x (max_batch-1)) / decode_tps seconds each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass

import aiohttp
from router_common import free_port, percentile, process, router_cmd, wait_ready

STRATEGIES = ("RoundRobin", "LeastLoad")


@dataclass
class Req:
    at: float
    max_tokens: int
    prompt: str


def trace(args: argparse.Namespace) -> tuple[list[Req], float]:
    rng = random.Random(args.seed)
    step_full = (1 + args.overhead * (args.max_batch - 1)) / args.decode_tps
    mean_tokens = args.long_frac * args.long_tokens + (1 - args.long_frac) * args.short_tokens
    capacity = args.replicas * args.max_batch / (mean_tokens * step_full)
    rate = args.load * capacity
    reqs: list[Req] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t > args.duration:
            break
        long = rng.random() < args.long_frac
        words = rng.randint(150, 250) if long else rng.randint(30, 60)
        prompt = " ".join(f"w{rng.randint(0, 999)}" for _ in range(words))
        reqs.append(Req(t, args.long_tokens if long else args.short_tokens, prompt))
    return reqs, rate


async def run_trace(url: str, reqs: list[Req], model: str = "sim") -> dict[str, float]:
    ttfts: list[float] = []
    errors = 0
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=300)) as s:

        async def one(r: Req) -> None:
            nonlocal errors
            sent = time.perf_counter()
            body = {"model": model, "prompt": r.prompt, "max_tokens": r.max_tokens, "stream": True}
            try:
                async with s.post(url + "/v1/completions", json=body) as resp:
                    if resp.status != 200:
                        errors += 1
                        return
                    first = True
                    async for _ in resp.content.iter_any():
                        if first:
                            ttfts.append(time.perf_counter() - sent)
                            first = False
            except aiohttp.ClientError:
                errors += 1

        start = time.perf_counter()
        tasks = []
        for r in reqs:
            delay = start + r.at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(r)))
        await asyncio.gather(*tasks)
    return {
        "requests": len(reqs),
        "errors": errors,
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p95_s": percentile(ttfts, 95),
        "ttft_p99_s": percentile(ttfts, 99),
    }


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    reqs, rate = trace(args)
    base = free_port()
    sim = [
        sys.executable, "bench/router_upstream.py", "--replicas", str(args.replicas), "--base-port", str(base),
        "--decode-tps", str(args.decode_tps), "--max-batch", str(args.max_batch), "--overhead", str(args.overhead),
    ]  # fmt: skip
    ups = [f"http://127.0.0.1:{base + i}" for i in range(args.replicas)]
    results: dict[str, object] = {"rate_rps": round(rate, 2), "requests": len(reqs)}
    with process(sim, "balance-sim"):
        for u in ups:
            await wait_ready(u + "/readyz")
        for strategy in STRATEGIES:
            port = free_port()
            with process(router_cmd(port, ups, strategy), f"balance-router-{strategy}"):
                await wait_ready(f"http://127.0.0.1:{port}/readyz")
                res = await run_trace(f"http://127.0.0.1:{port}", reqs)
                results[strategy] = res
                print(strategy, json.dumps(res), flush=True)
    rr = results["RoundRobin"]["ttft_p95_s"]  # type: ignore[index]
    ll = results["LeastLoad"]["ttft_p95_s"]  # type: ignore[index]
    results["p95_ttft_reduction"] = round(1 - ll / rr, 3)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--load", type=float, default=0.8)
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--decode-tps", type=float, default=50.0)
    p.add_argument("--overhead", type=float, default=0.1)
    p.add_argument("--short-tokens", type=int, default=16)
    p.add_argument("--long-tokens", type=int, default=256)
    p.add_argument("--long-frac", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    results = asyncio.run(main_async(args))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
