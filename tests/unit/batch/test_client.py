"""The batch client against a scriptable local OpenAI-compatible server (aiohttp on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from shoal_batch import BatchConfig, LoadConfig, run_batch_async, run_open_loop_async
from shoal_batch.balancer import Balance
from shoal_batch.config import ConfigError
from shoal_batch.grading import GradeMode
from shoal_batch.schedule import shape_curve

pytestmark = pytest.mark.unit

FAST = {"backoff_base_s": 0.01, "backoff_cap_s": 0.05, "seed": 1}


def write_input(path: Path, n: int, *, chat_every: int = 0, extra: list[str] | None = None) -> Path:
    lines = []
    for i in range(n):
        if chat_every and i % chat_every == 0:
            lines.append(json.dumps({"id": f"q{i}", "messages": [{"role": "user", "content": f"p{i}"}]}))
        else:
            lines.append(json.dumps({"id": f"q{i}", "prompt": f"p{i}", "max_tokens": 8}))
    lines += extra or []
    path.write_text("\n".join(lines) + "\n")
    return path


def read_output(path: Path) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), "no truncated line"
    return [json.loads(line) for line in raw.decode().splitlines()]


def check_report_matches(report: Any, records: list[dict[str, Any]]) -> None:
    """Recompute the report's numbers from the output file, independently of the client's code."""
    ok = [r for r in records if r["error"] is None]
    failed = [r for r in records if r["error"] is not None]
    assert report.ok == len(ok) and report.failed == len(failed)
    assert report.attempts == sum(r["attempts"] for r in records)
    assert report.completion_tokens == sum(r["usage"]["completion_tokens"] for r in ok)
    errors: dict[str, int] = {}
    for r in failed:
        errors[r["error"]["type"]] = errors.get(r["error"]["type"], 0) + 1
    assert report.errors == errors
    latencies = sorted(r["latency_s"] for r in ok)
    if len(latencies) >= 2:
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        assert report.latency_s.p50 == pytest.approx(cuts[49])
        assert report.latency_s.p95 == pytest.approx(cuts[94])
        assert report.latency_s.p99 == pytest.approx(cuts[98])
        assert report.latency_s.count == len(latencies)


async def test_flaky_server_every_id_exactly_once(make_server: Any, tmp_path: Path) -> None:
    server = make_server(fail_rate=0.3, retry_after="0", seed=3)
    server.script("p5", ("hang",), ("ok",))
    server.script("p6", ("drop",), ("status", 502, None))
    server.script("p7", ("status", 400, None))  # not retryable
    server.script("p8", *[("status", 503, "0")] * 30)  # more than max attempts
    inp = write_input(tmp_path / "in.jsonl", 200, chat_every=3)
    out = tmp_path / "out.jsonl"
    config = BatchConfig(
        endpoints=[server.url],
        input=inp,
        out=out,
        concurrency=32,
        timeout_s=1.0,
        max_attempts=12,
        retry_budget=float("inf"),
        **FAST,
    )
    report = await run_batch_async(config)
    records = read_output(out)
    assert sorted(r["id"] for r in records) == sorted(f"q{i}" for i in range(200))
    assert report.total == 200 and report.ok == 198 and report.failed == 2, json.dumps(
        [r for r in records if r["error"]]
    )
    by_id = {r["id"]: r for r in records}
    assert by_id["q5"]["error"] is None and by_id["q5"]["attempts"] >= 2  # hang -> timeout -> retry
    assert by_id["q6"]["error"] is None and by_id["q6"]["attempts"] >= 3  # dropped, 502, then ok
    assert by_id["q7"]["error"]["type"] == "http_400" and by_id["q7"]["attempts"] == 1
    assert by_id["q8"]["error"]["type"] == "http_503" and by_id["q8"]["attempts"] == 12, json.dumps(
        by_id["q8"]
    )
    assert by_id["q3"]["text"] == "echo: p3"  # chat line
    check_report_matches(report, records)
    # the same X-Request-ID on every attempt of a request, distinct between requests
    ids_by_key: dict[str, set[str]] = {}
    for hit in server.hits:
        ids_by_key.setdefault(hit.key, set()).add(hit.request_id)
    assert all(len(v) == 1 for v in ids_by_key.values())
    assert len({next(iter(v)) for v in ids_by_key.values()}) == 200


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_retry_after_is_respected(fake_server: Any, tmp_path: Path, form: str) -> None:
    if form == "seconds":
        value = "1"
        fake_server.script("p0", ("status", 429, value))
        minimum = 1.0
    else:
        value = formatdate(time.time() + 2, usegmt=True)  # whole seconds: at least 1 s from now
        fake_server.script("p0", ("status", 503, value))
        minimum = 1.0
    inp = write_input(tmp_path / "in.jsonl", 1)
    config = BatchConfig(
        endpoints=[fake_server.url], input=inp, out=tmp_path / "o.jsonl", backoff_base_s=5.0, **{"seed": 2}
    )
    report = await run_batch_async(config)
    hits = fake_server.hits_for("p0")
    assert report.ok == 1 and len(hits) == 2
    gap = hits[1].at - hits[0].at
    assert gap >= minimum
    assert gap < minimum + 0.1 * 5.0 + 1.5  # jitter on top of Retry-After is bounded (10 % of the ceiling)


async def test_retry_after_beyond_limit_fails_fast(fake_server: Any, tmp_path: Path) -> None:
    fake_server.script("p0", ("status", 429, "3600"))
    config = BatchConfig(
        endpoints=[fake_server.url], input=write_input(tmp_path / "in.jsonl", 1), max_retry_after_s=60
    )
    report = await run_batch_async(config)
    assert report.failed == 1 and report.errors == {"http_429": 1}


async def test_retry_budget_limits_retries(make_server: Any, tmp_path: Path) -> None:
    server = make_server(fail_rate=1.0, retry_after="0")
    config = BatchConfig(
        endpoints=[server.url],
        input=write_input(tmp_path / "in.jsonl", 20),
        concurrency=4,
        max_attempts=10,
        retry_budget=0.5,
        retry_budget_min=5,
        keep_records=True,
        **FAST,
    )
    report = await run_batch_async(config)
    assert report.failed == 20
    assert report.retries <= 5 + 0.5 * 20
    assert len(server.hits) == report.attempts
    assert any("retry budget exhausted" in r["error"]["message"] for r in report.records)


async def test_timeout_then_success(fake_server: Any, tmp_path: Path) -> None:
    fake_server.script("p0", ("slow", 3.0))
    config = BatchConfig(
        endpoints=[fake_server.url],
        input=write_input(tmp_path / "in.jsonl", 1),
        timeout_s=0.3,
        keep_records=True,
        **FAST,
    )
    started = time.monotonic()
    report = await run_batch_async(config)
    assert time.monotonic() - started < 2.5
    assert report.ok == 1 and report.records[0]["attempts"] == 2


@pytest.mark.parametrize("chat_every", [0, 1])
async def test_streaming_measures_ttft(make_server: Any, tmp_path: Path, chat_every: int) -> None:
    server = make_server(
        stream_chunk_delay_s=0.02, answers={f"p{i}": "one two three four five" for i in range(4)}
    )
    config = BatchConfig(
        endpoints=[server.url],
        input=write_input(tmp_path / "in.jsonl", 4, chat_every=chat_every),
        stream=True,
        keep_records=True,
    )
    report = await run_batch_async(config)
    assert report.ok == 4 and report.ttft_s is not None and report.ttft_s.count == 4
    for record in report.records:
        assert record["text"] == "one two three four five"
        assert record["usage"]["completion_tokens"] == 5
        assert 0.015 < record["ttft_s"] < record["latency_s"]  # the first chunk comes after one delay
        assert record["latency_s"] >= 0.095  # five chunk delays (+ the final chunk) in all
    assert all(h.body["stream"] is True for h in server.hits)


@pytest.mark.parametrize("balance", list(Balance))
async def test_several_endpoints(make_server: Any, tmp_path: Path, balance: Balance) -> None:
    a, b = make_server(), make_server(latency_s=0.02)
    config = BatchConfig(
        endpoints=[a.url, b.url + "/v1"],
        input=write_input(tmp_path / "in.jsonl", 60),
        concurrency=8,
        balance=balance,
        keep_records=True,
    )
    report = await run_batch_async(config)
    assert report.ok == 60
    if balance is Balance.ROUND_ROBIN:
        assert len(a.hits) == len(b.hits) == 30
    else:  # the slower endpoint holds requests longer, so it gets fewer
        assert len(a.hits) > len(b.hits) > 0


async def test_retry_moves_to_another_endpoint(make_server: Any, tmp_path: Path) -> None:
    a, b = make_server(), make_server()
    a.script("p0", ("status", 503, "0"))
    b.script("p0", ("status", 503, "0"))
    config = BatchConfig(
        endpoints=[a.url, b.url], input=write_input(tmp_path / "in.jsonl", 1), keep_records=True, **FAST
    )
    report = await run_batch_async(config)
    assert report.ok == 1 and report.records[0]["attempts"] == 3
    assert len(a.hits) + len(b.hits) == 3 and a.hits and b.hits


async def test_resume_skips_done_and_repairs_truncated_line(fake_server: Any, tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in.jsonl", 10)
    out = tmp_path / "out.jsonl"
    done = [
        {
            "id": f"q{i}",
            "text": "old",
            "usage": {"completion_tokens": 1},
            "latency_s": 0.1,
            "attempts": 1,
            "error": None,
        }
        for i in range(4)
    ]
    failed = {
        "id": "q4",
        "text": None,
        "usage": None,
        "latency_s": None,
        "attempts": 5,
        "error": {"type": "http_503"},
    }
    out.write_text("".join(json.dumps(r) + "\n" for r in [*done, failed]) + '{"id": "q5", "text": "trunc')
    report = await run_batch_async(BatchConfig(endpoints=[fake_server.url], input=inp, out=out))
    records = read_output(out)
    assert sorted(r["id"] for r in records) == sorted(f"q{i}" for i in range(10))
    assert {h.key for h in fake_server.hits} == {f"p{i}" for i in range(5, 10)}
    assert report.resumed == 5 and report.completed_this_run == 5 and report.failed == 1
    check_report_matches(report, records)
    # --retry-failed: the failed id runs again; the file still has each id once
    report = await run_batch_async(
        BatchConfig(endpoints=[fake_server.url], input=inp, out=out, retry_failed=True)
    )
    records = read_output(out)
    assert sorted(r["id"] for r in records) == sorted(f"q{i}" for i in range(10))
    assert report.failed == 0 and report.completed_this_run == 1
    assert {r["id"]: r for r in records}["q4"]["text"] == "echo: p4"


async def test_stop_keeps_whole_lines_and_resume_finishes(make_server: Any, tmp_path: Path) -> None:
    server = make_server(latency_s=0.05)
    inp = write_input(tmp_path / "in.jsonl", 200)
    out = tmp_path / "out.jsonl"
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_batch_async(BatchConfig(endpoints=[server.url], input=inp, out=out, concurrency=8), stop=stop)
    )
    deadline = time.monotonic() + 10
    while not (out.exists() and len(out.read_bytes().splitlines()) >= 20):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    stop.set()
    report = await asyncio.wait_for(task, 10)
    assert report.interrupted and 20 <= report.ok < 200
    first = read_output(out)
    assert len(first) == report.ok and report.pending == 200 - report.ok
    report = await run_batch_async(BatchConfig(endpoints=[server.url], input=inp, out=out, concurrency=16))
    records = read_output(out)
    assert sorted(r["id"] for r in records) == sorted(f"q{i}" for i in range(200))
    assert report.resumed == len(first) and report.ok == 200


async def test_grading_accuracy(make_server: Any, tmp_path: Path) -> None:
    server = make_server(
        answers={"p0": "So the answer is 42.", "p1": "It is 41", "p2": "```python\nprint(1)\n```"}
    )
    lines = [
        json.dumps({"id": 0, "prompt": "p0", "expected": 42}),
        json.dumps({"id": 1, "prompt": "p1", "expected": "42"}),
        json.dumps({"id": 2, "prompt": "p2", "expected": "1"}),
        json.dumps({"id": 3, "prompt": "p3"}),  # nothing expected: not graded
    ]
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(lines) + "\n")
    report = await run_batch_async(
        BatchConfig(endpoints=[server.url], input=inp, grade=GradeMode.NUMBER, keep_records=True)
    )
    assert (report.graded, report.correct) == (3, 2)
    assert report.accuracy == pytest.approx(2 / 3)
    by_id = {r["id"]: r for r in report.records}
    assert by_id[0]["extracted"] == 42.0 and by_id[0]["correct"] is True
    assert "correct" not in by_id[3]


async def test_malformed_lines_skipped_and_reported(fake_server: Any, tmp_path: Path) -> None:
    inp = write_input(
        tmp_path / "in.jsonl", 3, extra=["{broken", '{"id": "q0", "prompt": "dup"}', '{"id": "x"}']
    )
    report = await run_batch_async(BatchConfig(endpoints=[fake_server.url], input=inp))
    assert report.ok == 3 and report.malformed == 3
    assert [n for n, _ in report.malformed_lines] == [4, 5, 6]


async def test_api_key_model_and_params_sent(fake_server: Any, tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in.jsonl", 2)
    await run_batch_async(
        BatchConfig(endpoints=[fake_server.url], input=inp, api_key="sekrit", params={"temperature": 0})
    )
    for hit in fake_server.hits:
        assert hit.authorization == "Bearer sekrit"
        assert hit.body["model"] == "fake-model"  # discovered from /v1/models
        assert hit.body["temperature"] == 0 and hit.body["max_tokens"] == 8


async def test_model_discovery_failure_is_a_config_error(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in.jsonl", 1)
    with pytest.raises(ConfigError):
        await run_batch_async(BatchConfig(endpoints=["http://127.0.0.1:9"], input=inp, timeout_s=2))


async def test_open_loop_sends_on_schedule_regardless_of_latency(make_server: Any, tmp_path: Path) -> None:
    server = make_server(latency_s=0.5)
    config = LoadConfig(
        endpoints=[server.url],
        curve=shape_curve("constant:rps=40,duration=1"),
        out=tmp_path / "l.jsonl",
        keep_records=True,
        model="m",
    )
    started = time.monotonic()
    report = await run_open_loop_async(config)
    elapsed = time.monotonic() - started
    assert report.ok == 40 and report.dropped == 0
    assert elapsed < 1.0 + 0.5 + 1.0  # closed-loop with one slot would take 20 s
    sent = sorted(h.at for h in server.hits)
    assert sent[-1] - sent[0] == pytest.approx(0.975, abs=0.25)
    assert report.schedule_lag_p99_s is not None and report.schedule_lag_p99_s < 0.3
    assert sorted(r["id"] for r in read_output(tmp_path / "l.jsonl")) == list(range(40))


async def test_open_loop_drops_beyond_inflight_cap(make_server: Any) -> None:
    server = make_server(latency_s=1.0)
    config = LoadConfig(
        endpoints=[server.url],
        curve=shape_curve("constant:rps=50,duration=0.4"),
        max_inflight=5,
        model="m",
        prompt="hello",
    )
    report = await run_open_loop_async(config)
    assert report.ok == 5 and report.dropped == 15
    assert {h.key for h in server.hits} == {"hello"}


async def test_unexpected_failure_is_raised_not_hidden(
    fake_server: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    from shoal_batch.output import ResultWriter

    real_write = ResultWriter.write

    def failing_write(self: ResultWriter, record: dict[str, Any]) -> None:
        if self.written >= 5:
            raise OSError(28, "No space left on device")
        real_write(self, record)

    monkeypatch.setattr(ResultWriter, "write", failing_write)
    config = BatchConfig(
        endpoints=[fake_server.url], input=write_input(tmp_path / "in.jsonl", 50), out=tmp_path / "o.jsonl"
    )
    with pytest.raises(OSError, match="No space"):
        await run_batch_async(config)
    assert len(read_output(tmp_path / "o.jsonl")) == 5


def test_cli_module_is_cheap_to_import() -> None:
    import subprocess
    import sys

    code = "import sys, shoal_batch.cli; print(sorted(m for m in ('aiohttp', 'rich', 'shoal_batch.runner') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
