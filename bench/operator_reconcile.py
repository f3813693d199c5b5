"""Operator benchmark: reconcile latency, a burst of 200 InferenceServices, operator memory.

    python bench/operator_reconcile.py [--kubeconfig K] [--sequential 50] [--burst 200] [--mode Service]

Needs a running sandbox (`shoal sandbox up`). Starts `shoal operator` as a process watching a fresh
namespace, then:
1. creates `--sequential` services one at a time: latency = apply (POST returns) -> the last child
   (the model Deployment, or the router Deployment in Router mode) is seen on a watch; p50/p95;
2. creates `--burst` services at once (16 client threads): time until every one has its children and
   `status.observedGeneration` (fully reconciled, status written);
3. the operator's RSS (VmRSS now, VmHWM peak) from /proc.
Model pods get an unsatisfiable nodeSelector so they stay Pending: the numbers are the operator's and the
API server's work, not kwok's or the scheduler's. Goals: p95 < 1 s, 200 in < 60 s, RSS < 150 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "common")]

from shoal_common import processes  # noqa: E402
from shoal_common.ports import free_port  # noqa: E402
from shoal_operator.kube import bearer_token, connect  # noqa: E402


def client(kubeconfig: str) -> httpx.Client:
    """A plain HTTP client for the bench's own watch and bulk creates, with the operator's credentials."""
    conf = asyncio.run(connect(kubeconfig)).configuration
    token = asyncio.run(bearer_token(conf))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    verify: ssl.SSLContext | bool = False
    if str(conf.host).startswith("https"):
        verify = ssl.create_default_context(cafile=conf.ssl_ca_cert)
        if conf.cert_file:
            verify.load_cert_chain(conf.cert_file, conf.key_file)
        if not conf.verify_ssl:
            verify.check_hostname = False
            verify.verify_mode = ssl.CERT_NONE
    return httpx.Client(base_url=str(conf.host), verify=verify, headers=headers, timeout=30)


def isvc(name: str, mode: str) -> dict[str, Any]:
    return {
        "apiVersion": "shoal.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": name, "uri": "hf://org/tiny"},
            "engine": {"kind": "sim"},
            "routing": {"mode": mode},
            "scheduling": {"nodeSelector": {"shoal.dev/bench": "no-such-node"}},
        },
    }


class DeploymentWatch(threading.Thread):
    """Records when each Deployment name is first seen in the namespace."""

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        super().__init__(daemon=True)
        self.http = client(kubeconfig)
        self.namespace = namespace
        self.seen: dict[str, float] = {}
        self.ready = threading.Event()

    def run(self) -> None:
        path = f"/apis/apps/v1/namespaces/{self.namespace}/deployments"
        while True:
            params = {"watch": "1", "labelSelector": "app.kubernetes.io/managed-by=shoal-operator"}
            with self.http.stream("GET", path, params=params, timeout=None) as rsp:
                self.ready.set()
                for line in rsp.iter_lines():
                    if not line:
                        continue
                    ev = json.loads(line)
                    name = ev.get("object", {}).get("metadata", {}).get("name")
                    if name and ev.get("type") == "ADDED":
                        self.seen.setdefault(name, time.monotonic())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def rss_mb(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kubeconfig_default() -> str:
    try:
        from shoal_sandbox.sandbox import Sandbox

        return str(Sandbox().kubeconfig_path)
    except ImportError:
        return os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config"))


def main() -> int:
    sys.path.insert(0, str(ROOT / "sandbox"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubeconfig", default=None)
    p.add_argument("--sequential", type=int, default=50)
    p.add_argument("--burst", type=int, default=200)
    p.add_argument("--mode", choices=("Service", "Router"), default="Service")
    args = p.parse_args()
    kubeconfig = args.kubeconfig or kubeconfig_default()
    kubectl = shutil.which("kubectl") or str(Path.home() / ".cache" / "shoal" / "bin" / "kubectl")
    ns = f"bench-op-{uuid.uuid4().hex[:5]}"
    kc = [kubectl, "--kubeconfig", kubeconfig]
    subprocess.run(
        [*kc, "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds")],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*kc, "wait", "--for=condition=Established", "crd/inferenceservices.shoal.dev"],
        check=True,
        capture_output=True,
    )
    subprocess.run([*kc, "create", "namespace", ns], check=True, capture_output=True)
    http = client(kubeconfig)
    log = Path(tempfile.mkdtemp(prefix="bench-op-")) / "operator.log"
    metrics_port = free_port()
    argv = [
        sys.executable,
        "-m",
        "shoal_cli",
        "operator",
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        ns,
        "--drift-period",
        "300",
        "--metrics-port",
        str(metrics_port),
        "--no-autoscaler",
        "--log-level",
        "WARNING",
    ]
    op = processes.spawn(argv, log)
    watch = DeploymentWatch(kubeconfig, ns)
    watch.start()
    watch.ready.wait(30)
    last_child = (lambda n: f"{n}-router") if args.mode == "Router" else (lambda n: f"{n}-model")
    base = f"/apis/shoal.dev/v1alpha1/namespaces/{ns}/inferenceservices"
    others = subprocess.run(
        ["pgrep", "-fc", "shoal_cli operator"], capture_output=True, text=True
    ).stdout.strip()
    results: dict[str, Any] = {"mode": args.mode, "other_operators_running": int(others or 0)}
    try:
        # warm-up: the operator is up and reconciling
        http.post(base, json=isvc("warmup", args.mode)).raise_for_status()
        deadline = time.monotonic() + 60
        while last_child("warmup") not in watch.seen:
            if time.monotonic() > deadline or op.poll() is not None:
                raise SystemExit(f"operator did not reconcile; log: {log}")
            time.sleep(0.05)

        latencies = []
        for i in range(args.sequential):
            name = f"seq-{i}"
            http.post(base, json=isvc(name, args.mode)).raise_for_status()
            t0 = time.monotonic()
            deadline = t0 + 30
            while last_child(name) not in watch.seen and time.monotonic() < deadline:
                time.sleep(0.005)
            latencies.append(watch.seen.get(last_child(name), float("inf")) - t0)
        results["sequential"] = {
            "n": args.sequential,
            "p50_s": round(statistics.median(latencies), 3),
            "p95_s": round(pct(latencies, 0.95), 3),
            "max_s": round(max(latencies), 3),
        }

        names_ = [f"burst-{i}" for i in range(args.burst)]
        cpu0 = cpu_s(op.pid)
        load0 = os.getloadavg()[0]
        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda n: http.post(base, json=isvc(n, args.mode)).raise_for_status(), names_))
        created = time.monotonic() - t0
        want = set(names_)
        deadline = t0 + 300
        done: set[str] = set()
        while time.monotonic() < deadline:
            items = http.get(base).json()["items"]
            done = {
                i["metadata"]["name"]
                for i in items
                if i["metadata"]["name"] in want and (i.get("status") or {}).get("observedGeneration") == 1
            }
            if done == want and all(last_child(n) in watch.seen for n in want):
                break
            time.sleep(0.2)
        total = time.monotonic() - t0
        children_at = max(watch.seen.get(last_child(n), float("inf")) for n in names_) - t0
        results["burst"] = {
            "n": args.burst,
            "create_requests_s": round(created, 2),
            "all_children_s": round(children_at, 2),
            "all_reconciled_with_status_s": round(total, 2),
            "reconciled": len(done),
            "operator_cpu_s": round(cpu_s(op.pid) - cpu0, 1),
            "loadavg_1m_before": round(load0, 1),
        }
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        samples = {
            line.split()[0]: float(line.split()[1])
            for line in text.splitlines()
            if line.startswith("shoal_operator_reconcile_duration_seconds_")
        }
        count = samples.get("shoal_operator_reconcile_duration_seconds_count", 0)
        results["reconciles"] = {
            "count": int(count),
            "mean_s": round(
                samples.get("shoal_operator_reconcile_duration_seconds_sum", 0) / max(count, 1), 3
            ),
        }
        now, peak = rss_mb(op.pid)
        results["operator_rss_mb"] = {"now": round(now, 1), "peak": round(peak, 1)}
    finally:
        processes.stop(op, timeout=20)
        subprocess.run([*kc, "delete", "namespace", ns, "--wait=false"], capture_output=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
