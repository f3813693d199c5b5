"""Helpers of the e2e suite: the sandbox's synchronous Kubernetes client and a bounded `eventually`."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
from shoal_sandbox.kube import ApiError, SyncKube
from support.eventually import eventually as _eventually

T = TypeVar("T")
Obj = dict[str, Any]


def eventually(
    probe: Callable[[], T | None], *, timeout: float, interval: float = 0.25, what: str = "condition"
) -> T:
    """`support.eventually` with what the e2e probes raise while the cluster catches up."""
    retry_on = (AssertionError, ApiError, httpx.HTTPError, KeyError, ValueError)
    return cast(T, _eventually(probe, timeout=timeout, interval=interval, desc=what, retry_on=retry_on))


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
