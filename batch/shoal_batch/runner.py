"""Running a batch (closed loop, bounded concurrency) or an open-loop load (a send schedule)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from shoal_batch.balancer import Balancer, Endpoint
from shoal_batch.client import Outcome, attempt, discover_model, path_for, request_body
from shoal_batch.config import BatchConfig, ConfigError, LoadConfig
from shoal_batch.grading import grade
from shoal_batch.inputs import Item, ParsedInput, read_input
from shoal_batch.output import ExistingOutput, ResultWriter, is_done, load_existing, rewrite
from shoal_batch.progress import Counters, Progress
from shoal_batch.report import Report, summarise
from shoal_batch.retry import RetryBudget, backoff_delay
from shoal_batch.schedule import arrival_times

log = logging.getLogger("shoal.batch")
T = TypeVar("T")


@dataclass(slots=True)
class _Run:
    """State shared by the requests of one run."""

    config: BatchConfig
    session: aiohttp.ClientSession
    balancer: Balancer
    budget: RetryBudget
    model: str | None
    headers: dict[str, str]
    counters: Counters
    rng: random.Random
    writer: ResultWriter | None
    on_record: Callable[[dict[str, Any]], None]


def _headers(config: BatchConfig) -> dict[str, str]:
    headers = {"Content-Type": "application/json", **config.headers}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    return headers


def _record(
    item_id: Any, outcome: Outcome, attempts: int, endpoint: Endpoint, request_id: str, elapsed: float
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": item_id,
        "text": outcome.text,
        "finish_reason": outcome.finish_reason,
        "usage": outcome.usage,
        "latency_s": round(outcome.latency_s, 6) if outcome.ok else None,
        "ttft_s": round(outcome.ttft_s, 6) if outcome.ttft_s is not None else None,
        "elapsed_s": round(elapsed, 6),
        "attempts": attempts,
        "endpoint": endpoint.base_url,
        "request_id": request_id,
        "error": None,
    }
    if not outcome.ok:
        record["error"] = {"type": outcome.error_type, "status": outcome.status, "message": outcome.message}
    return record


async def _send(
    run: _Run, item: Item, *, record_id: Any = None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """All attempts of one item; returns (and writes) its output record."""
    config = run.config
    body = json.dumps(request_body(item, run.model, config.params, config.stream)).encode()
    path = path_for(item)
    request_id = uuid.uuid4().hex
    headers = {**run.headers, "X-Request-ID": request_id}
    run.budget.record_attempt()
    started = time.perf_counter()
    endpoint: Endpoint | None = None
    attempts = 0
    while True:
        endpoint = run.balancer.pick(avoid=endpoint)
        attempts += 1
        run.balancer.acquire(endpoint)
        outcome: Outcome | None = None
        try:
            outcome = await attempt(
                run.session,
                endpoint.base_url + path,
                body,
                headers,
                chat=item.is_chat,
                stream=config.stream,
                timeout_s=config.timeout_s,
            )
        finally:
            run.balancer.release(endpoint, failed=outcome is None or not outcome.ok)
        if outcome.ok or not outcome.retryable:
            break
        if attempts >= config.max_attempts:
            outcome.message = f"{outcome.message} (gave up after {attempts} attempts)"
            break
        if outcome.retry_after_s is not None and outcome.retry_after_s > config.max_retry_after_s:
            outcome.message = f"{outcome.message} (Retry-After {outcome.retry_after_s:g} s exceeds the limit)"
            break
        if not run.budget.try_spend():
            outcome.message = f"{outcome.message} (retry budget exhausted)"
            break
        run.counters.retries += 1
        delay = backoff_delay(
            attempts,
            base=config.backoff_base_s,
            cap=config.backoff_cap_s,
            retry_after=outcome.retry_after_s,
            rng=run.rng,
        )
        await asyncio.sleep(delay)
    record = _record(
        item.id if record_id is None else record_id,
        outcome,
        attempts,
        endpoint,
        request_id,
        time.perf_counter() - started,
    )
    if extra:
        record.update(extra)
    if config.grade is not None and outcome.ok and item.expected is not None:
        correct, extracted = grade(config.grade, outcome.text or "", item.expected)
        record["correct"] = correct
        record["extracted"] = extracted
    if outcome.ok:
        run.counters.done += 1
    else:
        run.counters.failed += 1
    if run.writer is not None:
        run.writer.write(record)
    run.on_record(record)
    return record


async def _resolve_model(
    config: BatchConfig,
    session: aiohttp.ClientSession,
    balancer: Balancer,
    headers: dict[str, str],
    items: list[Item],
) -> str | None:
    if config.model is not None:
        return config.model
    if "model" in config.params or (items and all("model" in it.params for it in items)):
        return None
    try:
        return await discover_model(
            session, balancer.endpoints[0].base_url, headers, min(config.timeout_s, 30.0)
        )
    except (aiohttp.ClientError, OSError, TimeoutError, LookupError, ValueError, KeyError) as exc:
        raise ConfigError(f"could not discover the model ({exc!r}); pass --model") from exc


def _session(config: BatchConfig) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))


async def _drive(feed: Callable[[], Any], stop: asyncio.Event | None) -> bool:
    """Run ``feed()`` until done or ``stop`` is set; returns True when interrupted."""
    feed_task = asyncio.ensure_future(feed())
    if stop is None:
        await feed_task
        return False
    stop_task = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({feed_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_task.cancel()
    if feed_task.done():
        feed_task.result()
        return False
    feed_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await feed_task
    return True


async def _feed_closed(run: _Run, todo: list[Item]) -> None:
    sem = asyncio.Semaphore(run.config.concurrency)
    tasks: set[asyncio.Task[dict[str, Any]]] = set()
    counters = run.counters

    crashed: list[BaseException] = []

    def finished(task: asyncio.Task[dict[str, Any]]) -> None:
        tasks.discard(task)
        counters.inflight -= 1
        sem.release()
        if not task.cancelled() and task.exception() is not None:
            crashed.append(task.exception())  # type: ignore[arg-type]

    try:
        for item in todo:
            await sem.acquire()
            if crashed:
                sem.release()
                break
            counters.inflight += 1
            task = asyncio.create_task(_send(run, item))
            tasks.add(task)
            task.add_done_callback(finished)
        while tasks:
            await asyncio.wait(set(tasks))
    finally:
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
    if crashed:  # an unexpected failure (a bug, a full disk): never hide it behind a short output file
        raise crashed[0]


def _load_items(config: BatchConfig) -> ParsedInput:
    if config.items is not None:
        return ParsedInput(list(config.items), [])
    assert config.input is not None
    return read_input(config.input, fail_fast=config.fail_fast)


async def run_batch_async(config: BatchConfig, *, stop: asyncio.Event | None = None) -> Report:
    """Send every input item not yet done in ``config.out``; returns the report over all input ids.

    Setting ``stop`` ends the run early: no new request starts, requests in flight are abandoned (they are
    not written, so a later run with the same output file sends them again).
    """
    config.validate()
    parsed = _load_items(config)
    items = parsed.items
    existing = ExistingOutput()
    if config.out is not None:
        existing = load_existing(config.out)
        if existing.repaired_bytes:
            log.warning("cut a truncated last line (%d bytes) from %s", existing.repaired_bytes, config.out)
    wanted = {it.key for it in items}
    retry = [k for k, r in existing.records.items() if k in wanted and not is_done(r)]
    if config.out is not None and config.retry_failed and retry:
        kept = {k: r for k, r in existing.records.items() if is_done(r) or k not in wanted}
        rewrite(config.out, kept.values())
        existing.records = kept
    previous = {k: r for k, r in existing.records.items() if k in wanted}
    todo = [it for it in items if it.key not in previous]

    counters = Counters(total=len(todo), started_at=time.perf_counter())
    new_records: list[dict[str, Any]] = []
    started = time.perf_counter()
    interrupted = False
    headers = _headers(config)
    balancer = Balancer(config.endpoints, config.balance)
    writer = ResultWriter(config.out, fsync=config.fsync) if config.out is not None else None
    progress = Progress(counters, enabled=config.progress)
    try:
        async with _session(config) as session:
            model = await _resolve_model(config, session, balancer, headers, todo) if todo else config.model
            run = _Run(
                config=config,
                session=session,
                balancer=balancer,
                budget=RetryBudget(ratio=config.retry_budget, minimum=config.retry_budget_min),
                model=model,
                headers=headers,
                counters=counters,
                rng=random.Random(config.seed),
                writer=writer,
                on_record=new_records.append,
            )
            progress.start()
            try:
                interrupted = await _drive(lambda: _feed_closed(run, todo), stop)
            finally:
                await progress.stop()
    finally:
        if writer is not None:
            writer.close()
    wall = time.perf_counter() - started
    all_records = list(previous.values()) + new_records
    report = summarise(all_records, total=len(items))
    report.resumed = len(previous)
    report.malformed = len(parsed.malformed)
    report.malformed_lines = [(m.line, m.reason) for m in parsed.malformed]
    report.completed_this_run = len(new_records)
    report.completion_tokens_this_run = sum(
        int((r.get("usage") or {}).get("completion_tokens") or 0) for r in new_records if not r.get("error")
    )
    report.wall_s = wall
    report.interrupted = interrupted
    if config.keep_records:
        report.records = all_records
    return report


async def run_open_loop_async(config: LoadConfig, *, stop: asyncio.Event | None = None) -> Report:
    """Send requests at the schedule of ``config.curve`` regardless of how fast responses come back.

    Items cycle through the input (or a single synthetic prompt); each send gets a sequence id and records
    its scheduled offset ``t_s`` and the actual ``sent_s``. Bounded by ``max_requests`` and ``max_duration_s``;
    after the last send, requests in flight get ``drain_timeout_s`` to finish.
    """
    config.validate()
    assert config.curve is not None
    parsed = _load_items(config)
    sources = parsed.items or [Item(id="synthetic", key="synthetic", line=0, prompt=config.prompt)]
    times = arrival_times(
        config.curve,
        arrivals=config.arrivals,
        seed=config.schedule_seed,
        max_requests=config.max_requests,
        max_duration=config.max_duration_s,
    )
    counters = Counters(total=len(times), started_at=time.perf_counter())
    new_records: list[dict[str, Any]] = []
    headers = _headers(config)
    balancer = Balancer(config.endpoints, config.balance)
    writer = ResultWriter(config.out, fsync=config.fsync) if config.out is not None else None
    progress = Progress(counters, enabled=config.progress, label="load")
    dropped = 0
    lags: list[float] = []
    interrupted = False
    started = time.perf_counter()
    try:
        async with _session(config) as session:
            model = await _resolve_model(config, session, balancer, headers, sources)
            run = _Run(
                config=config,
                session=session,
                balancer=balancer,
                budget=RetryBudget(ratio=config.retry_budget, minimum=config.retry_budget_min),
                model=model,
                headers=headers,
                counters=counters,
                rng=random.Random(config.seed),
                writer=writer,
                on_record=new_records.append,
            )

            async def feed() -> None:
                nonlocal dropped
                loop = asyncio.get_running_loop()
                tasks: set[asyncio.Task[dict[str, Any]]] = set()

                crashed: list[BaseException] = []

                def finished(task: asyncio.Task[dict[str, Any]]) -> None:
                    tasks.discard(task)
                    counters.inflight -= 1
                    if not task.cancelled() and task.exception() is not None:
                        crashed.append(task.exception())  # type: ignore[arg-type]

                t0 = loop.time()
                try:
                    for seq, offset in enumerate(times):
                        delay = t0 + offset - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        lag = loop.time() - (t0 + offset)
                        lags.append(lag)
                        if crashed:
                            break
                        if counters.inflight >= config.max_inflight:
                            dropped += 1
                            continue
                        item = sources[seq % len(sources)]
                        counters.inflight += 1
                        extra = {
                            "source_id": item.id,
                            "t_s": round(offset, 6),
                            "sent_s": round(offset + lag, 6),
                        }
                        task = asyncio.create_task(_send(run, item, record_id=seq, extra=extra))
                        tasks.add(task)
                        task.add_done_callback(finished)
                    if tasks:
                        await asyncio.wait(set(tasks), timeout=config.drain_timeout_s)
                finally:
                    for task in list(tasks):
                        task.cancel()
                    if tasks:
                        await asyncio.gather(*tasks, return_exceptions=True)
                if crashed:
                    raise crashed[0]

            progress.start()
            try:
                interrupted = await _drive(feed, stop)
            finally:
                await progress.stop()
    finally:
        if writer is not None:
            writer.close()
    report = summarise(new_records, total=len(times))
    report.dropped = dropped
    report.pending = max(0, len(times) - len(new_records) - dropped)
    report.malformed = len(parsed.malformed)
    report.malformed_lines = [(m.line, m.reason) for m in parsed.malformed]
    report.completed_this_run = len(new_records)
    report.completion_tokens_this_run = report.completion_tokens
    report.wall_s = time.perf_counter() - started
    report.interrupted = interrupted
    if lags:
        lags.sort()
        report.schedule_lag_p99_s = lags[min(len(lags) - 1, int(0.99 * len(lags)))]
    if config.keep_records:
        report.records = new_records
    return report


def run_coroutine(coro: Coroutine[Any, Any, T], *, use_uvloop: bool = True) -> T:
    """``asyncio.run`` on uvloop when it is installed, else on the default loop."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(coro)
    return asyncio.run(coro)


def run_batch(config: BatchConfig, *, use_uvloop: bool = True) -> Report:
    """Synchronous wrapper of ``run_batch_async`` (for scripts and tests outside an event loop)."""
    return run_coroutine(run_batch_async(config), use_uvloop=use_uvloop)


def run_open_loop(config: LoadConfig, *, use_uvloop: bool = True) -> Report:
    return run_coroutine(run_open_loop_async(config), use_uvloop=use_uvloop)
