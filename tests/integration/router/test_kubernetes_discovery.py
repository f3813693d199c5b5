"""The router's Kubernetes sources against a real API server (the sandbox): EndpointSlice discovery follows
ready/terminating changes, held requests are released when an endpoint becomes ready, and API keys come
from a Secret and follow its updates."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from shoal_router.config import RouterConfig
from unit.router.fakes import LoopbackResolver, eventually, running_router, upstreams

pytestmark = pytest.mark.integration

SERVICE = "chat-model"
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="session")
def router_kubeconfig(sandbox_kubeconfig: Path) -> Path:
    """The kwok sandbox's kubeconfig (tests/conftest.py): API-level tests, no running pods needed."""
    return sandbox_kubeconfig


@asynccontextmanager
async def kube_api(kubeconfig: Path) -> AsyncIterator[Any]:
    from kubernetes_asyncio import client, config

    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    async with client.ApiClient(configuration=cfg) as api:
        yield api


@asynccontextmanager
async def temp_namespace(api: Any) -> AsyncIterator[str]:
    from kubernetes_asyncio import client

    name = f"router-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api)
    await core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    try:
        yield name
    finally:
        await core.delete_namespace(name)


def endpoint_slice(name: str, port: int, ready: bool = True, terminating: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/service-name": SERVICE,
                "endpointslice.kubernetes.io/managed-by": "shoal-tests",
            },
        },
        # The API server rejects loopback IPs in EndpointSlices ("may not be in the loopback range") and
        # these tests stay on 127.0.0.0/8: FQDN slices name hosts that LoopbackResolver maps to 127.0.0.1.
        "addressType": "FQDN",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [f"{name}.shoal.test"],
                "conditions": {"ready": ready, "serving": ready or terminating, "terminating": terminating},
                "targetRef": {"kind": "Pod", "name": name},
            }
        ],
    }


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_discovery_follows_endpoint_slices(router_kubeconfig: Path) -> None:
    from kubernetes_asyncio import client

    async with kube_api(router_kubeconfig) as api, temp_namespace(api) as ns, upstreams(2) as (a, b):
        core, disc = client.CoreV1Api(api), client.DiscoveryV1Api(api)
        await core.create_namespaced_service(
            ns,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": SERVICE},
                "spec": {"ports": [{"name": "http", "port": 8000}]},  # selectorless: we own the slices
            },
        )
        await disc.create_namespaced_endpoint_slice(ns, endpoint_slice("a", port_of(a.url)))
        await disc.create_namespaced_endpoint_slice(ns, endpoint_slice("b", port_of(b.url)))
        config = RouterConfig(
            discovery="kubernetes",
            namespace=ns,
            service=SERVICE,
            kubeconfig=str(router_kubeconfig),
            strategy="RoundRobin",
            pending_timeout_s=30,
        )
        from shoal_router.server import default_sources

        async with (
            running_router(config, sources=default_sources(config), resolver=LoopbackResolver()) as r,
            httpx.AsyncClient(base_url=r.url, timeout=30) as c,
        ):

            async def ready_endpoints() -> int:
                return int((await c.get("/readyz")).json()["ready_endpoints"])

            state: dict[str, int] = {}

            async def poll() -> None:
                state["ready"] = await ready_endpoints()

            async def wait_ready_count(n: int) -> None:
                async with asyncio.timeout(20):
                    while True:
                        await poll()
                        if state["ready"] == n:
                            return
                        await asyncio.sleep(0.05)

            await wait_ready_count(2)
            for _ in range(4):
                assert (await c.post("/v1/chat/completions", json=CHAT)).status_code == 200
            assert a.requests and b.requests

            # b starts terminating (still serving its in-flight work): it gets nothing new
            await disc.replace_namespaced_endpoint_slice(
                "b", ns, endpoint_slice("b", port_of(b.url), ready=False, terminating=True)
            )
            await wait_ready_count(1)
            before = len(b.requests)
            for _ in range(10):
                assert (await c.post("/v1/chat/completions", json=CHAT)).status_code == 200
            assert len(b.requests) == before

            # a goes unready too: requests are held, then released when a is ready again
            await disc.replace_namespaced_endpoint_slice(
                "a", ns, endpoint_slice("a", port_of(a.url), ready=False)
            )
            await wait_ready_count(0)
            held = asyncio.create_task(c.post("/v1/chat/completions", json=CHAT))
            await eventually(lambda: r.router.metrics.pending._value.get() == 1, within=10)
            served_before = len(a.requests)
            await disc.replace_namespaced_endpoint_slice("a", ns, endpoint_slice("a", port_of(a.url)))
            resp = await asyncio.wait_for(held, 20)
            assert resp.status_code == 200
            assert len(a.requests) == served_before + 1

            # b's slice goes away entirely
            await disc.delete_namespaced_endpoint_slice("b", ns)
            await eventually(
                lambda: r.router.pool.get(f"http://b.shoal.test:{port_of(b.url)}") is None, within=20
            )


async def test_api_keys_from_secret(router_kubeconfig: Path) -> None:
    from kubernetes_asyncio import client

    def secret(keys: dict[str, str]) -> dict[str, Any]:
        data = {name: base64.b64encode(k.encode()).decode() for name, k in keys.items()}
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "chat-keys"}, "data": data}

    async with kube_api(router_kubeconfig) as api, temp_namespace(api) as ns, upstreams(1) as (up,):
        core, disc = client.CoreV1Api(api), client.DiscoveryV1Api(api)
        await core.create_namespaced_secret(ns, secret({"alice": "sk-alice"}))
        await disc.create_namespaced_endpoint_slice(ns, endpoint_slice("a", port_of(up.url)))
        config = RouterConfig(
            discovery="kubernetes",
            namespace=ns,
            service=SERVICE,
            kubeconfig=str(router_kubeconfig),
            api_keys_secret="chat-keys",
        )
        from shoal_router.server import default_sources

        async with (
            running_router(config, sources=default_sources(config), resolver=LoopbackResolver()) as r,
            httpx.AsyncClient(base_url=r.url, timeout=30) as c,
        ):
            await eventually(lambda: r.router.keys_loaded and r.router.pool.has_ready(), within=20)
            assert (await c.post("/v1/chat/completions", json=CHAT)).status_code == 401
            alice = {"Authorization": "Bearer sk-alice"}
            assert (await c.post("/v1/chat/completions", json=CHAT, headers=alice)).status_code == 200
            await core.replace_namespaced_secret("chat-keys", ns, secret({"bob": "sk-bob"}))
            await eventually(lambda: r.router.keys.lookup("sk-bob") is not None, within=20)
            bob = {"Authorization": "Bearer sk-bob"}
            assert (await c.post("/v1/chat/completions", json=CHAT, headers=bob)).status_code == 200
            assert (await c.post("/v1/chat/completions", json=CHAT, headers=alice)).status_code == 401


async def test_pods_discovery(router_kubeconfig: Path) -> None:
    """`--discovery pods`: the Service's selector, pod IP + Ready condition, deletionTimestamp = terminating.
    The pods are bound to a node that does not exist, so no kubelet (or kwok) touches them and the test
    writes their status itself."""
    from kubernetes_asyncio import client

    async with kube_api(router_kubeconfig) as api, temp_namespace(api) as ns, upstreams(2) as (a, b):
        core = client.CoreV1Api(api)
        await core.create_namespaced_service(
            ns,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": SERVICE},
                "spec": {"selector": {"app": "fake"}, "ports": [{"name": "http", "port": 8000}]},
            },
        )

        async def make_pod(name: str, port: int, ready: bool) -> None:
            await core.create_namespaced_pod(
                ns,
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name, "labels": {"app": "fake"}},
                    "spec": {
                        "nodeName": "no-such-node",
                        "containers": [
                            {"name": "s", "image": "none", "ports": [{"name": "http", "containerPort": port}]}
                        ],
                    },
                },
            )
            await set_ready(name, ready)

        async def set_ready(name: str, ready: bool) -> None:
            status = {
                "phase": "Running",
                "podIP": "127.0.0.1",
                "podIPs": [{"ip": "127.0.0.1"}],
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            }
            await core.patch_namespaced_pod_status(name, ns, {"status": status})

        await make_pod("pa", port_of(a.url), ready=True)
        await make_pod("pb", port_of(b.url), ready=False)
        config = RouterConfig(
            discovery="pods",
            namespace=ns,
            service=SERVICE,
            kubeconfig=str(router_kubeconfig),
            strategy="RoundRobin",
        )
        from shoal_router.server import default_sources

        async with (
            running_router(config, sources=default_sources(config)) as r,
            httpx.AsyncClient(base_url=r.url, timeout=30) as c,
        ):
            await eventually(lambda: len(r.router.pool.eligible()) == 1, within=20)
            await set_ready("pb", True)
            await eventually(lambda: len(r.router.pool.eligible()) == 2, within=20)
            for _ in range(4):
                assert (await c.post("/v1/chat/completions", json=CHAT)).status_code == 200
            assert a.requests and b.requests
            # deleting pb: it stays (no kubelet confirms) with a deletionTimestamp, i.e. terminating
            await core.delete_namespaced_pod("pb", ns, grace_period_seconds=30)
            await eventually(lambda: [e.id for e in r.router.pool.eligible()] == [a.url], within=20)
            before = len(b.requests)
            for _ in range(6):
                assert (await c.post("/v1/chat/completions", json=CHAT)).status_code == 200
            assert len(b.requests) == before
        for name in ("pa", "pb"):
            await core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
