"""kwok's pod Stages for the sandbox's fake GPU nodes: kwok's own "fast" set (pods become Running and
Ready at once, Job pods complete, deleted pods go), written as a `--config` file for kwok v0.7.

Pods on kwok nodes never run; the API-level tests only need their status to move as a kubelet's would.
Pods that must really run go to the real node (docs/sandbox.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

_FAST_READY_TEMPLATE = """\
{{ $now := Now }}

conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: ContainersReady
{{ range .spec.readinessGates }}
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: {{ .conditionType | Quote }}
{{ end }}

containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: true
  restartCount: 0
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}

initContainerStatuses:
{{ range .spec.initContainers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: true
  restartCount: 0
  {{ if eq .restartPolicy "Always" }}
  started: true
  state:
    running:
      startedAt: {{ $now | Quote }}
  {{ else }}
  state:
    terminated:
      exitCode: 0
      finishedAt: {{ $now | Quote }}
      reason: Completed
      startedAt: {{ $now | Quote }}
  {{ end }}
{{ end }}

hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
phase: Running
startTime: {{ $now | Quote }}
"""

_FAST_COMPLETE_TEMPLATE = """\
{{ $now := Now }}
{{ $root := . }}
containerStatuses:
{{ range $index, $item := .spec.containers }}
- image: {{ $item.image | Quote }}
  name: {{ $item.name | Quote }}
  ready: false
  restartCount: 0
  started: false
  state:
    terminated:
      exitCode: 0
      finishedAt: {{ $now | Quote }}
      reason: Completed
      startedAt: {{ $now | Quote }}
{{ end }}
phase: Succeeded
"""


def _stage(name: str, exprs: list[Obj], nxt: Obj, delay: Obj | None = None) -> Obj:
    spec: Obj = {
        "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
        "selector": {"matchExpressions": exprs},
        "next": nxt,
    }
    if delay is not None:
        spec["delay"] = delay
    return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name}, "spec": spec}


def kwok_pod_stages() -> list[Obj]:
    not_deleting = {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"}
    deleting = {"key": ".metadata.deletionTimestamp", "operator": "Exists"}
    no_ip = {"key": ".status.podIP", "operator": "DoesNotExist"}
    running_job: list[Obj] = [
        not_deleting,
        {"key": ".status.phase", "operator": "In", "values": ["Running"]},
        {"key": ".metadata.ownerReferences.[].kind", "operator": "In", "values": ["Job"]},
    ]
    return [
        _stage("pod-ready", [not_deleting, no_ip], {"statusTemplate": _FAST_READY_TEMPLATE}),
        _stage("pod-complete", running_job, {"statusTemplate": _FAST_COMPLETE_TEMPLATE}),
        _stage("pod-delete", [deleting], {"finalizers": {"empty": True}, "delete": True}),
    ]


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the status templates) as readable ``|`` blocks."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_BlockDumper.add_representer(str, _str_representer)


def write_kwok_stages(path: Path) -> Path:
    """Writes the stages to ``path`` (a kwok ``--config`` file) when they differ; returns ``path``."""
    text = "---\n".join(
        yaml.dump(s, Dumper=_BlockDumper, sort_keys=False, width=1000) for s in kwok_pod_stages()
    )
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path
