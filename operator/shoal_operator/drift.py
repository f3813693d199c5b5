"""Repairs that do not wait for a watch event: one pending retry per object, and the drift loop.

- `Retries`: a reconcile that failed on API trouble is tried again after an exponential backoff. There is
  at most one pending retry per object: a second failure while one waits only counts (the backoff grows
  once per failed attempt, not once per failing event).
- `drift_loop`: every `period` it lists the InferenceServices and re-reconciles each one, so children
  edited or deleted behind the operator's back come back even when no event about the owner arrives.
  It is a plain task (leader only), not a kopf timer: kopf timers need a finalizer, and deleting an
  InferenceService must never wait for the operator (its children go by owner references).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

from shoal_operator.kube import ApiError, Kube
from shoal_operator.reconcile import TransientError

log = logging.getLogger("shoal.operator")

Key = tuple[str, str]  # (namespace, name)
Refresh = Callable[[str, str], Awaitable[object]]


def backoff_seconds(retry: int, jitter: float | None = None) -> float:
    """Exponential backoff with jitter for transient API failures: 1, 2, 4 ... 300 s."""
    base: float = min(300.0, 2.0 ** min(max(retry - 1, 0), 9))
    return base * (jitter if jitter is not None else random.uniform(0.8, 1.2))


class Retries:
    """At most one pending retry per object; the delay doubles with each failed attempt."""

    def __init__(self, refresh: Refresh, delay: Callable[[int], float] = backoff_seconds) -> None:
        self._refresh = refresh
        self._delay = delay
        self.failures: dict[Key, int] = {}
        self.pending: dict[Key, asyncio.Task[None]] = {}

    def failed(self, key: Key, error: str) -> None:
        attempt = self.failures[key] = self.failures.get(key, 0) + 1
        if key in self.pending:
            return  # the waiting retry reads the newest state anyway
        delay = self._delay(attempt)
        log.warning(
            "reconcile failed; retrying",
            extra={"inferenceservice": key[1], "retry_in_s": round(delay, 1), "error": error},
        )
        self.pending[key] = asyncio.create_task(self._retry(key, delay), name=f"retry-{key[0]}/{key[1]}")

    def succeeded(self, key: Key) -> None:
        self.failures.pop(key, None)
        task = self.pending.pop(key, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def forget(self, key: Key) -> None:
        self.succeeded(key)

    async def _retry(self, key: Key, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await self._refresh(*key)
        except TransientError as exc:
            self.pending.pop(key, None)
            self.failed(key, str(exc))
            return
        self.pending.pop(key, None)
        self.failures.pop(key, None)

    async def close(self) -> None:
        tasks = list(self.pending.values())
        self.pending.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def list_names(kube: Kube, namespaces: Sequence[str], kind: str = "InferenceService") -> list[Key]:
    """(namespace, name) of every object of `kind` in the watched namespaces (all when empty)."""
    out: list[Key] = []
    scopes: list[str | None] = list(namespaces) or [None]
    for ns in scopes:
        for item in await kube.list(kind, ns):
            meta = item.get("metadata") or {}
            if not meta.get("deletionTimestamp"):
                out.append((str(meta.get("namespace")), str(meta.get("name"))))
    return out


async def drift_pass(
    kube: Kube, namespaces: Sequence[str], refresh: Refresh, retries: Retries, kind: str = "InferenceService"
) -> int:
    """One pass: re-reconcile every object of `kind`; the number repaired without error."""
    done = 0
    for key in await list_names(kube, namespaces, kind):
        try:
            await refresh(*key)
        except TransientError as exc:
            retries.failed(key, str(exc))
            continue
        retries.succeeded(key)
        done += 1
    return done


async def drift_loop(
    kube: Kube,
    namespaces: Sequence[str],
    refresh: Refresh,
    retries: Retries,
    period: float,
    stop: asyncio.Event,
    kind: str = "InferenceService",
) -> None:
    """Run `drift_pass` every `period` seconds until `stop` is set."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=period)
        if stop.is_set():
            return
        try:
            await drift_pass(kube, namespaces, refresh, retries, kind)
        except ApiError as exc:
            log.warning("drift check failed; next period retries", extra={"error": str(exc)})
