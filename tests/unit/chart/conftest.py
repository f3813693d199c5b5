"""Fixtures for the Helm chart's unit tests: real `helm` and `kubectl` binaries, and a renderer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from shoal_common.paths import cache_dir

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "shoal"


def find_tool(name: str) -> str:
    """A binary on PATH, else the one scripts/install-tools.sh put in $SHOAL_CACHE/bin."""
    found = shutil.which(name)
    if found:
        return found
    cache = cache_dir()
    candidate = cache / "bin" / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    pytest.fail(f"`{name}` not found on PATH or in {cache / 'bin'}: run `bash scripts/install-tools.sh`")


@pytest.fixture(scope="session")
def helm() -> str:
    return find_tool("helm")


@pytest.fixture(scope="session")
def hadolint() -> str:
    return find_tool("hadolint")


Renderer = Callable[..., list[dict[str, Any]]]
HelmRun = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def helm_run(helm: str, tmp_path_factory: pytest.TempPathFactory) -> HelmRun:
    """Runs helm with its cache and config kept out of the home folder."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config")}

    def _run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([helm, *args], capture_output=True, text=True, timeout=60, env=env, check=False)

    return _run


@pytest.fixture(scope="session")
def render(helm_run: HelmRun, tmp_path_factory: pytest.TempPathFactory) -> Renderer:
    """`helm template` the chart with the given values; returns the rendered objects."""
    counter = iter(range(1_000_000))

    def _render(
        values: dict[str, Any] | None = None,
        *,
        api_versions: tuple[str, ...] = (),
        release: str = "shoal",
        namespace: str = "shoal-system",
    ) -> list[dict[str, Any]]:
        args = ["template", release, str(CHART), "--namespace", namespace]
        if values is not None:
            path = tmp_path_factory.getbasetemp() / f"values-{next(counter)}.json"
            path.write_text(json.dumps(values))
            args += ["-f", str(path)]
        for api in api_versions:
            args += ["--api-versions", api]
        proc = helm_run(*args)
        assert proc.returncode == 0, proc.stderr
        return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]

    return _render
