"""Shared test data for the operator's unit tests."""

from __future__ import annotations

from typing import Any

from shoal_operator.api import InferenceService


def isvc(
    spec: dict[str, Any] | None = None, name: str = "chat", namespace: str = "team-a", **meta: Any
) -> InferenceService:
    base: dict[str, Any] = {"model": {"name": "smollm2", "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"}}
    base.update(spec or {})
    return InferenceService.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace, "uid": "uid-1", "generation": 3, **meta},
            "spec": base,
        }
    )
