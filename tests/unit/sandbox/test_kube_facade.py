"""The sandbox client's facade (`shoal_sandbox.kube`): how kubernetes_asyncio's failures map to ApiError,
which resource a bare kind means, and that calls are bounded in time and the loop thread ends on close.
(Against the real API server: tests/integration/sandbox/test_sync_kube.py.)"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yaml
from kubernetes_asyncio.client import ApiException
from kubernetes_asyncio.dynamic.exceptions import ResourceNotFoundError, ResourceNotUniqueError
from shoal_sandbox.kube import ApiError, SyncKube, api_error, pick_resource


def test_api_exceptions_keep_the_servers_status_and_body() -> None:
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = '{"kind":"Status","message":"pods \\"root\\" is forbidden: violates PodSecurity"}'
    err = api_error(exc)
    assert err.status == 403 and "violates PodSecurity" in str(err) and str(err).startswith("HTTP 403: ")

    raw = ApiException(status=500, reason="Internal Server Error")
    raw.body = b"etcd is down"
    assert (api_error(raw).status, str(api_error(raw))) == (500, "HTTP 500: etcd is down")
    assert str(api_error(ApiException(status=502, reason="Bad Gateway"))) == "HTTP 502: Bad Gateway"
    long = ApiException(status=422, reason="Invalid")
    long.body = "x" * 1000
    assert len(str(api_error(long))) == len("HTTP 422: ") + 300


def test_unserved_kinds_read_as_404_and_transport_trouble_as_0() -> None:
    assert api_error(ResourceNotFoundError("no Foo")).status == 404
    assert api_error(ResourceNotUniqueError("two Foo")).status == 400
    refused = api_error(aiohttp.ClientConnectionError("connection refused"))
    assert refused.status == 0 and "connection refused" in str(refused)
    slow = api_error(TimeoutError())
    assert slow.status == 0 and "no answer in time" in str(slow)


@dataclass
class Served:
    group: str | None
    preferred: bool
    name: str


def test_a_bare_kind_means_the_only_then_the_core_then_the_preferred_resource() -> None:
    only = Served("apps", True, "deployments")
    assert pick_resource("Deployment", [only]) is only
    core, events = Served("", True, "events"), Served("events.k8s.io", True, "events")
    assert pick_resource("Event", [events, core]) is core
    v1, v2 = Served("autoscaling", False, "hpa-v1"), Served("autoscaling", True, "hpa-v2")
    assert pick_resource("HorizontalPodAutoscaler", [v1, v2]) is v2
    with pytest.raises(ResourceNotFoundError):
        pick_resource("Nothing", [])
    with pytest.raises(ResourceNotUniqueError):
        pick_resource("Widget", [Served("a.example", True, "w"), Served("b.example", True, "w")])


def _kubeconfig(tmp_path: Path, port: int) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": f"https://127.0.0.1:{port}", "insecure-skip-tls-verify": True},
            }
        ],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "shoal-sandbox-kube"]


def test_an_unreachable_server_is_an_api_error_and_close_ends_the_thread(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    before = len(_loop_threads())
    kube = SyncKube(_kubeconfig(tmp_path, port), timeout=5.0)
    assert len(_loop_threads()) == before + 1
    with pytest.raises(ApiError) as refused:
        kube.get("Pod", "default", "p")  # discovery is the first request; it is refused
    assert refused.value.status == 0
    kube.close()
    kube.close()  # twice is harmless
    assert len(_loop_threads()) == before


def test_a_silent_server_cannot_hang_a_call(tmp_path: Path) -> None:
    with socket.socket() as listener:  # accepts connections (the backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        with SyncKube(_kubeconfig(tmp_path, listener.getsockname()[1]), timeout=0.5) as kube:
            t0 = time.monotonic()
            with pytest.raises(ApiError) as silent:
                kube.list("Pod", "default")
            assert silent.value.status == 0 and time.monotonic() - t0 < 5
