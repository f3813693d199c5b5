"""The content hash of an image's inputs: its Dockerfile, every file it copies from the build context, its
build arguments and the base image's key. Equal inputs give an equal hash on any machine: file modes
other than the executable bit, times and owners are left out on purpose (builds do not depend on them).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from shoal_sandbox.images.spec import is_ignored

# Bump when the way images are built changes in a way the inputs below do not show.
RECIPE_VERSION = "1"


@dataclass(frozen=True)
class FileInput:
    relpath: str  # from the repository root, "/"-separated
    sha256: str
    executable: bool


def context_files(root: Path, sources: Iterable[str]) -> list[Path]:
    """Every file under the given context paths, minus ignored ones, sorted; a missing path is an error."""
    out: set[Path] = set()
    for src in sources:
        path = root / src
        if path.is_file():
            out.add(path)
            continue
        if not path.is_dir():
            raise FileNotFoundError(f"the Dockerfile copies {src!r}, which is not in {root}")
        for dirpath, dirnames, filenames in os.walk(path):
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            dirnames[:] = sorted(d for d in dirnames if not is_ignored(f"{rel_dir}/{d}"))
            out.update(Path(dirpath) / f for f in filenames if not is_ignored(f"{rel_dir}/{f}"))
    return sorted(out)


def file_input(root: Path, path: Path) -> FileInput:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return FileInput(path.relative_to(root).as_posix(), digest.hexdigest(), os.access(path, os.X_OK))


def inputs_digest(
    dockerfile: str, files: Iterable[FileInput], build_args: Mapping[str, str], base_key: str
) -> str:
    """sha256 over a canonical listing of the inputs (pure)."""
    h = hashlib.sha256()
    h.update(f"shoal-image-recipe {RECIPE_VERSION}\n".encode())
    h.update(f"base {base_key}\n".encode())
    for key in sorted(build_args):
        h.update(f"arg {key}={build_args[key]}\n".encode())
    h.update(b"dockerfile " + hashlib.sha256(dockerfile.encode()).hexdigest().encode() + b"\n")
    for f in sorted(files, key=lambda f: f.relpath):
        h.update(f"file {f.relpath} {f.sha256} {'x' if f.executable else '-'}\n".encode())
    return h.hexdigest()
