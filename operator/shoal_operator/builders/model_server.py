"""The model-server Deployment `X-model` and its Service `X-model`."""

from __future__ import annotations

from typing import Any

from shoal_common import names

from shoal_operator.api import AdapterSpec, InferenceService, LoraSpec
from shoal_operator.builders import waivers
from shoal_operator.builders.common import (
    BuildOptions,
    container_security_context,
    http_probe,
    labels,
    metadata,
    pod_env,
    pod_security_context,
    prometheus_annotations,
    selector,
    tmp_volume,
)

COMPONENT = names.COMPONENT_MODEL_SERVER
MODEL_MOUNT = "/mnt/models"
CACHE_MOUNT = "/cache"
ADAPTER_MOUNT = "/mnt/adapters"  # pvc:// adapters on claims other than the model's: one mount per claim
# Startup probe: up to 60 minutes for a cold model load (weights download + engine warm-up), probed every
# 2 s: a replica joins within 2 s of being ready (at 10 s, the real node measured every sim replica Ready
# at ~11 s, 10 of them waiting for the probe; see bench/RESULTS.md). A probe is one local HTTP GET.
STARTUP_PERIOD_S = 2
STARTUP_FAILURES = 1800
TERMINATION_MARGIN_S = 15
# /tmp holds HOME and the vLLM, torch and Triton caches (the root filesystem is read-only).
TMP_SIZE = "2Gi"


def format_arg_value(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def model_argument(isvc: InferenceService) -> str:
    """What `--model` gets: a path in the pod for pvc:// and file://, the name/URI for hf:// and s3://."""
    model = isvc.spec.model
    if model.scheme == "pvc":
        _claim, _, sub = model.location.partition("/")
        return f"{MODEL_MOUNT}/{sub}".rstrip("/") if sub else MODEL_MOUNT
    if model.scheme == "file":
        return model.location  # an absolute path: "file:///x" -> "/x"
    if model.scheme == "hf":
        return model.location
    return model.uri  # s3://: handed to the engine as is


def adapter_claims(isvc: InferenceService) -> list[str]:
    """Claims of pvc:// adapters that need their own volume (the model's claim is mounted already)."""
    model_claim = pvc_claim(isvc)
    claims = {a.location.partition("/")[0] for a in isvc.spec.adapters if a.scheme == "pvc"}
    return sorted(claims - {model_claim} if model_claim else claims)


def adapter_path(isvc: InferenceService, adapter: AdapterSpec) -> str:
    """What the model-server loads an adapter from: a path in the pod (pvc://, file://), else the URI."""
    if adapter.scheme == "pvc":
        claim, _, sub = adapter.location.partition("/")
        root = MODEL_MOUNT if claim == pvc_claim(isvc) else f"{ADAPTER_MOUNT}/{claim}"
        return f"{root}/{sub}".rstrip("/") if sub else root
    if adapter.scheme in ("file", "hf"):
        return adapter.location
    return adapter.uri


def lora_args(isvc: InferenceService) -> list[str]:
    """LoRA limits only: the adapter list is applied live by the operator (shoal_operator.adapters), so
    changing it never changes the pod template."""
    if not isvc.spec.lora_enabled:
        return []
    lora = isvc.spec.lora or LoraSpec()
    return ["--enable-lora", "--max-loras", str(lora.max_loras), "--max-lora-rank", str(lora.max_lora_rank)]


def pvc_claim(isvc: InferenceService) -> str | None:
    model = isvc.spec.model
    return model.location.partition("/")[0] if model.scheme == "pvc" else None


def command(isvc: InferenceService) -> list[str]:
    """`shoal model-server ...` exactly as docs/architecture.md specifies (the pod runner runs it locally)."""
    spec = isvc.spec
    cmd = [
        "shoal",
        "model-server",
        "--engine",
        spec.engine.kind,
        "--model",
        model_argument(isvc),
        "--served-model-name",
        spec.model.name,
        "--host",
        "0.0.0.0",
        "--port",
        str(names.MODEL_SERVER_PORT),
        "--max-concurrency",
        str(spec.serving.max_concurrency),
        "--max-queue",
        str(spec.serving.max_queue_per_replica),
        "--request-timeout",
        str(spec.serving.request_timeout_seconds),
        "--drain-timeout",
        str(spec.serving.drain_seconds),
    ]
    if spec.serving.scheduling_policy != "fcfs":  # fcfs is the default: older pods keep their command
        cmd += ["--scheduling-policy", spec.serving.scheduling_policy]
    cmd += lora_args(isvc)
    for key in sorted(spec.engine.args):
        cmd += ["--engine-arg", f"{key}={format_arg_value(spec.engine.args[key])}"]
    sim = spec.engine.sim
    if spec.engine.kind == "sim" and sim is not None:
        for flag, value in (
            ("--sim-prefill-tokens-per-s", sim.prefill_tokens_per_second),
            ("--sim-decode-tokens-per-s", sim.decode_tokens_per_second),
            ("--sim-max-batch", sim.max_batch),
            ("--sim-startup-s", sim.startup_seconds),
        ):
            if value is not None:
                cmd += [flag, format_arg_value(value)]
    return cmd


def termination_grace_seconds(isvc: InferenceService, opts: BuildOptions) -> int:
    return opts.pre_stop_seconds + isvc.spec.serving.drain_seconds + TERMINATION_MARGIN_S


def _resources(isvc: InferenceService) -> dict[str, Any]:
    res = isvc.spec.resources
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if res.cpu is not None:
        requests["cpu"] = str(res.cpu)
    if res.memory is not None:
        requests["memory"] = str(res.memory)
        limits["memory"] = str(res.memory)
    if res.gpus > 0:
        requests[res.gpu_resource_name] = str(res.gpus)
        limits[res.gpu_resource_name] = str(res.gpus)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _volumes(isvc: InferenceService) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    spec = isvc.spec
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(spec.resources.shared_memory)}},
    ]
    tmp, tmp_mount = tmp_volume(TMP_SIZE)
    volumes.append(tmp)
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}, tmp_mount]
    claim = pvc_claim(isvc)
    if claim is not None:
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": "model", "mountPath": MODEL_MOUNT, "readOnly": True})
    else:
        cache = spec.model.cache
        if cache.storage_class_name:
            volumes.append(
                {
                    "name": "model-cache",
                    "ephemeral": {
                        "volumeClaimTemplate": {
                            "metadata": {"labels": labels(isvc, COMPONENT)},
                            "spec": {
                                "accessModes": ["ReadWriteOnce"],
                                "storageClassName": cache.storage_class_name,
                                "resources": {"requests": {"storage": str(cache.size)}},
                            },
                        }
                    },
                }
            )
        else:
            volumes.append({"name": "model-cache", "emptyDir": {"sizeLimit": str(cache.size)}})
        mounts.append({"name": "model-cache", "mountPath": CACHE_MOUNT})
    for i, claim in enumerate(adapter_claims(isvc)):
        volumes.append(
            {"name": f"adapters-{i}", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
        mounts.append({"name": f"adapters-{i}", "mountPath": f"{ADAPTER_MOUNT}/{claim}", "readOnly": True})
    return volumes, mounts


def _env(isvc: InferenceService) -> list[dict[str, Any]]:
    builtin: list[dict[str, Any]] = [
        *pod_env(),
        {"name": "SHOAL_INFERENCESERVICE", "value": isvc.name},
        {"name": "HOME", "value": "/tmp"},
    ]
    if pvc_claim(isvc) is None:
        builtin.append({"name": "HF_HOME", "value": f"{CACHE_MOUNT}/huggingface"})
    user = [e.dump() for e in isvc.spec.engine.env]
    overridden = {e["name"] for e in user}
    return [e for e in builtin if e["name"] not in overridden] + user


def _tolerations(isvc: InferenceService) -> list[dict[str, Any]]:
    tolerations = list(isvc.spec.scheduling.tolerations)
    res = isvc.spec.resources
    if res.gpus > 0 and not any(t.get("key") == res.gpu_resource_name for t in tolerations):
        # GPU nodes are commonly tainted with the resource name (GKE, the GPU operator, the sandbox).
        tolerations.append({"key": res.gpu_resource_name, "operator": "Exists", "effect": "NoSchedule"})
    return tolerations


def deployment(isvc: InferenceService, opts: BuildOptions) -> dict[str, Any]:
    spec = isvc.spec
    name = names.model_server_name(isvc.name)
    volumes, mounts = _volumes(isvc)
    container: dict[str, Any] = {
        "name": "model-server",
        "image": spec.engine.image or opts.model_server_image,
        "imagePullPolicy": opts.image_pull_policy,
        "command": command(isvc),
        "ports": [{"name": "http", "containerPort": names.MODEL_SERVER_PORT, "protocol": "TCP"}],
        "env": _env(isvc),
        "resources": _resources(isvc),
        "volumeMounts": mounts,
        "startupProbe": http_probe("/readyz", STARTUP_PERIOD_S, STARTUP_FAILURES),
        "readinessProbe": http_probe("/readyz", 5, 2),
        "livenessProbe": http_probe("/healthz", 10, 6, timeout=5),
        # Let endpoint removal reach routers and kube-proxy before SIGTERM starts the drain.
        "lifecycle": {"preStop": {"sleep": {"seconds": opts.pre_stop_seconds}}},
        "securityContext": container_security_context(),
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": termination_grace_seconds(isvc, opts),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }
    sched = spec.scheduling
    if sched.node_selector:
        pod_spec["nodeSelector"] = dict(sched.node_selector)
    tolerations = _tolerations(isvc)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if sched.affinity:
        pod_spec["affinity"] = sched.affinity
    if sched.priority_class_name:
        pod_spec["priorityClassName"] = sched.priority_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": waivers.annotated(metadata(isvc, name, COMPONENT), waivers.MODEL_SERVER),
        "spec": {
            # Follows the InferenceService's scale subresource (users, kubectl scale, the autoscaler).
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector(isvc, COMPONENT)},
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": STARTUP_PERIOD_S * STARTUP_FAILURES + 300,
            # Never fewer serving replicas during a rollout; one extra replica at a time.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": labels(isvc, COMPONENT),
                    "annotations": prometheus_annotations(names.MODEL_SERVER_PORT),
                },
                "spec": pod_spec,
            },
        },
    }


def service(isvc: InferenceService) -> dict[str, Any]:
    """`X-model`: selects the model-server pods; the router discovers replicas through its EndpointSlices."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(isvc, names.model_server_name(isvc.name), COMPONENT),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(isvc, COMPONENT),
            "ports": [
                {"name": "http", "port": names.MODEL_SERVER_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def pod_disruption_budget(isvc: InferenceService) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(isvc, names.model_server_name(isvc.name), COMPONENT),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(isvc, COMPONENT)},
            # Pods still loading (not Ready) may be evicted; only serving replicas are protected.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def pod_monitor(isvc: InferenceService) -> dict[str, Any]:
    """Prometheus Operator PodMonitor for the model-server and router pods of this service."""
    relabel = [
        {
            "sourceLabels": ["__meta_kubernetes_pod_label_shoal_dev_inferenceservice"],
            "targetLabel": "inferenceservice",
        },
        {
            "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
            "targetLabel": "component",
        },
        {"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "pod"},
    ]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": metadata(isvc, names.model_server_name(isvc.name), COMPONENT),
        "spec": {
            "selector": {"matchLabels": {names.LABEL_ISVC: isvc.name}},
            "podMetricsEndpoints": [
                {"port": "http", "path": "/metrics", "interval": "15s", "relabelings": relabel},
            ],
        },
    }
