"""Schema helpers of the InferenceService models (also read by crdgen): types with their JSON schema,
CEL rules, and the camelCase base model."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, WithJsonSchema
from pydantic.alias_generators import to_camel

# ---------------------------------------------------------------------------------------------------
# Schema helpers (also read by crdgen)

QUANTITY_PATTERN = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"

# A Kubernetes resource quantity ("4", 4, "500m", "16Gi"): int-or-string, like core types.
Quantity = Annotated[
    int | str,
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]

# An arbitrary Kubernetes object embedded as is (tolerations, affinity, valueFrom): kept, not checked here.
FreeObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]

# Engine argument values: strings, numbers or booleans ("--KEY=VALUE"; true means a bare flag).
ArgValue = Annotated[
    str | int | float | bool,
    WithJsonSchema({"x-kubernetes-preserve-unknown-fields": True}),
]

URI_SCHEMES = ("pvc", "hf", "s3", "file")
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """`json_schema_extra` carrying CEL rules: (rule, message) pairs."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]}


def obj_default() -> dict[str, Any]:
    """Emit `default: {}` so the API server fills the nested defaults when the block is omitted."""
    return {"default": {}}


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        validate_default=True,
    )

    def dump(self) -> dict[str, Any]:
        """The camelCase dictionary as it appears in YAML (None fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
