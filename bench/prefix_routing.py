"""Prefix-aware routing, measured: PrefixLoad (prefix affinity weighed against load) vs LeastLoad, RoundRobin
and PrefixHash on a prefix-heavy workload (many tenants, long shared system prompts), through the shoal
router (the same core and strategies the EPP uses) in front of sim replicas that model vLLM's prefix cache
(prefill skips cached blocks; bounded LRU capacity). Every strategy gets fresh replicas (cold caches) and
the same seeded open-loop Poisson trace. Reports TTFT p50/p95 and throughput.

    .venv/bin/python bench/prefix_routing.py [--duration 20] [--rate 8] [--tenants 16] [--replicas 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time

import aiohttp
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


def system_prompt(tenant: int, words: int) -> str:
    rng = random.Random(tenant)
    body = " ".join(rng.choice(WORDS) for _ in range(words))
    return f"You are the assistant of tenant {tenant}. Rules: {body}.\n"


def trace(args: argparse.Namespace) -> list[Req]:
    rng = random.Random(args.seed)
    prompts = [system_prompt(t, args.system_words) for t in range(args.tenants)]
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


async def cache_hit_rate(urls: list[str]) -> float:
    queries = hits = 0.0
    async with aiohttp.ClientSession() as s:
        for u in urls:
            async with s.get(u + "/metrics") as r:
                for line in (await r.text()).splitlines():
                    if line.startswith("vllm:prefix_cache_queries_total"):
                        queries += float(line.rsplit(" ", 1)[1])
                    elif line.startswith("vllm:prefix_cache_hits_total"):
                        hits += float(line.rsplit(" ", 1)[1])
    return hits / queries if queries else 0.0


async def one_strategy(strategy: str, reqs: list[Req], args: argparse.Namespace) -> dict[str, object]:
    ports = [free_port() for _ in range(args.replicas)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    r_port = free_port()
    extra = ("--prefix-chars", "4096", "--load-poll-interval", "0.1")
    with contextlib.ExitStack() as stack:
        for i, p in enumerate(ports):
            stack.enter_context(process(replica_cmd(p, args), f"prefix-replica-{i}"))
        stack.enter_context(process(router_cmd(r_port, urls, strategy, *extra), "prefix-router"))
        for u in [*urls, f"http://127.0.0.1:{r_port}"]:
            await wait_ready(u + "/readyz")
        t0 = time.perf_counter()
        out = await run_trace(f"http://127.0.0.1:{r_port}", reqs)
        wall = time.perf_counter() - t0
        hit = await cache_hit_rate(urls)
    return {
        "strategy": strategy,
        "ttft_p50_s": round(out["ttft_p50_s"], 3),
        "ttft_p95_s": round(out["ttft_p95_s"], 3),
        "throughput_rps": round((out["requests"] - out["errors"]) / wall, 2),
        "errors": out["errors"],
        "prefix_cache_hit_rate": round(hit, 3),
    }


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    reqs = trace(args)
    results = [await one_strategy(s, reqs, args) for s in args.strategy or STRATEGIES]
    return {"requests": len(reqs), "results": results}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--rate", type=float, default=8.0, help="requests/s, open loop")
    p.add_argument("--tenants", type=int, default=16)
    p.add_argument("--system-words", type=int, default=600, help="~tokens of each tenant's system prompt")
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--cache-tokens", type=int, default=4096, help="prefix cache per replica (LRU)")
    p.add_argument("--prefill-tps", type=float, default=4000.0)
    p.add_argument("--decode-tps", type=float, default=50.0)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--strategy", action="append", choices=STRATEGIES)
    args = p.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
