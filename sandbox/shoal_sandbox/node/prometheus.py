"""Prometheus on the real node: pods discovered with `kubernetes_sd_configs` against the API server, with
the relabelling a user's cluster uses (docs/metrics.md), instead of the pod runner's file_sd targets.

Scraped: pods annotated `prometheus.io/scrape: "true"`, at `<pod IP>:<prometheus.io/port>` (else at each
declared container port) on `prometheus.io/path` (default /metrics); labelled `namespace`, `pod`, `inferenceservice`
(pod label `shoal.dev/inferenceservice`) and `component` (pod label `app.kubernetes.io/component`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from shoal_common import names

POD_JOB = "shoal-pods"


def _label(name: str) -> str:
    """The meta label kubernetes_sd gives a pod label (non-alphanumerics become underscores)."""
    return "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in name)


def pod_relabel_configs() -> list[dict[str, Any]]:
    scrape = "__meta_kubernetes_pod_annotation_prometheus_io_scrape"
    port = "__meta_kubernetes_pod_annotation_prometheus_io_port"
    path = "__meta_kubernetes_pod_annotation_prometheus_io_path"
    return [
        {"source_labels": [scrape], "regex": "true", "action": "keep"},
        # Only running pods that have an IP: a pending pod is no target yet.
        {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Running", "action": "keep"},
        {"source_labels": [path], "regex": "(.+)", "target_label": "__metrics_path__"},
        {
            "source_labels": ["__meta_kubernetes_pod_ip", port],
            "regex": "([^;]+);([0-9]+)",
            "replacement": "$1:$2",
            "target_label": "__address__",
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": [_label(names.LABEL_ISVC)], "target_label": "inferenceservice"},
        {"source_labels": [_label(names.LABEL_COMPONENT)], "target_label": "component"},
    ]


def render_config(kubeconfig: Path, scrape_interval_s: float = 1.0) -> str:
    interval = f"{int(scrape_interval_s * 1000)}ms"
    job = {
        "job_name": POD_JOB,
        "scrape_interval": interval,
        "scrape_timeout": f"{int(min(scrape_interval_s, 1.0) * 1000)}ms",
        # role pod lists one target per container port; the relabelling above keeps one per annotated pod
        # when the annotation names the port (the shoal chart's pods do).
        "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig)}],
        "relabel_configs": pod_relabel_configs(),
    }
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [job],
    }
    return yaml.safe_dump(config, sort_keys=False)
