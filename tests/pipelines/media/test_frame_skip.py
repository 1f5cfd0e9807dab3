"""Decoding less than every frame (IngestConfig.frame_skip): the frames picked stay within the stated bound."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from pipelines.ingest.clip_table import frame_targets
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.window import WindowTask, window_clips
from pipelines.media.frames import TIME_EPS, select_frames_pyav, stream_backend
from pipelines.media.info import inspect_video
from pipelines.synthetic import SyntheticConfig, generate
from tests.media import Pattern, write_pattern

CROP = 64
B_FRAME = 3  # libavutil's AV_PICTURE_TYPE_B


def picture_types(path) -> list[int]:
    with av.open(str(path)) as container:
        return [int(frame.pict_type) for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """Files with B-frames: a 15-fps test pattern (mp4, mkv) and the synthetic generator's 10-fps stream."""
    directory = tmp_path_factory.mktemp("skip")
    files = [write_pattern(directory / f"b{suffix}", Pattern(seconds=9, fps=15, b_frames=2, flash_at=(2.1, 6.3)))
             for suffix in (".mp4", ".mkv")]
    generate(SyntheticConfig(out=directory / "synth", minutes=0.25, seed=3, size=(320, 180), fps=10.0, views=("train",)))
    files.append(directory / "synth" / "train.mp4")
    for path in files:
        assert B_FRAME in picture_types(path), path  # the option has something to skip
    return files


def test_nonref_frames_lie_within_the_b_frame_run_of_the_exact_ones(footage):
    for path in footage:
        info = inspect_video(str(path))
        frame = 1.0 / info.fps
        for start in (0, 3, 6):
            targets = frame_targets(start, 3, IngestConfig())
            exact = select_frames_pyav(str(path), info, targets, CROP)
            nonref = select_frames_pyav(str(path), info, targets, CROP, skip="nonref")
            keys = select_frames_pyav(str(path), info, targets, CROP, skip="nonkey")
            assert nonref.decoded < exact.decoded and keys.decoded < nonref.decoded, path
            assert np.all(targets - exact.shown_at < frame + TIME_EPS)  # exact: the frame shown at the target
            behind = exact.shown_at - nonref.shown_at
            assert np.all(behind >= -TIME_EPS) and np.all(behind <= 3 * frame + TIME_EPS), (path, start, behind)
            assert np.all(keys.shown_at <= nonref.shown_at + TIME_EPS)
            same = np.abs(behind) < TIME_EPS  # where the pick is the exact frame, so are the pixels
            for i in np.flatnonzero(same):
                assert np.array_equal(nonref.images[nonref.frame_index[i]], exact.images[exact.frame_index[i]])


def window(path, config: IngestConfig, start: int = 0, seconds: int = 6):
    info = inspect_video(str(path))
    task = WindowTask("cam", str(path), start, seconds, "", json.dumps(info.to_dict()), "pyav")
    table, result = window_clips(task, config)
    assert result.ok, result.error
    return table.to_pydict(), result, info


def test_a_window_keeps_every_frame_within_the_tolerance_or_is_decoded_in_full(footage):
    for path in footage:
        exact, exact_result, info = window(path, IngestConfig(crop_size=CROP))
        assert exact_result.max_frame_offset < 1.0 / info.fps + TIME_EPS and not exact_result.redecoded_in_full
        for skip, tolerance in [("nonref", 1.0), ("nonref", 2.0), ("nonkey", 1.0), ("nonkey", 100.0)]:
            rows, result, _ = window(path, IngestConfig(crop_size=CROP, frame_skip=skip, frame_skip_tolerance=tolerance))
            assert result.max_frame_offset <= tolerance / info.fps + TIME_EPS, (path, skip, tolerance)
            if result.redecoded_in_full:  # the full decode's rows, byte for byte
                assert rows == exact
            else:
                assert rows["t"] == exact["t"] and rows["logmel"] == exact["logmel"]
        # Keyframes every 2 s: at 1 frame of tolerance they cannot serve 5-fps targets; at 100 they do.
        assert window(path, IngestConfig(crop_size=CROP, frame_skip="nonkey"))[1].redecoded_in_full
        assert not window(path, IngestConfig(crop_size=CROP, frame_skip="nonkey", frame_skip_tolerance=100.0))[1].redecoded_in_full


def test_skip_settings_are_checked_and_hand_decord_streams_to_pyav(footage):
    with pytest.raises(ValueError, match="IngestConfig.frame_skip must be one of"):
        IngestConfig(frame_skip="bframes")
    with pytest.raises(ValueError, match="IngestConfig.frame_skip_tolerance"):
        IngestConfig(frame_skip_tolerance=0.5)
    assert IngestConfig().output_hash() != IngestConfig(frame_skip="nonref").output_hash()  # other rows: other hash
    info = inspect_video(str(footage[0]))
    assert stream_backend("decord", info, str(footage[0]), "nonref") == (
        "pyav", "decord cannot leave frames out (frame skip 'nonref'); frames decoded with pyav")
    assert stream_backend("decord", info, str(footage[0]), "none") == ("decord", "")
