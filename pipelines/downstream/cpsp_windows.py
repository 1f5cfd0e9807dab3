"""Windows of T seconds of our embeddings + per-second labels: the inputs of the CPSP head.

CPSP works on "videos" of T one-second segments (AVE: T = 10). Here a window is
T consecutive seconds t0 .. t0+T−1 of one stream, cut from the embeddings
dataset (DESIGN §3.2) with the per-second labels (§3.3):

- Training windows (``cut_windows``, ``build_windows``) never cross a stream
  boundary or a gap in t (a second without an embedding); a run of consecutive
  seconds gives windows at t0 = start, start + stride, ... while the window fits
  (the tail shorter than T is dropped).
- Prediction windows (``cover``) tile every second instead: per run, windows every
  T seconds, then one more aligned to the run's end when the run is not a multiple
  of T (it overlaps the previous window), and the whole run as one shorter window
  when the run is shorter than T. So a head predicts every second a per-second head
  predicts.
- Segment label of a second: one class or background, by the single rule of
  ``pipelines.downstream.labels`` (every label row counts; among the classes of a
  second, one both audible and visible first, then the rarest in the whole table,
  then the name), so the CPSP head and the linear probe are trained and scored on
  the same targets. ``event="audio_visual"`` keeps only rows both audible and
  visible first (AVE's definition of an audio-visual event).
- Class order: ``classes`` when given (it fixes the indices, so pass the same list
  for every split), else the sorted label names of the whole labels file (all
  streams, so every split of one file gets the same indices). A label not in
  ``classes`` is an error. CPSP indices put background last (class C, AVE's
  layout); the labels table puts it first (class 0): ``to_segment_labels`` and
  ``from_segment_labels`` convert.
- Video labels [W, C]: the classes present among the window's segment labels
  (multi-hot), and whether the window holds a background second (``CPSPData``
  derives it): the targets of the weakly supervised setting.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from epg.cpsp.train import CPSPData, video_labels_from_segments
from pipelines.downstream.labels import LabelTable, align_labels, read_labels
from pipelines.score.embeddings import Embeddings, read_embeddings

EventRule = Literal["any", "audio_visual"]
EVENT_RULES: tuple[str, ...] = get_args(EventRule)


class WindowsError(ValueError):
    """Windows cannot be built; the message names the input and the reason."""


@dataclass
class Windows:
    """visual, audio float32 [W, T, d]; segment_labels int64 [W, T] (C = background);
    video_labels float32 [W, C]; stream_id [W] (str); t0 int64 [W] (first second); classes: the C names."""

    visual: np.ndarray
    audio: np.ndarray
    segment_labels: np.ndarray
    video_labels: np.ndarray
    stream_id: np.ndarray
    t0: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.t0)

    @property
    def length(self) -> int:
        return int(self.segment_labels.shape[1])

    def segment_one_hot(self) -> np.ndarray:
        """[W, T, C+1] one-hot, background last (the AVE label layout)."""
        return np.eye(len(self.classes) + 1, dtype=np.float32)[self.segment_labels]

    def select(self, mask: np.ndarray) -> "Windows":
        return Windows(self.visual[mask], self.audio[mask], self.segment_labels[mask], self.video_labels[mask],
                       self.stream_id[mask], self.t0[mask], self.classes)

    def of_streams(self, stream_ids: list[str] | tuple[str, ...]) -> "Windows":
        return self.select(np.isin(self.stream_id, list(stream_ids)))

    def to_cpsp_data(self) -> CPSPData:
        return CPSPData(self.visual, self.audio, self.segment_labels, self.video_labels)


def to_segment_labels(target: np.ndarray, n_classes: int) -> np.ndarray:
    """Targets of the labels table (0 = background, 1..C events) → CPSP classes (0..C−1 events, C = background)."""
    target = np.asarray(target, np.int64)
    return np.where(target == 0, n_classes, target - 1)


def from_segment_labels(segment: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse of ``to_segment_labels``."""
    segment = np.asarray(segment, np.int64)
    return np.where(segment == n_classes, 0, segment + 1)


def segment_labels(labels: LabelTable, stream_id: np.ndarray, t: np.ndarray, classes: tuple[str, ...],
                   event: EventRule = "any") -> np.ndarray:
    """CPSP class of each row (stream_id[i], t[i]) in ``classes`` order (len(classes) = background)."""
    if event not in EVENT_RULES:
        raise WindowsError(f"event must be one of {EVENT_RULES}, got {event!r}")
    unknown = sorted(set(labels.classes[1:]) - set(classes))
    if unknown:
        raise WindowsError(f"labels {unknown} are not among the classes {list(classes)}")
    if event == "audio_visual":
        frame = labels.frame
        labels = dataclasses.replace(labels, frame=frame[frame["audible"] & frame["visible"]].reset_index(drop=True))
    target = align_labels(labels, stream_id, t).target  # table order, 0 = background
    to_classes = np.asarray([len(classes)] + [classes.index(c) for c in labels.classes[1:]], np.int64)
    return to_classes[target]


def window_starts(t: np.ndarray, length: int, stride: int) -> np.ndarray:
    """Row indices where windows start, for one stream's sorted seconds ``t`` (no window crosses a gap)."""
    return np.asarray([start for run_start, run_end in _runs(t)
                       for start in range(run_start, run_end - length + 1, stride)], np.int64)


def cover(t: np.ndarray, length: int) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of windows that together hold every second of one stream's sorted ``t``
    (the prediction tiling of the module docstring; windows never cross a gap)."""
    if length < 1:
        raise WindowsError(f"length must be >= 1, got {length}")
    ranges: list[tuple[int, int]] = []
    for run_start, run_end in _runs(t):
        if run_end - run_start <= length:
            ranges.append((run_start, run_end))
            continue
        ranges += [(s, s + length) for s in range(run_start, run_end - length + 1, length)]
        if ranges[-1][1] < run_end:
            ranges.append((run_end - length, run_end))
    return ranges


def _runs(t: np.ndarray) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of the runs of consecutive seconds of sorted ``t``."""
    if len(t) and (np.diff(t) <= 0).any():
        raise WindowsError("seconds of a stream must be strictly increasing (duplicate embedding rows?)")
    breaks = np.nonzero(np.diff(t) != 1)[0] + 1
    return [(int(a), int(b)) for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(t)]) if b > a]


def cut_windows(
    stream_id: np.ndarray,
    t: np.ndarray,
    visual: np.ndarray,
    audio: np.ndarray,
    segment: np.ndarray,
    classes: tuple[str, ...],
    *,
    length: int = 10,
    stride: int = 10,
) -> Windows:
    """Training windows of ``length`` seconds every ``stride`` seconds from per-second rows grouped by stream
    and sorted by t within a stream; ``segment`` [N] holds CPSP classes (len(classes) = background)."""
    if length < 1 or stride < 1:
        raise WindowsError(f"length and stride must be >= 1, got {length}, {stride}")
    background = len(classes)
    index_rows: list[np.ndarray] = []
    for stream in sorted(set(np.asarray(stream_id).tolist())):
        rows = np.nonzero(stream_id == stream)[0]
        for start in window_starts(t[rows], length, stride):
            index_rows.append(rows[start:start + length])
    if not index_rows:
        dim = visual.shape[1]
        empty = np.zeros((0, length, dim), np.float32)
        return Windows(empty, empty.copy(), np.zeros((0, length), np.int64), np.zeros((0, background), np.float32),
                       np.zeros(0, object), np.zeros(0, np.int64), classes)
    index = np.stack(index_rows)  # [W, T] rows
    window_segments = np.asarray(segment, np.int64)[index]
    return Windows(
        visual=np.asarray(visual, np.float32)[index],
        audio=np.asarray(audio, np.float32)[index],
        segment_labels=window_segments,
        video_labels=video_labels_from_segments(window_segments, background),
        stream_id=np.asarray(stream_id, object)[index[:, 0]],
        t0=np.asarray(t, np.int64)[index[:, 0]],
        classes=classes,
    )


def build_windows(
    emb: Embeddings,
    labels: LabelTable,
    *,
    classes: tuple[str, ...] | list[str] | None = None,
    length: int = 10,
    stride: int = 10,
    event: EventRule = "any",
) -> Windows:
    """Cut ``emb`` into windows of ``length`` seconds every ``stride`` seconds and label them."""
    classes = tuple(classes) if classes is not None else labels.classes[1:]
    if not classes:
        raise WindowsError(f"no classes: the labels table {labels.path!r} is empty and no class list was given")
    if len(emb) and not set(emb.streams) & labels.streams:
        raise WindowsError(f"the labels {labels.path!r} share no stream with the embeddings "
                           f"(embeddings: {emb.streams[:5]}...)")
    segment = segment_labels(labels, emb.stream_id, emb.t, classes, event)
    return cut_windows(emb.stream_id, emb.t, emb.v, emb.a, segment, classes, length=length, stride=stride)


def read_windows(
    embeddings_root: str,
    labels_path: str | Path,
    *,
    stream_ids: list[str] | None = None,
    classes: tuple[str, ...] | list[str] | None = None,
    length: int = 10,
    stride: int = 10,
    event: EventRule = "any",
) -> Windows:
    """``build_windows`` on an embeddings directory (complete streams only; the given ones when named) and a
    labels file (Parquet or CSV, path or URI, read by ``pipelines.downstream.labels.read_labels``)."""
    return build_windows(read_embeddings(embeddings_root, stream_ids), read_labels(str(labels_path)), classes=classes,
                         length=length, stride=stride, event=event)


def split_by_time(windows: Windows, val_fraction: float) -> tuple[Windows, Windows]:
    """(train, val): per stream, the windows starting in the last ``val_fraction`` of its covered seconds
    go to val; train windows that overlap a val window in time are dropped, so no second is in both."""
    if not 0.0 < val_fraction < 1.0:
        raise WindowsError(f"val_fraction must be in (0, 1), got {val_fraction}")
    is_val = np.zeros(len(windows), bool)
    keep = np.ones(len(windows), bool)
    for stream in sorted(set(windows.stream_id.tolist())):
        rows = np.nonzero(windows.stream_id == stream)[0]
        first, last = windows.t0[rows].min(), windows.t0[rows].max() + windows.length
        cut = last - val_fraction * (last - first)
        val_rows = rows[windows.t0[rows] >= cut]
        is_val[val_rows] = True
        if val_rows.size:
            boundary = windows.t0[val_rows].min()
            keep[rows[(windows.t0[rows] < boundary) & (windows.t0[rows] + windows.length > boundary)]] = False
    return windows.select(~is_val & keep), windows.select(is_val)
