"""`helm lint` and `helm template` of charts/shoal, with assertions on the rendered objects."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "shoal"
Renderer = Callable[..., list[dict[str, Any]]]
HelmRun = Callable[..., subprocess.CompletedProcess[str]]

Rule = tuple[str, str, str, tuple[str, ...]]  # (apiGroup, resource, verb, resourceNames)

CRUD = ("get", "list", "watch", "create", "patch", "delete")
READ = ("get", "list", "watch")
APPLY = ("get", "create", "patch", "delete")


def expand(rules: list[dict[str, Any]]) -> set[Rule]:
    out: set[Rule] = set()
    for rule in rules:
        names = tuple(sorted(rule.get("resourceNames") or ()))
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    out.add((group, resource, verb, names))
    return out


def grant(group: str, resources: tuple[str, ...] | str, verbs: tuple[str, ...]) -> set[Rule]:
    if isinstance(resources, str):
        resources = (resources,)
    return {(group, r, v, ()) for r in resources for v in verbs}


# Exactly what the operator touches in the namespaces it serves (see templates/_helpers.tpl).
NAMESPACED_RULES: set[Rule] = (
    grant("shoal.dev", ("inferenceservices", "inferencegateways"), ("get", "list", "watch", "patch"))
    | grant(
        "shoal.dev",
        ("inferenceservices/status", "inferenceservices/scale", "inferencegateways/status"),
        ("get", "patch", "update"),
    )
    | grant("apps", "deployments", CRUD)  # watched: kopf follows the rollouts
    # Read by name, applied and deleted; never listed or watched.
    | grant("", ("services", "serviceaccounts"), APPLY)
    | grant("policy", "poddisruptionbudgets", APPLY)
    | grant("networking.k8s.io", "networkpolicies", APPLY)
    | grant("rbac.authorization.k8s.io", ("roles", "rolebindings"), APPLY)
    | grant("monitoring.coreos.com", "podmonitors", APPLY)
    | grant("inference.networking.k8s.io", "inferencepools", APPLY)
    | grant("", "pods", READ)
    | grant("discovery.k8s.io", "endpointslices", READ)
    | grant("", "events", ("create", "patch"))
    | grant("events.k8s.io", "events", ("create", "patch"))
)
CRD_READ: set[Rule] = grant("apiextensions.k8s.io", "customresourcedefinitions", READ)


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [o for o in by_kind(objs, kind) if o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, (
        f"expected one {kind} *{name_suffix}, got {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


def operator_rules(objs: list[dict[str, Any]]) -> set[Rule]:
    return expand(one(objs, "ClusterRole", "-operator")["rules"])


def test_helm_lint_strict(helm_run: HelmRun) -> None:
    proc = helm_run("lint", "--strict", str(CHART))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "values",
    [
        {"operator": {"watchNamespaces": ["team-a", "team-b"]}},
        {"rbac": {"apiKeySecrets": [{"namespace": "team-a", "names": ["keys"]}]}},
        {
            "monitoring": {
                k: {"enabled": True}
                for k in ("serviceMonitor", "podMonitor", "prometheusRule", "grafanaDashboard")
            }
        },
    ],
)
def test_helm_lint_with_values(helm_run: HelmRun, tmp_path: Path, values: dict[str, Any]) -> None:
    path = tmp_path / "values.json"
    path.write_text(json.dumps(values))
    proc = helm_run("lint", "--strict", str(CHART), "-f", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_default_render_objects(render: Renderer) -> None:
    objs = render()
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
            "NetworkPolicy",  # the operator pod: its metrics and health ports only
        ]
    )
    # Monitoring objects need the Prometheus Operator CRDs: off unless asked for.
    assert not {"ServiceMonitor", "PodMonitor", "PrometheusRule"} & set(kinds)
    # GitOps: the chart renders no InferenceService, so it can never own (or fight over) replicas.
    assert not by_kind(objs, "InferenceService")
    for obj in objs:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "shoal"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_operator_deployment(render: Renderer) -> None:
    objs = render()
    dep = one(objs, "Deployment", "-operator")
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    sa = one(objs, "ServiceAccount")
    assert pod["serviceAccountName"] == sa["metadata"]["name"] == "shoal-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["command"] == ["shoal", "operator"]
    assert container["image"] == "ghcr.io/shoal-dev/shoal-operator:0.1.0"
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["SHOAL_PROMETHEUS_URL"] == "http://prometheus-operated.monitoring.svc:9090"
    assert env["SHOAL_NAMESPACES"] == ""
    assert env["SHOAL_MODEL_SERVER_IMAGE"] == "ghcr.io/shoal-dev/shoal-model-server:0.1.0"
    assert env["SHOAL_ROUTER_IMAGE"] == "ghcr.io/shoal-dev/shoal-router:0.1.0"
    assert env["SHOAL_LOG_LEVEL"] == "INFO"
    assert env["SHOAL_PEERING_NAME"] == "shoal"
    assert env["SHOAL_METRICS_PORT"] == "9102"
    assert env["SHOAL_LEASE_NAMESPACE"] == "shoal-system"
    assert env["SHOAL_LEASE_NAME"] == "shoal-operator-leader"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 9102, "health": 8081}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # The metrics Service selects exactly the operator pod.
    svc = one(objs, "Service", "-operator")
    assert svc["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "operator"


def test_image_digest_wins_and_pull_policies(render: Renderer) -> None:
    digest = "sha256:" + "ab" * 32
    objs = render(
        {
            "images": {
                "operator": {"repository": "reg.example/ops", "tag": "9.9", "digest": digest},
                "modelServer": {"repository": "reg.example/ms", "tag": "1.2", "pullPolicy": "Always"},
                "router": {"repository": "reg.example/rt", "digest": digest},
                "pullPolicy": "Never",
            }
        }
    )
    (container,) = one(objs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["image"] == f"reg.example/ops@{digest}"
    assert container["imagePullPolicy"] == "Never"  # the default of every image
    assert env["SHOAL_MODEL_SERVER_IMAGE"] == "reg.example/ms:1.2"
    assert env["SHOAL_ROUTER_IMAGE"] == f"reg.example/rt@{digest}"
    assert env["SHOAL_IMAGE_PULL_POLICY"] == "Always"


def test_operator_pod_meets_restricted_with_the_images_uid(render: Renderer) -> None:
    """The chart runs the operator as the uid every shoal image declares, read-only, restricted PSS."""
    pod = one(render(), "Deployment", "-operator")["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert (psc["runAsUser"], psc["runAsGroup"], psc["fsGroup"]) == (10001, 10001, 10001)
    assert psc["runAsNonRoot"] is True and psc["seccompProfile"] == {"type": "RuntimeDefault"}
    dockerfile = (REPO / "docker" / "operator.Dockerfile").read_text()
    assert re.findall(r"^USER (\S+)", dockerfile, re.M)[-1] == "10001:10001"
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"] and "emptyDir" in pod["volumes"][0]


def test_operator_values_flow_into_env(render: Renderer) -> None:
    objs = render(
        {
            "operator": {"watchNamespaces": ["team-a", "team-b"], "logLevel": "DEBUG", "replicas": 0},
            "autoscaler": {"prometheusUrl": "https://prom.example:9443/prefix"},
            "images": {"modelServer": {"repository": "reg.local/ms", "tag": "v9"}},
        }
    )
    dep = one(objs, "Deployment", "-operator")
    assert dep["spec"]["replicas"] == 0
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SHOAL_NAMESPACES"] == "team-a,team-b"
    assert env["SHOAL_LOG_LEVEL"] == "DEBUG"
    assert env["SHOAL_PROMETHEUS_URL"] == "https://prom.example:9443/prefix"
    assert env["SHOAL_MODEL_SERVER_IMAGE"] == "reg.local/ms:v9"


def test_clusterwide_rbac_is_exactly_what_shoal_touches(render: Renderer) -> None:
    objs = render()
    expected = (
        NAMESPACED_RULES
        | CRD_READ
        | grant("kopf.dev", "clusterkopfpeerings", ("get", "list", "watch", "create", "patch"))
    )
    assert operator_rules(objs) == expected
    binding = one(objs, "ClusterRoleBinding", "-operator")
    assert binding["roleRef"]["name"] == one(objs, "ClusterRole", "-operator")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "shoal-operator", "namespace": "shoal-system"}
    ]
    assert [r["metadata"]["name"] for r in by_kind(objs, "Role")] == ["shoal-operator-leader"]


def test_leader_lease_is_the_only_lease(render: Renderer) -> None:
    objs = render({"operator": {"watchNamespaces": ["team-a"]}})
    role = one(objs, "Role", "-leader")
    assert role["metadata"]["namespace"] == "shoal-system"
    assert expand(role["rules"]) == {("coordination.k8s.io", "leases", "create", ())} | {
        ("coordination.k8s.io", "leases", v, ("shoal-operator-leader",)) for v in ("get", "update", "patch")
    }
    binding = one(objs, "RoleBinding", "-leader")
    assert binding["roleRef"]["name"] == "shoal-operator-leader"
    assert binding["subjects"][0]["name"] == "shoal-operator"


def test_podmonitor_rules_are_optional(render: Renderer) -> None:
    rules = operator_rules(render({"rbac": {"podMonitors": False}}))
    assert not {r for r in rules if r[0] == "monitoring.coreos.com"}


FORBIDDEN_VERBS = {"*", "escalate", "bind", "impersonate", "deletecollection"}


def _assert_least_privilege(objs: list[dict[str, Any]]) -> None:
    for kind in ("ClusterRole", "Role"):
        for role in by_kind(objs, kind):
            if not role["metadata"]["name"].endswith(("-operator", "-api-keys", "-leader")):
                continue  # the aggregated user-facing roles are checked separately
            for group, resource, verb, names in expand(role["rules"]):
                assert "*" not in (group, resource, verb), role["metadata"]["name"]
                assert verb not in FORBIDDEN_VERBS, (role["metadata"]["name"], resource, verb)
                if resource == "leases":
                    assert kind == "Role" and (names or verb == "create"), role["metadata"]["name"]
                assert resource not in {"nodes", "namespaces", "clusterroles", "clusterrolebindings"} or (
                    resource == "namespaces" and verb in READ
                )
                if resource == "secrets":
                    # Secrets only in a namespaced Role, only named ones.
                    assert kind == "Role" and names, role["metadata"]["name"]


@pytest.mark.parametrize(
    "values",
    [
        None,
        {"operator": {"watchNamespaces": ["team-a", "team-b"]}},
        {"operator": {"watchNamespaces": ["team-*"]}},
        {"rbac": {"apiKeySecrets": [{"namespace": "team-a", "names": ["chat-keys", "other-keys"]}]}},
    ],
)
def test_no_secrets_cluster_wide_no_escalation(render: Renderer, values: dict[str, Any] | None) -> None:
    objs = render(values)
    for role in by_kind(objs, "ClusterRole"):
        assert not {r for r in expand(role["rules"]) if r[1] == "secrets"}, role["metadata"]["name"]
    _assert_least_privilege(objs)


def test_api_key_secrets_are_named_and_namespaced(render: Renderer) -> None:
    objs = render({"rbac": {"apiKeySecrets": [{"namespace": "team-a", "names": ["chat-keys"]}]}})
    role = one(objs, "Role", "-api-keys")
    assert role["metadata"]["namespace"] == "team-a"
    assert expand(role["rules"]) == {("", "secrets", v, ("chat-keys",)) for v in READ}
    binding = one(objs, "RoleBinding", "-api-keys")
    assert binding["metadata"]["namespace"] == "team-a"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"][0]["name"] == "shoal-operator"
    assert binding["subjects"][0]["namespace"] == "shoal-system"


def test_namespaced_mode_uses_roles(render: Renderer) -> None:
    objs = render({"operator": {"watchNamespaces": ["team-a", "team-b"]}})
    # Nothing namespaced cluster-wide; only reading Namespaces (kopf's namespace observer).
    assert operator_rules(objs) == CRD_READ | grant("", "namespaces", READ)
    roles = [r for r in by_kind(objs, "Role") if r["metadata"]["name"].endswith("-operator")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert expand(role["rules"]) == NAMESPACED_RULES | grant(
            "kopf.dev", "kopfpeerings", ("get", "list", "watch", "create", "patch")
        )
    bindings = [b for b in by_kind(objs, "RoleBinding") if b["metadata"]["name"].endswith("-operator")]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]


def test_namespace_globs_need_namespace_reads(render: Renderer) -> None:
    objs = render({"operator": {"watchNamespaces": ["team-*"]}})
    assert operator_rules(objs) == CRD_READ | grant("", "namespaces", READ)


def test_aggregated_user_roles(render: Renderer) -> None:
    objs = render()
    edit = one(objs, "ClusterRole", "-inferenceservice-edit")
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert {r[0] for r in expand(edit["rules"])} == {"shoal.dev"}
    view = one(objs, "ClusterRole", "-inferenceservice-view")
    assert {r[2] for r in expand(view["rules"])} == set(READ)
    assert not by_kind(render({"rbac": {"aggregateToDefaultRoles": False}}), "ClusterRole")[1:]


def test_rbac_off(render: Renderer) -> None:
    objs = render({"rbac": {"create": False}})
    assert not by_kind(objs, "ClusterRole") and not by_kind(objs, "ClusterRoleBinding")


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["operator.replicas=2"], "at '/operator/replicas': value must be one of 0, 1"),
        (["operator.logLevel=LOUD"], "at '/operator/logLevel': value must be one of 'DEBUG', 'INFO'"),
        (
            ["autoscaler.prometheusUrl=prometheus:9090"],
            "at '/autoscaler/prometheusUrl': 'prometheus:9090' does not match",
        ),
        (["autoscaler.intervalSeconds=0"], "at '/autoscaler/intervalSeconds': minimum: got 0, want 1"),
        (["autoscaler.enabled=maybe"], "at '/autoscaler/enabled': got string, want boolean"),
        (["operatr.replicas=1"], "additional properties 'operatr' not allowed"),
        (["operator.watchNamespaces[0]=Team_A"], "at '/operator/watchNamespaces/0': 'Team_A' does not match"),
        (["rbac.apiKeySecrets[0].namespace=team-a"], "at '/rbac/apiKeySecrets/0': missing property 'names'"),
        (["images.pullPolicy=Sometimes"], "at '/images/pullPolicy': value must be one of"),
        (["images.router.digest=abc123"], "at '/images/router/digest': 'abc123' does not match"),
        (
            ["monitoring.prometheusRule.operatorDownFor=5 minutes"],
            "at '/monitoring/prometheusRule/operatorDownFor'",
        ),
    ],
)
def test_values_schema_rejects_with_readable_message(
    helm_run: HelmRun, sets: list[str], message: str
) -> None:
    args = ["template", "shoal", str(CHART)]
    for s in sets:
        args += ["--set", s]
    proc = helm_run(*args)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr, proc.stderr


def test_schema_documents_every_default_value() -> None:
    """values.yaml and values.schema.json describe the same keys (the schema forbids unknown keys)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: Any, sch: dict[str, Any], path: str) -> None:
        if sch.get("type") != "object" or "properties" not in sch or not isinstance(node, dict):
            return
        props = sch["properties"]
        for key, value in node.items():
            assert key in props, f"{path}.{key} is in values.yaml but not in values.schema.json"
            walk(value, props[key], f"{path}.{key}")
        for key in props:
            assert key in node or key == "global", f"{path}.{key} is in the schema but has no default"

    walk(values, schema, "")


def _crd_files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.glob("*.yaml"))}


def test_chart_crds_are_a_copy_of_the_top_level_crds() -> None:
    top, chart = _crd_files(REPO / "crds"), _crd_files(CHART / "crds")
    fix = "cp crds/*.yaml charts/shoal/crds/  (and remove files that crds/ no longer has)"
    assert sorted(top) == sorted(chart), f"charts/shoal/crds differs from crds/ in file names; fix: {fix}"
    for name, text in top.items():
        assert chart[name] == text, f"charts/shoal/crds/{name} differs from crds/{name}; fix: {fix}"
    for name, text in chart.items():
        assert "{{" not in text, f"{name}: Helm never templates crds/; no template syntax there"


def test_chart_crds_include_inferenceservice() -> None:
    names = []
    for path in (CHART / "crds").glob("*.yaml"):
        names += [d["metadata"]["name"] for d in yaml.safe_load_all(path.read_text()) if d]
    assert "inferenceservices.shoal.dev" in names and "inferencegateways.shoal.dev" in names


ARCH_METRICS = set(
    re.findall(r"`((?:vllm:|shoal_)[a-z_:]+)", (REPO / "docs" / "architecture.md").read_text())
)


def _metrics_in(expr: str) -> set[str]:
    names = set(re.findall(r"\b((?:vllm:|shoal_)[a-z_:]+)", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def test_monitoring_objects(render: Renderer, tmp_path: Path) -> None:
    objs = render(
        {
            "monitoring": {
                k: {"enabled": True}
                for k in ("serviceMonitor", "podMonitor", "prometheusRule", "grafanaDashboard")
            }
        }
    )
    sm = one(objs, "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    pm = one(objs, "PodMonitor")
    targets = {r["targetLabel"] for r in pm["spec"]["podMetricsEndpoints"][0]["relabelings"]}
    assert {"namespace", "inferenceservice"} <= targets
    rule = one(objs, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {
        "ShoalOperatorDown",
        "ShoalAutoscalerMetricsUnavailable",
        "ShoalReplicasPinnedAtMax",
    }
    for alert in alerts.values():
        assert _metrics_in(alert["expr"]) <= ARCH_METRICS, alert["expr"]
    promtool = shutil.which("promtool")
    if promtool:
        path = tmp_path / "rules.yaml"
        path.write_text(yaml.safe_dump(rule["spec"]))
        proc = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_grafana_dashboard(render: Renderer) -> None:
    objs = render({"monitoring": {"grafanaDashboard": {"enabled": True}}})
    cm = one(objs, "ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(cm["data"]["shoal.json"])
    titles = {p["title"] for p in dash["panels"]}
    assert {
        "Request rate",
        "Queue depth",
        "Time to first token, p95",
        "Replicas: desired vs ready",
        "Autoscaler decisions",
    } <= titles
    for panel in dash["panels"]:
        for target in panel["targets"]:
            assert _metrics_in(target["expr"]) <= ARCH_METRICS, target["expr"]


def test_notes_explain_first_inferenceservice(helm_run: HelmRun) -> None:
    proc = helm_run("install", "shoal", str(CHART), "--dry-run=client", "--namespace", "shoal-system")
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "kind: InferenceService" in notes
    assert "--for=condition=Ready" in notes
    assert "kubectl -n shoal-system rollout status deployment/shoal-operator" in notes


def test_chart_env_names_are_operator_settings(render: Renderer) -> None:
    """Every SHOAL_* variable the chart sets is a field of the operator's settings (no silent typos)."""
    from shoal_operator import settings

    fields = {f"SHOAL_{name.upper()}" for name in settings.OperatorSettings.model_fields}
    container = one(render(), "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    names = {e["name"] for e in container["env"] if e["name"].startswith("SHOAL_")}
    assert names - fields == set()


def _covers(grants: set[Rule], wanted: Rule) -> bool:
    group, resource, verb, names = wanted
    return any(
        g == group and r == resource and v == verb and (not n or (names and set(names) <= set(n)))
        for g, r, v, n in grants
    )


@pytest.mark.parametrize("watch", [[], ["team-a"]])
def test_operator_may_grant_the_router_role_it_builds(render: Renderer, watch: list[str]) -> None:
    """Kubernetes refuses a Role with rules its creator does not hold (no escalate verb here): every rule
    of the router Role the operator builds must be held by the operator in that namespace."""
    from shoal_operator import api
    from shoal_operator.builders import router

    isvc = api.InferenceService.model_validate(
        {
            "metadata": {"name": "chat", "namespace": "team-a", "uid": "u1"},
            "spec": {
                "model": {"name": "m", "uri": "hf://org/m"},
                "routing": {"mode": "Router", "apiKeysSecret": "chat-keys"},
            },
        }
    )
    objs = render(
        {
            "operator": {"watchNamespaces": watch},
            "rbac": {"apiKeySecrets": [{"namespace": "team-a", "names": ["chat-keys"]}]},
        }
    )
    held = operator_rules(objs)
    for role in by_kind(objs, "Role"):
        if role["metadata"]["namespace"] == "team-a":
            held |= expand(role["rules"])
    wanted = expand(router.role(isvc)["rules"])
    assert ("", "secrets", "get", ("chat-keys",)) in wanted
    missing = {w for w in wanted if not _covers(held, w)}
    assert not missing, f"the operator could not create the router Role: it lacks {sorted(missing)}"
    # Without the Secret listed, the operator holds no Secret access anywhere.
    objs = render({"operator": {"watchNamespaces": watch}})
    assert not any(r[1] == "secrets" for role in by_kind(objs, "Role") for r in expand(role["rules"]))
