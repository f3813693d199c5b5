"""Who uses a sandbox (so one pytest session does not stop a sandbox another is using), and its lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from shoal_sandbox import procs
from shoal_sandbox.errors import SandboxError


def add(folder: Path, pid: int | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pid = pid or os.getpid()
    (folder / str(pid)).write_text(str(procs.start_time_of(pid) or 0))


def remove(folder: Path, pid: int | None = None) -> None:
    with contextlib.suppress(FileNotFoundError):
        (folder / str(pid or os.getpid())).unlink()


def others(folder: Path) -> list[int]:
    """Live users other than this process; entries of users that died without cleaning up go."""
    live = []
    for entry in folder.glob("*") if folder.is_dir() else []:
        with contextlib.suppress(ValueError, OSError):
            pid = int(entry.name)
            if pid != os.getpid() and procs.start_time_of(pid) == int(entry.read_text() or 0):
                live.append(pid)
                continue
            if pid != os.getpid():
                entry.unlink()
    return live


@contextlib.contextmanager
def exclusive(path: Path, timeout: float, log: Callable[[str], None]) -> Iterator[None]:
    """An exclusive flock on `path`, waited for at most `timeout` seconds (announced once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    raise SandboxError(f"could not lock {path} within {timeout:.0f}s") from exc
                if not announced:
                    log("waiting for another `shoal sandbox` command on this sandbox ...")
                    announced = True
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
