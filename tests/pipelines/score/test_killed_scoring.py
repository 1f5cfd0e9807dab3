"""Scoring under killed processes, for real: a model actor SIGKILLed mid-run is replaced by Ray Data and the run
ends with the rows of an undisturbed run; a driver SIGKILLed mid-run (``jobs/embed.py`` and its local Ray, its
whole process group) leaves only running or complete manifests (a reader sees no rows or all of them), and
rerunning the same command gives the undisturbed run's rows."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from pipelines.score.config import EmbedConfig
from pipelines.score.embeddings import read_embeddings
from pipelines.score.job import run_embed
from pipelines.synthetic import SyntheticConfig, generate
from tests.jobs import kill_job_when, start_job
from tests.models import tiny_checkpoint

pytestmark = pytest.mark.slow

SETTINGS = EmbedConfig(window_seconds=4, rows_per_file=4, batch_size=8)  # a part staged per window


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory, ray_local) -> dict:
    folder = tmp_path_factory.mktemp("killed_scoring")
    footage = generate(SyntheticConfig(out=folder / "videos", minutes=0.25, seed=3, size=(96, 54),
                                       views=("train", "similar", "challenging")))
    checkpoint = tiny_checkpoint(folder / "run")
    out = folder / "undisturbed"
    summary = run_embed(str(checkpoint), str(out), videos=[str(folder / "videos")], settings=SETTINGS,
                        show_progress=False)
    assert summary.ok, summary.format()
    return {"videos": sorted(footage.videos.values()), "checkpoint": checkpoint, "out": out}


def assert_equal_embeddings(got: Path, want: Path) -> None:
    a, b = read_embeddings(str(got)), read_embeddings(str(want))
    assert a.stream_id.tolist() == b.stream_id.tolist() and a.t.tolist() == b.t.tolist()
    assert np.array_equal(a.v, b.v) and np.array_equal(a.a, b.a) and np.array_equal(a.av_dist, b.av_dist)


def test_a_killed_model_actor_is_replaced_and_the_rows_equal_an_undisturbed_run(undisturbed, tmp_path):
    out = tmp_path / "embeddings"
    killed: list[str] = []

    def kill_an_actor_once_rows_are_staged() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            if list(out.glob("_staging/*/part-*.parquet")):
                for process in psutil.Process(os.getpid()).children(recursive=True):
                    try:
                        if "ClipEmbedder" in process.name():
                            killed.append(process.name())
                            process.send_signal(signal.SIGKILL)
                            return
                    except psutil.NoSuchProcess:
                        continue
            time.sleep(0.02)

    killer = threading.Thread(target=kill_an_actor_once_rows_are_staged, daemon=True)
    killer.start()
    summary = run_embed(str(undisturbed["checkpoint"]), str(out), videos=list(map(str, undisturbed["videos"])),
                        settings=SETTINGS, show_progress=False)
    killer.join(10)
    assert killed, "no model actor was found to kill"
    assert summary.ok, summary.format()
    assert_equal_embeddings(out, undisturbed["out"])


def test_a_killed_scoring_driver_leaves_no_half_stream_and_the_rerun_completes(undisturbed, tmp_path):
    out = tmp_path / "embeddings"
    job = start_job("embed", ["--quiet", "--window-seconds", "4", "--rows-per-file", "4", "--batch-size", "8",
                              "--checkpoint", str(undisturbed["checkpoint"]), "--output", str(out),
                              "--videos", *map(str, undisturbed["videos"])])
    def scoring_under_way() -> bool:  # a part staged, or a stream published while others may still run
        return bool(list(out.glob("_staging/*/part-*.parquet"))) or any(
            json.loads(m.read_text()).get("status") == "complete" for m in out.glob("stream_id=*/manifest.json"))

    kill_job_when(job, scoring_under_way, "a part was staged or a stream published", 180)

    for manifest in out.glob("stream_id=*/manifest.json"):  # what a reader finds in between
        data = json.loads(manifest.read_text())
        assert data["status"] in ("running", "complete")
        files = {p.name for p in manifest.parent.glob("*.parquet")}
        assert files == (set(data["files"]) if data["status"] == "complete" else set())

    # The same command again (on the tests' Ray: the rows do not depend on the driver).
    rerun = run_embed(str(undisturbed["checkpoint"]), str(out), videos=list(map(str, undisturbed["videos"])),
                      settings=SETTINGS, show_progress=False)
    assert rerun.ok and {s.status for s in rerun.streams} <= {"complete", "skipped"}, rerun.format()
    assert_equal_embeddings(out, undisturbed["out"])
    assert not list(out.rglob(".tmp-*")) and not (out / "_staging").exists()
