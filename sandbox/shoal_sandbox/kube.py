"""The sandbox tools' synchronous Kubernetes client (the demo, the closed-loop stacks, tests): server-side
apply, get, list, delete and merge patches over a kubeconfig (the sandbox's admin one, usually).

The project's one client library, kubernetes_asyncio, does the work: it reads the kubeconfig (inline or
file credentials), does TLS and the transport, resolves kinds to resources by discovery
(`dynamic.DynamicClient`) and reports failures as `ApiException`. The sandbox's callers are synchronous
(scripts, pytest), so `SyncKube` is a thin facade: its own event loop on a daemon thread, each call
handed over with `run_coroutine_threadsafe` and waited for with a bound.

Only discovery goes through the dynamic client; the calls themselves go through the public
`ApiClient.call_api`, because the dynamic client's verbs (this library version) return an API server's
error `Status` as if it were the object instead of raising (`ApiException` is how failures are seen here).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import tempfile
import threading
import weakref
from collections.abc import Coroutine, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

import aiohttp
from kubernetes_asyncio import config as kconfig
from kubernetes_asyncio.client import ApiClient, ApiException
from kubernetes_asyncio.dynamic import DynamicClient
from kubernetes_asyncio.dynamic.exceptions import ResourceNotFoundError, ResourceNotUniqueError

Obj = dict[str, Any]
T = TypeVar("T")

_OBJECT = {200: "object", 201: "object", 202: "object"}
# What a call can fail with, all reported as ApiError: the API server's answer, a kind the server does not
# serve (reported as 404, as a request to its path would be), and transport trouble (status 0).
_FAILURES = (ApiException, ResourceNotFoundError, ResourceNotUniqueError, aiohttp.ClientError, TimeoutError)


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


def api_error(exc: BaseException) -> ApiError:
    """The ApiError for a failed call: the server's status and body; 404 for a kind it does not serve;
    status 0 when the server could not be reached or did not answer in time."""
    if isinstance(exc, ApiException):
        body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else exc.body
        return ApiError(int(exc.status or 0), str(body or exc.reason or ""))
    if isinstance(exc, ResourceNotFoundError):
        return ApiError(404, f"the API server serves no such kind: {exc}")
    if isinstance(exc, ResourceNotUniqueError):
        return ApiError(400, f"the kind is ambiguous, give its apiVersion: {exc}")
    if isinstance(exc, TimeoutError):
        return ApiError(0, f"no answer in time ({exc or 'timeout'})")
    return ApiError(0, f"{type(exc).__name__}: {exc}")


class _Served(Protocol):
    """What discovery tells about a served resource (kubernetes_asyncio's `Resource`)."""

    group: str | None
    preferred: bool


R = TypeVar("R", bound=_Served)


def pick_resource(kind: str, candidates: Sequence[R]) -> R:
    """The resource a bare kind means: the only one; else the core group's (`Event` is v1's, not
    events.k8s.io's); else the group's preferred version. Raises ResourceNotFoundError when none serves it,
    ResourceNotUniqueError when several groups do."""
    if not candidates:
        raise ResourceNotFoundError(f"no resource of kind {kind}")
    for keep in (lambda r: True, lambda r: not r.group, lambda r: r.preferred):
        narrowed = [r for r in candidates if keep(r)]
        if len(narrowed) == 1:
            return narrowed[0]
        candidates = narrowed or candidates
    raise ResourceNotUniqueError(f"kind {kind} is served by {list(candidates)}")


def _shut_down(
    loop: asyncio.AbstractEventLoop,
    thread: threading.Thread,
    api: ApiClient | None,
    scratch: tempfile.TemporaryDirectory[str],
) -> None:
    """Closes the client's connections on its loop, then stops the loop and its thread (bounded)."""
    if api is not None and loop.is_running():
        closing = asyncio.run_coroutine_threadsafe(api.close(), loop)
        with contextlib.suppress(*_FAILURES):  # a broken connection: nothing left to release
            closing.result(timeout=5.0)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5.0)
    if not loop.is_running():
        loop.close()
    scratch.cleanup()


class SyncKube:
    """Server-side apply (field manager `field_manager`, forced), get, list, delete, merge patches and pod
    logs, with plain dicts in and out. Every failure raises ApiError. Close it (or use it as a context
    manager): that stops its event loop thread."""

    def __init__(
        self, kubeconfig: Path, field_manager: str = "shoal-sandbox", *, timeout: float = 30.0
    ) -> None:
        self.kubeconfig = kubeconfig
        self.field_manager = field_manager
        self.timeout = timeout
        self._scratch = tempfile.TemporaryDirectory(prefix="shoal-kube-")  # the discovery cache
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="shoal-sandbox-kube", daemon=True)
        self._thread.start()
        self._dynamic: DynamicClient | None = None  # discovery starts on the first call that needs it
        self._discovery_lock = asyncio.Lock()
        try:
            self._api: ApiClient = self._run(self._connect())
        except BaseException:
            _shut_down(self._loop, self._thread, None, self._scratch)
            raise
        # Also run when a caller forgets close(): on garbage collection, or at exit while the loop still runs
        # (so its connections are closed, not reported as leaked).
        self._finalizer = weakref.finalize(
            self, _shut_down, self._loop, self._thread, self._api, self._scratch
        )

    async def _connect(self) -> ApiClient:
        # Made on the loop: the client's aiohttp session belongs to it.
        return await kconfig.new_client_from_config(config_file=str(self.kubeconfig), persist_config=False)

    def __enter__(self) -> SyncKube:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connections and ends the loop thread (again: nothing)."""
        self._finalizer()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs `coro` on the client's loop and waits, bounded: each request has `timeout`, discovery and
        the request together get twice that."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=2 * self.timeout)
        except _FAILURES as exc:
            future.cancel()  # a wait that ran out leaves the call running on the loop: stop it
            raise api_error(exc) from exc

    # ---- discovery and calls (on the loop) ---------------------------------------------------------------
    async def _resource(self, kind: str, api_version: str | None = None) -> Any:
        async with self._discovery_lock:
            if self._dynamic is None:
                cache = str(Path(self._scratch.name) / "discovery.json")
                self._dynamic = await DynamicClient(self._api, cache_file=cache)
            if api_version:
                return await self._dynamic.resources.get(api_version=api_version, kind=kind)
            return pick_resource(kind, await self._dynamic.resources.search(kind=kind))

    async def _path(
        self, kind: str, namespace: str | None, name: str | None = None, subresource: str = ""
    ) -> str:
        resource = await self._resource(kind)
        path: str = resource.path(name=name, namespace=namespace)
        return path + (f"/{subresource}" if subresource else "")

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Obj:
        result = await self._api.call_api(
            path,
            method,
            query_params=list((params or {}).items()),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            response_types_map=_OBJECT,
            _return_http_data_only=True,
            _request_timeout=self.timeout,
        )
        return result if isinstance(result, dict) else {}

    async def _apply(self, obj: Obj, namespace: str | None) -> Obj:
        md = obj["metadata"]
        resource = await self._resource(obj["kind"], obj["apiVersion"])
        ns = namespace or md.get("namespace")
        if ns and resource.namespaced:
            md["namespace"] = ns
        path = resource.path(name=md["name"], namespace=ns)
        params = {"fieldManager": self.field_manager, "force": "true"}
        return await self._call(
            "PATCH", path, params=params, body=obj, content_type="application/apply-patch+yaml"
        )

    async def _verb(self, method: str, kind: str, namespace: str | None, name: str | None, **kw: Any) -> Obj:
        subresource = kw.pop("subresource", "")
        return await self._call(method, await self._path(kind, namespace, name, subresource), **kw)

    async def _text(
        self, kind: str, namespace: str, name: str, subresource: str, params: dict[str, str]
    ) -> str:
        """A plain-text subresource (a log): read as sent, not parsed as JSON."""
        resp = await self._api.call_api(
            await self._path(kind, namespace, name, subresource),
            "GET",
            query_params=list(params.items()),
            header_params={"Accept": "*/*"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=self.timeout,
        )
        async with resp:
            text: str = await resp.text()
            if resp.status >= 400:
                raise ApiError(resp.status, text)
        return text

    # ---- the public, synchronous verbs -------------------------------------------------------------------
    def path(self, kind: str, namespace: str | None = None, name: str | None = None) -> str:
        """The API path of a kind (its collection, or one object), as discovery resolves it."""
        return self._run(self._path(kind, namespace, name))

    def apply(self, obj: Obj, namespace: str | None = None) -> Obj:
        return self._run(self._apply(obj, namespace))

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        try:
            return self._run(self._verb("GET", kind, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self, kind: str, namespace: str | None = None, selector: str | None = None
    ) -> builtins.list[Obj]:
        params = {"labelSelector": selector} if selector else None
        items: builtins.list[Obj] = self._run(self._verb("GET", kind, namespace, None, params=params))[
            "items"
        ]
        return items

    def delete(self, kind: str, namespace: str | None, name: str, grace: int | None = None) -> None:
        body = {"gracePeriodSeconds": grace} if grace is not None else None
        try:
            self._run(self._verb("DELETE", kind, namespace, name, body=body))
        except ApiError as exc:
            if exc.status != 404:
                raise

    def patch_merge(
        self, kind: str, namespace: str | None, name: str, patch: Obj, subresource: str = ""
    ) -> Obj:
        merge = "application/merge-patch+json"
        return self._run(
            self._verb(
                "PATCH", kind, namespace, name, body=patch, content_type=merge, subresource=subresource
            )
        )

    def pod_log(self, namespace: str, pod: str, container: str | None = None, tail: int = 200) -> str:
        params = {"tailLines": str(tail), **({"container": container} if container else {})}
        return self._run(self._text("Pod", namespace, pod, "log", params))

    def ready_endpoints(self, namespace: str, service: str) -> builtins.list[str]:
        """``http://IP:PORT`` of a Service's ready backends, the way kube-proxy would pick them (there is no
        kube-proxy here, so Service IPs do not route). Read from the Pods the Service selects, because the
        API server keeps loopback pod IPs out of EndpointSlices."""
        svc = self.get("Service", namespace, service)
        if svc is None or not (svc.get("spec") or {}).get("selector"):
            return []
        spec = svc["spec"]
        target = (spec.get("ports") or [{}])[0].get("targetPort", (spec.get("ports") or [{}])[0].get("port"))
        selector = ",".join(f"{k}={v}" for k, v in sorted(spec["selector"].items()))
        out: builtins.list[str] = []
        for pod in self.list("Pod", namespace, selector):
            st = pod.get("status") or {}
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []
            )
            if not ready or pod["metadata"].get("deletionTimestamp") or not st.get("podIP"):
                continue
            port = target
            if isinstance(target, str) and not target.isdigit():
                port = next(
                    (
                        p["containerPort"]
                        for c in pod["spec"].get("containers") or []
                        for p in c.get("ports") or []
                        if p.get("name") == target
                    ),
                    None,
                )
            if port is not None:
                out.append(f"http://{st['podIP']}:{port}")
        return sorted(out)
