"""The real node's pod start and overhead: scale a Deployment of pause pods 0 -> N -> 0 and time until all
N are Ready and until all are gone; then the node's RSS and idle CPU next to the control plane's (the
baseline from the same run).

    sudo -E .venv/bin/python bench/node_start.py --name node --replicas 5 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

from shoal_sandbox import Sandbox, procs
from shoal_sandbox.node.config import PAUSE_IMAGE

NODE = ("containerd", "kubelet", "kube-proxy", "coredns")
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
_TICKS = 100  # USER_HZ


def _kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    argv = ["kubectl", f"--kubeconfig={kubeconfig}", *args]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True, timeout=60).stdout


def _deployment(replicas: int) -> dict[str, object]:
    container = {"name": "pause", "image": PAUSE_IMAGE, "imagePullPolicy": "Never"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "pause", "namespace": "bench-node"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "pause"}},
            "template": {
                "metadata": {"labels": {"app": "pause"}},
                "spec": {"containers": [container], "terminationGracePeriodSeconds": 1},
            },
        },
    }


def _wait(kubeconfig: Path, want_ready: int | None, timeout: float = 180) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        pods = json.loads(_kubectl(kubeconfig, "-n", "bench-node", "get", "pods", "-o", "json"))["items"]
        ready = [
            p
            for p in pods
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        ]
        if (want_ready is None and not pods) or (want_ready is not None and len(ready) == want_ready):
            return time.monotonic() - t0
        time.sleep(0.2)
    raise TimeoutError(f"pods did not reach {want_ready} Ready in {timeout}s")


def _pid(sandbox: Sandbox, component: str) -> int:
    stem = f"node-{component}" if component in NODE else component
    rec = procs.load(sandbox.state_dir / "procs" / f"{stem}.json")
    if rec is None:
        raise RuntimeError(f"{component} is not running")
    return rec.pid


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="node")
    ap.add_argument("--replicas", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle-seconds", type=float, default=30.0)
    args = ap.parse_args()
    sandbox = Sandbox(name=args.name, node_mode="real")
    sandbox.up(timeout=300)
    kc = sandbox.kubeconfig_path
    _kubectl(kc, "create", "namespace", "bench-node")
    try:
        _kubectl(kc, "apply", "-f", "-", stdin=json.dumps(_deployment(0)))
        up, down = [], []
        for _ in range(args.rounds):
            _kubectl(kc, "-n", "bench-node", "scale", "deployment/pause", f"--replicas={args.replicas}")
            up.append(_wait(kc, args.replicas))
            _kubectl(kc, "-n", "bench-node", "scale", "deployment/pause", "--replicas=0")
            down.append(_wait(kc, None))
    finally:
        _kubectl(kc, "delete", "namespace", "bench-node", "--wait=false")
    time.sleep(5)  # let the namespace deletion settle before measuring idle
    pids = {c: _pid(sandbox, c) for c in (*NODE, *CONTROL_PLANE)}
    cpu0 = {c: _cpu_s(p) for c, p in pids.items()}
    time.sleep(args.idle_seconds)
    idle = {c: (_cpu_s(p) - cpu0[c]) / args.idle_seconds * 100 for c, p in pids.items()}
    rss = {c: _rss_mb(p) for c, p in pids.items()}
    print(
        f"0 -> {args.replicas} Ready: median {statistics.median(up):.2f}s (all: {[round(x, 2) for x in up]})"
    )
    print(
        f"{args.replicas} -> 0 gone: median {statistics.median(down):.2f}s (all: {[round(x, 2) for x in down]})"
    )
    for group, names in (("node", NODE), ("control plane", CONTROL_PLANE)):
        for c in names:
            print(f"{group:>13} {c:<24} RSS {rss[c]:7.1f} MB   idle CPU {idle[c]:5.1f}% of a core")
        total_rss = sum(rss[c] for c in names)
        total_cpu = sum(idle[c] for c in names)
        print(f"{group:>13} {'total':<24} RSS {total_rss:7.1f} MB   idle CPU {total_cpu:5.1f}% of a core")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
