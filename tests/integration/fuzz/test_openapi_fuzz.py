"""schemathesis against a real model-server process (sim engine) and a real router in front of it.

Each OpenAI operation with a request body gets at least `MIN_CASES` generated cases, positive and
negative (schemathesis' coverage and fuzzing phases); the one check is that no response is a 5xx.
The router runs PrefixHash, so its prompt parsing sees every fuzzed body too.
"""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from integration.fuzz.procs import Proc, start_model_server, start_router

pytestmark = pytest.mark.integration

MODEL = "fuzz-model"
MIN_CASES = 500
MAX_EXAMPLES = 600  # per operation and phase; with dedup and the coverage phase, >= MIN_CASES per operation
BODY_OPERATIONS = ("POST /v1/completions", "POST /v1/chat/completions")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    server = start_model_server(tmp, MODEL, ["--max-body-bytes", str(1024 * 1024)])
    try:
        router = start_router(tmp, server.url, ["--strategy", "PrefixHash", "--no-access-log"])
    except BaseException:
        server.stop()
        raise
    try:
        yield server, router
    finally:
        router.stop()
        server.stop()


def schemathesis_bin() -> str:
    found = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    assert Path(found).exists(), "schemathesis is a dev dependency: pip install -e '.[dev]'"
    return found


def run_schemathesis(schema: Path, base_url: str, tmp: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    events = tmp / "events.ndjson"
    summary = tmp / "summary.json"
    cmd = [
        schemathesis_bin(),
        "run",
        str(schema),
        "--url",
        base_url,
        "--checks",
        "not_a_server_error",
        "--mode",
        "all",
        "--phases",
        "coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "14",
        "--no-shrink",
        # One worker: with several, hypothesis' lambda-source cache races inside schemathesis (a
        # flaky "Runtime Error" in the coverage phase, not a finding about the server).
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--suppress-health-check",
        "all",
        "--report",
        "ndjson,json",
        "--report-ndjson-path",
        str(events),
        "--report-json-path",
        str(summary),
    ]
    # cwd: schemathesis keeps a .schemathesis/ cache folder in its working directory.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False, cwd=tmp)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-4000:]
    return json.loads(summary.read_text()), count_cases(events)


def count_cases(events: Path) -> dict[str, Any]:
    """Cases per operation and generation mode, from schemathesis' event stream."""
    seen: dict[str, set[str]] = collections.defaultdict(set)
    modes: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in events.read_text().splitlines():
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        label = finished["recorder"]["label"]
        for case_id, case in finished["recorder"]["cases"].items():
            if case_id in seen[label]:
                continue
            seen[label].add(case_id)
            modes[label][case["value"]["meta"]["generation"]["mode"]] += 1
    return {label: dict(counter) for label, counter in modes.items()}


def pinned_schema(url: str, tmp: Path) -> Path:
    """The served document, with `model` pinned to the one model this fleet serves (the router
    forwards any name; without the pin nearly every case would stop at a 404)."""
    doc = httpx.get(url + "/openapi.json", timeout=10).json()
    for name in ("CompletionRequest", "ChatCompletionRequest"):
        doc["components"]["schemas"][name]["properties"]["model"] = {"type": "string", "enum": [MODEL]}
    path = tmp / "openapi.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("target", ["model-server", "router"])
def test_no_5xx_under_schemathesis(fleet: tuple[Proc, Proc], target: str, tmp_path: Path) -> None:
    server, router = fleet
    proc = server if target == "model-server" else router
    started = time.monotonic()
    summary, cases = run_schemathesis(pinned_schema(proc.url, tmp_path), proc.url, tmp_path)
    elapsed = time.monotonic() - started
    print(
        f"schemathesis on the {target}: {summary['test_cases']['generated']} cases in {elapsed:.0f}s; {cases}"
    )
    check_run(summary, cases)
    # Both processes are still healthy after the run.
    assert httpx.get(server.url + "/readyz", timeout=5).status_code == 200
    assert httpx.get(router.url + "/healthz", timeout=5).status_code == 200


def check_run(summary: dict[str, Any], cases: dict[str, Any]) -> None:
    assert summary["failures"] == [] and summary["errors"] == [], summary
    assert summary["test_cases"]["with_failures"] == 0
    for op in BODY_OPERATIONS:
        by_mode = cases.get(op, {})
        assert sum(by_mode.values()) >= MIN_CASES, (op, by_mode)
        assert by_mode.get("positive", 0) > 0 and by_mode.get("negative", 0) > 0, (op, by_mode)


def test_no_5xx_through_envoy_and_the_endpoint_picker(fleet: tuple[Proc, Proc], tmp_path: Path) -> None:
    """The EPP's HTTP-visible behaviour: every fuzzed body goes through real Envoy, whose ext_proc filter
    streams it to `shoal epp` (picking, body parsing, ImmediateResponse errors) and on to the replica."""
    from integration.epp.procs import start_epp
    from support.envoy import start_envoy

    server, _router = fleet
    epp = start_epp(tmp_path, [server.hostport])
    envoy = start_envoy(tmp_path, pool=[server.hostport], mode="original_dst", epp_port=epp.port)
    try:
        started = time.monotonic()
        summary, cases = run_schemathesis(pinned_schema(server.url, tmp_path), envoy.url, tmp_path)
        print(f"schemathesis through Envoy + EPP: {summary['test_cases']['generated']} cases in "
              f"{time.monotonic() - started:.0f}s; {cases}")  # fmt: skip
        check_run(summary, cases)
        assert epp.alive() and httpx.get(f"http://127.0.0.1:{epp.metrics_port}/healthz", timeout=5).is_success
    finally:
        envoy.stop()
        epp.stop()


def test_deeply_nested_body_is_400_through_the_router(fleet: tuple[Proc, Proc]) -> None:
    _, router = fleet
    deep = b'{"model": "' + MODEL.encode() + b'", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = httpx.post(router.url + "/v1/completions", content=deep, timeout=30)
    assert r.status_code == 400, r.text
    assert "error" in r.json()


def test_openapi_documents_are_published(fleet: tuple[Proc, Proc]) -> None:
    for proc in fleet:
        doc = httpx.get(proc.url + "/openapi.json", timeout=10).json()
        assert doc["openapi"].startswith("3.1")
        assert {"/v1/completions", "/v1/chat/completions", "/v1/models"} <= set(doc["paths"])
