"""A full disk, for real: ingest, scoring and a pretraining checkpoint write onto a size-limited tmpfs the test
mounts (CI runs as root). The error names the file it could not write, streams completed earlier stay intact, no half-written
file is left, and once the filesystem is grown the same command completes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.ingest.clips_dataset import read_stream
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.job import run_ingest
from pipelines.score.embeddings import read_embeddings
from pipelines.score.model import resolve_checkpoint
from tests.conftest import REPO
from tests.media import Pattern, write_pattern
from tests.models import tiny_checkpoint
from tests.pipelines.train.test_data import synthetic_clips

sys.path.insert(0, str(REPO / "jobs"))
import embed as embed_cli  # noqa: E402
import pretrain as pretrain_cli  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    """A 600 KiB tmpfs mounted for the test (and grown with ``grow``), unmounted after it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        raise PermissionError("this test mounts a tmpfs and needs root (CI runs as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], check=True)

    def grow(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)

    try:
        yield mount, grow
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


def test_ingest_and_scoring_onto_a_full_disk_fail_naming_the_file_and_complete_once_it_has_room(
        small_disk, tmp_path, ray_local, capsys):
    mount, grow = small_disk
    videos = [write_pattern(tmp_path / f"cam{k}.mp4", Pattern(seconds=20, size=(320, 180), flash_at=(k + 3,)))
              for k in range(3)]
    config = IngestConfig(crop_size=32)  # the tiny model's
    clips = mount / "clips"
    first = run_ingest([str(videos[0])], str(clips), config, show_progress=False)
    assert first.ok, first.format()
    kept = read_stream(str(clips), "cam0")

    full = run_ingest(list(map(str, videos)), str(clips), config, show_progress=False)
    assert not full.ok and full.failed, full.format()
    reasons = [e for s in full.failed for e in s.errors]
    assert all("No space left on device" in e and f"writing {clips}/" in e for e in reasons), reasons
    assert read_stream(str(clips), "cam0").equals(kept)  # the stream completed earlier is intact
    assert not leftovers(mount)

    grow("8m")
    again = run_ingest(list(map(str, videos)), str(clips), config, show_progress=False)
    assert again.ok, again.format()
    clean = run_ingest(list(map(str, videos)), str(tmp_path / "clean"), config, show_progress=False)
    assert clean.ok
    for k in range(3):  # the rows of an undisturbed run
        assert read_stream(str(clips), f"cam{k}").equals(read_stream(str(tmp_path / "clean"), f"cam{k}"))

    # Scoring onto the same disk, now nearly full again: the same promises.
    checkpoint = tiny_checkpoint(tmp_path / "run", clips)
    filler = mount / "filler"
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    filler.write_bytes(b"\0" * (free - 8 * 2**10))  # leaves 8 KiB
    embeddings = mount / "embeddings"
    args = ["--checkpoint", str(checkpoint), "--clips", str(clips), "--output", str(embeddings), "--quiet"]
    assert embed_cli.main(args) == 1
    printed = capsys.readouterr()
    assert "No space left on device" in printed.out + printed.err and f"{embeddings}/" in printed.out + printed.err
    assert not leftovers(mount)
    filler.unlink()
    assert embed_cli.main(args) == 0, capsys.readouterr()
    assert len(read_embeddings(str(embeddings))) == 60


def test_a_pretraining_checkpoint_onto_a_full_disk_fails_naming_it_and_the_run_resumes_once_it_has_room(
        small_disk, tmp_path_factory, ray_local, capsys):
    """The run dir on the small tmpfs: a first run stops at step 2 with its checkpoint; the disk is filled;
    the next checkpoint cannot be written: exit 1 naming it, no half-copied checkpoint left, the step-2 one
    intact and still what scoring reads; with room again the same command resumes and finishes."""
    mount, grow = small_disk
    grow("4m")
    clips, _ = synthetic_clips(tmp_path_factory, ray_local)
    run_dir = mount / "run"
    argv = ["--clips", str(clips), "--run-dir", str(run_dir), "--preset", "tiny", "--epochs", "1", "--batch-size", "16",
            "--workers", "1", "--cpus-per-worker", "1", "--checkpoint-every", "2", "--bank-size", "64",
            "--holdout-fraction", "0"]
    assert pretrain_cli.main([*argv, "--stop-after-steps", "2"]) == 0
    first = run_dir / "checkpoint_step000000002"
    kept = {p.name: p.read_bytes() for p in first.iterdir()}
    assert resolve_checkpoint(str(run_dir)) == first.resolve()

    filler = mount / "filler"
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    filler.write_bytes(b"\0" * (free - 64 * 2**10))  # leaves 64 KiB: less than a checkpoint
    capsys.readouterr()
    assert pretrain_cli.main(argv) == 1
    printed = capsys.readouterr()
    assert f"pretrain: error: writing checkpoint {run_dir.resolve()}/checkpoint_step000000004: No space left on device" \
        in printed.err, printed.err[-3000:]
    assert sorted(p.name for p in run_dir.glob("checkpoint_step*")) == ["checkpoint_step000000002"]
    assert {p.name: p.read_bytes() for p in first.iterdir()} == kept
    assert resolve_checkpoint(str(run_dir)) == first.resolve()

    filler.unlink()
    assert pretrain_cli.main(argv) == 0
    assert resolve_checkpoint(str(run_dir)).name == "checkpoint_step000000007_end_of_epoch0001"  # 120 samples / 16
    with (run_dir / "metrics" / "steps.csv").open() as handle:
        assert [int(float(row["step"])) for row in csv.DictReader(handle)] == list(range(1, 8))
