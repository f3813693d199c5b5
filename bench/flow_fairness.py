"""Noisy neighbour through the router's flow control (issue 16), one run, real processes:
one `shoal model-server --engine sim` replica behind one `shoal router`.

Phases (open-loop Poisson arrivals, streamed chat requests, TTFT = first content event):
  calibrate  closed loop at 2x the replica's concurrency: capacity C (requests/s)
  alone      tenant B alone at r_B = 2C/11
  mixed      tenant A at 10 r_B plus B at r_B, same band (total 2x capacity): fair queuing
  priority   the same load, A in the low band (objective "batch"), B in the high band ("chat")
  direct     (--direct) the mixed load sent straight to the replica (no router): no flow control at all
The mixed and priority phases run through two routers on the same replica, one per reservation policy:
"new" (--fair-reserve-max, the demand-sized reserve) and "old" (--old-fair-reserve-max 0: the fixed
--fair-reserve alone). Engine priorities (unless --no-engine): a second replica with the same engine
(same batch) run `--scheduling-policy priority --max-concurrency` 2x the batch, so the engine has a
waiting queue to order and preempts for better priorities, and `--sim-max-batched-tokens` from
--engine-max-batched-tokens (512; 0: off), so chunked prefill bounds the step a better request waits
out, behind a router with `--engine-priority` ("engine": band first, then light tenants ahead of heavy
ones) and, with --engine-control, one without it
("conc": the same replica, every request priority 0, i.e. first come, first served). B alone is measured
again through the "engine" router.
Reported: B's p95 TTFT against alone, Jain's index of served throughput normalised by each tenant's
max-min fair share (Jain's definition for unequal demands: x_i = served_i / fair_i), and who was shed.

    python bench/flow_fairness.py [--phase-s 15] [--direct] [--json out.json]
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
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from router_common import free_port, percentile, process, wait_ready

PROMPT = "You are a helpful assistant. " * 60  # ~360 sim tokens: prefill is part of TTFT
MAX_TOKENS = 24


@dataclass
class Tenant:
    name: str
    rate: float
    objective: str | None = None


@dataclass
class Stats:
    ttft: list[float] = field(default_factory=list)
    codes: dict[int, int] = field(default_factory=dict)

    def served(self) -> int:
        return self.codes.get(200, 0)


async def one(session: aiohttp.ClientSession, url: str, t: Tenant, stats: Stats) -> None:
    body = {
        "model": "sim",
        "messages": [{"role": "user", "content": PROMPT + t.name}],
        "max_tokens": MAX_TOKENS,
        "stream": True,
    }
    headers = {"x-gateway-inference-fairness-id": t.name}
    if t.objective:
        headers["x-gateway-inference-objective"] = t.objective
    start = time.perf_counter()
    try:
        async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as resp:
            first = None
            async for _ in resp.content.iter_any():
                if first is None and resp.status == 200:
                    first = time.perf_counter() - start
            stats.codes[resp.status] = stats.codes.get(resp.status, 0) + 1
            if first is not None:
                stats.ttft.append(first)
    except (aiohttp.ClientError, TimeoutError):
        stats.codes[0] = stats.codes.get(0, 0) + 1


async def open_loop(url: str, tenants: list[Tenant], duration_s: float, seed: int = 7) -> dict[str, Stats]:
    rng = random.Random(seed)
    stats = {t.name: Stats() for t in tenants}
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as s:
        tasks: list[asyncio.Task[None]] = []

        async def arrivals(t: Tenant) -> None:
            end = time.perf_counter() + duration_s
            while (now := time.perf_counter()) < end:
                tasks.append(asyncio.create_task(one(s, url, t, stats[t.name])))
                await asyncio.sleep(max(0.0, rng.expovariate(t.rate) - (time.perf_counter() - now)))

        await asyncio.gather(*(arrivals(t) for t in tenants))
        await asyncio.gather(*tasks)
    return stats


async def calibrate(url: str, workers: int, duration_s: float) -> float:
    done = 0
    end = time.perf_counter() + duration_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:

        async def worker() -> None:
            nonlocal done
            st = Stats()
            while time.perf_counter() < end:
                await one(s, url, Tenant("cal", 1.0), st)
                done += 1

        await asyncio.gather(*(worker() for _ in range(workers)))
    return done / duration_s


def maxmin_shares(demands: dict[str, float], capacity: float) -> dict[str, float]:
    """Max-min fair allocation of `capacity` among `demands` (equal weights)."""
    share: dict[str, float] = {}
    left, todo = capacity, dict(demands)
    while todo:
        even = left / len(todo)
        small = {k: v for k, v in todo.items() if v <= even}
        if not small:
            share.update({k: even for k in todo})
            break
        for k, v in small.items():
            share[k] = v
            left -= v
            del todo[k]
    return share


def jain(xs: list[float]) -> float:
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs)) if xs else float("nan")


SLOW_WAIT_S = ("0.5", "1.0")  # bucket bounds of shoal_router_flow_wait_seconds: waits over them are counted


async def router_waits(router: str) -> dict[str, tuple[float, ...]]:
    """Per tenant: (sum, count, count <= 0.5 s, count <= 1 s) of `shoal_router_flow_wait_seconds` (the
    time queued in the router)."""
    async with aiohttp.ClientSession() as s, s.get(router + "/metrics") as resp:
        text = await resp.text()
    out: dict[str, tuple[float, ...]] = {}
    for line in text.splitlines():
        if line.startswith("shoal_router_flow_wait_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            if le in SLOW_WAIT_S:
                tenant = line.split('tenant="', 1)[1].split('"', 1)[0]
                row = list(out.get(tenant, (0.0, 0.0, 0.0, 0.0)))
                row[2 + SLOW_WAIT_S.index(le)] += float(line.rsplit(" ", 1)[1])
                out[tenant] = tuple(row)
        for suffix, idx in (("_sum{", 0), ("_count{", 1)):
            if line.startswith("shoal_router_flow_wait_seconds" + suffix):
                tenant = line.split('tenant="', 1)[1].split('"', 1)[0]
                row = list(out.get(tenant, (0.0, 0.0, 0.0, 0.0)))
                row[idx] += float(line.rsplit(" ", 1)[1])
                out[tenant] = tuple(row)
    return out


async def phase(router: str, url: str, tenants: list[Tenant], duration_s: float) -> dict[str, object]:
    before = await router_waits(router)
    stats = await open_loop(url, tenants, duration_s)
    after = await router_waits(router)
    out = summary(stats, tenants, duration_s)
    waits, slow = {}, {}
    for t in tenants:
        s0, c0, *le0 = before.get(t.name, (0.0, 0.0, 0.0, 0.0))
        s1, c1, *le1 = after.get(t.name, (0.0, 0.0, 0.0, 0.0))
        waits[t.name] = round((s1 - s0) / (c1 - c0), 3) if c1 > c0 else None
        # how many waited in the router over 0.5 s and over 1 s (where a TTFT tail comes from)
        slow[t.name] = [int((c1 - c0) - (b1 - b0)) for b0, b1 in zip(le0, le1, strict=True)]
    out["mean_router_wait_s"] = waits
    out["router_waits_over_0.5s_1s"] = slow
    return out


def summary(stats: dict[str, Stats], tenants: list[Tenant], duration_s: float) -> dict[str, object]:
    served = {k: v.served() / duration_s for k, v in stats.items()}
    shares = maxmin_shares({t.name: t.rate for t in tenants}, sum(served.values()))
    return {
        "p95_ttft_s": {k: round(percentile(v.ttft, 95), 3) for k, v in stats.items()},
        "p50_ttft_s": {k: round(percentile(v.ttft, 50), 3) for k, v in stats.items()},
        "codes": {k: v.codes for k, v in stats.items()},
        "served_per_s": {k: round(v, 2) for k, v in served.items()},
        "jain": round(jain([served[k] / shares[k] for k in served if shares[k] > 0]), 3),
    }


def router_cmd(port: int, replica: str, fair_reserve: str, fair_reserve_max: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "shoal_cli", "router", "--host", "127.0.0.1", "--port", str(port),
            "--upstream", replica, "--objective", "chat=high", "--objective", "batch=low",
            "--max-pending", "64", "--queue-timeout", "10", "--fair-reserve", fair_reserve,
            "--fair-reserve-max", fair_reserve_max, "--no-access-log", "--log-level", "WARNING",
            *extra]  # fmt: skip


def server_cmd(port: int, concurrency: int, batch: int, policy: str, batched_tokens: int = 0) -> list[str]:
    return [sys.executable, "-m", "shoal_cli", "model-server", "--engine", "sim", "--model", "sim", "--host",
            "127.0.0.1", "--port", str(port), "--max-concurrency", str(concurrency), "--sim-max-batch",
            str(batch), "--scheduling-policy", policy, "--sim-max-batched-tokens", str(batched_tokens),
            "--log-level", "WARNING"]  # fmt: skip


async def preemptions(replica: str) -> float:
    async with aiohttp.ClientSession() as s, s.get(replica + "/metrics") as resp:
        text = await resp.text()
    return sum(
        float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith("vllm:num_preemptions_total")
    )


async def phases(routers: dict[str, str], replica: str, args: argparse.Namespace) -> dict[str, object]:
    """Calibrate and run B alone through the first router, then the mixed and priority loads through
    each router (policy), then, with --direct, the mixed load straight to the replica."""
    first = next(iter(routers.values()))
    cap = await calibrate(first, 2 * args.concurrency, 6.0)
    r_b = 2 * cap / 11
    b, a = Tenant("B", r_b), Tenant("A", 10 * r_b)
    ap_, bp = Tenant("A", 10 * r_b, "batch"), Tenant("B", r_b, "chat")
    d = args.phase_s
    out: dict[str, object] = {"capacity_per_s": round(cap, 2), "rate_B": round(r_b, 2)}
    out["alone"] = await phase(first, first, [b], d)
    if "engine" in routers:
        out["alone/engine"] = await phase(routers["engine"], routers["engine"], [b], d)
    for name, url in routers.items():
        out[f"mixed/{name}"] = await phase(url, url, [a, b], d)
        out[f"priority/{name}"] = await phase(url, url, [ap_, bp], d)
    if args.direct:
        out["direct"] = await phase(first, replica, [a, b], d)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase-s", type=float, default=15.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--json", default=None)
    ap.add_argument("--fair-reserve", default="0.25")
    ap.add_argument(
        "--engine-fair-reserve", default=None, help="the engine router's --fair-reserve (default: the same)"
    )
    ap.add_argument("--fair-reserve-max", default="0.5", help="the policy under test (demand-sized reserve)")
    ap.add_argument("--old-fair-reserve-max", default="0", help="the policy compared against ('' to skip)")
    ap.add_argument("--direct", action="store_true", help="also send the mixed load straight to the replica")
    ap.add_argument("--no-engine", action="store_true", help="skip the engine-priority replica and router")
    ap.add_argument("--engine-control", action="store_true", help="also the priority replica without it")
    ap.add_argument(
        "--engine-max-batched-tokens",
        type=int,
        default=512,
        help="the priority replica's --sim-max-batched-tokens (chunked prefill; 0: off)",
    )
    args = ap.parse_args()
    mport, eport = free_port(), free_port()
    replica, ereplica = f"http://127.0.0.1:{mport}", f"http://127.0.0.1:{eport}"
    c = args.concurrency
    servers = {replica: server_cmd(mport, c, c, "fcfs")}
    engine_reserve = args.engine_fair_reserve or args.fair_reserve
    policies = {"new": (replica, args.fair_reserve_max, ())}
    if args.old_fair_reserve_max:
        policies["old"] = (replica, args.old_fair_reserve_max, ())
    if not args.no_engine:
        servers[ereplica] = server_cmd(eport, 2 * c, c, "priority", args.engine_max_batched_tokens)
        policies["engine"] = (
            ereplica,
            args.fair_reserve_max,
            ("--engine-priority", "--fair-reserve", engine_reserve),
        )
        if args.engine_control:
            policies["conc"] = (ereplica, args.fair_reserve_max, ())
    ports = {name: free_port() for name in policies}
    routers = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    with contextlib.ExitStack() as stack:
        for i, cmd in enumerate(servers.values()):
            stack.enter_context(process(cmd, f"flow-server{i}"))
        for name, (up, mx, extra) in policies.items():
            stack.enter_context(
                process(router_cmd(ports[name], up, args.fair_reserve, mx, *extra), f"flow-{name}")
            )
        for url in [*servers, *routers.values()]:
            await wait_ready(url + ("/readyz"))
        await asyncio.sleep(1.0)  # the first load reports
        load_before = os.getloadavg()
        out = await phases(routers, replica, args)
        if not args.no_engine:
            out["engine_preemptions"] = await preemptions(ereplica)
        out["policies"] = {
            "fair_reserve": args.fair_reserve,
            "engine_fair_reserve": engine_reserve,
            "engine_max_batched_tokens": args.engine_max_batched_tokens,
            "routers": {k: {"replica": "priority" if v[0] == ereplica else "fcfs", "fair_reserve_max": v[1],
                            "flags": list(v[2])} for k, v in policies.items()},
        }  # fmt: skip
        out["loadavg_before"] = [round(x, 2) for x in load_before]
        out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    alone = out["alone"]["p95_ttft_s"]["B"]  # type: ignore[index]
    for name in [k for k in out if k.startswith(("mixed", "priority", "direct", "alone/"))]:
        out[f"{name}: B p95 / alone"] = round(out[name]["p95_ttft_s"]["B"] / alone, 2)  # type: ignore[index]
    print(json.dumps(out, indent=1))
    if args.json:
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(out, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
