"""From `kubectl apply` of an InferenceService to Ready pods, on the real node with the chart's operator
(the in-cluster stack of the e2e suite). `bench/node_start.py` measures bare pods and the node's overhead.

    sudo .venv/bin/python bench/isvc_start.py --rounds 3 --replicas 4

Each round applies a simulated-engine InferenceService (no engine start-up delay, so the figure is the
platform's: the operator's reconcile, scheduling, sandbox + container start from shoal's image, probes,
the EndpointSlice, the router and kube-proxy), times Ready at one replica and the first answer through
the Service's ClusterIP, then scales to N and times N ready replicas, then deletes it. Prints one JSON
object per round.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from shoal_common import names
from shoal_sandbox.cluster import ClusterStack
from shoal_sandbox.stack_support import bounded_wait, condition


def sim(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "shoal.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": name, "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
            "engine": {"kind": "sim", "sim": {"startupSeconds": 0}},
            "resources": {"gpus": 1, "cpu": "100m", "memory": "512Mi"},
            "replicas": 1,
        },
    }


def one_round(stack: ClusterStack, ns: str, name: str, replicas: int) -> dict[str, Any]:
    kube = stack.k()
    t0 = time.monotonic()
    kube.apply(sim(name), ns)
    bounded_wait(lambda: condition(stack.isvc(ns, name), "Ready"), 300, "Ready", 0.1)
    ready_1 = time.monotonic() - t0
    bounded_wait(lambda: stack.router_url(ns, name), 120, "the Service answering", 0.1)
    serving = time.monotonic() - t0
    t1 = time.monotonic()
    kube.patch_merge("InferenceService", ns, name, {"spec": {"replicas": replicas}})
    selector = f"{names.LABEL_ISVC}={name},{names.LABEL_COMPONENT}={names.COMPONENT_MODEL_SERVER}"

    def all_ready() -> bool:
        return sum(condition(p, "Ready") for p in kube.list("Pod", ns, selector)) >= replicas

    bounded_wait(all_ready, 300, f"{replicas} ready replicas", 0.1)
    scaled = time.monotonic() - t1
    kube.delete("InferenceService", ns, name)
    bounded_wait(lambda: not kube.list("Pod", ns, selector), 300, "pods gone", 0.5)
    return {
        "apply_to_ready_s": round(ready_1, 2),
        "apply_to_serving_via_clusterip_s": round(serving, 2),
        f"scale_1_to_{replicas}_ready_s": round(scaled, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=4)
    args = ap.parse_args()
    print(json.dumps({"loadavg_before": os.getloadavg()}), flush=True)
    with ClusterStack(log=lambda s: print(s, file=sys.stderr)) as stack:
        ns = "bench-isvc"
        stack.namespace(ns)
        try:
            for i in range(args.rounds):
                result = one_round(stack, ns, f"start-{i}", args.replicas)
                print(json.dumps({"round": i, **result, "loadavg": os.getloadavg()}), flush=True)
        finally:
            stack.delete_namespace(ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
