from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e.support import Kube, closed_loop_stack, kube_of
from shoal_sandbox.demo import Stack


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Stack:
    """Sandbox + pod runner + Prometheus (1 s scrapes) + the operator (autoscaler every 2 s)."""
    return closed_loop_stack(request, full=True)


@pytest.fixture(scope="session")
def kube(stack: Stack) -> Iterator[Kube]:
    k = kube_of(stack)
    yield k
    k.close()


@pytest.fixture
def ns(kube: Kube) -> Iterator[str]:
    with kube.namespace("e2e") as name:
        yield name
