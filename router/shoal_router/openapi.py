"""The OpenAPI 3.1 document of the router's OpenAI routes (served at /openapi.json, no API key needed).

The router checks the API key, the rate limit and the body size itself, and forwards the body as it is:
the model-server behind it validates the OpenAI fields (its own /openapi.json has the full request
schemas). So this document describes the envelope the router relies on (a JSON object naming a
`model`) and the refusals the router answers itself (401, 413, 429, 503).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": ["string", "null"]},
                "param": {"type": ["string", "null"]},
            },
        }
    },
}

_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}, {"type": "null"}]
        },
    },
}

_COMMON = {
    "model": {"type": "string"},
    "stream": {"type": "boolean"},
    "max_tokens": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
    "temperature": {"anyOf": [{"type": "number", "minimum": 0, "maximum": 2}, {"type": "null"}]},
}

_BODIES = {
    "CompletionRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            **_COMMON,
            "prompt": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1},
                    {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
                ]
            },
        },
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {**_COMMON, "messages": {"type": "array", "items": _MESSAGE, "minItems": 1}},
    },
}


def _responses(max_body_bytes: int) -> dict[str, Any]:
    def err(description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": _ERROR}}}

    return {
        "200": {"description": "the model-server's answer (JSON, or server-sent events when streaming)"},
        "400": err("the model-server refused the request"),
        "401": err("a valid API key is required (when the router has keys)"),
        "413": err(f"request body larger than {max_body_bytes} bytes"),
        "429": err("rate limited, or every replica saturated; retry after Retry-After seconds"),
        "503": err("no replica became ready in time"),
    }


def openapi_document(max_body_bytes: int) -> dict[str, Any]:
    def post(op_id: str, body: str) -> dict[str, Any]:
        ref = {"$ref": f"#/components/schemas/{body}"}
        return {
            "operationId": op_id,
            "requestBody": {"required": True, "content": {"application/json": {"schema": ref}}},
            "responses": _responses(max_body_bytes),
        }

    return {
        "openapi": "3.1.0",
        "info": {"title": "shoal router", "version": "1"},
        "paths": {
            "/v1/completions": {"post": post("createCompletion", "CompletionRequest")},
            "/v1/chat/completions": {"post": post("createChatCompletion", "ChatCompletionRequest")},
            "/v1/models": {
                "get": {"operationId": "listModels", "responses": _responses(max_body_bytes)},
            },
        },
        "components": {"schemas": {**_BODIES, "Error": _ERROR}},
    }


def openapi_handler(max_body_bytes: int) -> Callable[[web.Request], Awaitable[web.Response]]:
    document = openapi_document(max_body_bytes)

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(document)

    return handler
