from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.support import ClosedLoop, closed_loop_stack


@pytest.fixture(scope="session")
def closed_loop(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ClosedLoop:
    return closed_loop_stack(request, Path(tmp_path_factory.mktemp("closed-loop")))


@pytest.fixture
def ns(closed_loop: ClosedLoop) -> Iterator[str]:
    with closed_loop.kube.namespace("podrunner") as name:
        yield name
