"""The open loop: requests sent on a schedule (a load curve), whatever the responses' speed."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

from shoal_batch.config import LoadConfig
from shoal_batch.inputs import Item
from shoal_batch.progress import Counters
from shoal_batch.replay import ReplayItems
from shoal_batch.report import Report, summarise
from shoal_batch.run_state import RunState, TaskTracker, drive, finish_report, load_items, open_run
from shoal_batch.schedule import arrival_times
from shoal_batch.send import send_item


class Sources(Protocol):
    """Items by send sequence (modulo its length): a list, or a replay's items made when sent."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Item: ...


@dataclass(slots=True)
class _Schedule:
    times: list[float]
    sources: Sources
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


def _schedule(config: LoadConfig, items: list[Item]) -> _Schedule:
    """The send instants and their items: a replay's own, or a rate curve's over the input's prompts."""
    if config.replay is not None:
        times = [t for t in config.replay.times if t < config.max_duration_s][: config.max_requests]
        return _Schedule(times, ReplayItems(config.replay, seed=config.schedule_seed))
    assert config.curve is not None
    times = arrival_times(
        config.curve,
        arrivals=config.arrivals,
        seed=config.schedule_seed,
        max_requests=config.max_requests,
        max_duration=config.max_duration_s,
    )
    return _Schedule(times, items or [Item(id="synthetic", key="synthetic", line=0, prompt=config.prompt)])


async def run_open_loop_async(config: LoadConfig, *, stop: asyncio.Event | None = None) -> Report:
    """Send requests at the schedule of ``config.curve`` (or of ``config.replay``, each traced request with
    its own prompt and output length) regardless of how fast responses come back.

    Items cycle through the input (or a single synthetic prompt); each send gets a sequence id and records
    its scheduled offset ``t_s`` and the actual ``sent_s``. Bounded by ``max_requests`` and ``max_duration_s``;
    after the last send, requests in flight get ``drain_timeout_s`` to finish.
    """
    config.validate()
    parsed = load_items(config)
    sched = _schedule(config, parsed.items)
    times = sched.times
    counters = Counters(total=len(times), started_at=time.perf_counter())
    started = time.perf_counter()
    # A replay's items carry no model of their own: the model is discovered (or --model) as for a prompt.
    model_items = parsed.items or [Item(id="synthetic", key="synthetic", line=0, prompt=config.prompt)]
    async with open_run(config, counters, model_items, label="load") as run:
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
