"""The real node's fixtures: a sandbox started with `node_mode="real"` (root, one per host).

`SHOAL_NODE_SANDBOX_NAME` names it (default `node`; the e2e suite's in-cluster stack uses the same one). It stays up between test files;
test_restore.py, collected last, takes it down and checks the host against the record `up` made.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from shoal_sandbox import Sandbox, SandboxError
from shoal_sandbox.node import oci
from shoal_sandbox.paths import cache_dir
from support.cluster import node_sandbox_name
from support.kubectl import Kubectl

TEST_IMAGE = "localhost/shoal/node-test-http:1"
_SERVER = Path(__file__).parent / "testserver" / "main.go"


def node_sandbox() -> Sandbox:
    return Sandbox(name=node_sandbox_name(), node_mode="real", log=print)


@pytest.fixture(scope="session")
def real_sandbox() -> Iterator[Sandbox]:
    if os.geteuid() != 0:
        pytest.fail("the real node needs root (see docs/sandbox.md)", pytrace=False)
    sandbox = node_sandbox()
    try:
        sandbox.up(timeout=300)
    except SandboxError as exc:
        pytest.fail(f"the real node did not start: {exc}", pytrace=False)
    yield sandbox


@pytest.fixture(scope="session")
def sandbox_kubeconfig(real_sandbox: Sandbox) -> Path:
    """Overrides the suite-wide fixture: every kubectl in this folder talks to the real node's sandbox."""
    return real_sandbox.kubeconfig_path


@pytest.fixture(scope="session")
def kubectl(real_sandbox: Sandbox) -> Kubectl:
    """Overrides the suite-wide session fixture too: in a whole-suite run it was already made for the
    kwok sandbox by earlier tests, and a cached session fixture ignores the kubeconfig override above."""
    return Kubectl(real_sandbox.kubeconfig_path)


def _build_test_image() -> Path:
    """The test server: `go build` static, packed as an OCI archive; cached by the source's hash."""
    digest = hashlib.sha256(_SERVER.read_bytes()).hexdigest()[:12]
    out = cache_dir() / "node" / f"node-test-http-{digest}.oci.tar"
    if out.is_file():
        return out
    go = shutil.which("go")
    if go is None:
        pytest.fail("`go` is not on PATH; it builds the test image", pytrace=False)
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "server"
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
        proc = subprocess.run(
            ["nice", "-n", "10", go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(binary), str(_SERVER)],
            cwd=_SERVER.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            pytest.fail(f"building the test server failed: {proc.stderr[-2000:]}", pytrace=False)
        return oci.write_archive(TEST_IMAGE, {"/server": binary}, ["/server"], out)


@pytest.fixture(scope="session")
def test_image(real_sandbox: Sandbox) -> str:
    """The test server's image, imported into the node's containerd under its real name."""
    from shoal_sandbox.node import RealNode

    node: RealNode = real_sandbox.real_node()
    node.import_images([_build_test_image()])
    return TEST_IMAGE
