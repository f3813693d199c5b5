"""The local Kubernetes control plane ("sandbox") for tests and the demo.

Importing this package is cheap; the CLI lives in `shoal_sandbox.cli`.
"""

from __future__ import annotations

from shoal_sandbox.control_plane import POD_CIDR
from shoal_sandbox.errors import SandboxError
from shoal_sandbox.nodes import GPU_RESOURCE, GpuNodeSpec
from shoal_sandbox.sandbox import ComponentStatus, Sandbox

__all__ = ["GPU_RESOURCE", "POD_CIDR", "ComponentStatus", "GpuNodeSpec", "Sandbox", "SandboxError"]
