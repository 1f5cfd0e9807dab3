"""Query-by-example event search over an index of clip embeddings (DESIGN §5).

distance(query, clip) = D on the visual embeddings, on the audio embeddings, or
the mean of both (``mode``: visual | audio | both), with the λ the embeddings were
trained with. Results in the query's own stream within ±``exclusion`` s of the
query are excluded (they are the query itself, seen again), and a result within
±``suppression`` s of a higher-ranked result in the same stream is suppressed (one
event yields one hit, not sixty neighbouring seconds).

Speed: the index keeps the squared norms of all rows, so a query costs one
matrix-vector product per modality (‖x − q‖² = ‖x‖² + ‖q‖² − 2x·q) plus a partial
sort; a day of clips (86,400 × 512 per modality) answers in milliseconds.

Decisions (the design is silent):
- Windows are inclusive: |t − t_query| ≤ exclusion is excluded, |t − t_hit| ≤
  suppression suppressed; 0 excludes (suppresses) only the very second.
- Suppression is greedy in rank order: a suppressed candidate suppresses nothing.
- Ranking uses the norm expansion in float32; the distances returned for the hits
  are recomputed exactly (difference of the vectors, float64), so a reported
  distance is D itself.
- Ties in distance are broken by row order (stream, then t).
- A zero vector has cosine 0 with everything (as in ``epg.distance``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

Mode = Literal["both", "audio", "visual"]
MODES: tuple[str, ...] = get_args(Mode)
_EPS = 1e-8


@dataclass(frozen=True)
class Hit:
    """One search result: its rank (1 = nearest), index row, clip and distance."""

    rank: int
    row: int
    stream_id: str
    t: int
    distance: float


def _unit_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    squared = np.einsum("nd,nd->n", x, x, dtype=np.float64).astype(np.float32)
    return squared, np.sqrt(np.maximum(squared, _EPS**2)).astype(np.float32)


def distance_exact(x: np.ndarray, q: np.ndarray, lam: float) -> np.ndarray:
    """D between each row of x [n, d] and one vector q [d], computed directly in float64."""
    x = np.asarray(x, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    euclidean = np.linalg.norm(x - q, axis=-1)
    norms = np.sqrt(np.maximum((x * x).sum(-1), _EPS**2) * max(float(q @ q), _EPS**2))
    cosine = (x @ q) / norms
    return np.maximum(lam * euclidean + (1.0 - lam) * (1.0 - cosine), 0.0)


class SearchIndex:
    """Visual and audio embeddings of many clips, with what a query needs precomputed."""

    def __init__(self, stream_id: np.ndarray, t: np.ndarray, v: np.ndarray, a: np.ndarray, lam: float = 0.5):
        self.stream_id = np.asarray(stream_id, dtype=object)
        self.t = np.asarray(t, dtype=np.int64)
        self.v = np.ascontiguousarray(v, dtype=np.float32)
        self.a = np.ascontiguousarray(a, dtype=np.float32)
        n = len(self.t)
        if self.stream_id.shape != (n,) or self.v.ndim != 2 or self.v.shape != self.a.shape or self.v.shape[0] != n:
            raise ValueError(
                f"SearchIndex: stream_id {self.stream_id.shape}, t {self.t.shape}, v {self.v.shape} and a {self.a.shape} do not match"
            )
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"SearchIndex: lam must be in [0, 1], got {lam}")
        self.lam = float(lam)
        self._v_sq, self._v_norm = _unit_rows(self.v)
        self._a_sq, self._a_norm = _unit_rows(self.a)
        # Streams as small integers, so window tests compare ints, not strings.
        self._streams, self._stream_code = np.unique(self.stream_id.astype(str), return_inverse=True)

    def __len__(self) -> int:
        return len(self.t)

    @property
    def dim(self) -> int:
        return self.v.shape[1]

    def _modality_distance(self, x: np.ndarray, sq: np.ndarray, norm: np.ndarray, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=np.float32).reshape(-1)
        if q.shape != (x.shape[1],):
            raise ValueError(f"query has dimension {q.shape[0]}, the index {x.shape[1]}")
        dot = x @ q
        q_sq = float(np.dot(q.astype(np.float64), q.astype(np.float64)))
        euclidean = np.sqrt(np.maximum(sq + np.float32(q_sq) - 2.0 * dot, 0.0))
        cosine = dot / (norm * np.float32(max(np.sqrt(q_sq), _EPS)))
        return self.lam * euclidean + (1.0 - self.lam) * (1.0 - cosine)

    def distances(self, query_v: np.ndarray | None, query_a: np.ndarray | None, mode: Mode = "both") -> np.ndarray:
        """Distance of every row to the query ([N], float32; ranking precision)."""
        _check_mode(mode)
        parts = []
        if mode in ("visual", "both"):
            if query_v is None:
                raise ValueError(f"mode {mode!r} needs a visual query embedding")
            parts.append(self._modality_distance(self.v, self._v_sq, self._v_norm, query_v))
        if mode in ("audio", "both"):
            if query_a is None:
                raise ValueError(f"mode {mode!r} needs an audio query embedding")
            parts.append(self._modality_distance(self.a, self._a_sq, self._a_norm, query_a))
        return parts[0] if len(parts) == 1 else 0.5 * (parts[0] + parts[1])

    def exact_distance(self, rows: np.ndarray, query_v: np.ndarray | None, query_a: np.ndarray | None, mode: Mode) -> np.ndarray:
        """D of the given rows computed directly (float64), for reporting."""
        parts = []
        if mode in ("visual", "both"):
            parts.append(distance_exact(self.v[rows], query_v, self.lam))
        if mode in ("audio", "both"):
            parts.append(distance_exact(self.a[rows], query_a, self.lam))
        return parts[0] if len(parts) == 1 else 0.5 * (parts[0] + parts[1])

    def query_of(self, stream_id: str, t: int) -> tuple[np.ndarray, np.ndarray]:
        """The (v, a) of clip (stream_id, t) in the index; KeyError naming the clip when absent."""
        rows = np.flatnonzero((self.stream_id == stream_id) & (self.t == int(t)))
        if rows.size == 0:
            raise KeyError(f"no clip (stream {stream_id!r}, t {t} s) in the index")
        return self.v[rows[0]], self.a[rows[0]]

    def search(
        self,
        query_v: np.ndarray | None,
        query_a: np.ndarray | None,
        mode: Mode = "both",
        k: int = 5,
        exclude: tuple[str, int] | None = None,
        exclusion: int = 60,
        suppression: int = 60,
    ) -> list[Hit]:
        """The k nearest clips after exclusion around ``exclude`` = (stream, t) and suppression around hits."""
        if k <= 0:
            raise ValueError(f"search: k must be > 0, got {k}")
        if exclusion < 0 or suppression < 0:
            raise ValueError(f"search: exclusion and suppression must be >= 0, got {exclusion} and {suppression}")
        dist = self.distances(query_v, query_a, mode)
        allowed = np.ones(len(self), dtype=bool)
        if exclude is not None:
            matches = np.flatnonzero(self._streams == str(exclude[0]))
            if matches.size:
                allowed &= ~((self._stream_code == matches[0]) & (np.abs(self.t - int(exclude[1])) <= exclusion))
        candidates = np.flatnonzero(allowed)
        cand_dist = dist[candidates]
        # Each accepted hit suppresses at most 2·suppression + 1 seconds of its stream: with that many
        # candidates (plus k) in hand, greedy selection can only run dry when the index does.
        want = min(candidates.size, k * (2 * suppression + 2))
        while True:
            chosen = self._greedy(candidates, cand_dist, want, k, suppression)
            if len(chosen) == k or want >= candidates.size:
                break
            want = min(candidates.size, want * 2)
        rows = np.asarray(chosen, dtype=np.int64)
        exact = self.exact_distance(rows, query_v, query_a, mode) if rows.size else np.zeros(0)
        return [
            Hit(rank=i + 1, row=int(r), stream_id=str(self.stream_id[r]), t=int(self.t[r]), distance=float(d))
            for i, (r, d) in enumerate(zip(rows, exact))
        ]

    def _greedy(self, candidates: np.ndarray, cand_dist: np.ndarray, want: int, k: int, suppression: int) -> list[int]:
        """Walk the ``want`` nearest candidates in order, keeping those outside every kept hit's window."""
        if want < candidates.size:
            boundary = cand_dist[np.argpartition(cand_dist, want - 1)[want - 1]]
            part = np.flatnonzero(cand_dist <= boundary)  # keeps every tie of the last distance
        else:
            part = np.arange(candidates.size)
        # Stable order by (distance, row): ties go to the earlier row.
        part = part[np.lexsort((candidates[part], cand_dist[part]))]
        chosen: list[int] = []
        for row in candidates[part]:
            code, t = self._stream_code[row], self.t[row]
            if any(self._stream_code[c] == code and abs(self.t[c] - t) <= suppression for c in chosen):
                continue
            chosen.append(int(row))
            if len(chosen) == k:
                break
        return chosen


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"search mode must be one of {MODES}, got {mode!r}")
