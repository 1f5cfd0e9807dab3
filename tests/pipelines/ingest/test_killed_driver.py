"""A killed ingest driver, for real: ``jobs/ingest.py`` and the local Ray it started are SIGKILLed (its
whole process group, as when a machine goes away) once windows are staged; what is on disk then is
readable or invisible, never half-written, and rerunning the same command gives the rows of an
undisturbed run."""

from __future__ import annotations

import json

import pytest

from pipelines.ingest.clips_dataset import complete_stream_files, read_stream
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.job import run_ingest
from tests.jobs import kill_job_when, start_job
from tests.media import Pattern, write_pattern

pytestmark = pytest.mark.slow


def test_a_driver_killed_mid_ingest_loses_nothing_committed_and_the_rerun_completes(tmp_path, ray_local):
    videos = [write_pattern(tmp_path / f"cam{k}.mp4", Pattern(seconds=12, flash_at=(k + 4,))) for k in range(2)]
    output = tmp_path / "clips"
    job = start_job("ingest", ["--quiet", "--crop-size", "32", "--window-seconds", "4", "--output", str(output),
                               "--input", *map(str, videos)])
    kill_job_when(job, lambda: bool(list(output.glob("_staging/*/*/w-*.parquet"))), "a window was staged", 120)

    for manifest in output.glob("stream_id=*/manifest.json"):  # what a reader finds in between
        assert json.loads(manifest.read_text())["status"] in ("running", "complete", "failed")
    for stream in (p.parent.name.split("=", 1)[1] for p in output.glob("stream_id=*/manifest.json")):
        if json.loads((output / f"stream_id={stream}" / "manifest.json").read_text())["status"] == "complete":
            assert read_stream(str(output), stream).column("t").to_pylist() == list(range(12))
    assert all(f.endswith(".parquet") for f in complete_stream_files(str(output)))

    # The same command again (in this process, on the tests' Ray: the rows do not depend on the driver).
    config = IngestConfig(crop_size=32, window_seconds=4)
    rerun = run_ingest(list(map(str, videos)), str(output), config, show_progress=False)
    assert rerun.ok and {s.status for s in rerun.streams} <= {"complete", "skipped"}, rerun.format()
    clean = run_ingest(list(map(str, videos)), str(tmp_path / "clean"), config, show_progress=False)  # undisturbed
    assert clean.ok
    for k in range(2):
        assert read_stream(str(output), f"cam{k}").equals(read_stream(str(tmp_path / "clean"), f"cam{k}"))
    assert not list(output.rglob(".tmp-*")) and not (output / "_staging").exists()
