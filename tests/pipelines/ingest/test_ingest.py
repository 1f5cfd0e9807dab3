"""Ingest on real media files, a real local Ray and real Parquet."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from epg.features import LogMelConfig, mel_bin_of_frequency
from pipelines.ingest.clip_table import clips_schema
from pipelines.ingest.clips_dataset import complete_stream_files, read_stream
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.job import run_ingest
from pipelines.media.sources import InputError
from pipelines.media.storage import OutputStore
from pipelines.runtime.manifest import StreamManifest
from pipelines.runtime.stream_job import STAGING
from tests.conftest import REPO
from tests.media import DARK, Pattern, write_frames, write_pattern

CROP = 64  # small crops keep the tests fast; the default (160) is checked on the schema
F = 5


def small_config(**overrides) -> IngestConfig:
    return IngestConfig(**{"crop_size": CROP, "window_seconds": 4, "shard_rows": 8, **overrides})


def brightness(frames: list[bytes]) -> np.ndarray:
    return np.array([np.asarray(Image.open(io.BytesIO(f))).mean() for f in frames])


def loudness(logmel) -> float:
    return float(np.asarray(logmel, dtype=np.float32).max())


def rows(root: Path, stream_id: str) -> list[dict]:
    return read_stream(str(root), stream_id).to_pylist()


def manifest(root: Path, stream_id: str) -> StreamManifest:
    found = StreamManifest.load(OutputStore(str(root)), stream_id)
    assert found is not None, f"no manifest for {stream_id}"
    return found


def expected_light_by_timestamp(path: Path, seconds: int) -> np.ndarray:
    """Reference selection straight from PyAV: for every target t + k/5, is the
    frame shown then (the last one stamped at or before it) white? Times are
    taken from the container's start, as ingest does."""
    with av.open(str(path)) as container:
        origin = (container.start_time or 0) / av.time_base
        frames = [(f.time - origin, f.to_ndarray(format="rgb24").mean() > 128) for f in container.decode(video=0)]
    times = np.array([t for t, _ in frames])
    white = np.array([w for _, w in frames])
    targets = np.arange(seconds)[:, None] + np.arange(F)[None, :] / 5.0
    index = np.clip(np.searchsorted(times, targets + 1e-3, side="right") - 1, 0, None)
    return white[index]


def assert_flash_and_click(path: Path, table: list[dict], flash: int, click: int, seconds: int) -> None:
    """Every crop shows the frame on screen at t + k/5 (the flash lands in row
    `flash` only), and the audio click lands in row `click`."""
    assert [r["t"] for r in table] == list(range(seconds))
    expected = expected_light_by_timestamp(path, seconds)
    assert np.flatnonzero(expected.any(axis=1)).tolist() == [flash]
    for crop in (slice(0, F), slice(F, 2 * F)):
        got = np.array([brightness(r["frames"][crop]) > 128 for r in table])
        assert np.array_equal(got, expected), (got.astype(int), expected.astype(int))
    levels = np.array([loudness(r["logmel"]) for r in table])
    assert int(np.argmax(levels)) == click
    others = np.delete(levels, click)
    assert levels[click] > others.max() + 30, levels
    # The click starts 0.1 s into its second: mel frame 0.1 * 44100 / 694 = 6.4 (+-2 frames).
    energy = np.asarray(table[click]["logmel"], dtype=np.float32).reshape(128, 64).max(axis=0)
    onset = int(np.argmax(energy > energy.min() + 0.5 * (energy.max() - energy.min())))
    assert 4 <= onset <= 9, onset


# -- alignment, both backends ---------------------------------------------------


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_flash_and_click_land_in_their_second(ray_local, tmp_path, backend):
    # The flash starts between two targets (6.1 s) and the click sits in the
    # third window, which is reached by a seek.
    video = write_pattern(tmp_path / "align.mp4", Pattern(seconds=11, fps=15, flash_at=(6.1,), click_at=(9,)))
    out = tmp_path / "clips"
    summary = run_ingest([str(video)], str(out), small_config(frame_backend=backend, fallback_backend=False))
    assert summary.ok, summary.format()
    assert_flash_and_click(video, rows(out, "align"), flash=6, click=9, seconds=11)
    assert manifest(out, "align").windows_by_backend == {backend: 3}


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_variable_frame_rate_and_late_video_start(ray_local, tmp_path, backend):
    """Frames are chosen by timestamp: with jittered frame times and a video
    track that starts 0.5 s after the audio, every crop shows exactly the frame
    that was on screen at t + k/5, and the click stays in its second."""
    pattern = Pattern(seconds=8, fps=12, flash_at=(2, 5), click_at=(3,), vfr_jitter=0.03, video_start=0.5)
    video = write_pattern(tmp_path / "vfr.mkv", pattern)
    out = tmp_path / "clips"
    summary = run_ingest([str(video)], str(out), small_config(frame_backend=backend, fallback_backend=False))
    assert summary.ok, summary.format()
    expected = expected_light_by_timestamp(video, 8)
    assert expected.any() and not expected.all()
    data = rows(out, "vfr")
    got = np.array([brightness(r["frames"][:F]) > 128 for r in data])
    assert np.array_equal(got, expected), (got.astype(int), expected.astype(int))
    other_crop = np.array([brightness(r["frames"][F:]) > 128 for r in data])
    assert np.array_equal(other_crop, expected)
    levels = [loudness(r["logmel"]) for r in data]
    assert int(np.argmax(levels)) == 3


# -- schema, shapes, features ---------------------------------------------------


def test_schema_row_count_crops_and_logmel(ray_local, tmp_path):
    video = write_pattern(tmp_path / "cam.mp4", Pattern(seconds=7.5, fps=10, size=(320, 180), tone_hz=3000.0))
    out = tmp_path / "clips"
    config = IngestConfig(window_seconds=3, shard_rows=6)  # default 160-pixel crops
    summary = run_ingest([str(video)], str(out), config)
    assert summary.ok, summary.format()
    files = complete_stream_files(str(out))
    assert [Path(f).parent.name for f in files] == ["stream_id=cam", "stream_id=cam"]
    table = pq.read_table(files[0])
    assert table.schema.equals(clips_schema(config), check_metadata=False)
    assert table.schema.metadata[b"config_hash"].decode() == config.output_hash()
    data = read_stream(str(out), "cam").to_pylist()
    assert len(data) == 7  # whole seconds of a 7.5-s stream
    assert [pq.read_metadata(f).num_rows for f in files] == [6, 1]
    mel = LogMelConfig()
    for r in data:
        assert len(r["frames"]) == 2 * F
        assert {Image.open(io.BytesIO(f)).size for f in r["frames"]} == {(160, 160)}
        assert len(r["logmel"]) == mel.n_mels * mel.frames_per_clip == 128 * 64
        assert r["has_audio"] and r["has_video"]
    spectrum = np.asarray(data[3]["logmel"], dtype=np.float32).reshape(128, 64).mean(axis=1)
    assert int(np.argmax(spectrum)) == mel_bin_of_frequency(3000.0)
    info = manifest(out, "cam").info
    assert info["width"] == 320 and info["sample_rate"] == 44_100 and info["fps"] == 10.0


def test_crops_sit_at_both_ends_of_the_longer_side(ray_local, tmp_path):
    """Landscape crops are the left and right squares, portrait crops the top and bottom ones."""
    out = tmp_path / "clips"
    sources = []
    for name, size in (("wide", (192, 96)), ("tall", (98, 202))):
        img = np.zeros((size[1], size[0], 3), dtype=np.uint8)
        if size[0] > size[1]:
            img[:, size[0] // 2 :] = 255  # right half white
        else:
            img[size[1] // 2 :, :] = 255  # bottom half white
        sources.append(str(write_frames(tmp_path / f"{name}.mp4", [img] * 10, fps=5)))
    summary = run_ingest(sources, str(out), small_config())
    assert summary.ok, summary.format()
    for name in ("wide", "tall"):
        first = rows(out, name)[0]
        light = brightness(first["frames"])
        assert np.all(light[:F] < 30) and np.all(light[F:] > 225), (name, light)
        assert first["has_audio"] is False


def test_nonzero_container_start_and_avi_b_frames(ray_local, tmp_path):
    """A Matroska recording whose timestamps start at 10 s (t = 0 is its
    first moment, not 'truncated'), and an AVI with B-frames, whose packets
    lack timestamps: decord cannot select by time there, so PyAV takes over
    and the frames are still the right ones."""
    late = write_pattern(tmp_path / "late.mkv", Pattern(seconds=8, flash_at=(3.1,), click_at=(6,), offset=10.0))
    avi = write_pattern(
        tmp_path / "bframes.avi",
        Pattern(container="avi", vcodec="mpeg4", acodec="libmp3lame", seconds=8, flash_at=(5.1,), click_at=(2,), b_frames=2),
    )
    out = tmp_path / "clips"
    summary = run_ingest([str(late), str(avi)], str(out), small_config(frame_backend="decord"))
    assert summary.ok, summary.format()
    assert_flash_and_click(late, rows(out, "late"), flash=3, click=6, seconds=8)
    assert manifest(out, "late").info["origin"] == pytest.approx(10.0, abs=0.05)
    assert_flash_and_click(avi, rows(out, "bframes"), flash=5, click=2, seconds=8)
    found = manifest(out, "bframes")
    assert found.windows_by_backend == {"pyav": 2}
    assert any("invalid frame timestamps" in w for w in found.warnings)


# -- real-world containers and codecs -----------------------------------------

CODEC_CASES = {
    "hevc_opus": Pattern(container="matroska", vcodec="libx265", acodec="libopus", sample_rate=48_000, channels=2),
    "vp9_opus": Pattern(container="webm", vcodec="libvpx-vp9", acodec="libopus", sample_rate=48_000),
    "vp8_vorbis": Pattern(container="webm", vcodec="libvpx", acodec="vorbis", channels=2),
    "mpeg4_mp3": Pattern(container="avi", vcodec="mpeg4", acodec="libmp3lame"),
    "h264_aac_ts": Pattern(container="mpegts", vcodec="libx264", acodec="aac"),
    "h264_pcm_mkv": Pattern(container="matroska", vcodec="libx264", acodec="pcm_s16le", channels=2),
    "aac_5_1_22k": Pattern(container="mp4", vcodec="libx264", acodec="aac", channels=6, sample_rate=22_050),
}
SUFFIX = {"matroska": ".mkv", "webm": ".webm", "avi": ".avi", "mpegts": ".ts", "mp4": ".mp4"}


@pytest.fixture(scope="module")
def codec_streams(ray_local, tmp_path_factory):
    folder = tmp_path_factory.mktemp("codecs")
    for name, pattern in CODEC_CASES.items():
        pattern.seconds, pattern.fps, pattern.flash_at, pattern.click_at = 6, 10, (4.1,), (5,)
        write_pattern(folder / f"{name}{SUFFIX[pattern.container]}", pattern)
    out = folder / "clips"
    summary = run_ingest([str(folder)], str(out), small_config(frame_backend="decord"))  # PyAV is covered elsewhere
    return out, summary


@pytest.mark.parametrize("name", sorted(CODEC_CASES))
def test_containers_and_codecs_ingest_aligned(codec_streams, name):
    out, summary = codec_streams
    assert summary.ok, summary.format()
    assert_flash_and_click(out.parent / f"{name}{SUFFIX[CODEC_CASES[name].container]}", rows(out, name), flash=4, click=5, seconds=6)
    found = manifest(out, name)
    assert found.info["channels"] == CODEC_CASES[name].channels
    if CODEC_CASES[name].container == "mpegts":  # decord is unsafe there: handed to PyAV, and said so
        assert found.windows_by_backend == {"pyav": 2}
        assert any("decord" in w and "mpegts" in w for w in found.warnings)
    else:
        assert found.windows_by_backend == {"decord": 2}


def test_real_clips_from_shared_data(ray_local, shared_data, tmp_path):
    out = tmp_path / "clips"
    summary = run_ingest([str(shared_data / "av")], str(out), small_config())
    assert summary.ok, summary.format()
    expected = {"intel_car-detection_silentaudio": 30, "moviepy_big_buck_bunny_0_30": 30, "moviepy_chaplin": 9}
    for stream_id, seconds in expected.items():
        data = rows(out, stream_id)
        assert len(data) == seconds
        assert all(r["has_video"] and r["has_audio"] for r in data)
    silent = rows(out, "intel_car-detection_silentaudio")
    assert max(loudness(r["logmel"]) for r in silent) <= LogMelConfig().silence_db + 1
    chaplin = rows(out, "moviepy_chaplin")
    assert min(loudness(r["logmel"]) for r in chaplin) > LogMelConfig().silence_db + 40
    # Cars pass the parking-lot camera at ~4.5-8.5 s: the frames change then.
    cars = rows(out, "intel_car-detection_silentaudio")
    diff = [np.abs(brightness(cars[t]["frames"]) - brightness(cars[1]["frames"])).mean() for t in (2, 6, 7)]
    assert diff[1] > diff[0] and diff[2] > diff[0]


# -- audio gaps, early ends, no duration, no audio ------------------------------


def test_audio_gap_and_early_end_keep_rows(ray_local, tmp_path):
    gap = write_pattern(tmp_path / "gap.mkv", Pattern(seconds=8, tone_hz=500.0, audio_gap=(2.0, 3.6)))
    early = write_pattern(tmp_path / "early.mp4", Pattern(seconds=8, tone_hz=500.0, audio_seconds=4.0))
    out = tmp_path / "clips"
    summary = run_ingest([str(gap), str(early)], str(out), small_config())
    assert summary.ok, summary.format()
    gap_rows, early_rows = rows(out, "gap"), rows(out, "early")
    assert len(gap_rows) == len(early_rows) == 8
    assert [r["has_audio"] for r in gap_rows] == [True, True, False, False, True, True, True, True]
    assert [r["has_audio"] for r in early_rows] == [True] * 4 + [False] * 4
    silence = LogMelConfig().silence_db
    # Row 2 holds the last 20 ms before the gap, then silence (filled, not shifted).
    per_frame = np.asarray(gap_rows[2]["logmel"], dtype=np.float32).reshape(128, 64).max(axis=0)
    assert np.all(per_frame[8:] == pytest.approx(silence, abs=1)) and per_frame[0] > silence + 50
    assert loudness(gap_rows[5]["logmel"]) > silence + 50
    assert all(r["has_video"] for r in gap_rows + early_rows)
    assert manifest(out, "early").seconds_without_audio == 4


def _write_live_mkv(path: Path) -> Path:
    """A matroska file written as a live stream: no duration in its header."""
    images = [np.full((64, 96, 3), 255 if 30 <= i < 34 else DARK, dtype=np.uint8) for i in range(55)]
    write_frames(path, images, fps=10, fmt="matroska", options={"live": "1"})
    return path


def test_container_without_duration_and_without_audio(ray_local, tmp_path):
    live = _write_live_mkv(tmp_path / "live.mkv")
    with av.open(str(live)) as probe_check:
        assert probe_check.duration is None  # the case under test
    out = tmp_path / "clips"
    summary = run_ingest([str(live)], str(out), small_config())
    assert summary.ok, summary.format()
    data = rows(out, "live")
    assert len(data) == 5  # 5.5 s of video
    assert [r["has_audio"] for r in data] == [False] * 5
    assert brightness(data[3]["frames"])[0] > 200
    info = manifest(out, "live").info
    assert info["duration_source"] == "scan" and info["has_audio"] is False


# -- bad input ------------------------------------------------------------------


def test_bad_files_fail_alone_with_reasons(ray_local, tmp_path):
    good = write_pattern(tmp_path / "good.mp4", Pattern(seconds=5))
    (tmp_path / "garbage.mp4").write_bytes(os.urandom(20_000))
    whole = write_pattern(tmp_path / "whole.mp4", Pattern(seconds=12, size=(320, 180)))
    data = whole.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov atom (at the end) lost
    whole.unlink()
    whole_ts = write_pattern(tmp_path / "whole.ts", Pattern(container="mpegts", seconds=12, size=(320, 180)))
    ts = tmp_path / "cut.ts"  # a live capture cut off: MPEG-TS has no index, so it reads as a shorter stream
    ts.write_bytes(whole_ts.read_bytes()[: whole_ts.stat().st_size // 2])
    whole_ts.unlink()
    audio_only = tmp_path / "voice.m4a"
    write_pattern(audio_only, Pattern(vcodec=None, container="mp4", seconds=3))
    audio_only = audio_only.rename(tmp_path / "voice.mp4")
    out = tmp_path / "clips"
    inputs = [str(good), str(tmp_path / "garbage.mp4"), str(tmp_path / "truncated.mp4"), str(ts),
              str(audio_only), str(tmp_path / "missing.mp4")]
    summary = run_ingest(inputs, str(out), small_config())
    assert not summary.ok
    status = {s.stream_id: s.status for s in summary.streams}
    assert status == {"good": "complete", "garbage": "failed", "truncated": "failed", "cut": "complete",
                      "voice": "failed", "missing": "failed"}
    reasons = {sid: " ".join(manifest(out, sid).errors) for sid in ("garbage", "truncated", "voice", "missing")}
    assert "garbage.mp4" in reasons["garbage"] and "not a readable video container" in reasons["garbage"]
    assert "truncated.mp4" in reasons["truncated"]
    assert "no video track" in reasons["voice"]
    assert "no such file" in reasons["missing"]
    assert len(rows(out, "good")) == 5
    assert 3 <= len(rows(out, "cut")) <= 9
    text = summary.format()
    assert "4 failed" in text and "truncated.mp4" in text
    for sid in ("garbage", "truncated", "voice", "missing"):
        assert not list((out / f"stream_id={sid}").glob("*.parquet"))
    assert not list(out.rglob(".tmp-*"))


def test_truncated_recording_with_index_at_front_is_reported(ray_local, tmp_path):
    """A faststart mp4 cut mid-way opens fine (its header is intact) but the
    media ends early: the stream fails as truncated instead of padding rows."""
    whole = tmp_path / "whole.mp4"
    pattern = Pattern(seconds=20, size=(320, 180), tone_hz=400.0)
    container_opts = {"movflags": "faststart"}
    pattern.extra = container_opts
    _write_faststart(whole, pattern)
    data = whole.read_bytes()
    cut = tmp_path / "cutfront.mp4"
    cut.write_bytes(data[: int(len(data) * 0.5)])
    out = tmp_path / "clips"
    summary = run_ingest([str(cut)], str(out), small_config())
    assert [s.status for s in summary.streams] == ["failed"]
    assert "truncated" in " ".join(manifest(out, "cutfront").errors)


def _write_faststart(path: Path, pattern: Pattern) -> None:
    plain = path.with_suffix(".plain.mp4")
    write_pattern(plain, pattern)
    with av.open(str(plain)) as src, av.open(str(path), "w", options={"movflags": "faststart"}) as dst:
        mapping = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is None:
                continue
            packet.stream = mapping[packet.stream.index]
            dst.mux(packet)
    plain.unlink()


def test_same_stem_from_another_file_is_refused_and_missing_inputs_keep_clips(ray_local, tmp_path):
    """A later run may not silently replace a stream's clips with another
    file of the same stem, and a source deleted after ingest (retention) does
    not destroy its clips."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_pattern(tmp_path / "a" / "cam1.mp4", Pattern(seconds=3))
    other = write_pattern(tmp_path / "b" / "cam1.mp4", Pattern(seconds=4))
    out = tmp_path / "clips"
    assert run_ingest([str(first)], str(out), small_config()).ok
    clash = run_ingest([str(other)], str(out), small_config())
    assert not clash.ok and "already ingested from" in clash.format()
    assert len(rows(out, "cam1")) == 3
    first.unlink()
    gone = run_ingest([str(first)], str(out), small_config())
    assert not gone.ok and "no such file" in gone.format()
    assert manifest(out, "cam1").status == "complete" and len(rows(out, "cam1")) == 3
    replaced = run_ingest([str(other)], str(out), small_config(), overwrite=True)
    assert replaced.ok and len(rows(out, "cam1")) == 4


def test_duplicate_stream_ids_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for sub in ("a", "b"):
        write_pattern(tmp_path / sub / "cam1.mp4", Pattern(seconds=2))
    with pytest.raises(InputError, match="cam1"):
        run_ingest([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "out"), small_config())


# -- resume, overwrite, interrupted runs ---------------------------------------


def test_resume_skips_complete_streams_and_overwrite_redoes_them(ray_local, tmp_path):
    video = write_pattern(tmp_path / "cam.mp4", Pattern(seconds=10, flash_at=(7,), click_at=(3,)))
    out = tmp_path / "clips"
    config = small_config()
    first = run_ingest([str(video)], str(out), config)
    assert first.ok and [s.status for s in first.streams] == ["complete"]
    files = sorted((out / "stream_id=cam").glob("*.parquet"))
    assert len(files) == 2  # 10 rows in shards of 8
    stamps = [f.stat().st_mtime_ns for f in files]

    # a run killed after committing the stream, before dropping its staging, left a staged part behind
    leftover = out / "_staging" / "cam" / "earlier-run" / "w-000000-4.parquet"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"staged")
    again = run_ingest([str(video)], str(out), config)
    assert [s.status for s in again.streams] == ["skipped"]
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert not (out / "_staging").exists()

    other = run_ingest([str(video)], str(out), small_config(jpeg_quality=50))  # another config: redone
    assert [s.status for s in other.streams] == ["complete"]

    redo = run_ingest([str(video)], str(out), config, overwrite=True)
    assert [s.status for s in redo.streams] == ["complete"]
    assert all(f.stat().st_mtime_ns != s for f, s in zip(files, stamps))
    assert_flash_and_click(video, rows(out, "cam"), flash=7, click=3, seconds=10)
    assert not (out / STAGING).exists()


def test_interrupted_run_resumes_from_staged_windows(ray_local, tmp_path):
    """The state a killed run leaves: one window staged, a half-written temp
    file and a 'running' manifest. The rerun reuses the staged window (only the
    other two are decoded), finishes the stream with the same rows as an
    uninterrupted run and leaves no temporary file behind."""
    import pyarrow as pa

    from pipelines.ingest.job import staged_part
    from pipelines.media.sources import VideoSource

    video = write_pattern(tmp_path / "cam.mp4", Pattern(seconds=10, flash_at=(1,), click_at=(9,)))
    config = small_config()
    reference = tmp_path / "reference"
    assert run_ingest([str(video)], str(reference), config).ok
    complete = rows(reference, "cam")

    out = tmp_path / "clips"
    store = OutputStore(str(out))
    StreamManifest("cam", str(video), "running", config.output_hash(), config.to_dict()).save(store)
    (out / "stream_id=cam" / ".tmp-deadbeef-part-00000.parquet").write_bytes(b"PAR1 half written")
    part = Path(staged_part(store, VideoSource(str(video), "cam"), config, start=0, seconds=4))
    part.parent.mkdir(parents=True)
    first_window = [r for r in complete if r["t"] < 4]
    pq.write_table(pa.Table.from_pylist(first_window, schema=clips_schema(config)), part)
    (part.parent / ".tmp-cafe-w-000000004-00004.parquet").write_bytes(b"half")

    resumed = run_ingest([str(video)], str(out), config)
    assert resumed.ok and [s.status for s in resumed.streams] == ["complete"]
    assert rows(out, "cam") == complete
    assert sum(manifest(out, "cam").windows_by_backend.values()) == 2  # 3 windows, 1 reused
    assert not (out / STAGING).exists()
    assert not list(out.rglob(".tmp-*"))


def test_window_size_change_between_runs_does_not_duplicate_rows(ray_local, tmp_path):
    """Staged windows are keyed by start and length: a resume with another
    --window-seconds never mixes overlapping parts."""
    import pyarrow as pa

    from pipelines.ingest.job import staged_part
    from pipelines.media.sources import VideoSource

    # A steady tone: AAC re-synthesises noise-like bands differently after a
    # seek (its noise substitution is seeded by decoder state), so only the
    # deterministic part of the audio is comparable across window layouts.
    video = write_pattern(tmp_path / "cam.mp4", Pattern(seconds=9, flash_at=(5,), click_at=(7,), tone_hz=700.0))
    out = tmp_path / "clips"
    store = OutputStore(str(out))
    coarse = small_config(window_seconds=6)
    reference = tmp_path / "reference"
    assert run_ingest([str(video)], str(reference), coarse).ok
    complete = rows(reference, "cam")
    part = Path(staged_part(store, VideoSource(str(video), "cam"), coarse, start=0, seconds=6))
    part.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(complete[:6], schema=clips_schema(coarse)), part)
    fine = small_config(window_seconds=3)
    summary = run_ingest([str(video)], str(out), fine)
    assert summary.ok, summary.format()
    resumed = rows(out, "cam")
    assert [r["t"] for r in resumed] == list(range(9))
    for got, want in zip(resumed, complete):
        assert got["frames"] == want["frames"] and got["has_audio"] == want["has_audio"]
        power_got = 10 ** (np.asarray(got["logmel"], dtype=np.float64) / 10)
        power_want = 10 ** (np.asarray(want["logmel"], dtype=np.float64) / 10)
        assert np.abs(power_got - power_want).sum() < 0.01 * power_want.sum(), got["t"]


# -- filesystem URIs and the command line ---------------------------------------


def test_filesystem_uri_inputs_and_outputs(ray_local, tmp_path):
    video = write_pattern(tmp_path / "uri.mp4", Pattern(seconds=4, flash_at=(2,), click_at=(1,)))
    out_uri = f"file://{tmp_path}/clips"
    summary = run_ingest([f"file://{tmp_path}/*.mp4"], out_uri, small_config())
    assert summary.ok, summary.format()
    assert_flash_and_click(video, rows(tmp_path / "clips", "uri"), flash=2, click=1, seconds=4)
    assert json.loads((tmp_path / "clips" / "stream_id=uri" / "manifest.json").read_text())["source"] == str(video)



def test_command_line_exit_codes_and_summary(tmp_path):
    good = write_pattern(tmp_path / "ok.mp4", Pattern(seconds=3))
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 5000)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, str(REPO / "jobs" / "ingest.py"), "--quiet", "--crop-size", "64", "--output",
           str(tmp_path / "clips"), "--input", str(good), str(tmp_path / "bad.mp4")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "1 ingested" in done.stdout and "1 failed" in done.stdout and "bad.mp4" in done.stdout
    usage = subprocess.run(cmd[:2] + ["--output", "x"], capture_output=True, text=True, env=env)
    assert usage.returncode == 2 and "--input" in usage.stderr
    bad_value = subprocess.run(cmd + ["--window-seconds", "0"], capture_output=True, text=True, env=env)
    assert bad_value.returncode == 2 and "window_seconds" in bad_value.stderr


# -- the generator's streams ------------------------------------------------------


def test_synthetic_views_ingest_and_join_their_labels(ray_local, tmp_path):
    """The generator's three views ingest into one row per whole second each,
    and labels.parquet joins to the clips by (stream_id, t)."""
    from pipelines.synthetic import SyntheticConfig, generate

    streams = generate(SyntheticConfig(out=tmp_path / "synth", minutes=1.0, seed=3, fps=5.0, rate_scale=4.0))
    out = tmp_path / "clips"
    summary = run_ingest([str(tmp_path / "synth")], str(out), small_config(window_seconds=20, shard_rows=40))
    assert summary.ok, summary.format()
    labels = pq.read_table(streams.labels).to_pandas()
    assert set(labels.stream_id) == {"train", "similar", "challenging"}
    for view in ("train", "similar", "challenging"):
        clips = read_stream(str(out), view, columns=["stream_id", "t", "has_audio", "has_video"]).to_pandas()
        assert clips.t.tolist() == list(range(60))
        assert clips.has_audio.all() and clips.has_video.all()
        joined = labels[labels.stream_id == view].merge(clips, on=["stream_id", "t"], how="left", indicator=True)
        assert len(joined) > 0 and (joined["_merge"] == "both").all()
