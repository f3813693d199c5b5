"""The sandbox (with the pod runner, so model-server pods really run) for the chart's integration tests.

Only the stack's admin kubeconfig is used; everything else goes through the real `helm` and `kubectl`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from e2e.support import closed_loop_stack
from shoal_sandbox.runner_stack import Stack


def find_tool(name: str) -> str:
    """A binary on PATH, else the one scripts/install-tools.sh put in $SHOAL_CACHE/bin."""
    found = shutil.which(name)
    if found:
        return found
    cache = Path(os.environ.get("SHOAL_CACHE", Path.home() / ".cache" / "shoal"))
    candidate = cache / "bin" / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    pytest.fail(f"`{name}` not found on PATH or in {cache / 'bin'}: run `bash scripts/install-tools.sh`")


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Stack:
    """Sandbox + pod runner (shared with the other closed-loop suites; one per session)."""
    return closed_loop_stack(request, full=False)


@pytest.fixture(scope="session")
def helm_bin() -> str:
    return find_tool("helm")


@pytest.fixture(scope="session")
def kubectl_bin() -> str:
    return find_tool("kubectl")
