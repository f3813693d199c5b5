"""Shoal's autoscaler against the real HPA (+ prometheus-adapter) and KEDA, side by side, on the real node
(#19): the same sim InferenceService, the same replayed trace window, one autoscaler at a time.

    python bench/baselines/build.py                      # once (cached): prometheus-adapter, keda, keda-adapter
    python bench/autoscaler_live.py --out /tmp/al        # 3 traces x 3 autoscalers, about 40 min
    python bench/autoscaler_live.py --traces onoff --autoscalers shoal,hpa --out /tmp/al
    python bench/autoscaler_live.py --dry-run            # the wiring, on a kwok sandbox of its own (~3 min)

Per run: a namespace of its own (no stale series from the previous run), the InferenceService of
`autoscaler_live_spec.isvc` (shoal's autoscaler on only for the shoal run), for the baselines the HPA of
`bench/baselines/hpa.yaml` or the ScaledObject of `scaledobject.yaml` on its /scale subresource, then
`shoal batch load --replay` through the Service's ClusterIP while the InferenceService is sampled every
second (spec.replicas, model-server pods, ready pods). Scoring: `autoscaler_live_score.py`. Output:
`runs.jsonl` (one line per run, with the samples) and `runs.md` in --out.

The adapters run as host processes on 127.0.0.1 pointed at the ClusterStack's Prometheus, registered as
APIServices through ExternalName Services (as `bench/baselines/live_check.py` does); the sandbox's API
server has the aggregation flags of its own. `--hpa-sync-period` restarts kube-controller-manager with
`--horizontal-pod-autoscaler-sync-period` (through SHOAL_SANDBOX_KUBE_CONTROLLER_MANAGER_ARGS).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "baselines"))

import autoscaler_live_spec as spec  # noqa: E402
import live_check as lc  # noqa: E402
from autoscaler_live_score import Sample, markdown, score  # noqa: E402
from build import BASELINES, cache_dir, missing  # noqa: E402

MODEL_PODS = "app.kubernetes.io/component=model-server"


@dataclass
class Adapters:
    """prometheus-adapter and KEDA as processes; which one serves external.metrics is switched per run."""

    procs: lc.Procs
    work: Path
    kubeconfig: Path
    prometheus: str
    ports: dict[str, int] = field(default_factory=dict)

    def start(self, autoscalers: list[str]) -> None:
        if "hpa" in autoscalers:
            self.ports["hpa"] = lc.start_prometheus_adapter(
                self.procs, self.work, self.kubeconfig, self.prometheus
            )
        if "keda" in autoscalers:
            self.ports["keda"] = lc.start_keda(self.procs, self.work, self.kubeconfig)

    def unregister(self) -> None:
        """Removes the APIServices before the adapters stop: an APIService left unavailable breaks discovery,
        and with it namespace deletion, in the whole cluster."""
        apis = lc.PROMETHEUS_ADAPTER_APIS + lc.KEDA_APIS + lc.STALE_APIS
        names = {f"{gv.split('/')[1]}.{gv.split('/')[0]}" for gv in apis}
        print(lc.kubectl("delete", "apiservice", "--ignore-not-found", *sorted(names), check=False).strip())

    def route(self, autoscaler: str) -> None:
        """Registers the APIServices of this run's baseline (waits for Available)."""
        if autoscaler == "hpa":
            lc.register("prometheus-adapter", self.ports["hpa"], lc.PROMETHEUS_ADAPTER_APIS)
        elif autoscaler == "keda":
            lc.register(lc.KEDA_SERVICE, self.ports["keda"], lc.KEDA_APIS)


def baseline_object(
    autoscaler: str, ns: str, name: str, prometheus: str, tuned: bool
) -> dict[str, Any] | None:
    if autoscaler == "hpa":
        return spec.hpa(ns, name, tuned)
    if autoscaler == "keda":
        return spec.scaled_object(ns, name, prometheus, tuned)
    return None


def kubectl_apply(obj: dict[str, Any], dry_run: bool = False) -> str:
    extra = ["--dry-run=server"] if dry_run else []
    return lc.kubectl("apply", *extra, "-f", "-", stdin=json.dumps(obj))


def sample(kube: Any, ns: str, name: str) -> tuple[int, int, int]:
    """(spec.replicas, model-server pods not terminating, ready ones)."""
    obj = kube.get("InferenceService", ns, name) or {}
    pods = kube.list("Pod", ns, f"shoal.dev/inferenceservice={name},{MODEL_PODS}")
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    ready = sum(
        1
        for p in live
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in p.get("status", {}).get("conditions") or []
        )
    )
    return int((obj.get("spec") or {}).get("replicas") or 0), len(live), ready


def wait_baseline_active(autoscaler: str, ns: str, name: str) -> None:
    if autoscaler == "hpa":
        lc.wait_for(
            "the HPA to read the adapter's metrics", lambda: _cond("hpa", ns, name, "ScalingActive"), 120
        )
    elif autoscaler == "keda":
        lc.wait_for("the ScaledObject to be Ready", lambda: _cond("scaledobject", ns, name, "Ready"), 120)
        lc.wait_for(
            "KEDA's HPA to read the metrics",
            lambda: _cond("hpa", ns, f"keda-hpa-{name}", "ScalingActive"),
            120,
        )


def _cond(kind: str, ns: str, name: str, ctype: str) -> bool:
    path = f"jsonpath={{.status.conditions[?(@.type=='{ctype}')].status}}"
    return lc.kubectl("get", kind, "-n", ns, name, "-o", path, check=False).strip() == "True"


def replay_and_sample(
    kube: Any, ns: str, name: str, trace: spec.TraceRun, url: str, out: Path
) -> dict[str, Any]:
    """Runs the replay, samples every second until it exits (bounded), and returns records and samples
    on the replay's clock: t0 is estimated from the records as they appear in --out (each line seen at
    wall time W was sent at t0 + sent_s and done at t0 + sent_s + elapsed_s <= W)."""
    out.unlink(missing_ok=True)
    argv = spec.load_argv(trace, url, name, out)
    with out.with_suffix(".log").open("w") as log:  # the client's report (a file: no pipe to fill)
        load = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    raw: list[tuple[float, int, int, int]] = []
    records: list[dict[str, Any]] = []
    t0_bound, offset = math.inf, 0
    deadline = time.monotonic() + trace.seconds + 240  # drain (60 s) + the client's start + margin
    while load.poll() is None and time.monotonic() < deadline:
        tick = time.monotonic()
        raw.append((tick, *sample(kube, ns, name)))
        offset, fresh = _read_new(out, offset)
        for r in fresh:
            t0_bound = min(t0_bound, tick - float(r.get("sent_s") or 0) - float(r.get("elapsed_s") or 0))
        records += fresh
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    if load.poll() is None:
        load.kill()
    load.wait(timeout=60)
    records += _read_new(out, offset)[1]
    t0 = t0_bound if math.isfinite(t0_bound) else raw[0][0]
    samples = [Sample(round(t - t0, 2), d, p, r) for t, d, p, r in raw]
    return {
        "records": records,
        "samples": samples,
        "load_rc": load.returncode,
    }


def _read_new(path: Path, offset: int) -> tuple[int, list[dict[str, Any]]]:
    if not path.is_file():
        return offset, []
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next tick
    lines = [json.loads(line) for line in complete.decode().splitlines() if line.strip()]
    return offset + len(complete), lines


def run_one(
    stack: Any, adapters: Adapters, trace: spec.TraceRun, autoscaler: str, args: argparse.Namespace
) -> dict[str, Any]:
    ns, name = f"al-{trace.name}-{autoscaler}", "sim"
    kube = stack.k()
    stack.namespace(ns)
    try:
        kube.apply(spec.isvc(name, autoscaler), ns)
        url = lc.wait_for(f"{ns}/{name}'s router", lambda: stack.router_url(ns, name), 300, 3)
        lc.wait_for("the first replica", lambda: sample(kube, ns, name)[2] >= 1, 180, 2)
        obj = baseline_object(autoscaler, ns, name, stack.prometheus_url, args.tuning == "tuned")
        if obj is not None:
            adapters.route(autoscaler)
            kubectl_apply(obj)
            wait_baseline_active(autoscaler, ns, name)
        run = replay_and_sample(kube, ns, name, trace, url, Path(args.out) / f"{ns}.records.jsonl")
    finally:
        for kind in ("scaledobject", "hpa"):
            lc.kubectl("delete", kind, "-n", ns, "--all", "--wait=false", check=False)
        stack.delete_namespace(ns)
        lc.wait_for(f"namespace {ns} to go", lambda: kube.get("Namespace", None, ns) is None, 180, 3)
    result = score(run["records"], run["samples"], trace.change_s, spec.TTFT_TARGET_S)
    head = {"trace": trace.name, "window": trace.window, "speedup": trace.speedup, "autoscaler": autoscaler}
    head |= {
        "tuning": args.tuning if autoscaler != "shoal" else "-",
        "hpa_sync_period_s": args.hpa_sync_period,
    }
    return head | result | {"load_rc": run["load_rc"], "samples": [asdict(s) for s in run["samples"]]}


def live(args: argparse.Namespace) -> int:
    from shoal_sandbox.cluster import ClusterStack
    from shoal_sandbox.kube import ApiError

    if args.hpa_sync_period:
        os.environ["SHOAL_SANDBOX_KUBE_CONTROLLER_MANAGER_ARGS"] = (
            f"--horizontal-pod-autoscaler-sync-period={args.hpa_sync_period:g}s"
        )
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack_ctx:
        stack = stack_ctx.enter_context(
            ClusterStack(sandbox_name=args.sandbox, autoscaler_period_s=args.shoal_period)
        )
        os.environ["KUBECONFIG"] = str(stack.kubeconfig)
        procs = lc.Procs(outdir)
        stack_ctx.callback(procs.stop)
        adapters = Adapters(procs, outdir, stack.kubeconfig, stack.prometheus_url)
        stack_ctx.callback(adapters.unregister)  # runs before procs.stop (last in, first out)
        adapters.unregister()  # an earlier, killed run's registrations point at dead ports
        adapters.start(args.autoscalers)
        for trace in (t for t in spec.TRACES if t.name in args.traces):
            for autoscaler in args.autoscalers:
                print(f"== {trace.name} ({trace.window} x{trace.speedup:g}) with {autoscaler}", flush=True)
                try:
                    row = run_one(stack, adapters, trace, autoscaler, args)
                except (RuntimeError, ApiError, subprocess.SubprocessError, OSError) as exc:  # next run runs
                    row = {"trace": trace.name, "autoscaler": autoscaler, "error": str(exc)[-800:]}
                    print(f"   failed: {row['error']}", flush=True)
                rows.append(row)
                with (outdir / "runs.jsonl").open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(markdown([row]), flush=True)
    (outdir / "runs.md").write_text(markdown(rows))
    print(markdown(rows))
    return 0 if all(r.get("load_rc") in (0, 1) for r in rows) else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", default=",".join(t.name for t in spec.TRACES), help="comma-separated")
    ap.add_argument(
        "--autoscalers", default=",".join(spec.AUTOSCALERS), help="comma-separated: shoal,hpa,keda"
    )
    ap.add_argument("--tuning", choices=("tuned", "default"), default="tuned", help="baselines' behaviour")
    ap.add_argument(
        "--hpa-sync-period", type=float, default=None, metavar="S", help="default: 15 s (unchanged)"
    )
    ap.add_argument("--shoal-period", type=float, default=2.0, metavar="S", help="shoal's autoscaler period")
    ap.add_argument("--sandbox", default="default", help="the real-node sandbox (ClusterStack)")
    ap.add_argument("--out", default="autoscaler-live-out", help="output folder")
    ap.add_argument("--dry-run", action="store_true", help="wiring only, on a kwok sandbox (see --dry-name)")
    ap.add_argument("--dry-name", default="live-dry", help="the kwok sandbox of --dry-run")
    args = ap.parse_args(argv)
    args.traces = [t for t in args.traces.split(",") if t]
    args.autoscalers = [a for a in args.autoscalers.split(",") if a]
    known = {t.name for t in spec.TRACES}
    bad = [t for t in args.traces if t not in known] + [
        a for a in args.autoscalers if a not in spec.AUTOSCALERS
    ]
    if bad:
        ap.error(
            f"unknown: {', '.join(bad)} (traces: {', '.join(sorted(known))}; autoscalers: shoal,hpa,keda)"
        )
    return args


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the ExitStack: APIServices unregistered, processes stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    os.environ["PATH"] = f"{cache_dir() / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"  # kubectl
    todo = [name for b in BASELINES for name in missing(b)]
    if todo and set(args.autoscalers) - {"shoal"}:
        print(f"not built: {', '.join(todo)}; run python bench/baselines/build.py first", file=sys.stderr)
        return 2
    if args.dry_run:
        from autoscaler_live_dry import dry_run

        return dry_run(args)
    return live(args)


if __name__ == "__main__":
    sys.exit(main())
