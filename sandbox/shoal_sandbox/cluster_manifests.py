"""What the in-cluster closed loop installs on the real node, as pure functions: the Helm chart's values
(shoal's images from the local image builds, Prometheus on the node's bridge address) and the static
PersistentVolume + claim that serve the converted models as ``pvc://models/<name>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shoal_sandbox.images.index import IndexEntry

Obj = dict[str, Any]

RELEASE = "shoal"
RELEASE_NAMESPACE = "shoal-system"
MODELS_CLAIM = "models"  # InferenceServices use pvc://models/<folder>
MODELS_LABEL = "shoal.dev/sandbox-models"
# On the namespaces a ClusterStack makes for one demo, test or benchmark run: a later stack deletes the ones an
# earlier, dead process left behind (their pods would hold the node's GPUs).
STACK_NAMESPACE_LABEL = "shoal.dev/cluster-stack"
# The chart's image keys and the image builds' names for them (the sandbox runs the CPU model-server).
CHART_IMAGES = {"operator": "operator", "router": "router", "modelServer": "model-server-cpu"}
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


class ImagesMissing(ValueError):
    """The image index lacks an image the chart needs; `shoal images build` makes it."""


def image_values(index: Mapping[str, IndexEntry]) -> Obj:
    """The chart's ``images`` block: each image by its built name and tag, never pulled (no registry)."""
    missing = sorted(name for name in CHART_IMAGES.values() if name not in index)
    if missing:
        raise ImagesMissing(f"images not built: {', '.join(missing)}; run `shoal images build`")
    out: Obj = {"pullPolicy": "IfNotPresent"}
    for key, name in CHART_IMAGES.items():
        repository, _, tag = index[name].ref.rpartition(":")
        out[key] = {"repository": repository, "tag": tag}
    return out


def operator_values(
    index: Mapping[str, IndexEntry], prometheus_url: str, autoscaler_period_s: float, drift_period_s: float
) -> Obj:
    """The chart's values for the sandbox: cluster-wide operator, fast autoscaler and drift periods."""
    return {
        "images": image_values(index),
        "operator": {"driftPeriodSeconds": int(drift_period_s), "logFormat": "json"},
        "autoscaler": {"prometheusUrl": prometheus_url, "intervalSeconds": autoscaler_period_s},
    }


def namespace(name: str, *, restricted: bool = True, ephemeral: bool = False) -> Obj:
    """A namespace that enforces the `restricted` Pod Security Standard (shoal's pods all meet it);
    `ephemeral`: one run's, labelled for `leftover_namespaces`."""
    labels = dict(RESTRICTED) if restricted else {}
    if ephemeral:
        labels[STACK_NAMESPACE_LABEL] = "true"
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def models_volume(namespace_name: str, host_path: str) -> list[Obj]:
    """A static hostPath PersistentVolume holding the converted models, pre-bound to the claim
    ``models`` in ``namespace_name`` (one volume per namespace: a PV binds to exactly one claim)."""
    pv_name = f"shoal-models-{namespace_name}"
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv_name, "labels": {MODELS_LABEL: "true"}},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadOnlyMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": host_path, "type": "Directory"},
            "claimRef": {"namespace": namespace_name, "name": MODELS_CLAIM},
        },
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": MODELS_CLAIM, "namespace": namespace_name},
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "",
            "volumeName": pv_name,
            "resources": {"requests": {"storage": "10Gi"}},
        },
    }
    return [pv, pvc]


def fit_to_node(isvc: Obj, cpu: str) -> Obj:
    """A copy of an InferenceService whose per-replica CPU request is ``cpu``: the examples ask for what a
    GPU node offers, and the sandbox's one node has the machine's two cores (requests only; no limit)."""
    spec = {**isvc["spec"], "resources": {**isvc["spec"].get("resources", {}), "cpu": cpu}}
    return {**isvc, "spec": spec}
