"""How fast the pod runner turns pods into serving processes: scale a Deployment of sim model-servers from
0 to N and time until all N are Ready (probe-driven) and answer /v1/models; then scale to 0 and time until
every process has exited (drain included).

    .venv/bin/python bench/e2e_pod_start.py --replicas 4
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from e2e.support import Kube, eventually, pod_ready
from integration.podrunner.test_podrunner import sim_deployment
from shoal_sandbox.runner_stack import Stack


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    results = []
    with Stack(with_prometheus=False, with_operator=False, log=lambda s: print(s, file=sys.stderr)) as stack:
        kube = Kube(stack.kubeconfig, field_manager="bench")
        with kube.namespace("bench") as ns:
            dep = sim_deployment(replicas=0, startup_s=0.0)
            kube.apply(dep, ns)
            for _ in range(args.rounds):
                t0 = time.monotonic()
                kube.patch_merge("Deployment", ns, "sim", {"spec": {"replicas": args.replicas}})

                def all_ready() -> list[str] | None:
                    pods = [p for p in kube.list("Pod", ns, "app=sim") if pod_ready(p)]
                    return [p["status"]["podIP"] for p in pods] if len(pods) == args.replicas else None

                ips = eventually(all_ready, timeout=300, interval=0.1, what="all pods Ready")
                t_ready = time.monotonic() - t0
                for ip in ips:
                    httpx.get(f"http://{ip}:8000/v1/models", timeout=5).raise_for_status()
                t1 = time.monotonic()
                kube.patch_merge("Deployment", ns, "sim", {"spec": {"replicas": 0}})
                eventually(
                    lambda: not kube.list("Pod", ns, "app=sim"), timeout=300, interval=0.1, what="pods gone"
                )
                t_gone = time.monotonic() - t1
                results.append(
                    {"replicas": args.replicas, "scale_up_ready_s": t_ready, "scale_down_gone_s": t_gone}
                )
                print(json.dumps(results[-1]), flush=True)
        kube.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
