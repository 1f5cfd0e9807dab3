"""Metrics (epg.metrics) against hand-computed values, ties included, and brute-force definitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from epg.metrics import (
    accuracy,
    average_precision,
    balanced_accuracy,
    average_ranks,
    confusion_matrix,
    mean_average_precision,
    per_class_accuracy,
    precision_at_k,
    ranked_average_precision,
    roc_auc,
)


def test_roc_auc_by_hand():
    # Positives 0.9, 0.4; negatives 0.8, 0.3: pairs won 0.9>0.8, 0.9>0.3, 0.4>0.3 → 3 of 4.
    assert roc_auc([1, 0, 1, 0], [0.9, 0.8, 0.4, 0.3]) == pytest.approx(0.75)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(1.0)
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.0)


def test_roc_auc_counts_ties_as_half():
    # Positive 0.5 ties negative 0.5 (½) and beats 0.1; positive 0.7 beats both → 3.5 / 4.
    assert roc_auc([1, 0, 1, 0], [0.5, 0.5, 0.7, 0.1]) == pytest.approx(0.875)
    assert roc_auc([1, 0, 1, 0], [0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.5)


def test_roc_auc_equals_pair_counting_on_random_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        y[:2] = [0, 1]
        s = rng.integers(0, 6, 40).astype(float)  # many ties
        pos, neg = s[y == 1], s[y == 0]
        pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)]
        assert roc_auc(y, s) == pytest.approx(np.mean(pairs))


def test_average_precision_by_hand():
    # Ranked: + (P 1, R .5), −, + (P 2/3, R 1) → .5·1 + .5·2/3.
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.4, 0.3]) == pytest.approx(0.5 + 1 / 3)
    assert average_precision([1, 1, 0], [0.9, 0.8, 0.1]) == pytest.approx(1.0)


def test_average_precision_takes_tied_scores_together():
    # Threshold 0.5 admits a positive and a negative at once: P .5 at R .5; then 0.2: P 2/3 at R 1.
    assert average_precision([1, 0, 1], [0.5, 0.5, 0.2]) == pytest.approx(0.25 + 1 / 3)
    # The order of tied rows does not matter.
    assert average_precision([0, 1, 1], [0.5, 0.5, 0.2]) == pytest.approx(0.25 + 1 / 3)


def test_binary_metrics_reject_one_class_and_bad_input():
    with pytest.raises(ValueError, match="positives and negatives"):
        roc_auc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="at least one positive"):
        average_precision([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="differ in length"):
        roc_auc([1, 0], [0.1])
    with pytest.raises(ValueError, match="finite"):
        roc_auc([1, 0], [np.nan, 0.1])


def test_average_ranks():
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_ranked_list_metrics():
    assert precision_at_k([True, False, True], 2) == pytest.approx(0.5)
    assert precision_at_k([True, False, True], 5) == pytest.approx(0.4)  # missing ranks are not relevant
    assert ranked_average_precision([True, False, True]) == pytest.approx((1 + 2 / 3) / 2)
    assert ranked_average_precision([True, False, True], n_relevant=4) == pytest.approx((1 + 2 / 3) / 4)
    assert ranked_average_precision([False, False]) == 0.0
    assert mean_average_precision([[True, False], [False, True]]) == pytest.approx((1.0 + 0.5) / 2)
    assert mean_average_precision([[True, False], [False, True]], n_relevant=[2, 1]) == pytest.approx((0.5 + 0.5) / 2)
    with pytest.raises(ValueError, match="k must be"):
        precision_at_k([True], 0)
    with pytest.raises(ValueError, match="n_relevant"):
        ranked_average_precision([True, True], n_relevant=1)


def test_accuracy_per_class_and_confusion():
    targets = np.array([0, 0, 1, 1, 1, 3])
    predictions = np.array([0, 1, 1, 1, 0, 3])
    assert accuracy(targets, predictions) == pytest.approx(4 / 6)
    per_class = per_class_accuracy(targets, targets == predictions, n_classes=4)
    assert per_class[:2].tolist() == pytest.approx([0.5, 2 / 3])
    assert np.isnan(per_class[2]) and per_class[3] == 1.0  # class 2 has no samples
    matrix = confusion_matrix(targets, predictions, 4)
    assert matrix.tolist() == [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
    with pytest.raises(ValueError, match="targets must lie"):
        per_class_accuracy(np.array([4]), np.array([True]), 4)


def test_balanced_accuracy_weighs_every_present_class_equally():
    targets = np.array([0] * 8 + [1, 1])
    always_background = np.zeros(10, dtype=int)
    assert balanced_accuracy(targets, always_background, 3) == 0.5  # class 2 is absent: two classes count
    one_event_found = np.array([0] * 8 + [1, 0])
    assert balanced_accuracy(targets, one_event_found, 3) == 0.75
    assert np.isnan(balanced_accuracy(np.array([], int), np.array([], int), 2))
