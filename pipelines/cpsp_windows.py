"""10-s windows of our embeddings + per-second labels: the inputs of the CPSP head.

CPSP works on "videos" of T one-second segments (AVE: T = 10). Here a window is
T consecutive seconds t0 .. t0+T−1 of one stream, cut from the embeddings
dataset (DESIGN §3.2) with the per-second labels (§3.3):

- Windows never cross a stream boundary or a gap in t (a second without an
  embedding); a run of consecutive seconds gives windows at t0 = start,
  start + stride, ... while the window fits (the tail shorter than T is dropped).
- Segment label of a second: one class or background.
  ``event="any"``: a label row counts when the class is audible or visible (all
  rows of the synthetic labels); ``event="audio_visual"``: only when it is both
  (AVE's definition of an audio-visual event). Several counting classes in one
  second: a class that is both audible and visible wins over one that is only
  heard or only seen; among equals, the first in class order. Seconds without a
  counting row are background (class C).
- Class order: ``classes`` when given (it fixes the indices, so pass the same
  list for every split), else the sorted label names of the whole labels file
  (all streams, so every split of one file gets the same indices). A label not
  in ``classes`` is an error.
- Video labels [W, C]: the classes present among the window's segment labels
  (multi-hot), the targets of the weakly supervised setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from epg.cpsp.train import CPSPData, video_labels_from_segments
from pipelines.embeddings import Embeddings, read_embeddings

EventRule = Literal["any", "audio_visual"]
LABEL_COLUMNS = ("stream_id", "t", "label", "audible", "visible")


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


def read_labels(path: str | Path) -> pd.DataFrame:
    """A labels table (Parquet, or CSV by its .csv suffix) with columns stream_id, t, label, audible, visible."""
    path = Path(path)
    if not path.is_file():
        raise WindowsError(f"labels file {str(path)!r} does not exist")
    table = pacsv.read_csv(path) if path.suffix.lower() == ".csv" else pq.read_table(path)
    missing = [c for c in LABEL_COLUMNS if c not in table.column_names]
    if missing:
        raise WindowsError(f"labels file {str(path)!r} lacks column(s) {missing}")
    frame = table.select(list(LABEL_COLUMNS)).to_pandas()
    frame["stream_id"] = frame["stream_id"].astype(str)
    frame["t"] = frame["t"].astype(np.int64)
    frame["label"] = frame["label"].astype(str)
    for column in ("audible", "visible"):
        frame[column] = frame[column].astype(bool)
    return frame


def second_labels(labels: pd.DataFrame, classes: tuple[str, ...], event: EventRule = "any") -> dict[tuple[str, int], int]:
    """{(stream_id, t): class index} by the rules in the module docstring; background seconds are absent."""
    if event not in ("any", "audio_visual"):
        raise WindowsError(f"event must be 'any' or 'audio_visual', got {event!r}")
    unknown = sorted(set(labels["label"]) - set(classes))
    if unknown:
        raise WindowsError(f"labels {unknown} are not among the classes {list(classes)}")
    both = labels["audible"] & labels["visible"]
    counts = both if event == "audio_visual" else labels["audible"] | labels["visible"]
    rows = labels[counts].assign(
        class_index=lambda f: f["label"].map({name: i for i, name in enumerate(classes)}),
        only_one=~both[counts],  # False (both) sorts first
    )
    rows = rows.sort_values(["stream_id", "t", "only_one", "class_index"], kind="stable")
    first = rows.drop_duplicates(["stream_id", "t"], keep="first")
    return {(s, int(t)): int(c) for s, t, c in zip(first["stream_id"], first["t"], first["class_index"])}


def window_starts(t: np.ndarray, length: int, stride: int) -> np.ndarray:
    """Row indices where windows start, for one stream's sorted seconds ``t`` (no window crosses a gap)."""
    if len(t) and (np.diff(t) <= 0).any():
        raise WindowsError("seconds of a stream must be strictly increasing (duplicate embedding rows?)")
    breaks = np.nonzero(np.diff(t) != 1)[0] + 1
    starts: list[int] = []
    for run_start, run_end in zip(np.r_[0, breaks], np.r_[breaks, len(t)]):
        starts += range(int(run_start), int(run_end) - length + 1, stride)
    return np.asarray(starts, np.int64)


def build_windows(
    emb: Embeddings,
    labels: pd.DataFrame,
    *,
    classes: tuple[str, ...] | list[str] | None = None,
    length: int = 10,
    stride: int = 10,
    event: EventRule = "any",
) -> Windows:
    """Cut ``emb`` into windows of ``length`` seconds every ``stride`` seconds and label them."""
    if length < 1 or stride < 1:
        raise WindowsError(f"length and stride must be >= 1, got {length}, {stride}")
    classes = tuple(classes) if classes is not None else tuple(sorted(set(labels["label"])))
    if not classes:
        raise WindowsError("no classes: the labels table is empty and no class list was given")
    if len(emb) and not set(emb.streams) & set(labels["stream_id"]):
        raise WindowsError(f"the labels share no stream with the embeddings (embeddings: {emb.streams[:5]}...)")
    per_second = second_labels(labels, classes, event)
    background = len(classes)
    index_rows: list[np.ndarray] = []
    for stream in emb.streams:
        rows = np.nonzero(emb.stream_id == stream)[0]
        for start in window_starts(emb.t[rows], length, stride):
            index_rows.append(rows[start:start + length])
    dim = emb.v.shape[1]
    if not index_rows:
        empty = np.zeros((0, length, dim), np.float32)
        return Windows(empty, empty.copy(), np.zeros((0, length), np.int64), np.zeros((0, background), np.float32),
                       np.zeros(0, object), np.zeros(0, np.int64), classes)
    index = np.stack(index_rows)  # [W, T] rows of emb
    stream_of = emb.stream_id[index]
    t_of = emb.t[index]
    segment = np.asarray([[per_second.get((s, int(t)), background) for s, t in zip(ss, ts)]
                          for ss, ts in zip(stream_of, t_of)], np.int64).reshape(index.shape)
    return Windows(
        visual=emb.v[index],
        audio=emb.a[index],
        segment_labels=segment,
        video_labels=video_labels_from_segments(segment, background),
        stream_id=stream_of[:, 0].copy(),
        t0=t_of[:, 0].copy(),
        classes=classes,
    )


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
    """``build_windows`` on an embeddings directory (complete streams only; the given ones when named)."""
    return build_windows(read_embeddings(embeddings_root, stream_ids), read_labels(labels_path), classes=classes,
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
