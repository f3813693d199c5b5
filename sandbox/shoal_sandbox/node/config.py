"""The node's fixed addresses and its components' configuration files, as pure functions of paths and ports.

Addresses come from 198.18.0.0/15 (RFC 2544, reserved for benchmarking), so they never collide with a real
network; pod traffic is kept inside it (hostnet.forward_rules).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

BRIDGE = "shoalbr0"
NODE_IP = "198.18.0.1"
POD_CIDR = "198.18.0.0/16"
CONTAINED_CIDR = "198.18.0.0/15"  # pod traffic may not leave this range
BRIDGE_ADDRESS = f"{NODE_IP}/16"
NODE_NAME = "shoal-node"
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
RUNC = Path("/usr/sbin/runc")
# Host-wide: one real node per host. tmpfs, so a reboot (which undoes every host change) also clears it.
RUN_DIR = Path("/run/shoal-node")
PAUSE_IMAGE = "localhost/shoal/pause:1.0"
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248
KUBE_PROXY_HEALTHZ_PORT = 10256
KUBE_PROXY_METRICS_PORT = 10249
COREDNS_READY_PORT = 8181
GPU_LABELS = {
    "nvidia.com/gpu.present": "true",
    "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
    "nvidia.com/gpu.memory": "81920",
    "nvidia.com/gpu.family": "ampere",
}


@dataclass(frozen=True)
class NodePaths:
    """Where the node keeps its files: persistent ones under the sandbox's state, runtime ones in RUN_DIR."""

    root: Path  # $SHOAL_CACHE/sandbox/<name>/node

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_state(self) -> Path:
        return RUN_DIR / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return RUN_DIR / "containerd" / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def ipam_dir(self) -> Path:
        return RUN_DIR / "ipam"

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def host_record(self) -> Path:
        return RUN_DIR / "host-before.json"

    @property
    def owner_file(self) -> Path:
        return RUN_DIR / "owner"


def containerd_config(paths: NodePaths, pause_image: str = PAUSE_IMAGE) -> str:
    """containerd 1.6 (config version 2). `restrict_oom_score_adj`: without CAP_SYS_RESOURCE every pod
    sandbox otherwise fails with "can't get final child's PID from pipe: EOF"."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{paths.containerd_root}"
state = "{paths.containerd_state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{paths.containerd_socket}"

[ttrpc]
  address = "{paths.containerd_socket}.ttrpc"

[{cri}]
  sandbox_image = "{pause_image}"
  restrict_oom_score_adj = true
  # Pod netns mounts in containerd's own state dir, not the host-wide /run/netns: other tools (podman,
  # `ip netns`) bind-mount /run/netns over itself, which hides mounts made beneath and makes them
  # impossible to remove (pods then hang in Terminating).
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{RUNC}"
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{paths.cni_conf_dir}"
  max_conf_num = 1
"""


def cni_conflist(paths: NodePaths, service_cidr: str) -> str:
    """A bridge with host-local IPAM. No default route in pods: they reach the pod range on-link and the
    service range through the host (kube-proxy), nothing else."""
    ipam = {
        "type": "host-local",
        "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP, "rangeStart": "198.18.0.10"}]],
        "routes": [{"dst": service_cidr}],
        "dataDir": str(paths.ipam_dir),
    }
    bridge = {
        "type": "bridge",
        "bridge": BRIDGE,
        "isGateway": True,
        "ipMasq": False,
        "hairpinMode": True,
        "ipam": ipam,
    }
    plugins = [bridge, {"type": "portmap", "capabilities": {"portMappings": True}}]
    return json.dumps({"cniVersion": "1.0.0", "name": "shoal", "plugins": plugins}, indent=2)


def kubelet_config(paths: NodePaths, ca_file: Path, resolv_conf: Path) -> str:
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": NODE_IP,
        "healthzPort": KUBELET_HEALTHZ_PORT,
        # This machine has cgroup v1 and no systemd as PID 1.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [NODE_IP],
        # An empty file: pods get cluster DNS only, never the host's resolvers or search domains.
        "resolvConf": str(resolv_conf),
        "podLogsDir": str(paths.pod_logs),
        # Imported images cannot be pulled again (the node has no registry), so never collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # A shared test machine: evict only when it is really out of room.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "nodeStatusUpdateFrequency": "10s",
        "staticPodPath": "",
        "maxPods": 110,
    }
    return yaml.safe_dump(config, sort_keys=False)


def kube_proxy_config(kubeconfig: Path) -> str:
    config: dict[str, Any] = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": f"{NODE_IP}:{KUBE_PROXY_HEALTHZ_PORT}",
        "metricsBindAddress": f"{NODE_IP}:{KUBE_PROXY_METRICS_PORT}",
        # NodePorts on the bridge address only; localhost NodePorts would need route_localnet=1 host-wide.
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "iptables": {"localhostNodePorts": False, "minSyncPeriod": "1s", "syncPeriod": "30s"},
        # Zeros leave the host's conntrack sysctls alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }
    return yaml.safe_dump(config, sort_keys=False)


def corefile(kubeconfig: Path) -> str:
    """The cluster zone only: a name outside it gets REFUSED, nothing is forwarded off the machine."""
    return f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 {{
    bind {NODE_IP}
    errors
    ready {NODE_IP}:{COREDNS_READY_PORT}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{
        kubeconfig {kubeconfig} shoal-sandbox
        pods insecure
    }}
    cache 10
}}
"""


def coredns_rbac(user: str) -> list[dict[str, Any]]:
    """What CoreDNS's kubernetes plugin reads, bound to its client certificate's user."""
    name = "shoal:coredns"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [
            {"apiGroups": [""], "resources": ["services", "pods", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    return [role, binding]
