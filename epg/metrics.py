"""Evaluation metrics of the downstream tasks, in NumPy (no scikit-learn dependency).

Decisions (the design is silent):
- ``roc_auc``: the Mann-Whitney statistic; tied scores count one half (average
  ranks), which equals the area under the ROC curve with ties drawn as diagonal
  segments. Undefined (ValueError) without both positives and negatives.
- ``average_precision``: Σ_n (R_n − R_{n−1})·P_n over the distinct score
  thresholds, highest first; tied scores enter together (one threshold), as in
  scikit-learn's ``average_precision_score``. Undefined without positives.
- Ranked lists (search): ``precision_at_k`` divides by k even when fewer than k
  results came back (a missing result is not a relevant one);
  ``ranked_average_precision`` averages the precision at each relevant rank over
  ``n_relevant`` when given (all relevant items in the collection) and over the
  relevant items retrieved otherwise; 0 when nothing relevant was retrieved.
- Per-class accuracy is NaN for a class without samples (not 0: nothing was missed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _binary_inputs(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).reshape(-1).astype(bool)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {s.size}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y, s


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` (ascending), ties sharing the mean of their ranks."""
    values = np.asarray(values)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(sorted_values[1:] != sorted_values[:-1]) + 1]
    ends = np.r_[starts[1:], values.size]
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties ½."""
    y, s = _binary_inputs(labels, scores)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc needs positives and negatives, got {n_pos} positive(s) and {n_neg} negative(s)")
    ranks = average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall step curve, thresholds at distinct scores (higher = more positive)."""
    y, s = _binary_inputs(labels, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("average_precision needs at least one positive")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_group = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s.size - 1]
    tp = np.cumsum(y_sorted)[last_of_group]
    predicted = last_of_group + 1
    precision = tp / predicted
    recall_gain = np.diff(np.r_[0, tp]) / n_pos
    return float((recall_gain * precision).sum())


def precision_at_k(relevant: Sequence[bool] | np.ndarray, k: int) -> float:
    """Share of relevant items among the first k of a ranked list (missing ranks count as not relevant)."""
    if k <= 0:
        raise ValueError(f"precision_at_k: k must be > 0, got {k}")
    rel = np.asarray(relevant, dtype=bool)[:k]
    return float(rel.sum() / k)


def ranked_average_precision(relevant: Sequence[bool] | np.ndarray, n_relevant: int | None = None) -> float:
    """Average precision of one ranked list: mean of precision@i over the relevant ranks i."""
    rel = np.asarray(relevant, dtype=bool)
    hits = np.flatnonzero(rel)
    denominator = n_relevant if n_relevant is not None else hits.size
    if n_relevant is not None and n_relevant < hits.size:
        raise ValueError(f"n_relevant {n_relevant} is below the {hits.size} relevant items retrieved")
    if denominator == 0:
        return 0.0
    precisions = np.arange(1, hits.size + 1) / (hits + 1)
    return float(precisions.sum() / denominator)


def mean_average_precision(
    ranked_lists: Sequence[Sequence[bool] | np.ndarray], n_relevant: Sequence[int] | None = None
) -> float:
    """Mean of ``ranked_average_precision`` over queries (mAP; truncate the lists for mAP@k)."""
    if len(ranked_lists) == 0:
        raise ValueError("mean_average_precision needs at least one query")
    if n_relevant is not None and len(n_relevant) != len(ranked_lists):
        raise ValueError(f"{len(n_relevant)} n_relevant values for {len(ranked_lists)} queries")
    counts = list(n_relevant) if n_relevant is not None else [None] * len(ranked_lists)
    return float(np.mean([ranked_average_precision(r, n) for r, n in zip(ranked_lists, counts)]))


def accuracy(targets: np.ndarray, predictions: np.ndarray) -> float:
    """Share of equal entries; NaN when empty."""
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    if targets.shape != predictions.shape:
        raise ValueError(f"targets and predictions differ in shape: {targets.shape} vs {predictions.shape}")
    return float((targets == predictions).mean()) if targets.size else float("nan")


def balanced_accuracy(targets: np.ndarray, predictions: np.ndarray, n_classes: int) -> float:
    """Mean over the classes present in ``targets`` of the share of their samples predicted right (NaN when empty).

    Chance is 1 / (classes present) whatever the class frequencies, so a detector that always
    says "background" scores 1 / C, not the background share.
    """
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    if targets.shape != predictions.shape:
        raise ValueError(f"targets and predictions differ in shape: {targets.shape} vs {predictions.shape}")
    recall = per_class_accuracy(targets, targets == predictions, n_classes)
    return float(np.nanmean(recall)) if targets.size else float("nan")


def per_class_accuracy(targets: np.ndarray, correct: np.ndarray, n_classes: int) -> np.ndarray:
    """Accuracy among the samples of each target class ([n_classes], NaN for a class without samples).

    ``correct`` is a boolean per sample (a prediction may count as correct by a rule
    wider than equality, e.g. any class present in a multi-label second).
    """
    targets = np.asarray(targets, dtype=np.int64)
    correct = np.asarray(correct, dtype=bool)
    if targets.shape != correct.shape:
        raise ValueError(f"targets and correct differ in shape: {targets.shape} vs {correct.shape}")
    if targets.size and (targets.min() < 0 or targets.max() >= n_classes):
        raise ValueError(f"targets must lie in [0, {n_classes})")
    totals = np.bincount(targets, minlength=n_classes).astype(np.float64)
    hits = np.bincount(targets, weights=correct.astype(np.float64), minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, hits / np.maximum(totals, 1), np.nan)


def confusion_matrix(targets: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts [target, prediction] ([n_classes, n_classes], int64)."""
    targets = np.asarray(targets, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (targets, predictions), 1)
    return matrix
