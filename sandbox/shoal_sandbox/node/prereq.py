"""What the real node needs from the host, checked before anything is changed, with readable errors."""

from __future__ import annotations

import ipaddress
import os
import shutil
from pathlib import Path

from shoal_sandbox.build import NODE_TOOLS, missing_binaries
from shoal_sandbox.node.config import BRIDGE, CNI_BIN_DIR, CONTAINED_CIDR, RUNC

_COMMANDS = {
    "containerd": "containerd",
    "ctr": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "iptables": "iptables",
    "iptables-save": "iptables",
    "ip6tables-save": "iptables",
    "ip": "iproute2",
    "umount": "mount",
}
_CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
_CGROUP_V1 = ("cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer")


def problems(
    is_root: bool, which: dict[str, bool], files: dict[str, bool], addresses: list[str]
) -> list[str]:
    """Every unmet prerequisite, as a sentence saying how to meet it (pure: the caller reads the host)."""
    found = []
    if not is_root:
        found.append("the real node needs root (it runs the kubelet and containerd, and adds a bridge)")
    missing = sorted({_COMMANDS[c] for c, ok in which.items() if not ok and c in _COMMANDS})
    if missing:
        found.append(f"missing commands; run `apt-get install {' '.join(missing)}`")
    absent = sorted(p for p, ok in files.items() if not ok)
    if any(p.startswith(str(CNI_BIN_DIR)) for p in absent):
        found.append(
            f"CNI plugins missing in {CNI_BIN_DIR}; run `apt-get install containernetworking-plugins`"
        )
    if str(RUNC) in absent:
        found.append(f"{RUNC} is missing; run `apt-get install runc`")
    if "/sys/module/bridge" in absent and "/proc/sys/net/bridge" in absent:
        found.append("the kernel has no bridge support (module `bridge`); the node's pod network needs it")
    if "/sys/fs/cgroup/cgroup.controllers" in absent:
        lacking = [c for c in _CGROUP_V1 if f"/sys/fs/cgroup/{c}" in absent]
        if lacking:
            found.append(f"cgroup v1 controllers not mounted under /sys/fs/cgroup: {', '.join(lacking)}")
    contained = ipaddress.ip_network(CONTAINED_CIDR)
    clashes = [a for a in addresses if ipaddress.ip_interface(a.split()[1]).ip in contained]
    clashes = [a for a in clashes if a.split()[0] != BRIDGE]
    if clashes:
        found.append(f"{CONTAINED_CIDR} is already used on this host ({'; '.join(clashes)})")
    return found


def check_host(addresses: list[str]) -> list[str]:
    """Reads the host and returns `problems(...)`; `addresses` are "<ifname> <cidr>" pairs."""
    which = {
        c: shutil.which(c, path="/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin") is not None
        for c in _COMMANDS
    }
    paths = [str(CNI_BIN_DIR / p) for p in _CNI_PLUGINS] + [
        str(RUNC),
        "/sys/module/bridge",
        "/proc/sys/net/bridge",
    ]
    paths += ["/sys/fs/cgroup/cgroup.controllers"] + [f"/sys/fs/cgroup/{c}" for c in _CGROUP_V1]
    files = {p: Path(p).exists() for p in paths}
    found = problems(os.geteuid() == 0, which, files, addresses)
    missing = missing_binaries(NODE_TOOLS)
    if missing:
        found.append(f"node binaries not built: {', '.join(missing)}; run `shoal sandbox build --node`")
    return found
