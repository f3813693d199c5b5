"""A small synchronous kubectl wrapper for tests (kubectl resolved from PATH, then $SHOAL_CACHE/bin)."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from shoal_common.paths import cache_dir


class KubectlError(AssertionError):
    """A failed kubectl call (an AssertionError, so `eventually` retries it when asked to)."""

    def __init__(self, args: list[str], returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(f"kubectl {' '.join(args)} exited {returncode}: {stderr.strip() or stdout.strip()}")
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def find_kubectl() -> str:
    found = shutil.which("kubectl")
    if found:
        return found
    cache = cache_dir()
    candidate = cache / "bin" / "kubectl"
    if candidate.is_file():
        return str(candidate)
    raise FileNotFoundError(
        "kubectl not found on PATH or in $SHOAL_CACHE/bin (scripts/install-tools.sh installs it)"
    )


@dataclass(frozen=True)
class Kubectl:
    kubeconfig: Path
    namespace: str | None = None
    binary: str = ""

    def _base(self) -> list[str]:
        base = [self.binary or find_kubectl(), f"--kubeconfig={self.kubeconfig}"]
        if self.namespace:
            base.append(f"--namespace={self.namespace}")
        return base

    def ns(self, namespace: str) -> Kubectl:
        """The same client bound to another namespace."""
        return Kubectl(self.kubeconfig, namespace, self.binary)

    def run(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0) -> str:
        proc = subprocess.run(
            [*self._base(), *args], input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise KubectlError(list(args), proc.returncode, proc.stdout, proc.stderr)
        return proc.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json"))

    def apply(self, *manifests: dict[str, Any] | str) -> str:
        docs = [m if isinstance(m, str) else yaml.safe_dump(m) for m in manifests]
        return self.run("apply", "-f", "-", input="\n---\n".join(docs))

    def create(self, manifest: dict[str, Any] | str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`kubectl create`, returning the completed process so tests can assert on rejections."""
        doc = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        proc = subprocess.run(
            [*self._base(), "create", "-f", "-"],
            input=doc,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and proc.returncode != 0:
            raise KubectlError(["create"], proc.returncode, proc.stdout, proc.stderr)
        return proc
