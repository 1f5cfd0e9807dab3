"""Scoring inputs: clip rows (read from clips Parquet, or decoded from a video window in memory)
-> the decoded tensors the model actors take, plus the bookkeeping the driver needs.

Both input kinds go through ``scoring_rows``, which JPEG-decodes with the training decode
(``pipelines.train.data.decode_clips``), so a video scored directly gives the embeddings of
the same video ingested and then scored.

Row layout (one dict of numpy arrays per batch):

    stream_id str, t int32      the clip; t = -1 for a placeholder row (no clip, see below)
    video uint8 [n, 2, 3, F, H, W], audio float32 [n, 1, n_mels, T]
    clips int32                 input clips this row accounts for (itself + the unscored ones
                                attached to it), so the driver can tell when a stream is whole
    no_audio, no_video, unscored int32   clips without audio / video / either (attached to
                                the first row of each stream in a batch)
    error str                   a failure of this row's clips (their stream fails)
    window str                  the video window's ``WindowResult`` as JSON (first row of a window)

Decision: a clip without audio or video (has_audio/has_video false) is not scored (it has no
aligned pair and the model never saw such clips) and gives no embeddings row; it is counted in
the stream's manifest. When no clip of a batch's stream is scorable, one placeholder row
(t = -1, zero tensors) carries the counts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from epg.config import ModelConfig
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.window import WindowTask, bounded_window_arrays, bounded_window_clips
from pipelines.media.storage import OutputStore
from pipelines.train.data import CLIP_COLUMNS, decode_clips

COUNT_COLUMNS = ("clips", "no_audio", "no_video", "unscored")


@dataclass(frozen=True)
class ClipShape:
    """What one clip looks like to the model (checked against the clips before scoring)."""

    crop_size: int
    frames: int
    n_mels: int
    logmel_frames: int

    @classmethod
    def of_model(cls, model: ModelConfig) -> "ClipShape":
        return cls(model.visual.crop_size, model.visual.frames, model.audio.n_mels, model.audio.frames)


def _segment(stream_id: str, t: np.ndarray, complete: np.ndarray, no_audio: int, no_video: int, shape: ClipShape,
             window: str, decode: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Rows of one stream's clips of a batch (all arrays of equal length n >= 1); ``decode(keep)`` gives the
    kept clips' video uint8 [k, 2, 3, F, H, W] and audio float32 [k, 1, n_mels, T]."""
    keep = np.flatnonzero(complete)
    n_in = len(t)
    error = ""
    if keep.size:
        try:
            video, audio = decode(keep)
            times = t[keep].astype(np.int32)
        except Exception as exc:  # a corrupt JPEG or log-mel fails the stream, naming the clips
            error = f"clips {int(t[0])}-{int(t[-1])} s cannot be decoded: {type(exc).__name__}: {exc}"
    if not keep.size or error:
        size = shape.crop_size
        video = np.zeros((1, 2, 3, shape.frames, size, size), np.uint8)
        audio = np.zeros((1, 1, shape.n_mels, shape.logmel_frames), np.float32)
        times = np.array([-1], np.int32)
    n = len(times)
    clips = np.ones(n, np.int32)
    clips[0] += n_in - n
    counts = {name: np.zeros(n, np.int32) for name in ("no_audio", "no_video", "unscored")}
    counts["no_audio"][0], counts["no_video"][0] = no_audio, no_video
    counts["unscored"][0] = 0 if error else n_in - keep.size
    windows = np.full(n, "", dtype=object)
    windows[0] = window
    return {
        "stream_id": np.full(n, stream_id, dtype=object), "t": times, "video": video, "audio": audio,
        "clips": clips, **counts, "error": np.full(n, error, dtype=object), "window": windows,
    }


def _jpeg_decoder(stream_id: str, t: np.ndarray, frames: Sequence[Any], logmel: Sequence[Any], shape: ClipShape):
    """``decode(keep)`` of clip rows: the training decode (JPEG crops, log-mel)."""
    def decode(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        decoded = decode_clips(
            {"stream_id": [stream_id] * keep.size, "t": t[keep], "frames": [frames[i] for i in keep],
             "logmel": [logmel[i] for i in keep]},
            stream_index={stream_id: 0}, frames_per_clip=shape.frames, n_mels=shape.n_mels,
            logmel_frames=shape.logmel_frames,
        )
        return decoded["video"].reshape(keep.size, 2, *decoded["video"].shape[1:]), decoded["audio"][0::2]

    return decode


def concat_rows(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def scoring_rows(batch: Mapping[str, Any], shape: ClipShape, window: str = "") -> dict[str, np.ndarray]:
    """Clip rows (the §3.1 columns) -> scoring rows, stream by stream in order of appearance."""
    stream_ids = [str(s) for s in batch["stream_id"]]
    t = np.asarray(batch["t"], dtype=np.int64)
    has_audio = np.asarray(batch["has_audio"], dtype=bool)
    has_video = np.asarray(batch["has_video"], dtype=bool)
    parts = []
    start = 0
    while start < len(stream_ids):
        end = start
        while end < len(stream_ids) and stream_ids[end] == stream_ids[start]:
            end += 1
        part = slice(start, end)
        decode = _jpeg_decoder(stream_ids[start], t[part], batch["frames"][part], batch["logmel"][part], shape)
        parts.append(_segment(
            stream_ids[start], t[part], has_audio[part] & has_video[part], int((~has_audio[part]).sum()),
            int((~has_video[part]).sum()), shape, window if start == 0 else "", decode,
        ))
        start = end
    return concat_rows(parts)


@dataclass(frozen=True)
class ClipSlice:
    """``rows`` consecutive clip rows of one clips Parquet file, from row ``first``: one decode task's input."""

    stream_id: str
    path: str
    first: int
    rows: int


def clip_slices(stream_id: str, path: str, file_rows: int, rows_per_slice: int) -> list[ClipSlice]:
    return [ClipSlice(stream_id, path, first, min(rows_per_slice, file_rows - first))
            for first in range(0, file_rows, rows_per_slice)]


def read_clip_slice(piece: ClipSlice, store: OutputStore) -> pa.Table:
    """The slice's rows (``CLIP_COLUMNS``), reading only the row groups that hold them."""
    with store.fs.open_input_file(piece.path) as handle:
        parquet = pq.ParquetFile(handle)
        meta = parquet.metadata
        groups, offsets, offset = [], [], 0
        for g in range(meta.num_row_groups):
            size = meta.row_group(g).num_rows
            if offset < piece.first + piece.rows and offset + size > piece.first:
                groups.append(g)
                offsets.append(offset)
            offset += size
        table = parquet.read_row_groups(groups, columns=CLIP_COLUMNS)
    return table.slice(piece.first - offsets[0], piece.rows) if groups else table.slice(0, 0)


def clip_slice_rows(batch: Mapping[str, Any], *, clips: str, shape: ClipShape) -> dict[str, np.ndarray]:
    """Ray Data map over ``ClipSlice`` rows: read each slice, then decode it for the model. A slice that
    cannot be read (or holds fewer rows than its file said) fails its stream, naming the file."""
    store = OutputStore(clips)
    parts = []
    for i in range(len(batch["path"])):
        piece = ClipSlice(**{name: _plain(batch[name][i]) for name in ClipSlice.__dataclass_fields__})
        try:
            table = read_clip_slice(piece, store)
            if table.num_rows != piece.rows:
                raise ValueError(f"{table.num_rows} rows from row {piece.first}, {piece.rows} expected")
        except Exception as exc:
            error = f"{piece.path}: cannot be read: {type(exc).__name__}: {exc}"
            parts.append(_failed_rows(piece.stream_id, piece.rows, error, shape))
            continue
        parts.append(scoring_rows(table_columns(table), shape))
    return concat_rows(parts)


def table_columns(table: pa.Table) -> dict[str, Any]:
    """A table of clip rows -> the columns ``scoring_rows`` takes."""
    return {
        "stream_id": table.column("stream_id").to_pylist(),
        "t": table.column("t").to_numpy(),
        "frames": table.column("frames").to_pylist(),
        "logmel": table.column("logmel").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(table.num_rows, -1),
        "has_audio": table.column("has_audio").to_numpy(zero_copy_only=False),
        "has_video": table.column("has_video").to_numpy(zero_copy_only=False),
    }


def window_task_rows(task: WindowTask, config: IngestConfig, shape: ClipShape, round_trip: bool = True
                     ) -> dict[str, np.ndarray]:
    """Decode one video window in memory -> scoring rows: ingest's decode with its JPEG round trip (the
    embeddings of the same video ingested, then scored), or the raw crops (``round_trip`` False)."""
    if not round_trip:
        return _raw_window_rows(task, config, shape)
    table, result = bounded_window_clips(task, config)
    window = json.dumps(asdict(result))
    if table is None:
        return _failed_rows(task.stream_id, task.seconds, result.error, shape, window)
    return scoring_rows(table_columns(table), shape, window)


def _raw_window_rows(task: WindowTask, config: IngestConfig, shape: ClipShape) -> dict[str, np.ndarray]:
    arrays, result = bounded_window_arrays(task, config)
    window = json.dumps(asdict(result))
    if arrays is None:
        return _failed_rows(task.stream_id, task.seconds, result.error, shape, window)
    has_audio, has_video = arrays["has_audio"], arrays["has_video"]

    def decode(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return arrays["video"][keep], arrays["logmel"][keep].reshape(keep.size, 1, shape.n_mels, shape.logmel_frames)

    return _segment(task.stream_id, arrays["t"], has_audio & has_video, int((~has_audio).sum()),
                    int((~has_video).sum()), shape, window, decode)


def _failed_rows(stream_id: str, clips: int, error: str, shape: ClipShape, window: str = "") -> dict[str, np.ndarray]:
    """One placeholder row carrying the clips of a failed window or clips slice, and its error."""
    size = shape.crop_size
    return {
        "stream_id": np.array([stream_id], dtype=object), "t": np.array([-1], np.int32),
        "video": np.zeros((1, 2, 3, shape.frames, size, size), np.uint8),
        "audio": np.zeros((1, 1, shape.n_mels, shape.logmel_frames), np.float32),
        "clips": np.array([clips], np.int32), "no_audio": np.zeros(1, np.int32),
        "no_video": np.zeros(1, np.int32), "unscored": np.zeros(1, np.int32),
        "error": np.array([error], dtype=object), "window": np.array([window], dtype=object),
    }


def window_batch_rows(batch: Mapping[str, Any], *, config: IngestConfig, shape: ClipShape,
                      round_trip: bool = True) -> dict[str, np.ndarray]:
    """Ray Data map over window task rows (one or more windows per batch)."""
    parts = []
    for i in range(len(batch["stream_id"])):
        task = WindowTask(**{name: _plain(batch[name][i]) for name in WindowTask.__dataclass_fields__})
        parts.append(window_task_rows(task, config, shape, round_trip))
    return concat_rows(parts)


def _plain(value: Any) -> Any:
    """numpy scalars from a Ray Data batch -> Python values."""
    return value.item() if isinstance(value, np.generic) else value
