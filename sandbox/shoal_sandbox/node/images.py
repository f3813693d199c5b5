"""Imports OCI image archives into the node's containerd (namespace k8s.io, where the kubelet looks).

The node has no registry and cannot pull, so pods use these images with `imagePullPolicy: IfNotPresent`
under their real names. An archive already imported (same path, size and mtime) is skipped.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from shoal_sandbox.paths import cache_dir

NAMESPACE = "k8s.io"


class ImageImportError(RuntimeError):
    pass


def images_index() -> Path:
    """Written by the image builds: image name -> archive (and tag)."""
    return cache_dir() / "images" / "index.json"


def archives_from_index(data: Any, base: Path) -> list[Path]:
    """Archive paths from the index, tolerant of its two shapes: a mapping name -> entry, or a list of
    entries (optionally under "images"); an entry is a path or an object with "archive" (or "path")."""
    entries: Iterable[Any]
    if isinstance(data, dict) and "images" in data:
        data = data["images"]
    entries = data.values() if isinstance(data, dict) else data
    found = []
    for entry in entries:
        raw = entry if isinstance(entry, str) else (entry.get("archive") or entry.get("path"))
        if not isinstance(raw, str) or not raw:
            raise ImageImportError(f"{images_index()}: an entry names no archive: {entry!r}")
        path = Path(raw)
        found.append(path if path.is_absolute() else base / path)
    return found


def indexed_archives() -> list[Path]:
    index = images_index()
    if not index.is_file():
        return []
    try:
        data = json.loads(index.read_text())
    except ValueError as exc:
        raise ImageImportError(f"{index} is not JSON: {exc}") from exc
    return archives_from_index(data, index.parent)


def forget_imports(record: Path, archives: Iterable[Path]) -> None:
    """Drops these archives from the import record, so the next import really imports them."""
    if not record.is_file():
        return
    prefixes = tuple(f"{a.resolve()}:" for a in archives)
    kept = [line for line in record.read_text().splitlines() if line and not line.startswith(prefixes)]
    record.write_text("".join(f"{line}\n" for line in kept))


def archive_refs(archive: Path) -> list[str]:
    """The image names an OCI archive gives `ctr images import` (its index's name annotations)."""
    try:
        with tarfile.open(archive) as tar:
            member = tar.extractfile("index.json")
            index = json.loads(member.read()) if member is not None else {}
    except (OSError, KeyError, ValueError, tarfile.TarError):
        return []
    names = []
    for desc in index.get("manifests") or []:
        notes = desc.get("annotations") or {}
        name = notes.get("io.containerd.image.name") or notes.get("org.opencontainers.image.ref.name")
        if isinstance(name, str) and ("/" in name or ":" in name):
            names.append(name)
    return names


def lost_archives(archives: Iterable[Path], present: set[str]) -> list[Path]:
    """Archives whose images the store no longer holds (removed by hand, or by the kubelet's eviction
    manager under disk pressure, which reclaims unused images whatever the image-GC thresholds say)."""
    return [a for a in archives if any(ref not in present for ref in archive_refs(a))]


def _stamp(archive: Path) -> str:
    st = archive.stat()
    return f"{archive.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def import_images(
    archives: Iterable[Path], socket: Path, record: Path | None = None, timeout: float = 300.0
) -> list[Path]:
    """Imports each archive with `ctr images import`; returns the ones imported (not skipped)."""
    done: set[str] = set()
    if record is not None and record.is_file():
        done = set(record.read_text().splitlines())
    imported = []
    for archive in archives:
        if not archive.is_file():
            raise ImageImportError(f"image archive {archive} does not exist")
        stamp = _stamp(archive)
        if stamp in done:
            continue
        argv = ["ctr", "--address", str(socket), "--namespace", NAMESPACE, "images", "import", str(archive)]
        # Unpacking is disk-bound: a multi-GB image (model-server-cpu) takes minutes on a busy machine.
        limit = timeout + archive.stat().st_size / 5e6
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=limit, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ImageImportError(f"importing {archive} took longer than {limit:.0f}s") from exc
        if proc.returncode != 0:
            raise ImageImportError(f"importing {archive} failed: {proc.stderr.strip()[-1500:]}")
        imported.append(archive)
        done.add(stamp)
        if record is not None:
            record.write_text("\n".join(sorted(done)) + "\n")
    return imported


def indexed_refs() -> list[str]:
    index = images_index()
    if not index.is_file():
        return []
    data = json.loads(index.read_text())
    entries = data.values() if isinstance(data, dict) else []
    return [e["ref"] for e in entries if isinstance(e, dict) and isinstance(e.get("ref"), str)]


def remove_images(socket: Path, refs: list[str]) -> None:
    """Removes `refs`; `--sync` waits for containerd's garbage collection, so their layers are off the
    disk before the next import (it would otherwise run when containerd's scheduler next decides)."""
    if refs:
        argv = ["ctr", "--address", str(socket), "--namespace", NAMESPACE, "images", "rm", "--sync", *refs]
        subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def manifests(socket: Path) -> dict[str, str]:
    """Every image name in the store -> its manifest digest (`ctr images ls`)."""
    argv = ["ctr", "--address", str(socket), "--namespace", NAMESPACE, "images", "ls"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise ImageImportError(f"listing images failed: {proc.stderr.strip()[-800:]}")
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    return {row[0]: row[2] for row in rows if len(row) >= 3}


def config_digest(socket: Path, manifest: str) -> str:
    """The image ID (its config's digest) of a single-platform manifest."""
    argv = ["ctr", "--address", str(socket), "--namespace", NAMESPACE, "content", "get", manifest]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise ImageImportError(f"reading manifest {manifest} failed: {proc.stderr.strip()[-800:]}")
    digest: str = json.loads(proc.stdout)["config"]["digest"]
    return digest


def orphan_ids(named: dict[str, str], config_of: Callable[[str], str]) -> list[str]:
    """`sha256:<id>` names (CRI's image-ID aliases) that no named image has as its ID (pure but for
    `config_of`, which reads a manifest's config digest)."""
    ids = [name for name in named if name.startswith("sha256:")]
    if not ids:
        return []
    kept = {config_of(digest) for name, digest in named.items() if not name.startswith("sha256:")}
    return [name for name in ids if name not in kept]


def list_images(socket: Path) -> list[str]:
    argv = ["ctr", "--address", str(socket), "--namespace", NAMESPACE, "images", "ls", "-q"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise ImageImportError(f"listing images failed: {proc.stderr.strip()[-800:]}")
    return proc.stdout.split()
