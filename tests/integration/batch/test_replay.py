"""`shoal batch load --replay` against a real sim model-server process: each traced request is sent at its
own (windowed, sped-up) instant with its own prompt and output length, streamed so TTFT is measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.fuzz.procs import Proc, start_model_server

pytestmark = pytest.mark.integration

PREFILL_TOKENS_PER_S = 20_000  # slow enough that a long prompt's prefill shows in its TTFT

# Azure's LLM inference trace columns, with its date-time format: one request every 0.5 s for 8 s.
TRACE = [(f"2023-11-16 18:15:{10 + i * 0.5:010.7f}", 50 + 400 * (i % 4), 3 + i % 5) for i in range(17)]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Proc]:
    extra = ["--sim-prefill-tokens-per-s", str(PREFILL_TOKENS_PER_S), "--sim-decode-tokens-per-s", "2000"]
    proc = start_model_server(tmp_path, "replay-model", ["--engine", "sim", *extra])
    try:
        yield proc
    finally:
        proc.stop()


def _load(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SHOAL_API_KEY", "OPENAI_API_KEY")}
    cmd = [sys.executable, "-m", "shoal_cli", "batch", "load", "--no-progress", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def test_replay_sends_each_request_at_its_time_with_its_lengths(server: Proc, tmp_path: Path) -> None:
    trace = tmp_path / "azure.csv"
    trace.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{t},{p},{o}\n" for t, p, o in TRACE)
    )
    out, report = tmp_path / "out.jsonl", tmp_path / "report.json"
    # Window 2..7 s of the trace (rows at 2.0, 2.5, ..., 6.5: lines 6..15), twice as fast, at most 9 sent.
    args = ["--replay", str(trace), "--window", "2:7", "--speedup", "2", "--max-requests", "9"]
    done = _load([*args, "--endpoint", server.url, "--out", str(out), "--report-json", str(report)])
    assert done.returncode == 0, done.stdout + done.stderr
    records = sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda r: r["id"])
    assert [r["id"] for r in records] == list(range(9))  # the send sequence
    assert [r["source_id"] for r in records] == list(range(6, 15))  # the trace's line
    for record in records:
        _, prompt_tokens, output_tokens = TRACE[record["source_id"] - 2]
        assert record["error"] is None, record
        assert record["usage"]["prompt_tokens"] == prompt_tokens
        assert record["usage"]["completion_tokens"] == output_tokens
        assert record["finish_reason"] == "length"
        assert record["t_s"] == pytest.approx(record["id"] * 0.25)
        assert 0 <= record["sent_s"] - record["t_s"] < 0.5  # sent on time (the machine is shared)
        # streamed, and the prefill of the traced prompt length is in it
        assert record["ttft_s"] >= 0.9 * prompt_tokens / PREFILL_TOKENS_PER_S
    doc = json.loads(report.read_text())
    assert (doc["total"], doc["ok"], doc["failed"], doc["dropped"]) == (9, 9, 0, 0), doc
    assert doc["ttft_s"] is not None


def test_a_bad_trace_is_rejected_with_its_line_and_column(server: Proc, tmp_path: Path) -> None:
    trace = tmp_path / "bad.jsonl"
    good = json.dumps({"timestamp": 0, "prompt_tokens": 5, "output_tokens": 2})
    trace.write_text(
        good + "\n" + json.dumps({"timestamp": 1, "prompt_tokens": "many", "output_tokens": 2}) + "\n"
    )
    done = _load(["--replay", str(trace), "--endpoint", server.url])
    assert done.returncode == 2, done.stdout + done.stderr
    assert "bad.jsonl line 2, column 'prompt_tokens': not a whole number: 'many'" in done.stderr
    assert "Traceback" not in done.stderr
