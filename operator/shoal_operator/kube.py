"""A small async Kubernetes REST client (httpx) for server-side apply, status, events and reads.

kopf keeps its own connection for watching; this client does the writes. Credentials come from a
kubeconfig (client certificates, tokens) or the in-cluster service account, read once at start. The
service-account token is re-read from its file so rotated tokens keep working.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

# kind -> (api prefix, plural); enough for everything the operator touches.
RESOURCES: dict[str, tuple[str, str]] = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Service": ("/api/v1", "services"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims"),
    "Secret": ("/api/v1", "secrets"),
    "Event": ("/api/v1", "events"),
    "Pod": ("/api/v1", "pods"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "PodMonitor": ("/apis/monitoring.coreos.com/v1", "podmonitors"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
    "InferenceService": ("/apis/shoal.dev/v1alpha1", "inferenceservices"),
    "KopfPeering": ("/apis/kopf.dev/v1", "kopfpeerings"),
    "ClusterKopfPeering": ("/apis/kopf.dev/v1", "clusterkopfpeerings"),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases"),
}
CLUSTER_SCOPED = {"ClusterKopfPeering"}


def path_for(
    kind: str, namespace: str | None, name: str | None = None, subresource: str | None = None
) -> str:
    prefix, plural = RESOURCES[kind]
    path = prefix
    if namespace and kind not in CLUSTER_SCOPED:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        """Worth retrying as is (server trouble, throttling, conflicts); 4xx input errors are not."""
        return self.status >= 500 or self.status in (409, 429) or self.status == 0


@dataclass
class Credentials:
    server: str
    ca_path: str | None = None
    ca_data: bytes | None = None
    cert_path: str | None = None
    key_path: str | None = None
    token: str | None = None
    token_path: str | None = None
    insecure: bool = False
    default_namespace: str | None = None

    def bearer(self) -> str | None:
        if self.token_path:
            return Path(self.token_path).read_text().strip()
        return self.token


def _materialise(data_b64: str, suffix: str) -> str:
    """Write base64 PEM data to a private temporary file (ssl needs files for client certificates)."""
    fd, path = tempfile.mkstemp(prefix="shoal-", suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64decode(data_b64))
    return path


def load_credentials(kubeconfig: str | None = None, context: str | None = None) -> Credentials:
    """In-cluster service account when present (and no kubeconfig given), else the kubeconfig."""
    if kubeconfig is None and (SA_DIR / "token").exists():
        ns_file = SA_DIR / "namespace"
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if ":" in host:
            host = f"[{host}]"
        return Credentials(
            server=f"https://{host}:{port}",
            ca_path=str(SA_DIR / "ca.crt"),
            token_path=str(SA_DIR / "token"),
            default_namespace=ns_file.read_text().strip() if ns_file.exists() else None,
        )
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
    config = yaml.safe_load(Path(path).expanduser().read_text()) or {}
    base = Path(path).expanduser().resolve().parent

    def _find(section: str, name: str) -> dict[str, Any]:
        for item in config.get(section, []):
            if item["name"] == name:
                return dict(item.get(section[:-1]) or {})
        raise ValueError(f"kubeconfig {path}: no {section[:-1]} named {name!r}")

    ctx_name = context or config.get("current-context")
    if not ctx_name:
        raise ValueError(f"kubeconfig {path}: no current-context")
    ctx = _find("contexts", ctx_name)
    cluster = _find("clusters", ctx["cluster"])
    user = _find("users", ctx["user"]) if ctx.get("user") else {}

    def _rel(p: str | None) -> str | None:
        return None if p is None else str((base / p).resolve()) if not os.path.isabs(p) else p

    creds = Credentials(
        server=cluster["server"].rstrip("/"),
        ca_path=_rel(cluster.get("certificate-authority")),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        cert_path=_rel(user.get("client-certificate")),
        key_path=_rel(user.get("client-key")),
        token=user.get("token"),
        token_path=_rel(user.get("tokenFile")),
        default_namespace=ctx.get("namespace"),
    )
    if cluster.get("certificate-authority-data"):
        creds.ca_data = base64.b64decode(cluster["certificate-authority-data"])
    if user.get("client-certificate-data"):
        creds.cert_path = _materialise(user["client-certificate-data"], ".crt")
    if user.get("client-key-data"):
        creds.key_path = _materialise(user["client-key-data"], ".key")
    return creds


def ssl_context(creds: Credentials) -> ssl.SSLContext | bool:
    if not creds.server.startswith("https"):
        return False
    if creds.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif creds.ca_data:
        ctx = ssl.create_default_context(cadata=creds.ca_data.decode())
    elif creds.ca_path:
        ctx = ssl.create_default_context(cafile=creds.ca_path)
    else:
        ctx = ssl.create_default_context()
    if creds.cert_path and creds.key_path:
        ctx.load_cert_chain(creds.cert_path, creds.key_path)
    return ctx


class Kube:
    """Async REST calls; every method raises ApiError on a non-2xx answer (except where noted)."""

    def __init__(self, creds: Credentials, *, timeout: float = 30.0, max_connections: int = 32) -> None:
        self.creds = creds
        self._client = httpx.AsyncClient(
            base_url=creds.server,
            verify=ssl_context(creds),
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        self._api_cache: dict[str, bool] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json_body: Any = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        token = self.creds.bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        content: bytes | None = None
        if json_body is not None:
            import json

            content = json.dumps(json_body).encode()
            headers["Content-Type"] = content_type or "application/json"
        try:
            rsp = await self._client.request(method, path, params=params, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise ApiError(0, type(exc).__name__, str(exc) or repr(exc)) from exc
        if rsp.status_code >= 400:
            try:
                body = rsp.json()
                raise ApiError(
                    rsp.status_code, str(body.get("reason", "")), str(body.get("message", rsp.text))
                )
            except ValueError:
                raise ApiError(rsp.status_code, rsp.reason_phrase, rsp.text[:500]) from None
        if not rsp.content:
            return {}
        result = rsp.json()
        return result if isinstance(result, dict) else {"items": result}

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

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

    async def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, json_body=obj)

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
