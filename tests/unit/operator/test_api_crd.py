"""The pydantic models and the CRD generated from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from shoal_operator import api, crdgen

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def test_committed_crd_is_current() -> None:
    committed = (ROOT / "crds" / crdgen.CRD_FILE).read_text()
    assert committed == crdgen.render_crd(), "crds/ is stale: run `python -m shoal_operator.crdgen`"
    assert (ROOT / "crds" / crdgen.PEERING_FILE).read_text() == crdgen.render_peering()


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key in ("properties",):
            for name, child in node.get(key, {}).items():
                out += _walk(child, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                out += _walk(node[key], f"{path}[{key}]")
    return out


def test_schema_is_structural() -> None:
    schema = crdgen.openapi_schema()
    for path, node in _walk(schema):
        assert "$ref" not in node and "$defs" not in node, path
        assert "title" not in node, path
        assert "const" not in node and "propertyNames" not in node, path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), path
        else:
            assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        if node.get("type") == "object" and "properties" in node:
            assert "additionalProperties" not in node, path
        assert node.get("default", 0) is not None, path


def test_subresources_columns_names() -> None:
    crd = crdgen.crd()
    version = crd["spec"]["versions"][0]
    assert crd["metadata"]["name"] == "inferenceservices.shoal.dev"
    assert crd["spec"]["names"]["shortNames"] == ["infsvc"]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Model", "Ready", "Desired", "URL", "Age"} <= columns


def _defaults_from_schema(schema: dict[str, Any]) -> Any:
    """Apply CRD defaults the way the API server does to an empty object (one level of `default: {}`)."""
    if schema.get("type") != "object" or "properties" not in schema:
        return schema.get("default")
    out: dict[str, Any] = {}
    for name, child in schema["properties"].items():
        if "default" in child:
            value = child["default"]
            if isinstance(value, dict) and "properties" in child:
                value = {**(_defaults_from_schema(child) or {}), **value}
            out[name] = value
    return out


def test_crd_defaults_match_pydantic_defaults() -> None:
    spec_schema = crdgen.openapi_schema()["properties"]["spec"]
    defaulted = _defaults_from_schema(spec_schema)
    defaulted["model"] = {
        "name": "m",
        "uri": "hf://org/m",
        "cache": _defaults_from_schema(spec_schema["properties"]["model"]["properties"]["cache"]),
    }
    from_server = api.InferenceServiceSpec.model_validate(defaulted)
    from_python = api.InferenceServiceSpec.model_validate({"model": {"name": "m", "uri": "hf://org/m"}})
    assert from_server == from_python
    # The fully defaulted autoscaling block the autoscaler reads.
    auto = from_python.autoscaling
    assert (auto.enabled, auto.min_replicas, auto.max_replicas, auto.tolerance) == (False, 1, 4, 0.1)
    assert auto.metrics[0].type == "QueueDepth" and auto.metrics[0].target_per_replica == 4
    assert (
        auto.behavior.scale_up.period_seconds == 15 and auto.behavior.scale_down.stabilization_seconds == 300
    )
    assert auto.behavior.scale_down.max_percent_per_step == 50 and auto.panic.threshold_percent == 200
    assert (auto.scale_to_zero.enabled, auto.scale_to_zero.idle_seconds, auto.metrics_max_age_seconds) == (
        False,
        600,
        30,
    )


def test_camel_case_round_trip() -> None:
    doc = yaml.safe_load((ROOT / "examples" / "inferenceservice-sim.yaml").read_text())
    isvc = api.InferenceService.model_validate(doc)
    assert isvc.spec.autoscaling.enabled
    dumped = isvc.spec.dump()
    assert "maxReplicas" in dumped["autoscaling"] and "max_replicas" not in dumped["autoscaling"]
    assert api.InferenceServiceSpec.model_validate(dumped) == isvc.spec


def test_status_decision_alias() -> None:
    status = api.InferenceServiceStatus.model_validate(
        {
            "autoscaler": {
                "desiredReplicas": 3,
                "lastDecision": {"from": 1, "to": 3, "reason": "QueueDepth", "inputs": {}},
            }
        }
    )
    assert status.autoscaler is not None and status.autoscaler.last_decision is not None
    assert status.autoscaler.last_decision.from_ == 1
    assert status.dump()["autoscaler"]["lastDecision"]["from"] == 1
