"""`shoal batch run` against a real model-server: hostile lines are reported, the run completes."""

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

DEEP = 100_000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Proc]:
    proc = start_model_server(tmp_path, "batch-model")
    try:
        yield proc
    finally:
        proc.stop()


def test_hostile_lines_are_malformed_and_the_run_completes(server: Proc, tmp_path: Path) -> None:
    good = [json.dumps({"id": i, "prompt": f"p{i}", "max_tokens": 3}) for i in range(5)]
    hostile = [
        "[" * DEEP + "]" * DEEP,
        '{"id": "deep", "prompt": ' + "[" * DEEP + "]" * DEEP + "}",
        '{"id": ' + "7" * 5000 + ', "prompt": "x"}',
    ]
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join([good[0], *hostile, *good[1:]]) + "\n")
    out, report = tmp_path / "out.jsonl", tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k not in ("SHOAL_API_KEY", "OPENAI_API_KEY")}
    cmd = [sys.executable, "-m", "shoal_cli", "batch", "run", str(inp), "--endpoint", server.url]
    cmd += ["--out", str(out), "--report-json", str(report), "--no-progress", "--api-key", "k-123"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--api-key is visible" in done.stderr
    ids = sorted(json.loads(line)["id"] for line in out.read_text().splitlines())
    assert ids == [0, 1, 2, 3, 4]
    doc = json.loads(report.read_text())
    assert doc["malformed"] == 3, doc
