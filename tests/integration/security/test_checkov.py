"""checkov (PyPI) on the rendered chart and on the operator's rendered children for a sample of specs:
zero failures; every waiver sits next to the code it waives (chart annotations, builders/waivers.py)
and carries a reason.

checkov lives in its own virtualenv ($SHOAL_CACHE/tools/checkov-venv, made by scripts/setup.sh): its
pinned dependencies would fight vLLM's in the project's environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from shoal_common.paths import cache_dir
from shoal_operator.api import InferenceService
from shoal_operator.builders import BuildOptions, desired_children

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "shoal"

CHART_VALUES: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {
        "operator": {"watchNamespaces": ["team-a", "team-b"]},
        "rbac": {"apiKeySecrets": [{"namespace": "team-a", "names": ["chat-keys"]}]},
    },
}
SPECS: dict[str, dict[str, Any]] = {
    "vllm-gpu-pdb": {
        "model": {"name": "llama", "uri": "pvc://models/llama"},
        "engine": {"kind": "vllm", "args": {"max-model-len": 4096}},
        "resources": {"gpus": 1, "cpu": "4", "memory": "16Gi"},
        "replicas": 3,
    },
    "sim-service-mode": {
        "model": {"name": "sim", "uri": "file:///models/sim"},
        "engine": {"kind": "sim"},
        "routing": {"mode": "Service"},
    },
    "router-keys-prefixhash": {
        "model": {"name": "chat", "uri": "hf://org/chat"},
        "engine": {"kind": "vllm"},
        "resources": {"gpus": 1, "memory": "24Gi"},
        "routing": {
            "strategy": "PrefixHash",
            "replicas": 2,
            "apiKeysSecret": "chat-keys",
            "rateLimit": {"requestsPerSecond": 5},
        },
        "networkPolicy": {"allowedNamespaces": ["gateway"]},
        "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4},
    },
}


def tool(name: str, *candidates: Path) -> str:
    found = shutil.which(name)
    for path in (*candidates, Path(found) if found else None):
        if path is not None and path.is_file() and os.access(path, os.X_OK):
            return str(path)
    pytest.fail(f"`{name}` not found: run scripts/setup.sh (it installs {name} under $SHOAL_CACHE)")


def cache() -> Path:
    return cache_dir()


def render_chart(helm: str, values: dict[str, Any], out: Path) -> None:
    vfile = out.with_suffix(".values.json")
    vfile.write_text(json.dumps(values))
    rendered = subprocess.run(
        [helm, "template", "shoal", str(CHART), "-n", "shoal-system", "-f", str(vfile)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    out.write_text(rendered)


def render_children(name: str, spec: dict[str, Any], out: Path) -> None:
    isvc = InferenceService.model_validate(
        {
            "apiVersion": "shoal.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": name, "namespace": "team-a", "uid": "0000-1"},
            "spec": spec,
        }
    )
    children = desired_children(isvc, BuildOptions(podmonitor_available=True))
    out.write_text(yaml.safe_dump_all(children.apply, sort_keys=False))


def run_checkov(directory: Path) -> list[dict[str, Any]]:
    checkov = tool("checkov", cache() / "tools" / "checkov-venv" / "bin" / "checkov")
    proc = subprocess.run(
        [
            checkov,
            "-d",
            str(directory),
            "--framework",
            "kubernetes",
            "--skip-download",
            "-o",
            "json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=directory,
    )
    assert proc.stdout.strip(), proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    return doc if isinstance(doc, list) else [doc]


def test_checkov_finds_nothing_unwaived(tmp_path: Path) -> None:
    helm = tool("helm", cache() / "bin" / "helm")
    for name, values in CHART_VALUES.items():
        render_chart(helm, values, tmp_path / f"chart-{name}.yaml")
    for name, spec in SPECS.items():
        render_children(name, spec, tmp_path / f"children-{name}.yaml")
    reports = run_checkov(tmp_path)
    failed = [
        (c["check_id"], c["resource"], c["file_path"])
        for report in reports
        for c in report.get("results", {}).get("failed_checks", [])
    ]
    assert failed == [], failed
    passed = sum(int(r.get("summary", {}).get("passed", 0)) for r in reports)
    assert passed > 300, passed  # the files were really scanned
    for report in reports:
        for skipped in report.get("results", {}).get("skipped_checks", []):
            reason = (skipped.get("check_result") or {}).get("suppress_comment", "")
            assert len(reason) > 10, (skipped["check_id"], skipped["resource"])
