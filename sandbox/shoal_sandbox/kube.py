"""The sandbox tools' synchronous Kubernetes client (the demo, the closed-loop stacks, tests): server-side
apply, get, list, delete and merge patches over the sandbox's admin kubeconfig.

It predates the project-wide client (kubernetes_asyncio, used by the operator and the router); the
sandbox's scripts and tests are synchronous, so they keep this small httpx client (see docs/architecture.md).
"""

from __future__ import annotations

import base64
import builtins
import json
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

Obj = dict[str, Any]


@dataclass
class KubeConfig:
    server: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None
    insecure: bool = False
    path: Path | None = None


def load_kubeconfig(path: Path, scratch: Path | None = None) -> KubeConfig:
    """Read the current context of a kubeconfig; inline ``*-data`` is written to files under ``scratch``."""
    doc = yaml.safe_load(path.read_text())
    ctx_name = doc.get("current-context")
    contexts = {c["name"]: c["context"] for c in doc.get("contexts", [])}
    ctx = contexts.get(ctx_name) or next(iter(contexts.values()))
    cluster = {c["name"]: c["cluster"] for c in doc.get("clusters", [])}[ctx["cluster"]]
    user = {u["name"]: u.get("user") or {} for u in doc.get("users", [])}.get(ctx.get("user", ""), {})
    scratch_dir = scratch or Path(tempfile.mkdtemp(prefix="shoal-kubeconfig-"))

    def materialise(file_key: str, data_key: str, src: Obj, fname: str) -> str | None:
        if src.get(file_key):
            p = Path(src[file_key])
            return str(p if p.is_absolute() else (path.parent / p))
        if src.get(data_key):
            scratch_dir.mkdir(parents=True, exist_ok=True)
            out = scratch_dir / fname
            out.write_bytes(base64.b64decode(src[data_key]))
            out.chmod(0o600)
            return str(out)
        return None

    return KubeConfig(
        server=cluster["server"],
        ca_file=materialise("certificate-authority", "certificate-authority-data", cluster, "ca.crt"),
        cert_file=materialise("client-certificate", "client-certificate-data", user, "client.crt"),
        key_file=materialise("client-key", "client-key-data", user, "client.key"),
        token=user.get("token"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        path=path,
    )


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


_KINDS = {
    "Namespace": ("v1", "namespaces", False),
    "Pod": ("v1", "pods", True),
    "Service": ("v1", "services", True),
    "Deployment": ("apps/v1", "deployments", True),
    "EndpointSlice": ("discovery.k8s.io/v1", "endpointslices", True),
    "CustomResourceDefinition": ("apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    "InferenceService": ("shoal.dev/v1alpha1", "inferenceservices", True),
    "PersistentVolume": ("v1", "persistentvolumes", False),
    "PersistentVolumeClaim": ("v1", "persistentvolumeclaims", True),
}


class SyncKube:
    """Synchronous twin of :class:`KubeAPI` for scripts and tests: apply (server-side), get, list, delete."""

    def __init__(self, kubeconfig: Path, field_manager: str = "shoal-sandbox") -> None:
        self.kubeconfig = kubeconfig
        self.field_manager = field_manager
        cfg = load_kubeconfig(kubeconfig)
        ctx = ssl.create_default_context(cafile=cfg.ca_file) if cfg.ca_file else ssl.create_default_context()
        if cfg.cert_file and cfg.key_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        headers = {"Authorization": f"Bearer {cfg.token}"} if cfg.token else {}
        self.http = httpx.Client(base_url=cfg.server, verify=ctx, headers=headers, timeout=30.0)

    def close(self) -> None:
        self.http.close()

    @staticmethod
    def path(kind: str, namespace: str | None = None, name: str | None = None) -> str:
        api_version, plural, namespaced = _KINDS[kind]
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        out = base + (f"/namespaces/{namespace}" if namespaced and namespace else "") + f"/{plural}"
        return out + (f"/{name}" if name else "")

    @staticmethod
    def _check(resp: httpx.Response) -> Obj:
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, resp.text)
        out: Obj = resp.json() if resp.content else {}
        return out

    def apply(self, obj: Obj, namespace: str | None = None) -> Obj:
        md = obj["metadata"]
        ns = namespace or md.get("namespace")
        if ns and _KINDS[obj["kind"]][2]:
            md["namespace"] = ns
        resp = self.http.patch(
            self.path(obj["kind"], ns, md["name"]),
            params={"fieldManager": self.field_manager, "force": "true"},
            content=json.dumps(obj).encode(),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        return self._check(resp)

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        resp = self.http.get(self.path(kind, namespace, name))
        if resp.status_code == 404:
            return None
        return self._check(resp)

    def list(self, kind: str, namespace: str | None = None, selector: str | None = None) -> list[Obj]:
        params = {"labelSelector": selector} if selector else None
        items: list[Obj] = self._check(self.http.get(self.path(kind, namespace), params=params))["items"]
        return items

    def delete(self, kind: str, namespace: str | None, name: str, grace: int | None = None) -> None:
        body = {"gracePeriodSeconds": grace} if grace is not None else None
        resp = self.http.request("DELETE", self.path(kind, namespace, name), json=body)
        if resp.status_code != 404:
            self._check(resp)

    def patch_merge(
        self, kind: str, namespace: str | None, name: str, patch: Obj, subresource: str = ""
    ) -> Obj:
        path = self.path(kind, namespace, name) + (f"/{subresource}" if subresource else "")
        resp = self.http.patch(path, json=patch, headers={"Content-Type": "application/merge-patch+json"})
        return self._check(resp)

    def pod_log(self, namespace: str, pod: str, container: str | None = None, tail: int = 200) -> str:
        params = {"tailLines": str(tail), **({"container": container} if container else {})}
        resp = self.http.get(self.path("Pod", namespace, pod) + "/log", params=params)
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, resp.text)
        return resp.text

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
