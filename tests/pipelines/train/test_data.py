"""Training data (Ray Data): real synthetic mp4 -> real ingest -> clips Parquet -> visual samples."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from epg.config import ModelConfig
from pipelines.ingest.clips_dataset import read_stream
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.job import run_ingest
from pipelines.train.data import (
    ClipsError,
    build_dataset,
    check_compatible,
    decode_clips,
    inspect_clips,
    load_label_index,
    to_torch_batch,
)

CROP = 32  # ModelConfig.tiny's crop size
F = 5


def synthetic_clips(tmp_path_factory, ray_local) -> tuple[Path, Path]:
    """One 1-minute synthetic stream (160x90, 5 fps, many recurring events), ingested at crop 32.

    Made once per test session (both test files share it through the session's base temp dir).
    Returns (clips root, labels.parquet).
    """
    from pipelines.synthetic import SyntheticConfig, generate

    base = tmp_path_factory.getbasetemp() / "pretrain_clips"
    clips, labels = base / "clips", base / "synth" / "labels.parquet"
    if (base / "done").is_file():
        return clips, labels
    shutil.rmtree(base, ignore_errors=True)
    generate(SyntheticConfig(out=base / "synth", minutes=1.0, seed=3, size=(160, 90), fps=5.0, views=("train",), rate_scale=4.0))
    summary = run_ingest([str(base / "synth")], str(clips), IngestConfig(crop_size=CROP, window_seconds=30, shard_rows=40),
                         show_progress=False)
    assert summary.ok, summary.format()
    (base / "done").write_text("ok")
    return clips, labels


@pytest.fixture(scope="module")
def clips(tmp_path_factory, ray_local) -> tuple[Path, Path]:
    return synthetic_clips(tmp_path_factory, ray_local)


def test_inspect_reads_streams_rows_and_shapes(clips):
    root, _ = clips
    info = inspect_clips(str(root))
    assert info.stream_ids == ("train",)
    assert info.rows == 60
    assert (info.crop_size, info.frames_per_clip, info.n_mels, info.logmel_frames) == (CROP, F, 128, 64)
    assert len(info.files) == 2  # 60 rows in shards of 40
    check_compatible(info, ModelConfig.tiny(crop_size=CROP))


def test_missing_empty_and_mismatched_clips_are_clear_errors(clips, tmp_path):
    root, _ = clips
    with pytest.raises(ClipsError, match="does not exist"):
        inspect_clips(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClipsError, match="no completely ingested stream"):
        inspect_clips(str(tmp_path / "empty"))
    info = inspect_clips(str(root))
    with pytest.raises(ClipsError, match="crop size 32 != model visual.crop_size 64"):
        check_compatible(info, ModelConfig.tiny(crop_size=64))
    with pytest.raises(ClipsError, match="log-mel 128x64 != model audio 64x64"):
        check_compatible(info, ModelConfig.tiny(crop_size=CROP, n_mels=64))


def test_clips_of_two_crop_sizes_in_one_root_are_refused(clips, tmp_path, ray_local):
    root, labels = clips
    mixed = tmp_path / "mixed"
    shutil.copytree(root, mixed)
    other = tmp_path / "videos" / "other.mp4"
    other.parent.mkdir()
    shutil.copy(labels.parent / "train.mp4", other)
    summary = run_ingest([str(other)], str(mixed), IngestConfig(crop_size=64, window_seconds=30, shard_rows=40),
                         show_progress=False)
    assert summary.ok, summary.format()
    with pytest.raises(ClipsError, match="mixes clip shapes"):
        inspect_clips(str(mixed))


def test_decode_gives_two_visual_samples_per_clip(clips):
    root, _ = clips
    rows = read_stream(str(root), "train").slice(10, 3).to_pydict()
    out = decode_clips(rows, stream_index={"train": 0}, frames_per_clip=F, n_mels=128, logmel_frames=64)
    assert out["video"].shape == (6, 3, F, CROP, CROP) and out["video"].dtype == np.uint8
    assert out["audio"].shape == (6, 1, 128, 64) and out["audio"].dtype == np.float32
    assert out["t"].tolist() == [10, 10, 11, 11, 12, 12]
    assert out["crop"].tolist() == [0, 1, 0, 1, 0, 1]
    assert out["stream"].tolist() == [0] * 6 and out["label"].tolist() == [-1] * 6
    for clip in range(3):
        mel = np.asarray(rows["logmel"][clip], dtype=np.float32).reshape(1, 128, 64)
        for crop in (0, 1):
            sample = 2 * clip + crop
            jpeg = rows["frames"][clip][crop * F + 2]  # frame 2 of this crop
            expected = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).transpose(2, 0, 1)
            assert np.array_equal(out["video"][sample][:, 2], expected)
            assert np.array_equal(out["audio"][sample], mel)
    assert not np.array_equal(out["video"][0], out["video"][1])  # the two crops differ
    batch = to_torch_batch(out, torch.device("cpu"))
    assert batch["video"].dtype == torch.float32 and 0.0 <= float(batch["video"].min()) and float(batch["video"].max()) <= 1.0
    assert torch.equal(batch["video"] * 255, torch.as_tensor(out["video"]).float())


def test_labels_join_by_stream_and_second(clips):
    _, labels = clips
    index, names = load_label_index(str(labels), ("train",))
    table = pq.read_table(labels).to_pandas()
    table = table[table.stream_id == "train"]
    assert names == sorted(table.label.unique())
    for t, group in table.groupby("t"):
        assert index["train"][int(t)] == names.index(sorted(group.label)[0])
    unlabelled = set(range(60)) - set(int(t) for t in table.t)
    assert all(t not in index["train"] for t in unlabelled)
    with pytest.raises(ClipsError, match="no rows for the clips' streams"):
        load_label_index(str(labels), ("elsewhere",))


def test_dataset_streams_every_clip_as_two_samples_with_labels(clips, ray_local):
    root, labels = clips
    info = inspect_clips(str(root))
    index, _ = load_label_index(str(labels), info.stream_ids)
    dataset = build_dataset(info, index)
    rows = list(dataset.iter_batches(batch_size=None, batch_format="numpy"))
    t = np.concatenate([b["t"] for b in rows])
    crop = np.concatenate([b["crop"] for b in rows])
    label = np.concatenate([b["label"] for b in rows])
    assert sorted(t.tolist()) == sorted(list(range(60)) * 2)  # every clip has audio and video here
    assert sorted(zip(t.tolist(), crop.tolist())) == [(s, c) for s in range(60) for c in (0, 1)]
    assert [int(x) for x in label] == [index["train"].get(int(s), -1) for s in t]
    assert (label >= 0).any() and (label == -1).any()
