"""Free loopback ports for processes that shoal starts itself (sandbox, demo, tests, benchmarks)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the kernel just had free on `host`; another process may take it before the caller binds."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
