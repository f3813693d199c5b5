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
import yaml
from shoal_sandbox.podrunner import load_kubeconfig

T = TypeVar("T")
Obj = dict[str, Any]

_PLURALS = {
    "Namespace": ("v1", "namespaces", False),
    "Pod": ("v1", "pods", True),
    "Service": ("v1", "services", True),
    "Deployment": ("apps/v1", "deployments", True),
    "InferenceService": ("shoal.dev/v1alpha1", "inferenceservices", True),
}


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
        except (AssertionError, httpx.HTTPError, KeyError, ValueError) as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; last error: {last_exc!r}"
            )
        time.sleep(interval)


class Kube:
    """Synchronous Kubernetes API client for tests (admin credentials of the sandbox)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        cfg = load_kubeconfig(kubeconfig)
        cert = (cfg.cert_file, cfg.key_file) if cfg.cert_file and cfg.key_file else None
        import ssl

        ctx = ssl.create_default_context(cafile=cfg.ca_file) if cfg.ca_file else ssl.create_default_context()
        if cert:
            ctx.load_cert_chain(*cert)
        headers = {"Authorization": f"Bearer {cfg.token}"} if cfg.token else {}
        self.http = httpx.Client(base_url=cfg.server, verify=ctx, headers=headers, timeout=30.0)

    def path(self, kind: str, namespace: str | None = None, name: str | None = None) -> str:
        api_version, plural, namespaced = _PLURALS[kind]
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        out = base + (f"/namespaces/{namespace}" if namespaced and namespace else "") + f"/{plural}"
        return out + (f"/{name}" if name else "")

    def _check(self, resp: httpx.Response) -> Obj:
        if resp.status_code >= 400:
            raise httpx.HTTPStatusError(
                f"{resp.status_code}: {resp.text[:500]}", request=resp.request, response=resp
            )
        out: Obj = resp.json() if resp.content else {}
        return out

    def apply(self, obj: Obj, namespace: str | None = None) -> Obj:
        md = obj["metadata"]
        ns = namespace or md.get("namespace")
        if ns and _PLURALS[obj["kind"]][2]:
            md["namespace"] = ns
        resp = self.http.patch(
            self.path(obj["kind"], ns, md["name"]),
            params={"fieldManager": "shoal-tests", "force": "true"},
            content=yaml.safe_dump(obj).encode(),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        return self._check(resp)

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        resp = self.http.get(self.path(kind, namespace, name))
        if resp.status_code == 404:
            return None
        return self._check(resp)

    def list(self, kind: str, namespace: str | None = None, selector: str | None = None) -> list[Obj]:
        params = {"labelSelector": selector} if selector else None
        items: list[Obj] = self._check(self.http.get(self.path(kind, namespace), params=params))["items"]
        return items

    def delete(self, kind: str, namespace: str | None, name: str, grace: int | None = None) -> None:
        body = {"gracePeriodSeconds": grace} if grace is not None else None
        resp = self.http.request("DELETE", self.path(kind, namespace, name), json=body)
        if resp.status_code != 404:
            self._check(resp)

    def patch_merge(
        self, kind: str, namespace: str | None, name: str, patch: Obj, subresource: str = ""
    ) -> Obj:
        path = self.path(kind, namespace, name) + (f"/{subresource}" if subresource else "")
        resp = self.http.patch(path, json=patch, headers={"Content-Type": "application/merge-patch+json"})
        return self._check(resp)

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
