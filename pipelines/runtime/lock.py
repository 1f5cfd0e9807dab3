"""One run at a time per output: the exclusive lock a job's driver holds on its output while it runs.

Two runs writing one output at once (two people starting the same ingest, a job submitted again while
the first still runs) would interleave their manifests and shards: a stream written with two configs,
rows twice, a manifest one run saved over the other's. So ``jobs/ingest.py``, ``jobs/embed.py`` and
``jobs/pretrain.py`` take ``output_lock`` on their output root (the run directory for pretraining)
before they write anything, and a second run refuses at once with ``OutputInUse``, naming the output
and the run that holds it (exit 2: nothing was written, run it again once the first has ended).

What it guarantees:
- on a local disk, and on NFS v4 and other POSIX file systems with working ``flock``: one holder at
  a time. The lock is the kernel's (``fcntl.flock`` on ``<output>/_run.lock``): it goes with the
  process, so a driver that was killed never leaves the output locked, and a stale lock file is
  harmless. The file says who holds it (pid, host, job, start time, command), for the message.
  A file system that cannot lock (NFS mounted without a lock daemon: ENOLCK) refuses the run
  naming the lock file, rather than run unguarded.
- on object storage (``s3://``, ``gs://``, ...): nothing. Object stores have no locks and no
  create-if-absent in pyarrow's file systems, so two runs into one prefix are not detected; the job
  says so when it starts. Run one job per output prefix there (one RayJob per output).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

import pyarrow.fs as pafs

from pipelines.media.storage import OutputStore

LOCK_FILE = "_run.lock"  # '_'-prefixed: dataset readers skip it
HOLDER_WAIT_S = 2.0  # how long a refused run waits for the holder to write who it is
ANONYMOUS = "a run that has not said who it is yet"


class OutputInUse(RuntimeError):
    """Another run is writing this output now."""


class LockUnavailable(OutputInUse):
    """The output's file system cannot take the run lock, so a second run could not be told apart."""


@contextmanager
def output_lock(output: str, job: str) -> Iterator[None]:
    """Hold ``output``'s run lock for the ``with`` block (``OutputInUse`` when another run holds it)."""
    store = OutputStore(output)
    if not isinstance(store.fs, pafs.LocalFileSystem):
        print(f"{job}: warning: {output} is on object storage, where a second run into it at the same time is "
              "not detected; run one job per output", file=sys.stderr)
        yield
        return
    os.makedirs(store.path(), exist_ok=True)
    path = store.path(LOCK_FILE)
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(handle)
            raise OutputInUse(f"{output} is being written by another run ({holder}); wait until it ends, or "
                              "write to another output") from None
        except OSError as exc:  # e.g. NFS without a lock daemon (ENOLCK): no lock can be taken there
            raise LockUnavailable(f"{path}: cannot take the run lock ({exc.strerror or exc}); this file system cannot "
                              "tell whether another run writes the output: write to a local or lock-capable "
                              "one") from None
        try:  # who holds it, for the message of a run that finds it held (a full disk leaves it unsaid)
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "job": job,
                                     "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                     "command": " ".join(sys.argv)}))
            handle.flush()
        except OSError:
            pass
        yield
    finally:
        handle.close()  # releases the lock (as the process's end would)


def _read_holder(handle: TextIO, wait: float = HOLDER_WAIT_S) -> str:
    """The holder's description, waiting up to ``wait`` seconds for it: the holder writes it just after
    it takes the lock, so a run that lost a race by a moment would otherwise find the file still empty."""
    deadline = time.monotonic() + wait
    while True:
        handle.seek(0)
        holder = _describe(handle.read())
        if holder != ANONYMOUS or time.monotonic() >= deadline:
            return holder
        time.sleep(0.05)


def _describe(text: str) -> str:
    """The holder named by the lock file's record; ANONYMOUS when there is none yet, or when the record is
    a previous run's (its process, on this host, is gone: the holder has not replaced it yet)."""
    try:
        who = json.loads(text)
        described = f"{who['job']}, pid {who['pid']} on {who['host']}, since {who['started']}: {who['command']}"
        if who["host"] == socket.gethostname() and not _alive(int(who["pid"])):
            return ANONYMOUS
        return described
    except (ValueError, KeyError, TypeError):
        return ANONYMOUS


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
