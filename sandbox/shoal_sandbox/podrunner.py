"""Pod runner: the sandbox's kubelet for pods that can run from this Python environment.

kwok simulates every pod on its fake nodes. For the closed loop we want some pods to *really* run: the
operator's model-server and router pods. The pod runner watches pods bound to the kwok nodes and, for each
pod it owns, runs the pod's own container command, arguments and environment as a local process bound to
the pod's loopback IP (kwok allocates pod IPs from a 127.x CIDR), the way a kubelet would:

* which pods: those labelled ``app.kubernetes.io/managed-by=shoal-operator`` (every pod the operator creates,
  unchanged) or ``sandbox.shoal.dev/run=local`` (any other pod that opts in). kwok's own pod stages are
  replaced by :func:`kwok_pod_stages`: other pods keep kwok's default (fast) behaviour, while for runner pods
  kwok only allocates the pod IP and leaves the pod *not ready*; readiness then follows the pod's real
  readiness probe, patched into ``status.conditions`` by the runner, so the EndpointSlice controller (and
  the router that reads EndpointSlices) sees real readiness.
* the command: ``shoal ...`` runs as ``sys.executable -m shoal_cli ...`` (``python``/``python3`` run as
  ``sys.executable``); ``$(VAR)`` references are expanded; an argument ``0.0.0.0`` (``--host 0.0.0.0``,
  ``--listen-host=0.0.0.0``) becomes the pod IP so replicas do not collide on ports.
* the environment: literal values, the downward API (``fieldRef``/``resourceFieldRef``), ConfigMap and
  Secret references; ``KUBECONFIG`` points to a kubeconfig holding a token of the pod's service account
  (TokenRequest API), so in-pod Kubernetes clients work with the pod's own RBAC.
* volumes: ``emptyDir`` becomes a directory under the runner's state dir, ``hostPath`` is itself,
  ``configMap``/``secret`` are written out as files, a ``persistentVolumeClaim`` is
  ``$SHOAL_CACHE/pvc/<namespace>/<claim>``. Processes cannot see mounts, so every argument or environment
  value that starts with a volume's ``mountPath`` is rewritten to the local directory.
* probes: startup, readiness and liveness (``httpGet``, ``tcpSocket``, ``exec``), with the pod's periods
  and thresholds; liveness failure restarts the container.
* restarts: per ``restartPolicy``, with a bounded exponential back-off (1 s doubling to 30 s).
* deletion: the pod leaves the endpoints first (the EndpointSlice controller marks terminating pods not
  ready), the runner runs ``preStop`` (``sleep``, ``exec``, ``httpGet``), sends SIGTERM, waits for the rest
  of the pod's grace period, then kills the process group, and finally deletes the pod object (grace 0)
  like a kubelet. A pod IP is only reused once the process that held it has exited.
* Services: the API server rejects loopback addresses in EndpointSlices, so Services of runner pods have
  no endpoints; a router started with ``--discovery kubernetes`` is switched to ``--discovery pods`` (the
  same facts read from the Pods), see :func:`endpointslice_workaround`.
* logs: ``<state-dir>/pods/<namespace>/<pod>/<container>.log``.
* Prometheus: pods with ``prometheus.io/scrape: "true"`` are written as ``file_sd`` targets (pod IP and
  ``prometheus.io/port``, labels ``namespace``, ``pod``, ``inferenceservice``, ``component``), so series
  carry the same labels as with Kubernetes service discovery in a cluster.

Run it as ``python -m shoal_sandbox.podrunner --kubeconfig K`` or through :class:`PodRunner`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from shoal_common import names

from shoal_sandbox.kube import ApiError, KubeConfig, load_kubeconfig

log = logging.getLogger("shoal.podrunner")

Obj = dict[str, Any]

LOCAL_RUN_LABEL = "sandbox.shoal.dev/run"
LOCAL_RUN_VALUE = "local"
POD_UID_ENV = "SHOAL_SANDBOX_POD_UID"

# The jq expression (kwok Stage selectors) that is non-empty exactly for pods the runner owns.
_RUNNER_JQ = (
    ".metadata.labels | select(. != null)"
    f' | select(.["{names.LABEL_MANAGED_BY}"] == "{names.MANAGED_BY}"'
    f' or .["{LOCAL_RUN_LABEL}"] == "{LOCAL_RUN_VALUE}")'
)

MIN_PROBE_TIMEOUT_S = 2.0  # the sandbox shares few cores; a 1 s probe timeout flaps under load
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
DEFAULT_GRACE_S = 30.0


def is_runner_pod(pod: Obj) -> bool:
    labels = pod.get("metadata", {}).get("labels") or {}
    return bool(
        labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY
        or labels.get(LOCAL_RUN_LABEL) == LOCAL_RUN_VALUE
    )


def default_cache_dir() -> Path:
    return Path(os.environ.get("SHOAL_CACHE", str(Path.home() / ".cache" / "shoal")))


def default_state_dir() -> Path:
    return default_cache_dir() / "sandbox" / "podrunner"


def default_targets_file() -> Path:
    return default_cache_dir() / "sandbox" / "prometheus" / "file_sd" / "pods.json"


# --------------------------------------------------------------------------------------------------------
# kwok stages
# --------------------------------------------------------------------------------------------------------

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

# Runner pods: kwok allocates the IP and reports the containers as being created; the runner does the rest.
_LOCAL_START_TEMPLATE = """\
{{ $now := Now }}

conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: PodScheduled
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: ContainersNotReady
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: ContainersNotReady
  type: ContainersReady

containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
  started: false
  restartCount: 0
  state:
    waiting:
      reason: ContainerCreating
{{ end }}

hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
phase: Pending
startTime: {{ $now | Quote }}
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
    """kwok (v0.7) pod Stages for a sandbox with a pod runner.

    kwok uses its default pod stages only when its configuration has none, so this is the whole set: kwok's
    default "fast" stages restricted to pods the runner does not own, plus two stages for runner pods
    (allocate the IP and report not ready; delete at the end of the grace period if no runner did it first).
    """
    not_deleting = {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"}
    deleting = {"key": ".metadata.deletionTimestamp", "operator": "Exists"}
    no_ip = {"key": ".status.podIP", "operator": "DoesNotExist"}
    other = {"key": _RUNNER_JQ, "operator": "DoesNotExist"}
    mine = {"key": _RUNNER_JQ, "operator": "Exists"}
    return [
        _stage("pod-ready", [not_deleting, no_ip, other], {"statusTemplate": _FAST_READY_TEMPLATE}),
        _stage(
            "pod-complete",
            [
                not_deleting,
                {"key": ".status.phase", "operator": "In", "values": ["Running"]},
                {"key": ".metadata.ownerReferences.[].kind", "operator": "In", "values": ["Job"]},
                other,
            ],
            {"statusTemplate": _FAST_COMPLETE_TEMPLATE},
        ),
        _stage("pod-delete", [deleting, other], {"finalizers": {"empty": True}, "delete": True}),
        _stage(
            "shoal-local-pod-start", [not_deleting, no_ip, mine], {"statusTemplate": _LOCAL_START_TEMPLATE}
        ),
        _stage(
            "shoal-local-pod-delete-fallback",
            [deleting, mine],
            {"finalizers": {"empty": True}, "delete": True},
            delay={
                "durationMilliseconds": 0,
                "durationFrom": {"jq": {"expression": ".metadata.deletionTimestamp"}},
            },
        ),
    ]


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the status templates) as readable ``|`` blocks."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_BlockDumper.add_representer(str, _str_representer)


def kwok_pod_stages_yaml() -> str:
    """The stages as YAML documents, to append to kwok's ``--config`` file."""
    return "---\n".join(
        yaml.dump(s, Dumper=_BlockDumper, sort_keys=False, width=1000) for s in kwok_pod_stages()
    )


def write_kwok_stages(path: Path) -> Path:
    """Write the stages to ``path`` (a kwok ``--config`` file) when they differ; returns ``path``."""
    text = kwok_pod_stages_yaml()
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


class KubeAPI:
    """The handful of Kubernetes API calls the sandbox tools need, with typed errors."""

    def __init__(self, cfg: KubeConfig) -> None:
        self.cfg = cfg
        verify: ssl.SSLContext | bool
        if cfg.server.startswith("https"):
            ctx = (
                ssl.create_default_context(cafile=cfg.ca_file)
                if cfg.ca_file
                else ssl.create_default_context()
            )
            if cfg.insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if cfg.cert_file and cfg.key_file:
                ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
            verify = ctx
        else:
            verify = False
        headers = {"Authorization": f"Bearer {cfg.token}"} if cfg.token else {}
        self._client = httpx.AsyncClient(
            base_url=cfg.server, verify=verify, headers=headers, timeout=httpx.Timeout(30.0, connect=5.0)
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        ctype: str = "",
    ) -> Obj:
        headers = {"Content-Type": ctype or "application/json"} if body is not None else {}
        content = json.dumps(body).encode() if body is not None else None
        resp = await self._client.request(method, path, content=content, params=params, headers=headers)
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, resp.text)
        out: Obj = resp.json() if resp.content else {}
        return out

    async def get(self, path: str, params: dict[str, str] | None = None) -> Obj:
        return await self.request("GET", path, params=params)

    async def patch_status(self, pod: Obj, status: Obj) -> None:
        md = pod["metadata"]
        await self.request(
            "PATCH",
            f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}/status",
            body={"metadata": {"uid": md["uid"]}, "status": status},
            ctype="application/strategic-merge-patch+json",
        )

    async def delete_pod_now(self, pod: Obj) -> None:
        md = pod["metadata"]
        with contextlib.suppress(ApiError):
            await self.request(
                "DELETE",
                f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}",
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": md["uid"]}},
            )

    async def watch(self, path: str, params: dict[str, str]) -> AsyncIterator[Obj]:
        """List then watch ``path`` (a collection); yields watch events, re-listing after ``410 Gone``."""
        while True:
            listing = await self.get(path, params)
            rv = listing["metadata"]["resourceVersion"]
            for item in listing.get("items", []):
                yield {"type": "ADDED", "object": item}
            yield {"type": "LISTED", "uids": [i["metadata"]["uid"] for i in listing.get("items", [])]}
            gone = False
            while not gone:
                q = {**params, "watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true"}
                q["timeoutSeconds"] = "240"
                async with self._client.stream("GET", path, params=q, timeout=httpx.Timeout(300.0)) as resp:
                    if resp.status_code == 410:
                        break
                    if resp.status_code >= 400:
                        raise ApiError(resp.status_code, (await resp.aread()).decode())
                    async for line in resp.aiter_lines():
                        if not line.strip():
                            continue
                        ev = json.loads(line)
                        if ev.get("type") == "ERROR":
                            if ev.get("object", {}).get("code") == 410:
                                gone = True
                                break
                            raise ApiError(int(ev.get("object", {}).get("code", 500)), line)
                        rv = ev["object"]["metadata"].get("resourceVersion", rv)
                        if ev.get("type") != "BOOKMARK":
                            yield ev


# --------------------------------------------------------------------------------------------------------
# Pod spec -> local process
# --------------------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_vars(value: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: ``$$`` escapes, unknown references stay as they are."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(sub, value)


_ANY_ADDR = {"0.0.0.0", "::", "[::]"}


def bind_to_pod_ip(arg: str, pod_ip: str) -> str:
    if arg in _ANY_ADDR:
        return pod_ip
    if arg.startswith("--") and "=" in arg:
        key, _, val = arg.partition("=")
        if val in _ANY_ADDR:
            return f"{key}={pod_ip}"
    return arg


def endpointslice_workaround(argv: list[str], pod_ip: str) -> list[str]:
    """``--discovery kubernetes`` -> ``--discovery pods`` for a router on a loopback pod IP.

    The API server rejects loopback addresses in EndpointSlices (``may not be in the loopback range``), so
    with the sandbox's 127.x pod IPs every Service's EndpointSlice stays empty. The router's ``pods``
    discovery reads the same facts (pod IP, Ready, terminating) from the Pods its Service selects. This is
    the runner's one translation that a cluster does not need; with a routable pod CIDR it does nothing.
    """
    if not pod_ip.startswith("127."):
        return argv
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--discovery" and i + 1 < len(out) and out[i + 1] == "kubernetes":
            out[i + 1] = "pods"
        elif arg == "--discovery=kubernetes":
            out[i] = "--discovery=pods"
    return out


def resolve_argv(argv: list[str], python: str = sys.executable) -> list[str] | None:
    """The local command for a container's ``command + args``, or None when it cannot run here."""
    if not argv:
        return None
    exe = argv[0]
    base = os.path.basename(exe)
    if base == "shoal":
        return [python, "-m", "shoal_cli", *argv[1:]]
    if re.fullmatch(r"python(3(\.\d+)?)?", base):
        return [python, *argv[1:]]
    found = shutil.which(exe)
    if found is None:
        return None
    return [found, *argv[1:]]


def _quantity_to_float(q: str) -> float:
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(q))
    if not m:
        return 0.0
    return float(m.group(1)) * units.get(m.group(2), 1.0)


def _jsonpath_field(pod: Obj, path: str) -> str:
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return str((pod["metadata"].get(m.group(1)) or {}).get(m.group(2), ""))
    cur: Any = pod
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


@dataclass
class VolumeMap:
    """mountPath -> local directory, longest first (a nested mount wins)."""

    mounts: list[tuple[str, str]] = field(default_factory=list)

    def rewrite(self, value: str) -> str:
        for mount_path, local in self.mounts:
            mp = mount_path.rstrip("/")
            if value == mp or value.startswith(mp + "/"):
                return local + value[len(mp) :]
            key, sep, rest = value.partition("=")  # --model=/models/x
            if sep and (rest == mp or rest.startswith(mp + "/")):
                return key + sep + local + rest[len(mp) :]
        return value


# --------------------------------------------------------------------------------------------------------
# Per-container and per-pod state machines
# --------------------------------------------------------------------------------------------------------


@dataclass
class ContainerState:
    name: str
    image: str
    ready: bool = False
    started: bool = False
    restart_count: int = 0
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)

    def status(self) -> Obj:
        out: Obj = {
            "name": self.name,
            "image": self.image,
            "imageID": self.image,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
        }
        if self.last_state:
            out["lastState"] = self.last_state
        return out


class ContainerRunner:
    def __init__(self, worker: PodWorker, spec: Obj, argv: list[str] | None, env: dict[str, str], cwd: str):
        self.worker = worker
        self.spec = spec
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.state = ContainerState(name=spec["name"], image=spec.get("image", ""))
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = worker.pod_dir / f"{spec['name']}.log"
        self.pid_path = worker.pod_dir / f"{spec['name']}.pid"
        self._restart_now = asyncio.Event()
        self._probe_task: asyncio.Task[None] | None = None

    # -- probes --------------------------------------------------------------------------------------
    def _port(self, port: Any) -> int:
        if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            return int(port)
        for p in self.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"unknown port {port!r}")

    async def probe_once(self, probe: Obj) -> bool:
        timeout = max(float(probe.get("timeoutSeconds", 1)), MIN_PROBE_TIMEOUT_S)
        ip = self.worker.pod_ip
        try:
            if "httpGet" in probe:
                hg = probe["httpGet"]
                scheme = str(hg.get("scheme", "HTTP")).lower()
                host = hg.get("host") or ip
                url = f"{scheme}://{host}:{self._port(hg['port'])}{hg.get('path', '/')}"
                headers = {h["name"]: h["value"] for h in hg.get("httpHeaders") or []}
                resp = await self.worker.runner.http.get(url, headers=headers, timeout=timeout)
                return 200 <= resp.status_code < 400
            if "tcpSocket" in probe:
                ts = probe["tcpSocket"]
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(ts.get("host") or ip, self._port(ts["port"])), timeout
                )
                writer.close()
                return True
            if "exec" in probe:
                argv = resolve_argv(list(probe["exec"].get("command") or []), self.worker.runner.python)
                if argv is None:
                    return True  # cannot run it here: treat as passing, like an absent probe
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    env=self.env,
                    cwd=self.cwd,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                try:
                    return await asyncio.wait_for(proc.wait(), timeout) == 0
                except TimeoutError:
                    proc.kill()
                    return False
        except (httpx.HTTPError, OSError, TimeoutError, ValueError):
            return False
        return True  # grpc and unknown handlers: not checked

    async def _probe_loop(self, kind: str, probe: Obj, on_result: Callable[[bool], None]) -> None:
        period = max(float(probe.get("periodSeconds", 10)), 0.2)
        success_threshold = int(probe.get("successThreshold", 1))
        failure_threshold = int(probe.get("failureThreshold", 3))
        await asyncio.sleep(float(probe.get("initialDelaySeconds", 0)))
        ok_run = fail_run = 0
        while True:
            ok = await self.probe_once(probe)
            if ok:
                ok_run, fail_run = ok_run + 1, 0
                if ok_run >= success_threshold:
                    on_result(True)
            else:
                ok_run, fail_run = 0, fail_run + 1
                if fail_run >= failure_threshold:
                    on_result(False)
            await asyncio.sleep(period)

    async def _probes(self) -> None:
        """Startup probe gates the others; readiness drives ``ready``; liveness failure restarts."""
        startup = self.spec.get("startupProbe")
        if startup:
            done = asyncio.Event()
            failed = asyncio.Event()

            def on_startup(ok: bool) -> None:
                (done if ok else failed).set()

            t = asyncio.create_task(self._probe_loop("startup", startup, on_startup))
            waiters = [asyncio.create_task(done.wait()), asyncio.create_task(failed.wait())]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in [t, *waiters]:
                w.cancel()
            if failed.is_set():
                log.warning(
                    "startup probe failed", extra={"pod": self.worker.key, "container": self.state.name}
                )
                self._restart_now.set()
                return
        self.state.started = True
        tasks: list[asyncio.Task[None]] = []
        readiness = self.spec.get("readinessProbe")
        if readiness:

            def on_ready(ok: bool) -> None:
                if self.state.ready != ok:
                    self.state.ready = ok
                    self.worker.publish()

            tasks.append(asyncio.create_task(self._probe_loop("readiness", readiness, on_ready)))
        else:
            self.state.ready = True
        self.worker.publish()
        liveness = self.spec.get("livenessProbe")
        if liveness:

            def on_live(ok: bool) -> None:
                if not ok:
                    log.warning(
                        "liveness probe failed", extra={"pod": self.worker.key, "container": self.state.name}
                    )
                    self._restart_now.set()

            tasks.append(asyncio.create_task(self._probe_loop("liveness", liveness, on_live)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    # -- process --------------------------------------------------------------------------------------
    async def _start(self) -> asyncio.subprocess.Process:
        assert self.argv is not None
        self.worker.pod_dir.mkdir(parents=True, exist_ok=True)
        logf = self.log_path.open("ab")
        try:
            logf.write(f"--- {_now()} start {' '.join(self.argv)}\n".encode())
            logf.flush()
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logf,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            logf.close()
        self.pid_path.write_text(f"{proc.pid}\n")
        return proc

    async def stop(self, grace_s: float, run_prestop: bool = True) -> None:
        """preStop, SIGTERM, wait out the grace period, then kill the whole process group."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            if self._probe_task is not None:
                self._probe_task.cancel()
            return
        deadline = time.monotonic() + grace_s
        pre_stop = (self.spec.get("lifecycle") or {}).get("preStop")
        if run_prestop and pre_stop:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._run_handler(pre_stop), max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            log.warning(
                "grace period over; killing", extra={"pod": self.worker.key, "container": self.state.name}
            )
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        if self._probe_task is not None:
            self._probe_task.cancel()

    async def _run_handler(self, handler: Obj) -> None:
        if "sleep" in handler:
            await asyncio.sleep(float(handler["sleep"].get("seconds", 0)))
        elif "exec" in handler:
            argv = resolve_argv(list(handler["exec"].get("command") or []), self.worker.runner.python)
            if argv is not None:
                p = await asyncio.create_subprocess_exec(*argv, env=self.env, cwd=self.cwd)
                await p.wait()
        elif "httpGet" in handler:
            hg = handler["httpGet"]
            url = f"{str(hg.get('scheme', 'HTTP')).lower()}://{hg.get('host') or self.worker.pod_ip}:{self._port(hg['port'])}{hg.get('path', '/')}"
            with contextlib.suppress(httpx.HTTPError):
                await self.worker.runner.http.get(url, timeout=30.0)

    async def run(self, stopping: asyncio.Event) -> None:
        """Run (and restart) the container until the pod terminates."""
        if self.argv is None:
            self.state.state = {
                "waiting": {
                    "reason": "NotRunnableLocally",
                    "message": "command is not runnable from this Python environment",
                }
            }
            self.worker.publish()
            log.warning(
                "container not runnable locally", extra={"pod": self.worker.key, "container": self.state.name}
            )
            await stopping.wait()
            return
        policy = self.worker.pod["spec"].get("restartPolicy", "Always")
        backoff = BACKOFF_START_S
        while not stopping.is_set():
            self._restart_now.clear()
            started_at = _now()
            t_start = time.monotonic()
            self.proc = await self._start()
            self.state.state = {"running": {"startedAt": started_at}}
            self.state.ready = False
            self.state.started = False
            self.worker.publish()
            log.info(
                "started", extra={"pod": self.worker.key, "container": self.state.name, "pid": self.proc.pid}
            )
            probes = asyncio.create_task(self._probes())
            exited = asyncio.create_task(self.proc.wait())
            stop_wait = asyncio.create_task(stopping.wait())
            restart_wait = asyncio.create_task(self._restart_now.wait())
            await asyncio.wait([exited, stop_wait, restart_wait], return_when=asyncio.FIRST_COMPLETED)
            for t in (stop_wait, restart_wait):
                t.cancel()
            self._probe_task = probes
            if stopping.is_set() and not exited.done():
                exited.cancel()
                return  # the pod worker stops the process (readiness keeps being probed until then)
            probes.cancel()
            if not exited.done():  # liveness/startup failure: restart like the kubelet
                await self.stop(self.worker.grace_seconds(), run_prestop=True)
            else:
                exited.cancel()
            code = self.proc.returncode if self.proc.returncode is not None else -1
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # leftover children of the container
            self.state.ready = False
            self.state.last_state = {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": started_at,
                    "finishedAt": _now(),
                }
            }
            log.warning("exited", extra={"pod": self.worker.key, "container": self.state.name, "code": code})
            if stopping.is_set():
                return
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                self.state.state = self.state.last_state
                self.state.last_state = {}
                self.worker.publish()
                await stopping.wait()
                return
            if time.monotonic() - t_start > 2 * BACKOFF_MAX_S:
                backoff = BACKOFF_START_S  # ran long enough: forget earlier crashes
            self.state.restart_count += 1
            self.state.state = {
                "waiting": {"reason": "CrashLoopBackOff", "message": f"back-off {backoff:.0f}s"}
            }
            self.worker.publish()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)


class PodWorker:
    """One pod: wait for its IP, run its containers, publish status, terminate on deletion."""

    def __init__(self, runner: PodRunner, pod: Obj) -> None:
        self.runner = runner
        self.pod = pod
        md = pod["metadata"]
        self.key = f"{md['namespace']}/{md['name']}"
        self.uid: str = md["uid"]
        self.pod_dir: Path = runner.state_dir / "pods" / str(md["namespace"]) / str(md["name"])
        self.changed = asyncio.Event()
        self.gone = False  # the object is deleted from the API
        self.containers: list[ContainerRunner] = []
        self._publish_wanted = asyncio.Event()
        self._conditions: dict[str, Obj] = {}
        self._phase = "Pending"

    # -- events from the watch ---------------------------------------------------------------------------
    def update(self, pod: Obj) -> None:
        self.pod = pod
        self.changed.set()
        # Like the kubelet's status sync: someone else changed what we report (the node lifecycle
        # controller marks pods NotReady when a node misses heartbeats): report our view again.
        if self.containers and not self.terminating:
            conds = (pod.get("status") or {}).get("conditions") or []
            seen = next((c.get("status") for c in conds if c.get("type") == "Ready"), None)
            mine = "True" if all(c.state.ready for c in self.containers) else "False"
            if seen != mine:
                self.publish()

    def mark_gone(self) -> None:
        self.gone = True
        self.changed.set()

    @property
    def terminating(self) -> bool:
        return self.gone or bool(self.pod["metadata"].get("deletionTimestamp"))

    @property
    def pod_ip(self) -> str:
        return str((self.pod.get("status") or {}).get("podIP") or "")

    def grace_seconds(self) -> float:
        md, spec = self.pod["metadata"], self.pod["spec"]
        grace = md.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_S)
        return float(grace)

    async def _wait_changed(self) -> None:
        await self.changed.wait()
        self.changed.clear()

    # -- status ------------------------------------------------------------------------------------------
    def publish(self) -> None:
        self._publish_wanted.set()

    def _condition(self, ctype: str, ok: bool, reason: str = "") -> Obj:
        status = "True" if ok else "False"
        prev = self._conditions.get(ctype)
        if prev is None or prev["status"] != status:
            prev = {"type": ctype, "status": status, "lastTransitionTime": _now()}
            if reason and not ok:
                prev["reason"] = reason
            self._conditions[ctype] = prev
        return prev

    def status(self) -> Obj:
        cs = [c.state for c in self.containers]
        all_ready = bool(cs) and all(c.ready for c in cs)
        if any("running" in c.state for c in cs):
            self._phase = "Running"
        elif cs and all("terminated" in c.state for c in cs):
            codes = [c.state["terminated"].get("exitCode", 1) for c in cs]
            self._phase = "Succeeded" if all(x == 0 for x in codes) else "Failed"
        return {
            "phase": self._phase,
            "conditions": [
                self._condition("Ready", all_ready, "ContainersNotReady"),
                self._condition("ContainersReady", all_ready, "ContainersNotReady"),
            ],
            "containerStatuses": [c.status() for c in cs],
        }

    async def _status_publisher(self) -> None:
        while True:
            await self._publish_wanted.wait()
            self._publish_wanted.clear()
            if self.gone:
                continue
            try:
                await self.runner.api.patch_status(self.pod, self.status())
            except (ApiError, httpx.HTTPError) as exc:
                if isinstance(exc, ApiError) and exc.status in (404, 409):
                    continue  # deleted, or a new pod with the same name
                log.warning("status patch failed", extra={"pod": self.key, "err": str(exc)})
                await asyncio.sleep(0.5)
                self._publish_wanted.set()
            self.runner.targets_changed()

    # -- preparing the process environment -----------------------------------------------------------------
    async def _volumes(self) -> VolumeMap:
        vm = VolumeMap()
        spec, ns = self.pod["spec"], self.pod["metadata"]["namespace"]
        local: dict[str, str] = {}
        for vol in spec.get("volumes") or []:
            name = vol["name"]
            if "hostPath" in vol:
                local[name] = vol["hostPath"]["path"]
            elif "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                local[name] = str(self.runner.cache_dir / "pvc" / ns / claim)
            elif "configMap" in vol or "secret" in vol:
                local[name] = str(self.pod_dir / "volumes" / name)
                await self._write_config_volume(vol, Path(local[name]))
            else:  # emptyDir, downwardAPI, ephemeral ... : a fresh directory per pod
                local[name] = str(self.pod_dir / "volumes" / name)
            os.makedirs(local[name], exist_ok=True)
        for c in spec.get("containers") or []:
            for vmnt in c.get("volumeMounts") or []:
                if vmnt["name"] in local:
                    base = local[vmnt["name"]]
                    if vmnt.get("subPath"):
                        base = os.path.join(base, vmnt["subPath"])
                    vm.mounts.append((vmnt["mountPath"], base))
        vm.mounts.sort(key=lambda m: -len(m[0]))
        return vm

    async def _write_config_volume(self, vol: Obj, target: Path) -> None:
        ns = self.pod["metadata"]["namespace"]
        is_secret = "secret" in vol
        src = vol["secret"] if is_secret else vol["configMap"]
        name = src.get("secretName") if is_secret else src.get("name")
        kind = "secrets" if is_secret else "configmaps"
        try:
            obj = await self.runner.api.get(f"/api/v1/namespaces/{ns}/{kind}/{name}")
        except ApiError:
            return
        data: dict[str, bytes] = (
            {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            if is_secret
            else {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
        )
        os.makedirs(target, exist_ok=True)
        items = src.get("items")
        for key, value in data.items():
            rel = key
            if items is not None:
                match = [i for i in items if i["key"] == key]
                if not match:
                    continue
                rel = match[0]["path"]
            out = target / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(value)

    async def _ref_value(self, kind: str, ref: Obj) -> str | None:
        ns = self.pod["metadata"]["namespace"]
        try:
            obj = await self.runner.api.get(f"/api/v1/namespaces/{ns}/{kind}/{ref['name']}")
        except ApiError:
            return None
        raw = (obj.get("data") or {}).get(ref["key"])
        if raw is None:
            return None
        return base64.b64decode(raw).decode() if kind == "secrets" else str(raw)

    async def _service_account_kubeconfig(self) -> Path | None:
        """A kubeconfig with a token of the pod's service account (None when the pod mounts no token)."""
        md, spec = self.pod["metadata"], self.pod["spec"]
        sa = spec.get("serviceAccountName") or "default"
        cfg = self.runner.api.cfg
        fallback = cfg.path
        if spec.get("automountServiceAccountToken") is False:
            return None
        try:
            resp = await self.runner.api.request(
                "POST",
                f"/api/v1/namespaces/{md['namespace']}/serviceaccounts/{sa}/token",
                body={
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "spec": {
                        "expirationSeconds": 86400,
                        "boundObjectRef": {
                            "apiVersion": "v1",
                            "kind": "Pod",
                            "name": md["name"],
                            "uid": md["uid"],
                        },
                    },
                },
            )
            token = str(resp["status"]["token"])
        except (ApiError, KeyError, httpx.HTTPError) as exc:
            log.warning(
                "service account token unavailable; using the sandbox kubeconfig",
                extra={"pod": self.key, "err": str(exc)},
            )
            return fallback
        cluster: Obj = {"server": cfg.server}
        if cfg.ca_file:
            cluster["certificate-authority"] = cfg.ca_file
        if cfg.insecure:
            cluster["insecure-skip-tls-verify"] = True
        kc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "sandbox", "cluster": cluster}],
            "users": [{"name": sa, "user": {"token": token}}],
            "contexts": [
                {"name": "pod", "context": {"cluster": "sandbox", "user": sa, "namespace": md["namespace"]}}
            ],
            "current-context": "pod",
        }
        path = self.pod_dir / "kubeconfig"
        path.write_text(yaml.safe_dump(kc))
        path.chmod(0o600)
        return path

    async def _container_env(self, c: Obj, vm: VolumeMap, kubeconfig: Path | None) -> dict[str, str]:
        env: dict[str, str] = {
            k: v
            for k, v in os.environ.items()
            if k
            in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SHOAL_CACHE", "VIRTUAL_ENV", "HF_HOME", "TERM")
        }
        md = self.pod["metadata"]
        env.update(
            {
                "HOSTNAME": md["name"],
                "PYTHONUNBUFFERED": "1",
                POD_UID_ENV: self.uid,
            }
        )
        env.setdefault("SHOAL_CACHE", str(self.runner.cache_dir))
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        for src in c.get("envFrom") or []:
            prefix = src.get("prefix", "")
            for kind, key in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
                if key in src:
                    try:
                        obj = await self.runner.api.get(
                            f"/api/v1/namespaces/{md['namespace']}/{kind}/{src[key]['name']}"
                        )
                    except ApiError:
                        continue
                    for k, v in (obj.get("data") or {}).items():
                        env[prefix + k] = base64.b64decode(v).decode() if kind == "secrets" else str(v)
        for item in c.get("env") or []:
            name = item["name"]
            if "value" in item:
                env[name] = expand_vars(str(item["value"]), env)
                continue
            vf = item.get("valueFrom") or {}
            val: str | None = None
            if "fieldRef" in vf:
                val = _jsonpath_field(self.pod, vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                rf = vf["resourceFieldRef"]
                res = c.get("resources") or {}
                kind, _, rname = rf["resource"].partition(".")
                q = (res.get(kind) or {}).get(rname) or (res.get("limits") or {}).get(rname) or "0"
                divisor = _quantity_to_float(rf.get("divisor", "1")) or 1.0
                val = str(math.ceil(_quantity_to_float(q) / divisor))
            elif "secretKeyRef" in vf:
                val = await self._ref_value("secrets", vf["secretKeyRef"])
            elif "configMapKeyRef" in vf:
                val = await self._ref_value("configmaps", vf["configMapKeyRef"])
            if val is not None:
                env[name] = val
        return {k: bind_to_pod_ip(vm.rewrite(v), self.pod_ip) for k, v in env.items()}

    async def _router_discovery(self, raw: list[str], ip: str) -> list[str]:
        """:func:`endpointslice_workaround`, plus ``--selector`` from the Service when it is given by name,
        so the router does not need to read Services (which its Role, written for EndpointSlices, may not
        allow)."""
        out = endpointslice_workaround(raw, ip)
        if out == raw or "--service" not in out or any(a.startswith("--selector") for a in out):
            return out
        service = out[out.index("--service") + 1] if out.index("--service") + 1 < len(out) else ""
        ns = self.pod["metadata"]["namespace"]
        for _ in range(20):  # the operator creates the Service next to the Deployment: wait up to ~10 s
            try:
                svc = await self.runner.api.get(f"/api/v1/namespaces/{ns}/services/{service}")
            except ApiError:
                await asyncio.sleep(0.5)
                continue
            selector = (svc.get("spec") or {}).get("selector") or {}
            if selector:
                return [*out, "--selector", ",".join(f"{k}={v}" for k, v in sorted(selector.items()))]
            break
        return out

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        publisher = asyncio.create_task(self._status_publisher())
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pod worker failed", extra={"pod": self.key})
        finally:
            publisher.cancel()
            self.runner.workers.pop(self.uid, None)
            self.runner.tasks.pop(self.uid, None)
            self.runner.targets_changed()

    async def _run(self) -> None:
        while not self.pod_ip and not self.terminating:
            await self._wait_changed()
        if self.terminating:
            if not self.gone:
                await self.runner.api.delete_pod_now(self.pod)
            return
        ip = self.pod_ip
        lock = self.runner.ip_locks.setdefault(ip, asyncio.Lock())
        async with lock:  # a recycled IP waits until its previous process has exited
            self.pod_dir.mkdir(parents=True, exist_ok=True)
            vm = await self._volumes()
            kubeconfig = await self._service_account_kubeconfig()
            for c in self.pod["spec"].get("containers") or []:
                env = await self._container_env(c, vm, kubeconfig)
                raw = [expand_vars(str(a), env) for a in [*(c.get("command") or []), *(c.get("args") or [])]]
                raw = await self._router_discovery(raw, ip)
                argv = resolve_argv([bind_to_pod_ip(vm.rewrite(a), ip) for a in raw], self.runner.python)
                cwd = vm.rewrite(c["workingDir"]) if c.get("workingDir") else str(self.pod_dir)
                os.makedirs(cwd, exist_ok=True)
                self.containers.append(ContainerRunner(self, c, argv, env, cwd))
            stopping = asyncio.Event()
            tasks = [asyncio.create_task(cr.run(stopping)) for cr in self.containers]
            while not self.terminating:
                await self._wait_changed()
            stopping.set()
            log.info("terminating", extra={"pod": self.key, "grace_s": self.grace_seconds()})
            grace = self.grace_seconds()
            ts = self.pod["metadata"].get("deletionTimestamp")
            if ts and not self.gone:
                with contextlib.suppress(ValueError):
                    left = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() - time.time()
                    grace = max(0.0, min(grace, left))
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(cr.stop(grace) for cr in self.containers), return_exceptions=True)
            for cr in self.containers:
                cr.pid_path.unlink(missing_ok=True)
            log.info("stopped", extra={"pod": self.key})
        if not self.gone:
            await self.runner.api.delete_pod_now(self.pod)


# --------------------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------------------


class PodRunner:
    """Watches pods and runs the ones it owns (see the module docstring)."""

    def __init__(
        self,
        kubeconfig: Path,
        *,
        state_dir: Path | None = None,
        targets_file: Path | None = None,
        cache_dir: Path | None = None,
        python: str = sys.executable,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.state_dir = state_dir or default_state_dir()
        self.targets_file = targets_file if targets_file is not None else default_targets_file()
        self.cache_dir = cache_dir or default_cache_dir()
        self.python = python
        self.workers: dict[str, PodWorker] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.ip_locks: dict[str, asyncio.Lock] = {}
        self._targets_dirty = asyncio.Event()
        self.api: KubeAPI
        self.http: httpx.AsyncClient

    def targets_changed(self) -> None:
        self._targets_dirty.set()

    def _targets(self) -> list[Obj]:
        out: list[Obj] = []
        for w in self.workers.values():
            pod, md = w.pod, w.pod["metadata"]
            ann = md.get("annotations") or {}
            if ann.get("prometheus.io/scrape") != "true" or not w.pod_ip or w.terminating or not w.containers:
                continue
            labels = md.get("labels") or {}
            port = ann.get("prometheus.io/port") or next(
                (
                    str(p["containerPort"])
                    for c in pod["spec"].get("containers", [])
                    for p in c.get("ports") or []
                ),
                "80",
            )
            out.append(
                {
                    "targets": [f"{w.pod_ip}:{port}"],
                    "labels": {
                        "__metrics_path__": ann.get("prometheus.io/path", "/metrics"),
                        "namespace": md["namespace"],
                        "pod": md["name"],
                        "inferenceservice": labels.get(names.LABEL_ISVC, ""),
                        "component": labels.get(names.LABEL_COMPONENT, ""),
                        "job": "shoal-pods",
                    },
                }
            )
        return sorted(out, key=lambda t: t["targets"][0])

    async def _targets_writer(self) -> None:
        last = None
        while True:
            await self._targets_dirty.wait()
            self._targets_dirty.clear()
            text = json.dumps(self._targets(), indent=1)
            if text != last:
                self.targets_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.targets_file.with_suffix(".tmp")
                tmp.write_text(text)
                tmp.replace(self.targets_file)
                last = text

    def _on_event(self, ev: Obj) -> None:
        if ev["type"] == "LISTED":  # after a (re)list: pods deleted while we were not watching
            for uid in set(self.workers) - set(ev["uids"]):
                self.workers[uid].mark_gone()
            return
        pod = ev["object"]
        if not is_runner_pod(pod) or not pod.get("spec", {}).get("nodeName"):
            return
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if ev["type"] == "DELETED":
            if worker is not None:
                worker.update(pod)
                worker.mark_gone()
            return
        if worker is None:
            if pod["metadata"].get("deletionTimestamp") and not pod.get("status", {}).get("podIP"):
                return
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
            self.tasks[uid] = asyncio.get_running_loop().create_task(worker.run(), name=f"pod {worker.key}")
        else:
            worker.update(pod)
        self.targets_changed()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set (or cancelled); then stop every process, like a kubelet shutting down."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        kill_stale_processes(self.state_dir)
        cfg = load_kubeconfig(self.kubeconfig, self.state_dir / "kubeconfig-data")
        self.api = KubeAPI(cfg)
        self.http = httpx.AsyncClient()
        stop = stop or asyncio.Event()
        writer = asyncio.create_task(self._targets_writer())
        self.targets_changed()
        watcher = asyncio.create_task(self._watch_forever())
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([watcher, stopper], return_when=asyncio.FIRST_COMPLETED)
            exc = watcher.exception() if watcher.done() else None
            if exc is not None:
                raise exc
        finally:
            watcher.cancel()
            stopper.cancel()
            await self.shutdown()
            writer.cancel()
            await self.http.aclose()
            await self.api.aclose()

    async def _watch_forever(self) -> None:
        delay = 0.5
        while True:
            try:
                async for ev in self.api.watch("/api/v1/pods", {}):
                    self._on_event(ev)
                    delay = 0.5
            except (httpx.HTTPError, ApiError, OSError) as exc:
                log.warning("pod watch failed; retrying", extra={"err": str(exc), "retry_s": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def shutdown(self, grace_s: float = 5.0) -> None:
        """Stop all processes (pods stay in the API; as with a kubelet that stops)."""
        conts = [c for w in list(self.workers.values()) for c in w.containers]
        await asyncio.gather(*(c.stop(grace_s, run_prestop=False) for c in conts), return_exceptions=True)
        for c in conts:
            c.pid_path.unlink(missing_ok=True)
        for t in self.tasks.values():
            t.cancel()
        self.tasks.clear()
        self.workers.clear()
        if self.targets_file.exists():
            self.targets_file.write_text("[]")


def kill_stale_processes(state_dir: Path) -> int:
    """Kill process groups recorded by an earlier runner that did not stop cleanly; returns how many."""
    killed = 0
    for pid_file in (state_dir / "pods").glob("*/*/*.pid"):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text().strip())
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            if POD_UID_ENV.encode() in environ:
                os.killpg(pid, signal.SIGKILL)
                killed += 1
        pid_file.unlink(missing_ok=True)
    return killed


# --------------------------------------------------------------------------------------------------------
# Running it as a sandbox component
# --------------------------------------------------------------------------------------------------------


def spawn(
    kubeconfig: Path,
    *,
    state_dir: Path | None = None,
    targets_file: Path | None = None,
    log_file: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start the runner as a background process; the caller owns its lifetime (SIGTERM stops it cleanly)."""
    state = state_dir or default_state_dir()
    state.mkdir(parents=True, exist_ok=True)
    logf = (log_file or state / "podrunner.log").open("ab")
    argv = [
        sys.executable,
        "-m",
        "shoal_sandbox.podrunner",
        "--kubeconfig",
        str(kubeconfig),
        "--state-dir",
        str(state),
    ]
    if targets_file is not None:
        argv += ["--targets-file", str(targets_file)]
    try:
        return subprocess.Popen(
            argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    finally:
        logf.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shoal_sandbox.podrunner", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--kubeconfig", type=Path, default=None, help="default: $KUBECONFIG")
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--targets-file", type=Path, default=None, help="Prometheus file_sd output")
    parser.add_argument("--print-kwok-stages", action="store_true", help="print the kwok pod stages and exit")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--code-version", default="", help="informational (the sandbox restarts on change)")
    args = parser.parse_args(argv)
    if args.print_kwok_stages:
        sys.stdout.write(kwok_pod_stages_yaml())
        return 0
    if args.kubeconfig is None and os.environ.get("KUBECONFIG"):
        args.kubeconfig = Path(os.environ["KUBECONFIG"])
    if args.kubeconfig is None:
        parser.error("--kubeconfig (or KUBECONFIG) is required")
    from shoal_common.logging import configure_logging

    configure_logging(args.log_level)
    runner = PodRunner(args.kubeconfig, state_dir=args.state_dir, targets_file=args.targets_file)

    import fcntl

    # One runner per cluster, whatever its state dir: two would start every pod twice.
    lock_path = args.kubeconfig.resolve().parent / ".podrunner.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = lock_path.open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print(f"another pod runner holds {lock_path}; exiting", file=sys.stderr)
        return 3

    async def amain() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await runner.run(stop)

    asyncio.run(amain())
    return 0


if __name__ == "__main__":
    sys.exit(main())
