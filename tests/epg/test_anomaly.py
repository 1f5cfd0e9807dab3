"""Anomaly threshold, flagging and event merging (epg.anomaly) on hand-made scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from epg.anomaly import Event, Threshold, detect_events, fit_threshold, flag, merge_events


def test_threshold_is_mean_plus_k_population_std():
    threshold = fit_threshold(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert threshold.mean == pytest.approx(3.0)
    assert threshold.std == pytest.approx(math.sqrt(2.0))  # ddof 0
    assert threshold.k == 2.0 and threshold.n_reference == 5
    assert threshold.value == pytest.approx(3.0 + 2 * math.sqrt(2.0))
    assert fit_threshold(np.array([2.0, 4.0]), k=3).value == pytest.approx(3.0 + 3 * 1.0)
    assert fit_threshold(np.full(10, 0.7)).value == pytest.approx(0.7)


def test_threshold_rejects_empty_and_non_finite_reference():
    with pytest.raises(ValueError, match="no reference"):
        fit_threshold(np.array([]))
    with pytest.raises(ValueError, match="not finite"):
        fit_threshold(np.array([1.0, np.nan]))


def test_flag_is_strictly_above_threshold():
    threshold = Threshold(mean=1.0, std=0.5, k=2.0, n_reference=3)  # value 2.0
    assert flag(np.array([1.9, 2.0, 2.1]), threshold).tolist() == [False, False, True]
    assert flag(np.array([0.5, 1.5]), 1.0).tolist() == [False, True]


def test_contiguous_seconds_merge_into_events_with_peak():
    t = np.arange(12)
    scores = np.array([0, 5, 7, 6, 0, 0, 9, 0, 0, 3, 3, 0], dtype=float)
    events = merge_events("cam", t, scores, scores > 1)
    assert events == [Event("cam", 1, 4, 2, 7.0), Event("cam", 6, 7, 6, 9.0), Event("cam", 9, 11, 9, 3.0)]
    assert [e.duration for e in events] == [3, 1, 2]  # end is exclusive
    # A tie for the peak goes to the earliest second.
    assert events[2].peak_t == 9


def test_max_gap_merges_runs_across_short_gaps():
    t = np.arange(12)
    hits = np.array([0, 1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 1], dtype=bool)
    scores = hits * np.arange(12, dtype=float)
    spans = lambda gap: [(e.start, e.end) for e in merge_events("s", t, scores, hits, max_gap=gap)]  # noqa: E731
    assert spans(0) == [(1, 3), (4, 5), (7, 8), (11, 12)]
    assert spans(1) == [(1, 5), (7, 8), (11, 12)]
    assert spans(2) == [(1, 8), (11, 12)]
    assert spans(3) == [(1, 12)]
    assert merge_events("s", t, scores, hits, max_gap=3)[0].peak_t == 11
    with pytest.raises(ValueError, match="max_gap"):
        merge_events("s", t, scores, hits, max_gap=-1)


def test_missing_seconds_break_events_and_order_does_not_matter():
    t = np.array([13, 10, 11, 14, 20])  # 12 missing, unsorted
    scores = np.array([8.0, 5.0, 6.0, 2.0, 4.0])
    events = merge_events("s", t, scores, np.ones(5, bool))
    assert [(e.start, e.end, e.peak_t, e.peak_score) for e in events] == [(10, 12, 11, 6.0), (13, 15, 13, 8.0), (20, 21, 20, 4.0)]
    assert [(e.start, e.end) for e in merge_events("s", t, scores, np.ones(5, bool), max_gap=1)] == [(10, 15), (20, 21)]
    assert merge_events("s", t, scores, np.zeros(5, bool)) == []


def test_detect_events_keeps_streams_apart():
    stream_id = np.array(["b"] * 4 + ["a"] * 4, dtype=object)
    t = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    scores = np.array([0, 3, 3, 0, 3, 0, 0, 3], dtype=float)
    anomalous, events = detect_events(stream_id, t, scores, 1.0, max_gap=5)
    assert anomalous.tolist() == (scores > 1).tolist()
    # b's seconds 1-2 never merge with a's; a's two hits merge across the gap of 2.
    assert [(e.stream_id, e.start, e.end) for e in events] == [("a", 0, 4), ("b", 1, 3)]


def test_knn_novelty_is_the_mean_distance_to_the_nearest_reference_seconds_outside_the_window():
    from epg.anomaly import knn_novelty

    reference = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    stream = np.array(["r", "r", "r", "r"], dtype=object)
    t = np.array([0, 100, 200, 300])
    query = np.array([[0.0, 0.0], [10.0, 0.0]])
    # λ = 1: Euclidean. A query of another stream: its 2 nearest are rows 0 (d 0) and 1 (d 1).
    other = knn_novelty(query, np.array(["q", "q"], dtype=object), np.array([0, 1]), reference, stream, t, k=2, lam=1.0)
    assert other[0] == pytest.approx(0.5) and other[1] == pytest.approx((9.0 + np.hypot(5, 5)) / 2)
    # The same stream at t = 0: row 0 (its own second) is inside ±60 s and left out.
    same = knn_novelty(query[:1], np.array(["r"], dtype=object), np.array([0]), reference, stream, t, k=2, lam=1.0)
    assert same[0] == pytest.approx((1.0 + 2.0) / 2)
    # Nothing eligible: NaN; fewer than k: the mean of what there is.
    lone = knn_novelty(query[:1], np.array(["r"], dtype=object), np.array([0]), reference[:1], stream[:1], t[:1], k=3, lam=1.0)
    assert np.isnan(lone[0])


def test_fusion_standardises_each_score_on_the_reference():
    from epg.anomaly import fuse

    reference = np.array([True, True, True, False])
    a = np.array([1.0, 2.0, 3.0, 10.0])
    b = np.array([10.0, 20.0, 30.0, 30.0])
    fused = fuse([a, b], reference)
    z_a, z_b = (a - 2.0) / np.std([1, 2, 3]), (b - 20.0) / np.std([10, 20, 30])
    np.testing.assert_allclose(fused, (z_a + z_b) / 2)
    assert fused[3] > fused[2]
