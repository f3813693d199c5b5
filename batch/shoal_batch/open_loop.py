"""The open loop: requests sent on a schedule (a load curve), whatever the responses' speed."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from shoal_batch.config import LoadConfig
from shoal_batch.inputs import Item
from shoal_batch.progress import Counters
from shoal_batch.report import Report, summarise
from shoal_batch.run_state import RunState, TaskTracker, drive, finish_report, load_items, open_run
from shoal_batch.schedule import arrival_times
from shoal_batch.send import send_item


@dataclass(slots=True)
class _Schedule:
    times: list[float]
    sources: list[Item]
    dropped: int = 0
    lags: list[float] = field(default_factory=list)


async def _feed(run: RunState, config: LoadConfig, sched: _Schedule) -> None:
    loop = asyncio.get_running_loop()
    tracker = TaskTracker(run.counters)
    t0 = loop.time()
    try:
        for seq, offset in enumerate(sched.times):
            delay = t0 + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            lag = loop.time() - (t0 + offset)
            sched.lags.append(lag)
            if tracker.crashed:
                break
            if run.counters.inflight >= config.max_inflight:
                sched.dropped += 1
                continue
            item = sched.sources[seq % len(sched.sources)]
            extra = {"source_id": item.id, "t_s": round(offset, 6), "sent_s": round(offset + lag, 6)}
            tracker.spawn(send_item(run, item, record_id=seq, extra=extra))
        await tracker.wait(within_s=config.drain_timeout_s)
    finally:
        await tracker.cancel_rest()
    tracker.raise_crash()


async def run_open_loop_async(config: LoadConfig, *, stop: asyncio.Event | None = None) -> Report:
    """Send requests at the schedule of ``config.curve`` regardless of how fast responses come back.

    Items cycle through the input (or a single synthetic prompt); each send gets a sequence id and records
    its scheduled offset ``t_s`` and the actual ``sent_s``. Bounded by ``max_requests`` and ``max_duration_s``;
    after the last send, requests in flight get ``drain_timeout_s`` to finish.
    """
    config.validate()
    assert config.curve is not None
    parsed = load_items(config)
    sources = parsed.items or [Item(id="synthetic", key="synthetic", line=0, prompt=config.prompt)]
    times = arrival_times(
        config.curve,
        arrivals=config.arrivals,
        seed=config.schedule_seed,
        max_requests=config.max_requests,
        max_duration=config.max_duration_s,
    )
    sched = _Schedule(list(times), sources)
    counters = Counters(total=len(times), started_at=time.perf_counter())
    started = time.perf_counter()
    async with open_run(config, counters, sources, label="load") as run:
        new_records = run.records
        interrupted = await drive(lambda: _feed(run, config, sched), stop)
    report = summarise(new_records, total=len(times))
    report.dropped = sched.dropped
    report.pending = max(0, len(times) - len(new_records) - sched.dropped)
    finish_report(report, parsed, new_records, started, interrupted)
    report.completion_tokens_this_run = report.completion_tokens
    if sched.lags:
        lags = sorted(sched.lags)
        report.schedule_lag_p99_s = lags[min(len(lags) - 1, int(0.99 * len(lags)))]
    if config.keep_records:
        report.records = new_records
    return report
