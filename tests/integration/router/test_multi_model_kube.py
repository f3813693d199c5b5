"""The multi-model entry point with pools from Kubernetes (`--models-namespace`), against the sandbox's
real API server: model-server pods of two InferenceServices (bound to a node that does not exist, their
status written by the test, their IP:port real sim model-servers) become two pools; routing follows."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .procs import _start, model_servers
from .test_kubernetes_discovery import kube_api, port_of, router_kubeconfig, temp_namespace
from .test_multi_model import chat, served

pytestmark = pytest.mark.integration
__all__ = ["router_kubeconfig"]  # the fixture, re-used


async def _make_pod(core: Any, ns: str, name: str, isvc: str, port: int) -> None:
    labels = {"app.kubernetes.io/component": "model-server", "shoal.dev/inferenceservice": isvc}
    spec = {"nodeName": "no-such-node", "containers": [{"name": "s", "image": "none",
                                                         "ports": [{"name": "http", "containerPort": port}]}]}  # fmt: skip
    await core.create_namespaced_pod(
        ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}
    )
    status = {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
              "conditions": [{"type": "Ready", "status": "True"}]}  # fmt: skip
    await core.patch_namespaced_pod_status(name, ns, {"status": status})


def test_pools_from_namespace(router_kubeconfig: Path, tmp_path: Path) -> None:
    from kubernetes_asyncio import client

    fast = ("--sim-decode-tokens-per-s", "5000", "--sim-prefill-tokens-per-s", "1000000")

    async def scenario() -> None:
        async with (
            kube_api(router_kubeconfig) as api,
            temp_namespace(api) as ns,
            httpx.AsyncClient(timeout=10) as http,
        ):
            core = client.CoreV1Api(api)
            with (
                model_servers(tmp_path, 1, "--served-model-name", "chat-v1", *fast) as v1,
                model_servers(tmp_path, 1, "--served-model-name", "chat-v2", *fast) as v2,
            ):
                await _make_pod(core, ns, "chat-v1-model-a", "chat-v1", port_of(v1[0].url))
                await _make_pod(core, ns, "chat-v2-model-a", "chat-v2", port_of(v2[0].url))
                cfg = tmp_path / "splits.yaml"
                cfg.write_text("splits:\n  chat: {chat-v1: 1, chat-v2: 1}\n")
                args = ["router", "--log-level", "WARNING", "--no-access-log", "--models-config", str(cfg),
                        "--models-namespace", ns, "--kubeconfig", str(router_kubeconfig)]  # fmt: skip
                gw = _start(tmp_path, "gateway", args, "/readyz")
                try:
                    deadline = time.monotonic() + 30
                    while True:
                        cards = {c["id"]: c for c in (await http.get(gw.url + "/v1/models")).json()["data"]}
                        if {"chat-v1", "chat-v2"} <= set(cards) or time.monotonic() > deadline:
                            break
                        await asyncio.sleep(0.2)
                    assert cards["chat-v1"]["inference_service"] == "chat-v1"
                    assert cards["chat-v2"]["owned_by"] == "chat-v2"
                    for model, server in (("chat-v1", v1[0]), ("chat-v2", v2[0])):
                        for _ in range(3):
                            r = await http.post(gw.url + "/v1/chat/completions", json=chat(model))
                            assert r.status_code == 200
                        assert served(server, model) == 3
                    assert served(v1[0], "chat-v2") == 0 and served(v2[0], "chat-v1") == 0
                    missing = await http.post(gw.url + "/v1/chat/completions", json=chat("nope"))
                    assert missing.status_code == 404
                    # an InferenceService's pod deleted: its pool (and model) goes away
                    await core.delete_namespaced_pod("chat-v2-model-a", ns, grace_period_seconds=0)
                    deadline = time.monotonic() + 30
                    while "chat-v2" in {
                        c["id"] for c in (await http.get(gw.url + "/v1/models")).json()["data"]
                    }:
                        assert time.monotonic() < deadline, "chat-v2 still listed"
                        await asyncio.sleep(0.2)
                finally:
                    gw.stop()

    asyncio.run(scenario())
