"""The operator's Kubernetes access: `kubernetes_asyncio` underneath, a few dict-in/dict-out verbs on top.

`kubernetes_asyncio` does the transport (aiohttp, one connection pool), TLS, credentials (kubeconfig with
client certificates, tokens, exec plugins; the in-cluster service account with its rotated token) and
error mapping (`ApiException`). The operator works on plain dicts (the builders render them, SSA sends
them back unchanged), so every call goes through the public `ApiClient.call_api` with the `object`
response type: the JSON body as it came, no model classes. `DynamicClient` would resolve paths by
discovery instead of `RESOURCES`, but it costs discovery round trips per API group, writes a cache file
into /tmp and wraps every result; the operator touches a fixed, small set of kinds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import config as kconfig
from kubernetes_asyncio.client import ApiClient, ApiException, Configuration

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

# kind -> (apiVersion, plural, namespaced); enough for everything the operator touches.
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "Deployment": ("apps/v1", "deployments", True),
    "Service": ("v1", "services", True),
    "ServiceAccount": ("v1", "serviceaccounts", True),
    "PersistentVolumeClaim": ("v1", "persistentvolumeclaims", True),
    "Secret": ("v1", "secrets", True),
    "Event": ("v1", "events", True),
    "Pod": ("v1", "pods", True),
    "Role": ("rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "rolebindings", True),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets", True),
    "PodMonitor": ("monitoring.coreos.com/v1", "podmonitors", True),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies", True),
    "InferenceService": ("shoal.dev/v1alpha1", "inferenceservices", True),
    "InferenceGateway": ("shoal.dev/v1alpha1", "inferencegateways", True),
    "KopfPeering": ("kopf.dev/v1", "kopfpeerings", True),
    "ClusterKopfPeering": ("kopf.dev/v1", "clusterkopfpeerings", False),
    "Lease": ("coordination.k8s.io/v1", "leases", True),
    "InferencePool": ("inference.networking.k8s.io/v1", "inferencepools", True),
}

_OBJECT = {200: "object", 201: "object", 202: "object"}


def path_for(
    kind: str, namespace: str | None, name: str | None = None, subresource: str | None = None
) -> str:
    api_version, plural, namespaced = RESOURCES[kind]
    path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace and namespaced:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


class ApiError(Exception):
    """A failed call: the API server's status (0 when it could not be reached), reason and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        """Worth retrying as is (server trouble, throttling, conflicts); 4xx input errors are not."""
        return self.status >= 500 or self.status in (409, 429) or self.status == 0

    @classmethod
    def from_exception(cls, exc: ApiException) -> ApiError:
        import json

        status = int(exc.status or 0)
        reason, message = str(exc.reason or ""), str(exc.body or "")
        try:
            body = json.loads(exc.body) if exc.body else {}
            if isinstance(body, dict):
                reason = str(body.get("reason") or reason)
                message = str(body.get("message") or message)
        except (TypeError, ValueError):
            message = message[:500]
        return cls(status, reason, message)


@dataclass(frozen=True)
class Connection:
    """Where and how to reach the API server (what kopf's login handler is given too)."""

    configuration: Configuration
    default_namespace: str | None


def kubeconfig_path(kubeconfig: str | None) -> str:
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
    return str(Path(path).expanduser())


async def connect(kubeconfig: str | None = None, context: str | None = None) -> Connection:
    """In-cluster service account when present (and no kubeconfig given), else the kubeconfig."""
    configuration = Configuration()
    if kubeconfig is None and (SA_DIR / "token").exists():
        # try_refresh_token: the projected token is re-read before it expires.
        kconfig.load_incluster_config(  # type: ignore[no-untyped-call]  # the library leaves it untyped
            client_configuration=configuration, try_refresh_token=True
        )
        ns_file = SA_DIR / "namespace"
        namespace = ns_file.read_text().strip() if ns_file.exists() else None
        return Connection(configuration, namespace)
    path = kubeconfig_path(kubeconfig)
    await kconfig.load_kube_config(
        config_file=path, context=context, client_configuration=configuration, persist_config=False
    )
    contexts, active = kconfig.list_kube_config_contexts(config_file=path)
    chosen = next((c for c in contexts if c.get("name") == context), active) if context else active
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return Connection(configuration, namespace)


async def bearer_token(configuration: Configuration) -> str | None:
    """The current bearer token (refreshed by the library for in-cluster and exec credentials)."""
    header = await configuration.get_api_key_with_prefix("BearerToken")
    if not header:
        return None
    return str(header).split(" ", 1)[-1]


class Kube:
    """Dict-in/dict-out calls; every method raises ApiError on a failed call (except where noted)."""

    def __init__(self, connection: Connection, *, timeout: float = 30.0, max_connections: int = 32) -> None:
        self.connection = connection
        connection.configuration.connection_pool_maxsize = max_connections
        self._api: ApiClient | None = None  # made on first use: its aiohttp session needs a running loop
        self._timeout = timeout
        self._api_cache: dict[str, bool] = {}

    @property
    def default_namespace(self) -> str | None:
        return self.connection.default_namespace

    async def aclose(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    def _client(self) -> ApiClient:
        if self._api is None:
            self._api = ApiClient(self.connection.configuration)
        return self._api

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json_body: Any = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        """One call; the answer's JSON object (`{"items": [...]}` when the server returned a list)."""
        headers = {"Accept": "application/json", "Content-Type": content_type or "application/json"}
        try:
            result = await self._client().call_api(
                path,
                method,
                query_params=list((params or {}).items()),
                header_params=headers,
                body=json_body,
                auth_settings=["BearerToken"],
                response_types_map=_OBJECT,
                _return_http_data_only=True,
                _request_timeout=self._timeout,
            )
        except ApiException as exc:
            raise ApiError.from_exception(exc) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(0, type(exc).__name__, str(exc) or repr(exc)) from exc
        if result is None:
            return {}
        return result if isinstance(result, dict) else {"items": result}

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, kind: str, namespace: str | None, label_selector: str | None = None) -> list[Any]:
        params = {"labelSelector": label_selector} if label_selector else None
        body = await self.request("GET", path_for(kind, namespace), params=params)
        return list(body.get("items") or [])

    async def apply(
        self, obj: dict[str, Any], *, manager: str, force: bool = True, subresource: str | None = None
    ) -> dict[str, Any]:
        """Server-side apply (application/apply-patch+yaml; JSON is YAML)."""
        meta = obj["metadata"]
        path = path_for(obj["kind"], meta.get("namespace"), meta["name"], subresource)
        params = {"fieldManager": manager, "force": "true" if force else "false"}
        return await self.request(
            "PATCH", path, params=params, json_body=obj, content_type="application/apply-patch+yaml"
        )

    async def scale(self, namespace: str, name: str, replicas: int, *, manager: str) -> dict[str, Any]:
        """Set an InferenceService's replicas through its /scale subresource.

        A merge patch, not server-side apply: the API server cannot convert an apply patch of a custom
        resource's /scale (autoscaling/v1 Scale) when the value changes ("request to convert CR to an
        invalid group/version"). The field manager is still recorded on spec.replicas."""
        return await self.request(
            "PATCH",
            path_for("InferenceService", namespace, name, "scale"),
            params={"fieldManager": manager},
            json_body={"spec": {"replicas": replicas}},
            content_type="application/merge-patch+json",
        )

    async def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, json_body=obj)

    async def replace(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT: optimistic concurrency on `metadata.resourceVersion` (409 when someone wrote first)."""
        return await self.request("PUT", path, json_body=obj)

    async def delete(self, path: str, *, uid: str | None = None) -> bool:
        """Delete (in the background); False when it was already gone."""
        body: dict[str, Any] = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": "Background",
        }
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", path, json_body=body)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def has_api(self, group_version: str, plural: str) -> bool:
        """Whether the API server serves `plural` in `group_version` (e.g. monitoring.coreos.com/v1)."""
        key = f"{group_version}/{plural}"
        if key not in self._api_cache:
            found = await self.get(f"/apis/{group_version}")
            self._api_cache[key] = bool(
                found and any(r.get("name") == plural for r in found.get("resources", []))
            )
        return self._api_cache[key]

    def forget_apis(self) -> None:
        self._api_cache.clear()
