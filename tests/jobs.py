"""Jobs as a user runs them, for the tests that fault them: ``jobs/<job>.py`` in a process of its own (its own
local Ray, its own process group), and a SIGKILL of that whole group at the test's moment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from tests.conftest import REPO


def local_job_env() -> dict[str, str]:
    """This process's environment for a job that must start its own local Ray."""
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "disabled"}


def start_job(job: str, args: list[str], new_session: bool = True) -> subprocess.Popen:
    """``python jobs/<job>.py <args>``, its output captured; in a process group of its own (with its Ray)."""
    return subprocess.Popen([sys.executable, str(REPO / "jobs" / f"{job}.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=local_job_env(), start_new_session=new_session)


def kill_job_when(job: subprocess.Popen, reached: Callable[[], bool], what: str, timeout: float = 300) -> None:
    """SIGKILL the job's whole process group (driver and its Ray, as when a machine goes away) once
    ``reached()``; the job must have reached it and still run then (``what`` says what). The group is killed
    whatever happens."""
    try:
        deadline = time.monotonic() + timeout
        while not reached() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert job.poll() is None, f"the job ended before {what}: " + job.stdout.read()[-2000:]
        assert reached(), f"the job did not reach {what} within {timeout:g} s"
    finally:
        try:
            os.killpg(job.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        job.wait()
