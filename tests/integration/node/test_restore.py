"""`shoal sandbox down` leaves the host as `up` found it (collected last in this folder: it stops the node)."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from integration.node.pods import pod, running_ip
from shoal_sandbox import Sandbox
from shoal_sandbox.node import hoststate
from shoal_sandbox.node.config import BRIDGE, RUN_DIR
from support.cluster import stop_cluster_stack
from support.eventually import eventually
from support.kubectl import Kubectl


def _our_chains(saved: dict[str, str]) -> dict[str, set[str]]:
    """(command, table) -> the chains the node's components would own."""
    found: dict[str, set[str]] = {}
    for cmd, text in saved.items():
        for table, (chains, _rules) in hoststate.parse_iptables_save(text).items():
            found[f"{cmd} {table}"] = {c for c in chains if c.startswith(hoststate.CHAIN_PREFIXES)}
    return found


def test_down_restores_the_host(
    real_sandbox: Sandbox, kube: Kubectl, test_image: str, request: pytest.FixtureRequest
) -> None:
    stop_cluster_stack(request.config, keep_sandbox=True)  # the e2e suite's stack, if it ran: this test downs
    # A pod still running at `down` (its netns, mounts and cgroups must go too). Its namespace is deleted
    # first, so the next `up` finishes the deletion instead of restarting it; the pod drains for longer
    # than this test takes, so it is still running when `down` comes.
    live = pod("live", test_image, env=[{"name": "DRAIN_SECONDS", "value": "300"}])
    live["spec"]["terminationGracePeriodSeconds"] = 300
    kube.apply(live)
    ip = running_ip(kube, "live")
    assert kube.namespace is not None
    kube.run("delete", "namespace", kube.namespace, "--wait=false")
    eventually(
        lambda: httpx.get(f"http://{ip}:8080/state", timeout=2).text.strip() == "draining",
        timeout=30,
        retry_on=(httpx.HTTPError,),
        desc="the live pod is terminating but running",
    )
    node = real_sandbox.real_node()
    before = hoststate.HostState.load(node.paths.host_record.read_text())
    # While up, the node really changed the host (so the comparison below is not vacuous).
    during = hoststate.snapshot()
    assert BRIDGE in during.links
    assert any(c for c in _our_chains(during.iptables).values())
    assert any(m.startswith(str(node.paths.kubelet_root)) for m in during.mounts)
    assert any("/netns/" in m for m in during.mounts if m.startswith(str(RUN_DIR)))  # the pod's netns

    env = {**os.environ, "SHOAL_SANDBOX_NODE": "real"}
    proc = subprocess.run(
        [sys.executable, "-m", "shoal_cli", "sandbox", "down", "--name", real_sandbox.name],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    after = hoststate.snapshot()
    assert hoststate.sysctls_to_restore(before.sysctls, after.sysctls) == {}
    assert set(hoststate.SYSCTLS) & set(before.sysctls) <= set(after.sysctls)
    assert _our_chains(after.iptables) == _our_chains(before.iptables)
    prefixes = [str(node.paths.root), str(RUN_DIR)]
    assert hoststate.mounts_to_remove(before.mounts, after.mounts, prefixes) == []
    assert hoststate.new_entries(before.netns, after.netns, "cni-") == []
    assert BRIDGE not in after.links
    assert [c for c in after.cgroups if c.endswith("/kubepods")] == [
        c for c in before.cgroups if c.endswith("/kubepods")
    ]
    assert set(after.paths) == set(before.paths)
    assert not RUN_DIR.exists()
    assert not real_sandbox.is_up()
