"""Lease-based leader election for the autoscaler loop (in-memory API)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from kubernetes_asyncio.client import Configuration
from shoal_operator.kube import ApiError, Connection, Kube
from shoal_operator.leader import LeaseElector, run_while_leader

pytestmark = pytest.mark.unit


class LeaseStore(Kube):
    def __init__(self) -> None:
        super().__init__(Connection(Configuration(host="http://127.0.0.1:9"), None))
        self.obj: dict[str, Any] | None = None
        self.rv = 0

    async def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:  # type: ignore[override]
        if method == "GET":
            if self.obj is None:
                raise ApiError(404, "NotFound", "")
            return copy.deepcopy(self.obj)
        body = copy.deepcopy(kw["json_body"])
        if method == "POST":
            if self.obj is not None:
                raise ApiError(409, "AlreadyExists", "")
        elif method == "PUT" and (
            self.obj is None
            or body["metadata"].get("resourceVersion") != self.obj["metadata"]["resourceVersion"]
        ):
            raise ApiError(409, "Conflict", "")
        self.rv += 1
        body["metadata"]["resourceVersion"] = str(self.rv)
        self.obj = body
        return copy.deepcopy(body)


def test_one_leader_then_takeover_after_expiry() -> None:
    async def scenario() -> None:
        store = LeaseStore()
        a = LeaseElector(store, "ns", "lease", "a", duration_s=1)
        b = LeaseElector(store, "ns", "lease", "b", duration_s=1)
        assert await a.try_acquire()
        assert not await b.try_acquire()
        assert await a.try_acquire()  # renew
        await asyncio.sleep(1.2)  # a stops renewing
        assert await b.try_acquire()
        assert store.obj is not None and store.obj["spec"]["leaseTransitions"] == 1
        assert not await a.try_acquire()

    asyncio.run(scenario())


def test_run_while_leader_runs_work_and_releases() -> None:
    async def scenario() -> None:
        store = LeaseStore()
        stop = asyncio.Event()
        started = asyncio.Event()

        async def work() -> None:
            started.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(run_while_leader(LeaseElector(store, "ns", "l", "me", 0.3), work, stop))
        await asyncio.wait_for(started.wait(), 2)
        stop.set()
        await asyncio.wait_for(task, 2)
        assert store.obj is not None and store.obj["spec"]["holderIdentity"] is None

    asyncio.run(scenario())


class SlowRenewals(LeaseStore):
    """Each renewal after the first waits until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__()
        self.renewing = asyncio.Event()
        self.finish = asyncio.Event()

    async def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:  # type: ignore[override]
        if method == "GET" and self.obj is not None:
            self.renewing.set()
            await self.finish.wait()
        return await super().request(method, path, **kw)


def test_work_that_ends_at_shutdown_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """The leader-only work watches the same stop event and may end while the loop is renewing the lease."""

    async def scenario() -> None:
        store = SlowRenewals()
        stop = asyncio.Event()

        async def work() -> None:
            await stop.wait()

        task = asyncio.create_task(run_while_leader(LeaseElector(store, "ns", "l", "me", 0.3), work, stop))
        await asyncio.wait_for(store.renewing.wait(), 2)  # the loop is mid-renewal
        stop.set()
        await asyncio.sleep(0.05)  # the work ends first
        store.finish.set()
        await asyncio.wait_for(task, 2)

    with caplog.at_level("ERROR", logger="shoal.operator.leader"):
        asyncio.run(scenario())
    assert not [r for r in caplog.records if "leader-only work ended" in r.getMessage()]
