"""The AVE reader: the real annotation files in ../shared/data/ave, and small feature files made here."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from epg.cpsp.ave import (
    AUDIO_SHAPE,
    NUM_CLASSES,
    SPLIT_SIZES,
    VISUAL_SHAPE,
    AVEError,
    check_ave,
    read_annotations,
    read_ave_split,
    read_order,
)

REAL_FILES = ("Annotations.txt", "mil_labels.h5", "labels_closs.h5", "train_order.h5", "val_order.h5", "test_order.h5")


@pytest.fixture(scope="module")
def ave_dir(shared_data: Path) -> Path:
    return shared_data / "ave"


def write_h5(path: Path, data: np.ndarray, key: str = "avadataset") -> None:
    with h5py.File(path, "w") as handle:
        handle.create_dataset(key, data=data)


# --- the real annotation files ------------------------------------------------------------------------


def test_real_annotations_class_order_and_spans(ave_dir):
    ann = read_annotations(ave_dir / "Annotations.txt")
    assert len(ann) == 4143 and len(ann.categories) == NUM_CLASSES == 28
    assert ann.categories[:3] == ("Church bell", "Male speech, man speaking", "Bark")
    assert ann.categories[-1] == "Mandolin"
    assert ann.video_ids[1] == "MH3m4AwEcRY" and (ann.start[1], ann.end[1]) == (6, 8)
    assert ann.segment_labels()[1].tolist() == [28] * 6 + [0, 0] + [28, 28]
    assert ann.event_mask()[0].tolist() == [1.0] * 10
    # one real video is annotated with an empty span: all background
    assert ann.video_ids[26] == "VWi2ENBuTbw" and ann.segment_labels()[26].tolist() == [28] * 10


def test_real_split_orders(ave_dir):
    orders = {s: read_order(ave_dir / f"{s}_order.h5") for s in ("train", "val", "test")}
    assert {s: len(o) for s, o in orders.items()} == SPLIT_SIZES == {"train": 3339, "val": 402, "test": 402}
    assert sorted(np.concatenate(list(orders.values())).tolist()) == list(range(4143))


def test_real_directory_checks_out_without_features(ave_dir):
    report = check_ave(ave_dir)
    assert report.videos == 4143 and report.split_sizes == SPLIT_SIZES and not report.has_features
    assert report.checked == ["annotations", "orders", "mil_labels", "labels_closs"]
    assert report.empty_spans == ["VWi2ENBuTbw"]
    with pytest.raises(AVEError, match=r"feature files missing: visual_feature\.h5, audio_feature\.h5"):
        check_ave(ave_dir, require_features=True)


@pytest.fixture(scope="module")
def full_size_ave(ave_dir, tmp_path_factory) -> Path:
    """The real annotation files plus feature files of the real shapes, allocated lazily by HDF5 (all zeros,
    a few KB on disk), and segment labels made from the annotations."""
    root = tmp_path_factory.mktemp("ave_full")
    for name in REAL_FILES:
        os.symlink(ave_dir / name, root / name)
    n = 4143
    with h5py.File(root / "visual_feature.h5", "w") as handle:
        handle.create_dataset("avadataset", shape=(n, *VISUAL_SHAPE), dtype="f4")
    with h5py.File(root / "audio_feature.h5", "w") as handle:
        handle.create_dataset("avadataset", shape=(n, *AUDIO_SHAPE), dtype="f4")
    segments = read_annotations(ave_dir / "Annotations.txt").segment_labels()
    write_h5(root / "right_labels.h5", np.eye(NUM_CLASSES + 1, dtype=np.float32)[segments])
    return root


def test_real_annotations_against_feature_files_of_the_real_shapes(full_size_ave, ave_dir):
    report = check_ave(full_size_ave, require_features=True)
    assert report.has_features and report.segment_label_mismatches == 0
    assert report.checked[-3:] == ["visual_feature", "audio_feature", "segment_labels"]
    val = read_ave_split(full_size_ave, "val", max_videos=3)
    order = read_order(ave_dir / "val_order.h5")[:3]
    ann = read_annotations(ave_dir / "Annotations.txt")
    assert tuple(val.visual.shape) == (3, *VISUAL_SHAPE) and tuple(val.audio.shape) == (3, *AUDIO_SHAPE)
    assert val.segment_labels.numpy().tolist() == ann.segment_labels()[order].tolist()
    assert val.video_labels.numpy().argmax(1).tolist() == ann.labels[order].tolist()
    assert val.num_classes == 28


def test_segment_labels_in_another_class_order_are_refused(full_size_ave, tmp_path):
    root = tmp_path / "ave"
    root.mkdir()
    for path in full_size_ave.iterdir():
        if path.name != "right_labels.h5":
            os.symlink(path.resolve(), root / path.name)
    segments = read_annotations(root / "Annotations.txt").segment_labels()
    swapped = np.where(segments == 0, 1, np.where(segments == 1, 0, segments))  # classes 0 and 1 exchanged
    write_h5(root / "labels.h5", np.eye(29, dtype=np.float32)[swapped])  # the other accepted file name
    with pytest.raises(AVEError, match=r"labels\.h5: video 0 has class 1, the annotations say 0 \('Church bell'\)"):
        check_ave(root)


# --- a small AVE directory made here --------------------------------------------------------------------

ANNOTATIONS = [("Bark", "v0", 2, 8), ("Cat", "v1", 0, 10), ("Bark", "v2", 5, 7), ("Bus", "v3", 0, 3),
               ("Cat", "v4", 1, 2), ("Bus", "v5", 9, 10)]
ORDERS = {"train": [4, 1, 3], "val": [0], "test": [2, 5]}


def make_small_ave(root: Path, header: bool = True, feature_dtype: str = "f8") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = ["Category&VideoID&Quality&StartTime&EndTime"] if header else []
    lines += [f"{c}&{v}&good&{s}&{e}" for c, v, s, e in ANNOTATIONS]
    (root / "Annotations.txt").write_text("\n".join(lines) + "\n")
    n = len(ANNOTATIONS)
    visual = np.zeros((n, *VISUAL_SHAPE), feature_dtype)
    visual[:, :, 0, 0, 0] = np.arange(n)[:, None]  # row i is recognisable by its value i
    audio = np.zeros((n, *AUDIO_SHAPE), feature_dtype)
    audio[:, :, 0] = np.arange(n)[:, None] + 0.5
    segments = read_annotations(root / "Annotations.txt").segment_labels()
    labels = np.eye(4)[segments]
    mil = np.eye(4)[[0, 1, 0, 2, 1, 2]]
    write_h5(root / "visual_feature.h5", visual)
    write_h5(root / "audio_feature.h5", audio)
    write_h5(root / "right_labels.h5", labels)
    write_h5(root / "mil_labels.h5", mil)
    for split, order in ORDERS.items():
        write_h5(root / f"{split}_order.h5", np.asarray(order, np.int64), key="order")
    return root


SMALL = dict(expect_videos=None, expect_classes=None, expect_split_sizes=None)


def test_small_split_is_read_in_order_file_order(tmp_path):
    root = make_small_ave(tmp_path / "ave")
    report = check_ave(root, **SMALL)
    assert report.categories == ("Bark", "Cat", "Bus") and report.split_sizes == {"train": 3, "val": 1, "test": 2}
    train = read_ave_split(root, "train")
    assert train.visual.dtype.is_floating_point and train.visual.dtype.itemsize == 4  # float64 files -> float32
    assert train.visual[:, 0, 0, 0, 0].tolist() == [4.0, 1.0, 3.0]
    assert train.audio[:, 3, 0].tolist() == [4.5, 1.5, 3.5]
    # v4: Cat in [1, 2); v1: Cat everywhere; v3: Bus in [0, 3); background = 3
    assert train.segment_labels.tolist() == [[3, 1] + [3] * 8, [1] * 10, [2, 2, 2] + [3] * 7]
    assert train.video_labels.tolist() == [[0, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert read_ave_split(root, "test", max_videos=1).visual[:, 0, 0, 0, 0].tolist() == [2.0]
    with pytest.raises(AVEError, match="unknown AVE split 'dev'"):
        read_ave_split(root, "dev")


def test_small_directory_expected_sizes_are_enforced(tmp_path):
    root = make_small_ave(tmp_path / "ave", header=False)
    with pytest.raises(AVEError, match=r"Annotations\.txt: 6 videos, expected 4143"):
        check_ave(root)
    with pytest.raises(AVEError, match=r"train_order\.h5: 3 videos, expected 2"):
        check_ave(root, expect_videos=6, expect_classes=3, expect_split_sizes={"train": 2, "val": 1, "test": 2})


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: write_h5(r / "mil_labels.h5", np.eye(4)[[1, 0, 1, 2, 0, 2]]),
         r"mil_labels\.h5: video 0 has class 1, the annotations say 0 \('Bark'\); class order differs"),
        (lambda r: write_h5(r / "visual_feature.h5", np.zeros((6, 10, 512))),
         r"visual_feature\.h5: shape \[6, 10, 512\], expected \[6, 10, 7, 7, 512\]"),
        (lambda r: write_h5(r / "val_order.h5", np.asarray([0, 1]), key="order"),
         r"val_order\.h5: video 1 is also in the train split"),
        (lambda r: write_h5(r / "test_order.h5", np.asarray([2, 6]), key="order"),
         r"test_order\.h5: indices outside \[0, 6\)"),
        (lambda r: write_h5(r / "audio_feature.h5", np.zeros((6, 10, 128)), key="features"),
         r"audio_feature\.h5: has no key 'avadataset'"),
        (lambda r: (r / "Annotations.txt").write_text("Bark&v0&good&2&8\nCat&v1&good&4&11\n"),
         r"Annotations\.txt:2: event span \[4, 11\) is not inside \[0, 10\]"),
        (lambda r: (r / "right_labels.h5").write_bytes(b"not hdf5"), r"right_labels\.h5: not a readable HDF5 file"),
    ],
)
def test_disagreeing_files_are_named(tmp_path, damage, message):
    root = make_small_ave(tmp_path / "ave")
    damage(root)
    with pytest.raises(AVEError, match=message):
        check_ave(root, **SMALL)


def test_reading_needs_the_feature_files(tmp_path):
    root = make_small_ave(tmp_path / "ave")
    (root / "audio_feature.h5").unlink()
    with pytest.raises(AVEError, match="audio_feature.h5 and right_labels.h5"):
        read_ave_split(root, "train")


def test_small_ave_trains_end_to_end_with_spatial_attention(tmp_path):
    from epg.cpsp import CPSPConfig, CPSPModelConfig, CPSPTrainConfig, train_cpsp

    root = make_small_ave(tmp_path / "ave")
    splits = [read_ave_split(root, s) for s in ("train", "val", "test")]
    config = CPSPConfig(model=CPSPModelConfig(num_classes=3, proj_dim=8, lstm_hidden=4, attention_dim=8),
                        train=CPSPTrainConfig(epochs=2, batch_size=2))
    result = train_cpsp(config, *splits)
    assert len(result.val_accuracy) == 2 and result.model.attention is not None
    assert 0.0 <= result.test_accuracy <= 1.0 and np.isfinite(result.train_loss[-1]["loss"])
