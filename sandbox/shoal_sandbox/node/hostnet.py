"""The node's bridge and its FORWARD guard: the only network changes the sandbox makes itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

from shoal_sandbox.node.config import BRIDGE, BRIDGE_ADDRESS, CONTAINED_CIDR, POD_CIDR

FORWARD_CHAIN = "SHOAL-NODE-FORWARD"


class HostCommandError(RuntimeError):
    pass


def run(argv: list[str], check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise HostCommandError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return proc


def forward_rules() -> list[list[str]]:
    """Rules of FORWARD_CHAIN: pod traffic stays inside 198.18.0.0/15, and nothing outside reaches pods."""
    return [
        ["-s", POD_CIDR, "!", "-d", CONTAINED_CIDR, "-j", "DROP"],
        ["!", "-s", CONTAINED_CIDR, "-d", POD_CIDR, "-j", "DROP"],
        ["-s", POD_CIDR, "-d", POD_CIDR, "-j", "ACCEPT"],
    ]


def bridge_exists() -> bool:
    return Path(f"/sys/class/net/{BRIDGE}").exists()


def ensure_bridge(service_cidr: str) -> None:
    """The bridge with the node's address, and a route that keeps the service range on it: a ClusterIP
    that kube-proxy does not translate (no endpoints yet) then goes nowhere instead of out the default route."""
    if not bridge_exists():
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    addrs = run(["ip", "-4", "-o", "addr", "show", "dev", BRIDGE]).stdout
    if BRIDGE_ADDRESS not in addrs:
        run(["ip", "addr", "add", BRIDGE_ADDRESS, "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    # The route goes with the bridge when `down` deletes it.
    run(["ip", "route", "replace", service_cidr, "dev", BRIDGE])


def delete_bridge() -> None:
    if bridge_exists():
        run(["ip", "link", "delete", BRIDGE, "type", "bridge"])


def ensure_forward_guard() -> None:
    """Creates the chain and keeps its jump first in FORWARD (kube-proxy inserts its own at the top)."""
    if run(["iptables", "-w", "30", "-n", "-L", FORWARD_CHAIN], check=False).returncode != 0:
        run(["iptables", "-w", "30", "-N", FORWARD_CHAIN])
    listed = run(["iptables", "-w", "30", "-S", FORWARD_CHAIN]).stdout.splitlines()
    wanted = [f"-A {FORWARD_CHAIN} " + " ".join(r) for r in forward_rules()]
    if listed[1:] != wanted:
        run(["iptables", "-w", "30", "-F", FORWARD_CHAIN])
        for rule in forward_rules():
            run(["iptables", "-w", "30", "-A", FORWARD_CHAIN, *rule])
    first = run(["iptables", "-w", "30", "-S", "FORWARD"]).stdout.splitlines()[1:2]
    if first != [f"-A FORWARD -j {FORWARD_CHAIN}"]:
        for _ in range(16):  # every older jump (there is normally at most one)
            if run(["iptables", "-w", "30", "-D", "FORWARD", "-j", FORWARD_CHAIN], check=False).returncode:
                break
        run(["iptables", "-w", "30", "-I", "FORWARD", "1", "-j", FORWARD_CHAIN])
