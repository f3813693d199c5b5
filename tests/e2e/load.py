"""Load and InferenceService helpers of the e2e suite: a sim InferenceService, open-loop load in a thread
(the batch client, no client retries: every failure the system lets through counts) and streamed chats."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx
from e2e.support import Kube, eventually, ready_pods
from shoal_common import names
from shoal_sandbox.cluster import ClusterStack

MODEL_PODS = f"{names.LABEL_COMPONENT}={names.COMPONENT_MODEL_SERVER}"


def sim_isvc(name: str, *, autoscaling: dict[str, Any] | None, replicas: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"name": name, "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
        "engine": {
            "kind": "sim",
            "sim": {
                "prefillTokensPerSecond": 4000,
                "decodeTokensPerSecond": 20,
                "maxBatch": 4,
                "startupSeconds": 1,
            },
        },
        "resources": {"gpus": 1, "cpu": "100m", "memory": "1Gi"},  # 6 replicas fit the 2-core node
        "serving": {
            "maxQueuePerReplica": 500,
            "maxConcurrency": 4,
            "requestTimeoutSeconds": 300,
            "drainSeconds": 30,
        },
        "routing": {"strategy": "LeastLoad"},
    }
    if autoscaling is not None:
        spec["autoscaling"] = autoscaling
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "shoal.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": spec,
    }


FAST_BEHAVIOR = {
    "scaleUp": {"stabilizationSeconds": 0, "periodSeconds": 2, "maxPercentPerStep": 500},
    "scaleDown": {"stabilizationSeconds": 20, "periodSeconds": 5, "maxPercentPerStep": 100},
}


def wait_router(stack: ClusterStack, ns: str, name: str, timeout: float = 120) -> str:
    url: str = eventually(
        lambda: stack.router_url(ns, name), timeout=timeout, what=f"a ready router for {name}"
    )
    return url


def run_load(url: str, points: tuple[tuple[float, float], ...], max_tokens: int = 10) -> Any:
    from shoal_batch.config import LoadConfig
    from shoal_batch.runner import run_open_loop_async
    from shoal_batch.schedule import RateCurve

    cfg = LoadConfig(
        endpoints=[url],
        curve=RateCurve(points=points),
        max_attempts=1,  # no client retries: every failure the system lets through counts
        timeout_s=300.0,
        params={"max_tokens": max_tokens},
        drain_timeout_s=120.0,
        keep_records=True,
    )
    return asyncio.run(run_open_loop_async(cfg))


class LoadThread(threading.Thread):
    def __init__(self, url: str, points: tuple[tuple[float, float], ...]) -> None:
        super().__init__(daemon=True, name="load")
        self.url, self.points = url, points
        self.report: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.report = run_load(self.url, self.points)
        except BaseException as exc:
            self.error = exc


def desired_and_ready(kube: Kube, ns: str, name: str) -> tuple[int, int]:
    obj = kube.get("InferenceService", ns, name) or {}
    st, spec = obj.get("status") or {}, obj.get("spec") or {}
    desired = int((st.get("autoscaler") or {}).get("desiredReplicas") or spec.get("replicas") or 0)
    return desired, len(ready_pods(kube, ns, f"{names.LABEL_ISVC}={name},{MODEL_PODS}"))


def failures(report: Any) -> str:
    bad = [r for r in report.records or [] if r.get("error")]
    return f"{report.failed} failed: {report.errors}; first: {bad[:3]}"


def stream_chat(url: str, model: str, max_tokens: int) -> tuple[int, str | None, bool]:
    """One streamed chat completion: (content chunks, finish_reason, saw [DONE])."""
    chunks, finish, done = 0, None, False
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "tell me a long story"}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            choice = json.loads(line[6:])["choices"][0]
            chunks += bool((choice.get("delta") or {}).get("content"))
            finish = choice.get("finish_reason") or finish
    return chunks, finish, done


class MixedLoad(threading.Thread):
    """Open-loop non-streamed load (the batch client) plus `streamers` clients streaming one chat after
    another, until the open loop ends. Streams are counted complete (finish_reason and [DONE]) or cut."""

    def __init__(self, url: str, model: str, points: tuple[tuple[float, float], ...], streamers: int = 2):
        super().__init__(daemon=True, name="mixed-load")
        self.url, self.model, self.streamers = url, model, streamers
        self.open_loop = LoadThread(url, points)
        self.complete = 0
        self.cut: list[str] = []
        self._lock = threading.Lock()

    def run(self) -> None:
        self.open_loop.start()
        workers = [
            threading.Thread(target=self._stream_until_done, daemon=True) for _ in range(self.streamers)
        ]
        for w in workers:
            w.start()
        self.open_loop.join()
        for w in workers:
            w.join(120)

    def _stream_until_done(self) -> None:
        for _ in range(1000):  # bounded: the open loop ends first
            if not self.open_loop.is_alive():
                return
            try:
                chunks, finish, done = stream_chat(self.url, self.model, 40)
                ok = done and finish == "length" and chunks >= 39
                outcome = "" if ok else f"incomplete: {chunks} chunks, finish={finish}, done={done}"
            except (httpx.HTTPError, AssertionError) as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            with self._lock:
                if outcome:
                    self.cut.append(outcome)
                else:
                    self.complete += 1

    @property
    def report(self) -> Any:
        return self.open_loop.report

    def summary(self) -> dict[str, Any]:
        report = self.report
        return {
            "ok": getattr(report, "ok", 0),
            "failed": getattr(report, "failed", 0),
            "streams_complete": self.complete,
            "streams_cut": len(self.cut),
        }
