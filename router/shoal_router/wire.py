"""HTTP details of the proxy: hop-by-hop headers, OpenAI-style error bodies, the access-log record."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from shoal_common.names import PRIORITY_HEADER

from shoal_router.flow.capacity import LOAD_HEADERS

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# x-shoal-priority: only the router sets it (from the request's band and tenant), never a client
REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "expect", PRIORITY_HEADER}
_LOAD_HEADERS = frozenset(h.lower() for h in LOAD_HEADERS)  # replica internals: not for clients
GATEWAY_FAILURE_STATUS = frozenset({502, 503, 504})  # count towards outlier ejection (not 429, not 500)
CLIENT_CLOSED = 499


def error_response(
    status: int, message: str, kind: str, code: str, headers: dict[str, str] | None = None
) -> web.Response:
    """An OpenAI-shaped error body, so SDKs surface the message."""
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


@dataclass(slots=True)
class RequestLog:
    request_id: str
    method: str
    path: str
    status: int = 0
    endpoint: str = ""
    attempts: int = 0
    key_id: str = ""
    held_ms: float = 0.0
    ttfb_ms: float = 0.0
    bytes_out: int = 0
    error: str = ""
    pick: str = ""
    tried: list[str] = field(default_factory=list)


def upstream_headers(request: web.Request, rid: str, drop_auth: bool) -> CIMultiDict[str]:
    """The client's headers for the replica: hop-by-hop ones dropped, the router's API key too (when the
    router checks keys it is the router's, not the replica's), X-Request-ID and X-Forwarded-For set."""
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in request.headers.items():
        lname = name.lower()
        if lname in REQUEST_DROP or (drop_auth and lname in ("authorization", "api-key")):
            continue
        out.add(name, value)
    out["X-Request-ID"] = rid
    if request.remote:
        prior = request.headers.get("X-Forwarded-For")
        out["X-Forwarded-For"] = f"{prior}, {request.remote}" if prior else request.remote
    return out


def copy_headers(
    upstream: aiohttp.ClientResponse, response: web.StreamResponse, rid: str, drop_length: bool
) -> None:
    for name, value in upstream.headers.items():
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in _LOAD_HEADERS or (drop_length and lname == "content-length"):
            continue
        response.headers.add(name, value)
    response.headers["X-Request-ID"] = rid
