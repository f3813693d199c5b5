"""The sandbox's kubeconfigs (admin, controller-manager, scheduler, kwok) and kwok's own config file."""

from __future__ import annotations

import base64
import contextlib
import os
from pathlib import Path

import yaml

KWOK_CONFIG = """\
# kwok's own options come from flags (see Sandbox._argv); Stages come from the default set unless
# extra --config files add some.
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options: {}
"""


def render_kubeconfig(server: str, pki: Path, stem: str, embed: bool) -> str:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    cluster: dict[str, str] = {"server": server}
    user: dict[str, str] = {}
    if embed:
        cluster["certificate-authority-data"] = b64(pki / "ca.crt")
        user = {
            "client-certificate-data": b64(pki / f"{stem}.crt"),
            "client-key-data": b64(pki / f"{stem}.key"),
        }
    else:
        cluster["certificate-authority"] = str(pki / "ca.crt")
        user = {"client-certificate": str(pki / f"{stem}.crt"), "client-key": str(pki / f"{stem}.key")}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "shoal-sandbox", "cluster": cluster}],
        "users": [{"name": stem, "user": user}],
        "contexts": [{"name": "shoal-sandbox", "context": {"cluster": "shoal-sandbox", "user": stem}}],
        "current-context": "shoal-sandbox",
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


def write_if_changed(path: Path, text: str) -> None:
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    os.replace(tmp, path)
