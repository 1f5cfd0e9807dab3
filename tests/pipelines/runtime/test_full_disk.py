"""A full disk, for real: ingest and scoring write onto a size-limited tmpfs the test mounts (CI runs as
root). The error names the file it could not write, streams completed earlier stay intact, no half-written
file is left, and once the filesystem is grown the same command completes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.ingest.clips_dataset import read_stream
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.job import run_ingest
from pipelines.score.embeddings import read_embeddings
from tests.conftest import REPO
from tests.media import Pattern, write_pattern
from tests.models import tiny_checkpoint

sys.path.insert(0, str(REPO / "jobs"))
import embed as embed_cli  # noqa: E402

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
