"""The CRD in a real API server: examples accepted, defaults applied, invalid specs rejected readably."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from shoal_operator.api import InferenceServiceSpec

from .conftest import ROOT, Kubectl

pytestmark = pytest.mark.integration

BASE: dict[str, Any] = {
    "apiVersion": "shoal.dev/v1alpha1",
    "kind": "InferenceService",
    "metadata": {"name": "v"},
    "spec": {"model": {"name": "m", "uri": "hf://org/m"}},
}


def _with(path: str, value: Any, name: str = "v") -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc["metadata"]["name"] = name
    node = doc["spec"]
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return doc


@pytest.mark.parametrize("example", ["inferenceservice-sim.yaml", "inferenceservice-smollm2.yaml"])
def test_examples_are_valid(kubectl: Kubectl, example: str) -> None:
    res = kubectl.apply((ROOT / "examples" / example).read_text(), "--dry-run=server", check=False)
    assert res.returncode == 0, res.stderr


def test_server_defaults_match_the_models(kubectl: Kubectl) -> None:
    res = kubectl.apply(_with("replicas", 1, name="defaults"), "--dry-run=server", "-o", "yaml")
    stored = yaml.safe_load(res.stdout)["spec"]
    assert InferenceServiceSpec.model_validate(stored) == InferenceServiceSpec.model_validate(BASE["spec"])
    assert stored["autoscaling"]["behavior"]["scaleDown"]["stabilizationSeconds"] == 300
    assert stored["autoscaling"]["metrics"] == [
        {"type": "QueueDepth", "targetPerReplica": 4, "quantile": 0.95}
    ]


INVALID: list[tuple[str, dict[str, Any], str]] = [
    (
        "unknown uri scheme",
        _with("model.uri", "ftp://x/y"),
        "model.uri must start with pvc://, hf://, s3:// or file://",
    ),
    ("bad pvc claim", _with("model.uri", "pvc://Bad_Claim/x"), "valid PersistentVolumeClaim name"),
    ("relative file uri", _with("model.uri", "file://relative/path"), "file:// URIs need an absolute path"),
    ("negative gpus", _with("resources.gpus", -1), "spec.resources.gpus"),
    ("bad quantity", _with("resources.memory", "lots"), "spec.resources.memory"),
    ("unknown engine", _with("engine.kind", "tgi"), 'Unsupported value: "tgi"'),
    ("unknown strategy", _with("routing.strategy", "Random"), 'Unsupported value: "Random"'),
    (
        "min > max",
        _with("autoscaling", {"enabled": True, "minReplicas": 5, "maxReplicas": 2}),
        "autoscaling.minReplicas must be <= autoscaling.maxReplicas",
    ),
    (
        "no metrics",
        _with("autoscaling", {"enabled": True, "metrics": []}),
        "autoscaling.metrics needs at least one metric when autoscaling is enabled",
    ),
    (
        "ttft without target",
        _with("autoscaling", {"enabled": True, "metrics": [{"type": "TimeToFirstToken"}]}),
        "TimeToFirstToken metrics need targetSeconds",
    ),
    (
        "queue without target",
        _with("autoscaling", {"metrics": [{"type": "QueueDepth"}]}),
        "QueueDepth, RunningRequests and KVCacheUsage metrics need targetPerReplica",
    ),
    (
        "kv cache above 1",
        _with("autoscaling", {"metrics": [{"type": "KVCacheUsage", "targetPerReplica": 80}]}),
        "KVCacheUsage targetPerReplica is a fraction in (0, 1]",
    ),
    (
        "scale to zero with min 1",
        _with("autoscaling", {"minReplicas": 1, "scaleToZero": {"enabled": True}}),
        "autoscaling.scaleToZero.enabled requires autoscaling.minReplicas: 0",
    ),
    (
        "min 0 without scale to zero",
        _with("autoscaling", {"minReplicas": 0}),
        "autoscaling.minReplicas: 0 requires autoscaling.scaleToZero.enabled: true",
    ),
    (
        "scale to zero in Service mode",
        {
            **BASE,
            "spec": {
                **BASE["spec"],
                "routing": {"mode": "Service"},
                "autoscaling": {"minReplicas": 0, "scaleToZero": {"enabled": True}},
            },
        },
        "autoscaling.scaleToZero needs routing.mode: Router",
    ),
    (
        "api keys in Service mode",
        _with("routing", {"mode": "Service", "apiKeysSecret": "keys"}),
        "routing.apiKeysSecret and routing.rateLimit need routing.mode: Router",
    ),
    (
        "sim settings on vllm",
        _with("engine", {"kind": "vllm", "sim": {"maxBatch": 2}}),
        "engine.sim settings are only valid",
    ),
    (
        "duplicate metric",
        _with("autoscaling", {"metrics": [{"type": "QueueDepth", "targetPerReplica": 1}] * 2}),
        "Duplicate value",
    ),
    (
        "tenants in Router mode",
        _with("routing", {"tenants": {"team-a": {"weight": 2}}}),
        "routing.tenants needs routing.mode: Gateway",
    ),
    (
        "tenant id with a space",
        _with("routing", {"mode": "Gateway", "tenants": {"team a": {}}}),
        "ids are at most 128 characters, without spaces",
    ),
    ("unknown scheduling policy", _with("serving", {"schedulingPolicy": "lifo"}), "schedulingPolicy"),
    ("objective band out of range", _with("routing", {"objectives": {"chat": 5000}}), "objectives"),
    ("negative replicas", _with("replicas", -1), "spec.replicas"),
    (
        "quantile above 1",
        _with("autoscaling", {"metrics": [{"type": "TimeToFirstToken", "targetSeconds": 1, "quantile": 2}]}),
        "quantile",
    ),
    ("name too long", _with("replicas", 1, name="x" * 57), "metadata.name must be a DNS label"),
    ("missing model", {**BASE, "spec": {"replicas": 1}}, "spec.model: Required value"),
]


def test_priority_scheduling_objectives_and_tenants_accepted(kubectl: Kubectl) -> None:
    doc = _with("serving", {"schedulingPolicy": "priority"}, name="prio")
    doc["spec"]["routing"] = {
        "mode": "Gateway",
        "objectives": {"interactive": 1, "batch": -1},
        "tenants": {"team-a": {"priority": 1, "weight": 2, "tokensPerMinute": 60000}, "team-b": {}},
    }
    res = kubectl.apply(doc, "--dry-run=server", "-o", "json", check=False)
    assert res.returncode == 0, res.stderr
    stored = yaml.safe_load(res.stdout)["spec"]
    assert stored["serving"]["schedulingPolicy"] == "priority"
    assert stored["routing"]["tenants"]["team-b"] == {"weight": 1, "tokensPerMinute": 0}  # defaulted
    InferenceServiceSpec.model_validate(stored)


@pytest.mark.parametrize(("case", "doc", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_specs_rejected(kubectl: Kubectl, case: str, doc: dict[str, Any], message: str) -> None:
    res = kubectl.apply(doc, "--dry-run=server", check=False)
    assert res.returncode != 0, f"{case}: accepted"
    assert message in res.stderr, f"{case}: {res.stderr}"


def test_crd_file_is_what_the_server_serves(kubectl: Kubectl) -> None:
    served = kubectl.get("crd", "inferenceservices.shoal.dev")
    assert served is not None
    committed = yaml.safe_load(Path(ROOT / "crds" / "shoal.dev_inferenceservices.yaml").read_text())
    assert served["spec"]["versions"][0]["subresources"] == committed["spec"]["versions"][0]["subresources"]
    assert "infsvc" in served["spec"]["names"]["shortNames"]
