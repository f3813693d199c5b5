"""Gateway paths on the same sim replica, in one run: Envoy + shoal's EPP (ext_proc FULL_DUPLEX_STREAMED,
TLS, ORIGINAL_DST on the header), Envoy direct (a static cluster, no ext_proc), the shoal router, and the
replica itself. p50/p99 latency (sequential keep-alive requests, targets interleaved in blocks of 100) and
throughput plus CPU per request of every process (closed-loop workers, each target alone).
Goal: the EPP adds at most 1 ms at p50 over Envoy direct.

    .venv/bin/python bench/epp_overhead.py [--requests 2000] [--concurrency 16] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from router_common import cpu_seconds, free_port, percentile, process, router_cmd, wait_ready
from router_overhead import latency, throughput, upstream_cmd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.envoy import envoy_binary, render_config


def epp_cmd(grpc: int, health: int, metrics: int, upstream: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "shoal_cli", "epp", "--host", "127.0.0.1", "--grpc-port", str(grpc),
        "--health-port", str(health), "--metrics-port", str(metrics), "--upstream", upstream,
        "--no-access-log", "--log-level", "WARNING", *extra,
    ]  # fmt: skip


def envoy_cmd(tmp: Path, name: str, **config: object) -> tuple[list[str], int, int]:
    port, admin = free_port(), free_port()
    cfg = tmp / f"{name}.json"
    cfg.write_text(json.dumps(render_config(listen_port=port, admin_port=admin, **config)))  # type: ignore[arg-type]
    cmd = [
        envoy_binary(),
        "-c",
        str(cfg),
        "--concurrency",
        "1",
        "--disable-hot-restart",
        "--log-level",
        "error",
    ]
    return cmd, port, admin


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="shoal-bench-epp-"))
    up_port, r_port, grpc, health, metrics = (free_port() for _ in range(5))
    upstream = f"127.0.0.1:{up_port}"
    e_cmd, e_port, _ = envoy_cmd(
        tmp, "epp", pool=[upstream], mode="original_dst", epp_port=grpc, response_body=args.response_body
    )
    d_cmd, d_port, _ = envoy_cmd(tmp, "direct", pool=[upstream], mode="direct")
    urls = {
        "replica": f"http://{upstream}",
        "envoy_direct": f"http://127.0.0.1:{d_port}",
        "envoy_epp": f"http://127.0.0.1:{e_port}",
        "router": f"http://127.0.0.1:{r_port}",
    }
    results: dict[str, object] = {"epp_response_body": args.response_body}
    with (
        process(upstream_cmd("model-server", up_port), "epp-upstream") as up,
        process(epp_cmd(grpc, health, metrics, upstream), "epp-epp") as epp,
        process(e_cmd, "epp-envoy-epp") as envoy_epp,
        process(d_cmd, "epp-envoy-direct") as envoy_direct,
        process(router_cmd(r_port, [urls["replica"]], "LeastLoad"), "epp-router") as router,
    ):
        await wait_ready(urls["replica"] + "/readyz")
        await wait_ready(f"http://127.0.0.1:{metrics}/healthz")
        await wait_ready(urls["router"] + "/readyz")
        await wait_ready(urls["envoy_epp"] + "/v1/models")
        await wait_ready(urls["envoy_direct"] + "/v1/models")
        lat = await latency(urls, args.requests)
        for name, values in lat.items():
            results[f"{name}_p50_ms"] = round(percentile(values, 50) * 1000, 3)
            results[f"{name}_p99_ms"] = round(percentile(values, 99) * 1000, 3)
        results["epp_added_p50_ms"] = round(results["envoy_epp_p50_ms"] - results["envoy_direct_p50_ms"], 3)  # type: ignore[operator]
        results["epp_added_p99_ms"] = round(results["envoy_epp_p99_ms"] - results["envoy_direct_p99_ms"], 3)  # type: ignore[operator]
        pids = {
            "upstream": up.pid,
            "epp": epp.pid,
            "envoy_epp": envoy_epp.pid,
            "envoy_direct": envoy_direct.pid,
            "router": router.pid,
        }
        for name, url in urls.items():
            before = {k: cpu_seconds(p) for k, p in pids.items()}
            rps, n = await throughput(url, args.concurrency, args.seconds)
            results[f"{name}_rps"] = round(rps, 1)
            used = {k: (cpu_seconds(p) - before[k]) / max(1, n) * 1e6 for k, p in pids.items()}
            results[f"{name}_cpu_us_per_req"] = {k: round(v) for k, v in used.items() if v >= 1}
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument(
        "--response-body",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="responses through the EPP too (FULL_DUPLEX_STREAMED, as GAIE's gateways configure it); "
        "--no-response-body: the EPP sees the request only (response headers and body skipped)",
    )
    args = p.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
