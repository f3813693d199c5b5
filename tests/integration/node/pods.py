"""Pod manifests and waits for the real node's tests."""

from __future__ import annotations

from typing import Any

from support.eventually import eventually
from support.kubectl import Kubectl


def pod(name: str, image: str, labels: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "server",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"containerPort": 8080}],
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            *extra.pop("env", []),
        ],
        "readinessProbe": {"httpGet": {"path": "/state", "port": 8080}, "periodSeconds": 1},
        "resources": extra.pop("resources", {"requests": {"cpu": "10m", "memory": "16Mi"}}),
    }
    spec: dict[str, Any] = {"containers": [container], **extra}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": spec,
    }


def running_ip(kube: Kubectl, name: str, timeout: float = 90) -> str:
    def ready() -> str:
        obj = kube.json("get", "pod", name)
        conditions = {c["type"]: c["status"] for c in obj["status"].get("conditions", [])}
        assert conditions.get("Ready") == "True", obj["status"]
        return str(obj["status"]["podIP"])

    return eventually(ready, timeout=timeout, interval=0.5, desc=f"pod {name} Ready")
