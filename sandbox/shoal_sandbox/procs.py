"""Detached child processes whose identity survives the CLI: pid + start time, recorded in a JSON file.

Recording the kernel start time with the pid means a recycled pid is never mistaken for our process,
so `down` never signals a stranger.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcRecord:
    pid: int
    start_time: int  # clock ticks since boot (/proc/<pid>/stat field 22)
    argv: list[str]
    log: str


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; everything after the last ')' is fixed-format.
    return raw[raw.rindex(")") + 2 :].split()


def start_time_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_alive(rec: ProcRecord) -> bool:
    fields = _stat_fields(rec.pid)
    if fields is None or fields[0] in ("Z", "X"):
        _reap(rec.pid)
        return False
    return int(fields[19]) == rec.start_time


def _reap(pid: int) -> None:
    """Collects the exit status if the process is our child (the pytest fixture), so it leaves no zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def spawn(argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> ProcRecord:
    """Starts `argv` in a new session (its own process group), so it outlives the caller and its terminal."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=dict(env) if env is not None else None,
        )
    st = start_time_of(proc.pid)
    # Popen succeeded, so /proc/<pid> existed a moment ago; 0 only if it already died and was reaped.
    return ProcRecord(pid=proc.pid, start_time=st or 0, argv=list(argv), log=str(log_path))


def save(rec: ProcRecord, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(rec)))
    os.replace(tmp, path)


def load(path: Path) -> ProcRecord | None:
    try:
        data = json.loads(path.read_text())
        return ProcRecord(
            pid=int(data["pid"]), start_time=int(data["start_time"]), argv=data["argv"], log=data["log"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running(path: Path) -> ProcRecord | None:
    """The record saved at `path` when its process is still alive; None otherwise."""
    rec = load(path)
    return rec if rec is not None and is_alive(rec) else None


def stop(rec: ProcRecord, timeout: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `timeout` seconds."""
    if not is_alive(rec):
        return
    # The child leads its own session, so its pgid is its pid; this also reaches its children.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(rec.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(rec):
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(rec.pid, signal.SIGKILL)  # stragglers in the group even when the leader exited
    deadline = time.monotonic() + 5.0
    while is_alive(rec) and time.monotonic() < deadline:
        time.sleep(0.05)


def log_tail(path: str | Path, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
