"""The control plane's command lines, as pure functions of the sandbox's layout (state folder, ports, mode).

`SHOAL_SANDBOX_<COMPONENT>_ARGS` (added by :class:`shoal_sandbox.sandbox.Sandbox`) appends flags for debugging.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shoal_sandbox.build import binary_path
from shoal_sandbox.certs import FRONT_PROXY_CLIENT
from shoal_sandbox.nodes import KWOK_ANNOTATION, KWOK_ANNOTATION_VALUE

# kwok's fake pods get IPs in the loopback range (nothing serves on them; the real node runs real pods).
POD_CIDR = "127.1.0.0/16"
NODE_IP = "127.0.0.1"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Layout:
    state_dir: Path
    pki: Path
    ports: dict[str, int]
    api_host: str  # 127.0.0.1, or the real node's bridge address (its pods reach the API server there)
    node_mode: str
    kwok_configs: Sequence[Path] = ()
    kwok_args: Sequence[str] = ()
    # The HPA controller's period (kube-controller-manager's default, 15 s, when None).
    hpa_sync_period_s: float | None = None

    @property
    def kubeconfigs(self) -> Path:
        return self.state_dir / "kubeconfigs"


def etcd(lay: Layout) -> list[str]:
    client = f"http://{LOOPBACK}:{lay.ports['etcd']}"
    peer = f"http://{LOOPBACK}:{lay.ports['etcd-peer']}"
    return [
        str(binary_path("etcd")),
        "--name=sandbox",
        f"--data-dir={lay.state_dir / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=sandbox={peer}",
        # A throwaway test cluster: durability is worth less than fast writes on a busy disk.
        "--unsafe-no-fsync",
        "--quota-backend-bytes=4294967296",
        "--log-level=warn",
    ]


def kube_apiserver(lay: Layout) -> list[str]:
    pki, real = lay.pki, lay.node_mode == "real"
    return [
        str(binary_path("kube-apiserver")),
        f"--etcd-servers=http://{LOOPBACK}:{lay.ports['etcd']}",
        f"--bind-address={lay.api_host}",
        f"--advertise-address={lay.api_host}",
        f"--secure-port={lay.ports['kube-apiserver']}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        # Endpoints may not hold loopback IPs, so with kwok the `kubernetes` Service gets no endpoints;
        # clients use the kubeconfig instead. The real node's API server is on 198.18.0.1: it has.
        f"--endpoint-reconciler-type={'lease' if real else 'none'}",
        "--profiling=false",
        "--event-ttl=1h",
        *(_kubelet_client_flags(pki) if real else []),
        *_aggregation_flags(pki),
    ]


def _aggregation_flags(pki: Path) -> list[str]:
    """API aggregation: the aggregator proxies `custom.metrics.k8s.io` / `external.metrics.k8s.io` to the
    adapters (prometheus-adapter, KEDA's) with the front-proxy client certificate and the user in
    X-Remote-* headers. The API server publishes these settings in kube-system's
    `extension-apiserver-authentication` ConfigMap, where the adapters read which CA and names to trust.
    No --enable-aggregator-routing: the aggregator then resolves a Service to its endpoints, which rejects
    the ExternalName Services that reach an adapter running as a host process (kwok mode has no pod
    network and no kube-proxy)."""
    return [
        f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
    ]


def _kubelet_client_flags(pki: Path) -> list[str]:
    return [
        # Otherwise `kubectl logs`/`exec` resolve the node's hostname through the host's resolver.
        "--kubelet-preferred-address-types=InternalIP",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
    ]


def kube_controller_manager(lay: Layout) -> list[str]:
    pki = lay.pki
    return [
        str(binary_path("kube-controller-manager")),
        *_component_kubeconfig_flags(lay.kubeconfigs / "controller-manager.kubeconfig"),
        f"--bind-address={LOOPBACK}",
        f"--secure-port={lay.ports['kube-controller-manager']}",
        f"--cert-dir={lay.state_dir / 'serving' / 'controller-manager'}",
        # Single instance: leader election would only add a lease wait after an unclean stop.
        "--leader-elect=false",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        "--use-service-account-credentials=true",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        "--cluster-name=shoal-sandbox",
        "--controllers=*",
        # Tests create and delete many objects; the default client rate limit (20 qps) slows them.
        "--kube-api-qps=100",
        "--kube-api-burst=200",
        "--profiling=false",
        *_hpa_flags(lay.hpa_sync_period_s),
    ]


def _hpa_flags(sync_period_s: float | None) -> list[str]:
    if sync_period_s is None:
        return []
    if sync_period_s <= 0:
        raise ValueError(f"the HPA sync period must be positive, not {sync_period_s:g} s")
    return [f"--horizontal-pod-autoscaler-sync-period={sync_period_s:g}s"]


def kube_scheduler(lay: Layout) -> list[str]:
    return [
        str(binary_path("kube-scheduler")),
        *_component_kubeconfig_flags(lay.kubeconfigs / "scheduler.kubeconfig"),
        f"--bind-address={LOOPBACK}",
        f"--secure-port={lay.ports['kube-scheduler']}",
        f"--cert-dir={lay.state_dir / 'serving' / 'scheduler'}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def kwok(lay: Layout) -> list[str]:
    return [
        str(binary_path("kwok")),
        f"--kubeconfig={lay.kubeconfigs / 'kwok.kubeconfig'}",
        # Only our annotated fake nodes: a shared cluster's real nodes are never touched.
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}={KWOK_ANNOTATION_VALUE}",
        # kwok hands out IPs upwards from the address given, so start at .1, not the network address.
        f"--cidr={_first_ip(POD_CIDR)}",
        f"--node-ip={NODE_IP}",
        f"--server-address={LOOPBACK}:{lay.ports['kwok']}",
        # Always an explicit config, so a user's ~/.kwok/kwok.yaml (kwok's default) never leaks in.
        f"--config={lay.state_dir / 'kwok.yaml'}",
        f"--config={lay.state_dir / 'kwok-pod-stages.yaml'}",
        *(f"--config={p}" for p in lay.kwok_configs),
        *lay.kwok_args,
    ]


ARGV: dict[str, Callable[[Layout], list[str]]] = {
    "etcd": etcd,
    "kube-apiserver": kube_apiserver,
    "kube-controller-manager": kube_controller_manager,
    "kube-scheduler": kube_scheduler,
    "kwok": kwok,
}


def component_argv(component: str, lay: Layout) -> list[str]:
    return ARGV[component](lay)


def _first_ip(cidr: str) -> str:
    net = ipaddress.ip_network(cidr)
    return f"{net.network_address + 1}/{net.prefixlen}"


def _component_kubeconfig_flags(path: Path) -> list[str]:
    return [
        f"--kubeconfig={path}",
        f"--authentication-kubeconfig={path}",
        f"--authorization-kubeconfig={path}",
    ]
