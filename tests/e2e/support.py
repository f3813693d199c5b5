"""Helpers shared by the closed-loop tests (e2e on the real node; the pod runner's and the chart's
integration tests): the sandbox's synchronous Kubernetes client, a bounded `eventually`, and the pod
runner's closed-loop stack (sandbox + pod runner + Prometheus + operator) as one object."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
from shoal_sandbox.kube import ApiError, SyncKube
from shoal_sandbox.runner_stack import Stack

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


# ---- the stack, started once per pytest session (shared by tests/integration/podrunner and tests/e2e) ----

_STACK: Stack | None = None


def closed_loop_stack(request: Any, *, full: bool) -> Stack:
    """The sandbox (with the pod runner's kwok stages) and one pod runner; with ``full``, also Prometheus
    and the operator. One per session, whoever asks first; stopped when the session ends.

    Bringing the sandbox up with the extra kwok `--config` restarts kwok if it ran without it; pods not
    owned by the runner keep kwok's default behaviour, so other tests sharing the sandbox are unaffected.
    """
    global _STACK
    if _STACK is None:
        stack = Stack(
            sandbox_name=os.environ.get("SHOAL_SANDBOX_NAME", "default"),
            with_prometheus=False,
            with_operator=False,
            keep_sandbox=bool(os.environ.get("SHOAL_KEEP_SANDBOX")),
            log=lambda line: print(line, flush=True),
            autoscaler_period_s=2.0,
        )
        stack.start()

        def finish() -> None:
            global _STACK
            stack.stop()
            _STACK = None

        request.session.config.add_cleanup(finish)
        _STACK = stack
    if full:
        _STACK.ensure_prometheus()
        _STACK.ensure_operator()
    return _STACK


def kube_of(kubeconfig: Path) -> Kube:
    return Kube(kubeconfig, field_manager="shoal-tests")
