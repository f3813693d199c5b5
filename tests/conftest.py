"""Fixtures shared by every suite: a Kubernetes cluster (the local sandbox, or an existing one), namespaces
and clients.

- `SHOAL_TEST_KUBECONFIG=/path/to/kubeconfig` targets an existing cluster (kind, a cloud cluster) instead
  of the sandbox.
- `SHOAL_KEEP_SANDBOX=1` leaves a sandbox started by the tests running afterwards (faster reruns).
- `SHOAL_KWOK_SANDBOX_NAME` picks the kwok sandbox these fixtures start (default `kwok`: fake GPU nodes,
  pods never run; for API-level tests). Suites that need running pods use the real node's sandbox
  (`SHOAL_SANDBOX_NAME`, default `default`; tests/support/cluster.py).

If the cluster cannot be reached or started, the tests that need it fail with the reason; never skip.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.eventually import eventually
from support.kubectl import Kubectl

# Marks follow the folder a test lives in, so `-m unit` / `-m integration` select whole suites.
_FOLDER_MARKS = {"unit": "unit", "integration": "integration", "e2e": "e2e"}
_STARTED_BY_TESTS = "started-by-tests"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).parent
    for item in items:
        try:
            top = Path(str(item.fspath)).relative_to(tests_dir).parts[0]
        except (ValueError, IndexError):
            continue
        mark = _FOLDER_MARKS.get(top)
        if mark and mark not in {m.name for m in item.iter_markers()}:
            item.add_marker(getattr(pytest.mark, mark))


@pytest.fixture(scope="session")
def sandbox_kubeconfig() -> Iterator[Path]:
    """Path of an admin kubeconfig for a running cluster, for the whole session."""
    external = os.environ.get("SHOAL_TEST_KUBECONFIG")
    if external:
        path = Path(external).expanduser()
        if not path.is_file():
            pytest.fail(f"SHOAL_TEST_KUBECONFIG={external} does not exist")
        yield path
        return

    from shoal_sandbox import Sandbox, SandboxError

    name = os.environ.get("SHOAL_KWOK_SANDBOX_NAME", "kwok")
    sandbox = Sandbox(name=name, node_mode="kwok", log=lambda line: print(line))
    # Registered before `up`, so a session tearing down concurrently sees us and keeps the sandbox running.
    sandbox.add_user()
    try:
        if not sandbox.is_up():
            sandbox.up()
            (sandbox.state_dir / _STARTED_BY_TESTS).touch()
    except SandboxError as exc:
        sandbox.remove_user()
        pytest.fail(f"the sandbox did not start: {exc}", pytrace=False)
    try:
        yield sandbox.kubeconfig_path
    finally:
        # Stop only a sandbox that test sessions started (never one a user started with `shoal sandbox up`),
        # and only when no other live test session still uses it.
        with sandbox.lock():
            sandbox.remove_user()
            marker = sandbox.state_dir / _STARTED_BY_TESTS
            if marker.exists() and not os.environ.get("SHOAL_KEEP_SANDBOX") and not sandbox.other_users():
                sandbox.down(locked=True)
                marker.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def kubectl(sandbox_kubeconfig: Path) -> Kubectl:
    """kubectl bound to the test cluster (no namespace); use `kubectl.ns(name)` or the `kube` fixture."""
    return Kubectl(sandbox_kubeconfig)


def _namespace_name(node_name: str) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", node_name.lower()).strip("-")[:40].strip("-")
    return f"t-{stem}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for finalization)."""
    name = _namespace_name(request.node.name)
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"shoal.dev/test": "true"}},
        }
    )
    # Pods are rejected until the controller-manager has created the namespace's default ServiceAccount.
    eventually(
        lambda: kubectl.ns(name).run("get", "serviceaccount", "default", "-o", "name"),
        timeout=30,
        desc=f"default ServiceAccount in {name}",
    )
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture
def kube(kubectl: Kubectl, namespace: str) -> Kubectl:
    """kubectl bound to this test's namespace."""
    return kubectl.ns(namespace)


@pytest.fixture
async def k8s_api(sandbox_kubeconfig: Path) -> AsyncIterator[Any]:
    """A `kubernetes_asyncio` ApiClient for the test cluster (closed after the test)."""
    from kubernetes_asyncio import client, config

    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(sandbox_kubeconfig), client_configuration=configuration)
    async with client.ApiClient(configuration) as api:
        yield api
