"""Helpers shared by the closed-loop tests (pod runner integration tests and e2e): a small synchronous
Kubernetes client over the sandbox's admin kubeconfig, a bounded `eventually`, and the closed-loop stack
(sandbox + pod runner + Prometheus + operator) as one object."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from shoal_sandbox.podrunner import ApiError, SyncKube

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


@dataclass
class Proc:
    """A child process of the test session, stopped with SIGTERM then SIGKILL."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_proc(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as f:
        proc = subprocess.Popen(
            argv,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return Proc(name, proc, log)


@dataclass
class ClosedLoop:
    """The sandbox with the pod runner (and, for e2e, Prometheus and the operator)."""

    kubeconfig: Path
    state_dir: Path
    kube: Kube
    procs: list[Proc] = field(default_factory=list)
    prometheus_url: str = ""

    def shoal(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "shoal_cli", *args]


# ---- the stack, started once per pytest session (shared by tests/integration/podrunner and tests/e2e) ----

_STACK: ClosedLoop | None = None


def closed_loop_stack(request: Any, log_dir: Path) -> ClosedLoop:
    """Sandbox up with the pod runner's kwok stages, and a pod runner; torn down at the session's end.

    Bringing the sandbox up with the extra kwok `--config` restarts kwok if it ran without it; pods not
    owned by the runner keep kwok's default behaviour, so other tests sharing the sandbox are unaffected.
    """
    global _STACK
    if _STACK is not None:
        return _STACK
    from shoal_sandbox import podrunner
    from shoal_sandbox.sandbox import Sandbox

    name = os.environ.get("SHOAL_SANDBOX_NAME", "default")
    probe = Sandbox(name=name)
    stages = podrunner.write_kwok_stages(probe.state_dir / "kwok-pod-stages.yaml")
    sandbox = Sandbox(name=name, kwok_configs=[stages], log=lambda line: print(line, flush=True))
    was_up = probe.is_up()
    sandbox.up(timeout=180)
    sandbox.add_user()
    state = sandbox.state_dir / "closed-loop"
    kube = Kube(sandbox.kubeconfig_path)
    stack = ClosedLoop(kubeconfig=sandbox.kubeconfig_path, state_dir=state, kube=kube)
    runner = start_proc(
        "pod-runner",
        [
            sys.executable,
            "-m",
            "shoal_sandbox.podrunner",
            "--kubeconfig",
            str(sandbox.kubeconfig_path),
            "--state-dir",
            str(state / "podrunner"),
            "--targets-file",
            str(state / "prometheus" / "pods.json"),
        ],
        log_dir / "pod-runner.log",
    )
    stack.procs.append(runner)

    def finish() -> None:
        global _STACK
        for p in reversed(stack.procs):
            p.stop()
        stack.kube.http.close()
        sandbox.remove_user()
        if not was_up and not sandbox.other_users() and not os.environ.get("SHOAL_KEEP_SANDBOX"):
            sandbox.down()
        _STACK = None

    request.addfinalizer(finish)
    _STACK = stack
    return stack
