"""The labels table (DESIGN §3.3) aligned to embeddings rows: one target class and the set of classes per second.

Input: Parquet or CSV (by the ``.csv`` suffix) with ``stream_id, t, label`` and
optionally ``audible, visible`` (true when absent), one row per (stream, second,
class); a second without rows is background (the synthetic generator's
convention). Paths may be local or filesystem URIs.

Decisions (the design is silent):
- Classes: index 0 is ``background``, then the table's labels sorted by name; a
  row labelled ``background`` is ignored (the second is background anyway).
- One target per second, for single-label training and accuracy: among the
  classes present, prefer one both audible and visible in that second (an
  audio-visual event, AVE's notion), then the rarest class (fewest labelled
  seconds in the whole table: rare events must not drown under the frequent
  cars), then the name. The rule never depends on the train/eval split.
- ``present`` keeps every class of the second (background when none) for
  metrics that accept any class present (see ``pipelines.downstream.localize_job``).
- A stream absent from the table has no labels (``labelled`` is false for its
  rows), which is not the same as a stream that is all background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipelines.media.sources import filesystem_from_uri

BACKGROUND = "background"
REQUIRED_COLUMNS = ("stream_id", "t", "label")


class LabelsError(ValueError):
    """The labels file cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class LabelTable:
    """A validated labels table: one row per (stream_id, t, label), with the class list."""

    path: str
    frame: pd.DataFrame  # stream_id (str), t (int64), label (str), audible, visible (bool)
    classes: tuple[str, ...]  # background first

    @property
    def streams(self) -> frozenset[str]:
        return frozenset(self.frame["stream_id"].unique().tolist())

    def class_index(self, name: str) -> int:
        return self.classes.index(name)


@dataclass(frozen=True)
class SecondLabels:
    """Labels of embeddings rows: ``target`` [N] class index, ``present`` [N, C] bool, ``labelled`` [N] bool."""

    classes: tuple[str, ...]
    target: np.ndarray
    present: np.ndarray
    labelled: np.ndarray

    def text(self, row: int) -> str:
        """The classes of a row joined by '+' ("background" when none)."""
        return "+".join(self.classes[c] for c in np.flatnonzero(self.present[row]))

    def any_of(self, names: set[str] | frozenset[str]) -> np.ndarray:
        """Rows where any of the named classes is present ([N] bool; names not in the table are ignored)."""
        columns = [i for i, c in enumerate(self.classes) if c in names]
        return self.present[:, columns].any(axis=1) if columns else np.zeros(len(self.target), dtype=bool)


def _read_arrow(path: str) -> pa.Table:
    is_csv = path.lower().endswith(".csv")
    if "://" in path:
        fs, inner = filesystem_from_uri(path)
        if is_csv:
            with fs.open_input_stream(inner) as handle:
                return pacsv.read_csv(handle)
        return pq.read_table(inner, filesystem=fs)
    return pacsv.read_csv(path) if is_csv else pq.read_table(path)


def read_labels(path: str) -> LabelTable:
    """Read and validate a labels table; ``LabelsError`` naming the file and the problem."""
    try:
        table = _read_arrow(path)
    except FileNotFoundError as exc:
        raise LabelsError(f"labels file {path!r} does not exist") from exc
    except (pa.ArrowInvalid, OSError) as exc:
        raise LabelsError(f"labels file {path!r} is not readable {'CSV' if path.lower().endswith('.csv') else 'Parquet'}: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise LabelsError(f"labels file {path!r} lacks column(s) {missing}; it has {table.column_names}")
    frame = table.to_pandas()
    out = pd.DataFrame({"stream_id": frame["stream_id"].astype(str), "label": frame["label"].astype(str)})
    t = pd.to_numeric(frame["t"], errors="coerce")
    if t.isna().any() or (t != np.floor(t)).any():
        raise LabelsError(f"labels file {path!r}: column t must hold whole seconds")
    out["t"] = t.astype(np.int64)
    for column in ("audible", "visible"):
        out[column] = frame[column].astype(bool) if column in frame.columns else True
    out = out[out["label"] != BACKGROUND].drop_duplicates(["stream_id", "t", "label"]).reset_index(drop=True)
    classes = (BACKGROUND, *sorted(out["label"].unique().tolist()))
    return LabelTable(path=path, frame=out, classes=classes)


def align_labels(labels: LabelTable, stream_id: np.ndarray, t: np.ndarray) -> SecondLabels:
    """Targets and class sets for rows (stream_id[i], t[i]) of an ``Embeddings``."""
    n, n_classes = len(t), len(labels.classes)
    rows = pd.DataFrame({"stream_id": np.asarray(stream_id).astype(str), "t": np.asarray(t, dtype=np.int64), "row": np.arange(n)})
    frame = labels.frame.copy()
    frame["class"] = frame["label"].map({c: i for i, c in enumerate(labels.classes)})
    joined = frame.merge(rows, on=["stream_id", "t"], how="inner")

    present = np.zeros((n, n_classes), dtype=bool)
    present[joined["row"].to_numpy(), joined["class"].to_numpy()] = True
    present[:, 0] = ~present[:, 1:].any(axis=1)

    # Target rule: audio-visual first, then the rarest class over the whole table, then the name.
    seconds_per_class = labels.frame.groupby("label").size()
    joined["not_av"] = ~(joined["audible"] & joined["visible"])
    joined["frequency"] = joined["label"].map(seconds_per_class)
    best = joined.sort_values(["row", "not_av", "frequency", "label"]).drop_duplicates("row")
    target = np.zeros(n, dtype=np.int64)
    target[best["row"].to_numpy()] = best["class"].to_numpy()

    labelled = np.isin(rows["stream_id"].to_numpy(), list(labels.streams))
    return SecondLabels(classes=labels.classes, target=target, present=present, labelled=labelled)
