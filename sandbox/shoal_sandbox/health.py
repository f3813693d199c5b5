"""Health of the control plane's processes: one probe per component, and whether a port is free."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path


def admin_ssl(pki: Path) -> ssl.SSLContext:
    """TLS as the sandbox admin: the sandbox's CA, the admin's client certificate."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return ctx


def _self_signed() -> ssl.SSLContext:
    """The controller-manager's and scheduler's self-signed serving certs: /healthz needs no identity and
    proves only liveness, so the certificate is not checked."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def probe(component: str, port: int, api_host: str, pki: Path) -> tuple[bool, str]:
    import httpx  # deferred: keeps `shoal --help` fast

    verify: ssl.SSLContext | bool = True
    if component == "etcd":
        url = f"http://127.0.0.1:{port}/health"
    elif component == "kube-apiserver":
        url, verify = f"https://{api_host}:{port}/readyz", admin_ssl(pki)
    elif component == "kwok":
        url = f"http://127.0.0.1:{port}/healthz"
    else:
        url, verify = f"https://127.0.0.1:{port}/healthz", _self_signed()
    try:
        with httpx.Client(verify=verify, timeout=2.0) as client:
            resp = client.get(url)
    except httpx.HTTPError as exc:
        return False, f"{url}: {type(exc).__name__}"
    ok = resp.status_code == 200 and (component != "etcd" or '"health":"true"' in resp.text)
    return ok, f"{url}: {resp.status_code}"


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on the port now. SO_REUSEADDR as the servers themselves set it: a
    component just killed leaves TIME_WAIT connections on its port, which must not move it elsewhere
    (etcd on a new port means a new API server command line, kubeconfigs and a full restart)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_port_free(port: int, host: str, timeout_s: float, poll_s: float = 0.05) -> bool:
    """Waits, at most `timeout_s`, until a server could listen on the port; whether it can."""
    deadline = time.monotonic() + timeout_s
    while not port_free(port, host):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True
