"""The real baselines, live, in a sandbox: the HPA controller through prometheus-adapter, then KEDA, each
scaling an InferenceService's /scale subresource on a replayed burst. One command; about 3 minutes.

    python bench/baselines/build.py            # first (cached): prometheus-adapter, keda, keda-adapter
    python bench/baselines/live_check.py       # exit 0 when both baselines read the metrics and scaled up

What runs: a kwok-mode sandbox of its own (`SHOAL_SANDBOX_NAME`, default `baselines`; its API server has
the API aggregation flags and front-proxy certificates of the sandbox itself), one sim model-server process with
#19's engine, a Prometheus scraping it with the labels the sandbox's relabelling gives
(namespace=bench, pod=sim-0, inferenceservice=sim), a pod `sim-0` on a kwok node standing for that replica
in the API, and an InferenceService `sim` with shoal's autoscaler off. The adapters run as processes on
127.0.0.1; the API server's aggregator reaches them through ExternalName Services (`localhost`), since
EndpointSlices may not hold loopback addresses. No shoal operator runs, so nothing starts more replicas:
the check is each baseline's decision (spec.replicas through /scale), read 5 s apart.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from build import BASELINES, binary_path, cache_dir, manifests_dir, missing  # noqa: E402

NS = "bench"
REPLAY = ["--replay", str(ROOT / "bench/traces/onoff.csv"), "--window", "60:100", "--drain-timeout", "30"]
# Both HPA metrics are External (the routers' queue is not the scale target's pods' series), so the
# adapter serves no custom.metrics: registering that API too leaves it unavailable (404), which breaks
# discovery, and namespace deletion with it, cluster-wide.
PROMETHEUS_ADAPTER_APIS = ["external.metrics.k8s.io/v1beta1"]
STALE_APIS = ["custom.metrics.k8s.io/v1beta2"]  # registered by earlier versions of this script
KEDA_APIS = ["external.metrics.k8s.io/v1beta1"]
KEDA_SERVICE = "keda-metrics-apiserver"
SIM = ["--sim-prefill-tokens-per-s", "20000", "--sim-decode-tokens-per-s", "60", "--sim-max-batch", "16"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sh(*cmd: str, stdin: str | None = None, check: bool = True, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=300, env=env, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}): {proc.stderr[-1500:]}")
    return proc.stdout


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    return sh("kubectl", *args, stdin=stdin, check=check)


@contextmanager
def sandbox(name: str) -> Iterator[Path]:
    """A kwok-mode sandbox of its own: its API server serves API aggregation (the front-proxy flags are the
    sandbox's own); the HPA sync period (15 s by default) goes through the controller-manager's args hook."""
    env = {
        **os.environ,
        "SHOAL_SANDBOX_NAME": name,
        "SHOAL_SANDBOX_KUBE_CONTROLLER_MANAGER_ARGS": "--horizontal-pod-autoscaler-sync-period=5s",
    }
    env.pop("SHOAL_SANDBOX_KUBE_APISERVER_ARGS", None)
    cli = [sys.executable, "-m", "shoal_cli", "sandbox"]
    # A clean cluster: `down` keeps etcd's data, and an HPA or ScaledObject left by a previous run would
    # make two HPAs on one target ("controlled by multiple HPAs").
    sh(*cli, "down", "--purge", env=env, check=False)
    sh(*cli, "up", "--node", "kwok", env=env)
    kubeconfig = Path(sh(*cli, "kubeconfig", env=env).strip())
    os.environ["KUBECONFIG"] = str(kubeconfig)
    try:
        yield kubeconfig
    finally:
        sh(*cli, "down", env=env, check=False)


class Procs:
    """Processes started here, stopped (by their own pid) on exit."""

    def __init__(self, work: Path) -> None:
        self.work, self.procs = work, list[subprocess.Popen[bytes]]()

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with (self.work / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
            )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_for(what: str, probe: Callable[[], object], within: float = 90.0, every: float = 2.0) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return str(value)
        time.sleep(every)
    raise RuntimeError(f"timed out after {within:g} s waiting for {what}")


def serve_metrics(procs: Procs, work: Path) -> tuple[str, str]:
    """The sim model-server and a Prometheus scraping it every second; returns (server URL, Prometheus URL)."""
    ms_port, prom_port = free_port(), free_port()
    server = [sys.executable, "-m", "shoal_cli", "model-server", "--engine", "sim", "--model", "sim", *SIM]
    server += ["--engine-arg", "max-model-len=8192", "--host", "127.0.0.1", "--port", str(ms_port)]
    procs.start("model-server", server)
    labels = {"namespace": NS, "pod": "sim-0", "inferenceservice": "sim"}
    target = {"targets": [f"127.0.0.1:{ms_port}"], "labels": labels}
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "sim", "static_configs": [target]}],
    }
    (work / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    shutil.rmtree(work / "tsdb", ignore_errors=True)
    prometheus = sorted((cache_dir() / "bin").glob("prometheus-v*"))[-1]
    procs.start("prometheus", [str(prometheus), f"--config.file={work / 'prometheus.yml'}",
                               f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"])  # fmt: skip
    return f"http://127.0.0.1:{ms_port}", f"http://127.0.0.1:{prom_port}"


def target_objects() -> None:
    """CRDs, the InferenceService (shoal's autoscaler off) with the selector of its one pod, and the pod."""
    kubectl("apply", "--server-side", "-f", str(ROOT / "charts/shoal/crds"))
    kubectl("wait", "--for=condition=established", "crd/inferenceservices.shoal.dev", "--timeout=60s")
    kubectl("create", "namespace", NS, check=False)
    node = kubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}")
    isvc = {"apiVersion": "shoal.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "sim", "namespace": NS},
            "spec": {"replicas": 1, "model": {"name": "sim", "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
                     "engine": {"kind": "sim"}, "autoscaling": {"enabled": False}}}  # fmt: skip
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "sim-0", "namespace": NS, "labels": {"shoal.dev/inferenceservice": "sim"}},
           "spec": {"nodeName": node, "tolerations": [{"operator": "Exists"}], "containers": [{"name": "sim", "image": "sim"}]}}  # fmt: skip
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": [isvc, pod]}))
    reset_replicas()


def reset_replicas() -> None:
    kubectl("patch", "infsvc", "-n", NS, "sim", "--type=merge", "-p", '{"spec":{"replicas":1}}')
    status = {"status": {"selector": "shoal.dev/inferenceservice=sim", "replicas": 1}}
    kubectl(
        "patch", "infsvc", "-n", NS, "sim", "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )


def register(service: str, port: int, versions: list[str]) -> None:
    """An ExternalName Service to the process on localhost, and the APIServices that point at it."""
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": service, "namespace": "monitoring"},
           "spec": {"type": "ExternalName", "externalName": "localhost", "ports": [{"name": "https", "port": port}]}}  # fmt: skip
    items = [svc]
    for gv in versions:
        group, version = gv.split("/")
        items.append({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                      "metadata": {"name": f"{version}.{group}"},
                      "spec": {"group": group, "version": version, "groupPriorityMinimum": 100, "versionPriority": 100,
                               "insecureSkipTLSVerify": True,
                               "service": {"name": service, "namespace": "monitoring", "port": port}}})  # fmt: skip
    kubectl("create", "namespace", "monitoring", check=False)
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    for gv in versions:
        group, version = gv.split("/")
        kubectl("wait", "--for=condition=Available", f"apiservice/{version}.{group}", "--timeout=90s")


def replay_and_watch(server: str, hpa: str, label: str) -> dict[str, object]:
    """Replays the burst and polls the HPA until it asks for more than one replica (bounded)."""
    load = subprocess.Popen(
        [sys.executable, "-m", "shoal_cli", "batch", "load", *REPLAY, "--endpoint", server, "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    t0, decided, seen = time.monotonic(), None, [0.0]
    try:
        for _ in range(30):
            time.sleep(2)
            doc = json.loads(kubectl("get", "hpa", "-n", NS, hpa, "-o", "json"))
            status = doc.get("status", {})
            seen = [_value(m) for m in status.get("currentMetrics") or []] or seen
            if status.get("desiredReplicas", 1) > 1:
                decided = round(time.monotonic() - t0, 1)
                break
    finally:
        out, _ = load.communicate(timeout=180)
    replicas = kubectl("get", "infsvc", "-n", NS, "sim", "-o", "jsonpath={.spec.replicas}")
    print(f"{label}: spec.replicas {replicas}; desired > 1 at {decided} s after the replay started, "
          f"reading the metrics as {seen} (queue per replica, TTFT p95 s)")  # fmt: skip
    print(
        "  " + "\n  ".join(line for line in out.splitlines() if line.startswith(("items", "ttft", "errors")))
    )
    return {"decided_s": decided, "replicas": int(replicas or 0)}


def _value(metric: dict[str, object]) -> float:
    for kind in ("pods", "external"):
        block = metric.get(kind)
        if isinstance(block, dict):
            current = block.get("current", {})
            raw = str(current.get("averageValue") or current.get("value") or "0")
            return float(raw[:-1]) / 1000 if raw.endswith("m") else float(raw)
    return 0.0


def _kube_flags(kubeconfig: Path) -> list[str]:
    return [f"--{kind}-kubeconfig={kubeconfig}" for kind in ("lister", "authentication", "authorization")]


def _condition(kind: str, name: str, ctype: str, field: str = "status") -> str:
    path = f"jsonpath={{.status.conditions[?(@.type=='{ctype}')].{field}}}"
    return kubectl("get", kind, "-n", NS, name, "-o", path, check=False)


def start_prometheus_adapter(procs: Procs, work: Path, kubeconfig: Path, prometheus: str) -> int:
    """prometheus-adapter as a process on 127.0.0.1 with the committed rules; returns its secure port."""
    port = free_port()
    adapter = [
        str(binary_path(BASELINES[0], "prometheus-adapter")),
        f"--secure-port={port}",
        "--bind-address=127.0.0.1",
    ]
    adapter += [
        f"--cert-dir={work / 'adapter-certs'}",
        *_kube_flags(kubeconfig),
        f"--prometheus-url={prometheus}",
    ]
    adapter += ["--metrics-relist-interval=15s", f"--config={HERE / 'prometheus-adapter-config.yaml'}"]
    procs.start("prometheus-adapter", adapter)
    return port


def hpa_phase(procs: Procs, work: Path, kubeconfig: Path, server: str, prometheus: str) -> dict[str, object]:
    """prometheus-adapter behind custom.metrics and external.metrics; the HPA of bench/baselines/hpa.yaml."""
    port = start_prometheus_adapter(procs, work, kubeconfig, prometheus)
    register("prometheus-adapter", port, PROMETHEUS_ADAPTER_APIS)
    kubectl("apply", "-f", str(HERE / "hpa.yaml"))
    wait_for(
        "the HPA to read the adapter's metrics", lambda: _condition("hpa", "sim", "ScalingActive") == "True"
    )
    result = replay_and_watch(server, "sim", "HPA + prometheus-adapter")
    kubectl("delete", "hpa", "-n", NS, "sim")
    kubectl("delete", "apiservice", "v1beta1.external.metrics.k8s.io")  # KEDA serves it next
    return result


def _keda_certs(certs: Path) -> None:
    """The operator's cert rotation writes secret keda/kedaorg-certs; in a pod it is mounted at /certs."""
    raw = wait_for(
        "KEDA's certificates",
        lambda: kubectl("get", "secret", "-n", "keda", "kedaorg-certs", "-o", "json", check=False),
    )
    data = json.loads(raw)["data"]
    certs.mkdir(parents=True, exist_ok=True)
    for key in ("ca.crt", "tls.crt", "tls.key"):
        (certs / key).write_bytes(base64.b64decode(data[key]))


def start_keda(procs: Procs, work: Path, kubeconfig: Path) -> int:
    """KEDA's CRDs, its operator (restarted once its certificates exist) and its metrics adapter, as
    processes on 127.0.0.1; returns the adapter's secure port."""
    crds = sorted(manifests_dir(BASELINES[1]).glob("config_crd_bases__*.yaml"))
    kubectl("apply", "--server-side", *(f"--filename={p}" for p in crds))
    kubectl("create", "namespace", "keda", check=False)
    env = {"WATCH_NAMESPACE": "", "POD_NAMESPACE": "keda", "KEDA_CLUSTER_OBJECT_NAMESPACE": "keda"}
    certs, grpc = work / "keda-certs", free_port()
    operator = [str(binary_path(BASELINES[1], "keda")), f"--kubeconfig={kubeconfig}", "--leader-elect=false"]
    operator += [
        f"--metrics-bind-address=127.0.0.1:{free_port()}",
        f"--health-probe-bind-address=127.0.0.1:{free_port()}",
    ]
    operator += [
        f"--metrics-service-bind-address=127.0.0.1:{grpc}",
        "--enable-cert-rotation=true",
        f"--cert-dir={certs}",
    ]
    first = procs.start("keda-first-start", operator, env)
    _keda_certs(certs)
    try:  # it exits once it has (re)written its certificates, "so pod can be restarted"
        first.wait(20)
    except subprocess.TimeoutExpired:  # the secret was already current: restart it anyway, so that its
        first.terminate()  # gRPC server loads the certificates now in --cert-dir
        try:
            first.wait(30)
        except subprocess.TimeoutExpired:  # a slow graceful stop on a busy machine
            first.kill()
            first.wait(10)
    # With rotation on, its cert rotator keeps trying to inject a CA into the APIService (which is
    # insecureSkipTLSVerify here) and the admission webhook (not installed), and after ~13 minutes of
    # retries it stops the whole manager: seen in a 50-minute benchmark. The certificates are in place.
    steady = [a for a in operator if not a.startswith("--enable-cert-rotation")] + [
        "--enable-cert-rotation=false"
    ]
    procs.start("keda", steady, env)
    port = free_port()
    adapter = [
        str(binary_path(BASELINES[1], "keda-adapter")),
        f"--kubeconfig={kubeconfig}",
        *_kube_flags(kubeconfig),
    ]
    adapter += [
        f"--secure-port={port}",
        "--bind-address=127.0.0.1",
        f"--port={free_port()}",
        "--profiling=false",
    ]
    adapter += [
        f"--cert-dir={certs}",
        f"--tls-cert-file={certs / 'tls.crt'}",
        f"--tls-private-key-file={certs / 'tls.key'}",
    ]
    adapter += [
        f"--metrics-service-address=127.0.0.1:{grpc}",
        "--metrics-service-grpc-authority=keda-operator.keda.svc.cluster.local",
    ]
    procs.start("keda-adapter", adapter, env)
    return port


def keda_phase(procs: Procs, work: Path, kubeconfig: Path, server: str, prometheus: str) -> dict[str, object]:
    """KEDA's operator and metrics adapter behind external.metrics; bench/baselines/scaledobject.yaml."""
    port = start_keda(procs, work, kubeconfig)
    register(KEDA_SERVICE, port, KEDA_APIS)
    scaled = (HERE / "scaledobject.yaml").read_text().replace("http://127.0.0.1:9090", prometheus)
    kubectl("apply", "-f", "-", stdin=scaled)
    wait_for("the ScaledObject to be Ready", lambda: _condition("scaledobject", "sim", "Ready") == "True")
    wait_for(
        "KEDA's HPA to read the metrics", lambda: _condition("hpa", "keda-hpa-sim", "ScalingActive") == "True"
    )
    return replay_and_watch(server, "keda-hpa-sim", "KEDA")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--name", default=os.environ.get("SHOAL_SANDBOX_NAME") or "baselines", help="sandbox name"
    )
    args = ap.parse_args(argv)
    todo = [name for b in BASELINES for name in missing(b)]
    if todo:
        print(f"not built: {', '.join(todo)}; run python bench/baselines/build.py first", file=sys.stderr)
        return 2
    work = cache_dir() / "baselines" / f"live-check-{args.name}"
    work.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        kubeconfig = stack.enter_context(sandbox(args.name))
        procs = Procs(work)
        stack.callback(procs.stop)
        server, prometheus = serve_metrics(procs, work)
        target_objects()
        hpa = hpa_phase(procs, work, kubeconfig, server, prometheus)
        time.sleep(65)  # TTFT p95 is over 1 m: the first burst leaves the window before KEDA reads it
        reset_replicas()
        keda = keda_phase(procs, work, kubeconfig, server, prometheus)
    print(json.dumps({"hpa": hpa, "keda": keda, "logs": str(work)}))
    return 0 if hpa["decided_s"] is not None and keda["decided_s"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
