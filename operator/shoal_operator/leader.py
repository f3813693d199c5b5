"""Leader election with a coordination.k8s.io Lease, for work that must run in one replica only.

kopf peering already keeps two operator replicas from both handling objects; process-wide loops (the
autoscaler) are not per-object handlers, so they run under this Lease instead: `run_while_leader`
starts the work when the Lease is acquired and cancels it as soon as renewing fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from shoal_common.timestamps import parse_rfc3339, rfc3339

from shoal_operator.kube import ApiError, Kube, path_for

log = logging.getLogger("shoal.operator.leader")


def _now() -> datetime:
    return datetime.now(UTC)


def _fmt(t: datetime) -> str:
    return rfc3339(t, digits=6)  # a Lease's times are MicroTime


def _parse(value: str | None) -> datetime | None:
    return parse_rfc3339(value) if value else None


class LeaseElector:
    def __init__(
        self, kube: Kube, namespace: str, name: str, identity: str, duration_s: float = 15.0
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration_s = duration_s

    def _spec(self, acquire: datetime | None, transitions: int) -> dict[str, Any]:
        now = _now()
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.duration_s)),
            "acquireTime": _fmt(acquire or now),
            "renewTime": _fmt(now),
            "leaseTransitions": transitions,
        }

    async def try_acquire(self) -> bool:
        """Acquire or renew; True while we hold the Lease. Optimistic concurrency via resourceVersion."""
        path = path_for("Lease", self.namespace, self.name)
        live = await self.kube.get(path)
        if live is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(None, 0),
            }
            try:
                await self.kube.create(path_for("Lease", self.namespace), body)
                return True
            except ApiError as exc:
                if exc.status == 409:
                    return False
                raise
        spec = live.get("spec", {}) or {}
        holder = spec.get("holderIdentity")
        renew = _parse(spec.get("renewTime"))
        duration = float(spec.get("leaseDurationSeconds") or self.duration_s)
        expired = renew is None or _now() > renew + timedelta(seconds=duration)
        if holder != self.identity and holder and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        acquire = _parse(spec.get("acquireTime")) if holder == self.identity else None
        live["spec"] = self._spec(acquire, transitions)
        try:
            await self.kube.replace(path, live)
        except ApiError as exc:
            if exc.status == 409:  # someone else renewed or took it first
                return False
            raise
        return True

    async def release(self) -> None:
        path = path_for("Lease", self.namespace, self.name)
        with contextlib.suppress(ApiError):
            live = await self.kube.get(path)
            if live and (live.get("spec") or {}).get("holderIdentity") == self.identity:
                live["spec"]["holderIdentity"] = None
                await self.kube.replace(path, live)


async def run_while_leader(
    elector: LeaseElector,
    work: Callable[[], Coroutine[Any, Any, None]],
    stop: asyncio.Event,
) -> None:
    """Run `work()` while this process holds the Lease; restart it after re-acquiring; stop on `stop`."""
    retry = elector.duration_s / 3
    task: asyncio.Task[None] | None = None
    try:
        while not stop.is_set():
            try:
                leading = await elector.try_acquire()
            except ApiError as exc:
                log.warning("lease renewal failed: %s", exc)
                leading = False
            if leading and task is None:
                log.info("acquired leadership", extra={"lease": elector.name, "identity": elector.identity})
                task = asyncio.create_task(work(), name="leader-work")
            elif not leading and task is not None:
                log.warning("lost leadership; stopping leader-only work")
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                task = None
            if task is not None and task.done() and not stop.is_set():  # at shutdown the work ends first
                failure = None if task.cancelled() else task.exception()
                log.error("leader-only work ended; restarting it", exc_info=failure)
                task = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=retry)
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await elector.release()
