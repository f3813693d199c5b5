"""Scale from zero through the gateway: with no ready replica the EPP holds the request (exporting
`shoal_router_pending_requests`, the autoscaler's 0->1 signal, and the held count its wake poll reads) and
answers it once a replica is Ready.
Discovery is the core's real Pods watch against the sandbox's API server; the replica is a real sim
model-server on loopback, published as a Pod whose status the test writes (as a kubelet would)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from integration.epp.procs import wait_for
from shoal_common import names
from shoal_common.ports import free_port
from shoal_operator.autoscaler import wake
from support.kubectl import Kubectl

pytestmark = pytest.mark.integration


def _pod(name: str, port: int) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "zero"}},
        "spec": {
            # bound to a node that does not exist: no scheduler, no kubelet; the test plays the kubelet
            "nodeName": "epp-test-nowhere",
            "containers": [
                {"name": "m", "image": "none", "ports": [{"name": "http", "containerPort": port}]}
            ],
        },
    }


def _set_status(k: Kubectl, name: str, ready: bool) -> None:
    status = {
        "phase": "Running",
        "podIP": "127.0.0.1",
        "podIPs": [{"ip": "127.0.0.1"}],
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    k.run("patch", "pod", name, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}))


async def test_request_held_at_zero_is_answered_once_a_replica_is_ready(
    started, kube: Kubectl, namespace: str, sandbox_kubeconfig: Path
):
    port = free_port()
    epp = started.epp(
        [],
        "--discovery",
        "pods",
        "--namespace",
        namespace,
        "--selector",
        "app=zero",
        "--kubeconfig",
        str(sandbox_kubeconfig),
        "--pending-timeout",
        "90",
    )
    envoy = started.envoy(pool=[f"127.0.0.1:{port}"], mode="original_dst", epp_port=epp.port)
    body = {"model": "sim", "messages": [{"role": "user", "content": "wake up"}], "max_tokens": 4}
    async with httpx.AsyncClient(base_url=envoy.url, timeout=120) as client:
        held = asyncio.create_task(client.post("/v1/chat/completions", json=body))
        await asyncio.to_thread(
            wait_for, lambda: epp.metric("shoal_router_pending_requests") == 1, 20, "the request held at zero"
        )
        # What the autoscaler's wake poll reads from an endpoint picker (the operator's own probe code)
        key = (namespace, "zero")
        async with wake.probe_session() as session:
            _, path = wake.HELD_ENDPOINTS[names.COMPONENT_EPP]
            targets = {key: [wake.HeldSource(f"http://127.0.0.1:{epp.metrics_port}{path}")]}
            assert await wake.FrontEndProbe(session).held(targets) == {key: 1.0}
        kube.apply(_pod("replica-0", port))
        _set_status(kube, "replica-0", ready=False)  # starting: still held
        replica = started.replica("--sim-startup-s", "1", port=port)
        assert not held.done() and epp.metric("shoal_router_pending_requests") == 1
        _set_status(kube, "replica-0", ready=True)
        r = await asyncio.wait_for(held, 60)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]
    assert epp.metric("shoal_router_pending_requests") == 0
    assert replica.alive()
