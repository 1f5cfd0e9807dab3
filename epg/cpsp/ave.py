"""The public AVE dataset (Tian et al., ECCV 2018) as CPSP reads it: annotations, split orders, feature files.

Files of one AVE directory (the names the AVE-localization code uses):

    Annotations.txt      4143 lines ``Category&YouTubeID&Quality&Start&End`` (an optional header line
                         is skipped); class index = order of first appearance (28 classes), background = 28;
                         event seconds [Start, End); one video (VWi2ENBuTbw) has Start = End = 0: no event
                         second at all, every segment background (its labels_closs row is all zero too)
    train/val/test_order.h5   key 'order': video indices, 3339 / 402 / 402
    mil_labels.h5        'avadataset' [N, 29] video-level one-hot (column 28, background, unused)
    labels_closs.h5      'avadataset' [N, 10] per-second event mask
    visual_feature.h5    'avadataset' [N, 10, 7, 7, 512] VGG-19 pool5 maps     (not in ../shared/data/ave)
    audio_feature.h5     'avadataset' [N, 10, 128] VGGish                      (not in ../shared/data/ave)
    right_labels.h5 or labels.h5   'avadataset' [N, 10, 29] one-hot segment labels (idem)

``check_ave`` verifies that the files agree with each other and with the
annotations (class order, event spans, split sizes, shapes) before anything is
trained on them; ``read_ave_split`` reads one split into ``CPSPData``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from epg.cpsp.train import CPSPData

SEGMENTS = 10
NUM_CLASSES = 28
NUM_VIDEOS = 4143
SPLIT_SIZES = {"train": 3339, "val": 402, "test": 402}
SPLITS = ("train", "val", "test")
H5_KEY = "avadataset"
ORDER_KEY = "order"
VISUAL_SHAPE = (SEGMENTS, 7, 7, 512)
AUDIO_SHAPE = (SEGMENTS, 128)
LABEL_FILES = ("right_labels.h5", "labels.h5")
READ_CHUNK = 64  # videos per h5 read: bounds the float64 read buffer (64 AVE visual rows: 128 MB)


class AVEError(ValueError):
    """An AVE file is missing, malformed or disagrees with the others; the message names the file."""


@dataclass(frozen=True)
class AVEAnnotations:
    """Annotations.txt: per video its category, YouTube id and event span [start, end) in seconds."""

    categories: tuple[str, ...]  # class order: first appearance in the file
    video_ids: tuple[str, ...]
    labels: np.ndarray  # int64 [N], index into categories
    start: np.ndarray  # int64 [N]
    end: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.video_ids)

    def event_mask(self) -> np.ndarray:
        """[N, 10] float32: 1 for the seconds inside [start, end)."""
        seconds = np.arange(SEGMENTS)
        return ((seconds >= self.start[:, None]) & (seconds < self.end[:, None])).astype(np.float32)

    def segment_labels(self) -> np.ndarray:
        """[N, 10] int64: the video's class inside its span, background (C) outside."""
        background = len(self.categories)
        return np.where(self.event_mask() > 0, self.labels[:, None], background).astype(np.int64)


def read_annotations(path: str | Path) -> AVEAnnotations:
    path = Path(path)
    if not path.is_file():
        raise AVEError(f"{path}: no such annotation file")
    categories: list[str] = []
    ids, labels, starts, ends = [], [], [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("&")
        if len(fields) != 5:
            raise AVEError(f"{path}:{number}: expected 5 '&'-separated fields, got {len(fields)}: {line!r}")
        try:
            start, end = int(fields[3]), int(fields[4])
        except ValueError:
            if number == 1:
                continue  # header line (Category&VideoID&Quality&StartTime&EndTime)
            raise AVEError(f"{path}:{number}: start/end are not integers: {line!r}") from None
        if not 0 <= start <= end <= SEGMENTS:  # start == end: an empty span (one real AVE video, VWi2ENBuTbw)
            raise AVEError(f"{path}:{number}: event span [{start}, {end}) is not inside [0, {SEGMENTS}]")
        if fields[0] not in categories:
            categories.append(fields[0])
        ids.append(fields[1])
        labels.append(categories.index(fields[0]))
        starts.append(start)
        ends.append(end)
    if not ids:
        raise AVEError(f"{path}: no annotations")
    return AVEAnnotations(tuple(categories), tuple(ids), np.asarray(labels, np.int64), np.asarray(starts, np.int64),
                          np.asarray(ends, np.int64))


@contextmanager
def _dataset(path: Path, key: str) -> Iterator[h5py.Dataset]:
    """The dataset ``key`` of an h5 file, open for the ``with`` block; ``AVEError`` naming the file."""
    if not path.is_file():
        raise AVEError(f"{path}: no such file")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise AVEError(f"{path}: not a readable HDF5 file ({exc})") from None
    with handle:
        if key not in handle:
            raise AVEError(f"{path}: has no key {key!r} (keys: {sorted(handle.keys())})")
        yield handle[key]


def read_array(path: str | Path, key: str = H5_KEY) -> np.ndarray:
    with _dataset(Path(path), key) as data:
        return data[()]


def _shape(path: Path) -> tuple[int, ...]:
    with _dataset(path, H5_KEY) as data:
        return tuple(data.shape)


def read_order(path: str | Path) -> np.ndarray:
    """A split index file (key 'order') -> int64 [n] video indices."""
    order = np.asarray(read_array(path, ORDER_KEY)).astype(np.int64).reshape(-1)
    if len(np.unique(order)) != len(order):
        raise AVEError(f"{path}: repeated video indices")
    return order


@dataclass(frozen=True)
class AVEFiles:
    """Where the files of one AVE directory are; feature files are None when absent."""

    root: Path
    annotations: Path
    orders: dict[str, Path]
    mil_labels: Path | None
    event_mask: Path | None
    visual: Path | None
    audio: Path | None
    labels: Path | None

    @classmethod
    def locate(cls, root: str | Path) -> "AVEFiles":
        root = Path(root)
        if not root.is_dir():
            raise AVEError(f"{root}: AVE directory does not exist")

        def optional(name: str) -> Path | None:
            return root / name if (root / name).is_file() else None

        labels = next((root / n for n in LABEL_FILES if (root / n).is_file()), None)
        return cls(root, root / "Annotations.txt", {s: root / f"{s}_order.h5" for s in SPLITS},
                   optional("mil_labels.h5"), optional("labels_closs.h5"), optional("visual_feature.h5"),
                   optional("audio_feature.h5"), labels)

    @property
    def has_features(self) -> bool:
        return self.visual is not None and self.audio is not None and self.labels is not None


@dataclass(frozen=True)
class AVECheck:
    """What ``check_ave`` verified. empty_spans: ids of videos annotated without any event second;
    segment_label_mismatches: seconds where the segment label file disagrees with the annotated span
    (None without that file)."""

    videos: int
    categories: tuple[str, ...]
    split_sizes: dict[str, int]
    has_features: bool
    checked: list[str] = field(default_factory=list)
    empty_spans: list[str] = field(default_factory=list)
    segment_label_mismatches: int | None = None


def _check_shape(path: Path, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if tuple(shape) != tuple(expected):
        raise AVEError(f"{path}: shape {list(shape)}, expected {list(expected)}")


def check_ave(
    root: str | Path,
    *,
    expect_videos: int | None = NUM_VIDEOS,
    expect_classes: int | None = NUM_CLASSES,
    expect_split_sizes: dict[str, int] | None = SPLIT_SIZES,
    require_features: bool = False,
) -> AVECheck:
    """Check an AVE directory; ``AVEError`` naming the file at the first disagreement.

    Checks: the annotations (video and class counts), the split orders (sizes,
    in range, disjoint), mil_labels (one-hot, same class as the annotation: this
    pins the class order), labels_closs (the annotated spans) and, when present
    (required with ``require_features``), the feature files' shapes and the
    segment labels' classes. The expect_* arguments are None for a
    reduced copy of the dataset (tests).
    """
    files = AVEFiles.locate(root)
    ann = read_annotations(files.annotations)
    n, c = len(ann), len(ann.categories)
    checked = ["annotations"]
    if expect_videos is not None and n != expect_videos:
        raise AVEError(f"{files.annotations}: {n} videos, expected {expect_videos}")
    if expect_classes is not None and c != expect_classes:
        raise AVEError(f"{files.annotations}: {c} classes, expected {expect_classes}")

    sizes: dict[str, int] = {}
    seen: dict[int, str] = {}
    for split, path in files.orders.items():
        order = read_order(path)
        sizes[split] = len(order)
        if expect_split_sizes is not None and len(order) != expect_split_sizes[split]:
            raise AVEError(f"{path}: {len(order)} videos, expected {expect_split_sizes[split]}")
        if len(order) and (order.min() < 0 or order.max() >= n):
            raise AVEError(f"{path}: indices outside [0, {n}) of {files.annotations.name}")
        overlap = sorted(set(order.tolist()) & set(seen))
        if overlap:
            raise AVEError(f"{path}: video {overlap[0]} is also in the {seen[overlap[0]]} split")
        seen.update({i: split for i in order.tolist()})
    checked.append("orders")

    if files.mil_labels is not None:
        mil = read_array(files.mil_labels)
        _check_shape(files.mil_labels, mil.shape, (n, c + 1))
        if not (np.isin(mil, (0, 1)).all() and (mil.sum(axis=1) == 1).all()):
            raise AVEError(f"{files.mil_labels}: rows are not one-hot")
        wrong = np.nonzero(mil.argmax(axis=1) != ann.labels)[0]
        if wrong.size:
            i = int(wrong[0])
            raise AVEError(f"{files.mil_labels}: video {i} has class {int(mil[i].argmax())}, the annotations say "
                           f"{ann.labels[i]} ({ann.categories[ann.labels[i]]!r}); class order differs")
        checked.append("mil_labels")
    if files.event_mask is not None:
        mask = read_array(files.event_mask)
        _check_shape(files.event_mask, mask.shape, (n, SEGMENTS))
        wrong = np.nonzero((mask != ann.event_mask()).any(axis=1))[0]
        if wrong.size:
            raise AVEError(f"{files.event_mask}: video {int(wrong[0])}'s event seconds differ from the annotated span")
        checked.append("labels_closs")

    mismatches = None
    if require_features and not files.has_features:
        missing = [name for name, p in (("visual_feature.h5", files.visual), ("audio_feature.h5", files.audio),
                                        ("right_labels.h5 or labels.h5", files.labels)) if p is None]
        raise AVEError(f"{files.root}: feature files missing: {', '.join(missing)}")
    if files.visual is not None:
        _check_shape(files.visual, _shape(files.visual), (n, *VISUAL_SHAPE))
        checked.append("visual_feature")
    if files.audio is not None:
        _check_shape(files.audio, _shape(files.audio), (n, *AUDIO_SHAPE))
        checked.append("audio_feature")
    if files.labels is not None:
        labels = read_array(files.labels)
        _check_shape(files.labels, labels.shape, (n, SEGMENTS, c + 1))
        if not (np.isin(labels, (0, 1)).all() and (labels.sum(axis=-1) == 1).all()):
            raise AVEError(f"{files.labels}: segment labels are not one-hot")
        classes = labels.argmax(axis=-1)
        foreground = np.where(classes < c, classes, -1).max(axis=1)
        wrong = np.nonzero((foreground >= 0) & (foreground != ann.labels))[0]
        if wrong.size:
            i = int(wrong[0])
            raise AVEError(f"{files.labels}: video {i} has class {int(foreground[i])}, the annotations say "
                           f"{ann.labels[i]} ({ann.categories[ann.labels[i]]!r}); class order differs")
        mismatches = int((classes != ann.segment_labels()).sum())
        checked.append("segment_labels")
    empty = [ann.video_ids[i] for i in np.nonzero(ann.start == ann.end)[0]]
    return AVECheck(n, ann.categories, sizes, files.has_features, checked, empty, mismatches)


def _read_rows(path: Path, index: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Rows ``index`` (any order) of a dataset as ``dtype``; read in increasing index order (h5py's rule),
    ``READ_CHUNK`` rows at a time, straight into the output (no second copy of a 3 GB split)."""
    with _dataset(path, H5_KEY) as data:
        out = np.empty((len(index), *data.shape[1:]), dtype)
        by_index = np.argsort(index, kind="stable")
        for start in range(0, len(index), READ_CHUNK):
            rows = by_index[start:start + READ_CHUNK]
            out[rows] = data[index[rows].tolist()]
    return out


def read_ave_split(root: str | Path, split: str, max_videos: int | None = None) -> CPSPData:
    """One split of AVE (videos in the order file's order; the first ``max_videos`` only when given).

    visual [n, 10, 7, 7, 512] and audio [n, 10, 128] as float32; segment classes
    from the segment label file (28 = background); video labels from mil_labels
    without its background column (else from the segment labels).
    """
    if split not in SPLITS:
        raise AVEError(f"unknown AVE split {split!r}; one of {SPLITS}")
    files = AVEFiles.locate(root)
    if not files.has_features:
        raise AVEError(f"{files.root}: visual_feature.h5, audio_feature.h5 and right_labels.h5 (or labels.h5) are needed")
    order = read_order(files.orders[split])
    if max_videos is not None:
        order = order[:max_videos]
    one_hot = _read_rows(files.labels, order)
    video_labels = None
    if files.mil_labels is not None:
        video_labels = _read_rows(files.mil_labels, order)[:, :-1]
    return CPSPData.from_one_hot(_read_rows(files.visual, order), _read_rows(files.audio, order), one_hot, video_labels)
