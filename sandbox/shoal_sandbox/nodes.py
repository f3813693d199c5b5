"""Fake GPU nodes: Node objects that kwok manages (by annotation) and reports as Ready."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_ANNOTATION_VALUE = "fake"
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class GpuNodeSpec:
    count: int = 2
    gpus: int = 8
    cpu: str = "96"
    memory: str = "1152Gi"
    pods: str = "250"
    instance_type: str = "p4de.24xlarge"
    gpu_product: str = "NVIDIA-A100-SXM4-80GB"
    gpu_memory_mib: int = 81920
    name_prefix: str = "gpu-node"


def node_name(spec: GpuNodeSpec, index: int) -> str:
    return f"{spec.name_prefix}-{index}"


def gpu_node(spec: GpuNodeSpec, index: int) -> dict[str, Any]:
    """A Node labelled like a real GPU node (NVIDIA GPU feature discovery + cloud well-known labels)."""
    name = node_name(spec, index)
    resources = {
        "cpu": spec.cpu,
        "memory": spec.memory,
        "pods": spec.pods,
        "ephemeral-storage": "2Ti",
        GPU_RESOURCE: str(spec.gpus),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: KWOK_ANNOTATION_VALUE, "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
                "node.kubernetes.io/instance-type": spec.instance_type,
                "topology.kubernetes.io/region": "sandbox",
                "topology.kubernetes.io/zone": f"sandbox-{'abc'[index % 3]}",
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.count": str(spec.gpus),
                "nvidia.com/gpu.product": spec.gpu_product,
                "nvidia.com/gpu.memory": str(spec.gpu_memory_mib),
                "nvidia.com/gpu.family": "ampere",
            },
        },
        "spec": {},
        # kwok keeps capacity/allocatable as given; it fills conditions, addresses and nodeInfo.
        "status": {"capacity": resources, "allocatable": resources},
    }
