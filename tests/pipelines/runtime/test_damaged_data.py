"""Damaged datasets: a manifest or Parquet shard of clips or embeddings broken on disk gives pretraining,
scoring and the downstream jobs an error naming the file (exit 2, before any work), and ``--skip-bad-shards``
goes on with the rest, saying what it left out. Real ingest, real scoring, the jobs' own CLIs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from pipelines.ingest.clips_dataset import read_stream
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.job import run_ingest
from pipelines.runtime.manifest import DamagedFile
from pipelines.score.job import run_embed
from pipelines.train.data import ClipsError, inspect_clips
from pipelines.train.driver import without_damaged_files
from tests.conftest import REPO
from tests.media import Pattern, write_pattern
from tests.models import tiny_checkpoint

sys.path.insert(0, str(REPO / "jobs"))
import anomaly as anomaly_cli  # noqa: E402
import embed as embed_cli  # noqa: E402
import pretrain as pretrain_cli  # noqa: E402

pytestmark = pytest.mark.slow


def damage(path: Path, how: str) -> None:
    """Break a file the way disks and interrupted copies do."""
    data = path.read_bytes()
    if how == "garbage":
        path.write_bytes(b"\xff\xfe\x00binary" * 40)
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "zeroed":  # the middle of the file (a Parquet shard's data pages) overwritten
        start, end = len(data) // 3, 2 * len(data) // 3
        path.write_bytes(data[:start] + b"\x00" * (end - start) + data[end:])
    else:
        raise ValueError(how)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, ray_local):
    """Clips of two streams (real ingest), a tiny random-init checkpoint and their embeddings (real scoring)."""
    root = tmp_path_factory.mktemp("damaged")
    videos = [write_pattern(root / f"cam{k}.mp4", Pattern(seconds=12, flash_at=(k + 2,))) for k in range(2)]
    clips = root / "clips"
    assert run_ingest(list(map(str, videos)), str(clips), IngestConfig(crop_size=32), show_progress=False).ok
    checkpoint = tiny_checkpoint(root / "run", clips)
    embeddings = root / "embeddings"
    assert run_embed(str(checkpoint), str(embeddings), clips=str(clips), show_progress=False).ok
    return {"root": root, "clips": clips, "checkpoint": checkpoint, "embeddings": embeddings}


def copy_of(tree: Path, to: Path) -> Path:
    shutil.copytree(tree, to)
    return to


def shard_of(root: Path, stream: str) -> Path:
    manifest = json.loads((root / f"stream_id={stream}" / "manifest.json").read_text())
    return root / f"stream_id={stream}" / manifest["files"][0]


@pytest.mark.parametrize("broken", ["manifest garbage", "manifest truncated", "shard truncated"])
def test_damaged_clips_stop_pretraining_and_scoring_naming_the_file_or_are_skipped(broken, datasets, tmp_path, capsys):
    clips = copy_of(datasets["clips"], tmp_path / "clips")
    what, how = broken.split()
    path = clips / "stream_id=cam1" / "manifest.json" if what == "manifest" else shard_of(clips, "cam1")
    damage(path, how)

    with pytest.raises(ClipsError, match=rf"^{path}: "):
        inspect_clips(str(clips))
    assert pretrain_cli.main(["--clips", str(clips), "--run-dir", str(tmp_path / "run"), "--preset", "tiny"]) == 2
    embed_args = ["--checkpoint", str(datasets["checkpoint"]), "--clips", str(clips), "--quiet"]
    assert embed_cli.main([*embed_args, "--output", str(tmp_path / "emb")]) == 2
    errors = capsys.readouterr().err
    assert errors.count(f"{path}: ") == 2 and "--skip-bad-shards" in errors, errors
    assert "Traceback" not in errors

    info = inspect_clips(str(clips), skip_bad_shards=True)
    assert info.stream_ids == ("cam0",) and len(info.skipped) == 1 and info.skipped[0].startswith(f"{path}: ")


def test_scoring_with_skip_bad_shards_scores_the_streams_it_can_read(datasets, tmp_path, capsys):
    clips = copy_of(datasets["clips"], tmp_path / "clips")
    path = shard_of(clips, "cam1")
    damage(path, "truncated")
    args = ["--checkpoint", str(datasets["checkpoint"]), "--clips", str(clips), "--quiet", "--output", str(tmp_path / "emb")]
    assert embed_cli.main([*args, "--skip-bad-shards"]) == 0
    out = capsys.readouterr().out
    assert f"left out (--skip-bad-shards): {path}: " in out and "1 scored" in out, out
    assert sorted(p.name for p in (tmp_path / "emb").glob("stream_id=*")) == ["stream_id=cam0"]


def test_a_shard_damaged_inside_its_data_is_found_before_training_and_fails_only_its_stream(datasets, tmp_path,
                                                                                            capsys):
    """Its footer reads; its data pages do not decompress: pretraining stops before it starts, naming the
    file, and scoring fails that stream only (exit 1), its manifest saying why."""
    clips = copy_of(datasets["clips"], tmp_path / "clips")
    path = shard_of(clips, "cam0")
    damage(path, "zeroed")
    with pytest.raises(DamagedFile, match=rf"^{path}: cannot be read as Parquet"):
        read_stream(str(clips), "cam0")
    assert read_stream(str(clips), "cam1").num_rows == 12
    assert pretrain_cli.main(["--clips", str(clips), "--run-dir", str(tmp_path / "run"), "--preset", "tiny",
                              "--batch-size", "8"]) == 2
    assert f"pretrain: error: {path}: cannot be read as Parquet" in capsys.readouterr().err
    kept = without_damaged_files(inspect_clips(str(clips)), skip=True)  # --skip-bad-shards
    assert kept.files == tuple(f for f in inspect_clips(str(clips)).files if f != str(path)) and kept.rows == 12
    output = tmp_path / "emb"
    assert embed_cli.main(["--checkpoint", str(datasets["checkpoint"]), "--clips", str(clips), "--quiet",
                           "--output", str(output)]) == 1
    failed = json.loads((output / "stream_id=cam0" / "manifest.json").read_text())
    assert failed["status"] == "failed" and str(path) in failed["errors"][0], failed["errors"]
    assert json.loads((output / "stream_id=cam1" / "manifest.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("broken", ["manifest garbage", "shard truncated", "shard zeroed"])
def test_damaged_embeddings_stop_the_downstream_jobs_naming_the_file_or_are_skipped(broken, datasets, tmp_path,
                                                                                     capsys):
    embeddings = copy_of(datasets["embeddings"], tmp_path / "embeddings")
    what, how = broken.split()
    path = embeddings / "stream_id=cam1" / "manifest.json" if what == "manifest" else shard_of(embeddings, "cam1")
    damage(path, how)
    args = ["--embeddings", str(embeddings), "--reference", "cam0", "--score", "av_dist", "--no-plots"]
    assert anomaly_cli.main([*args, "--output", str(tmp_path / "a")]) == 2
    errors = capsys.readouterr().err
    assert f"{path}: " in errors and "Traceback" not in errors, errors
    assert anomaly_cli.main([*args, "--output", str(tmp_path / "b"), "--skip-bad-shards"]) == 0
    assert f"anomaly: left out (--skip-bad-shards): {path}: " in capsys.readouterr().err
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert len(summary["skipped_files"]) == 1 and summary["streams"] == ["cam0"]
