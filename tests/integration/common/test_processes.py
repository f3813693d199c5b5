"""shoal_common.processes against real child processes: the log, a group stop that reaches grandchildren,
SIGKILL for a child that ignores SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from shoal_common import processes
from support.eventually import eventually


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes (its parent, not us, reaps it)
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] not in "ZX"


def test_output_goes_to_the_log_and_stop_is_prompt(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    code = "import time; print('hello', flush=True); time.sleep(60)"
    proc = processes.spawn([sys.executable, "-c", code], log)
    eventually(lambda: "hello" in processes.log_tail(log), timeout=20, desc="output in the log")
    started = time.monotonic()
    processes.stop(proc, timeout=10)
    assert proc.returncode == -signal.SIGTERM
    assert time.monotonic() - started < 5


def test_stop_reaches_the_grandchildren_of_a_session_leader(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time;"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    proc = processes.spawn([sys.executable, "-c", code], tmp_path / "parent.log")
    eventually(lambda: pid_file.exists() and pid_file.read_text(), timeout=20, desc="grandchild started")
    grandchild = int(pid_file.read_text())
    assert _alive(grandchild)
    processes.stop(proc, timeout=10)
    eventually(lambda: not _alive(grandchild), timeout=10, desc="grandchild gone")


def test_a_child_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    log = tmp_path / "stubborn.log"
    proc = processes.spawn([sys.executable, "-c", code], log, new_session=False)
    eventually(lambda: "ready" in processes.log_tail(log), timeout=20, desc="handler installed")
    processes.stop(proc, timeout=0.5)
    assert proc.returncode == -signal.SIGKILL


def test_log_tail_of_a_missing_log_says_so(tmp_path: Path) -> None:
    assert "no log" in processes.log_tail(tmp_path / "absent.log")
