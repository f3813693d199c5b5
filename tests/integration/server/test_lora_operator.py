"""The operator's reconcile applies `spec.adapters` live to real model-server processes (sim engine) and
writes `status.adapters`; the API is the in-memory one of the reconciler's unit tests, the replicas are
real processes, listed as the pods' IPs and `http` container ports."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from shoal_operator.reconcile import Outcome
from unit.operator.test_reconciler import FakeKube, body, make

from .conftest import ServerProc

pytestmark = pytest.mark.integration


def pod(name: str, ip: str, port: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {}},
        "spec": {
            "containers": [{"name": "model-server", "ports": [{"name": "http", "containerPort": port}]}]
        },
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def adapters_of(server: ServerProc) -> set[str]:
    cards = httpx.get(server.url + "/v1/models", timeout=5).json()["data"]
    return {c["id"] for c in cards if c["parent"]}


def test_reconcile_applies_adapters_live_and_reports_status(
    server_factory: Callable[..., ServerProc],
) -> None:
    args = ["--engine", "sim", "--model", "m", "--enable-lora", "--max-loras", "2"]
    servers = [server_factory(args) for _ in range(2)]
    kube, rec, _events = make()
    assert isinstance(kube, FakeKube)
    pods = {"items": [pod(f"chat-model-{i}", s.host, s.port) for i, s in enumerate(servers)]}
    kube.objects["/api/v1/namespaces/ns/pods"] = pods

    def reconcile(adapters: list[dict[str, str]]) -> Outcome:
        spec = {"model": {"name": "m", "uri": "hf://o/m"}, "adapters": adapters, "lora": {"maxLoras": 2}}
        return asyncio.run(rec.reconcile(body(spec)))

    out = reconcile([{"name": "sql", "uri": "file:///adapters/sql"}])
    assert out.status["adapters"] == [{"name": "sql", "readyReplicas": 2, "ready": True, "message": ""}]
    assert [adapters_of(s) for s in servers] == [{"sql"}, {"sql"}]
    dep = kube.objects["/apis/apps/v1/namespaces/ns/deployments/chat-model"]
    assert "--enable-lora" in dep["spec"]["template"]["spec"]["containers"][0]["command"]

    out = reconcile([{"name": "live", "uri": "file:///adapters/live"}])
    assert out.status["adapters"] == [{"name": "live", "readyReplicas": 2, "ready": True, "message": ""}]
    assert [adapters_of(s) for s in servers] == [{"live"}, {"live"}]
    assert all(s.proc.poll() is None for s in servers)  # the same processes: no restart

    servers[1].stop()  # a replica that does not answer: the adapter is not ready everywhere
    out = reconcile([{"name": "live", "uri": "file:///adapters/live"}])
    assert out.status["adapters"][0]["readyReplicas"] == 1 and not out.status["adapters"][0]["ready"]
