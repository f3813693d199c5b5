"""The output JSONL: resume state on open, one whole line per write afterwards.

Every record is serialised first and written with a single ``os.write`` on an ``O_APPEND`` descriptor:
nothing sits in a user-space buffer, so killing the process (even SIGKILL) loses at most the requests
still in flight, never half a line. A truncated last line left by an older crash (power loss, full disk)
is cut off when the file is opened again, and that id is simply run again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal_batch.inputs import id_key


@dataclass(slots=True)
class ExistingOutput:
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # id key -> last record
    repaired_bytes: int = 0  # bytes of a truncated trailing line that were cut off
    bad_lines: int = 0  # complete lines that were not JSON objects with an id (ignored)


def _repair_tail(path: Path) -> int:
    """Cut a trailing partial line (no final newline). Returns the number of bytes removed."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        # scan backwards in blocks for the previous newline
        pos = size
        block = 65536
        keep = 0
        while pos > 0:
            start = max(0, pos - block)
            handle.seek(start)
            chunk = handle.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                break
            pos = start
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
        return size - keep


def load_existing(path: str | Path, *, repair: bool = True) -> ExistingOutput:
    """Read a previous run's output (if any), cutting a truncated last line when ``repair``."""
    path = Path(path)
    result = ExistingOutput()
    if not path.exists():
        return result
    if repair:
        result.repaired_bytes = _repair_tail(path)
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):  # only possible without repair
                break
            try:
                obj = json.loads(raw)
            except ValueError:
                result.bad_lines += 1
                continue
            if not isinstance(obj, dict) or "id" not in obj:
                result.bad_lines += 1
                continue
            result.records[id_key(obj["id"])] = obj
    return result


def is_done(record: dict[str, Any]) -> bool:
    return not record.get("error")


def rewrite(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Atomically replace ``path`` with ``records`` (temp file + fsync + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as handle:
        for record in records:
            handle.write(encode(record))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def encode(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


class ResultWriter:
    """Appends one record per call as one ``write(2)``; ``fsync`` optional (power-loss safety)."""

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._fsync = fsync
        self.written = 0

    def write(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            raise ValueError("writer is closed")
        data = encode(record)
        view = memoryview(data)
        while view:  # a regular file takes the whole write; loop anyway for correctness
            n = os.write(self._fd, view)
            view = view[n:]
        if self._fsync:
            os.fsync(self._fd)
        self.written += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
