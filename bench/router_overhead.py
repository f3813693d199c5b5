"""Router overhead: added latency (p50/p99) and max throughput through the router vs straight to the
model-server (simulated engine, near-zero compute), in the same run.
Goal: p50 +<= 1 ms and >= 90% of direct throughput.

    .venv/bin/python bench/router_overhead.py [--requests 2000] [--concurrency 32[,64,...]] [--seconds 10]
    .venv/bin/python bench/router_overhead.py --upstream-kind bench   # the bench's own aiohttp sim upstream
    .venv/bin/python bench/router_overhead.py --upstream-alone --client wrk --concurrency 16,32,64
        # the upstream alone on CPU 0, the router (and wrk, ~20 us per request) on CPU 1; each target
        # at its best concurrency

Latency: one client, sequential keep-alive requests, direct and routed interleaved in blocks of 100 so
drift hits both alike. Throughput: `--concurrency` closed-loop workers for `--seconds`, each target alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import aiohttp
from router_common import cpu_seconds, free_port, percentile, process, router_cmd, wait_ready

BODY = {"model": "sim", "prompt": "hello there", "max_tokens": 1}


async def latency(urls: dict[str, str], n: int, block: int = 100) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in urls}
    async with aiohttp.ClientSession() as s:
        for url in urls.values():  # warm up connections and caches
            for _ in range(50):
                async with s.post(url + "/v1/completions", json=BODY) as r:
                    await r.read()
        done = 0
        while done < n:
            for name, url in urls.items():
                for _ in range(block):
                    t0 = time.perf_counter()
                    async with s.post(url + "/v1/completions", json=BODY) as r:
                        await r.read()
                        assert r.status == 200, r.status
                    out[name].append(time.perf_counter() - t0)
            done += block
    return out


async def throughput(url: str, concurrency: int, seconds: float) -> tuple[float, int]:
    count = 0
    stop_at = time.perf_counter() + seconds
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def worker() -> None:
            nonlocal count
            while time.perf_counter() < stop_at:
                async with s.post(url + "/v1/completions", json=BODY) as r:
                    await r.read()
                    if r.status == 200:
                        count += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return count / elapsed, count


WRK_SCRIPT = f"""
wrk.method = "POST"
wrk.body = '{json.dumps(BODY)}'
wrk.headers["Content-Type"] = "application/json"
"""


WRK_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}  # wrk's format_time_us


def parse_wrk(stdout: str) -> tuple[float, int]:
    """(requests per second, requests) from wrk's summary; any non-2xx answer or socket error fails."""
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h),", stdout)
    if total is None:
        raise RuntimeError(f"unexpected wrk output: {stdout}")
    if re.search(r"Non-2xx or 3xx responses: \d+|Socket errors: ", stdout):
        raise RuntimeError(f"wrk saw failures: {stdout}")
    n = int(total.group(1))
    elapsed = float(total.group(2)) * WRK_UNITS[total.group(3)]
    return n / elapsed, n


def wrk_throughput(url: str, concurrency: int, seconds: float) -> tuple[float, int]:
    """The same closed loop from wrk (C, one thread): a client that costs the shared core ~20x less CPU
    per request than the aiohttp one, so the target, not the load generator, sets the pace."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("--client wrk needs wrk on PATH (Debian: apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        cmd = [wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "-s", script.name]
        out = subprocess.run([*cmd, url + "/v1/completions"], capture_output=True, text=True, check=True)
    return parse_wrk(out.stdout)


async def closed_loop(
    url: str, concurrency: int, procs: dict[str, int], args: argparse.Namespace
) -> dict[str, float]:
    """Throughput of one target at one concurrency, and each process's CPU per request meanwhile."""
    before = {k: cpu_seconds(pid) for k, pid in procs.items()}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    if args.client == "wrk":
        rps, n = await asyncio.to_thread(wrk_throughput, url, concurrency, args.seconds)
    else:
        rps, n = await throughput(url, concurrency, args.seconds)
    out = {"rps": round(rps, 1)}
    if args.client == "wrk":  # wrk is the only child reaped in between
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
        out["wrk_cpu_us_per_req"] = round(used / max(1, n) * 1e6)
    for k, pid in procs.items():
        out[f"{k}_cpu_us_per_req"] = round((cpu_seconds(pid) - before[k]) / max(1, n) * 1e6)
    return out


def upstream_cmd(kind: str, port: int) -> list[str]:
    if kind == "model-server":
        return [
            sys.executable, "-m", "shoal_cli", "model-server", "--engine", "sim", "--model", "sim",
            "--host", "127.0.0.1", "--port", str(port), "--max-concurrency", "256", "--max-queue", "4096",
            "--sim-decode-tokens-per-s", "100000", "--sim-prefill-tokens-per-s", "100000000",
            "--sim-max-batch", "256", "--log-level", "WARNING",
        ]  # fmt: skip
    return [
        sys.executable, "bench/router_upstream.py", "--replicas", "1", "--base-port", str(port),
        "--decode-tps", "100000", "--prefill-tps", "100000000", "--max-batch", "256",
    ]  # fmt: skip


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    up_port, r_port = free_port(), free_port()
    direct = f"http://127.0.0.1:{up_port}"
    routed = f"http://127.0.0.1:{r_port}"
    results: dict[str, object] = {
        "upstream": args.upstream_kind,
        "pinned": args.pin,
        "client": args.client,
        "loadavg_before": os.getloadavg(),
    }
    # --pin: load generator and upstream share CPU 0, the router has CPU 1 (as a router pod has its own
    # CPU in a cluster). Unpinned, all three compete for every core and the sum of their CPU sets the pace.
    # --upstream-alone: the upstream has CPU 0 to itself, the load generator and the router share CPU 1, so
    # requests reach the upstream from the other core in both runs (the same placement for the upstream).
    client_cpus, router_cpus = ({0}, {1}) if args.pin else (None, None)
    upstream_cpus = client_cpus
    if args.upstream_alone:
        client_cpus, router_cpus, upstream_cpus = {1}, {1}, {0}
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
    with (
        process(upstream_cmd(args.upstream_kind, up_port), "overhead-upstream", upstream_cpus) as up_proc,
        process(
            router_cmd(r_port, [direct], "LeastLoad", *args.router_arg), "overhead-router", router_cpus
        ) as router_proc,
    ):
        await wait_ready(direct + "/readyz")
        await wait_ready(routed + "/readyz")
        lat = await latency({"direct": direct, "router": routed}, args.requests)
        for name, values in lat.items():
            results[f"{name}_p50_ms"] = round(percentile(values, 50) * 1000, 3)
            results[f"{name}_p99_ms"] = round(percentile(values, 99) * 1000, 3)
        results["added_p50_ms"] = round(results["router_p50_ms"] - results["direct_p50_ms"], 3)  # type: ignore[operator]
        results["added_p99_ms"] = round(results["router_p99_ms"] - results["direct_p99_ms"], 3)  # type: ignore[operator]
        procs = {"upstream": up_proc.pid, "router": router_proc.pid}
        for c in args.concurrency:  # interleaved, so drift hits both targets alike
            for name, url in (("direct", direct), ("router", routed)):
                run = await closed_loop(url, c, procs, args)
                results.update({f"{name}_{k}_c{c}": v for k, v in run.items()})
        # Each target at its best concurrency (a competent operator would tune both).
        for name in ("direct", "router"):
            best = max(args.concurrency, key=lambda c: results[f"{name}_rps_c{c}"])  # type: ignore[arg-type,return-value]
            results[f"{name}_best_concurrency"] = best
            results[f"{name}_rps"] = results[f"{name}_rps_c{best}"]
        results["throughput_ratio"] = round(results["router_rps"] / results["direct_rps"], 3)  # type: ignore[operator]
        results["loadavg_after"] = os.getloadavg()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument(
        "--concurrency",
        type=lambda v: [int(c) for c in v.split(",")],
        default=[32],
        help="closed-loop connections; a comma-separated list sweeps them and compares each target at its best",
    )
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--upstream-kind", choices=("model-server", "bench"), default="model-server")
    placement = p.add_mutually_exclusive_group()
    placement.add_argument("--pin", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument(
        "--client",
        choices=("aiohttp", "wrk"),
        default="aiohttp",
        help="throughput load generator: the Python one, or wrk (C; far less CPU on a shared core)",
    )
    placement.add_argument(
        "--upstream-alone",
        action="store_true",
        help="pin the upstream alone on CPU 0, the client and the router on CPU 1 (best with --client wrk)",
    )
    p.add_argument("--router-arg", action="append", default=[], help="extra router flag (repeatable)")
    args = p.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
