"""Drift repair and retries (drift.py): one pending retry per object with backoff, and the drift pass."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes_asyncio.client import Configuration
from shoal_operator.drift import Retries, backoff_seconds, drift_pass
from shoal_operator.kube import Connection, Kube
from shoal_operator.reconcile import TransientError

pytestmark = pytest.mark.unit


class Flaky:
    """A refresh that fails `failures` times, then succeeds; records every call."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, namespace: str, name: str) -> None:
        self.calls.append((namespace, name))
        if len(self.calls) <= self.failures:
            raise TransientError("503 etcd")


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_seconds(n, jitter=1.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_seconds(50, jitter=1.0) == 300.0


async def test_many_failing_events_leave_one_pending_retry() -> None:
    refresh = Flaky(failures=0)
    delays: list[int] = []

    def delay(attempt: int) -> float:
        delays.append(attempt)
        return 0.05

    retries = Retries(refresh, delay)
    for _ in range(5):  # five failing watch events for the same object
        retries.failed(("ns", "chat"), "503")
    assert len(retries.pending) == 1 and retries.failures[("ns", "chat")] == 5
    assert delays == [1]  # the backoff was computed once, for the retry actually scheduled
    await asyncio.sleep(0.2)
    assert refresh.calls == [("ns", "chat")]  # one retry ran, not five
    assert not retries.pending and not retries.failures


async def test_failing_retry_backs_off_further_then_stops_on_success() -> None:
    refresh = Flaky(failures=2)
    attempts: list[int] = []

    def delay(attempt: int) -> float:
        attempts.append(attempt)
        return 0.01

    retries = Retries(refresh, delay)
    retries.failed(("ns", "chat"), "503")
    for _ in range(100):
        if not retries.pending:
            break
        await asyncio.sleep(0.02)
    assert attempts == [1, 2, 3]  # each failed attempt grows the backoff once
    assert len(refresh.calls) == 3 and not retries.pending and not retries.failures


async def test_success_elsewhere_cancels_the_pending_retry() -> None:
    refresh = Flaky(failures=0)
    retries = Retries(refresh, lambda _: 10.0)
    retries.failed(("ns", "chat"), "503")
    task = retries.pending[("ns", "chat")]
    retries.succeeded(("ns", "chat"))
    await asyncio.sleep(0)
    assert task.cancelled() or task.done()
    assert refresh.calls == [] and not retries.failures
    await retries.close()


class ListingKube(Kube):
    def __init__(self, items: list[dict[str, Any]]) -> None:
        super().__init__(Connection(Configuration(host="http://127.0.0.1:9"), None))
        self.items = items
        self.paths: list[str] = []

    async def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:  # type: ignore[override]
        self.paths.append(path)
        return {"items": [i for i in self.items if f"/namespaces/{i['metadata']['namespace']}/" in path]}


def _item(ns: str, name: str, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": ns, "name": name}
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {"metadata": meta}


async def test_drift_pass_reconciles_every_object_and_queues_failures() -> None:
    kube = ListingKube([_item("a", "x"), _item("a", "gone", deleting=True), _item("b", "y")])
    refresh = Flaky(failures=1)  # the first object fails once
    retries = Retries(refresh, lambda _: 10.0)
    done = await drift_pass(kube, ["a", "b"], refresh, retries)
    assert refresh.calls == [("a", "x"), ("b", "y")]
    assert done == 1 and set(retries.pending) == {("a", "x")}
    assert kube.paths == [
        "/apis/shoal.dev/v1alpha1/namespaces/a/inferenceservices",
        "/apis/shoal.dev/v1alpha1/namespaces/b/inferenceservices",
    ]
    await retries.close()
