"""Single-layer OCI image archives from local files, written without Docker or a registry.

Used for the node's pause image (a static C program) and for small test images. The archive is an OCI
image layout in a tar, named by the `io.containerd.image.name` annotation, which `ctr images import` uses.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from shoal_sandbox.paths import cache_dir

_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_CONFIG = "application/vnd.oci.image.config.v1+json"
_LAYER = "application/vnd.oci.image.layer.v1.tar"

PAUSE_C = r"""
/* The pod sandbox's init: holds the pod's namespaces, reaps orphans, exits on SIGTERM/SIGINT. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }

int main(void) {
    struct sigaction term = {0}, chld = {0};
    term.sa_handler = stop;
    chld.sa_handler = reap;
    chld.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGTERM, &term, 0);
    sigaction(SIGINT, &term, 0);
    sigaction(SIGCHLD, &chld, 0);
    for (;;) pause();
}
"""


def _tar_bytes(files: dict[str, Path]) -> bytes:
    """A reproducible layer: fixed owner, mode and mtime, so the same inputs give the same digest."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, src in sorted(files.items()):
            data = src.read_bytes()
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode, info.mtime, info.uid, info.gid = len(data), 0o755, 0, 0, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _blob(blobs: dict[str, bytes], data: bytes, media_type: str) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def write_archive(
    name: str, files: dict[str, Path], entrypoint: list[str], out: Path, user: str = "65534:65534"
) -> Path:
    """Writes an OCI archive for image `name` (repository:tag) holding `files` (path in image -> file)."""
    layer = _tar_bytes(files)
    blobs: dict[str, bytes] = {}
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "User": user, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": _MANIFEST,
        "config": _blob(blobs, json.dumps(config, sort_keys=True).encode(), _CONFIG),
        "layers": [_blob(blobs, layer, _LAYER)],
    }
    desc = _blob(blobs, json.dumps(manifest, sort_keys=True).encode(), _MANIFEST)
    desc["platform"] = {"architecture": "amd64", "os": "linux"}
    desc["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
    }
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [desc]}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        entries = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": json.dumps(index).encode()}
        entries |= {f"blobs/sha256/{d.split(':', 1)[1]}": data for d, data in blobs.items()}
        for path, data in entries.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)
    return out


def pause_archive(name: str) -> Path:
    """The pause image, built with `gcc -static` and cached by its source's hash."""
    digest = hashlib.sha256(PAUSE_C.encode()).hexdigest()[:12]
    out = cache_dir() / "node" / f"pause-{digest}.oci.tar"
    if out.is_file():
        return out
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError(
            "gcc is not on PATH: it builds the node's pause image (apt-get install gcc libc6-dev)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        src, binary = Path(tmp) / "pause.c", Path(tmp) / "pause"
        src.write_text(PAUSE_C)
        proc = subprocess.run(
            [gcc, "-static", "-Os", "-s", "-o", str(binary), str(src)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"building the pause image failed: {proc.stderr[-2000:]}")
        return write_archive(name, {"/pause": binary}, ["/pause"], out)
