"""What the closed loop and the open loop share: one run state, one task tracker, one way to stop."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from shoal_batch.balancer import Balancer
from shoal_batch.client import discover_model
from shoal_batch.config import BatchConfig, ConfigError
from shoal_batch.inputs import Item, ParsedInput, read_input
from shoal_batch.output import ResultWriter
from shoal_batch.progress import Counters, Progress
from shoal_batch.report import Report
from shoal_batch.retry import RetryBudget

Record = dict[str, Any]


@dataclass(slots=True)
class RunState:
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
    records: list[Record] = field(default_factory=list)  # written by this run, in completion order


def request_headers(config: BatchConfig) -> dict[str, str]:
    headers = {"Content-Type": "application/json", **config.headers}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    return headers


def load_items(config: BatchConfig) -> ParsedInput:
    if config.items is not None:
        return ParsedInput(list(config.items), [])
    assert config.input is not None
    return read_input(config.input, fail_fast=config.fail_fast)


async def resolve_model(
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


def _session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))


@contextlib.asynccontextmanager
async def open_run(
    config: BatchConfig, counters: Counters, model_items: list[Item] | None, *, label: str
) -> AsyncIterator[RunState]:
    """Session, balancer, writer and progress for one run; the model is discovered when
    `model_items` is not None (the items decide whether they name their own model)."""
    headers = request_headers(config)
    balancer = Balancer(config.endpoints, config.balance)
    writer = ResultWriter(config.out, fsync=config.fsync) if config.out is not None else None
    progress = Progress(counters, enabled=config.progress, label=label)
    try:
        async with _session() as session:
            model = config.model
            if model_items is not None:
                model = await resolve_model(config, session, balancer, headers, model_items)
            run = RunState(
                config=config,
                session=session,
                balancer=balancer,
                budget=RetryBudget(ratio=config.retry_budget, minimum=config.retry_budget_min),
                model=model,
                headers=headers,
                counters=counters,
                rng=random.Random(config.seed),
                writer=writer,
            )
            progress.start()
            try:
                yield run
            finally:
                await progress.stop()
    finally:
        if writer is not None:
            writer.close()


class TaskTracker:
    """The requests in flight: counts them, remembers the first unexpected crash, cancels the rest."""

    def __init__(self, counters: Counters, on_done: Callable[[], None] | None = None) -> None:
        self.counters = counters
        self.on_done = on_done
        self.tasks: set[asyncio.Task[Record]] = set()
        self.crashed: list[BaseException] = []

    def spawn(self, coro: Coroutine[Any, Any, Record]) -> None:
        self.counters.inflight += 1
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Record]) -> None:
        self.tasks.discard(task)
        self.counters.inflight -= 1
        if self.on_done is not None:
            self.on_done()
        if not task.cancelled() and task.exception() is not None:
            self.crashed.append(task.exception())  # type: ignore[arg-type]

    async def wait(self, within_s: float | None = None) -> None:
        """Until every task is done, or `within_s` seconds passed (the rest is then cancelled)."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=within_s)

    async def cancel_rest(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def raise_crash(self) -> None:
        """An unexpected failure (a bug, a full disk): never hide it behind a short output file."""
        if self.crashed:
            raise self.crashed[0]


async def drive(feed: Callable[[], Coroutine[Any, Any, None]], stop: asyncio.Event | None) -> bool:
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


def finish_report(
    report: Report, parsed: ParsedInput, new_records: list[Record], started: float, interrupted: bool
) -> None:
    """The parts of the report both loops fill the same way."""
    report.malformed = len(parsed.malformed)
    report.malformed_lines = [(m.line, m.reason) for m in parsed.malformed]
    report.completed_this_run = len(new_records)
    report.wall_s = time.perf_counter() - started
    report.interrupted = interrupted
