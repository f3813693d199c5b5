"""Builds the real autoscaling baselines (prometheus-adapter, KEDA) from the Go module proxy, pinned.

    python bench/baselines/build.py [prometheus-adapter|keda ...]     # default: both, one after the other
    python bench/baselines/build.py --plan                            # what is cached, what would be built

Each module is fetched with `go mod download` at its pinned version, copied out of the read-only module
cache into `$SHOAL_CACHE/baselines/src/<name>-<version>` and built there with `go build`, so its own go.mod
(its `replace` directives included, which `go install pkg@version` refuses) decides the dependency graph.
Binaries land in `$SHOAL_CACHE/bin/<binary>-<version>`; the manifests (CRDs, RBAC, APIService) are copied
from the same module zip into `$SHOAL_CACHE/baselines/<name>-<version>/manifests/`. A binary that exists is
never rebuilt. Builds run one at a time (file lock), under `nice -n 15`, with GOFLAGS=-mod=mod and
CGO_ENABLED=0 (static binaries, no C toolchain).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class BuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class Baseline:
    name: str
    module: str
    version: str
    commands: dict[str, str]  # binary name -> package path inside the module ("./cmd/adapter")
    manifests: tuple[str, ...]  # folders inside the module whose *.yaml files are copied
    ldflags: tuple[str, ...] = ()  # "-X" flags; "{version}" is substituted


# Pins: prometheus-adapter's module proxy listing is refused (403) but this exact release is served;
# KEDA v2.21.0 is the newest listed on 2026-11-28 and needs Go >= 1.26.0 (the machine has 1.26.8).
BASELINES: tuple[Baseline, ...] = (
    Baseline(
        name="prometheus-adapter",
        module="sigs.k8s.io/prometheus-adapter",
        version="v0.12.0",
        commands={"prometheus-adapter": "./cmd/adapter"},
        manifests=("deploy/manifests",),
    ),
    Baseline(
        name="keda",
        module="github.com/kedacore/keda/v2",
        version="v2.21.0",
        commands={"keda": "./cmd/operator", "keda-adapter": "./cmd/adapter"},
        manifests=("config/crd/bases", "config/rbac", "config/metrics-server", "config/manager"),
        ldflags=("-X=github.com/kedacore/keda/v2/version.Version={version}",),
    ),
)


def cache_dir() -> Path:
    return Path(os.environ.get("SHOAL_CACHE") or Path.home() / ".cache" / "shoal").expanduser()


def binary_path(baseline: Baseline, command: str) -> Path:
    return cache_dir() / "bin" / f"{command}-{baseline.version}"


def manifests_dir(baseline: Baseline) -> Path:
    return cache_dir() / "baselines" / f"{baseline.name}-{baseline.version}" / "manifests"


def missing(baseline: Baseline) -> list[str]:
    return [name for name in baseline.commands if not binary_path(baseline, name).is_file()]


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError("`go` is not on PATH (scripts/setup.sh installs it)")
    return go


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CGO_ENABLED", "0")
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -mod=mod").strip()
    return env


def download(baseline: Baseline) -> Path:
    """`go mod download` of the pinned module; returns its (read-only) folder in the module cache."""
    ref = f"{baseline.module}@{baseline.version}"
    cmd = [_go(), "mod", "download", "-json", ref]
    proc = subprocess.run(
        cmd, env=_go_env(), capture_output=True, text=True, timeout=900, cwd=tempfile.gettempdir()
    )
    try:
        info = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise BuildError(f"go mod download {ref} failed:\n{proc.stderr[-2000:]}") from exc
    if proc.returncode != 0 or "Error" in info or "Dir" not in info:
        raise BuildError(f"go mod download {ref} failed: {info.get('Error') or proc.stderr[-2000:]}")
    return Path(info["Dir"])


def _writable_copy(src: Path, dst: Path) -> Path:
    """The module cache is read-only, and -mod=mod may rewrite go.sum: build from a writable copy."""
    if not (dst / "go.mod").is_file():
        tmp = dst.with_name(dst.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, symlinks=True)
        for root, dirs, files in os.walk(tmp):
            for entry in (*dirs, *files):
                path = Path(root) / entry
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode | stat.S_IWUSR)
        tmp.chmod(tmp.stat().st_mode | stat.S_IWUSR)
        os.replace(tmp, dst)
    return dst


def copy_manifests(baseline: Baseline, source: Path) -> list[Path]:
    out = manifests_dir(baseline)
    out.mkdir(parents=True, exist_ok=True)
    copied = []
    for folder in baseline.manifests:
        for path in sorted((source / folder).glob("*.yaml")):
            target = out / f"{folder.replace('/', '_')}__{path.name}"
            shutil.copyfile(path, target)
            copied.append(target)
    return copied


def _go_build(baseline: Baseline, source: Path, name: str, log: Callable[[str], None]) -> float:
    ldflags = " ".join(("-s", "-w", *(flag.format(version=baseline.version) for flag in baseline.ldflags)))
    target = binary_path(baseline, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    cmd = ["nice", "-n", "15", _go(), "build", "-trimpath", "-ldflags", ldflags, "-o", str(tmp)]
    log(f"  {baseline.name} {baseline.version}: go build {baseline.commands[name]} -> {target}")
    t0 = time.monotonic()
    # Bounded: a build that hangs (proxy stall) is given up after 90 min rather than holding the lock.
    proc = subprocess.run(
        [*cmd, baseline.commands[name]],
        cwd=source,
        env=_go_env(),
        capture_output=True,
        text=True,
        timeout=5400,
    )
    if proc.returncode != 0:
        raise BuildError(f"go build {name} {baseline.version} failed:\n{proc.stderr[-4000:]}")
    os.replace(tmp, target)  # atomic: a reader sees no binary or the whole one
    seconds = time.monotonic() - t0
    log(f"  {baseline.name} {baseline.version}: {name} built in {seconds:.0f}s")
    return seconds


def build(baseline: Baseline, log: Callable[[str], None] = print) -> dict[str, float]:
    """Builds what is missing of one baseline and refreshes its manifests; returns seconds per binary."""
    module_dir = download(baseline)
    src_root = cache_dir() / "baselines" / "src"
    src_root.mkdir(parents=True, exist_ok=True)
    source = _writable_copy(module_dir, src_root / f"{baseline.name}-{baseline.version}")
    copied = copy_manifests(baseline, source)
    log(f"  {baseline.name} {baseline.version}: {len(copied)} manifests in {manifests_dir(baseline)}")
    times: dict[str, float] = {}
    with open(cache_dir() / ".baselines-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one Go build at a time on this machine
        for name in missing(baseline):
            times[name] = _go_build(baseline, source, name, log)
    if not times:
        log(f"  {baseline.name} {baseline.version}: cached")
    return times


def main(argv: list[str] | None = None) -> int:
    names = [b.name for b in BASELINES]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("baselines", nargs="*", metavar="|".join(names), help="default: all")
    parser.add_argument("--plan", action="store_true", help="say what is cached and what would be built")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.baselines) - set(names))
    if unknown:
        parser.error(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    chosen = [b for b in BASELINES if not args.baselines or b.name in args.baselines]
    if args.plan:
        for b in chosen:
            print(f"{b.name} {b.module}@{b.version}: missing {missing(b) or 'nothing'}")
        return 0
    for b in chosen:
        try:
            build(b)
        except (BuildError, subprocess.TimeoutExpired) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
