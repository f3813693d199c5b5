"""Builds the control-plane binaries from the pinned Go modules into `$SHOAL_CACHE/bin/<name>-<version>`.

One Go module per tool (`sandbox/go/<module>/go.mod`) keeps their dependency graphs apart: kwok and etcd
pin client libraries that would otherwise be forced to Kubernetes' versions. A binary whose versioned
file exists is never rebuilt, so a second `shoal sandbox build` is a no-op.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shoal_sandbox.paths import bin_dir, cache_dir, go_dir


class BuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class Tool:
    """One Go module in `sandbox/go/<module>` and the commands built from it."""

    module: str  # folder under sandbox/go
    dependency: str  # the pinned module whose version keys the binaries
    commands: dict[str, str]  # binary name -> Go package path
    ldflags: tuple[str, ...] = ()  # extra -X flags; "{version}" is substituted

    def version(self) -> str:
        gomod = (go_dir() / self.module / "go.mod").read_text()
        match = re.search(rf"^\s*(?:require\s+)?{re.escape(self.dependency)}\s+(v\S+)", gomod, re.MULTILINE)
        if match is None:
            raise BuildError(f"{self.dependency} is not pinned in {go_dir() / self.module / 'go.mod'}")
        return match.group(1)


_K8S_VERSION_FLAGS = (
    "-X k8s.io/component-base/version.gitVersion={version}",
    "-X k8s.io/component-base/version.gitMajor={major}",
    "-X k8s.io/component-base/version.gitMinor={minor}",
    "-X k8s.io/component-base/version.gitTreeState=clean",
)

TOOLS: tuple[Tool, ...] = (
    Tool("etcd", "go.etcd.io/etcd/server/v3", {"etcd": "go.etcd.io/etcd/server/v3"}),
    Tool("kwok", "sigs.k8s.io/kwok", {"kwok": "sigs.k8s.io/kwok/cmd/kwok"}),
    Tool(
        "kubernetes",
        "k8s.io/kubernetes",
        {
            "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
            "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
            "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
        },
        _K8S_VERSION_FLAGS,
    ),
)


# The real node's binaries (`shoal sandbox build --node`, or `up --node real`); kept apart from TOOLS so
# a kwok-only sandbox never waits for them.
NODE_TOOLS: tuple[Tool, ...] = (
    Tool(
        "kubernetes",
        "k8s.io/kubernetes",
        {"kubelet": "k8s.io/kubernetes/cmd/kubelet", "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy"},
        _K8S_VERSION_FLAGS,
    ),
    Tool("coredns", "github.com/coredns/coredns", {"coredns": "github.com/coredns/coredns"}),
)


# Prometheus with Kubernetes service discovery (Debian's build has none), for the real node's pods.
PROMETHEUS_TOOLS: tuple[Tool, ...] = (
    Tool(
        "prometheus",
        "github.com/prometheus/prometheus",
        {"prometheus": "github.com/prometheus/prometheus/cmd/prometheus"},
    ),
)


def _tool_for(name: str) -> Tool:
    for tool in (*TOOLS, *NODE_TOOLS, *PROMETHEUS_TOOLS):
        if name in tool.commands:
            return tool
    raise KeyError(name)


def binary_path(name: str) -> Path:
    """Versioned path of a control-plane binary (it may not be built yet)."""
    tool = _tool_for(name)
    return bin_dir() / f"{name}-{tool.version()}"


def missing_binaries(tools: tuple[Tool, ...] = TOOLS) -> list[str]:
    return [name for tool in tools for name in tool.commands if not binary_path(name).is_file()]


def _build_tool(tool: Tool, log: Callable[[str], None]) -> None:
    version = tool.version()
    wanted = {name: pkg for name, pkg in tool.commands.items() if not binary_path(name).is_file()}
    if not wanted:
        log(f"  {tool.module} {version}: cached")
        return
    go = shutil.which("go")
    if go is None:
        raise BuildError("`go` is not on PATH (scripts/setup.sh installs it)")
    major, minor = version.lstrip("v").split(".")[:2]
    fields = {"version": version, "major": major, "minor": minor}
    ldflags = " ".join(("-s", "-w", *(flag.format(**fields) for flag in tool.ldflags)))
    env = dict(os.environ)
    # Static binaries: no C toolchain needed, and they run on any Linux of the same arch.
    env.setdefault("CGO_ENABLED", "0")
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -mod=mod").strip()
    log(f"  {tool.module} {version}: building {', '.join(wanted)} ...")
    t0 = time.monotonic()
    bin_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=bin_dir(), prefix=".build-") as tmp:
        cmd = [go, "build", "-trimpath", "-ldflags", ldflags, "-o", tmp + "/", *wanted.values()]
        proc = subprocess.run(cmd, cwd=go_dir() / tool.module, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"go build failed for {tool.module} {version}:\n{proc.stderr[-4000:]}")
        for name, pkg in wanted.items():
            built = Path(tmp) / pkg.rstrip("/").split("/")[-1]
            if pkg.endswith("/v3"):  # a module root: go names the binary after the last non-version element
                built = Path(tmp) / pkg.split("/")[-2]
            # rename is atomic, so a concurrent reader sees either no binary or the whole one.
            os.replace(built, binary_path(name))
    log(f"  {tool.module} {version}: built in {time.monotonic() - t0:.0f}s")


def build(log: Callable[[str], None] = print, tools: tuple[Tool, ...] = TOOLS) -> float:
    """Builds every missing binary of `tools`; returns seconds taken. Safe to run concurrently (file lock)."""
    t0 = time.monotonic()
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".sandbox-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for tool in tools:
            _build_tool(tool, log)
    return time.monotonic() - t0


if __name__ == "__main__":
    build()
    sys.exit(0)
