"""The kwok sandbox's fake GPU nodes on the API server: created when missing, then awaited until kwok
reports them Ready (the manifests themselves are in `nodes`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from shoal_sandbox.errors import SandboxError
from shoal_sandbox.nodes import GpuNodeSpec, gpu_node, node_name

if TYPE_CHECKING:
    from shoal_sandbox.kube import SyncKube


def ensure_ready(api: SyncKube, spec: GpuNodeSpec, deadline: float) -> list[str]:
    """Creates the missing nodes and waits (until `deadline`) for them to be Ready; returns those that
    are still not Ready."""
    from shoal_sandbox.kube import ApiError

    names = [node_name(spec, i) for i in range(spec.count)]
    try:
        for i, name in enumerate(names):
            if api.get("Node", None, name) is None:
                # Applying a missing object creates it (status included, as a POST would); a node that
                # exists is left alone, kwok owns its status.
                api.apply(gpu_node(spec, i))
    except ApiError as exc:
        raise SandboxError(f"creating the GPU nodes failed: {exc}") from exc
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            conditions = (api.get("Node", None, name) or {}).get("status", {}).get("conditions", [])
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                pending.discard(name)
        if pending:
            time.sleep(0.2)
    return sorted(pending)
