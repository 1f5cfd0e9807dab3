"""Batch scoring on real media: generator mp4s -> real ingest -> real checkpoint files -> Ray Data actors -> Parquet."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from epg.bank import EmbeddingBank
from epg.config import EPGConfig, LossConfig, ModelConfig, OptimConfig
from epg.distance import distance
from epg.optim import build_optimizer
from jobs.embed import main as embed_main
from pipelines.ingest.clips_dataset import read_stream
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.job import run_ingest
from pipelines.media.storage import OutputStore
from pipelines.runtime.lock import LOCK_FILE
from pipelines.runtime.manifest import StreamManifest
from pipelines.score.config import EmbedConfig, EmbedError
from pipelines.score.embeddings import embeddings_schema, read_embeddings
from pipelines.score.inputs import ClipShape, ClipSlice, clip_slice_rows, clip_slices, read_clip_slice
from pipelines.score.job import run_embed, with_actors_for_cluster
from pipelines.score.query import embed_video_file
from pipelines.train.checkpoint import Position, build_model, load_model, save_checkpoint
from pipelines.train.config import PretrainConfig
from pipelines.train.data import CLIP_COLUMNS
from pipelines.train.loop import build_scheduler
from tests.conftest import REPO
from tests.media import Pattern, write_pattern

CROP = 32  # ModelConfig.tiny's crop size
F = 5
LAM = 0.3  # not the default, so a wrong λ shows
SETTINGS = EmbedConfig(batch_size=16, rows_per_file=8, clips_per_task=8, window_seconds=10)


def write_checkpoint(run_dir: Path, step: int, seed: int, crop: int = CROP) -> Path:
    """A checkpoint directory exactly as pretraining writes it (``save_checkpoint``), plus the run's config.json."""
    epg = EPGConfig(model=ModelConfig.tiny(crop_size=crop), loss=LossConfig(kind="hadsell", lam=LAM), optim=OptimConfig(seed=seed))
    config = PretrainConfig(clips="unused", run_dir=str(run_dir), epg=epg, preset="tiny")
    model = build_model(config)
    with torch.no_grad():  # running statistics away from the initial (0, 1), as after training
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    optimizer = build_optimizer(model, epg.optim)
    directory = run_dir / f"checkpoint_step{step:09d}"
    save_checkpoint(directory, 0, config, model, optimizer, build_scheduler(optimizer, config, total_steps=10),
                    EmbeddingBank.from_config(epg.bank), Position(step=step))
    (run_dir / "config.json").write_text(json.dumps({"config": config.to_dict()}))
    return directory


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """A 30-s synthetic street stream and a 6-s pattern whose audio stops at 3 s (clips 3-5 lack audio)."""
    from pipelines.synthetic import SyntheticConfig, generate

    base = tmp_path_factory.mktemp("embed_media")
    generate(SyntheticConfig(out=base, minutes=0.5, seed=5, size=(160, 90), fps=5.0, views=("train",), rate_scale=4.0))
    write_pattern(base / "pattern.mp4", Pattern(seconds=6.0, audio_seconds=3.0, flash_at=(1,), click_at=(2,)))
    return base


@pytest.fixture(scope="module")
def clips_root(media, ray_local, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("embed_clips") / "clips"
    config = IngestConfig(crop_size=CROP, window_seconds=10, shard_rows=10)
    summary = run_ingest([str(media / "train.mp4"), str(media / "pattern.mp4")], str(root), config, show_progress=False)
    assert summary.ok, summary.format()
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run with two checkpoints; the run dir resolves to the later one (step 10)."""
    run = tmp_path_factory.mktemp("embed_runs") / "epg-test"
    write_checkpoint(run, 2, seed=1)
    write_checkpoint(run, 10, seed=2)
    return run


@pytest.fixture(scope="module")
def scored(clips_root, run_dir, ray_local, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("embed_out") / "embeddings"
    summary = run_embed(str(run_dir), str(out), clips=str(clips_root), settings=SETTINGS, show_progress=False)
    assert summary.ok, summary.format()
    assert [(s.stream_id, s.status, s.rows, s.unscored) for s in summary.streams] == [
        ("pattern", "complete", 3, 3), ("train", "complete", 30, 0)]
    return out


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file of the output as (mtime, inode, size); not the run lock, which each run holds anew."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_ino, p.stat().st_size)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != LOCK_FILE}


def reference(clips_root: Path, checkpoint: Path, stream_id: str) -> dict[str, np.ndarray]:
    """The embeddings computed here, clip by clip, straight from the clip rows and the checkpoint."""
    model, config = load_model(str(checkpoint))
    lam = config.epg.loss.lam
    out: dict[str, list] = {"t": [], "v": [], "a": [], "d": [], "spectrum": []}
    with torch.no_grad():
        for row in read_stream(str(clips_root), stream_id).to_pylist():
            if not (row["has_audio"] and row["has_video"]):
                continue
            crops = []
            for crop in (0, 1):
                pixels = np.stack([np.asarray(Image.open(io.BytesIO(j)).convert("RGB")) for j in row["frames"][crop * F:(crop + 1) * F]])
                crops.append(torch.from_numpy(pixels).permute(3, 0, 1, 2).float() / 255.0)
            v = model.visual(torch.stack(crops)).mean(dim=0, keepdim=True)
            a = model.audio(torch.tensor(row["logmel"], dtype=torch.float32).reshape(1, 1, 128, 64))
            out["t"].append(row["t"])
            out["v"].append(v[0].numpy())
            out["a"].append(a[0].numpy())
            out["d"].append(float(distance(v, a, lam)[0]))
            out["spectrum"].append(np.asarray(row["logmel"], np.float32).reshape(128, 64).mean(axis=1))
    return {k: np.asarray(v) for k, v in out.items()}


def assert_schema(got: pa.Schema, want: pa.Schema) -> None:
    """Equal names, types, nullability and metadata (Parquet names a list's child "element", Arrow "item")."""
    assert got.names == want.names and got.metadata == want.metadata
    for a, b in zip(got, want):
        assert a.nullable == b.nullable, a.name
        if pa.types.is_fixed_size_list(b.type):
            assert pa.types.is_fixed_size_list(a.type) and (a.type.value_type, a.type.list_size) == (b.type.value_type, b.type.list_size)
        else:
            assert a.type == b.type, a.name


def latest(run_dir: Path) -> Path:
    return run_dir / "checkpoint_step000000010"


def test_schema_rows_parts_and_manifest(scored, clips_root, run_dir):
    store = OutputStore(str(scored))
    for stream_id, expected_t in (("train", list(range(30))), ("pattern", [0, 1, 2])):
        manifest = StreamManifest.load(store, stream_id)
        assert manifest is not None and manifest.status == "complete"
        model_id = manifest.config["model"]
        assert model_id.startswith("epg-test/checkpoint_step000000010@") and len(model_id.split("@")[1]) == 12
        assert manifest.files == [f"part-{k:05d}.parquet" for k in range(len(manifest.files))]
        tables = [pq.read_table(scored / f"stream_id={stream_id}" / name) for name in manifest.files]
        for table in tables:
            assert_schema(table.schema, embeddings_schema(16, model_id, LAM, 128))
            assert table.num_rows <= SETTINGS.rows_per_file
        t = [x for table in tables for x in table.column("t").to_pylist()]
        assert t == expected_t  # clips with both modalities, ordered by t across the parts
        assert manifest.rows == len(t)
        assert {m for table in tables for m in table.column("model").to_pylist()} == {model_id}
        assert {s for table in tables for s in table.column("stream_id").to_pylist()} == {stream_id}
    assert len(StreamManifest.load(store, "train").files) == 4  # 30 rows in parts of 8
    pattern = StreamManifest.load(store, "pattern")
    assert pattern.seconds_without_audio == 3 and pattern.seconds_without_video == 0
    assert pattern.info["clips_unscored"] == 3 and any("not scored" in w for w in pattern.warnings)
    record = json.loads((scored / "_embed_config.json").read_text())
    assert record["model"] == pattern.config["model"] and record["lam"] == LAM
    assert record["checkpoint"] == str(latest(run_dir).resolve())
    assert record["settings"]["actors"] == 2  # actors 0 from clips: the tests' 2 CPUs (the actors read their slices)
    assert not (scored / "_staging").exists()


def test_embeddings_equal_the_model_run_in_process(scored, clips_root, run_dir):
    embeddings = read_embeddings(str(scored))
    assert embeddings.lam == LAM and embeddings.streams == ["pattern", "train"]
    for stream_id in ("train", "pattern"):
        got = embeddings.of_streams([stream_id])
        want = reference(clips_root, latest(run_dir), stream_id)
        assert got.t.tolist() == want["t"].tolist()
        np.testing.assert_allclose(got.v, want["v"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got.a, want["a"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got.av_dist, want["d"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got.spectrum, want["spectrum"], rtol=1e-5, atol=1e-4)  # each clip's log-mel, over time
    # av_dist is D(v, a) with the run's λ, not the default 0.5
    v, a = torch.tensor(embeddings.v), torch.tensor(embeddings.a)
    np.testing.assert_allclose(embeddings.av_dist, distance(v, a, LAM).numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(embeddings.av_dist, distance(v, a, 0.5).numpy())
    assert np.std(embeddings.v[:, 0]) > 0 and np.std(embeddings.a[:, 0]) > 0  # clips differ


def test_videos_score_like_clips_and_a_broken_video_fails_alone(scored, media, run_dir, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    out = tmp_path / "from_videos"
    code = embed_main(["--videos", str(media / "train.mp4"), str(media / "pattern.mp4"), str(broken),
                       "--checkpoint", str(run_dir), "--output", str(out), "--rows-per-file", "8",
                       "--window-seconds", "10", "--batch-size", "4", "--actors", "2", "--cpus-per-actor", "0.5",
                       "--quiet"])
    assert code == 1
    from_videos, from_clips = read_embeddings(str(out)), read_embeddings(str(scored))
    assert from_videos.model == from_clips.model
    assert from_videos.stream_id.tolist() == from_clips.stream_id.tolist()
    assert from_videos.t.tolist() == from_clips.t.tolist()
    np.testing.assert_allclose(from_videos.v, from_clips.v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_videos.a, from_clips.a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_videos.av_dist, from_clips.av_dist, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_videos.spectrum, from_clips.spectrum, rtol=1e-5, atol=1e-4)
    store = OutputStore(str(out))
    failed = StreamManifest.load(store, "broken")
    assert failed is not None and failed.status == "failed"
    assert any(str(broken) in error for error in failed.errors)
    assert not list((out / "stream_id=broken").glob("*.parquet"))
    pattern = StreamManifest.load(store, "pattern")
    assert pattern.info["frame_backend"] == "pyav" and pattern.info["clips_unscored"] == 3
    assert pattern.config["ingest"]["crop_size"] == CROP
    assert not (out / "_staging").exists()


def test_a_video_of_one_window_is_scored_by_one_actor_without_a_pool_warning(media, run_dir, ray_local, tmp_path):
    """Asked for 2 actors, a 6-s video (one window) starts one: the other would build its model and decode
    process for nothing, and Ray Data would warn (on the user's console) that the pool cannot be used."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_embed(str(run_dir), str(tmp_path / "one"), videos=[str(media / "pattern.mp4")],
                            settings=EmbedConfig(actors=2, cpus_per_actor=1.0), show_progress=False)
    assert summary.ok and [s.rows for s in summary.streams] == [3], summary.format()  # 3 s of audio
    pool = [str(w.message) for w in caught if "concurrent actors" in str(w.message)]
    assert not pool, pool


def test_clips_of_one_batch_are_scored_by_one_actor_without_a_pool_warning(clips_root, run_dir, ray_local, tmp_path):
    """From clips as from videos: 6 clip rows make one slice, so 2 actors asked for start one."""
    only = tmp_path / "clips"
    shutil.copytree(clips_root / "stream_id=pattern", only / "stream_id=pattern")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_embed(str(run_dir), str(tmp_path / "one"), clips=str(only),
                            settings=EmbedConfig(actors=2, cpus_per_actor=0.5), show_progress=False)
    assert summary.ok and [s.rows for s in summary.streams] == [3], summary.format()
    assert json.loads((tmp_path / "one" / "_embed_config.json").read_text())["settings"]["actors"] == 1
    pool = [str(w.message) for w in caught if "concurrent actors" in str(w.message)]
    assert not pool, pool


def test_raw_crops_skip_the_jpeg_round_trip_and_stay_close_to_it(scored, media, run_dir, tmp_path):
    """--raw-crops: the same rows and clips, embeddings within JPEG noise of the exact ones, and a hash of its own."""
    out = tmp_path / "raw"
    code = embed_main(["--videos", str(media / "train.mp4"), str(media / "pattern.mp4"), "--checkpoint", str(run_dir),
                       "--output", str(out), "--window-seconds", "10", "--raw-crops", "--quiet"])
    assert code == 0
    raw, exact = read_embeddings(str(out)), read_embeddings(str(scored))
    assert raw.stream_id.tolist() == exact.stream_id.tolist() and raw.t.tolist() == exact.t.tolist()
    assert not np.allclose(raw.v, exact.v, rtol=1e-5, atol=1e-6)  # the JPEG round trip is really skipped ...
    np.testing.assert_allclose(raw.a, exact.a, rtol=1e-5, atol=1e-6)  # ... and the audio path is the same one
    cosine = (raw.v * exact.v).sum(1) / (np.linalg.norm(raw.v, axis=1) * np.linalg.norm(exact.v, axis=1))
    assert cosine.min() > 0.99, cosine.min()  # ... yet the embeddings move by JPEG noise only
    manifest = StreamManifest.load(OutputStore(str(out)), "train")
    exact_manifest = StreamManifest.load(OutputStore(str(scored)), "train")
    assert manifest.config["crops"] == "raw" and manifest.config_hash != exact_manifest.config_hash


def test_rerun_skips_resumes_interrupted_streams_and_guards_the_model(scored, clips_root, run_dir, tmp_path):
    out = tmp_path / "embeddings"
    shutil.copytree(scored, out)
    before = snapshot(out)
    summary = run_embed(str(run_dir), str(out), clips=str(clips_root), settings=SETTINGS, show_progress=False)
    assert summary.ok and [s.status for s in summary.streams] == ["skipped", "skipped"]
    assert [s.rows for s in summary.streams] == [3, 30]
    assert snapshot(out) == before  # nothing rewritten

    # a run killed after committing a stream, before dropping its staging, left a staged part behind
    leftover = out / "_staging" / "train" / "part-00000.parquet"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"staged")
    summary = run_embed(str(run_dir), str(out), clips=str(clips_root), settings=SETTINGS, show_progress=False)
    assert [s.status for s in summary.streams] == ["skipped", "skipped"] and not (out / "_staging").exists()

    # an interrupted run: the stream's manifest says running and staged parts are left over
    store = OutputStore(str(out))
    manifest = StreamManifest.load(store, "pattern")
    manifest.status = "running"
    manifest.save(store)
    (out / "_staging" / "pattern").mkdir(parents=True)
    (out / "_staging" / "pattern" / "part-00007.parquet").write_bytes(b"left over")
    kept = {k: v for k, v in snapshot(out).items() if k.startswith("stream_id=train")}
    summary = run_embed(str(latest(run_dir)), str(out), clips=str(clips_root), settings=SETTINGS, show_progress=False)
    assert [(s.stream_id, s.status) for s in summary.streams] == [("pattern", "complete"), ("train", "skipped")]
    assert {k: v for k, v in snapshot(out).items() if k.startswith("stream_id=train")} == kept
    assert not (out / "_staging").exists()
    np.testing.assert_allclose(read_embeddings(str(out)).v, read_embeddings(str(scored)).v, rtol=1e-5, atol=1e-6)

    # another checkpoint: refused without --overwrite (nothing touched), re-scored with it
    before = snapshot(out)
    other = run_dir / "checkpoint_step000000002"
    with pytest.raises(EmbedError, match="holds embeddings of another model.*--overwrite"):
        run_embed(str(other), str(out), clips=str(clips_root), settings=SETTINGS, show_progress=False)
    assert snapshot(out) == before
    summary = run_embed(str(other), str(out), clips=str(clips_root), settings=SETTINGS, overwrite=True, show_progress=False)
    assert summary.ok and [s.status for s in summary.streams] == ["complete", "complete"]
    rescored = read_embeddings(str(out))
    assert rescored.model.startswith("epg-test/checkpoint_step000000002@") and rescored.model != read_embeddings(str(scored)).model
    assert rescored.t.tolist() == read_embeddings(str(scored)).t.tolist()
    assert not np.allclose(rescored.v, read_embeddings(str(scored)).v)


def test_bad_input_is_refused_before_anything_is_written(clips_root, run_dir, ray_local, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cli = [sys.executable, str(REPO / "jobs" / "embed.py")]
    done = subprocess.run(cli + ["--clips", str(clips_root), "--checkpoint", str(tmp_path / "nope"), "--output", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and "nope" in done.stderr and "does not exist" in done.stderr

    assert embed_main(["--clips", str(tmp_path / "no_clips"), "--checkpoint", str(run_dir), "--output", str(out)]) == 2
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(EmbedError, match="neither a checkpoint directory"):
        run_embed(str(tmp_path / "empty_run"), str(out), clips=str(clips_root))
    big = write_checkpoint(tmp_path / "crop64", 1, seed=0, crop=64)
    with pytest.raises(EmbedError, match="crop size 32 != model visual.crop_size 64"):
        run_embed(str(big), str(out), clips=str(clips_root))
    with pytest.raises(EmbedError, match="either a clips directory or video files"):
        run_embed(str(run_dir), str(out))
    with pytest.raises(SystemExit) as exited:
        embed_main(["--clips", str(clips_root), "--videos", "x.mp4", "--checkpoint", str(run_dir), "--output", str(out)])
    assert exited.value.code == 2
    with pytest.raises(EmbedError, match="batch-size must be >= 1"):
        EmbedConfig(batch_size=0)
    assert not out.exists()


def test_the_actor_pool_fills_the_cluster_unless_told(ray_local):
    assert EmbedConfig().actors_for(cpus=16, gpus=0) == 16
    assert EmbedConfig(cpus_per_actor=4).actors_for(cpus=16, gpus=0) == 4
    assert EmbedConfig(gpus_per_actor=1).actors_for(cpus=16, gpus=8) == 8
    assert EmbedConfig(actors=3).actors_for(cpus=16, gpus=0) == 3
    assert EmbedConfig().actors_for(cpus=16, gpus=0, spare_cpus=1) == 15
    assert EmbedConfig().actors_for(cpus=1, gpus=0, spare_cpus=1) == 1
    # CPU actors decode their own inputs (the decode tasks fuse into them); GPU actors leave it to CPU tasks
    assert EmbedConfig(cpus_per_actor=2).decode_cpus == 2 and EmbedConfig(gpus_per_actor=1).decode_cpus == 1
    assert with_actors_for_cluster(EmbedConfig()).actors == 2
    with pytest.raises(EmbedError, match="1 actors x 1 GPU need 1 GPUs; the cluster has 0"):
        with_actors_for_cluster(EmbedConfig(gpus_per_actor=1))
    with pytest.raises(EmbedError, match=r"3 actors x 1 CPU need 3 CPUs; the cluster has 2 \(lower --actors"):
        with_actors_for_cluster(EmbedConfig(actors=3))
    with pytest.raises(EmbedError, match="actors must be >= 0"):
        EmbedConfig(actors=-1)


def test_a_clips_slice_reads_its_rows_across_row_groups_and_a_file_that_cannot_be_read_fails_its_stream(
        clips_root, tmp_path):
    whole = read_stream(str(clips_root), "train").select(CLIP_COLUMNS)
    path = tmp_path / "part.parquet"
    pq.write_table(whole, path, row_group_size=3)  # slices of 4 rows start and end inside row groups
    assert pq.ParquetFile(path).metadata.num_row_groups == 10
    pieces = clip_slices("train", str(path), whole.num_rows, 4)
    assert [(p.first, p.rows) for p in pieces] == [(i, min(4, 30 - i)) for i in range(0, 30, 4)]
    store = OutputStore(str(tmp_path))
    read = [read_clip_slice(p, store) for p in pieces]
    assert [r.column("t").to_pylist() for r in read] == [whole.column("t").to_pylist()[p.first:p.first + p.rows]
                                                         for p in pieces]
    assert pa.concat_tables(read).equals(whole)

    shape = ClipShape(CROP, F, 128, 64)
    batch = {name: np.array([getattr(pieces[2], name)], dtype=object) for name in ClipSlice.__dataclass_fields__}
    rows = clip_slice_rows(batch, clips=str(tmp_path), shape=shape)
    assert rows["t"].tolist() == [8, 9, 10, 11] and rows["video"].shape == (4, 2, 3, F, CROP, CROP)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut short after it was planned
    rows = clip_slice_rows(batch, clips=str(tmp_path), shape=shape)
    assert rows["t"].tolist() == [-1] and rows["clips"].tolist() == [4]  # the slice's clips, so the count holds
    assert rows["error"][0].startswith(f"{path}: cannot be read: ")


def test_embed_video_file_in_process(scored, media, run_dir, tmp_path):
    clips = read_embeddings(str(scored))
    for stream_id in ("train", "pattern"):
        got = embed_video_file(str(media / f"{stream_id}.mp4"), str(run_dir), settings=SETTINGS)
        want = clips.of_streams([stream_id])
        assert got.stream_id.tolist() == [stream_id] * len(want) and got.t.tolist() == want.t.tolist()
        assert got.model == want.model and got.lam == LAM
        np.testing.assert_allclose(got.v, want.v, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.a, want.a, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.av_dist, want.av_dist, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.spectrum, want.spectrum, rtol=1e-5, atol=1e-4)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(os.urandom(2000))
    with pytest.raises(EmbedError, match="broken.mp4"):
        embed_video_file(str(broken), str(run_dir))
    with pytest.raises(EmbedError, match="no such file"):
        embed_video_file(str(tmp_path / "missing.mp4"), str(run_dir))
