"""The in-cluster closed loop on the real node (:class:`shoal_sandbox.cluster.ClusterStack`), one per
pytest session, shared by the e2e suite and any other suite that needs operator-made pods.

`SHOAL_NODE_SANDBOX_NAME` names the real node's sandbox (default `node`; one real node per host). The
node's own tests take it down at their end (tests/integration/node/test_restore.py): they stop this stack
first with :func:`stop_cluster_stack`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest
from shoal_sandbox.cluster import ClusterStack
from shoal_sandbox.stack_support import StackError


def node_sandbox_name() -> str:
    return os.environ.get("SHOAL_NODE_SANDBOX_NAME", "node")


@dataclass
class _Holder:
    """The session's stack (pytest's `config.stash` holds this; no module-level state)."""

    stack: ClusterStack | None = None
    errors: list[str] = field(default_factory=list)


_KEY = pytest.StashKey[_Holder]()


def _holder(config: pytest.Config) -> _Holder:
    if _KEY not in config.stash:
        config.stash[_KEY] = _Holder()
    return config.stash[_KEY]


def cluster_stack(request: pytest.FixtureRequest) -> ClusterStack:
    """The started stack (started by whoever asks first; stopped when the session ends)."""
    holder = _holder(request.config)
    if holder.stack is None:
        if holder.errors:
            pytest.fail(holder.errors[0], pytrace=False)
        stack = ClusterStack(
            sandbox_name=node_sandbox_name(),
            keep_sandbox=bool(os.environ.get("SHOAL_KEEP_SANDBOX")),
            log=lambda line: print(line, flush=True),
            autoscaler_period_s=2.0,
        )
        try:
            stack.start()
        except StackError as exc:
            holder.errors.append(f"the in-cluster stack did not start: {exc}")
            pytest.fail(holder.errors[0], pytrace=False)
        holder.stack = stack
        request.config.add_cleanup(lambda: stop_cluster_stack(request.config))
    return holder.stack


def stop_cluster_stack(config: pytest.Config, *, keep_sandbox: bool = False) -> None:
    """Stops the stack (Prometheus, the PersistentVolumes it made); `keep_sandbox` leaves the node up."""
    holder = _holder(config)
    if holder.stack is not None:
        holder.stack.keep_sandbox = holder.stack.keep_sandbox or keep_sandbox
        holder.stack.stop()
        holder.stack = None
