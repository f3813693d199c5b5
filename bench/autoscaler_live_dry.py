"""`bench/autoscaler_live.py --dry-run`: the benchmark's wiring on a kwok sandbox of its own (no real node,
so no replica starts and no result is a measurement):

1. the sandbox's API server serves API aggregation: prometheus-adapter, then KEDA's adapter, registered
   as APIServices and Available (through the same `Adapters` as a live run, on a real Prometheus);
2. every run's objects (InferenceService, HPA, ScaledObject with KEDA's CRDs installed) pass server-side
   validation (`kubectl apply --dry-run=server`) in the run's own namespace;
3. every trace window parses with the load generator's own parser, within 3 minutes of load;
4. the replay-and-sample loop and the scoring run end to end: 20 s of `onoff`'s second burst replayed at a
   local sim model-server process (one replica, the run's engine), the InferenceService sampled every second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import autoscaler_live as al
import autoscaler_live_spec as spec
import live_check as lc
from autoscaler_live_score import markdown, score

SIM_ARGS = ["--sim-prefill-tokens-per-s", "20000", "--sim-decode-tokens-per-s", "60", "--sim-max-batch", "16"]


def validate_objects(args: argparse.Namespace, prometheus: str) -> list[str]:
    """Server-side dry-run applies of each run's objects; returns one line per run."""
    lines = []
    for trace in (t for t in spec.TRACES if t.name in args.traces):
        times = spec.trace_times(trace)
        if not times or trace.seconds > 180:
            raise RuntimeError(f"{trace.name}: {len(times)} requests over {trace.seconds:g} s of load")
        for autoscaler in args.autoscalers:
            ns, name = f"al-{trace.name}-{autoscaler}", "sim"
            lc.kubectl("create", "namespace", ns, check=False)
            isvc = spec.isvc(name, autoscaler)
            isvc["metadata"]["namespace"] = ns
            applied = [al.kubectl_apply(isvc, dry_run=True)]
            obj = al.baseline_object(autoscaler, ns, name, prometheus, args.tuning == "tuned")
            if obj is not None:
                applied.append(al.kubectl_apply(obj, dry_run=True))
            argv = spec.load_argv(trace, "http://10.96.0.10", name, Path(args.out) / f"{ns}.records.jsonl")
            lines.append(
                f"{trace.name:8} {autoscaler:5} {len(times)} requests in {trace.seconds:g} s, load change at "
                f"{trace.change_s:g} s; "
                + "; ".join(a.strip() for a in applied)
                + f"; load: {' '.join(argv[3:7])} ..."
            )
    return lines


def replay_check(kube: Any, procs: lc.Procs, outdir: Path) -> dict[str, Any]:
    """A short real replay at one local sim model-server, sampled and scored as a live run is."""
    port = lc.free_port()
    server = [
        sys.executable,
        "-m",
        "shoal_cli",
        "model-server",
        "--engine",
        "sim",
        "--model",
        "sim",
        *SIM_ARGS,
    ]
    procs.start(
        "dry-model-server",
        [*server, "--engine-arg", "max-model-len=8192", "--host", "127.0.0.1", "--port", str(port)],
    )
    url = f"http://127.0.0.1:{port}"
    lc.wait_for("the sim model-server", lambda: _ready(url), 60, 1)
    ns, name = "al-dry", "sim"
    lc.kubectl("create", "namespace", ns, check=False)
    kube.apply(spec.isvc(name, "hpa"), ns)
    trace = spec.TraceRun(
        "onoff", "265:285", 1.0, 4.4, spec.LONG_PROMPT_RPS, "20 s from just before onoff's second burst"
    )
    run = al.replay_and_sample(kube, ns, name, trace, url, outdir / "dry.records.jsonl")
    result = score(run["records"], run["samples"], trace.change_s, spec.TTFT_TARGET_S)
    return {
        "trace": "onoff 265:285 (local sim)",
        "autoscaler": "none (kwok)",
        **result,
        "load_rc": run["load_rc"],
    }


def _ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def dry_run(args: argparse.Namespace) -> int:
    from shoal_sandbox.kube import SyncKube
    from shoal_sandbox.prometheus import PrometheusServer
    from shoal_sandbox.sandbox import Sandbox
    from shoal_sandbox.stack_support import install_crds

    if not args.dry_name.startswith("live"):
        print("--dry-name must start with 'live' (a kwok sandbox of this benchmark's own)", file=sys.stderr)
        return 2
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    sandbox = Sandbox(name=args.dry_name, node_mode="kwok", log=print)
    started = time.monotonic()
    with ExitStack() as ctx:
        sandbox.down(purge=True)  # a clean cluster: `down` keeps etcd's data, and objects with it
        sandbox.up(timeout=300)
        ctx.callback(sandbox.down)
        os.environ["KUBECONFIG"] = str(sandbox.kubeconfig_path)
        kube = SyncKube(sandbox.kubeconfig_path)
        ctx.callback(kube.close)
        install_crds(kube, print)
        prom = PrometheusServer(
            sandbox.state_dir / "dry-prometheus", sandbox.kubeconfig_path, "127.0.0.1"
        ).start()
        ctx.callback(prom.stop)
        procs = lc.Procs(outdir)
        ctx.callback(procs.stop)
        adapters = al.Adapters(procs, outdir, sandbox.kubeconfig_path, prom.url)
        ctx.callback(adapters.unregister)
        adapters.start(args.autoscalers)
        for autoscaler in (a for a in args.autoscalers if a != "shoal"):
            adapters.route(autoscaler)
            print(f"{autoscaler}: its adapter's APIServices are Available", flush=True)
        for line in validate_objects(args, prom.url):
            print(line, flush=True)
        row = replay_check(kube, procs, outdir)
    print(markdown([row]))
    print(json.dumps(row))
    print(f"dry run done in {time.monotonic() - started:.0f} s")
    return 0 if row["requests"] > 0 and row["load_rc"] in (0, 1) else 1


if __name__ == "__main__":  # pragma: no cover - run through autoscaler_live.py --dry-run
    sys.exit(al.main([*sys.argv[1:], "--dry-run"]))
