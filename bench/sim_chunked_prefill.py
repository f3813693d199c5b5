"""The noisy neighbour inside one sim engine, in process (no HTTP, no router): what chunked prefill
(`max_batched_tokens`) does to a light tenant's TTFT when a heavy one floods the engine.

The load of bench/flow_fairness.py's engine phases: streamed requests of ~378 sim tokens, 24 tokens
out, a batch of 8, `priority` policy. Tenant B at --rate-b (Poisson) with priority 0; tenant A at 10x
that with priority 1 (the engine router's "heavy tenant" rank), at most --a-in-flight A requests at
once (more are shed, as the router's queue bound sheds A). For each budget: B alone, then A + B.
Reported per budget: B's p50/p95 TTFT alone and mixed, A's served rate, preemptions.

    python bench/sim_chunked_prefill.py [--phase-s 20] [--budgets 0,256,512]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "model-server"), str(ROOT / "common")]

from shoal_server.engines.base import Sampling  # noqa: E402
from shoal_server.engines.sim import SimEngine, SimTiming  # noqa: E402

PROMPT = "You are a helpful assistant. " * 60  # as flow_fairness.py


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q / 100 * len(s)))], 3) if s else float("nan")


async def one(eng: SimEngine, name: str, prio: int, ttfts: list[float]) -> None:
    prompt = eng.tokenize(eng.render_chat([{"role": "user", "content": PROMPT + name}]))
    t0 = time.monotonic()
    first = None
    async for _ in eng.generate(name, prompt, Sampling(max_tokens=24), priority=prio):
        first = first if first is not None else time.monotonic() - t0
    if first is not None:
        ttfts.append(first)


async def phase(budget: int, rate_b: float, with_a: bool, args: argparse.Namespace) -> dict[str, object]:
    eng = SimEngine("sim", SimTiming(max_batch=8, max_batched_tokens=budget), policy="priority")
    await eng.start()
    rng = random.Random(7)
    ttft: dict[str, list[float]] = {"A": [], "B": []}
    tasks: list[asyncio.Task[None]] = []
    shed = 0

    async def arrivals(name: str, rate: float, prio: int) -> None:
        nonlocal shed
        end = time.monotonic() + args.phase_s
        while time.monotonic() < end:
            in_flight_a = sum(1 for t in tasks if not t.done() and t.get_name() == "A")
            if name == "A" and in_flight_a >= args.a_in_flight:
                shed += 1
            else:
                tasks.append(asyncio.create_task(one(eng, name, prio, ttft[name]), name=name))
            await asyncio.sleep(rng.expovariate(rate))

    try:
        await asyncio.gather(arrivals("B", rate_b, 0), *([arrivals("A", 10 * rate_b, 1)] if with_a else []))
        await asyncio.wait_for(asyncio.gather(*tasks), 120)  # bounded: A's in-flight cap bounds the drain
    finally:
        for t in tasks:
            t.cancel()
        await eng.shutdown()
    return {
        "B_p50_s": pct(ttft["B"], 50),
        "B_p95_s": pct(ttft["B"], 95),
        "B_n": len(ttft["B"]),
        "A_served_per_s": round(len(ttft["A"]) / args.phase_s, 2),
        "A_shed": shed,
        "preemptions": eng.preemptions._value.get(),
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase-s", type=float, default=20.0)
    ap.add_argument("--rate-b", type=float, default=0.97, help="flow_fairness.py's r_B (2C/11)")
    ap.add_argument("--a-in-flight", type=int, default=16, help="the replica's --max-concurrency")
    ap.add_argument("--budgets", default="0,256,512")
    args = ap.parse_args()
    out: dict[str, object] = {"loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    for budget in (int(b) for b in args.budgets.split(",")):
        alone = await phase(budget, args.rate_b, False, args)
        mixed = await phase(budget, args.rate_b, True, args)
        ratio = round(float(mixed["B_p95_s"]) / float(alone["B_p95_s"]), 2)  # type: ignore[arg-type]
        out[f"budget {budget}"] = {"alone": alone, "mixed": mixed, "B p95 mixed / alone": ratio}
        print(json.dumps({f"budget {budget}": out[f"budget {budget}"]}), flush=True)
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
