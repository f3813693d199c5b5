"""The sandbox's synchronous client (`shoal_sandbox.kube.SyncKube`, kubernetes_asyncio underneath) against
the sandbox's real API server: the calls the closed-loop stack (cluster.py, stack_support.py) and the tests
make, and how failures come back.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shoal_sandbox.kube import ApiError, SyncKube
from shoal_sandbox.stack_support import condition, install_crds, load_example
from support.eventually import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def kube(sandbox_kubeconfig: Path) -> Iterator[SyncKube]:
    with SyncKube(sandbox_kubeconfig, field_manager="shoal-tests") as client:
        yield client


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    container = {
        "name": "main",
        "image": "registry.example/shoal/sim:test",
        "ports": [{"name": "http", "containerPort": 8000}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def test_apply_get_list_patch_delete(kube: SyncKube, namespace: str) -> None:
    dep = _deployment("web", 1)
    created = kube.apply(dep, namespace)
    assert created["metadata"]["namespace"] == namespace and dep["metadata"]["namespace"] == namespace
    managers = {m["manager"]: m["operation"] for m in created["metadata"]["managedFields"]}
    assert managers.get("shoal-tests") == "Apply"
    again = kube.apply(_deployment("web", 1), namespace)  # the same object again: the spec is unchanged
    assert again["metadata"]["generation"] == created["metadata"]["generation"] == 1

    got = kube.get("Deployment", namespace, "web")
    assert got is not None and got["metadata"]["uid"] == created["metadata"]["uid"]
    assert [d["metadata"]["name"] for d in kube.list("Deployment", namespace, "app=web")] == ["web"]
    assert kube.list("Deployment", namespace, "app=other") == []

    patched = kube.patch_merge("Deployment", namespace, "web", {"spec": {"replicas": 3}})
    assert patched["spec"]["replicas"] == 3
    scale = kube.patch_merge("Deployment", namespace, "web", {"spec": {"replicas": 2}}, subresource="scale")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2

    kube.delete("Deployment", namespace, "web", grace=0)
    eventually(lambda: kube.get("Deployment", namespace, "web") is None, timeout=30, desc="deployment gone")
    kube.delete("Deployment", namespace, "web")  # already gone: not an error


def test_cluster_scoped_kinds_and_paths(kube: SyncKube) -> None:
    name = f"t-pv-{uuid.uuid4().hex[:6]}"
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadOnlyMany"],
            "hostPath": {"path": "/tmp"},
        },
    }
    try:
        kube.apply(pv, "ignored-for-cluster-scoped")
        assert "namespace" not in pv["metadata"]
        assert (kube.get("PersistentVolume", None, name) or {}).get("metadata", {}).get("name") == name
    finally:
        kube.delete("PersistentVolume", None, name)
    assert kube.path("PersistentVolume", None, name) == f"/api/v1/persistentvolumes/{name}"
    assert kube.path("Deployment", "ns1") == "/apis/apps/v1/namespaces/ns1/deployments"
    assert (
        kube.path("Event", "ns1") == "/api/v1/namespaces/ns1/events"
    )  # the core group's, not events.k8s.io's


def test_failures_are_api_errors(kube: SyncKube, namespace: str) -> None:
    assert kube.get("Deployment", namespace, "missing") is None
    bad = _deployment("bad", 1)
    del bad["spec"]["selector"]
    with pytest.raises(ApiError) as invalid:
        kube.apply(bad, namespace)
    assert invalid.value.status == 422 and "selector" in str(invalid.value)
    with pytest.raises(ApiError) as no_pod:
        kube.pod_log(namespace, "missing")
    assert no_pod.value.status == 404 and "missing" in str(no_pod.value)
    with pytest.raises(ApiError) as no_kind:
        kube.list("NoSuchKind", namespace)
    assert no_kind.value.status == 404
    assert kube.get("NoSuchKind", namespace, "x") is None


def test_crds_and_custom_resources(kube: SyncKube, namespace: str) -> None:
    install_crds(kube, log=lambda line: None)
    crd = kube.get("CustomResourceDefinition", None, "inferenceservices.shoal.dev")
    assert condition(crd, "Established")
    isvc = load_example("inferenceservice-sim.yaml")
    applied = kube.apply(isvc, namespace)
    assert applied["kind"] == "InferenceService"
    assert (kube.get("InferenceService", namespace, isvc["metadata"]["name"]) or {}).get("spec")
    kube.delete("InferenceService", namespace, isvc["metadata"]["name"])


def test_ready_endpoints_read_the_selected_ready_pods(kube: SyncKube, namespace: str) -> None:
    kube.apply(_deployment("ep", 2), namespace)
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "ep"},
        "spec": {"selector": {"app": "ep"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    kube.apply(svc, namespace)

    def two() -> list[str]:
        urls = kube.ready_endpoints(namespace, "ep")
        assert len(urls) == 2, urls
        return urls

    urls = eventually(two, timeout=60, desc="2 ready endpoints")
    assert all(u.startswith("http://127.") and u.endswith(":8000") for u in urls), urls
    assert kube.ready_endpoints(namespace, "no-such-service") == []


def test_one_client_serves_threads(kube: SyncKube, namespace: str) -> None:
    """The facade is shared by threads (the e2e helpers poll from several): calls stay independent."""
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            kube.apply(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"c{i}"},
                    "data": {"i": str(i)},
                },
                namespace,
            )
            assert (kube.get("ConfigMap", namespace, f"c{i}") or {})["data"] == {"i": str(i)}
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len([c for c in kube.list("ConfigMap", namespace) if c["metadata"]["name"].startswith("c")]) == 8
