"""`shoal demo`: the closed loop on this machine, start to finish, as it would run in a cluster.

1. The stack (:class:`shoal_sandbox.cluster.ClusterStack`): the sandbox's control plane and its real node
   (kubelet, containerd, runc), shoal's images, the operator installed by the Helm chart, and Prometheus
   discovering pods through the API server.
2. The real model: ``examples/inferenceservice-smollm2.yaml`` (SmolLM2 on vLLM's CPU build, from the
   sandbox's models volume) becomes Ready and answers a few chat requests through its Service and router,
   with the official ``openai`` client.
3. Scaling: ``examples/inferenceservice-sim.yaml`` (the simulated engine) under an open-loop load ramp from
   the batch client; a live ``kubectl get``-style table, then a PNG plot of offered load, queue depth and
   desired/ready replicas over time, and a summary (under ``$SHOAL_CACHE/demo/`` unless ``--out``).

Everything it starts is stopped on exit and on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal_common import names

from shoal_sandbox.cluster import ClusterStack
from shoal_sandbox.demo_load import BackgroundLoad
from shoal_sandbox.demo_plot import Sample, plot
from shoal_sandbox.paths import cache_dir
from shoal_sandbox.stack_support import Obj, StackError, bounded_wait, condition, load_example, prepare_model

DemoError = StackError


def default_out_dir() -> Path:
    return cache_dir() / "demo"


@dataclass
class DemoOptions:
    real_model: bool = True
    short: bool = False
    peak_rps: float = 12.0
    base_rps: float = 2.0
    ramp_s: float = 150.0
    out_dir: Path = field(default_factory=default_out_dir)
    namespace: str = "shoal-demo"
    keep: bool = False
    sandbox_name: str = "default"
    real_model_timeout_s: float = 900.0

    @property
    def plot(self) -> Path:
        return self.out_dir / "shoal-demo-scaling.png"


class Demo:
    def __init__(self, opts: DemoOptions) -> None:
        from rich.console import Console

        self.opts = opts
        self.console = Console()
        self.stack = ClusterStack(sandbox_name=opts.sandbox_name, keep_sandbox=opts.keep, log=self._log)
        self.samples: list[Sample] = []
        self.summary: dict[str, Any] = {}

    def _log(self, line: str) -> None:
        self.console.print(f"[dim]{line}[/dim]")

    def run(self) -> int:
        t0 = time.monotonic()
        try:
            self.console.rule("[bold]shoal demo[/bold]: the closed loop on this machine")
            self.stack.start()
            self.stack.namespace(self.opts.namespace, ephemeral=not self.opts.keep)  # --keep: for the user
            if self.opts.real_model:
                self.real_model_part()
            self.scaling_part()
            self.console.rule(f"done in {time.monotonic() - t0:.0f}s")
            return 0
        except KeyboardInterrupt:
            self.console.print("[yellow]interrupted; cleaning up ...[/yellow]")
            return 130
        except DemoError as exc:
            self.console.print(f"[red]error:[/red] {exc}")
            return 1
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            if not self.opts.keep and self.stack.kube is not None:
                kube = self.stack.k()
                for isvc in kube.list("InferenceService", self.opts.namespace):
                    kube.delete("InferenceService", self.opts.namespace, isvc["metadata"]["name"])
                # Let the pods drain before the namespace goes.
                bounded_wait(lambda: not kube.list("Pod", self.opts.namespace), 90, "pods to go", 1.0)
                self.stack.delete_namespace(self.opts.namespace)
        if not self.opts.keep:
            self.stack.stop()
        else:
            self.console.print(
                f"left running (--keep): KUBECONFIG={self.stack.kubeconfig}  Prometheus: {self.stack.prometheus_url}"
            )

    # ---- part 1: the real model -------------------------------------------------------------------------
    def real_model_part(self) -> None:
        from rich.panel import Panel

        self.console.rule("1. SmolLM2 on vLLM (CPU), through the router")
        path = prepare_model(self._log)
        isvc = load_example("inferenceservice-smollm2.yaml")
        name = isvc["metadata"]["name"]
        self.stack.k().apply(isvc, self.opts.namespace)
        uri = isvc["spec"]["model"]["uri"]
        self.console.print(f"applied InferenceService [bold]{name}[/bold] ({uri}: {path} on the node)")
        url = self._wait_ready(name, self.opts.real_model_timeout_s)
        import openai

        client = openai.OpenAI(base_url=f"{url}/v1", api_key="demo", timeout=300, max_retries=2)
        model = isvc["spec"]["model"]["name"]
        for prompt in (
            "What is the capital of France?",
            "Name three colours of the rainbow.",
            "Say hello in Spanish.",
        ):
            resp = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": prompt}], max_tokens=48, temperature=0
            )
            answer = (resp.choices[0].message.content or "").strip()
            self.console.print(Panel(answer or "(empty)", title=f"[bold]{prompt}[/bold]", title_align="left"))
        self.stack.k().delete("InferenceService", self.opts.namespace, name)
        bounded_wait(
            lambda: not self.stack.k().list("Pod", self.opts.namespace, f"{names.LABEL_ISVC}={name}"),
            120,
            "the SmolLM2 pods to stop",
            1.0,
        )

    def _wait_ready(self, name: str, timeout: float) -> str:
        from rich.live import Live

        start = time.monotonic()
        with Live(
            self._isvc_table([name]), console=self.console, refresh_per_second=2, transient=False
        ) as live:
            while True:
                self.stack.check_children()
                obj = self.stack.isvc(self.opts.namespace, name)
                url = self.stack.router_url(self.opts.namespace, name)
                live.update(self._isvc_table([name], waiting=time.monotonic() - start))
                if condition(obj, "Ready") and url:
                    return url
                if time.monotonic() - start > timeout:
                    raise DemoError(
                        f"{name} not Ready in {timeout:.0f}s; see `kubectl logs -n {self.opts.namespace} "
                        f"-l {names.LABEL_ISVC}={name}` (KUBECONFIG={self.stack.kubeconfig})"
                    )
                time.sleep(1.0)

    # ---- tables ----------------------------------------------------------------------------------------
    def _isvc_table(self, isvc_names: list[str], waiting: float | None = None, extra: str = "") -> Any:
        from rich.console import Group
        from rich.table import Table

        kube = self.stack.k()
        t = Table(box=None, header_style="bold", pad_edge=False)
        for col in ("NAME", "MODEL", "ENGINE", "READY", "DESIRED", "URL", "STATUS"):
            t.add_column(col)
        pods = Table(box=None, header_style="bold", pad_edge=False)
        for col in ("POD", "IP", "READY", "STATUS", "RESTARTS"):
            pods.add_column(col)
        for n in isvc_names:
            obj = kube.get("InferenceService", self.opts.namespace, n) or {}
            spec, st = obj.get("spec") or {}, obj.get("status") or {}
            desired = (st.get("autoscaler") or {}).get("desiredReplicas", spec.get("replicas", "-"))
            reason = next(
                (c.get("reason", "") for c in st.get("conditions") or [] if c.get("type") == "Ready"),
                "Pending",
            )
            t.add_row(
                n,
                (spec.get("model") or {}).get("name", "-"),
                (spec.get("engine") or {}).get("kind", "-"),
                f"{st.get('readyReplicas', 0) or 0}/{spec.get('replicas', '-')}",
                str(desired),
                st.get("url", "-") or "-",
                "Ready" if condition(obj, "Ready") else (reason or "Pending"),
            )
            for p in kube.list("Pod", self.opts.namespace, f"{names.LABEL_ISVC}={n}"):
                pst = p.get("status") or {}
                cs = (pst.get("containerStatuses") or [{}])[0]
                state = next(iter(cs.get("state") or {"waiting": {}}))
                why = ((cs.get("state") or {}).get(state) or {}).get("reason", "")
                if p["metadata"].get("deletionTimestamp"):
                    state, why = "terminating", "draining"
                pods.add_row(
                    p["metadata"]["name"],
                    pst.get("podIP", "-") or "-",
                    "1/1" if condition(p, "Ready") else "0/1",
                    f"{state} {why}".strip(),
                    str(cs.get("restartCount", 0)),
                )
        parts: list[Any] = [t, "", pods]
        if waiting is not None:
            parts.append(f"[dim]waiting {waiting:.0f}s ...[/dim]")
        if extra:
            parts.append(extra)
        return Group(*parts)

    # ---- part 2: scaling under a load ramp --------------------------------------------------------------
    def _sim_isvc(self) -> Obj:
        isvc = load_example("inferenceservice-sim.yaml")
        spec = isvc["spec"]
        down = spec["autoscaling"]["behavior"]["scaleDown"]
        # After the stabilization window, step straight down to what the load needs (the demo is short).
        down.update({"periodSeconds": 15, "maxPercentPerStep": 100})
        if self.opts.short:
            spec["engine"]["sim"]["startupSeconds"] = 5
            down["stabilizationSeconds"] = 30
        return isvc

    def _curve(self, tail_s: float) -> Any:
        """Base rate, up to the peak, hold, back down; then the base rate goes on while it scales down
        (traffic returns to its baseline, not to zero: with no requests at all latency metrics are empty,
        and the autoscaler never scales down on missing metrics)."""
        from shoal_batch.schedule import RateCurve

        ramp = self.opts.ramp_s / (2 if self.opts.short else 1)
        b, p = self.opts.base_rps, self.opts.peak_rps
        return RateCurve(
            points=(
                (0.0, b),
                (ramp * 0.1, b),
                (ramp * 0.4, p),
                (ramp * 0.7, p),
                (ramp * 0.9, b),
                (ramp + tail_s, b),
            )
        )

    def scaling_part(self) -> None:
        self.console.rule("2. A simulated model under a load ramp: the autoscaler at work")
        isvc = self._sim_isvc()
        name, ns = isvc["metadata"]["name"], self.opts.namespace
        self.stack.k().apply(isvc, ns)
        self.console.print(
            f"applied InferenceService [bold]{name}[/bold] (simulated engine, autoscaling 1..6)"
        )
        url = self._wait_ready(name, 300)
        stabilization = isvc["spec"]["autoscaling"]["behavior"]["scaleDown"]["stabilizationSeconds"]
        # After the ramp: watch the scale-down (stabilization window + a margin), bounded.
        curve = self._curve(tail_s=stabilization + 90)
        load = BackgroundLoad(url, curve)
        load.start()
        try:
            self._watch_scaling(name, curve, load)
        except KeyboardInterrupt:
            load.stop(30)
            raise
        load.join(150)
        if load.error is not None:
            raise DemoError(f"load generator failed: {load.error!r}")
        self._summarise(name, load.report)

    def _watch_scaling(self, name: str, curve: Any, load: BackgroundLoad) -> None:
        """A live table of the InferenceService, its pods and the queue, sampled every second until the
        load ends or, after the ramp, the service is back at one replica (then the base load stops)."""
        from rich.console import Group
        from rich.live import Live
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        ns, duration = self.opts.namespace, curve.duration
        ramp_end = self.opts.ramp_s / (2 if self.opts.short else 1)
        progress = Progress(
            TextColumn("[bold]load ramp[/bold]"),
            BarColumn(),
            TextColumn("{task.fields[rps]:>5.1f} req/s offered"),
            TimeRemainingColumn(),
        )
        task = progress.add_task("load", total=duration, rps=0.0)
        t_start = time.monotonic()
        with Live(console=self.console, refresh_per_second=2) as live:
            for _ in range(int(duration) + 600):  # bounded: one sample a second
                now = time.monotonic() - t_start
                sample = self._sample(ns, name, now, curve.rate(now) if now <= duration else 0.0)
                progress.update(task, completed=min(now, duration), rps=sample.offered_rps)
                extra = f"queue depth (server + router): {sample.queue:.0f}"
                live.update(Group(progress, self._isvc_table([name], extra=extra)))
                if not load.is_alive():
                    return
                if now > ramp_end + 10 and sample.ready <= 1 and sample.desired <= 1:
                    load.stop(150)  # back at one replica after the ramp: the story is told
                    return
                time.sleep(1.0)

    def _sample(self, ns: str, name: str, now: float, offered: float) -> Sample:
        self.stack.check_children()
        obj = self.stack.isvc(ns, name) or {}
        st, spec = obj.get("status") or {}, obj.get("spec") or {}
        desired = int((st.get("autoscaler") or {}).get("desiredReplicas") or spec.get("replicas") or 0)
        ready = int(st.get("readyReplicas") or 0)
        selector = f'namespace="{ns}",inferenceservice="{name}"'
        queue = (self.stack.prom(f"sum(shoal_server_queue_depth{{{selector}}})") or 0.0) + (
            self.stack.prom(f"sum(shoal_router_pending_requests{{{selector}}})") or 0.0
        )
        sample = Sample(now, offered, queue, desired, ready, 0, 0)
        self.samples.append(sample)
        return sample

    def _summarise(self, name: str, report: Any) -> None:
        ns = self.opts.namespace
        served = self.stack.prom(
            f'sum(shoal_server_requests_total{{namespace="{ns}",inferenceservice="{name}"}})'
        )
        latency = getattr(report, "latency_s", None)
        self.summary = {
            "requests_ok": getattr(report, "ok", 0),
            "requests_failed": getattr(report, "failed", 0),
            "retries": getattr(report, "retries", 0),
            "latency_p50_s": getattr(latency, "p50", None),
            "latency_p95_s": getattr(latency, "p95", None),
            "max_desired": max((s.desired for s in self.samples), default=0),
            "max_ready": max((s.ready for s in self.samples), default=0),
            "max_queue": max((s.queue for s in self.samples), default=0.0),
            "served_by_model_servers": served,
            "first_scale_up_s": next((s.t for s in self.samples if s.desired > 1), None),
        }
        plot(self.samples, self.opts.plot, title=f"shoal demo: {name} under a load ramp")
        self._print_summary()

    def _print_summary(self) -> None:
        from rich.table import Table

        t = Table(title="summary", show_header=False, box=None)
        s = self.summary
        t.add_row("requests ok / failed", f"{s['requests_ok']} / {s['requests_failed']}")
        t.add_row("retried after a 429 (load shed while scaling)", str(s["retries"]))
        if s.get("latency_p50_s") is not None:
            t.add_row("latency p50 / p95", f"{s['latency_p50_s']:.2f}s / {s['latency_p95_s']:.2f}s")
        t.add_row("peak queue depth", f"{s['max_queue']:.0f}")
        t.add_row("replicas: max desired / max ready", f"{s['max_desired']} / {s['max_ready']}")
        if s.get("first_scale_up_s") is not None:
            t.add_row("first scale-up at", f"{s['first_scale_up_s']:.0f}s into the ramp")
        t.add_row("plot", str(self.opts.plot))
        self.console.print(t)
        self.console.print(f"plot and samples written to {self.opts.out_dir}")
        (self.opts.plot.with_suffix(".json")).write_text(
            json.dumps({"summary": s, "samples": [vars(x) for x in self.samples]}, indent=1, default=str)
        )


def run_demo(opts: DemoOptions) -> int:
    demo = Demo(opts)
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        return demo.run()
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = ["Demo", "DemoOptions", "plot", "run_demo"]
