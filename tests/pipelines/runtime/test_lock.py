"""One run at a time per output: two real ingest jobs started at once into one output, and a lock held by
another process (then killed) in front of ingest, scoring and pretraining."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from pipelines.ingest.clips_dataset import read_stream
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.job import run_ingest
from pipelines.runtime.lock import HOLDER_WAIT_S, LOCK_FILE, LockUnavailable, OutputInUse, output_lock
from tests.conftest import REPO
from tests.jobs import start_job
from tests.media import Pattern, write_pattern
from tests.models import tiny_checkpoint

HOLD = """
import sys, time
sys.path.insert(0, {repo!r})
from pipelines.runtime.lock import output_lock
with output_lock({output!r}, "holder"):
    print("held", flush=True)
    time.sleep(600)
"""


def hold(output) -> subprocess.Popen:
    """Another process holding ``output``'s lock (until it is killed)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD.format(repo=str(REPO), output=str(output))],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_held_lock_refuses_a_second_run_and_goes_with_the_killed_holder(tmp_path):
    holder = hold(tmp_path / "out")
    try:
        with pytest.raises(OutputInUse, match=rf"{tmp_path / 'out'} is being written by another run \(holder, "
                                              rf"pid {holder.pid} "):
            with output_lock(str(tmp_path / "out"), "ingest"):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with output_lock(str(tmp_path / "out"), "ingest"):  # a killed holder leaves nothing locked
        assert json.loads((tmp_path / "out" / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_run_that_loses_the_race_by_a_moment_still_names_the_holder(tmp_path):
    """The holder writes who it is just after it takes the lock: a run refused in between waits for it
    (up to HOLDER_WAIT_S), and one that never says is described as such, without waiting longer. The
    record a previous run left (its process gone) is not taken for the holder's."""
    output = tmp_path / "out"
    output.mkdir()
    gone = subprocess.Popen(["true"])  # a pid that was a process and is no more
    gone.wait()
    (output / LOCK_FILE).write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(), "job": "ingest",
                                                "started": "earlier", "command": "ingest.py"}))
    with open(output / LOCK_FILE, "a+") as silent:
        fcntl.flock(silent, fcntl.LOCK_EX | fcntl.LOCK_NB)  # taken; only the previous run's record in it
        began = time.monotonic()
        with pytest.raises(OutputInUse, match="a run that has not said who it is yet"):
            with output_lock(str(output), "ingest"):
                pass
        assert HOLDER_WAIT_S <= time.monotonic() - began < HOLDER_WAIT_S + 5
        says = threading.Timer(0.5, lambda: (silent.truncate(0), silent.write(json.dumps(
            {"pid": 4321, "host": "cam-host", "job": "embed", "started": "then", "command": "embed.py"})),
            silent.flush()))
        says.start()
        try:
            with pytest.raises(OutputInUse, match=r"another run \(embed, pid 4321 on cam-host, since then: embed.py\)"):
                with output_lock(str(output), "ingest"):
                    pass
        finally:
            says.join()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, ray_local):
    """A video, its clips (real ingest) and a tiny random-init checkpoint: what the jobs accept."""
    root = tmp_path_factory.mktemp("lock")
    video = write_pattern(root / "cam0.mp4", Pattern(seconds=6))
    assert run_ingest([str(video)], str(root / "clips"), IngestConfig(crop_size=32), show_progress=False).ok
    return {"video": video, "clips": root / "clips", "checkpoint": tiny_checkpoint(root / "run", root / "clips")}


@pytest.mark.slow
@pytest.mark.parametrize("job", ["ingest", "embed", "pretrain"])
def test_every_writing_job_refuses_an_output_another_run_holds(job, inputs, tmp_path, capsys):
    sys.path.insert(0, str(REPO / "jobs"))
    module = __import__(job)
    output = tmp_path / "out"
    argv = {"ingest": ["--input", str(inputs["video"]), "--output", str(output), "--crop-size", "32"],
            "embed": ["--checkpoint", str(inputs["checkpoint"]), "--clips", str(inputs["clips"]), "--output",
                      str(output)],
            "pretrain": ["--clips", str(inputs["clips"]), "--run-dir", str(output), "--preset", "tiny",
                         "--batch-size", "4"]}[job]
    holder = hold(output)
    try:
        assert module.main([*argv, "--quiet"] if job != "pretrain" else argv) == 2
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert f"{output} is being written by another run (holder, pid {holder.pid}" in capsys.readouterr().err
    assert sorted(p.name for p in output.iterdir()) == [LOCK_FILE]  # nothing written


@pytest.mark.slow
def test_two_runs_started_at_once_into_one_output(tmp_path, ray_local):
    """Two ingest jobs (each with its own local Ray) started together, overlapping inputs, one output: one
    runs, the other refuses (exit 2) naming the run that holds the output; the output is that of one run
    (complete manifests, every second once), and a rerun of everything skips what that run wrote. (The race
    is the lock's, the same for every job; that scoring and pretraining take it before they write anything
    is the test above.)"""
    videos = [write_pattern(tmp_path / f"cam{k}.mp4", Pattern(seconds=8)) for k in range(3)]
    output = tmp_path / "out"

    def start(videos) -> subprocess.Popen:
        return start_job("ingest", ["--quiet", "--output", str(output), "--crop-size", "32", "--input",
                                    *map(str, videos)], new_session=False)

    jobs = [start(videos[:2]), start(videos[1:])]
    began = time.monotonic()
    codes = [process.wait(timeout=300) for process in jobs]
    outputs = [process.stdout.read() for process in jobs]
    assert sorted(codes) == [0, 2], outputs
    refused = outputs[codes.index(2)]
    assert f"{output} is being written by another run (ingest, pid {jobs[codes.index(0)].pid}" in refused, refused
    assert time.monotonic() - began < 300
    written = {p.name.split("=", 1)[1] for p in output.glob("stream_id=*")}
    assert written == {v.stem for v in (videos[:2] if codes[0] == 0 else videos[1:])}
    for stream in written:
        manifest = json.loads((output / f"stream_id={stream}" / "manifest.json").read_text())
        assert manifest["status"] == "complete"
        t = read_stream(str(output), stream).column("t").to_pylist()
        assert sorted(t) == list(range(8)) == sorted(set(t))
    assert not list(output.rglob(".tmp-*")) and not list(output.glob("_staging/*"))
    again = run_ingest(list(map(str, videos)), str(output), IngestConfig(crop_size=32), show_progress=False)
    assert again.ok and {s.status for s in again.streams} == {"complete", "skipped"}, again.format()


def test_a_file_system_that_cannot_lock_refuses_the_run_naming_the_lock_file(tmp_path, monkeypatch):
    """NFS mounted without a lock daemon answers flock with ENOLCK: the run refuses, naming the file."""
    import errno
    import fcntl

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(LockUnavailable, match=rf"{tmp_path / 'out' / LOCK_FILE}: cannot take the run lock "
                                              r"\(No locks available\)"):
        with output_lock(str(tmp_path / "out"), "ingest"):
            pass
