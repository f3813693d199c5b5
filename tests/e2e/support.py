"""Helpers of the e2e suite: the sandbox's synchronous Kubernetes client and a bounded `eventually`."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
from shoal_sandbox.kube import ApiError, SyncKube

T = TypeVar("T")
Obj = dict[str, Any]


def eventually(
    probe: Callable[[], T | None], *, timeout: float, interval: float = 0.25, what: str = "condition"
) -> T:
    """Polls `probe` until it returns something truthy (bounded in time); raises with the last error."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except (AssertionError, ApiError, httpx.HTTPError, KeyError, ValueError) as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; last error: {last_exc!r}"
            )
        time.sleep(interval)


class Kube(SyncKube):
    """The sandbox's admin client, plus a throwaway namespace per test."""

    @contextlib.contextmanager
    def namespace(self, prefix: str = "t") -> Iterator[str]:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        try:
            yield name
        finally:
            self.delete("Namespace", None, name)


def pod_ready(pod: Obj) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def ready_pods(kube: Kube, namespace: str, selector: str) -> list[Obj]:
    return [
        p
        for p in kube.list("Pod", namespace, selector)
        if pod_ready(p) and not p["metadata"].get("deletionTimestamp")
    ]


def kube_of(kubeconfig: Path) -> Kube:
    return Kube(kubeconfig, field_manager="shoal-tests")
