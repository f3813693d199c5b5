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
    replica_rps: float  # requests/s of this trace's mix that one replica of the spec below sustains
    note: str

    @property
    def path(self) -> Path:
        return HERE / "traces" / f"{self.name}.csv"

    @property
    def seconds(self) -> float:
        start, end = (float(x) for x in self.window.split(":"))
        return (end - start) / self.speedup


# One replica's capacity under the sim engine below (16 slots; a step of 16 sequences lasts 2.5x a
# single one's, so 16 x 60 / 2.5 = 384 tokens/s; every prefill at 20k tokens/s stalls the batch):
# chat (mean 1.4k prompt, 252 output tokens) ~1.4 requests/s; onoff's long prompts (mean 3.4k prompt,
# 36 output tokens) ~3.8 requests/s, prefill-bound. The first live run sized the windows on the
# nominal 4 chat requests/s: every peak needed more than maxReplicas, all three autoscalers ended at 8
# and the capacity limit, not the autoscaler, set the SLO. Each window's peak now needs at most 6 of 8.
CHAT_RPS, LONG_PROMPT_RPS = 1.4, 3.8

# Windows from the traces' 30 s rates (bench/traces/README.md), each holding the change the trace is
# about (a speedup multiplies the rate as well as the clock). The replay starts at the window's first
# request. step5x steps 2 -> 10 rps at 180 s: at 0.6x, ~1.2 -> ~6 rps at 64 s of the replay; onoff's
# second burst (12 rps of 1-8k-token prompts) starts at 269.4 s; diurnal's 1 + 7 sin^2(pi t / 1200)
# rps at 1.5x ramps from ~1.5 to ~6 rps, past one replica's capacity at 22 s.
TRACES = (
    TraceRun("step5x", "140:248", 0.6, 64.0, CHAT_RPS, "64 s at ~1.2 rps, then the 5x step to ~6 rps"),
    TraceRun("onoff", "240:420", 1.0, 29.4, LONG_PROMPT_RPS, "30 s quiet, a 63 s burst at 12 rps, quiet"),
    TraceRun("diurnal", "30:300", 1.5, 22.0, CHAT_RPS, "the morning ramp at 1.5x: ~1.5 to ~6 rps"),
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
