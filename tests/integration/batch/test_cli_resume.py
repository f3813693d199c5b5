"""`shoal batch` as a process: SIGKILL mid-run and resume, Ctrl-C, the report file, bad input, open loop."""

from __future__ import annotations

import importlib.util
import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

_FAKE = Path(__file__).parents[2] / "unit" / "batch" / "fake_openai.py"


def _fake_class() -> Any:
    name = "shoal_batch_tests_fake_openai"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _FAKE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name].FakeOpenAI


@pytest.fixture
def server() -> Iterator[Any]:
    srv = _fake_class()(latency_s=0.03, fail_rate=0.05, retry_after="0", seed=7).start()
    try:
        yield srv
    finally:
        srv.stop()


def shoal(*args: str) -> list[str]:
    return [sys.executable, "-m", "shoal_cli", "batch", *args]


def write_input(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": i, "prompt": f"p{i}", "expected": i}) + "\n" for i in range(n)))
    return path


def read_lines(path: Path) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n")
    return [json.loads(line) for line in raw.splitlines()]  # every line parses: none truncated


def wait_lines(path: Path, n: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_bytes().count(b"\n") >= n):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)


def test_sigkill_then_resume_every_id_exactly_once(server: Any, tmp_path: Path) -> None:
    n = 1500
    inp, out, rep = write_input(tmp_path / "in.jsonl", n), tmp_path / "out.jsonl", tmp_path / "report.json"
    cmd = shoal(
        "run",
        str(inp),
        "--endpoint",
        server.url,
        "--out",
        str(out),
        "--concurrency",
        "16",
        "--no-progress",
        "--backoff-base",
        "0.01",
        "--retry-budget",
        "inf",
        "--max-attempts",
        "20",
        "--report-json",
        str(rep),
    )
    for kills in range(2):  # kill it twice at different points
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_lines(out, 200 * (kills + 1), proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        records = read_lines(out)
        assert len(records) == len({r["id"] for r in records}) < n
    done_before = len(read_lines(out))
    result = subprocess.run(cmd, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    records = read_lines(out)
    assert sorted(r["id"] for r in records) == list(range(n))
    assert all(r["error"] is None and r["text"] == f"echo: p{r['id']}" for r in records)
    report = json.loads(rep.read_text())
    assert report["resumed"] == done_before and report["completed_this_run"] == n - done_before
    assert report["ok"] == n and report["failed"] == 0 and report["pending"] == 0
    assert report["attempts"] == sum(r["attempts"] for r in records)
    latencies = sorted(r["latency_s"] for r in records)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    assert report["latency_s"]["p50"] == pytest.approx(cuts[49])
    assert report["latency_s"]["p99"] == pytest.approx(cuts[98])
    assert "items 1500: ok 1500" in result.stdout.decode()


def test_sigint_stops_cleanly(server: Any, tmp_path: Path) -> None:
    inp, out = write_input(tmp_path / "in.jsonl", 3000), tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        shoal(
            "run",
            str(inp),
            "--endpoint",
            server.url,
            "--out",
            str(out),
            "--concurrency",
            "8",
            "--no-progress",
            "--backoff-base",
            "0.01",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_lines(out, 50, proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, stderr.decode()
    records = read_lines(out)
    assert 50 <= len(records) < 3000 and "[interrupted]" in stdout.decode()
    assert f"ok {len(records) - sum(1 for r in records if r['error'])}," in stdout.decode()


def test_malformed_lines_skip_or_fail_fast(server: Any, tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": 1, "prompt": "a"}\n{oops\n{"id": 2, "prompt": "b"}\n')
    out = tmp_path / "out.jsonl"
    ok = subprocess.run(
        shoal("run", str(inp), "--endpoint", server.url, "--out", str(out), "--no-progress"),
        capture_output=True,
        timeout=60,
    )
    assert ok.returncode in (0, 1)  # 1 only if an injected failure used up every attempt
    assert "malformed line 2: invalid JSON" in ok.stdout.decode()
    assert sorted(r["id"] for r in read_lines(out)) == [1, 2]
    bad = subprocess.run(
        shoal(
            "run",
            str(inp),
            "--endpoint",
            server.url,
            "--out",
            str(tmp_path / "o2.jsonl"),
            "--fail-fast",
            "--no-progress",
        ),
        capture_output=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "line 2" in bad.stderr.decode()
    assert not (tmp_path / "o2.jsonl").exists() or not read_lines(tmp_path / "o2.jsonl")


def test_load_command(server: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("t,rps\n0,20\n1,20\n1,40\n2,40\n")
    rep = tmp_path / "r.json"
    result = subprocess.run(
        shoal(
            "load",
            "--trace",
            str(trace),
            "--endpoint",
            server.url,
            "--no-progress",
            "--max-attempts",
            "5",
            "--backoff-base",
            "0.01",
            "--report-json",
            str(rep),
        ),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(rep.read_text())
    assert report["ok"] == 60 and report["dropped"] == 0
    bad = subprocess.run(
        shoal("load", "--trace", "wobble:rps=1", "--endpoint", server.url), capture_output=True, timeout=60
    )
    assert bad.returncode == 2
