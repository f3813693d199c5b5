"""Fixtures for the operator's integration tests: the sandbox, the CRDs, a namespace, the operator process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import yaml
from shoal_common import processes
from shoal_common.paths import cache_dir
from support.eventually import eventually as _eventually

ROOT = Path(__file__).resolve().parents[3]
T = TypeVar("T")


def eventually(
    probe: Callable[[], T | None], *, timeout: float, interval: float = 0.3, what: str = "condition"
) -> T:
    """`support.eventually` with what these tests' probes raise while the cluster catches up."""
    retry_on = (AssertionError, subprocess.CalledProcessError, KeyError, ValueError, TypeError)
    return cast(T, _eventually(probe, timeout=timeout, interval=interval, desc=what, retry_on=retry_on))


def consistently(
    probe: Callable[[], object], *, duration: float, interval: float = 0.5, what: str = "condition"
) -> None:
    """Assert `probe` stays truthy for `duration` seconds (polled), e.g. "nothing changes"."""
    deadline = time.monotonic() + duration
    while True:
        assert probe(), f"{what} stopped holding"
        if time.monotonic() > deadline:
            return
        time.sleep(interval)


def _kubectl_binary() -> str:
    found = shutil.which("kubectl")
    if found:
        return found
    cache = cache_dir()
    candidate = cache / "bin" / "kubectl"
    if candidate.exists():
        return str(candidate)
    pytest.fail("kubectl not installed: run scripts/install-tools.sh")


class Kubectl:
    def __init__(self, kubeconfig: Path, namespace: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.bin = _kubectl_binary()

    def run(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [self.bin, "--kubeconfig", str(self.kubeconfig)]
        if self.namespace:
            argv += ["-n", self.namespace]
        return subprocess.run(
            argv + list(args), input=input, capture_output=True, text=True, check=check, timeout=120
        )

    def apply(
        self, doc: dict[str, Any] | str, *extra: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
        return self.run("apply", "-f", "-", *extra, input=text, check=check)

    def get(self, kind: str, name: str, *extra: str) -> dict[str, Any] | None:
        res = self.run("get", kind, name, "-o", "json", *extra, check=False)
        if res.returncode != 0:
            if "NotFound" in res.stderr or "not found" in res.stderr:
                return None
            raise subprocess.CalledProcessError(res.returncode, res.args, res.stdout, res.stderr)
        out: dict[str, Any] = json.loads(res.stdout)
        return out

    def list(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-o", "json"]
        if selector:
            args += ["-l", selector]
        items: list[dict[str, Any]] = json.loads(self.run(*args).stdout)["items"]
        return items


def _condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions", []) or []:
        if c.get("type") == type_:
            return dict(c)
    return None


@pytest.fixture(scope="session")
def op_kubeconfig(sandbox_kubeconfig: Path) -> Path:
    """The kwok sandbox's kubeconfig (tests/conftest.py): API-level tests, no running pods needed."""
    return sandbox_kubeconfig


@pytest.fixture(scope="session")
def crds(op_kubeconfig: Path) -> Path:
    k = Kubectl(op_kubeconfig)
    k.run("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    k.run("wait", "--for=condition=Established", "--timeout=60s", "crd/inferenceservices.shoal.dev")
    k.run("wait", "--for=condition=Established", "--timeout=60s", "crd/kopfpeerings.kopf.dev")
    return op_kubeconfig


@pytest.fixture(scope="module")
def op_namespace(crds: Path) -> Iterator[str]:
    name = f"op-{uuid.uuid4().hex[:6]}"
    k = Kubectl(crds)
    k.run("create", "namespace", name)
    try:
        yield name
    finally:
        k.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def kubectl(crds: Path, op_namespace: str) -> Kubectl:
    return Kubectl(crds, op_namespace)


@pytest.fixture(scope="module")
def operator_process(
    crds: Path, op_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    """`shoal operator` watching the test namespace, with a short drift period and kopf peering."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    argv = [
        sys.executable,
        "-m",
        "shoal_cli",
        "operator",
        "--kubeconfig",
        str(crds),
        "--namespace",
        op_namespace,
        "--drift-period",
        "2",
        "--metrics-port",
        "0",
        "--no-autoscaler",
        "--log-level",
        "INFO",
    ]
    proc = processes.spawn(argv, log)
    try:
        yield proc
    finally:
        processes.stop(proc, timeout=20)
        print(f"--- operator log tail ({log}) ---\n{processes.log_tail(log, 4000)}")


condition = _condition
