"""The sandbox's own lifecycle through the `shoal sandbox` CLI, on a private sandbox name: `up` twice (the
second is a fast no-op), `status`, `kubeconfig`, and `down` leaving no process behind.

This always uses the local sandbox (it tests the sandbox itself), also when SHOAL_TEST_KUBECONFIG is set.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.eventually import eventually
from support.kubectl import Kubectl

pytestmark = pytest.mark.integration


def _shoal(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal_cli", "sandbox", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            alive.append(pid)
    return alive


@pytest.fixture
def private_sandbox() -> Iterator[str]:
    name = f"lifecycle-{uuid.uuid4().hex[:6]}"
    yield name
    # Whatever the test did, leave nothing running and no state behind.
    _shoal("down", "--name", name, "--purge")


def test_up_is_idempotent_and_down_leaves_no_process(private_sandbox: str) -> None:
    name = private_sandbox
    first = _shoal("up", "--name", name, "--node", "kwok", "--nodes", "1", "--gpus", "4")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "starting kube-apiserver" in first.stdout and "is up" in first.stdout

    t0 = time.monotonic()
    second = _shoal("up", "--name", name, "--node", "kwok", "--nodes", "1", "--gpus", "4")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "starting" not in second.stdout, "a second `up` restarted components"
    assert time.monotonic() - t0 < 15, "a second `up` on a healthy sandbox should be a quick no-op"

    status = _shoal("status", "--name", name)
    assert status.returncode == 0, status.stdout
    from shoal_sandbox.sandbox import COMPONENTS

    for component in COMPONENTS:
        assert component in status.stdout

    kubeconfig = Path(_shoal("kubeconfig", "--name", name).stdout.strip())
    assert kubeconfig.is_file()
    nodes = Kubectl(kubeconfig).json("get", "nodes")["items"]
    assert [n["status"]["allocatable"]["nvidia.com/gpu"] for n in nodes] == ["4"]

    from shoal_sandbox import Sandbox

    pids = [s.pid for s in Sandbox(name=name, node_mode="kwok").status() if s.pid is not None]
    assert len(pids) == len(COMPONENTS) and _pids_alive(pids) == pids

    down = _shoal("down", "--name", name)
    assert down.returncode == 0, down.stderr
    eventually(lambda: not _pids_alive(pids), timeout=15, desc="no sandbox process left")
    stopped = _shoal("status", "--name", name)
    assert stopped.returncode == 1 and "stopped" in stopped.stdout


def test_up_reports_the_failing_component_with_its_log(private_sandbox: str) -> None:
    # An unknown flag makes etcd exit at once: `up` must name it, show its log tail and exit non-zero.
    from shoal_sandbox import Sandbox

    failing = subprocess.run(
        [
            sys.executable,
            "-m",
            "shoal_cli",
            "sandbox",
            "up",
            "--name",
            private_sandbox,
            "--node",
            "kwok",
            "--timeout",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "SHOAL_SANDBOX_ETCD_ARGS": "--no-such-flag"},
    )
    assert failing.returncode != 0
    assert "etcd exited" in failing.stderr and "last lines of" in failing.stderr, failing.stderr
    assert "no-such-flag" in failing.stderr, failing.stderr
    # Nothing of the failed start keeps running.
    assert not any(s.running for s in Sandbox(name=private_sandbox, node_mode="kwok").status())


def test_a_restarted_api_server_keeps_its_port_and_old_ephemeral_ports_move_at_a_cold_start(
    private_sandbox: str,
) -> None:
    """CI: the API server, SIGKILLed under load, could not bind its port again ("address already in use").
    Ports now come from outside the kernel's ephemeral range (an outgoing connection may take one there
    while its server is down), and `up` waits until a restarted component's ports are free."""
    import json
    import signal

    from shoal_common.ports import ephemeral_range, is_server_port
    from shoal_sandbox import Sandbox, procs
    from shoal_sandbox.health import wait_port_free
    from shoal_sandbox.paths import state_root

    low, _ = ephemeral_range()
    config = state_root() / private_sandbox / "config.json"
    config.parent.mkdir(parents=True)
    old = {"etcd": low + 11, "etcd-peer": low + 12, "kube-apiserver": low + 13}
    old |= {"kube-controller-manager": low + 14, "kube-scheduler": low + 15, "kwok": low + 16}
    config.write_text(json.dumps({"ports": old}))

    up = _shoal("up", "--name", private_sandbox, "--node", "kwok", "--nodes", "1")
    assert up.returncode == 0, up.stdout + up.stderr
    ports = json.loads(config.read_text())["ports"]
    assert all(is_server_port(p) for p in ports.values()), ports  # a cold start moved every old pick

    sandbox = Sandbox(name=private_sandbox, node_mode="kwok")
    rec = procs.load(sandbox.state_dir / "procs" / "kube-apiserver.json")
    assert rec is not None
    os.kill(rec.pid, signal.SIGKILL)
    eventually(lambda: not procs.is_alive(rec), timeout=30, desc="the API server gone")
    again = _shoal("up", "--name", private_sandbox, "--node", "kwok", "--nodes", "1")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "starting kube-apiserver" in again.stdout and "starting etcd" not in again.stdout
    assert json.loads(config.read_text())["ports"] == ports  # nothing moved while etcd and the rest ran
    kubeconfig = Path(_shoal("kubeconfig", "--name", private_sandbox).stdout.strip())
    assert Kubectl(kubeconfig).json("get", "nodes")["items"]

    # The second CI failure: SIGKILLed, the server counts as dead (a zombie) at once, but its port stays
    # taken until its threads have closed its files (70-90 ms here, longer on a loaded machine). `up`
    # waits for the port; one that stays taken is a clear error.
    rec = procs.load(sandbox.state_dir / "procs" / "kube-apiserver.json")
    assert rec is not None
    os.kill(rec.pid, signal.SIGKILL)
    eventually(lambda: not procs.is_alive(rec), timeout=30, desc="the API server gone")
    assert wait_port_free(ports["kube-apiserver"], "127.0.0.1", 30)  # the zombie's, until it lets go
    holder = socket.create_server(("127.0.0.1", ports["kube-apiserver"]))
    try:
        stuck = _shoal("up", "--name", private_sandbox, "--node", "kwok", "--nodes", "1", "--timeout", "3")
        assert stuck.returncode != 0
        assert f"127.0.0.1:{ports['kube-apiserver']} is still in use" in stuck.stdout + stuck.stderr
        threading.Timer(1.5, holder.close).start()
        waited = _shoal("up", "--name", private_sandbox, "--node", "kwok", "--nodes", "1")
    finally:
        holder.close()
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert json.loads(config.read_text())["ports"] == ports
    assert Kubectl(kubeconfig).json("get", "nodes")["items"]
