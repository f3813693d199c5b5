"""Puts the host back as `hoststate.snapshot()` found it, once the node's processes are gone."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

from shoal_sandbox.node import hostnet, hoststate
from shoal_sandbox.node.config import BRIDGE

Log = Callable[[str], None]


def kill_cgroup_processes(cgroup_name: str = "kubepods", timeout: float = 10.0) -> int:
    """SIGKILLs every process in the named top-level cgroup (the pods), waiting until none is left."""
    killed = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = _cgroup_pids(cgroup_name)
        if not pids:
            return killed
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        time.sleep(0.2)
    return killed


def _cgroup_pids(cgroup_name: str) -> set[int]:
    pids: set[int] = set()
    for hierarchy in hoststate.cgroup_hierarchies():
        top = hierarchy / cgroup_name
        if not top.is_dir():
            continue
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids |= {int(p) for p in procs.read_text().split()}
    return pids


def kill_processes_mentioning(needle: str, timeout: float = 10.0) -> int:
    """SIGKILLs processes whose command line contains `needle` (the containerd shims of our socket)."""
    killed = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [pid for pid in _pids() if pid != os.getpid() and needle in _cmdline(pid)]
        if not pids:
            return killed
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        time.sleep(0.2)
    return killed


def _pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def restore(before: hoststate.HostState, mount_prefixes: list[str], pod_logs: Path, log: Log) -> list[str]:
    """Undoes every recorded change; returns what could not be undone (empty when the host is clean)."""
    problems: list[str] = []
    for point in hoststate.mounts_to_remove(before.mounts, hoststate.read_mounts(), mount_prefixes):
        proc = hostnet.run(["umount", "-l", point], check=False)
        if proc.returncode != 0 and point in hoststate.read_mounts():
            problems.append(f"umount {point}: {proc.stderr.strip()}")
    # Older containerd placed pod netns in /run/netns as cni-*; never touch other tools' entries there.
    for name in hoststate.new_entries(before.netns, hoststate.read_netns(), "cni-"):
        proc = hostnet.run(["ip", "netns", "delete", name], check=False)
        if proc.returncode != 0:
            problems.append(f"ip netns delete {name}: {proc.stderr.strip()}")
    problems += _remove_cgroups(before.cgroups)
    for cmd, saved in before.iptables.items():
        now = hoststate.read_iptables().get(cmd, "")
        for args in hoststate.iptables_cleanup(saved, now):
            proc = hostnet.run([cmd, "-w", "30", *args], check=False)
            if proc.returncode != 0:
                problems.append(f"{cmd} {' '.join(args)}: {proc.stderr.strip()}")
    if BRIDGE not in before.links:
        hostnet.delete_bridge()
    for name, value in hoststate.sysctls_to_restore(before.sysctls, hoststate.read_sysctls()).items():
        log(f"  restoring {name}={value}")
        try:
            Path("/proc/sys", name.replace(".", "/")).write_text(value)
        except OSError as exc:
            problems.append(f"sysctl {name}={value}: {exc}")
    _remove_host_files(before, pod_logs)
    return problems


def _remove_host_files(before: hoststate.HostState, pod_logs: Path) -> None:
    """Removes the node's files in host-wide folders, then those folders if the node made them and they are
    empty. Other tools share these folders (podman keeps its CNI state in /var/lib/cni), so never rmtree."""
    # libcni's cache of the pods' networks: "shoal" (ours) and containerd's own "cni-loopback".
    for pattern in ("shoal-*", "cni-loopback-*"):
        for found in Path("/var/lib/cni/results").glob(pattern):
            found.unlink(missing_ok=True)
    for link in Path("/var/log/containers").glob("*.log"):
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(str(pod_logs)):
                link.unlink()
    if "/run/containerd" not in before.paths:
        # Only the node's containerd has run here (shim sockets, runc state): it is all the node's.
        shutil.rmtree("/run/containerd", ignore_errors=True)
    for top in hoststate.HOST_PATHS:
        if top in before.paths or not os.path.isdir(top) or os.path.islink(top):
            continue
        for d in sorted((p for p in Path(top).rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            Path(top).rmdir()


def _remove_cgroups(before: list[str]) -> list[str]:
    problems = []
    for hierarchy in hoststate.cgroup_hierarchies():
        tops: list[Path] = []
        with contextlib.suppress(OSError):
            tops = [c for c in hierarchy.iterdir() if c.is_dir() and str(c) not in before]
        for top in tops:
            if top.name not in ("kubepods", "kubepods.slice"):
                continue  # someone else's cgroup, made while the node ran
            # Children before parents; a cgroup directory is removed with rmdir, never recursively.
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    d.rmdir()
            try:
                top.rmdir()
            except OSError as exc:
                problems.append(f"rmdir {top}: {exc}")
    return problems
