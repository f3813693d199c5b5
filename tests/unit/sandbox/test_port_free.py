"""A control-plane port stays its component's after a crash: TIME_WAIT connections do not make it "busy"."""

from __future__ import annotations

import socket
import threading
import time

from shoal_sandbox.health import port_free, wait_port_free


def test_a_port_with_time_wait_connections_is_free_a_listening_one_is_not() -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    assert not port_free(port)  # someone listens
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its end of the connection goes to TIME_WAIT
    client.close()
    server.close()  # the server "crashed"
    assert port_free(port)  # a restarted server can listen again, so the port is kept


def test_a_port_is_checked_on_the_address_its_server_binds() -> None:
    """The API server of a real-node sandbox binds the bridge address; a check on loopback would call its
    port free while something holds it there."""
    held = socket.socket()
    held.bind(("127.0.0.2", 0))
    held.listen()
    try:
        port = held.getsockname()[1]
        assert not port_free(port, "127.0.0.2")
    finally:
        held.close()


def test_waiting_for_a_port_ends_when_its_holder_lets_go_or_at_the_timeout() -> None:
    """A SIGKILLed component counts as dead (a zombie) before its threads have closed its listening
    socket: `up` waits for the port instead of starting a server that exits with "address in use"."""
    held = socket.create_server(("127.0.0.1", 0))
    port = held.getsockname()[1]
    try:
        t0 = time.monotonic()
        assert not wait_port_free(port, "127.0.0.1", timeout_s=0.3)
        assert time.monotonic() - t0 >= 0.3
        threading.Timer(0.3, held.close).start()
        assert wait_port_free(port, "127.0.0.1", timeout_s=10)
        assert time.monotonic() - t0 < 5
    finally:
        held.close()
