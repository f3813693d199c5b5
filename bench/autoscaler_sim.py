"""Trace simulator: shoal's autoscaling policy against HPA v2 and KEDA on the same load and the same fleet.

The fleet: every replica serves up to ``batch`` requests at once (continuous batching); a request holds a
slot for a log-normal service time; the router keeps one FIFO queue and sends the head to the least-loaded
ready replica.  A new replica is Pending for a third of its cold start (scheduling, image pull), then loads
the model (Running, not ready, no metrics) for the rest; cold starts are uniform in [30 s, 120 s].  A replica
removed by a scale-down stops taking work, finishes what it runs, then goes (it costs until then).  Cheapest
pods to remove go first: starting ones, then the least busy.

Prometheus scrapes every ``scrape`` seconds; each autoscaler reads the newest scrape at its own sync period
(shoal 3 s, HPA 15 s, KEDA 15 s + 30 s activation polling), with a random phase per run.  Every autoscaler
gets the same two metrics with the same targets (RunningRequests 12 per replica, QueueDepth 5 per replica).

    .venv/bin/python bench/autoscaler_sim.py                 # table (markdown) + docs/autoscaler-traces.png
    .venv/bin/python bench/autoscaler_sim.py --seeds 3 --step-seeds 20 --no-plot
    .venv/bin/python bench/autoscaler_sim.py --seeds 1 --replay bench/traces/*.csv   # the committed traces
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import math
import random
import statistics
import sys
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from autoscaler_baselines import HPA, KEDA, HPAMetric, PodView  # noqa: E402
from shoal_operator.autoscaler.policy import (  # noqa: E402
    MetricTarget,
    MetricType,
    Observation,
    PolicyConfig,
    PolicyInput,
    PolicyState,
    Signal,
    decide,
)

RUNNING_TARGET = 12.0
QUEUE_TARGET = 5.0


@dataclass(frozen=True)
class Fleet:
    batch: int = 16
    service_mean: float = 4.0
    service_sigma: float = 0.5  # log-normal shape
    cold_min: float = 30.0
    cold_max: float = 120.0
    dt: float = 0.25
    scrape: float = 5.0
    slo_wait: float = 2.0  # queue wait above this is an SLO violation (TTFT ~ wait + prefill)
    min_replicas: int = 1
    max_replicas: int = 32


@dataclass(frozen=True)
class Trace:
    name: str
    duration: float
    rate: Callable[[float], float]  # requests per second at time t
    step_at: float | None = None  # for decision delay
    warmup: float = 300.0  # run at rate(0) before t=0 (autoscalers act; nothing is counted)


def _noise(seed: int, amplitude: float, every: float) -> Callable[[float], float]:
    rng = random.Random(seed * 7919 + 17)
    table = [1.0 + rng.uniform(-amplitude, amplitude) for _ in range(10_000)]
    return lambda t: table[int(t // every) % len(table)]


def traces(seed: int) -> list[Trace]:
    noise = _noise(seed, 0.10, 10.0)
    return [
        Trace("step x5", 900, lambda t: 8.0 if t < 120 else 40.0, step_at=120),
        Trace("spike", 1200, lambda t: 40.0 if 120 <= t < 180 else 8.0),
        Trace("ramp", 1800, lambda t: 4.0 + 36.0 * min(t / 1200.0, 1.0)),
        Trace("sinusoid ±50%", 3600, lambda t: 20.0 * (1 + 0.5 * math.sin(2 * math.pi * t / 1200.0))),
        Trace("steady ±10%", 600, lambda t: 10.0 * noise(t)),
    ]


def trace_from_file(path: Path, bin_s: float = 10.0) -> Trace:
    """A committed request trace (`bench/traces/*.csv`, the replay's format) as a rate: its arrivals per
    `bin_s` bucket. One trace format for the simulator and `shoal batch load --replay`; the simulator draws
    its own service times, so only the arrival rate is used."""
    sys.path.insert(0, str(ROOT / "batch"))
    from shoal_batch.replay import load_replay

    times = load_replay(path, max_requests=10_000_000).times
    counts = [0] * (int(times[-1] // bin_s) + 1)
    for t in times:
        counts[int(t // bin_s)] += 1
    return Trace(
        path.stem, len(counts) * bin_s, lambda t: counts[min(int(t // bin_s), len(counts) - 1)] / bin_s
    )


# ------------------------------------------------------------------------------------------ the fleet


@dataclass
class Pod:
    name: str
    created: float
    ready_at: float
    running: list[float] = field(default_factory=list)  # finish times
    draining: bool = False

    def phase(self, now: float) -> str:
        pending_for = (self.ready_at - self.created) / 3.0
        return "Pending" if now < self.created + pending_for else "Running"

    def ready(self, now: float) -> bool:
        return now >= self.ready_at and not self.draining


@dataclass
class Result:
    trace: str
    scaler: str
    seed: int
    events: list[tuple[float, int, int]]
    waits: list[float]
    replica_seconds: float
    timeline: list[tuple[float, float, int, int]]  # (t, rate, spec replicas, ready)
    step_at: float | None

    @property
    def changes(self) -> int:
        return len(self.events)

    @property
    def reversals(self) -> int:
        dirs = [1 if b > a else -1 for _, a, b in self.events]
        return sum(1 for x, y in itertools.pairwise(dirs) if x != y)

    @property
    def delay(self) -> float | None:
        if self.step_at is None:
            return None
        ups = [t for t, a, b in self.events if b > a and t >= self.step_at]
        return ups[0] - self.step_at if ups else None

    def violations(self, slo: float) -> float:
        return 100.0 * sum(1 for w in self.waits if w > slo) / max(len(self.waits), 1)


class Scaler:
    name = "?"
    period = 5.0
    poll_period = 30.0  # KEDA's activation poll (pollingInterval); the others' poll is a no-op

    def tick(self, now: float, spec: int, pods: list[Pod], scrape: dict[str, object]) -> int:
        raise NotImplementedError

    def poll(self, now: float, spec: int, scrape: dict[str, object]) -> int:
        return spec


class Shoal(Scaler):
    name = "shoal"
    period = 3.0  # the loop's default interval (shoal_operator.autoscaler.loop.AutoscalerSettings)

    def __init__(self, fleet: Fleet) -> None:
        self.cfg = PolicyConfig(
            min_replicas=fleet.min_replicas,
            max_replicas=fleet.max_replicas,
            metrics=(
                MetricTarget(MetricType.RUNNING_REQUESTS, RUNNING_TARGET),
                MetricTarget(MetricType.QUEUE_DEPTH, QUEUE_TARGET),
            ),
        )
        self.state: PolicyState | None = None

    def tick(self, now: float, spec: int, pods: list[Pod], scrape: dict[str, object]) -> int:
        ts = float(scrape["t"])  # type: ignore[arg-type]
        ready = sum(1 for p in pods if p.ready(now))
        starting = sum(1 for p in pods if not p.draining and now < p.ready_at)
        n_ready_scraped = int(scrape["ready"])  # type: ignore[call-overload]
        obs = {
            Signal.ROUTER_PENDING: Observation(float(scrape["held"]), ts),  # type: ignore[arg-type]
        }
        if n_ready_scraped:
            obs[Signal.QUEUE_DEPTH] = Observation(float(scrape["waiting"]), ts, series=n_ready_scraped)  # type: ignore[arg-type]
            obs[Signal.RUNNING_REQUESTS] = Observation(float(scrape["running"]), ts, series=n_ready_scraped)  # type: ignore[arg-type]
        else:
            obs[Signal.QUEUE_DEPTH] = Observation(None)
            obs[Signal.RUNNING_REQUESTS] = Observation(None)
        startups = sorted(p.ready_at - p.created for p in pods if p.ready(now))
        inp = PolicyInput(
            now=now,
            spec_replicas=spec,
            ready_replicas=ready,
            starting_replicas=starting,
            observations=obs,
            startup_seconds=startups[len(startups) // 2] if startups else None,
        )
        decision, self.state = decide(self.cfg, inp, self.state)
        return decision.desired


class HPAScaler(Scaler):
    name = "HPA v2"
    period = 15.0

    def __init__(self, fleet: Fleet) -> None:
        self.hpa = HPA(
            metrics=(HPAMetric("running", RUNNING_TARGET), HPAMetric("waiting", QUEUE_TARGET)),
            min_replicas=fleet.min_replicas,
            max_replicas=fleet.max_replicas,
        )

    def tick(self, now: float, spec: int, pods: list[Pod], scrape: dict[str, object]) -> int:
        per_pod: dict[str, dict[str, float]] = scrape["per_pod"]  # type: ignore[assignment]
        views = [
            PodView(p.name, p.phase(now), p.ready(now), per_pod.get(p.name)) for p in pods if not p.draining
        ]
        return self.hpa.sync(now, spec, views, {})


class KEDAScaler(Scaler):
    name = "KEDA"
    period = 15.0

    def __init__(self, fleet: Fleet) -> None:
        self.keda = KEDA(
            HPA(
                metrics=(HPAMetric("running", RUNNING_TARGET), HPAMetric("waiting", QUEUE_TARGET)),
                min_replicas=fleet.min_replicas,
                max_replicas=fleet.max_replicas,
                external=True,
            ),
            min_replica_count=fleet.min_replicas,
        )

    def tick(self, now: float, spec: int, pods: list[Pod], scrape: dict[str, object]) -> int:
        views = [PodView(p.name, p.phase(now), p.ready(now), None) for p in pods if not p.draining]
        totals: dict[str, float | None] = {
            "running": float(scrape["running"]),  # type: ignore[arg-type]
            "waiting": float(scrape["waiting"]) + float(scrape["held"]),  # type: ignore[arg-type]
        }
        return self.keda.hpa.sync(now, spec, views, totals)

    def poll(self, now: float, spec: int, scrape: dict[str, object]) -> int:
        totals: dict[str, float | None] = {
            "running": float(scrape["running"]),  # type: ignore[arg-type]
            "waiting": float(scrape["waiting"]) + float(scrape["held"]),  # type: ignore[arg-type]
        }
        return self.keda.poll(now, spec, totals)


SCALERS: dict[str, Callable[[Fleet], Scaler]] = {"shoal": Shoal, "HPA v2": HPAScaler, "KEDA": KEDAScaler}


def at_shoals_period(make: Callable[[Fleet], Scaler]) -> Callable[[Fleet], Scaler]:
    """A baseline whose sync period (and KEDA's polling interval) is shoal's loop period: with the same
    signals (the scrape every scaler reads), what is left between them is the algorithm (#19)."""

    def build(fleet: Fleet) -> Scaler:
        scaler = make(fleet)
        scaler.period = scaler.poll_period = Shoal.period
        return scaler

    return build


def scalers(equal_periods: bool) -> dict[str, Callable[[Fleet], Scaler]]:
    if not equal_periods:
        return dict(SCALERS)
    return {name: make if name == "shoal" else at_shoals_period(make) for name, make in SCALERS.items()}


def simulate(trace: Trace, make: Callable[[Fleet], Scaler], seed: int, fleet: Fleet) -> Result:
    rng = random.Random(seed)
    arrivals_rng = random.Random(seed * 1_000_003 + zlib.crc32(trace.name.encode()) % 1000)
    scaler = make(fleet)
    mu = math.log(fleet.service_mean) - fleet.service_sigma**2 / 2
    # Same arrivals and service times for every scaler (thinning of a Poisson process).
    peak = max(trace.rate(t) for t in range(0, int(trace.duration) + 1, 1)) * 1.05
    arrivals: deque[tuple[float, float]] = deque()

    def rate(t: float) -> float:
        return trace.rate(max(t, 0.0))

    t = -trace.warmup
    while True:
        t += arrivals_rng.expovariate(peak)
        if t >= trace.duration:
            break
        if arrivals_rng.random() < rate(t) / peak:
            arrivals.append((t, arrivals_rng.lognormvariate(mu, fleet.service_sigma)))
    cold_rng = random.Random(seed * 31 + 7)

    initial = max(fleet.min_replicas, math.ceil(trace.rate(0) * fleet.service_mean / RUNNING_TARGET))
    pods: list[Pod] = [Pod(f"p{i}", -1e6, -1e6) for i in range(initial)]
    counter = initial
    spec = initial
    queue: deque[tuple[float, float]] = deque()
    waits: list[float] = []
    events: list[tuple[float, int, int]] = []
    timeline: list[tuple[float, float, int, int]] = []
    replica_seconds = 0.0
    scrape_phase = rng.uniform(0, fleet.scrape) - trace.warmup
    tick_phase = rng.uniform(0, scaler.period) - trace.warmup + 60.0
    poll_phase = rng.uniform(0, scaler.poll_period) - trace.warmup + 60.0
    next_scrape, next_tick, next_poll = scrape_phase, tick_phase, poll_phase
    last_scrape: dict[str, object] | None = None

    def apply(now: float, desired: int) -> None:
        nonlocal spec, counter
        desired = max(0, desired)
        if desired == spec:
            return
        if now >= 0:
            events.append((now, spec, desired))
        spec = desired
        active = [p for p in pods if not p.draining]
        if desired > len(active):
            for _ in range(desired - len(active)):
                cold = cold_rng.uniform(fleet.cold_min, fleet.cold_max)
                pods.append(Pod(f"p{counter}", now, now + cold))
                counter += 1
        else:
            surplus = len(active) - desired
            order = sorted(active, key=lambda p: (p.ready(now), len(p.running), -p.created))
            for p in order[:surplus]:
                p.draining = True

    now = 0.0
    steps = int((trace.duration + trace.warmup) / fleet.dt)
    for i in range(steps):
        now = i * fleet.dt - trace.warmup
        while arrivals and arrivals[0][0] <= now:
            queue.append(arrivals.popleft())
        for p in pods:
            if p.running:
                p.running = [f for f in p.running if f > now]
        pods[:] = [p for p in pods if not (p.draining and not p.running)]
        ready = [p for p in pods if p.ready(now)]
        while queue and ready:
            best = min(ready, key=lambda p: len(p.running))
            if len(best.running) >= fleet.batch:
                break
            arrived, service = queue.popleft()
            if arrived >= 0:
                waits.append(now - arrived)
            bisect.insort(best.running, now + service)
        if now >= 0:
            replica_seconds += len(pods) * fleet.dt
        if now >= next_scrape:
            next_scrape += fleet.scrape
            n_ready = len(ready)
            waiting = len(queue) if n_ready else 0
            last_scrape = {
                "t": now,
                "ready": n_ready,
                "waiting": waiting,
                "held": 0 if n_ready else len(queue),
                "running": sum(len(p.running) for p in pods if not p.draining),
                "per_pod": {
                    p.name: {"running": float(len(p.running)), "waiting": waiting / n_ready} for p in ready
                },
            }
        filling = now < -trace.warmup + 60.0  # the fleet fills up before any autoscaler acts
        if last_scrape is not None and now >= next_tick and not filling:
            next_tick += scaler.period
            apply(now, scaler.tick(now, spec, pods, last_scrape))
        if last_scrape is not None and now >= next_poll and not filling:
            next_poll += scaler.poll_period
            apply(now, scaler.poll(now, spec, last_scrape))
        if now >= 0 and i % int(5 / fleet.dt) == 0:
            timeline.append((now, trace.rate(now), spec, len(ready)))
    for _arrived, _ in queue:
        waits.append(trace.duration - _arrived + fleet.slo_wait)  # never served: a violation
    return Result(trace.name, scaler.name, seed, events, waits, replica_seconds, timeline, trace.step_at)


# ------------------------------------------------------------------------------------------ report


def _p95(xs: list[float]) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, math.ceil(0.95 * len(xs)) - 1)]


def run(
    seeds: int, step_seeds: int, fleet: Fleet, makers: dict[str, Callable[[Fleet], Scaler]]
) -> dict[tuple[str, str], list[Result]]:
    out: dict[tuple[str, str], list[Result]] = {}
    for name, make in makers.items():
        for trace_index in range(5):
            n = step_seeds if trace_index == 0 else seeds
            for seed in range(n):
                trace = traces(seed)[trace_index]
                out.setdefault((trace.name, name), []).append(simulate(trace, make, seed, fleet))
    return out


def table(results: dict[tuple[str, str], list[Result]], fleet: Fleet) -> str:
    lines = [
        "| trace | autoscaler | decision delay p95 (s) | replica changes | reversals | "
        f"SLO violations (wait > {fleet.slo_wait:g} s) | p95 wait (s) | replica-hours | peak replicas |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (trace, scaler), rs in results.items():
        delays = [r.delay for r in rs if r.delay is not None]
        delay = f"{_p95(delays):.1f}" if delays else "-"
        lines.append(
            f"| {trace} | {scaler} | {delay} | {statistics.mean(r.changes for r in rs):.1f} | "
            f"{statistics.mean(r.reversals for r in rs):.1f} | "
            f"{statistics.mean(r.violations(fleet.slo_wait) for r in rs):.1f}% | "
            f"{statistics.mean(_p95(r.waits) for r in rs):.1f} | "
            f"{statistics.mean(r.replica_seconds for r in rs) / 3600:.2f} | "
            f"{statistics.mean(max(x[2] for x in r.timeline) for r in rs):.1f} |"
        )
    return "\n".join(lines)


def goals(results: dict[tuple[str, str], list[Result]], fleet: Fleet) -> str:
    def agg(trace: str, scaler: str, f: Callable[[Result], float]) -> float:
        return statistics.mean(f(r) for r in results[(trace, scaler)])

    names = sorted({t for t, _ in results}, key=lambda t: [x.name for x in traces(0)].index(t))
    step = [r.delay for r in results[("step x5", "shoal")] if r.delay is not None]
    shoal_changes = sum(agg(t, "shoal", lambda r: r.changes) for t in names)
    hpa_changes = sum(agg(t, "HPA v2", lambda r: r.changes) for t in names)
    shoal_viol = statistics.mean(agg(t, "shoal", lambda r: r.violations(fleet.slo_wait)) for t in names)
    hpa_viol = statistics.mean(agg(t, "HPA v2", lambda r: r.violations(fleet.slo_wait)) for t in names)
    sin_rev = agg("sinusoid ±50%", "shoal", lambda r: r.reversals) / 3.0
    steady = agg("steady ±10%", "shoal", lambda r: r.changes)
    rows = [
        (
            "decision within 10 s p95 of a 5x step",
            f"{_p95(step):.1f} s over {len(step)} runs",
            _p95(step) <= 10,
        ),
        ("zero scale events under steady ±10% noise (10 min)", f"{steady:.1f} events", steady == 0),
        ("<= 2 direction changes per sinusoid period", f"{sin_rev:.2f} per period", sin_rev <= 2),
        (
            ">= 33% fewer replica changes than HPA, SLO equal or better",
            f"{shoal_changes:.1f} vs {hpa_changes:.1f} changes "
            f"({100 * (1 - shoal_changes / max(hpa_changes, 1e-9)):.0f}% fewer); "
            f"violations {shoal_viol:.1f}% vs {hpa_viol:.1f}%",
            shoal_changes <= 0.67 * hpa_changes and shoal_viol <= hpa_viol + 1e-9,
        ),
    ]
    out = ["| goal | measured | met |", "|---|---|---|"]
    out += [f"| {g} | {m} | {'yes' if ok else 'NO'} |" for g, m, ok in rows]
    return "\n".join(out)


def plot(results: dict[tuple[str, str], list[Result]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [t.name for t in traces(0)]
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.6 * len(names)))
    colors = {"shoal": "tab:blue", "HPA v2": "tab:orange", "KEDA": "tab:green"}
    for ax, name in zip(axes, names, strict=True):
        base = results[(name, "shoal")][0]
        ts = [x[0] for x in base.timeline]
        ax2 = ax.twinx()
        ax2.fill_between(ts, [x[1] for x in base.timeline], color="0.85", label="load (req/s)")
        ax2.set_ylabel("req/s", color="0.5")
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
        for scaler, color in colors.items():
            r = results[(name, scaler)][0]
            ax.step(
                [x[0] for x in r.timeline],
                [x[2] for x in r.timeline],
                where="post",
                color=color,
                label=scaler,
            )
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("replicas")
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--step-seeds", type=int, default=20)
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "autoscaler-traces.png")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument(
        "--replay",
        type=Path,
        nargs="+",
        metavar="TRACE",
        help="only these request traces (bench/traces/*.csv)",
    )
    ap.add_argument(
        "--equal-periods",
        action="store_true",
        help="HPA and KEDA sync (and KEDA polls) at shoal's 3 s loop period instead of 15 s and 30 s",
    )
    args = ap.parse_args(argv)
    fleet = Fleet()
    makers = scalers(args.equal_periods)
    if args.replay:
        replayed = {
            (trace.name, name): [simulate(trace, make, seed, fleet) for seed in range(args.seeds)]
            for trace in map(trace_from_file, args.replay)
            for name, make in makers.items()
        }
        print(table(replayed, fleet))
        return 0
    results = run(args.seeds, args.step_seeds, fleet, makers)
    print(table(results, fleet))
    print()
    print(goals(results, fleet))
    if not args.no_plot:
        plot(results, args.plot)
        print(f"\nplot: {args.plot.relative_to(ROOT) if args.plot.is_relative_to(ROOT) else args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
