"""One unit of parallel ingest work: decode a time window of one video into
clip rows and stage them as a Parquet part (atomically). Failures are
returned as data, never raised, so one bad window or file cannot stop the
rest of the job.

The ``bounded_*`` entry points are what Ray tasks call: the decode runs in the
worker's child process (``pipelines.runtime.isolated``), so a decoder that hangs
past ``IngestConfig.decode_timeout`` or crashes fails its window (file) with the
reason instead of hanging the job or killing the worker.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from pipelines.ingest.clip_table import clips_schema, frame_targets, window_crops, window_table
from pipelines.ingest.config import FRAME_BACKENDS, IngestConfig
from pipelines.media.audio import WindowAudio, read_audio
from pipelines.media.frames import TIME_EPS, FrameSelection, select_frames
from pipelines.media.info import VideoInfo, inspect_row
from pipelines.media.sources import VideoSource, filesystem_from_uri
from pipelines.media.storage import OutputStore
from pipelines.runtime.isolated import CallTimedOut, ChildDied, bounded_call

# Header duration beyond the last decoded media by more than this => truncated.
TRUNCATION_SLACK_SECONDS = 2.0


@dataclass
class WindowTask:
    stream_id: str
    uri: str
    start: int
    seconds: int
    part_path: str  # staged Parquet part this window writes
    info_json: str  # VideoInfo as JSON (travels through Ray Data rows as a plain string)
    backend: str = ""  # frame backend chosen for the stream ("" = the configured one)


@dataclass
class WindowResult:
    stream_id: str
    start: int
    seconds: int
    ok: bool
    rows: int = 0
    error: str = ""
    backend: str = ""
    fallback: str = ""  # why the configured backend was not used
    audio_warning: str = ""
    media_end: float = float("nan")  # last moment with decoded audio or video
    seconds_without_audio: int = 0
    seconds_without_video: int = 0
    max_frame_offset: float = float("nan")  # the longest a target's frame was shown before it (s; nan: no frame)
    redecoded_in_full: bool = False  # the skipping decode picked a frame beyond the tolerance: decoded again
    damaged_packets: int = 0  # packets the decoders could not decode and left out (a damaged recording)
    stopped: str = ""  # its decode process was stopped: "hung" (past decode_timeout) or "crashed"
    wall_seconds: float = 0.0


def _frames_with_fallback(task: WindowTask, info: VideoInfo, config: IngestConfig, targets: np.ndarray, skip: str):
    source = VideoSource(uri=task.uri, stream_id=task.stream_id)
    first = task.backend or config.frame_backend
    order = [first]
    if config.fallback_backend:
        order += [b for b in FRAME_BACKENDS if b != first]
    problems = []
    for backend in order:
        try:
            selection = select_frames(
                backend, task.uri, source.local_path, info, targets, config.crop_size, config.decode_threads, skip
            )
            return selection, backend, "; ".join(problems)
        except Exception as exc:  # any backend failure hands the window on
            problems.append(f"{backend} failed: {type(exc).__name__}: {exc}")
    raise RuntimeError("; ".join(problems))


def frame_offsets(targets: np.ndarray, selection: FrameSelection) -> np.ndarray:
    """How long before each target its frame was shown (s; nan where the target has no frame)."""
    return targets - selection.shown_at


def _frames(task: WindowTask, info: VideoInfo, config: IngestConfig, targets: np.ndarray):
    """The window's frames: with a frame skip, kept only when every frame is within the tolerance of its target."""
    selection, backend, fallback = _frames_with_fallback(task, info, config, targets, config.frame_skip)
    if config.frame_skip == "none":
        return selection, backend, fallback, False
    offsets = frame_offsets(targets, selection)
    bound = config.frame_skip_tolerance / info.fps + TIME_EPS if info.fps > 0 else 0.0
    if not np.any(offsets[np.isfinite(offsets)] > bound):
        return selection, backend, fallback, False
    selection, backend, fallback = _frames_with_fallback(task, info, config, targets, "none")
    return selection, backend, fallback, True


def window_clips(task: WindowTask, config: IngestConfig) -> tuple[pa.Table | None, WindowResult]:
    """Decode a window into its clip table in memory (no file written): what ingest
    stages, and what the scorer embeds straight from a video. The table is None when
    the window failed (``result.error`` says why)."""
    return _decoded_window(task, config, lambda selection, audio: window_table(
        task.stream_id, task.start, task.seconds, selection, audio, config))


def window_arrays(task: WindowTask, config: IngestConfig) -> tuple[dict[str, np.ndarray] | None, WindowResult]:
    """Decode a window into the model's arrays (``clip_table.window_crops``): no JPEG round trip."""
    return _decoded_window(task, config, lambda selection, audio: window_crops(
        task.start, task.seconds, selection, audio, config))


def _decoded_window(task: WindowTask, config: IngestConfig, build):
    """Frames and audio of the window, then ``build(selection, audio)``; (None, result) when it failed."""
    began = time.perf_counter()
    info = VideoInfo.from_dict(json.loads(task.info_json))
    result = WindowResult(task.stream_id, task.start, task.seconds, ok=False)
    built = None
    try:
        targets = frame_targets(task.start, task.seconds, config)
        selection, result.backend, result.fallback, result.redecoded_in_full = _frames(task, info, config, targets)
        offsets = frame_offsets(targets, selection)
        result.max_frame_offset = float(np.nanmax(offsets)) if np.isfinite(offsets).any() else float("nan")
        try:
            audio = read_audio(task.uri, info, task.start, task.seconds, config.logmel.sample_rate)
        except Exception as exc:
            rate = config.logmel.sample_rate
            audio = WindowAudio(
                np.zeros(task.seconds * rate, np.float32), np.zeros(task.seconds, np.float32), f"audio unreadable: {exc}"
            )
        result.audio_warning = audio.warning or ""
        result.damaged_packets = selection.damaged_packets + audio.damaged_packets
        built = build(selection, audio)
        has_audio, has_video = _flags(built)
        result.rows = len(has_audio)
        result.seconds_without_audio = int((~has_audio).sum())
        result.seconds_without_video = int((~has_video).sum())
        audio_end = _last_covered(audio, task.start)
        video_end = selection.last_time + (1.0 / info.fps if info.fps > 0 else 0.0)
        ends = [e for e in (audio_end, video_end) if not math.isnan(e)]
        result.media_end = max(ends) if ends else float("nan")
        result.ok = True
    except Exception as exc:
        built = None
        result.error = _window_error(task, exc)
    result.wall_seconds = time.perf_counter() - began
    return built, result


def _flags(built: pa.Table | dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(built, pa.Table):
        return (built.column("has_audio").to_numpy(zero_copy_only=False),
                built.column("has_video").to_numpy(zero_copy_only=False))
    return built["has_audio"], built["has_video"]


def decode_window(task: WindowTask, config: IngestConfig, store: OutputStore) -> WindowResult:
    """Decode a window and stage its rows as a Parquet part (atomic)."""
    began = time.perf_counter()
    table, result = window_clips(task, config)
    if table is not None:
        try:
            result.rows = store.write_parquet(task.part_path, [table], clips_schema(config), config.compression)
        except Exception as exc:  # e.g. a full disk (the error names the file)
            result.ok, result.error = False, _window_error(task, exc)
    result.wall_seconds = time.perf_counter() - began
    return result


def _window_error(task: WindowTask, exc: Exception) -> str:
    return f"{task.uri}: window {task.start}-{task.start + task.seconds} s: {type(exc).__name__}: {exc}"


def _last_covered(audio: WindowAudio, start: int) -> float:
    covered = np.nonzero(audio.coverage > 0)[0]
    if covered.size == 0:
        return float("nan")
    last = int(covered[-1])
    return start + last + float(audio.coverage[last])


def decode_window_row(row: dict, config: IngestConfig, store: OutputStore) -> dict:
    """Ray Data adapter: a task row in, a result row out (the decode bounded, see the module docstring)."""
    task = WindowTask(**{k: row[k] for k in WindowTask.__dataclass_fields__ if k in row})
    began = time.perf_counter()
    try:
        return asdict(bounded_decode(decode_window, task, config, store, timeout=config.decode_timeout))
    except (CallTimedOut, ChildDied) as exc:
        return asdict(_stopped_window(task, exc, time.perf_counter() - began))


def bounded_window_clips(task: WindowTask, config: IngestConfig) -> tuple[pa.Table | None, WindowResult]:
    """``window_clips`` with the decode bounded (the scorer's decode of a video window)."""
    return _bounded_build(window_clips, task, config)


def bounded_window_arrays(task: WindowTask, config: IngestConfig) -> tuple[dict[str, np.ndarray] | None, WindowResult]:
    """``window_arrays`` with the decode bounded."""
    return _bounded_build(window_arrays, task, config)


def _bounded_build(build, task: WindowTask, config: IngestConfig):
    began = time.perf_counter()
    try:
        return bounded_decode(build, task, config, timeout=config.decode_timeout)
    except (CallTimedOut, ChildDied) as exc:
        return None, _stopped_window(task, exc, time.perf_counter() - began)


def bounded_decode(fn, *args, timeout: float):
    """``bounded_call``, once more in a new process when the first was SIGKILLed from outside (the kernel's
    OOM killer, an operator): the unbounded path would have lost its Ray worker, which Ray retries."""
    try:
        return bounded_call(fn, *args, timeout=timeout)
    except ChildDied as exc:
        if exc.signal != signal.SIGKILL:
            raise
    return bounded_call(fn, *args, timeout=timeout)


def _stopped_window(task: WindowTask, exc: CallTimedOut | ChildDied, seconds: float) -> WindowResult:
    stopped = "hung" if isinstance(exc, CallTimedOut) else "crashed"
    return WindowResult(task.stream_id, task.start, task.seconds, ok=False, stopped=stopped, wall_seconds=seconds,
                        error=f"{task.uri}: window {task.start}-{task.start + task.seconds} s: decode {exc}")


def inspect_source_row(row: dict, config: IngestConfig) -> dict:
    """``inspect_row`` with the inspection bounded like a window's decode; a stopped one is the file's error."""
    try:
        return {**bounded_decode(inspect_row, row, timeout=config.decode_timeout), "stopped": ""}
    except (CallTimedOut, ChildDied) as exc:
        stopped = "hung" if isinstance(exc, CallTimedOut) else "crashed"
        return {**row, "info_json": "", "error": f"{row['uri']}: inspection {exc}", "stopped": stopped}


def source_key(source: VideoSource) -> str:
    """Changes when the file is replaced, so stale staged windows are not reused."""
    if source.is_local:
        fs, path = pafs.LocalFileSystem(), source.uri
    else:
        fs, path = filesystem_from_uri(source.uri)
    info = fs.get_file_info(path)
    blob = f"{source.uri}|{info.size}|{info.mtime_ns}".encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def time_windows(info: VideoInfo, window_seconds: int) -> list[tuple[int, int]]:
    total = info.whole_seconds
    return [(s, min(window_seconds, total - s)) for s in range(0, total, window_seconds)]


def window_warnings(results: list[WindowResult]) -> list[str]:
    """Backend fallbacks and audio decode problems of a stream's windows, for its manifest."""
    warnings = [f"window {r.start} s: {r.fallback}" for r in results if r.fallback]
    return warnings + [f"window {r.start} s: {r.audio_warning}" for r in results if r.audio_warning]


def truncation_error(source: str, info: VideoInfo, results: list[WindowResult]) -> str | None:
    """The header promises more than both streams delivered (all windows decoded): a truncated recording."""
    ends = [r.media_end for r in results if not math.isnan(r.media_end)]
    media_end = max(ends) if ends else 0.0
    if info.duration_source == "header" and media_end < info.duration - TRUNCATION_SLACK_SECONDS:
        return (
            f"{source}: truncated recording: audio and video end at {media_end:.1f} s but the header says "
            f"{info.duration:.1f} s"
        )
    return None
