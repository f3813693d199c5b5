"""Helpers shared by the router benchmarks: start processes, wait for readiness, percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import aiohttp
from shoal_common import processes
from shoal_common.ports import free_port

__all__ = ["REPO", "cpu_seconds", "free_port", "percentile", "process", "router_cmd", "wait_ready"]

REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def process(
    args: Sequence[str], log_name: str, cpus: set[int] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process (SIGTERM on exit), optionally pinned to `cpus` (all its threads inherit it)."""
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"shoal-bench-{log_name}.log"

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    with open(log_path, "wb") as log:
        proc = subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT, cwd=REPO, preexec_fn=pin)
    try:
        yield proc
    finally:
        processes.stop(proc, timeout=10)


def router_cmd(port: int, upstreams: Sequence[str], strategy: str = "LeastLoad", *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "shoal_cli", "router", "--host", "127.0.0.1", "--port", str(port)]
    for u in upstreams:
        cmd += ["--upstream", u]
    return [*cmd, "--strategy", strategy, "--no-access-log", "--log-level", "WARNING", *extra]


async def wait_ready(url: str, within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    async with aiohttp.ClientSession() as s:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with s.get(url) as r:
                    if r.status == 200:
                        return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{url} not ready within {within}s")
            await asyncio.sleep(0.1)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
