"""The Reconciler against an in-memory API (no cluster): applies, deletions, status writes, events."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from kubernetes_asyncio.client import Configuration
from shoal_operator.builders import BuildOptions
from shoal_operator.kube import ApiError, Connection, Kube
from shoal_operator.metrics import OperatorMetrics
from shoal_operator.reconcile import Reconciler, ReconcilerConfig, TransientError

pytestmark = pytest.mark.unit


class FakeKube(Kube):
    def __init__(self) -> None:
        super().__init__(Connection(Configuration(host="http://127.0.0.1:9"), None))
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail: ApiError | None = None

    async def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:  # type: ignore[override]
        self.calls.append((method, path))
        if self.fail is not None:
            raise self.fail
        if method == "GET":
            if path.startswith("/apis/monitoring.coreos.com"):
                raise ApiError(404, "NotFound", "no such api")
            if path in self.objects:
                return copy.deepcopy(self.objects[path])
            raise ApiError(404, "NotFound", path)
        if method == "PATCH":
            obj = copy.deepcopy(kw["json_body"])
            if path.endswith("/status"):
                return obj
            if obj["kind"] == "Deployment":
                obj["metadata"]["generation"] = 1
                n = obj["spec"]["replicas"]
                obj["status"] = {
                    "observedGeneration": 1,
                    "replicas": n,
                    "updatedReplicas": n,
                    "readyReplicas": n,
                    "availableReplicas": n,
                }
            self.objects[path] = obj
            return obj
        if method == "DELETE":
            if path in self.objects:
                del self.objects[path]
                return {}
            raise ApiError(404, "NotFound", path)
        if method == "POST":
            return kw["json_body"]  # type: ignore[no-any-return]
        raise AssertionError(method)


def body(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "shoal.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "chat", "namespace": "ns", "uid": "u1", "generation": 1},
        "spec": {"model": {"name": "m", "uri": "hf://o/m"}, **(spec or {})},
        "status": status or {},
    }


def make() -> tuple[FakeKube, Reconciler, list[tuple[str, str]]]:
    kube = FakeKube()
    events: list[tuple[str, str]] = []

    async def emit(b: dict[str, Any], type_: str, reason: str, message: str) -> None:
        events.append((type_, reason))

    return kube, Reconciler(kube, ReconcilerConfig(BuildOptions()), OperatorMetrics(), emit), events


def _status_writes(kube: FakeKube) -> int:
    return sum(1 for m, p in kube.calls if m == "PATCH" and p.endswith("/status"))


def test_full_reconcile_then_no_status_write_when_unchanged() -> None:
    kube, rec, events = make()
    out = asyncio.run(rec.reconcile(body()))
    assert out.result == "ok" and out.ready
    assert "/apis/apps/v1/namespaces/ns/deployments/chat-router" in kube.objects
    assert "/api/v1/namespaces/ns/services/chat" in kube.objects
    assert _status_writes(kube) == 1
    assert events == [("Normal", "Ready")]
    again = asyncio.run(rec.reconcile(body(status=out.status)))
    assert again.status == out.status
    assert _status_writes(kube) == 1  # unchanged status: no write
    assert events == [("Normal", "Ready")]


def test_mode_switch_deletes_router_children() -> None:
    kube, rec, _ = make()
    asyncio.run(rec.reconcile(body()))
    asyncio.run(rec.reconcile(body({"routing": {"mode": "Service"}})))
    assert not any("chat-router" in p for p in kube.objects)


def test_missing_pvc_is_degraded_with_one_warning() -> None:
    _kube, rec, events = make()
    out = asyncio.run(rec.reconcile(body({"model": {"name": "m", "uri": "pvc://claim/x"}})))
    conds = {c["type"]: c for c in out.status["conditions"]}
    assert out.result == "degraded" and conds["Degraded"]["reason"] == "PVCNotFound"
    assert ("Warning", "PVCNotFound") in events
    n = len(events)
    asyncio.run(rec.reconcile(body({"model": {"name": "m", "uri": "pvc://claim/x"}}, status=out.status)))
    assert len(events) == n  # no event storm


def test_invalid_spec_never_raises() -> None:
    _kube, rec, events = make()
    bad = body()
    bad["spec"]["engine"] = {"args": {"x": {"nested": 1}}}
    out = asyncio.run(rec.reconcile(bad))
    assert out.result == "invalid"
    assert events[0] == ("Warning", "InvalidSpec")


def test_transient_api_errors_raise_for_backoff() -> None:
    kube, rec, _ = make()
    kube.fail = ApiError(503, "ServiceUnavailable", "etcd")
    with pytest.raises(TransientError):
        asyncio.run(rec.reconcile(body()))


def test_rejected_child_is_degraded_not_raised() -> None:
    kube, rec, _events = make()
    original = kube.request

    async def reject_pdb(method: str, path: str, **kw: Any) -> dict[str, Any]:
        if method == "PATCH" and "deployments/chat-model" in path:
            raise ApiError(422, "Invalid", "spec.template.spec.tolerations[0].operator: Unsupported value")
        return await original(method, path, **kw)

    kube.request = reject_pdb  # type: ignore[method-assign]
    out = asyncio.run(rec.reconcile(body()))
    assert out.result == "degraded"
    conds = {c["type"]: c for c in out.status["conditions"]}
    assert conds["Degraded"]["reason"] == "ChildRejected" and "tolerations" in conds["Degraded"]["message"]


def test_stale_pdb_is_removed_after_a_failed_status_write() -> None:
    """#14: children applied, status write failed (the object still looks fresh), replicas 2 -> 1: the
    PodDisruptionBudget must not be remembered as absent; the next non-fresh reconcile deletes it."""
    kube, rec, _ = make()
    pdb = "/apis/policy/v1/namespaces/ns/poddisruptionbudgets/chat-model"
    original = kube.request

    async def status_fails(method: str, path: str, **kw: Any) -> dict[str, Any]:
        if method == "PATCH" and path.endswith("/status"):
            raise ApiError(503, "ServiceUnavailable", "etcd")
        return await original(method, path, **kw)

    kube.request = status_fails  # type: ignore[method-assign]
    with pytest.raises(TransientError):
        asyncio.run(rec.reconcile(body({"replicas": 2}), fresh=True))
    assert pdb in kube.objects
    kube.request = original  # type: ignore[method-assign]
    one = body({"replicas": 1})
    asyncio.run(rec.reconcile(one, fresh=True))  # still no status: looks fresh
    kube.objects["/apis/shoal.dev/v1alpha1/namespaces/ns/inferenceservices/chat"] = one
    asyncio.run(rec.refresh("ns", "chat", apply_children=True))  # retry or drift
    assert pdb not in kube.objects
