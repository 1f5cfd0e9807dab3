"""Anomaly detection (DESIGN §5): scores, a threshold fitted on reference footage, events.

Scores of a second: ``av_dist`` = D(v_i, a_i), the paper's (a sound that does not fit its
picture); ``knn_novelty`` of one modality, the mean distance to its k nearest seconds of the
reference footage (what was never seen or heard there); ``fuse``, the mean of several scores'
z-scores against the reference. A threshold μ + k·σ is fitted on the reference seconds' scores;
seconds above it are anomalous, and runs of anomalous seconds become events with a start, an
end and a peak.

Decisions (the design is silent):
- σ is the population standard deviation (ddof 0) of the reference scores.
- A second is anomalous when its score is strictly above the threshold.
- An event covers whole seconds [start, end): ``start`` is its first anomalous
  second, ``end`` the second after its last one (clip t covers [t, t + 1)), so
  ``end - start`` is its length in seconds.
- ``max_gap`` (default 0): two anomalous runs of one stream separated by at most
  ``max_gap`` seconds that are not anomalous (or not scored: a missing second is a
  gap like any other) become one event. 0 merges only contiguous seconds.
- The peak is the highest score of the event; on ties the earliest second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from epg.distance import pairwise_distance

# Queries per distance block of ``knn_novelty`` (memory: block × reference rows floats).
_KNN_BLOCK = 2048


@dataclass(frozen=True)
class Threshold:
    """μ + k·σ of the reference scores."""

    mean: float
    std: float
    k: float
    n_reference: int

    @property
    def value(self) -> float:
        return self.mean + self.k * self.std


@dataclass(frozen=True)
class Event:
    """Anomalous seconds [start, end) of one stream with its highest score."""

    stream_id: str
    start: int
    end: int
    peak_t: int
    peak_score: float

    @property
    def duration(self) -> int:
        return self.end - self.start


def fit_threshold(reference_scores: np.ndarray, k: float = 2.0) -> Threshold:
    """Fit μ + k·σ on reference scores; ValueError when there are none or some are not finite."""
    scores = np.asarray(reference_scores, dtype=np.float64).reshape(-1)
    if scores.size == 0:
        raise ValueError("fit_threshold: no reference scores")
    if not np.isfinite(scores).all():
        raise ValueError(f"fit_threshold: {int((~np.isfinite(scores)).sum())} reference score(s) are not finite")
    if not np.isfinite(k):
        raise ValueError(f"fit_threshold: k must be finite, got {k}")
    return Threshold(mean=float(scores.mean()), std=float(scores.std()), k=float(k), n_reference=int(scores.size))


def flag(scores: np.ndarray, threshold: Threshold | float) -> np.ndarray:
    """Boolean mask of the seconds whose score is strictly above the threshold."""
    value = threshold.value if isinstance(threshold, Threshold) else float(threshold)
    return np.asarray(scores) > value


def merge_events(
    stream_id: str, t: np.ndarray, scores: np.ndarray, anomalous: np.ndarray, max_gap: int = 0
) -> list[Event]:
    """Events of one stream: runs of anomalous seconds, merged across gaps of at most ``max_gap`` seconds.

    ``t`` need not be sorted or complete; rows are ordered by t first.
    """
    if max_gap < 0:
        raise ValueError(f"merge_events: max_gap must be >= 0, got {max_gap}")
    t = np.asarray(t, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    anomalous = np.asarray(anomalous, dtype=bool)
    if not (t.shape == scores.shape == anomalous.shape):
        raise ValueError(f"merge_events: t, scores and anomalous differ in shape: {t.shape}, {scores.shape}, {anomalous.shape}")
    order = np.argsort(t, kind="stable")
    t_hit, s_hit = t[order][anomalous[order]], scores[order][anomalous[order]]
    if t_hit.size == 0:
        return []
    # A new event starts where the number of seconds skipped since the previous hit exceeds max_gap.
    breaks = np.flatnonzero(np.diff(t_hit) - 1 > max_gap) + 1
    events = []
    for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, t_hit.size]):
        peak = lo + int(np.argmax(s_hit[lo:hi]))
        events.append(Event(stream_id, int(t_hit[lo]), int(t_hit[hi - 1]) + 1, int(t_hit[peak]), float(s_hit[peak])))
    return events


def detect_events(
    stream_id: np.ndarray, t: np.ndarray, scores: np.ndarray, threshold: Threshold | float, max_gap: int = 0
) -> tuple[np.ndarray, list[Event]]:
    """Flag and merge over several streams: (anomalous mask in row order, events by stream then start)."""
    stream_id = np.asarray(stream_id, dtype=object)
    anomalous = flag(scores, threshold)
    events: list[Event] = []
    for sid in sorted(set(stream_id.tolist())):
        rows = stream_id == sid
        events += merge_events(sid, np.asarray(t)[rows], np.asarray(scores)[rows], anomalous[rows], max_gap)
    return anomalous, events


def knn_novelty(query: np.ndarray, query_stream: np.ndarray, query_t: np.ndarray, reference: np.ndarray,
                reference_stream: np.ndarray, reference_t: np.ndarray, *, k: int = 10, exclusion: int = 60,
                lam: float = 0.5) -> np.ndarray:
    """Mean D to the ``k`` nearest reference rows of every query row (one modality's embeddings).

    Reference rows of the query's own stream within ±``exclusion`` s are left out, so a reference
    second is not its own neighbour (and the reference's scores, which fit the threshold, are
    measured the way every other second's are). A query with fewer than k eligible rows averages
    those it has (NaN when none).
    """
    if k < 1 or exclusion < 0:
        raise ValueError(f"knn_novelty: k must be >= 1 and exclusion >= 0, got {k} and {exclusion}")
    ref = torch.as_tensor(np.asarray(reference, dtype=np.float32))
    ref_stream = np.asarray(reference_stream, dtype=object)
    ref_t = torch.as_tensor(np.asarray(reference_t, dtype=np.int64))
    streams = {sid: i for i, sid in enumerate(sorted(set(ref_stream.tolist()) | set(np.asarray(query_stream).tolist())))}
    ref_code = torch.as_tensor([streams[s] for s in ref_stream.tolist()], dtype=torch.int64)
    out = np.empty(len(query), dtype=np.float64)
    for lo in range(0, len(query), _KNN_BLOCK):
        hi = min(lo + _KNN_BLOCK, len(query))
        q = torch.as_tensor(np.asarray(query[lo:hi], dtype=np.float32))
        code = torch.as_tensor([streams[s] for s in np.asarray(query_stream[lo:hi]).tolist()], dtype=torch.int64)
        t = torch.as_tensor(np.asarray(query_t[lo:hi], dtype=np.int64))
        with torch.no_grad():
            d = pairwise_distance(q, ref, lam).double()
        near = (code[:, None] == ref_code[None, :]) & ((t[:, None] - ref_t[None, :]).abs() <= exclusion)
        d = d.masked_fill(near, float("inf"))
        top = d.topk(min(k, d.shape[1]), dim=1, largest=False).values
        finite = torch.isfinite(top)
        count = finite.sum(dim=1)
        total = torch.where(finite, top, torch.zeros_like(top)).sum(dim=1)
        out[lo:hi] = torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan"))).numpy()
    return out


def fuse(scores: list[np.ndarray], reference: np.ndarray) -> np.ndarray:
    """Mean z-score of several scores of the same seconds, each standardised on the ``reference`` rows (a mask)."""
    if not scores:
        raise ValueError("fuse: no scores")
    reference = np.asarray(reference, dtype=bool)
    parts = []
    for score in scores:
        values = np.asarray(score, dtype=np.float64)
        base = values[reference]
        std = float(base.std())
        parts.append((values - float(base.mean())) / (std if std > 0 else 1.0))
    return np.mean(parts, axis=0)
