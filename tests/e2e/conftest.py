from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from e2e.support import Kube, kube_of
from shoal_sandbox.cluster import ClusterStack
from support.cluster import cluster_stack


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> ClusterStack:
    """The real node + the chart's operator (autoscaler every 2 s) + Prometheus (kubernetes_sd, 1 s scrapes)."""
    return cluster_stack(request)


@pytest.fixture(scope="session")
def kube(stack: ClusterStack) -> Iterator[Kube]:
    k = kube_of(stack.kubeconfig)
    yield k
    k.close()


@pytest.fixture
def ns(stack: ClusterStack) -> Iterator[str]:
    """A namespace enforcing the `restricted` Pod Security Standard, with the models claim bound."""
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    stack.namespace(name)
    try:
        yield name
    finally:
        stack.delete_namespace(name)
