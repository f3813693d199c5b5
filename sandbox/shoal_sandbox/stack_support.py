"""What both closed-loop stacks (on the real node: :mod:`shoal_sandbox.cluster`; on the pod runner:
:mod:`shoal_sandbox.runner_stack`), the demo and the e2e tests share: bounded waits, the CRD, the examples,
conditions, Prometheus queries and the converted model."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from shoal_sandbox.kube import SyncKube
from shoal_sandbox.paths import cache_dir

Obj = dict[str, Any]
Log = Callable[[str], None]

REPO = Path(__file__).resolve().parents[2]


class StackError(RuntimeError):
    """A closed-loop stack (or the demo on it) could not do its job; the message says why."""


def bounded_wait(probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def install_crds(kube: SyncKube, log: Log) -> None:
    """Applies the CRDs from ``crds/`` (server-side; Helm never upgrades CRDs) and waits until established."""
    crd_dir = REPO / "crds"
    files = sorted(crd_dir.glob("*.yaml"))
    if not files:
        raise StackError(f"no CRDs in {crd_dir}")
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                kube.apply(doc)
                name = doc["metadata"]["name"]

                def established(n: str = name) -> bool:
                    crd = kube.get("CustomResourceDefinition", None, n) or {}
                    return condition(crd, "Established")

                bounded_wait(established, 30, f"CRD {name} established")
    log("CRD installed: inferenceservices.shoal.dev")


def prom_by(prometheus_url: str, promql: str, label: str = "pod") -> dict[str, float]:
    """An instant query's values keyed by one label ({} without Prometheus)."""
    if not prometheus_url:
        return {}
    from shoal_sandbox.prometheus import query

    return {r["metric"].get(label, ""): float(r["value"][1]) for r in query(prometheus_url, promql)}


def prom_sum(prometheus_url: str, promql: str) -> float | None:
    """Sum of an instant query's values; None when there is no series (or no Prometheus)."""
    if not prometheus_url:
        return None
    from shoal_sandbox.prometheus import PrometheusError, query

    try:
        result = query(prometheus_url, promql)
    except (httpx.HTTPError, PrometheusError):
        return None
    if not result:
        return None
    return sum(float(r["value"][1]) for r in result)


def ensure_namespace(kube: SyncKube, namespace: str) -> None:
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})


def load_example(name: str) -> Obj:
    doc: Obj = yaml.safe_load((REPO / "examples" / name).read_text())
    return doc


def condition(obj: Obj | None, ctype: str) -> bool:
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == ctype and c.get("status") == "True" for c in conds)


def models_dir() -> Path:
    """Where `shoal model prepare` puts converted models (one folder each)."""
    return cache_dir() / "models"


def _model_path() -> Path:
    return models_dir() / "smollm2"


def prepare_model(log: Log) -> Path:
    path = _model_path()
    if (path / "config.json").exists():
        return path
    log("preparing SmolLM2 (shoal model prepare smollm2) ...")
    out = subprocess.run(
        [sys.executable, "-m", "shoal_cli", "model", "prepare", "smollm2"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if out.returncode != 0:
        raise StackError(f"shoal model prepare smollm2 failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    lines = [ln for ln in out.stdout.strip().splitlines() if ln.strip()]
    return Path(lines[-1].strip()) if lines else path
