"""The node's processes: their command lines, configuration files and health URLs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shoal_sandbox.build import binary_path
from shoal_sandbox.kubeconfigs import render_kubeconfig, write_if_changed
from shoal_sandbox.node import config
from shoal_sandbox.node.config import NODE_IP, NODE_NAME, NodePaths

# Start order; `down` stops them in reverse.
NODE_COMPONENTS = ("containerd", "kubelet", "kube-proxy", "coredns")
# iptables, mount, ip and the shims live in the sbin folders, which a user's PATH may lack.
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class NodeFiles:
    paths: NodePaths
    pki: Path
    api_server: str  # https://198.18.0.1:<port>
    service_cidr: str

    def kubeconfig(self, stem: str) -> Path:
        return self.paths.config_dir / f"{stem}.kubeconfig"

    def write(self) -> None:
        """Writes every configuration file (idempotent; unchanged files are left alone)."""
        p = self.paths
        for d in (p.config_dir, p.cni_conf_dir, p.kubelet_root, p.pod_logs, p.containerd_root):
            d.mkdir(parents=True, exist_ok=True)
        resolv = p.config_dir / "resolv.conf"
        files = {
            p.config_dir / "containerd.toml": config.containerd_config(p),
            p.cni_conf_dir / "10-shoal.conflist": config.cni_conflist(p, self.service_cidr),
            p.config_dir / "kubelet.yaml": config.kubelet_config(p, self.pki / "ca.crt", resolv),
            p.config_dir / "kube-proxy.yaml": config.kube_proxy_config(self.kubeconfig("node-kube-proxy")),
            p.config_dir / "Corefile": config.corefile(self.kubeconfig("node-coredns")),
            resolv: "",
        }
        for stem in ("node-kubelet", "node-kube-proxy", "node-coredns"):
            files[self.kubeconfig(stem)] = render_kubeconfig(self.api_server, self.pki, stem, embed=False)
        for path, text in files.items():
            write_if_changed(path, text)

    def argv(self, component: str) -> list[str]:
        p = self.paths
        if component == "containerd":
            return ["containerd", f"--config={p.config_dir / 'containerd.toml'}", "--log-level=warn"]
        if component == "kubelet":
            return [
                str(binary_path("kubelet")),
                f"--config={p.config_dir / 'kubelet.yaml'}",
                f"--kubeconfig={self.kubeconfig('node-kubelet')}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                f"--root-dir={p.kubelet_root}",
                f"--cert-dir={p.kubelet_root / 'pki'}",
                "--v=1",
            ]
        if component == "kube-proxy":
            return [str(binary_path("kube-proxy")), f"--config={p.config_dir / 'kube-proxy.yaml'}", "--v=1"]
        if component == "coredns":
            return [str(binary_path("coredns")), "-conf", str(p.config_dir / "Corefile")]
        raise KeyError(component)

    def env(self, component: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env["PATH"] = _PATH
        if component == "containerd":
            # The node has no registry: an image that was not imported fails at once on loopback instead
            # of being fetched from the internet.
            env |= {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
        return env


def health_url(component: str) -> str | None:
    """A plain-HTTP URL answering 200 when the component is ready; None: readiness is checked otherwise."""
    return {
        "kubelet": f"http://{NODE_IP}:{config.KUBELET_HEALTHZ_PORT}/healthz",
        "kube-proxy": f"http://{NODE_IP}:{config.KUBE_PROXY_HEALTHZ_PORT}/healthz",
        "coredns": f"http://{NODE_IP}:{config.COREDNS_READY_PORT}/ready",
    }.get(component)
