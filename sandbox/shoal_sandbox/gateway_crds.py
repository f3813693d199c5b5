"""The Gateway API and Inference Extension CRDs, from their Go modules at pinned versions.

`go mod download -json MODULE@VERSION` fetches the module zip through the Go module proxy (the same path
the sandbox's binaries come from); the CRD YAML is read out of the zip's `config/crd/` and kept in
`$SHOAL_CACHE/crds/`. The sandbox installs them on every `up` (server-side apply, idempotent); the chart
carries a copy of the InferencePool CRD (`python -m shoal_sandbox.gateway_crds --chart` refreshes it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shoal_sandbox.kube import ApiError, SyncKube
from shoal_sandbox.paths import cache_dir


@dataclass(frozen=True)
class CrdModule:
    module: str
    version: str
    files: tuple[str, ...]  # paths inside the module


GAIE = CrdModule(
    "sigs.k8s.io/gateway-api-inference-extension",
    "v1.2.0",
    ("config/crd/bases/inference.networking.k8s.io_inferencepools.yaml",),
)
GATEWAY_API = CrdModule(
    "sigs.k8s.io/gateway-api",
    "v1.4.1",
    (
        "config/crd/standard/gateway.networking.k8s.io_gatewayclasses.yaml",
        "config/crd/standard/gateway.networking.k8s.io_gateways.yaml",
        "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml",
        "config/crd/standard/gateway.networking.k8s.io_referencegrants.yaml",
    ),
)
MODULES = (GAIE, GATEWAY_API)
CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "shoal" / "files" / "gateway-api"


class CrdFetchError(RuntimeError):
    pass


def _module_zip(mod: CrdModule) -> Path:
    with tempfile.TemporaryDirectory() as tmp:  # outside any go.mod, so no module context interferes
        proc = subprocess.run(
            ["go", "mod", "download", "-json", f"{mod.module}@{mod.version}"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "GO111MODULE": "on", "GOFLAGS": "-mod=mod"},
        )
    info: dict[str, Any] = json.loads(proc.stdout or "{}") if proc.stdout.strip() else {}
    if proc.returncode != 0 or info.get("Error") or not info.get("Zip"):
        raise CrdFetchError(
            f"go mod download {mod.module}@{mod.version} failed: {info.get('Error') or proc.stderr[-500:]}"
        )
    return Path(info["Zip"])


def fetch(mod: CrdModule, root: Path | None = None) -> list[Path]:
    """The module's CRD files in the cache, downloading the module once."""
    target = (root or cache_dir() / "crds") / f"{mod.module.replace('/', '_')}@{mod.version}"
    paths = [target / Path(f).name for f in mod.files]
    if all(p.is_file() for p in paths):
        return paths
    archive = _module_zip(mod)
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as z:
        for f, dest in zip(mod.files, paths, strict=True):
            try:
                data = z.read(f"{mod.module}@{mod.version}/{f}")
            except KeyError as exc:
                raise CrdFetchError(f"{f} is not in {mod.module}@{mod.version}") from exc
            tmp = dest.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(dest)
    return paths


def install(
    api: SyncKube, paths: list[Path], timeout: float = 60.0, log: Callable[[str], None] = print
) -> None:
    """Server-side apply each CRD with the sandbox admin client and wait until every one is Established."""
    names: list[str] = []
    for path in paths:
        doc = yaml.safe_load(path.read_text())
        name = doc["metadata"]["name"]
        try:
            api.apply(doc)
        except ApiError as exc:
            raise CrdFetchError(f"applying CRD {name} failed: {exc}") from exc
        names.append(name)
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            crd = api.get("CustomResourceDefinition", None, name) or {}
            conds = (crd.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conds):
                pending.discard(name)
        if pending:
            time.sleep(0.2)
    if pending:
        raise CrdFetchError(f"CRDs not Established within {timeout:g}s: {sorted(pending)}")
    log(f"  Gateway API CRDs installed ({len(names)}: {GAIE.module}@{GAIE.version}, {GATEWAY_API.version})")


def all_paths() -> list[Path]:
    return [p for mod in MODULES for p in fetch(mod)]


def write_chart_copy(dest: Path = CHART_DIR) -> list[Path]:
    """Copy the InferencePool CRD into the chart (installed when `gatewayAPI.installCRDs` is true)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for src in fetch(GAIE):
        target = dest / src.name
        target.write_bytes(src.read_bytes())
        out.append(target)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chart", action="store_true", help=f"refresh the chart's copy in {CHART_DIR}")
    args = parser.parse_args()
    paths = write_chart_copy() if args.chart else all_paths()
    for p in paths:
        print(p)


if __name__ == "__main__":
    main()
