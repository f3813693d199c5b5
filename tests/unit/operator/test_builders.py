"""Every builder: spec in, manifest out."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from shoal_common import names
from shoal_operator.builders import BuildOptions, desired_children, model_server, router
from shoal_operator.builders.common import SHOAL_UID, selector_string, url

from tests.unit.operator.helpers import isvc

pytestmark = pytest.mark.unit

OPTS = BuildOptions(model_server_image="img/shoal:1", router_image="img/router:1")


def _container(dep: dict[str, Any]) -> dict[str, Any]:
    return dep["spec"]["template"]["spec"]["containers"][0]


def _flag(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_model_deployment_command_matches_contract() -> None:
    obj = isvc(
        {
            "engine": {
                "kind": "vllm",
                "args": {"max-model-len": 4096, "enforce-eager": True, "gpu-memory-utilization": 0.9},
            },
            "serving": {
                "maxQueuePerReplica": 10,
                "maxConcurrency": 3,
                "requestTimeoutSeconds": 99,
                "drainSeconds": 7,
            },
        }
    )
    cmd = _container(model_server.deployment(obj, OPTS))["command"]
    assert cmd[:2] == ["shoal", "model-server"]
    assert _flag(cmd, "--engine") == "vllm"
    assert _flag(cmd, "--model") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert _flag(cmd, "--served-model-name") == "smollm2"
    assert (_flag(cmd, "--host"), _flag(cmd, "--port")) == ("0.0.0.0", "8000")
    assert _flag(cmd, "--max-concurrency") == "3" and _flag(cmd, "--max-queue") == "10"
    assert _flag(cmd, "--request-timeout") == "99" and _flag(cmd, "--drain-timeout") == "7"
    engine_args = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--engine-arg"]
    assert engine_args == ["enforce-eager=true", "gpu-memory-utilization=0.9", "max-model-len=4096"]
    assert "--sim-startup-s" not in cmd


def test_sim_flags() -> None:
    obj = isvc(
        {
            "engine": {
                "kind": "sim",
                "sim": {"startupSeconds": 2.5, "maxBatch": 4, "decodeTokensPerSecond": 50},
            }
        }
    )
    cmd = _container(model_server.deployment(obj, OPTS))["command"]
    assert _flag(cmd, "--engine") == "sim"
    assert _flag(cmd, "--sim-startup-s") == "2.5" and _flag(cmd, "--sim-max-batch") == "4"
    assert _flag(cmd, "--sim-decode-tokens-per-s") == "50.0"
    assert "--sim-prefill-tokens-per-s" not in cmd


def test_model_deployment_pod_shape() -> None:
    obj = isvc(
        {
            "resources": {"gpus": 2, "cpu": 4, "memory": "16Gi", "sharedMemory": "2Gi"},
            "replicas": 3,
            "scheduling": {
                "nodeSelector": {"pool": "gpu"},
                "priorityClassName": "high",
                "affinity": {"nodeAffinity": {}},
            },
        }
    )
    dep = model_server.deployment(obj, OPTS)
    assert dep["metadata"]["name"] == "chat-model" and dep["metadata"]["namespace"] == "team-a"
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["selector"]["matchLabels"] == {
        names.LABEL_ISVC: "chat",
        names.LABEL_COMPONENT: "model-server",
    }
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"] == {
        "app.kubernetes.io/name": "shoal",
        "app.kubernetes.io/instance": "chat",
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/managed-by": "shoal-operator",
        "shoal.dev/inferenceservice": "chat",
    }
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8000",
        "prometheus.io/path": "/metrics",
    }
    c = pod["spec"]["containers"][0]
    assert c["image"] == "img/shoal:1"
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert c["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"},
        "limits": {"memory": "16Gi", "nvidia.com/gpu": "2"},
    }
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 1800  # slow loads
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["lifecycle"]["preStop"]["sleep"]["seconds"] == OPTS.pre_stop_seconds
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["terminationGracePeriodSeconds"] >= 30 + OPTS.pre_stop_seconds  # drainSeconds default 30
    assert spec["nodeSelector"] == {"pool": "gpu"} and spec["priorityClassName"] == "high"
    assert spec["affinity"] == {"nodeAffinity": {}}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    owner = dep["metadata"]["ownerReferences"][0]
    assert owner == {
        "apiVersion": "shoal.dev/v1alpha1",
        "kind": "InferenceService",
        "name": "chat",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_no_gpu_no_gpu_resources_or_toleration() -> None:
    dep = model_server.deployment(isvc({"resources": {"gpus": 0}}), OPTS)
    c = _container(dep)
    assert "nvidia.com/gpu" not in str(c["resources"])
    assert "tolerations" not in dep["spec"]["template"]["spec"]


def test_custom_gpu_resource_name() -> None:
    dep = model_server.deployment(isvc({"resources": {"gpus": 1, "gpuResourceName": "amd.com/gpu"}}), OPTS)
    assert _container(dep)["resources"]["limits"]["amd.com/gpu"] == "1"


@pytest.mark.parametrize(
    ("uri", "model_arg", "volume"),
    [
        ("pvc://models/smollm2", "/mnt/models/smollm2", {"claimName": "models", "readOnly": True}),
        ("pvc://models", "/mnt/models", {"claimName": "models", "readOnly": True}),
        ("file:///data/models/smollm2", "/data/models/smollm2", None),
        ("hf://org/name", "org/name", None),
        ("s3://bucket/path/model", "s3://bucket/path/model", None),
    ],
)
def test_model_uri_to_volume_and_argument(uri: str, model_arg: str, volume: dict[str, Any] | None) -> None:
    dep = model_server.deployment(isvc({"model": {"name": "m", "uri": uri, "cache": {"size": "5Gi"}}}), OPTS)
    c = _container(dep)
    assert _flag(c["command"], "--model") == model_arg
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    if volume is not None:
        assert volumes["model"]["persistentVolumeClaim"] == volume
        assert "model-cache" not in volumes
    else:
        assert volumes["model-cache"] == {"name": "model-cache", "emptyDir": {"sizeLimit": "5Gi"}}
        assert {"name": "HF_HOME", "value": "/cache/huggingface"} in c["env"]


def test_cache_with_storage_class_is_an_ephemeral_pvc() -> None:
    obj = isvc(
        {"model": {"name": "m", "uri": "hf://o/m", "cache": {"size": "50Gi", "storageClassName": "fast"}}}
    )
    volumes = {
        v["name"]: v for v in model_server.deployment(obj, OPTS)["spec"]["template"]["spec"]["volumes"]
    }
    claim = volumes["model-cache"]["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == "fast" and claim["resources"]["requests"]["storage"] == "50Gi"


def test_user_env_overrides_builtin_without_duplicates() -> None:
    obj = isvc({"engine": {"env": [{"name": "HOME", "value": "/home/x"}, {"name": "A", "value": "1"}]}})
    env = _container(model_server.deployment(obj, OPTS))["env"]
    names_ = [e["name"] for e in env]
    assert len(names_) == len(set(names_))
    assert {"name": "HOME", "value": "/home/x"} in env and {"name": "A", "value": "1"} in env


def test_engine_image_overrides_default() -> None:
    assert (
        _container(model_server.deployment(isvc({"engine": {"image": "mine:2"}}), OPTS))["image"] == "mine:2"
    )


def test_model_service() -> None:
    svc = model_server.service(isvc())
    assert svc["metadata"]["name"] == "chat-model"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    assert svc["spec"]["selector"] == {names.LABEL_ISVC: "chat", names.LABEL_COMPONENT: "model-server"}


def test_pdb() -> None:
    pdb = model_server.pod_disruption_budget(isvc({"replicas": 3}))
    assert pdb["metadata"]["name"] == "chat-model" and pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"][names.LABEL_COMPONENT] == "model-server"


def test_pod_monitor() -> None:
    pm = model_server.pod_monitor(isvc())
    assert pm["kind"] == "PodMonitor" and pm["metadata"]["name"] == "chat-model"
    assert pm["spec"]["selector"]["matchLabels"] == {names.LABEL_ISVC: "chat"}
    endpoint = pm["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert {r["targetLabel"] for r in endpoint["relabelings"]} >= {"inferenceservice"}


def test_router_deployment_and_rbac() -> None:
    obj = isvc(
        {
            "routing": {
                "strategy": "PrefixHash",
                "apiKeysSecret": "keys",
                "rateLimit": {"requestsPerSecond": 5, "burst": 10},
            }
        }
    )
    dep = router.deployment(obj, OPTS)
    assert dep["metadata"]["name"] == "chat-router"
    c = _container(dep)
    assert c["command"][:2] == ["shoal", "router"]
    cmd = c["command"]
    assert (_flag(cmd, "--host"), _flag(cmd, "--port")) == ("0.0.0.0", "8080")
    assert _flag(cmd, "--discovery") == "kubernetes" and _flag(cmd, "--namespace") == "team-a"
    assert _flag(cmd, "--service") == "chat-model" and _flag(cmd, "--strategy") == "PrefixHash"
    assert _flag(cmd, "--api-keys-secret") == "keys"
    assert _flag(cmd, "--rate-limit-rps") == "5.0" and _flag(cmd, "--rate-limit-burst") == "10"
    assert c["image"] == "img/router:1"
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "chat-router"
    assert dep["spec"]["template"]["metadata"]["labels"][names.LABEL_COMPONENT] == "router"
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    role = router.role(obj)
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert resources == {"endpointslices", "pods", "secrets"}
    assert all(set(rule["verbs"]) == {"get", "list", "watch"} for rule in role["rules"])
    secret_rule = next(r for r in role["rules"] if r["resources"] == ["secrets"])
    assert secret_rule["resourceNames"] == ["keys"]
    binding = router.role_binding(obj)
    assert binding["roleRef"]["name"] == "chat-router"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "chat-router", "namespace": "team-a"}]
    assert router.service_account(obj)["metadata"]["name"] == "chat-router"


def test_router_without_keys_has_no_secret_access() -> None:
    assert "secrets" not in str(router.role(isvc()))
    assert "--api-keys-secret" not in router.command(isvc())


@pytest.mark.parametrize(("mode", "component"), [("Router", "router"), ("Service", "model-server")])
def test_public_service_targets(mode: str, component: str) -> None:
    svc = router.public_service(isvc({"routing": {"mode": mode}}))
    assert svc["metadata"]["name"] == "chat"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert svc["spec"]["selector"][names.LABEL_COMPONENT] == component


def _kinds(objs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objs}


def test_desired_children_router_mode_one_replica() -> None:
    children = desired_children(isvc(), OPTS)
    assert _kinds(children.apply) == {
        ("ServiceAccount", "chat-router"),
        ("Role", "chat-router"),
        ("RoleBinding", "chat-router"),
        ("Service", "chat-model"),
        ("Service", "chat"),
        ("Deployment", "chat-model"),
        ("Deployment", "chat-router"),
        ("NetworkPolicy", "chat-model"),  # spec.networkPolicy.enabled defaults on
        ("NetworkPolicy", "chat-router"),
    }
    assert [a for a in children.absent if not a[1].endswith("-epp") and a[0] != "InferencePool"] == [
        ("PodDisruptionBudget", "chat-model")
    ]
    for obj in children.apply:
        assert obj["metadata"]["labels"][names.LABEL_ISVC] == "chat"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_desired_children_service_mode_replicas_podmonitor() -> None:
    opts = BuildOptions(podmonitor_available=True)
    children = desired_children(isvc({"routing": {"mode": "Service"}, "replicas": 2}), opts)
    assert _kinds(children.apply) == {
        ("Service", "chat-model"),
        ("Service", "chat"),
        ("Deployment", "chat-model"),
        ("PodDisruptionBudget", "chat-model"),
        ("PodMonitor", "chat-model"),
        ("NetworkPolicy", "chat-model"),
    }
    assert ("Deployment", "chat-router") in children.absent


def test_selector_and_url() -> None:
    obj = isvc()
    assert selector_string(obj) == "shoal.dev/inferenceservice=chat,app.kubernetes.io/component=model-server"
    assert url(obj, OPTS) == "http://chat.team-a.svc.cluster.local"


def test_builders_are_deterministic() -> None:
    assert desired_children(isvc(), OPTS) == desired_children(isvc(), OPTS)


def _restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What the `restricted` Pod Security Standard (plus shoal's read-only root) would refuse."""
    out: list[str] = []
    psc = pod.get("securityContext", {})
    if psc.get("seccompProfile", {}).get("type") not in {"RuntimeDefault", "Localhost"}:
        out.append("pod seccompProfile")
    for c in pod["containers"]:
        sc = c.get("securityContext", {})
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            out.append(f"{c['name']}: runAsNonRoot")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{c['name']}: allowPrivilegeEscalation")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
            out.append(f"{c['name']}: capabilities")
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{c['name']}: readOnlyRootFilesystem")
        if sc.get("privileged"):
            out.append(f"{c['name']}: privileged")
    allowed = {"emptyDir", "persistentVolumeClaim", "ephemeral", "configMap", "secret", "projected"}
    for v in pod.get("volumes", []):
        if not set(v) - {"name"} <= allowed:
            out.append(f"volume {v['name']}: {sorted(set(v) - {'name'})}")
    return out


@pytest.mark.parametrize("component", ["model-server", "router"])
def test_pods_meet_the_restricted_pod_security_standard(component: str) -> None:
    build = model_server.deployment if component == "model-server" else router.deployment
    pod = build(isvc({"model": {"name": "smollm2", "uri": "pvc://models/smollm2"}}), OPTS)["spec"][
        "template"
    ]["spec"]
    assert _restricted_violations(pod) == []
    assert pod["securityContext"]["runAsUser"] == SHOAL_UID
    assert pod["securityContext"]["runAsGroup"] == SHOAL_UID
    assert pod["securityContext"]["fsGroup"] == SHOAL_UID


def test_model_server_writes_only_to_tmp_and_its_volumes() -> None:
    """Read-only root: HOME and the vLLM/torch caches live in the /tmp emptyDir."""
    dep = model_server.deployment(isvc(), OPTS)
    c = _container(dep)
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "HOME", "value": "/tmp"} in c["env"]
    router_pod = router.deployment(isvc(), OPTS)["spec"]["template"]["spec"]
    assert "volumes" not in router_pod  # the router writes nothing


def test_pod_uid_is_the_images_user() -> None:
    """One uid: every Dockerfile's USER is the uid the operator's pods run as."""
    docker = Path(__file__).resolve().parents[3] / "docker"
    users = {
        f.name: re.findall(r"^USER (\S+)", f.read_text(), re.M)[-1]
        for f in sorted(docker.glob("*.Dockerfile"))
    }
    assert len(users) >= 4
    assert set(users.values()) == {f"{SHOAL_UID}:{SHOAL_UID}"}, users
