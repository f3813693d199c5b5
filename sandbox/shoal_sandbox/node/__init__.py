"""The sandbox's real node: kubelet + containerd + runc + CNI + kube-proxy + CoreDNS, with fake GPUs.

One node per host (it owns the bridge `shoalbr0` and 198.18.0.1). `RealNode.up()` records what it will
change on the host before changing it, and `RealNode.down()` puts exactly that back (docs/sandbox.md).
"""

from shoal_sandbox.node.images import import_images
from shoal_sandbox.node.node import NodeError, RealNode

__all__ = ["NodeError", "RealNode", "import_images"]
