"""10-s CPSP windows from an embeddings directory and per-second labels (the labels table's target rule)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from epg.cpsp import CPSPModel, CPSPModelConfig
from pipelines.downstream.cpsp_windows import (
    WindowsError,
    build_windows,
    cover,
    from_segment_labels,
    read_windows,
    segment_labels,
    split_by_time,
    to_segment_labels,
    window_starts,
)
from pipelines.downstream.labels import LabelsError, align_labels, read_labels
from pipelines.media.storage import OutputStore
from pipelines.runtime.manifest import StreamManifest, stream_dir
from pipelines.score.embeddings import embeddings_schema, embeddings_table, read_embeddings

DIM = 4
CLASSES = ("bus", "car", "forklift", "train", "truck")  # sorted names of the whole labels file
BG = len(CLASSES)


def write_stream(root: Path, stream_id: str, t: np.ndarray, status: str = "complete") -> None:
    """One stream of the §3.2 layout: v = [t, 0, 0, 0], a = [0, t, 0, 0], so each row names its second."""
    store = OutputStore(str(root))
    v = np.zeros((len(t), DIM), np.float32)
    a = np.zeros((len(t), DIM), np.float32)
    v[:, 0] = t
    a[:, 1] = t
    table = embeddings_table(stream_id, t, v, a, np.zeros(len(t), np.float32), "ckpt-1", 0.5, np.zeros((len(t), 4), np.float32))
    store.write_parquet(f"{stream_dir(store, stream_id)}/part-00000.parquet", [table],
                        embeddings_schema(DIM, "ckpt-1", 0.5, 4), "zstd")
    StreamManifest(stream_id=stream_id, source=f"{stream_id}.mp4", status=status, config_hash="h", config={},
                   rows=len(t), files=["part-00000.parquet"]).save(store)


@pytest.fixture()
def embeddings_dir(tmp_path) -> Path:
    root = tmp_path / "embeddings"
    write_stream(root, "cam_a", np.r_[np.arange(0, 15), np.arange(20, 35)])  # a gap: seconds 15..19 missing
    write_stream(root, "cam_b", np.arange(0, 10))
    write_stream(root, "cam_c", np.arange(0, 10), status="running")  # not complete: never read
    return root


LABEL_ROWS = [
    # stream, t, label, audible, visible
    ("cam_a", 2, "car", True, True),
    ("cam_a", 3, "car", True, False),
    ("cam_a", 3, "bus", True, True),  # heard and seen: wins over the car only heard
    ("cam_a", 4, "truck", True, False),
    ("cam_a", 4, "car", True, False),  # equal footing: the rarer class wins (truck: 2 rows, car: 4)
    ("cam_a", 5, "forklift", False, True),
    ("cam_a", 22, "truck", True, True),
    ("cam_b", 0, "car", False, True),
    ("elsewhere", 0, "train", True, False),  # a stream without embeddings: still names a class
]


@pytest.fixture()
def labels_path(tmp_path) -> Path:
    frame = pd.DataFrame(LABEL_ROWS, columns=["stream_id", "t", "label", "audible", "visible"])
    frame["t"] = frame["t"].astype("int32")
    path = tmp_path / "labels.parquet"
    frame.to_parquet(path)
    frame.to_csv(tmp_path / "labels.csv", index=False)
    return path


def test_windows_follow_streams_and_never_cross_a_gap(embeddings_dir, labels_path):
    w = read_windows(str(embeddings_dir), labels_path)
    assert w.classes == CLASSES and len(w) == 3 and w.length == 10
    assert list(zip(w.stream_id.tolist(), w.t0.tolist())) == [("cam_a", 0), ("cam_a", 20), ("cam_b", 0)]
    assert w.visual.shape == (3, 10, DIM) and w.audio.shape == (3, 10, DIM)
    assert w.visual[:, :, 0].tolist() == [list(range(10)), list(range(20, 30)), list(range(10))]
    assert w.audio[:, :, 1].tolist() == w.visual[:, :, 0].tolist()
    # cam_a 2: car, 3: bus (heard and seen), 4: truck (rarer than car), 5: forklift (seen only counts for "any")
    assert w.segment_labels[0].tolist() == [BG, BG, 1, 0, 4, 2, BG, BG, BG, BG]
    assert w.segment_labels[1].tolist() == [BG, BG, 4] + [BG] * 7
    assert w.segment_labels[2].tolist() == [1] + [BG] * 9
    assert w.video_labels.tolist() == [[1, 1, 1, 0, 1], [0, 0, 0, 0, 1], [0, 1, 0, 0, 0]]
    one_hot = w.segment_one_hot()
    assert one_hot.shape == (3, 10, 6) and (one_hot.argmax(-1) == w.segment_labels).all()


def test_stride_gives_overlapping_windows_inside_each_run(embeddings_dir, labels_path):
    w = read_windows(str(embeddings_dir), labels_path, stride=5)
    assert list(zip(w.stream_id.tolist(), w.t0.tolist())) == [("cam_a", 0), ("cam_a", 5), ("cam_a", 20),
                                                               ("cam_a", 25), ("cam_b", 0)]
    assert (np.diff(w.visual[:, :, 0], axis=1) == 1).all()  # consecutive seconds in every window
    short = read_windows(str(embeddings_dir), labels_path, length=4, stride=4, stream_ids=["cam_b"])
    assert short.t0.tolist() == [0, 4] and short.segment_labels.shape == (2, 4)  # tail 8..9 dropped


def test_audio_visual_rule_keeps_only_classes_heard_and_seen(embeddings_dir, labels_path):
    w = read_windows(str(embeddings_dir), labels_path, event="audio_visual")
    assert w.segment_labels[0].tolist() == [BG, BG, 1, 0] + [BG] * 6
    assert w.segment_labels[2].tolist() == [BG] * 10  # the car on cam_b is only seen


def test_csv_labels_and_explicit_class_order(embeddings_dir, labels_path):
    csv = read_windows(str(embeddings_dir), labels_path.with_suffix(".csv"))
    parquet = read_windows(str(embeddings_dir), labels_path)
    assert np.array_equal(csv.segment_labels, parquet.segment_labels)
    order = ("truck", "train", "forklift", "car", "bus", "siren")
    w = read_windows(str(embeddings_dir), labels_path, classes=order)
    # the order only renames the indices (the target rule is the labels table's); "siren" never occurs
    assert w.segment_labels[0].tolist() == [6, 6, 3, 4, 0, 2, 6, 6, 6, 6]
    assert w.video_labels.shape == (3, 6)
    with pytest.raises(WindowsError, match=r"labels \['bus'\] are not among the classes"):
        read_windows(str(embeddings_dir), labels_path, classes=("car", "forklift", "train", "truck"))


def test_segment_labels_are_the_labels_tables_targets(embeddings_dir, labels_path):
    """One rule for both localization heads: CPSP classes are the table's targets with background moved last."""
    emb = read_embeddings(str(embeddings_dir))
    table = read_labels(str(labels_path))
    assert table.classes[1:] == CLASSES
    target = align_labels(table, emb.stream_id, emb.t).target
    segment = segment_labels(table, emb.stream_id, emb.t, CLASSES)
    assert np.array_equal(segment, to_segment_labels(target, len(CLASSES)))
    assert np.array_equal(from_segment_labels(segment, len(CLASSES)), target)
    assert to_segment_labels(np.array([0, 1, 5]), 5).tolist() == [BG, 0, 4]


def test_labels_without_audible_visible_count_as_both(embeddings_dir, tmp_path):
    (tmp_path / "plain.csv").write_text("stream_id,t,label\ncam_b,1,car\ncam_b,2,bus\n")
    w = read_windows(str(embeddings_dir), tmp_path / "plain.csv", stream_ids=["cam_b"], event="audio_visual")
    assert w.classes == ("bus", "car") and w.segment_labels[0].tolist() == [2, 1, 0] + [2] * 7


def test_unusable_inputs_are_named(embeddings_dir, labels_path, tmp_path):
    table = read_labels(str(labels_path))
    with pytest.raises(WindowsError, match="labels.parquet' share no stream"):
        build_windows(read_embeddings(str(embeddings_dir)),
                      dataclasses.replace(table, frame=table.frame.assign(stream_id="cam_z")))
    with pytest.raises(LabelsError, match="missing.parquet.*does not exist"):
        read_windows(str(embeddings_dir), tmp_path / "missing.parquet")
    with pytest.raises(WindowsError, match="strictly increasing"):
        window_starts(np.array([0, 1, 1, 2]), 2, 1)
    with pytest.raises(WindowsError, match="event must be"):
        segment_labels(table, np.array(["cam_a"]), np.array([2]), CLASSES, event="audible")


def test_window_starts_on_runs():
    t = np.array([0, 1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 20])
    assert window_starts(t, 3, 1).tolist() == [0, 1, 2, 5, 6, 7, 8]
    assert window_starts(t, 3, 3).tolist() == [0, 5, 8]
    assert window_starts(t, 6, 1).tolist() == [5]


def test_cover_tiles_every_second_without_crossing_a_gap():
    t = np.r_[np.arange(0, 23), np.arange(30, 34), np.arange(40, 50)]  # runs of 23, 4 and 10 seconds
    ranges = cover(t, 10)
    # 23 s: 0-9, 10-19 and 13-22 (aligned to the run's end); 4 s: one short window; 10 s: one window
    assert ranges == [(0, 10), (10, 20), (13, 23), (23, 27), (27, 37)]
    covered = np.zeros(len(t), int)
    for start, stop in ranges:
        assert (np.diff(t[start:stop]) == 1).all()
        covered[start:stop] += 1
    assert (covered >= 1).all()
    assert cover(np.arange(5), 10) == [(0, 5)] and cover(np.arange(0), 10) == []


def test_split_by_time_shares_no_second(embeddings_dir, labels_path):
    w = read_windows(str(embeddings_dir), labels_path, stride=5)
    train, val = split_by_time(w, 0.3)
    # cam_a covers 0..35: windows from 24.5 on go to val (t0 = 25); t0 = 20 overlaps it and is dropped
    assert list(zip(val.stream_id.tolist(), val.t0.tolist())) == [("cam_a", 25)]
    assert list(zip(train.stream_id.tolist(), train.t0.tolist())) == [("cam_a", 0), ("cam_a", 5), ("cam_b", 0)]
    seconds = lambda x, s: {(s, t) for i in np.nonzero(x.stream_id == s)[0] for t in range(x.t0[i], x.t0[i] + 10)}
    assert not seconds(train, "cam_a") & seconds(val, "cam_a")


def test_windows_feed_the_cpsp_model(embeddings_dir, labels_path):
    data = read_windows(str(embeddings_dir), labels_path).to_cpsp_data()
    assert data.num_classes == 5 and data.segments == 10 and data.segment_labels.dtype == torch.int64
    model = CPSPModel(CPSPModelConfig(num_classes=5, visual_dim=DIM, audio_dim=DIM, proj_dim=8, lstm_hidden=4,
                                      input_norm="l2")).eval()
    assert model.predict(data.visual, data.audio).shape == (3, 10)
