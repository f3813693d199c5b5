"""A sandbox's ports move only on a cold start; a restart of one component never moves them."""

from __future__ import annotations

from shoal_sandbox.port_plan import ports_to_choose

NAMES = ("etcd", "etcd-peer", "kube-apiserver")
STORED = {"etcd": 21000, "etcd-peer": 21001, "kube-apiserver": 57337}  # the last: an old ephemeral pick


def _server(port: int) -> bool:
    return port < 30000


def test_a_restart_with_components_running_keeps_every_stored_port_even_a_busy_one() -> None:
    asked: list[str] = []

    def busy(name: str, port: int) -> bool:
        asked.append(name)
        return True

    assert ports_to_choose(STORED, NAMES, cold=False, busy=busy, server_port=_server) == []
    assert asked == []  # nothing running is asked about: a port held by its own server is not "busy"


def test_a_cold_start_moves_busy_ports_and_old_ephemeral_ones() -> None:
    def busy(name: str, port: int) -> bool:
        return name == "etcd"

    chosen = ports_to_choose(STORED, NAMES, cold=True, busy=busy, server_port=_server)
    assert chosen == ["etcd", "kube-apiserver"]


def test_missing_ports_are_chosen_whether_or_not_anything_runs() -> None:
    def never(name: str, port: int) -> bool:
        return False

    for cold in (True, False):
        chosen = ports_to_choose({"etcd": 21000}, NAMES, cold=cold, busy=never, server_port=_server)
        assert chosen == ["etcd-peer", "kube-apiserver"]
