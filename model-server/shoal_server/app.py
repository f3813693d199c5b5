"""The HTTP app: routes only (OpenAI routes, OpenAPI document, health, metrics).

`ServerState` holds the parts wired by the composition root (`shoal_server.server`); `create_app`
builds a FastAPI app around it; the completion path lives in `shoal_server.completion`. Everything is
per instance, so tests run many apps in one process.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import generate_latest

from shoal_server.asgi import ASGIApp, RequestIdMiddleware
from shoal_server.completion import Completions
from shoal_server.lora_api import add_lora_routes, model_cards
from shoal_server.openapi import openapi_document
from shoal_server.state import ServerState

__all__ = ["ServerState", "build_asgi", "create_app"]


def create_app(state: ServerState) -> FastAPI:
    cfg = state.config
    app = FastAPI(title="shoal model-server", docs_url=None, redoc_url=None, openapi_url=None)
    completions = Completions(state)
    document = openapi_document(cfg.max_body_bytes, cfg.served_model_name)

    @app.get("/healthz")
    async def healthz() -> Response:
        if state.load_error:
            return JSONResponse({"status": "error", "error": state.load_error}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        if state.ready:
            return JSONResponse({"status": "ready"})
        reason = "draining" if state.draining else ("error" if state.load_error else "loading")
        return JSONResponse({"status": reason}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        state.update_gauges()
        body = generate_latest(state.metrics.registry) + state.engine.metrics_text()
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/openapi.json")
    async def openapi() -> Response:
        return JSONResponse(document)

    @app.get("/v1/models")
    async def models() -> Response:
        return JSONResponse({"object": "list", "data": model_cards(state)})

    @app.post("/v1/completions", response_model=None)
    async def completion(request: Request) -> Response:
        return await completions.handle(request, chat=False)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completion(request: Request) -> Response:
        return await completions.handle(request, chat=True)

    if cfg.lora_enabled:
        add_lora_routes(app, state)
    return app


def build_asgi(state: ServerState) -> ASGIApp:
    """The app wrapped in the request-id and load-report middlewares (what uvicorn serves)."""
    from shoal_server.load import LoadMiddleware

    return LoadMiddleware(RequestIdMiddleware(create_app(state)), state)
