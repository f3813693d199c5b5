"""The local Kubernetes control plane ("sandbox") for tests and the demo.

Importing this package is cheap; the CLI lives in `shoal_sandbox.cli`.
"""

from __future__ import annotations

from shoal_sandbox.nodes import GPU_RESOURCE, GpuNodeSpec
from shoal_sandbox.sandbox import POD_CIDR, ComponentStatus, Sandbox, SandboxError

__all__ = ["GPU_RESOURCE", "POD_CIDR", "ComponentStatus", "GpuNodeSpec", "Sandbox", "SandboxError"]
