"""`shoal sandbox build|up|down|status|kubeconfig`. Cheap to import: the work is imported in handlers."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def _sandbox(args: argparse.Namespace) -> Any:
    from shoal_sandbox.nodes import GpuNodeSpec
    from shoal_sandbox.sandbox import Sandbox

    nodes = GpuNodeSpec(count=getattr(args, "nodes", 2), gpus=getattr(args, "gpus", 8))
    mode = getattr(args, "node", None)
    extra = {"node_mode": mode} if mode else {}  # else SHOAL_SANDBOX_NODE, else real
    sandbox = Sandbox(name=args.name, nodes=nodes, log=lambda line: print(line, flush=True), **extra)
    if not mode and not os.environ.get("SHOAL_SANDBOX_NODE"):
        # `status`, `down` and `import-images` follow the mode this sandbox was started in.
        sandbox.node_mode = sandbox.recorded_node_mode() or sandbox.node_mode
    return sandbox


def _build(args: argparse.Namespace) -> int:

    from shoal_sandbox.build import NODE_TOOLS, PROMETHEUS_TOOLS, TOOLS, BuildError, build

    real = getattr(args, "node", None) == "real" or os.environ.get("SHOAL_SANDBOX_NODE") == "real"
    with_node = real or getattr(args, "with_node", False)
    tools = (*TOOLS, *NODE_TOOLS, *PROMETHEUS_TOOLS) if with_node else TOOLS
    what = "control-plane and node binaries" if tools != TOOLS else "control-plane binaries"
    print(f"building {what} (cached by version) ...", flush=True)
    try:
        took = build(log=lambda line: print(line, flush=True), tools=tools)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{what} ready in {took:.1f}s", flush=True)
    return 0


def _up(args: argparse.Namespace) -> int:
    from shoal_sandbox.errors import SandboxError

    if args.build and _build(args) != 0:
        return 1
    try:
        _sandbox(args).up(timeout=args.timeout)
    except SandboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _down(args: argparse.Namespace) -> int:
    from shoal_sandbox.node import NodeError

    try:
        _sandbox(args).down(purge=args.purge)
    except NodeError as exc:  # the real node's host changes; the record stays for another `down`
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"sandbox {args.name!r} is down", flush=True)
    return 0


def _status(args: argparse.Namespace) -> int:
    sandbox = _sandbox(args)
    rows = sandbox.status()
    for row in rows:
        state = "healthy" if row.healthy else ("running" if row.running else "stopped")
        pid = str(row.pid) if row.pid and row.running else "-"
        print(f"{row.name:<24} {state:<8} pid={pid:<8} {row.detail}")
    up = all(r.healthy for r in rows)
    print(f"sandbox {args.name!r}: {'up' if up else 'not up'}; kubeconfig: {sandbox.kubeconfig_path}")
    return 0 if up else 1


def _kubeconfig(args: argparse.Namespace) -> int:
    print(_sandbox(args).kubeconfig_path)
    return 0


def _import_images(args: argparse.Namespace) -> int:
    from pathlib import Path

    from shoal_sandbox.node import NodeError

    node = _sandbox(args).real_node()
    if not node.owns_host():
        print(
            f"error: sandbox {args.name!r} runs no real node (`shoal sandbox up --node real`)",
            file=sys.stderr,
        )
        return 1
    try:
        done = node.import_images([Path(a) for a in args.archives])
    except NodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"imported {len(done)} archive(s); {len(args.archives) - len(done)} already there", flush=True)
    return 0


def _nodes(args: argparse.Namespace) -> int:
    """Creates the fake GPU nodes on any cluster (kind, cloud) where kwok runs in-cluster."""
    import shutil
    import subprocess

    import yaml

    from shoal_sandbox.nodes import GpuNodeSpec, gpu_node

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        print("error: kubectl is not on PATH", file=sys.stderr)
        return 1
    kubeconfig = args.kubeconfig or str(_sandbox(args).kubeconfig_path)
    spec = GpuNodeSpec(count=args.nodes, gpus=args.gpus)
    docs = "\n---\n".join(yaml.safe_dump(gpu_node(spec, i)) for i in range(spec.count))
    proc = subprocess.run(
        [kubectl, f"--kubeconfig={kubeconfig}", "apply", "-f", "-"], input=docs, text=True, check=False
    )
    return proc.returncode


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sandbox", help="the local Kubernetes control plane (etcd, apiserver, kwok)"
    )
    parser.set_defaults(handler=lambda _args: parser.print_help() or 2)
    commands = parser.add_subparsers(dest="sandbox_command", metavar="COMMAND")

    def add(name: str, help_text: str, handler: Any) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
        sub.add_argument(
            "--name",
            default=os.environ.get("SHOAL_SANDBOX_NAME", "default"),
            help="sandbox name (state in $SHOAL_CACHE/sandbox/NAME; default $SHOAL_SANDBOX_NAME or 'default', "
            "the same rule as the tests)",
        )
        sub.set_defaults(handler=handler)
        return sub

    build = add(
        "build", "build the pinned control-plane binaries into $SHOAL_CACHE/bin (no-op when cached)", _build
    )
    build.add_argument(
        "--node",
        dest="with_node",
        action="store_true",
        help="also the real node's kubelet, kube-proxy, CoreDNS, and Prometheus with kubernetes_sd",
    )
    up = add("up", "start the control plane and fake GPU nodes (no-op when already up)", _up)
    up.add_argument(
        "--node",
        choices=("kwok", "real"),
        help="kwok: fake nodes, pods run by the pod runner (default); real: a kubelet node with fake GPUs "
        "(needs root; docs/sandbox.md). Default: $SHOAL_SANDBOX_NODE, else real",
    )
    up.add_argument("--nodes", type=int, default=2, help="number of fake GPU nodes")
    up.add_argument("--gpus", type=int, default=8, help="nvidia.com/gpu per node")
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for health")
    up.add_argument("--build", action="store_true", help="build missing binaries first")
    down = add("down", "stop every process of the sandbox", _down)
    down.add_argument("--purge", action="store_true", help="also delete its state (certificates, etcd data)")
    status = add("status", "show each component (exit 1 when not up)", _status)
    status.add_argument("--node", choices=("kwok", "real"), help="as for `up`")
    add("kubeconfig", "print the kubeconfig path", _kubeconfig)
    images = add(
        "import-images",
        "import OCI image archives into the real node's containerd (namespace k8s.io)",
        _import_images,
    )
    images.add_argument("archives", nargs="+", help="OCI archives (e.g. from $SHOAL_CACHE/images/)")
    nodes = add(
        "nodes", "create the fake GPU nodes on a cluster (for kind/cloud clusters running kwok)", _nodes
    )
    nodes.add_argument("--kubeconfig", help="target cluster (default: this sandbox)")
    nodes.add_argument("--nodes", type=int, default=2, help="number of fake GPU nodes")
    nodes.add_argument("--gpus", type=int, default=8, help="nvidia.com/gpu per node")
