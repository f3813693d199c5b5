"""The sandbox (with the pod runner, so model-server pods really run) for the chart's integration tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from e2e.support import ClosedLoop, closed_loop_stack


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
def closed_loop(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ClosedLoop:
    return closed_loop_stack(request, Path(tmp_path_factory.mktemp("closed-loop")))


@pytest.fixture(scope="session")
def helm_bin() -> str:
    return find_tool("helm")


@pytest.fixture(scope="session")
def kubectl_bin() -> str:
    return find_tool("kubectl")
