"""The router and model-server images, run as restricted pods: the router serves /healthz and proxies to
the model-server image's sim engine, which answers a chat completion; the CPU model-server image loads
SmolLM2 with vLLM from a mounted, read-only folder and knows the capital of France."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from shoal_common.paths import cache_dir
from shoal_common.ports import free_port
from support.eventually import eventually

from .conftest import Containers, built_image

# The image fixtures build what changed first: minutes on 2 cores (model-server-cpu: about 17).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]

CHAT = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 30}


@pytest.fixture(scope="module")
def model_server_image() -> str:
    return built_image("model-server-cpu")


@pytest.fixture(scope="module")
def router_image() -> str:
    return built_image("router")


def _wait_ready(containers: Containers, name: str, url: str, timeout: float) -> None:
    def ready() -> bool:
        assert containers.running(name), "the container exited:\n" + containers.logs(name)[-4000:]
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    eventually(ready, timeout=timeout, interval=1, desc=f"{url} answering 200")


@pytest.fixture(scope="module")
def sim_server(containers: Containers, model_server_image: str) -> Iterator[str]:
    port = free_port()
    args = ["model-server", "--engine", "sim", "--model", "sim-chat", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--sim-startup-s", "0"]
    name = containers.start(model_server_image, args)
    url = f"http://127.0.0.1:{port}"
    _wait_ready(containers, name, url + "/readyz", timeout=120)
    yield url


def test_sim_model_server_image_answers_a_chat_completion(sim_server: str) -> None:
    r = httpx.post(sim_server + "/v1/chat/completions", json={"model": "sim-chat", **CHAT}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "sim-chat"
    assert body["choices"][0]["message"]["content"]
    assert body["usage"]["completion_tokens"] > 0


def test_router_image_serves_healthz_and_routes(
    containers: Containers, router_image: str, sim_server: str
) -> None:
    port = free_port()
    args = ["router", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--discovery", "static", "--upstream", sim_server]
    name = containers.start(router_image, args, tmp=False)  # the router's pod has no writable path
    url = f"http://127.0.0.1:{port}"
    _wait_ready(containers, name, url + "/healthz", timeout=60)
    r = httpx.post(url + "/v1/chat/completions", json={"model": "sim-chat", **CHAT}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]


@pytest.mark.vllm
def test_vllm_model_server_image_loads_a_mounted_model(
    containers: Containers, model_server_image: str, tmp_path: Path
) -> None:
    cache = cache_dir()
    model = cache / "models" / "smollm2"
    if not (model / "config.json").is_file():
        pytest.fail(f"{model} is missing: run `shoal model prepare smollm2` (scripts/setup.sh does)")
    # A volume the pod's uid can read (as fsGroup makes a PVC): `shoal model prepare` leaves the weights
    # readable by their owner only, so the test mounts a readable copy instead of changing the cache.
    readable = tmp_path / "smollm2"
    shutil.copytree(model, readable)
    for path in [readable, *readable.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    port = free_port()
    args = ["model-server", "--engine", "vllm", "--model", "/mnt/models/smollm2"]
    args += ["--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port)]
    # As the operator renders it for pvc://: the model read-only at /mnt/models, HOME in /tmp, and
    # /dev/shm (the pod's dshm emptyDir) big enough for vLLM's worker queues.
    name = containers.start(model_server_image, args, volumes=[(readable, "/mnt/models/smollm2")], shm="1g")
    url = f"http://127.0.0.1:{port}"
    _wait_ready(containers, name, url + "/readyz", timeout=600)
    r = httpx.post(
        url + "/v1/chat/completions", json={"model": "smollm2", "temperature": 0, **CHAT}, timeout=120
    )
    assert r.status_code == 200, r.text
    assert "Paris" in r.json()["choices"][0]["message"]["content"]
