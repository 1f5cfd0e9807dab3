"""Frame and audio reading (pipelines.media): object-store inputs through file handles, kept-open containers."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.media import Pattern, write_pattern

CROP = 64
F = 5


def test_remote_files_are_read_through_file_handles(tmp_path, monkeypatch):
    """Object-store inputs reach PyAV as pyarrow file handles (never local
    paths): probe, frame selection and audio work on them, and decord, which
    needs a local path, hands the source to PyAV."""
    import pyarrow.fs as pafs

    from pipelines.media.audio import read_audio
    from pipelines.media.frames import BackendUnsupported, select_frames, select_frames_pyav
    from pipelines.media.info import inspect_video

    video = write_pattern(tmp_path / "obj.mp4", Pattern(seconds=6, flash_at=(2.1,), click_at=(4,)))
    import pipelines.media.sources

    bucket = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    opened = []
    real_from_uri = pipelines.media.sources.filesystem_from_uri

    def fake_from_uri(uri):
        if uri.startswith("fake://"):
            opened.append(uri)
            return bucket, uri[len("fake://"):]
        return real_from_uri(uri)

    monkeypatch.setattr(pipelines.media.sources, "filesystem_from_uri", fake_from_uri)
    uri = "fake://obj.mp4"
    info = inspect_video(uri)
    assert info.whole_seconds == 6 and info.has_audio
    targets = np.array([2.0, 2.2, 2.4, 2.6, 4.0])
    remote = select_frames_pyav(uri, info, targets, CROP)
    local = select_frames_pyav(str(video), info, targets, CROP)
    assert [bool(remote.images[i].mean() > 128) for i in remote.frame_index] == [False, True, True, False, False]
    assert np.array_equal(remote.shown_at, local.shown_at)
    audio = read_audio(uri, info, 4, 2, 44_100)
    assert audio.coverage.tolist() == [1.0, 1.0] and np.abs(audio.waveform[:44_100]).max() > 0.4
    with pytest.raises(BackendUnsupported, match="local"):
        select_frames("decord", uri, None, info, targets, CROP, 1)
    assert len(opened) >= 3


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_frame_pass_keeps_its_container_open_without_changing_frames(tmp_path, monkeypatch, suffix):
    """Windows decoded one after another on one kept-open container (a worker's
    consecutive windows) select exactly the frames a fresh container gives,
    B-frames included; a file replaced at the same path is opened anew."""
    from pipelines.media import containers
    from pipelines.media.frames import select_frames_pyav
    from pipelines.media.info import inspect_video

    video = write_pattern(tmp_path / f"keep{suffix}", Pattern(seconds=9, fps=15, b_frames=2, flash_at=(2.1, 6.3)))
    info = inspect_video(str(video))
    windows = [frame_targets_of(start) for start in range(2, 8, 2)]  # each seeks (window 0 reads from the start)
    opens = []
    real_open = containers.av.open
    monkeypatch.setattr(containers.av, "open", lambda *a, **k: opens.append(a) or real_open(*a, **k))

    containers.close_all()
    kept = [select_frames_pyav(str(video), info, targets, CROP) for targets in windows]
    assert len(opens) == 1, "consecutive windows of one file should share one open container"
    for targets, reused in zip(windows, kept):
        containers.close_all()
        fresh = select_frames_pyav(str(video), info, targets, CROP)
        assert np.array_equal(fresh.shown_at, reused.shown_at)
        assert np.array_equal(fresh.frame_index, reused.frame_index)
        assert all(np.array_equal(a, b) for a, b in zip(fresh.images, reused.images))
    lit = [[round(t, 1) for t, i in zip(targets, s.frame_index) if s.images[i].mean() > 128]
           for targets, s in zip(windows, kept)]
    assert lit == [[2.2, 2.4], [], [6.4, 6.6]]

    select_frames_pyav(str(video), info, windows[0], CROP)  # leaves the old file's container open
    other = write_pattern(tmp_path / f"other{suffix}", Pattern(seconds=9, fps=15, b_frames=2, flash_at=(3.1,)))
    os.replace(other, video)
    opens.clear()
    replaced = select_frames_pyav(str(video), info, windows[0], CROP)
    assert len(opens) == 1
    assert [round(t, 1) for t, i in zip(windows[0], replaced.frame_index) if replaced.images[i].mean() > 128] == [3.2, 3.4]
    containers.close_all()


def frame_targets_of(start: int, seconds: int = 2) -> np.ndarray:
    return np.array([start + k + j / F for k in range(seconds) for j in range(F)])
