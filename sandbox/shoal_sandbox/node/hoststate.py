"""What the node changes on the host, recorded before `up` and put back by `down`.

Decisions are pure functions over snapshots (unit-tested); reading and applying them is thin I/O. Only
state the node creates is touched: other processes on this shared machine keep their rules and mounts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

# The kubelet sets the first six (kernel defaults it expects); the bridge CNI plugin turns on forwarding;
# kube-proxy could set route_localnet (its localhost NodePorts are off here); pod-to-Service traffic over
# the bridge depends on bridge-nf-call-iptables. kube-proxy's conntrack sysctls are left alone by its config.
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
)
# Chains the node's components create: the kubelet and kube-proxy (KUBE-), CNI portmap (CNI-), us (SHOAL-).
CHAIN_PREFIXES = ("KUBE-", "CNI-", "SHOAL-")
# Directories the components create on the host outside the node's own folders.
HOST_PATHS = ("/var/lib/cni", "/run/containerd", "/var/log/containers", "/var/log/pods")
IPTABLES = ("iptables", "ip6tables")


@dataclass
class HostState:
    sysctls: dict[str, str] = field(default_factory=dict)
    iptables: dict[str, str] = field(default_factory=dict)  # command -> iptables-save output
    mounts: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)  # top-level cgroup dirs in every hierarchy
    paths: list[str] = field(default_factory=list)  # HOST_PATHS that existed
    links: list[str] = field(default_factory=list)  # network interfaces

    def dump(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def load(cls, text: str) -> HostState:
        return cls(**json.loads(text))


# ---- pure decisions ---------------------------------------------------------------------------------------
def sysctls_to_restore(before: dict[str, str], now: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in before.items() if k in now and now[k] != v}


def parse_iptables_save(text: str) -> dict[str, tuple[list[str], list[str]]]:
    """table -> (chains, rules as `-A CHAIN ...` lines)."""
    tables: dict[str, tuple[list[str], list[str]]] = {}
    current: tuple[list[str], list[str]] | None = None
    for line in text.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:].strip(), ([], []))
        elif current is not None and line.startswith(":"):
            current[0].append(line[1:].split()[0])
        elif current is not None and line.startswith("-A "):
            current[1].append(line)
    return tables


def iptables_cleanup(before: str, now: str) -> list[list[str]]:
    """Arguments (after the command) that remove the node's chains and the rules jumping to them."""
    old, new = parse_iptables_save(before), parse_iptables_save(now)
    commands: list[list[str]] = []
    for table, (chains, rules) in new.items():
        old_chains, old_rules = old.get(table, ([], []))
        ours = {c for c in chains if c.startswith(CHAIN_PREFIXES) and c not in old_chains}
        for rule in rules:
            words = shlex.split(rule)
            chain = words[1]
            if chain in ours or rule in old_rules:
                continue  # a rule inside one of our chains goes with the chain
            if any(w in ours for w in words[2:]):
                commands.append(["-t", table, "-D", chain, *words[2:]])
        # Flush all first: our chains jump to each other, and a referenced chain cannot be deleted.
        commands += [["-t", table, "-F", c] for c in sorted(ours)]
        commands += [["-t", table, "-X", c] for c in sorted(ours)]
    return commands


def under(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def mounts_to_remove(before: list[str], now: list[str], prefixes: Iterable[str]) -> list[str]:
    """New mount points under the node's folders, deepest first (a parent cannot go before its child)."""
    prefixes = list(prefixes)
    old = set(before)
    # A path mounted several times (the kubelet's bind mount of its root dir) is listed once per mount.
    found = [m for m in now if m not in old and under(m, prefixes)]
    return sorted(found, key=lambda m: (-m.count("/"), m))


def new_entries(before: list[str], now: list[str], prefix: str = "") -> list[str]:
    old = set(before)
    return [n for n in now if n not in old and n.startswith(prefix)]


# ---- reading the host -------------------------------------------------------------------------------------
def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls() -> dict[str, str]:
    values = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = _sysctl_path(name).read_text().strip()
    return values


def read_iptables() -> dict[str, str]:
    saved = {}
    for cmd in IPTABLES:
        proc = subprocess.run([f"{cmd}-save"], capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode == 0:
            saved[cmd] = proc.stdout
    return saved


def read_mounts() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with spaces and other specials octal-escaped.
        point = line.split()[4]
        points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point))
    return points


def read_netns() -> list[str]:
    for d in ("/run/netns", "/var/run/netns"):
        with contextlib.suppress(OSError):
            return sorted(os.listdir(d))
    return []


def cgroup_hierarchies() -> list[Path]:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        return [root]  # cgroup v2: one hierarchy
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())


def read_cgroups() -> list[str]:
    found = []
    for h in cgroup_hierarchies():
        with contextlib.suppress(OSError):
            found += [str(c) for c in h.iterdir() if c.is_dir()]
    return sorted(found)


def read_links() -> list[str]:
    return sorted(os.listdir("/sys/class/net"))


def snapshot() -> HostState:
    return HostState(
        sysctls=read_sysctls(),
        iptables=read_iptables(),
        mounts=read_mounts(),
        netns=read_netns(),
        cgroups=read_cgroups(),
        paths=[p for p in HOST_PATHS if os.path.lexists(p)],
        links=read_links(),
    )
