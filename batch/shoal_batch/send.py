"""One item of a run: every attempt (retries, backoff, another endpoint), then its output record."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from shoal_batch.balancer import Endpoint
from shoal_batch.client import Outcome, attempt, path_for, request_body
from shoal_batch.grading import grade
from shoal_batch.inputs import Item
from shoal_batch.retry import backoff_delay
from shoal_batch.run_state import Record, RunState


def make_record(
    item_id: Any, outcome: Outcome, attempts: int, endpoint: Endpoint, request_id: str, elapsed: float
) -> Record:
    record: Record = {
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


def _give_up_reason(run: RunState, outcome: Outcome, attempts: int) -> str | None:
    """Why not to retry this failed attempt (None: retry)."""
    config = run.config
    if attempts >= config.max_attempts:
        return f"gave up after {attempts} attempts"
    if outcome.retry_after_s is not None and outcome.retry_after_s > config.max_retry_after_s:
        return f"Retry-After {outcome.retry_after_s:g} s exceeds the limit"
    if not run.budget.try_spend():
        return "retry budget exhausted"
    return None


async def _attempts(
    run: RunState, item: Item, body: bytes, headers: dict[str, str]
) -> tuple[Outcome, int, Endpoint]:
    config = run.config
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
                endpoint.base_url + path_for(item),
                body,
                headers,
                chat=item.is_chat,
                stream=config.stream,
                timeout_s=config.timeout_s,
            )
        finally:
            run.balancer.release(endpoint, failed=outcome is None or not outcome.ok)
        if outcome.ok or not outcome.retryable:
            return outcome, attempts, endpoint
        reason = _give_up_reason(run, outcome, attempts)
        if reason is not None:
            outcome.message = f"{outcome.message} ({reason})"
            return outcome, attempts, endpoint
        run.counters.retries += 1
        delay = backoff_delay(
            attempts,
            base=config.backoff_base_s,
            cap=config.backoff_cap_s,
            retry_after=outcome.retry_after_s,
            rng=run.rng,
        )
        await asyncio.sleep(delay)


async def send_item(
    run: RunState, item: Item, *, record_id: Any = None, extra: dict[str, Any] | None = None
) -> Record:
    """All attempts of one item; returns (and writes) its output record."""
    config = run.config
    body = json.dumps(request_body(item, run.model, config.params, config.stream)).encode()
    request_id = uuid.uuid4().hex
    headers = {**run.headers, "X-Request-ID": request_id}
    run.budget.record_attempt()
    started = time.perf_counter()
    outcome, attempts, endpoint = await _attempts(run, item, body, headers)
    record = make_record(
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
    run.records.append(record)
    return record
