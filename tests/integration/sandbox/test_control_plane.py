"""Acceptance of the local control plane: GPU nodes, scheduling, garbage collection and CEL validation.

These run against whatever `sandbox_kubeconfig` gives (the sandbox, or SHOAL_TEST_KUBECONFIG), and take
care not to hog the shared GPU nodes: other test sessions may be using the same cluster at once.
"""

from __future__ import annotations

import ipaddress
import os
import uuid
from typing import Any

import pytest
from support.eventually import eventually
from support.kubectl import Kubectl

pytestmark = pytest.mark.integration

GPU = "nvidia.com/gpu"


def _deployment(
    name: str, replicas: int, gpus: int, extra_pod_spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "registry.example/shoal/model-server:test",
                            "resources": {"limits": {GPU: str(gpus)}},
                        }
                    ],
                    **(extra_pod_spec or {}),
                },
            },
        },
    }


def _pods(kube: Kubectl, app: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.json("get", "pods", "-l", f"app={app}")["items"]
    return items


def _is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return pod.get("status", {}).get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions
    )


def test_gpu_nodes_have_allocatable_gpus(kubectl: Kubectl) -> None:
    nodes = kubectl.json("get", "nodes")["items"]
    gpu_nodes = [n for n in nodes if int(n["status"].get("allocatable", {}).get(GPU, "0")) > 0]
    assert len(gpu_nodes) >= 2, f"expected GPU nodes, got {[n['metadata']['name'] for n in nodes]}"
    for node in gpu_nodes:
        assert node["metadata"]["labels"].get("nvidia.com/gpu.present") == "true"
        assert any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
    # And the plain `kubectl get nodes` a user types shows them.
    table = kubectl.run("get", "nodes")
    assert all(n["metadata"]["name"] in table for n in gpu_nodes)


def test_gpu_deployment_runs_ready_pods_with_loopback_ips_and_is_garbage_collected(kube: Kubectl) -> None:
    kube.apply(_deployment("gpu3", replicas=3, gpus=1))

    def three_ready() -> list[dict[str, Any]]:
        pods = [p for p in _pods(kube, "gpu3") if _is_ready(p)]
        assert len(pods) == 3, f"{len(pods)} of 3 pods Ready"
        return pods

    pods = eventually(three_ready, timeout=60, desc="3 Running+Ready GPU pods")
    ips = [p["status"]["podIP"] for p in pods]
    assert len(set(ips)) == 3, f"pod IPs not distinct: {ips}"
    if not os.environ.get("SHOAL_TEST_KUBECONFIG"):
        # The sandbox's promise: a local process can serve on a pod's IP. (kind's kwok uses its own CIDR.)
        assert all(ipaddress.ip_address(ip).is_loopback for ip in ips), f"pod IPs not in 127.0.0.0/8: {ips}"
    assert all(p["spec"]["nodeName"] for p in pods)

    assert kube.json("get", "replicasets", "-l", "app=gpu3")["items"], "Deployment created no ReplicaSet"
    # Background propagation: the Deployment goes at once; the garbage collector removes the rest.
    kube.run("delete", "deployment", "gpu3", "--cascade=background", "--wait=false")

    def collected() -> bool:
        replicasets = kube.json("get", "replicasets", "-l", "app=gpu3")["items"]
        pods = _pods(kube, "gpu3")
        assert not replicasets and not pods, f"{len(replicasets)} ReplicaSets, {len(pods)} pods remain"
        return True

    eventually(collected, timeout=60, desc="ReplicaSet and pods garbage-collected")


def test_more_gpus_than_exist_leaves_pods_pending(kubectl: Kubectl, kube: Kubectl, namespace: str) -> None:
    # A private, tainted 2-GPU node keeps this test from taking GPUs that other tests are using.
    node = f"gpu-capacity-{namespace}"[:63].rstrip("-")
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {"kubernetes.io/hostname": node, "shoal.dev/test-node": namespace, "type": "kwok"},
            },
            "spec": {"taints": [{"key": "shoal.dev/test-node", "value": namespace, "effect": "NoSchedule"}]},
            "status": {
                "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110", GPU: "2"},
                "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110", GPU: "2"},
            },
        }
    )
    try:
        pinned = {
            "nodeSelector": {"shoal.dev/test-node": namespace},
            "tolerations": [{"key": "shoal.dev/test-node", "operator": "Equal", "value": namespace}],
        }
        kube.apply(_deployment("too-many", replicas=3, gpus=1, extra_pod_spec=pinned))

        def two_ready_one_unschedulable() -> dict[str, Any]:
            pods = _pods(kube, "too-many")
            ready = [p for p in pods if _is_ready(p)]
            pending = [p for p in pods if p["status"].get("phase") == "Pending"]
            assert len(ready) == 2 and len(pending) == 1, f"{len(ready)} Ready, {len(pending)} Pending"
            scheduled = [c for c in pending[0]["status"].get("conditions", []) if c["type"] == "PodScheduled"]
            assert scheduled and scheduled[0]["status"] == "False", f"no PodScheduled=False yet: {scheduled}"
            found: dict[str, Any] = scheduled[0]
            return found

        condition = eventually(two_ready_one_unschedulable, timeout=60, desc="2 Ready + 1 unschedulable pod")
        assert condition["reason"] == "Unschedulable"
        assert f"Insufficient {GPU}" in condition["message"], condition["message"]

        # The scheduler records its events asynchronously, after the pod's condition, and an earlier
        # attempt (before the node was Ready, say) may have left an event with another reason first.
        eventually(
            lambda: (
                f"Insufficient {GPU}"
                in kube.run("get", "events", "--field-selector", "reason=FailedScheduling")
            ),
            timeout=30,
            desc="a FailedScheduling event naming the GPUs",
        )
    finally:
        kubectl.run("delete", "node", node, "--ignore-not-found", "--wait=false", check=False)


def test_crd_cel_rule_rejects_invalid_object_with_its_message(kubectl: Kubectl, kube: Kubectl) -> None:
    group = f"t{uuid.uuid4().hex[:8]}.test.shoal.dev"
    crd_name = f"widgets.{group}"
    message = "minReplicas must not exceed maxReplicas"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": crd_name},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "minReplicas": {"type": "integer"},
                                        "maxReplicas": {"type": "integer"},
                                    },
                                    "x-kubernetes-validations": [
                                        {"rule": "self.minReplicas <= self.maxReplicas", "message": message}
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    kubectl.apply(crd)
    try:
        eventually(
            lambda: kubectl.run(
                "wait", f"crd/{crd_name}", "--for=condition=Established", "--timeout=5s", timeout=15
            ),
            timeout=30,
            desc="CRD Established",
        )

        def widget(name: str, lo: int, hi: int) -> dict[str, Any]:
            return {
                "apiVersion": f"{group}/v1",
                "kind": "Widget",
                "metadata": {"name": name},
                "spec": {"minReplicas": lo, "maxReplicas": hi},
            }

        # Discovery of a brand-new type can lag a moment behind Established.
        eventually(lambda: kube.create(widget("good", 1, 3)), timeout=30, desc="valid Widget accepted")
        rejected = kube.create(widget("bad", 5, 2), check=False)
        assert rejected.returncode != 0, "the invalid Widget was accepted"
        assert message in rejected.stderr, rejected.stderr
        assert "Invalid" in rejected.stderr or "invalid" in rejected.stderr
    finally:
        kubectl.run("delete", "crd", crd_name, "--ignore-not-found", "--wait=false", check=False)


async def test_async_client_fixture_reaches_the_cluster(k8s_api: Any, namespace: str) -> None:
    from kubernetes_asyncio import client

    core = client.CoreV1Api(k8s_api)
    nodes = await core.list_node()
    assert any(int((n.status.allocatable or {}).get(GPU, "0")) > 0 for n in nodes.items)
    ns = await core.read_namespace(namespace)
    assert ns.status.phase == "Active"
