"""Generate the InferenceService and InferenceGateway CRDs from the pydantic models in `api.py` and
`api_gateway.py`.

`python -m shoal_operator.crdgen [--out-dir crds/]` (also `shoal operator crd`).
The pydantic JSON schema is turned into a Kubernetes *structural* OpenAPI v3 schema: references inlined,
optional fields un-nullable, `const` as a one-value enum, titles dropped, `default: null` removed.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from shoal_common import names

from shoal_operator import api, api_gateway
from shoal_operator.api_schema import _Model

CRD_FILE = "shoal.dev_inferenceservices.yaml"
GATEWAY_CRD_FILE = "shoal.dev_inferencegateways.yaml"
PEERING_FILE = "kopf.dev_peerings.yaml"

_DROP_KEYS = {"title", "propertyNames"}  # propertyNames: not in Kubernetes' schema subset


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = _inline_ref(dict(node), defs)
    # Optional[X] -> X: Kubernetes leaves an absent field absent; null is not a value users write.
    if "anyOf" in node:
        options = [opt for opt in node["anyOf"] if opt != {"type": "null"}]
        if len(options) == 1 and not node.get("x-kubernetes-int-or-string"):
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            return _resolve({**options[0], **rest}, defs)
        node["anyOf"] = options
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "default" in node and node["default"] is None:
        del node["default"]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "properties":
            out[key] = {prop: _resolve(schema, defs) for prop, schema in value.items()}
        elif key in ("items", "additionalProperties", "anyOf"):
            out[key] = _resolve(value, defs)
        else:
            out[key] = value
    return _structural_types(out)


def _inline_ref(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in node:
        return node
    ref = node.pop("$ref").rsplit("/", 1)[-1]
    merged: dict[str, Any] = copy.deepcopy(defs[ref])
    merged.update(node)  # sibling keys (description, default) win
    return merged


def _structural_types(out: dict[str, Any]) -> dict[str, Any]:
    # Enums of strings need the type too (structural schema).
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    if out.get("type") == "object" and "properties" in out:
        out.pop("additionalProperties", None)
    return out


def _int_or_string_fixups(node: Any) -> Any:
    """`anyOf: [integer, string]` with the int-or-string marker must carry no sibling type."""
    if isinstance(node, list):
        return [_int_or_string_fixups(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _int_or_string_fixups(v) for k, v in node.items()}
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    if out.get("x-kubernetes-preserve-unknown-fields") and "type" not in out and "anyOf" in out:
        out.pop("anyOf")
    return out


def _object_default(node: dict[str, Any]) -> dict[str, Any]:
    """The value an empty object takes after defaulting (nested defaults applied)."""
    out: dict[str, Any] = {}
    for name, child in node.get("properties", {}).items():
        if "default" in child:
            value = child["default"]
            out[name] = _object_default(child) if value == {} and "properties" in child else value
    return out


def _expand_defaults(node: Any) -> Any:
    """`default: {}` -> the fully defaulted object: the API server validates defaults (CEL rules included)
    without applying the nested defaults first."""
    if isinstance(node, list):
        return [_expand_defaults(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _expand_defaults(v) for k, v in node.items()}
    if out.get("default") == {} and "properties" in out:
        out["default"] = _object_default(out)
    return out


def structural_schema(model: type[_Model]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    resolved = _expand_defaults(_int_or_string_fixups(_resolve(raw, defs)))
    assert isinstance(resolved, dict)
    return resolved


def openapi_schema() -> dict[str, Any]:
    spec = structural_schema(api.InferenceServiceSpec)
    status = structural_schema(api.InferenceServiceStatus)
    status["description"] = "Observed state, written by the operator (and the autoscaler's block)."
    return {
        "type": "object",
        "description": "An LLM served by shoal: model-server pods, a router and a stable Service.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": [{"rule": api.NAME_RULE[0], "message": api.NAME_RULE[1]}],
    }


def gateway_openapi_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "One OpenAI endpoint for several InferenceServices: routes by the request's model, "
        "lists every model and adapter in /v1/models, splits traffic by weight (docs/models.md).",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": _expand_defaults({**structural_schema(api_gateway.InferenceGatewaySpec), "default": {}}),
            "status": structural_schema(api_gateway.InferenceGatewayStatus),
        },
        "x-kubernetes-validations": [{"rule": api_gateway.NAME_RULE[0], "message": api_gateway.NAME_RULE[1]}],
    }


def gateway_crd() -> dict[str, Any]:
    kind = names.GATEWAY_KIND
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{names.GATEWAY_PLURAL}.{names.GROUP}",
            "labels": {"app.kubernetes.io/name": "shoal", "app.kubernetes.io/part-of": "shoal"},
        },
        "spec": {
            "group": names.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": names.GATEWAY_PLURAL,
                "singular": kind.lower(),
                "shortNames": [names.GATEWAY_SHORT_NAME],
                "categories": ["shoal", "all"],
            },
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": gateway_openapi_schema()},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
                        {"name": "URL", "type": "string", "jsonPath": ".status.url"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{names.PLURAL}.{names.GROUP}",
            "labels": {"app.kubernetes.io/name": "shoal", "app.kubernetes.io/part-of": "shoal"},
        },
        "spec": {
            "group": names.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": names.KIND,
                "listKind": f"{names.KIND}List",
                "plural": names.PLURAL,
                "singular": names.KIND.lower(),
                "shortNames": [names.SHORT_NAME],
                "categories": ["shoal", "all"],
            },
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
                        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
                        {"name": "Desired", "type": "integer", "jsonPath": ".spec.replicas"},
                        {"name": "URL", "type": "string", "jsonPath": ".status.url"},
                        {
                            "name": "Status",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
                            "priority": 1,
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


def peering_crds() -> list[dict[str, Any]]:
    """kopf's peering CRDs (the operator's replicas elect one active peer through them)."""
    out = []
    for kind, scope in (("ClusterKopfPeering", "Cluster"), ("KopfPeering", "Namespaced")):
        plural = kind.lower() + "s"
        out.append(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.kopf.dev"},
                "spec": {
                    "scope": scope,
                    "group": "kopf.dev",
                    "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                    "versions": [
                        {
                            "name": "v1",
                            "served": True,
                            "storage": True,
                            "schema": {
                                "openAPIV3Schema": {
                                    "type": "object",
                                    "properties": {
                                        "status": {
                                            "type": "object",
                                            "x-kubernetes-preserve-unknown-fields": True,
                                        }
                                    },
                                }
                            },
                        }
                    ],
                },
            }
        )
    return out


HEADER = (
    "# Generated by `python -m shoal_operator.crdgen` from operator/shoal_operator/api.py. Do not edit.\n"
)


def render_crd() -> str:
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=120)


def render_gateway_crd() -> str:
    return HEADER.replace("api.py", "api_gateway.py") + yaml.safe_dump(
        gateway_crd(), sort_keys=False, width=120
    )


def render_peering() -> str:
    return HEADER + "---\n".join(yaml.safe_dump(doc, sort_keys=False, width=120) for doc in peering_crds())


def default_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "crds"


def write(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / CRD_FILE, out_dir / PEERING_FILE, out_dir / GATEWAY_CRD_FILE]
    paths[0].write_text(render_crd())
    paths[1].write_text(render_peering())
    paths[2].write_text(render_gateway_crd())
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shoal_operator.crdgen", description=__doc__)
    parser.add_argument("--out-dir", type=Path, default=None, help="write the files here (default: crds/)")
    parser.add_argument("--stdout", action="store_true", help="print the InferenceService CRD instead")
    args = parser.parse_args(argv)
    if args.stdout:
        sys.stdout.write(render_crd())
        return 0
    for path in write(args.out_dir or default_dir()):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
