"""The real node's in-cluster stack (so model-server pods really run) for the chart's integration tests.

Only the stack's admin kubeconfig is used; everything else goes through the real `helm` and `kubectl`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from shoal_sandbox.cluster import ClusterStack
from support.cluster import cluster_stack


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
def stack(request: pytest.FixtureRequest) -> ClusterStack:
    """The real node + the chart's cluster-wide operator + Prometheus (shared with the e2e suite). Tests
    here install releases of their own and pause that operator while they run (`operator_paused`)."""
    return cluster_stack(request)


@pytest.fixture(scope="session")
def helm_bin() -> str:
    return find_tool("helm")


@pytest.fixture(scope="session")
def kubectl_bin() -> str:
    return find_tool("kubectl")
