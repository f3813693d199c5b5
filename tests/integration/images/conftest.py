"""Fixtures of the image tests: shoal's images, built by `shoal images build` (a no-op when their
inputs did not change) and run by podman with runc, as a pod would run them: the uid the operator's pod
specs declare, a read-only root filesystem, /tmp as the only writable path, no capabilities, no
privilege escalation. Host network on 127.0.0.1.

These tests FAIL (never skip) when buildah/podman are missing: scripts/setup.sh installs them.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from shoal_common.paths import cache_dir
from shoal_operator.builders.common import SHOAL_UID

REPO = Path(__file__).resolve().parents[3]
# The machine's limits cannot be raised (no CAP_SYS_RESOURCE), and podman would ask runc to raise them
# to its defaults; these match what a kubelet's containerd gives a pod on most nodes.
ULIMITS = ("--ulimit", "nofile=16384:16384", "--ulimit", "nproc=4096:4096")


@dataclass
class Containers:
    """Runs images like a restricted pod; removes every container it started."""

    podman: str
    runc: str
    started: list[str] = field(default_factory=list)

    def argv(
        self,
        ref: str,
        args: Sequence[str],
        volumes: Sequence[tuple[Path, str]] = (),
        env: dict[str, str] | None = None,
        entrypoint: str | None = None,
        tmp: bool = True,
        shm: str | None = None,
    ) -> list[str]:
        argv = [self.podman, "--runtime", self.runc, "run", "--network", "host", *ULIMITS]
        argv += ["--user", f"{SHOAL_UID}:{SHOAL_UID}", "--read-only", "--read-only-tmpfs=false"]
        argv += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
        if tmp:  # the pod's /tmp emptyDir
            argv += ["--tmpfs", "/tmp:rw,size=2g,mode=1777"]
        if shm:  # the pod's /dev/shm emptyDir (medium: Memory)
            argv += ["--shm-size", shm]
        for host, inside in volumes:
            argv += ["--volume", f"{host}:{inside}:ro"]
        for key, value in (env or {}).items():
            argv += ["--env", f"{key}={value}"]
        if entrypoint is not None:
            argv += ["--entrypoint", entrypoint]
        return [*argv, ref, *args]

    def run(self, ref: str, args: Sequence[str], timeout: float = 120, **kw: object) -> str:
        """Runs to completion; returns stdout+stderr, failing the test on a non-zero exit."""
        argv = self.argv(ref, args, **kw)  # type: ignore[arg-type]
        argv.insert(argv.index("run") + 1, "--rm")
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{ref} {' '.join(args)} exited {proc.returncode}:\n{out[-3000:]}"
        return out

    def start(self, ref: str, args: Sequence[str], **kw: object) -> str:
        """Starts detached; returns the container's name (for logs)."""
        name = f"shoal-test-{uuid.uuid4().hex[:8]}"
        argv = self.argv(ref, args, **kw)  # type: ignore[arg-type]
        argv[argv.index("run") + 1 : argv.index("run") + 1] = ["-d", "--name", name]
        subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
        self.started.append(name)
        return name

    def logs(self, name: str) -> str:
        proc = subprocess.run(
            [self.podman, "logs", name], capture_output=True, text=True, timeout=60, check=False
        )
        return proc.stdout + proc.stderr

    def running(self, name: str) -> bool:
        proc = subprocess.run(
            [self.podman, "inspect", "--format", "{{.State.Running}}", name],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return proc.stdout.strip() == "true"

    def image_user(self, ref: str) -> str:
        proc = subprocess.run(
            [self.podman, "image", "inspect", "--format", "{{.Config.User}}", ref],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return proc.stdout.strip()

    def remove_all(self) -> None:
        for name in self.started:
            subprocess.run(
                [self.podman, "rm", "-f", "-t", "5", name], capture_output=True, timeout=120, check=False
            )


def _need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is not installed (scripts/setup.sh installs buildah, podman, runc)")
    return path


@pytest.fixture(scope="session")
def containers() -> Iterator[Containers]:
    c = Containers(podman=_need("podman"), runc=_need("runc"))
    try:
        yield c
    finally:
        c.remove_all()


def built_image(name: str) -> str:
    """The image `name` for the current tree: built (or found up to date) and in podman's store."""
    from shoal_sandbox.images.build import build_images, ensure_loaded
    from shoal_sandbox.images.spec import by_name
    from shoal_sandbox.images.tools import ImageBuildError

    lines: list[str] = []
    try:
        (result,) = build_images(by_name([name]), REPO, cache_dir(), lines.append)
        return ensure_loaded(result.entry, lines.append)
    except ImageBuildError as exc:
        pytest.fail(f"building {name} failed: {exc}\n" + "\n".join(lines[-40:]), pytrace=False)
