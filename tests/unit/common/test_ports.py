"""Servers get ports a client's outgoing connection can never take, so a restarted server binds again."""

from __future__ import annotations

import socket
from pathlib import Path

from shoal_common.ports import (
    LINUX_DEFAULT_EPHEMERAL,
    LOWEST,
    NODE_PORTS,
    ephemeral_range,
    free_port,
    is_server_port,
    server_port_ranges,
)


def _ports(ranges: list[range]) -> set[int]:
    return {p for r in ranges for p in r}


def test_server_ports_leave_out_the_ephemeral_and_node_port_ranges() -> None:
    ports = _ports(server_port_ranges((32768, 60999)))
    assert min(ports) == LOWEST
    assert max(ports) == 65535
    assert not ports & set(range(32768, 61000))  # both ends of the kernel's range are inclusive
    assert not ports & set(NODE_PORTS)
    assert {LOWEST, 29999, 61000} <= ports


def test_a_wide_ephemeral_range_leaves_only_what_lies_outside_it() -> None:
    assert _ports(server_port_ranges((1024, 65535))) == set()
    assert _ports(server_port_ranges((25000, 65000))) == set(range(LOWEST, 25000)) | set(range(65001, 65536))


def test_the_ephemeral_range_is_read_from_the_kernel_file(tmp_path: Path) -> None:
    conf = tmp_path / "ip_local_port_range"
    conf.write_text("40000\t50000\n")
    assert ephemeral_range(conf) == (40000, 50000)
    conf.write_text("garbage")
    assert ephemeral_range(conf) == LINUX_DEFAULT_EPHEMERAL
    assert ephemeral_range(tmp_path / "missing") == LINUX_DEFAULT_EPHEMERAL


def test_free_port_is_bindable_and_never_ephemeral() -> None:
    low, high = ephemeral_range()
    for _ in range(20):
        port = free_port()
        assert not low <= port <= high
        assert port not in NODE_PORTS
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_free_port_skips_a_port_in_use() -> None:
    taken = [socket.socket() for _ in range(3)]
    try:
        held = set()
        for s in taken:
            s.bind(("127.0.0.1", free_port()))
            s.listen()
            held.add(s.getsockname()[1])
        assert all(free_port() not in held for _ in range(50))
    finally:
        for s in taken:
            s.close()


def test_is_server_port_matches_where_free_port_picks() -> None:
    low, high = ephemeral_range()
    assert is_server_port(free_port())
    assert not is_server_port(low) and not is_server_port(high)
    assert not is_server_port(NODE_PORTS.start) and not is_server_port(80)
