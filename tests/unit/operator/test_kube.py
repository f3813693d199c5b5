"""kube.py: credentials from a kubeconfig, and the verbs over real HTTP (an in-process aiohttp server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio.client import ApiException
from shoal_operator.kube import ApiError, Kube, bearer_token, connect, path_for

pytestmark = pytest.mark.unit


def _kubeconfig(tmp_path: Path, server: str) -> str:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "s3cret"}}],
        "contexts": [
            {"name": "main", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}},
            {"name": "other", "context": {"cluster": "c", "user": "u", "namespace": "team-b"}},
        ],
        "current-context": "main",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(cfg))
    return str(path)


async def test_connect_reads_server_token_and_context_namespace(tmp_path: Path) -> None:
    conn = await connect(_kubeconfig(tmp_path, "http://127.0.0.1:9"))
    assert conn.configuration.host == "http://127.0.0.1:9" and conn.default_namespace == "team-a"
    assert await bearer_token(conn.configuration) == "s3cret"
    assert (await connect(_kubeconfig(tmp_path, "http://x"), "other")).default_namespace == "team-b"


def test_paths() -> None:
    assert path_for("Deployment", "ns", "d") == "/apis/apps/v1/namespaces/ns/deployments/d"
    assert path_for("Service", "ns") == "/api/v1/namespaces/ns/services"
    assert path_for("InferenceService", "ns", "x", "scale").endswith("/inferenceservices/x/scale")
    assert path_for("ClusterKopfPeering", "ns", "p") == "/apis/kopf.dev/v1/clusterkopfpeerings/p"


def test_api_error_from_a_status_body() -> None:
    exc = ApiException(status=422, reason="Unprocessable Entity")
    exc.body = json.dumps({"kind": "Status", "reason": "Invalid", "message": "spec.replicas: bad"})
    err = ApiError.from_exception(exc)
    assert (err.status, err.reason, err.message, err.transient) == (
        422,
        "Invalid",
        "spec.replicas: bad",
        False,
    )
    assert ApiError(503, "", "").transient and ApiError(0, "", "").transient


async def test_verbs_over_http(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.text()
        seen.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "type": request.headers.get("Content-Type"),
                "auth": request.headers.get("Authorization"),
                "body": json.loads(body) if body else None,
            }
        )
        if request.path.endswith("/missing"):
            return web.json_response({"kind": "Status", "reason": "NotFound", "message": "gone"}, status=404)
        return web.json_response({"metadata": {"name": "x"}, "echo": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    kube = Kube(await connect(_kubeconfig(tmp_path, f"http://127.0.0.1:{port}")))
    try:
        obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "ns"}}
        assert (await kube.apply(obj, manager="shoal-operator"))["echo"]
        await kube.scale("ns", "chat", 3, manager="shoal-autoscaler")
        assert await kube.get("/api/v1/namespaces/ns/secrets/missing") is None
        assert not await kube.delete("/api/v1/namespaces/ns/secrets/missing")
    finally:
        await kube.aclose()
        await runner.cleanup()
    apply, scale = seen[0], seen[1]
    assert apply["method"] == "PATCH" and apply["path"] == "/apis/apps/v1/namespaces/ns/deployments/d"
    assert apply["type"] == "application/apply-patch+yaml" and apply["body"] == obj
    assert apply["query"] == {"fieldManager": "shoal-operator", "force": "true"}
    assert apply["auth"] == "Bearer s3cret"
    assert scale["type"] == "application/merge-patch+json" and scale["body"] == {"spec": {"replicas": 3}}
    assert scale["query"] == {"fieldManager": "shoal-autoscaler"}
    assert seen[3]["method"] == "DELETE" and seen[3]["body"]["propagationPolicy"] == "Background"
