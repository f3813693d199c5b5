"""The OpenAPI 3.1 document of the model-server's OpenAI routes (served at /openapi.json).

Request schemas come from the pydantic models that validate requests (`shoal_server.openai_api`), so
the document cannot drift from what the server accepts. Fuzzers (schemathesis in CI) read it.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from shoal_server.openai_api import ChatCompletionRequest, CompletionRequest

_REF = "#/components/schemas/{model}"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _completion_operation(op_id: str, model: str, summary: str, max_body: int) -> dict[str, Any]:
    return {
        "operationId": op_id,
        "summary": summary,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model=model)}}},
        },
        "responses": {
            "200": {
                "description": "the completion (JSON), or server-sent events when `stream` is true",
                "content": {"application/json": {"schema": {"type": "object"}}, "text/event-stream": {}},
            },
            "400": _error("invalid request (bad JSON, a bad parameter, too long for the context)"),
            "404": _error("the model is not served here"),
            "413": _error(f"request body larger than {max_body} bytes"),
            "429": _error("queue full; retry after Retry-After seconds"),
            "503": _error("loading or draining"),
            "504": _error("the server's request deadline passed"),
        },
    }


def openapi_document(max_body_bytes: int, served_model_name: str) -> dict[str, Any]:
    _, defs = models_json_schema(
        [(CompletionRequest, "validation"), (ChatCompletionRequest, "validation")], ref_template=_REF
    )
    schemas: dict[str, Any] = {**defs.get("$defs", {}), "Error": ERROR_SCHEMA}
    for name in ("CompletionRequest", "ChatCompletionRequest"):
        # This replica serves one model; any other name is a 404.
        schemas[name]["properties"]["model"] = {"type": "string", "enum": [served_model_name]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "shoal model-server", "version": "1"},
        "paths": {
            "/v1/completions": {
                "post": _completion_operation(
                    "createCompletion", "CompletionRequest", "text completion", max_body_bytes
                )
            },
            "/v1/chat/completions": {
                "post": _completion_operation(
                    "createChatCompletion", "ChatCompletionRequest", "chat completion", max_body_bytes
                )
            },
            "/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "summary": "the served model",
                    "responses": {"200": {"description": "a list with the one served model"}},
                }
            },
        },
        "components": {"schemas": schemas},
    }
