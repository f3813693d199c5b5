"""Engine priorities (issue 16) through any front end (the HTTP router, or Envoy in front of the EPP):
a replica run `--scheduling-policy priority` with a batch of one (`PRIORITY_REPLICA`), a low-band
request decoding, then a high-band one. With `--engine-priority` the front end sets x-shoal-priority and
the high one preempts the low one in the engine; without it both go at priority 0 and the high one waits.
Every request carries a client's `x-shoal-priority: not-a-number`: the model-server would refuse it
(400), so each 200 also proves the front end overwrote or removed the client's header."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

OBJECTIVE = "x-gateway-inference-objective"
PRIORITY_REPLICA = (
    "--scheduling-policy", "priority", "--max-concurrency", "4", "--sim-max-batch", "1",
    "--sim-decode-tokens-per-s", "40",
)  # fmt: skip
OBJECTIVES = ("--objective", "chat=high", "--objective", "batch=low")
FORGED = {"x-shoal-priority": "not-a-number"}


async def _stream(
    c: httpx.AsyncClient, objective: str, max_tokens: int, started: asyncio.Event
) -> list[float]:
    """Arrival times of the content chunks; sets `started` at the first one."""
    body = {
        "model": "sim",
        "messages": [{"role": "user", "content": f"{objective} request"}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    times: list[float] = []
    headers = {OBJECTIVE: objective, **FORGED}
    async with c.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status_code == 200, (await r.aread()).decode()
        async for line in r.aiter_lines():
            choices = json.loads(line[6:])["choices"] if line.startswith("data: {") else []
            if choices and choices[0].get("delta", {}).get("content"):
                times.append(time.monotonic())
                started.set()
    return times


async def preemptions(replica_url: str) -> float:
    """The replica's vllm:num_preemptions_total."""
    async with httpx.AsyncClient(timeout=5) as c:
        text = (await c.get(replica_url + "/metrics")).text
    lines = text.splitlines()
    return sum(float(x.rsplit(" ", 1)[1]) for x in lines if x.startswith("vllm:num_preemptions_total"))


async def high_band_preempts_in_the_engine(url: str, preempts: bool) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        low_started, high_started = asyncio.Event(), asyncio.Event()
        low = asyncio.create_task(_stream(c, "batch", 40, low_started))  # 1 s of decoding alone
        await asyncio.wait_for(low_started.wait(), 10)
        high = await asyncio.wait_for(_stream(c, "chat", 4, high_started), 20)
        low_times = await asyncio.wait_for(low, 20)
    assert len(low_times) == 40 and len(high) == 4  # nothing lost or sent twice across a preemption
    if preempts:  # the high one ran while the low one waited, preempted
        assert high[-1] < low_times[-1]
        assert not [t for t in low_times if high[0] < t < high[-1]]
    else:  # first come, first served: the high one waited for the whole low one
        assert high[0] > low_times[-1]
