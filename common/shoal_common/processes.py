"""Child processes that shoal starts itself (sandbox tools, demo, tests, benchmarks): spawn with the output
in a log file, stop with SIGTERM then SIGKILL, both bounded in time.

A child started in a new session leads its own process group, so `stop` signals the whole group and also
reaches the grandchildren it started (vLLM's engine core, a shell's children); a child that shares its
parent's group gets the signal alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


def spawn(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    new_session: bool = True,
) -> subprocess.Popen[bytes]:
    """Starts `argv` with stdin closed and stdout and stderr appended to `log_path`; `env` None inherits ours."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=new_session,
        )


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)


def kill(proc: subprocess.Popen[bytes], wait: float = 10.0) -> None:
    """SIGKILL (the group when `proc` leads one) and reap it, waiting at most `wait` seconds."""
    if proc.poll() is None:
        _signal(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM (the group when `proc` leads one); SIGKILL when it has not exited after `timeout` seconds."""
    if proc.poll() is not None:
        return
    _signal(proc, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill(proc)


def log_tail(path: Path, chars: int = 6000) -> str:
    """The last `chars` characters of a child's log, or a note when there is none."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as e:
        return f"(no log at {path}: {e.strerror})"
