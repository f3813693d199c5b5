"""Free ports for servers that shoal starts itself (sandbox, demo, tests, benchmarks).

Ports come from outside the kernel's ephemeral range. The kernel gives every outgoing connection a source
port from that range, and it may hand out a dead server's port: a restarted server then cannot bind
("address already in use"). This happened in CI to an API server restarted under load. A port outside the
range is never a source port, so a server can always bind it again.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_DEFAULT_EPHEMERAL = (32768, 60999)
# Below 20000 lie many well-known services' ports; 30000-32767 is Kubernetes' NodePort range, whose
# traffic kube-proxy redirects on every node address.
LOWEST = 20000
NODE_PORTS = range(30000, 32768)
ATTEMPTS = 500


def server_port_ranges(ephemeral: tuple[int, int]) -> list[range]:
    """The ports a server may take: from LOWEST up, minus the ephemeral (inclusive) and NodePort ranges."""
    low, high = ephemeral
    ranges = [range(LOWEST, low), range(high + 1, 65536)]
    return [part for r in ranges for part in _without(r, NODE_PORTS) if len(part) > 0]


def _without(r: range, hole: range) -> list[range]:
    return [range(r.start, min(r.stop, hole.start)), range(max(r.start, hole.stop), r.stop)]


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    try:
        low, high = (int(x) for x in path.read_text().split())
    except (OSError, ValueError):
        return LINUX_DEFAULT_EPHEMERAL
    return low, high


def is_server_port(port: int) -> bool:
    """Whether `port` lies where `free_port` picks: a restarted server can always bind it again."""
    return any(port in r for r in server_port_ranges(ephemeral_range()))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now, outside the ephemeral range; another process may take it before the
    caller binds."""
    ranges = server_port_ranges(ephemeral_range())
    pick = random.Random()
    for _ in range(ATTEMPTS):
        port = pick.choice(pick.choices(ranges, weights=[len(r) for r in ranges])[0])
        if _bindable(host, port):
            return port
    raise OSError(f"no free port on {host} outside the ephemeral range after {ATTEMPTS} tries")


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
