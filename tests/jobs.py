"""Jobs as a user runs them, for the tests that fault them: ``jobs/<job>.py`` in a process of its own (its own
local Ray, its own process group), and a SIGKILL of its whole process tree at the test's moment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import psutil

from tests.conftest import REPO


def local_job_env() -> dict[str, str]:
    """This process's environment for a job that must start its own local Ray."""
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "disabled"}


def start_job(job: str, args: list[str], new_session: bool = True) -> subprocess.Popen:
    """``python jobs/<job>.py <args>``, its output captured; in a process group of its own (with its Ray)."""
    return subprocess.Popen([sys.executable, str(REPO / "jobs" / f"{job}.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=local_job_env(), start_new_session=new_session)


def kill_job_when(job: subprocess.Popen, reached: Callable[[], bool], what: str, timeout: float = 300) -> None:
    """SIGKILL the job's whole process tree (driver and its Ray, as when a machine goes away) once
    ``reached()``; the job must have reached it and still run then (``what`` says what). The tree is killed
    whatever happens, and gone when this returns: the raylet starts each worker in a process group of its
    own, so killing the job's group alone would leave workers that go on writing for a while."""
    try:
        deadline = time.monotonic() + timeout
        while not reached() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert job.poll() is None, f"the job ended before {what}: " + job.stdout.read()[-2000:]
        assert reached(), f"the job did not reach {what} within {timeout:g} s"
    finally:
        try:
            tree = psutil.Process(job.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        try:
            os.killpg(job.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for process in tree:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        job.wait()
        psutil.wait_procs(tree, timeout=30)
