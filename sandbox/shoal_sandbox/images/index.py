"""$SHOAL_CACHE/images/index.json: image name -> {archive, tag, ref, inputs}, read by whoever imports
the archives (a node's containerd, the image tests)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

INDEX_NAME = "index.json"


@dataclass(frozen=True)
class IndexEntry:
    archive: str  # absolute path of the OCI archive
    tag: str  # <project version>-<short inputs hash>
    ref: str  # repository:tag, the name the image has inside the archive and in the local store
    inputs: str  # the full inputs hash


def read_index(images_dir: Path) -> dict[str, IndexEntry]:
    path = images_dir / INDEX_NAME
    if not path.is_file():
        return {}
    raw: dict[str, Any] = json.loads(path.read_text())
    return {name: IndexEntry(**entry) for name, entry in raw.items()}


def merged(old: dict[str, IndexEntry], new: dict[str, IndexEntry]) -> dict[str, IndexEntry]:
    """Entries built now replace older ones; images not built this time keep their entry (pure)."""
    return {**old, **new}


def write_index(images_dir: Path, entries: dict[str, IndexEntry]) -> Path:
    path = images_dir / INDEX_NAME
    tmp = path.with_name(f".{INDEX_NAME}.{os.getpid()}")
    body = {name: asdict(entries[name]) for name in sorted(entries)}
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    tmp.replace(path)
    return path
