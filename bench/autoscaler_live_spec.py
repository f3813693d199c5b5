"""What `bench/autoscaler_live.py` applies and runs, as pure functions: the one InferenceService spec (#19's
sim engine), the baselines' objects (from the committed `bench/baselines/*.yaml`, renamed per run), the
traces' windows and the load generator's command line.

The same spec for all three autoscalers: 1..8 replicas, QueueDepth 4 per replica and TTFT p95 2 s. Shoal's
autoscaler is on only in the shoal run; in the baseline runs it is off (`autoscaling.enabled: false`, so the
operator follows spec.replicas, which the HPA writes through /scale).
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
BASELINES = HERE / "baselines"
AUTOSCALERS = ("shoal", "hpa", "keda")
MIN_REPLICAS, MAX_REPLICAS = 1, 8
QUEUE_TARGET, TTFT_TARGET_S = 4, 2.0
COLD_START_S = 30


@dataclass(frozen=True)
class TraceRun:
    """A window of a committed trace, replayed at `speedup`: `seconds` of load at most (≤ 3 min)."""

    name: str
    window: str  # START:END of the trace, seconds
    speedup: float
    change_s: float  # seconds into the replay where the load first exceeds one replica's capacity
    note: str

    @property
    def path(self) -> Path:
        return HERE / "traces" / f"{self.name}.csv"

    @property
    def seconds(self) -> float:
        start, end = (float(x) for x in self.window.split(":"))
        return (end - start) / self.speedup


# Windows picked from the traces' 30 s rates (bench/traces/README.md) so that each holds the change the
# trace is about, at its own rate where possible (a speedup multiplies the rate as well as the clock).
# The load change, from bench/traces/generate.py's curves: step5x steps 2 -> 10 rps at 180 s; onoff's
# second burst (12 rps of 1-8k-token prompts, ~1.8x one replica's prefill) starts at 269.4 s; diurnal's
# 1 + 7 sin^2(pi t / 1200) rps, replayed 2x (so 2x the rate), passes one replica's ~4 chat rps at 148 s
# of the trace, 44 s into the window.
TRACES = (
    TraceRun("step5x", "120:300", 1.0, 60.0, "60 s at 2 rps, then the 5x step to 10 rps for 120 s"),
    TraceRun("onoff", "240:420", 1.0, 29.4, "30 s quiet, a 63 s burst at 12 rps of long prompts, quiet"),
    TraceRun("diurnal", "60:420", 2.0, 44.0, "the morning ramp 2x compressed: ~2 to ~13 rps in 180 s"),
)


def isvc(name: str, autoscaler: str) -> dict[str, Any]:
    """The InferenceService, autoscaled by shoal only when `autoscaler` is shoal."""
    autoscaling: dict[str, Any] = {"enabled": autoscaler == "shoal"}
    if autoscaler == "shoal":
        autoscaling.update(
            minReplicas=MIN_REPLICAS,
            maxReplicas=MAX_REPLICAS,
            metrics=[
                {"type": "QueueDepth", "targetPerReplica": QUEUE_TARGET},
                {"type": "TimeToFirstToken", "quantile": 0.95, "targetSeconds": TTFT_TARGET_S},
            ],
        )
    spec: dict[str, Any] = {
        "model": {"name": name, "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
        "engine": {
            "kind": "sim",
            "args": {"max-model-len": 8192},  # onoff's prompts reach 8k tokens
            "sim": {
                "prefillTokensPerSecond": 20000,
                "decodeTokensPerSecond": 60,
                "maxBatch": 16,
                "startupSeconds": COLD_START_S,
            },
        },
        "resources": {"gpus": 1, "cpu": "100m", "memory": "1Gi"},  # 8 fit the node's 8 GPUs
        "autoscaling": autoscaling,
        "serving": {
            "maxQueuePerReplica": 64,
            "maxConcurrency": 16,
            "requestTimeoutSeconds": 300,
            "drainSeconds": 5,
        },
        "routing": {"strategy": "LeastLoad"},
    }
    # Every run starts at min replicas, written once here (the benchmark never applies again): from then
    # on spec.replicas is the autoscaler's to write, through /scale, and the samples read it.
    spec["replicas"] = MIN_REPLICAS
    meta = {"name": name, "labels": {"bench": "autoscaler-live"}}
    return {"apiVersion": "shoal.dev/v1alpha1", "kind": "InferenceService", "metadata": meta, "spec": spec}


def _retarget(doc: dict[str, Any], namespace: str, name: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["metadata"].update(name=name, namespace=namespace)
    doc["spec"]["scaleTargetRef"]["name"] = name
    return doc


def hpa(namespace: str, name: str, tuned: bool) -> dict[str, Any]:
    """bench/baselines/hpa.yaml on this run's InferenceService; untuned: without `behavior` (defaults)."""
    doc = _retarget(yaml.safe_load((BASELINES / "hpa.yaml").read_text()), namespace, name)
    for metric in doc["spec"]["metrics"]:
        metric["external"]["metric"]["selector"]["matchLabels"]["inferenceservice"] = name
    if not tuned:
        doc["spec"].pop("behavior")
    return doc


def scaled_object(namespace: str, name: str, prometheus_url: str, tuned: bool) -> dict[str, Any]:
    """bench/baselines/scaledobject.yaml on this run's InferenceService and the stack's Prometheus. Tuned:
    5 s polling and the HPA behaviour of hpa.yaml; untuned: KEDA's defaults (30 s, no behaviour)."""
    text = (BASELINES / "scaledobject.yaml").read_text()
    text = text.replace('namespace="bench"', f'namespace="{namespace}"')
    text = text.replace('inferenceservice="sim"', f'inferenceservice="{name}"')
    doc = _retarget(yaml.safe_load(text), namespace, name)
    for trigger in doc["spec"]["triggers"]:
        trigger["metadata"]["serverAddress"] = prometheus_url
    if tuned:
        doc["spec"]["pollingInterval"] = 5
    else:
        doc["spec"].pop("pollingInterval")
        doc["spec"].pop("advanced")
    return doc


def load_argv(trace: TraceRun, endpoint: str, model: str, out: Path) -> list[str]:
    """`shoal batch load --replay`: one attempt per request (every failure the system lets through counts),
    the model named (no discovery call before t0)."""
    return [
        sys.executable, "-m", "shoal_cli", "batch", "load",
        "--replay", str(trace.path), "--window", trace.window, "--speedup", f"{trace.speedup:g}",
        "--endpoint", endpoint, "--model", model, "--max-attempts", "1",
        "--timeout", "120", "--drain-timeout", "60", "--out", str(out), "--no-progress",
    ]  # fmt: skip


def trace_times(trace: TraceRun) -> list[float]:
    """The replay's send offsets (the load generator's own parser: same window and speedup)."""
    from shoal_batch.replay import load_replay, parse_window

    plan = load_replay(str(trace.path), window=parse_window(trace.window), speedup=trace.speedup)
    return list(plan.times)
