"""Gateway paths on the same sim replica, in one run: Envoy + shoal's EPP (ext_proc FULL_DUPLEX_STREAMED,
TLS, ORIGINAL_DST on the header), Envoy direct (a static cluster, no ext_proc), the shoal router, and the
replica itself. p50/p99 latency (sequential keep-alive requests, targets interleaved in blocks of 100) and
throughput plus CPU per request of every process (closed-loop workers, each target alone).
Goal: the EPP adds at most 1 ms at p50 over Envoy direct.

    .venv/bin/python bench/epp_overhead.py [--requests 2000] [--concurrency 16] [--seconds 8]
        [--baseline-pythonpath PATHS]   # another checkout's EPP beside this one's (A/B in one run)
        [--also-headers-only]           # and an Envoy that sends the EPP the response headers only
        [--floor]                       # and a do-nothing Python servicer: what grpcio itself costs
        [--go-floor]                    # and the same servicer in Go: what Envoy's round trips cost
        [--plaintext]                   # no TLS between Envoy and the EPP(s)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from router_common import cpu_seconds, free_port, percentile, process, router_cmd, wait_ready
from router_overhead import latency, throughput, upstream_cmd
from shoal_common.paths import cache_dir

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


def floor_cmd(grpc: int, upstream: str, *extra: str) -> list[str]:
    return [sys.executable, str(Path(__file__).with_name("epp_floor.py")), "--grpc-port", str(grpc),
            "--upstream", upstream, *extra]  # fmt: skip


def go_floor_binary() -> str:
    """bench/epp_floor_go built once per source version into $SHOAL_CACHE/bin (Go module proxy)."""
    src = Path(__file__).with_name("epp_floor_go")
    digest = hashlib.sha256(b"".join((src / f).read_bytes() for f in ("main.go", "go.mod", "go.sum")))
    binary = cache_dir() / "bin" / f"epp-floor-go-{digest.hexdigest()[:12]}"
    if not binary.exists():
        env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
        subprocess.run(["go", "build", "-o", str(binary), "."], cwd=src, env=env, check=True)
    return str(binary)


def epp_paths(
    tmp: Path, args: argparse.Namespace, upstream: str
) -> list[tuple[str, list[str], list[str], int]]:
    """(name, EPP command, its Envoy's command, Envoy's port) per EPP under test: this checkout's, with
    --baseline-pythonpath another checkout's, with --also-headers-only a second Envoy that passes the
    response headers only through its own EPP, with --floor / --go-floor a do-nothing servicer's
    (`epp_floor.py`, `epp_floor_go`) behind the same configs (A/B comparisons on the same replica in one
    run)."""
    paths = [("envoy_epp", None, args.response_body, False)]
    if args.baseline_pythonpath:
        paths.append(("envoy_epp_baseline", args.baseline_pythonpath, args.response_body, False))
    if args.also_headers_only:
        paths.append(("envoy_epp_headers_only", None, False, True))
    for floor in (["envoy_epp_floor"] if args.floor else []) + (
        ["envoy_epp_gofloor"] if args.go_floor else []
    ):
        paths.append((floor, None, args.response_body, False))
        if args.also_headers_only:
            paths.append((f"{floor}_headers_only", None, False, True))
    tls = ["--plaintext"] if args.plaintext else []
    out = []
    for name, pythonpath, response_body, headers_only in paths:
        grpc, health, metrics = free_port(), free_port(), free_port()
        if "gofloor" in name:
            cmd = [go_floor_binary(), "--grpc-port", str(grpc), "--upstream", upstream, *tls]
        elif "floor" in name:
            cmd = floor_cmd(grpc, upstream, *tls)
        else:
            cmd = epp_cmd(grpc, health, metrics, upstream, *tls)
        if pythonpath:
            cmd = ["env", f"PYTHONPATH={pythonpath}", *cmd]
        e_cmd, e_port, _ = envoy_cmd(
            tmp,
            name,
            pool=[upstream],
            mode="original_dst",
            epp_port=grpc,
            response_body=response_body,
            response_headers_only=headers_only,
            epp_tls=not args.plaintext,
        )
        out.append((name, cmd, e_cmd, e_port))
    return out


async def measure(urls: dict[str, str], pids: dict[str, int], args: argparse.Namespace) -> dict[str, object]:
    results: dict[str, object] = {}
    lat = await latency(urls, args.requests)
    for name, values in lat.items():
        results[f"{name}_p50_ms"] = round(percentile(values, 50) * 1000, 3)
        results[f"{name}_p99_ms"] = round(percentile(values, 99) * 1000, 3)
    for name in [u for u in urls if u.startswith("envoy_epp")]:
        for q in ("p50", "p99"):
            added = results[f"{name}_{q}_ms"] - results[f"envoy_direct_{q}_ms"]  # type: ignore[operator]
            results[f"{name.replace('envoy_epp', 'epp')}_added_{q}_ms"] = round(added, 3)
    for kind in ("floor", "gofloor"):  # what shoal's EPP adds over a do-nothing servicer
        for epp in ("envoy_epp", "envoy_epp_headers_only"):
            floor = epp.replace("envoy_epp", f"envoy_epp_{kind}")
            if epp in urls and floor in urls:
                over = results[f"{epp}_p50_ms"] - results[f"{floor}_p50_ms"]  # type: ignore[operator]
                results[f"{epp.replace('envoy_epp', 'epp')}_over_{kind}_p50_ms"] = round(over, 3)
    for name, url in urls.items():
        before = {k: cpu_seconds(p) for k, p in pids.items()}
        rps, n = await throughput(url, args.concurrency, args.seconds)
        results[f"{name}_rps"] = round(rps, 1)
        used = {k: (cpu_seconds(p) - before[k]) / max(1, n) * 1e6 for k, p in pids.items()}
        results[f"{name}_cpu_us_per_req"] = {k: round(v) for k, v in used.items() if v >= 1}
    return results


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="shoal-bench-epp-"))
    up_port, r_port = free_port(), free_port()
    upstream = f"127.0.0.1:{up_port}"
    d_cmd, d_port, _ = envoy_cmd(tmp, "direct", pool=[upstream], mode="direct")
    epps = epp_paths(tmp, args, upstream)
    urls = {"replica": f"http://{upstream}", "envoy_direct": f"http://127.0.0.1:{d_port}"}
    urls.update({name: f"http://127.0.0.1:{port}" for name, _, _, port in epps})
    urls["router"] = f"http://127.0.0.1:{r_port}"
    with contextlib.ExitStack() as stack:
        pids = {
            "upstream": stack.enter_context(
                process(upstream_cmd("model-server", up_port), "epp-upstream")
            ).pid
        }
        for name, cmd, e_cmd, _ in epps:
            pids[name.replace("envoy_epp", "epp")] = stack.enter_context(process(cmd, f"{name}-epp")).pid
            pids[name] = stack.enter_context(process(e_cmd, f"{name}-envoy")).pid
        pids["envoy_direct"] = stack.enter_context(process(d_cmd, "epp-envoy-direct")).pid
        router = process(router_cmd(r_port, [urls["replica"]], "LeastLoad"), "epp-router")
        pids["router"] = stack.enter_context(router).pid
        for name, url in urls.items():
            await wait_ready(url + ("/readyz" if name in ("replica", "router") else "/v1/models"))
        results: dict[str, object] = {
            "epp_response_body": args.response_body,
            "epp_tls": not args.plaintext,
            "loadavg_before": os.getloadavg(),
        }
        results.update(await measure(urls, pids, args))
        results["loadavg_after"] = os.getloadavg()
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
    p.add_argument(
        "--also-headers-only",
        action="store_true",
        help="a second Envoy + EPP whose ext_proc gets the response headers only (response_body_mode NONE)",
    )
    p.add_argument(
        "--floor",
        action="store_true",
        help="also a do-nothing Python ext_proc servicer (bench/epp_floor.py) behind the same Envoy config",
    )
    p.add_argument(
        "--go-floor",
        action="store_true",
        help="also the same do-nothing servicer compiled (bench/epp_floor_go, built with go on first use)",
    )
    p.add_argument(
        "--plaintext",
        action="store_true",
        help="no TLS between Envoy and the EPP (default: TLS with the EPP's self-signed certificate, as GAIE)",
    )
    p.add_argument(
        "--baseline-pythonpath",
        default=None,
        help="PYTHONPATH of another checkout whose EPP runs beside this one's (an A/B in one run)",
    )
    args = p.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
