"""The closed loop: every input item not yet done in the output file, at most `concurrency` at once."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from shoal_batch.config import BatchConfig
from shoal_batch.inputs import Item
from shoal_batch.output import ExistingOutput, is_done, load_existing, rewrite
from shoal_batch.progress import Counters
from shoal_batch.report import Report, summarise
from shoal_batch.run_state import Record, RunState, TaskTracker, drive, finish_report, load_items, open_run
from shoal_batch.send import send_item

log = logging.getLogger("shoal.batch")


async def _feed(run: RunState, todo: list[Item]) -> None:
    sem = asyncio.Semaphore(run.config.concurrency)
    tracker = TaskTracker(run.counters, on_done=sem.release)
    try:
        for item in todo:
            await sem.acquire()
            if tracker.crashed:
                sem.release()
                break
            tracker.spawn(send_item(run, item))
        await tracker.wait()
    finally:
        await tracker.cancel_rest()
    tracker.raise_crash()


def _previous_records(config: BatchConfig, wanted: set[str]) -> dict[str, Record]:
    """Records of an earlier run kept in the output file (failed ones dropped with --retry-failed)."""
    existing = ExistingOutput()
    if config.out is not None:
        existing = load_existing(config.out)
        if existing.repaired_bytes:
            log.warning("cut a truncated last line (%d bytes) from %s", existing.repaired_bytes, config.out)
    retry = [k for k, r in existing.records.items() if k in wanted and not is_done(r)]
    if config.out is not None and config.retry_failed and retry:
        kept = {k: r for k, r in existing.records.items() if is_done(r) or k not in wanted}
        rewrite(config.out, kept.values())
        existing.records = kept
    return {k: r for k, r in existing.records.items() if k in wanted}


async def run_batch_async(config: BatchConfig, *, stop: asyncio.Event | None = None) -> Report:
    """Send every input item not yet done in ``config.out``; returns the report over all input ids.

    Setting ``stop`` ends the run early: no new request starts, requests in flight are abandoned (they are
    not written, so a later run with the same output file sends them again).
    """
    config.validate()
    parsed = load_items(config)
    items = parsed.items
    previous = _previous_records(config, {it.key for it in items})
    todo = [it for it in items if it.key not in previous]
    counters = Counters(total=len(todo), started_at=time.perf_counter())
    started = time.perf_counter()
    new_records: list[Record] = []
    async with open_run(config, counters, todo if todo else None, label="batch") as run:
        new_records = run.records
        interrupted = await drive(lambda: _feed(run, todo), stop)
    all_records: list[dict[str, Any]] = list(previous.values()) + new_records
    report = summarise(all_records, total=len(items))
    report.resumed = len(previous)
    finish_report(report, parsed, new_records, started, interrupted)
    report.completion_tokens_this_run = sum(
        int((r.get("usage") or {}).get("completion_tokens") or 0) for r in new_records if not r.get("error")
    )
    if config.keep_records:
        report.records = all_records
    return report
