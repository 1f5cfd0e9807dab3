"""Query-by-example event search over an index of clip embeddings (DESIGN §5).

distance(query, clip) = D on the visual embeddings, on the audio embeddings, or
the mean of both (``mode``: visual | audio | both), with the λ the embeddings were
trained with. Results in the query's own stream within ±``exclusion`` s of the
query are excluded (they are the query itself, seen again), and a result within
±``suppression`` s of a higher-ranked result in the same stream is suppressed (one
event yields one hit, not sixty neighbouring seconds).

Speed: the index keeps the squared norms of all rows, so a query costs one
matrix-vector product per modality (‖x − q‖² = ‖x‖² + ‖q‖² − 2x·q) plus a partial
sort; a day of clips (86,400 × 512 per modality) answers in milliseconds. For a month
of many cameras, ``approximate`` (``epg.search_ann``) proposes candidates from a faiss
index instead of every row; they are ranked by the same D and walked by the same
exclusion and suppression rules, with more candidates fetched while fewer than k
survive. Exact search stays the reference (and the default for small indexes).

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

from epg.search_ann import ApproximateConfig, ApproximateIndex

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

    def __init__(self, stream_id: np.ndarray, t: np.ndarray, v: np.ndarray, a: np.ndarray, lam: float = 0.5,
                 approximate: ApproximateConfig | None = None):
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
        self.approximate = approximate
        self._approximate_by_mode: dict[str, ApproximateIndex] = {}

    def __len__(self) -> int:
        return len(self.t)

    @property
    def kind(self) -> str:
        """``exact`` (every row scored per query) or ``approximate`` (candidates from a faiss index)."""
        return "exact" if self.approximate is None else "approximate"

    def prepare(self, mode: Mode, built: ApproximateIndex | None = None) -> ApproximateIndex | None:
        """The approximate index of ``mode``, built now unless given (otherwise the first query builds it); None when exact."""
        _check_mode(mode)
        if self.approximate is None:
            return None
        if built is not None:
            if (built.rows, built.dim) != (len(self), sum(x.shape[1] for x in self._parts(mode))):
                raise ValueError(f"approximate index of {built.rows} rows × {built.dim} does not fit mode {mode!r} "
                                 f"of this index ({len(self)} rows)")
            self._approximate_by_mode[mode] = built
        if mode not in self._approximate_by_mode:
            self._approximate_by_mode[mode] = ApproximateIndex.build(self._parts(mode), self.lam, self.approximate)
        return self._approximate_by_mode[mode]

    def _parts(self, mode: Mode) -> list[np.ndarray]:
        return {"visual": [self.v], "audio": [self.a], "both": [self.v, self.a]}[mode]

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

    def distances(self, query_v: np.ndarray | None, query_a: np.ndarray | None, mode: Mode = "both",
                  rows: np.ndarray | None = None) -> np.ndarray:
        """Distance of every row (or of ``rows``) to the query (float32; ranking precision)."""
        _check_query(mode, query_v, query_a)
        at = slice(None) if rows is None else rows
        parts = []
        if mode in ("visual", "both"):
            parts.append(self._modality_distance(self.v[at], self._v_sq[at], self._v_norm[at], query_v))
        if mode in ("audio", "both"):
            parts.append(self._modality_distance(self.a[at], self._a_sq[at], self._a_norm[at], query_a))
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
        _check_query(mode, query_v, query_a)
        # Each accepted hit suppresses at most 2·suppression + 1 seconds of its stream: with that many
        # candidates (plus k) in hand, greedy selection can only run dry when the index does.
        want = k * (2 * suppression + 2)
        if self.approximate is None:
            candidates = np.flatnonzero(self._allowed(None, exclude, exclusion))
            cand_dist = self.distances(query_v, query_a, mode)[candidates]
            while True:
                chosen = self._greedy(candidates, cand_dist, min(want, candidates.size), k, suppression)
                if len(chosen) == k or want >= candidates.size:
                    break
                want *= 2
        else:
            count = want + (2 * exclusion + 1 if exclude is not None else 0) + self.approximate.rerank
            while True:
                proposed = self._approximate_candidates(query_v, query_a, mode, count)
                candidates = proposed[self._allowed(proposed, exclude, exclusion)]
                cand_dist = self.distances(query_v, query_a, mode, candidates)
                chosen = self._greedy(candidates, cand_dist, candidates.size, k, suppression)
                if len(chosen) == k or proposed.size == len(self):
                    break
                # The rules left fewer than k: ask for twice as many, or every row when the probed lists ran dry.
                count = 2 * count if proposed.size == min(count, len(self)) else len(self)
        rows = np.asarray(chosen, dtype=np.int64)
        exact = self.exact_distance(rows, query_v, query_a, mode) if rows.size else np.zeros(0)
        return [
            Hit(rank=i + 1, row=int(r), stream_id=str(self.stream_id[r]), t=int(self.t[r]), distance=float(d))
            for i, (r, d) in enumerate(zip(rows, exact))
        ]

    def _allowed(self, rows: np.ndarray | None, exclude: tuple[str, int] | None, exclusion: int) -> np.ndarray:
        """Mask over ``rows`` (all rows when None): False within ±exclusion s of ``exclude`` in its stream."""
        at = slice(None) if rows is None else rows
        allowed = np.ones(len(self) if rows is None else rows.size, dtype=bool)
        if exclude is not None:
            matches = np.flatnonzero(self._streams == str(exclude[0]))
            if matches.size:
                allowed &= ~((self._stream_code[at] == matches[0]) & (np.abs(self.t[at] - int(exclude[1])) <= exclusion))
        return allowed

    def _approximate_candidates(self, query_v: np.ndarray | None, query_a: np.ndarray | None, mode: Mode,
                                count: int) -> np.ndarray:
        """Candidate rows from the approximate index, in row order; every row once ``count`` reaches the index size."""
        if count >= len(self):
            return np.arange(len(self))
        index = self.prepare(mode)
        query = {"visual": [query_v], "audio": [query_a], "both": [query_v, query_a]}[mode]
        return np.sort(index.candidates(query, count))

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


def _check_query(mode: str, query_v: np.ndarray | None, query_a: np.ndarray | None) -> None:
    _check_mode(mode)
    if mode in ("visual", "both") and query_v is None:
        raise ValueError(f"mode {mode!r} needs a visual query embedding")
    if mode in ("audio", "both") and query_a is None:
        raise ValueError(f"mode {mode!r} needs an audio query embedding")
