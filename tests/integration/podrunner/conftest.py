from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e.support import Kube, closed_loop_stack, kube_of
from shoal_sandbox.runner_stack import Stack


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Stack:
    return closed_loop_stack(request, full=False)


@pytest.fixture(scope="session")
def kube(stack: Stack) -> Iterator[Kube]:
    k = kube_of(stack.kubeconfig)
    yield k
    k.close()


@pytest.fixture
def ns(kube: Kube) -> Iterator[str]:
    with kube.namespace("podrunner") as name:
        yield name
