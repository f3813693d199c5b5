"""LoRA adapters over HTTP: the model cards of /v1/models and vLLM's runtime admin routes.

`POST /v1/load_lora_adapter {"lora_name", "lora_path"}` and `POST /v1/unload_lora_adapter
{"lora_name"}` have vLLM's names and bodies, so tools written for vLLM work unchanged. They exist only
when LoRA is enabled (`--enable-lora` or `--lora`); the router never forwards them (it proxies the
OpenAI generation routes only), so only callers that reach the pod (the operator) can use them.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from shoal_server.asgi import error_response, read_body
from shoal_server.engines.adapters import AdapterError
from shoal_server.errors import APIError, invalid
from shoal_server.openai_api import decode_json
from shoal_server.state import ServerState

log = logging.getLogger("shoal.server")

ADMIN_BODY_LIMIT = 64 * 1024


def model_cards(state: ServerState) -> list[dict[str, Any]]:
    """The base model, then each loaded adapter (`parent` names the base, as vLLM does)."""
    cfg = state.config
    base = cfg.served_model_name
    cards: list[dict[str, Any]] = [
        {
            "id": base,
            "object": "model",
            "created": 0,
            "owned_by": "shoal",
            "root": cfg.model,
            "parent": None,
            "max_model_len": state.engine.max_model_len,
        }
    ]
    adapters = state.engine.adapters
    for name in adapters.names():
        cards.append(
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "shoal",
                "root": adapters.path(name),
                "parent": base,
                "max_model_len": state.engine.max_model_len,
            }
        )
    return cards


def sync_adapter_gauges(state: ServerState) -> None:
    names = set(state.engine.adapters.names())
    state.metrics.adapters_loaded.set(len(names))
    info = state.metrics.adapter_info
    info.clear()  # a scrape between clear and set misses at most one update; the count above is exact
    for name in names:
        info.labels(name).set(1)


async def load_configured_adapters(state: ServerState) -> None:
    """The adapters named on the command line, loaded once the engine is up (before readiness)."""
    for name, path in state.config.adapters:
        await state.engine.add_adapter(name, path)
        log.info("LoRA adapter loaded", extra={"adapter": name, "path": path})
    sync_adapter_gauges(state)


def _string_field(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise invalid(f"`{key}` must be a non-empty string", param=key)
    return value


def _adapter_error(exc: AdapterError, param: str) -> APIError:
    kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
    return APIError(exc.status, str(exc), kind, param=param, code=exc.code)


def add_lora_routes(app: FastAPI, state: ServerState) -> None:
    @app.post("/v1/load_lora_adapter")
    async def load_adapter(request: Request) -> Response:
        try:
            doc = decode_json(await read_body(request, ADMIN_BODY_LIMIT))
            name, path = _string_field(doc, "lora_name"), _string_field(doc, "lora_path")
            if not state.loaded:
                raise APIError(503, "model is still loading", "service_unavailable")
            try:
                added = await state.engine.add_adapter(name, path)
            except AdapterError as exc:
                raise _adapter_error(exc, "lora_name") from None
        except APIError as err:
            return error_response(err)
        sync_adapter_gauges(state)
        log.info("LoRA adapter loaded", extra={"adapter": name, "path": path, "new": added})
        verb = "added" if added else "already loaded"
        return JSONResponse({"status": "ok", "message": f"LoRA adapter '{name}' {verb}", "lora_name": name})

    @app.post("/v1/unload_lora_adapter")
    async def unload_adapter(request: Request) -> Response:
        try:
            doc = decode_json(await read_body(request, ADMIN_BODY_LIMIT))
            name = _string_field(doc, "lora_name")
            try:
                await state.engine.remove_adapter(name)
            except AdapterError as exc:
                raise _adapter_error(exc, "lora_name") from None
        except APIError as err:
            return error_response(err)
        sync_adapter_gauges(state)
        log.info("LoRA adapter unloaded", extra={"adapter": name})
        return JSONResponse({"status": "ok", "message": f"LoRA adapter '{name}' removed", "lora_name": name})
