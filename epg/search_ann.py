"""Approximate nearest clips for event search over large indexes (faiss IVF, 8-bit codes).

Exact search (``epg.search``) costs one pass over every embedding per query: fine for a
day of clips, too slow for a month of many cameras. This index proposes candidates; the
search then ranks them by the exact distance D and applies its exclusion and suppression
rules unchanged, asking for more candidates when the rules leave fewer than k.

What is indexed (one index per search mode, built on first use):
- the rows of the mode: v (``visual``), a (``audio``) or the two side by side (``both``);
- for λ < 0.5 (cosine-led D, the InfoNCE default λ = 0) each modality is scaled to unit
  length and the index ranks by inner product: for ``both`` that is cos_v + cos_a, the
  same order as the mean of the two (1 − cos) terms; for λ ≥ 0.5 the raw rows under L2.
  Either way the candidate order only proposes; D decides.
- faiss ``IVF<nlist>_HNSW32,SQ8``: ``nlist`` inverted lists (default about 2·√n, a power of
  two, with at least ``train_rows`` rows per list to train on) found through an HNSW graph over the centroids, so adding millions of rows costs no
  scan over all centroids; 8-bit scalar-quantised codes, a quarter of float32's memory.
  A query scans ``nprobe`` lists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from epg.configs import Config, non_negative, positive

_ADD_CHUNK = 65_536  # rows prepared (scaled, side by side) and added at a time: bounded extra memory
_EPS = 1e-8


@dataclass(frozen=True)
class ApproximateConfig(Config):
    """How the approximate index is built and queried; validated on creation."""

    nlist: int = 0  # inverted lists; 0: about 2·√n, a power of two
    nprobe: int = 16  # lists scanned per query (bench/search.py: < 10 ms at recall@10 ≥ 0.95 over a month)
    rerank: int = 100  # candidates fetched beyond what k and the rules need, re-ranked by D (margin for the 8-bit codes)
    train_rows: int = 39  # k-means training rows per list (sampled, seeded; faiss asks for 39 or more)
    seed: int = 0

    def __post_init__(self) -> None:
        non_negative(self, "nlist", "rerank")
        positive(self, "nprobe", "train_rows")

    def lists_for(self, rows: int) -> int:
        """The number of inverted lists for ``rows`` rows: ``nlist``, or about 2·√rows with train_rows rows per list."""
        if self.nlist:
            return max(1, min(self.nlist, rows))
        wanted = 2 ** round(math.log2(max(2.0 * math.sqrt(rows), 1.0)))
        return int(max(1, min(wanted, rows // self.train_rows)))


def _side_by_side(parts: list[np.ndarray], rows: np.ndarray | slice, unit: bool) -> np.ndarray:
    """The given rows of each part (each scaled to unit length when ``unit``), concatenated: what the index holds."""
    blocks = []
    for part in parts:
        block = np.asarray(part[rows], dtype=np.float32)
        if unit:
            block = block / np.sqrt(np.maximum(np.einsum("nd,nd->n", block, block), _EPS**2))[:, None]
        blocks.append(block)
    return np.ascontiguousarray(np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0])


class ApproximateIndex:
    """Candidate rows near a query, from one modality's rows or both side by side."""

    def __init__(self, index: "faiss.Index", unit: bool, config: ApproximateConfig):  # noqa: F821 (lazy import)
        import faiss  # lazy: only large indexes need it

        self._index = index
        self.unit = unit
        self.config = config
        self.rows, self.dim = int(index.ntotal), int(index.d)
        self.nlist = int(faiss.extract_index_ivf(index).nlist)
        self.nprobe = 0
        self.set_nprobe(config.nprobe)

    def set_nprobe(self, nprobe: int) -> None:
        """Lists scanned per query from now on (at most nlist); the graph over the centroids searches wider to match."""
        import faiss

        if nprobe <= 0:
            raise ValueError(f"nprobe must be > 0, got {nprobe}")
        self.nprobe = min(nprobe, self.nlist)
        params = faiss.ParameterSpace()
        params.set_index_parameter(self._index, "nprobe", self.nprobe)
        params.set_index_parameter(self._index, "quantizer_efSearch", max(64, 2 * self.nprobe))

    @classmethod
    def build(cls, parts: list[np.ndarray], lam: float, config: ApproximateConfig = ApproximateConfig()) -> "ApproximateIndex":
        """Train the lists on a seeded sample of the rows, then add every row in chunks."""
        import faiss

        unit, rows = lam < 0.5, int(parts[0].shape[0])
        dim = int(sum(p.shape[1] for p in parts))
        nlist = config.lists_for(rows)
        index = faiss.index_factory(dim, f"IVF{nlist}_HNSW32,SQ8", faiss.METRIC_INNER_PRODUCT if unit else faiss.METRIC_L2)
        sample = np.sort(np.random.default_rng(config.seed).choice(rows, size=min(rows, nlist * config.train_rows), replace=False))
        index.train(_side_by_side(parts, sample, unit))  # faiss seeds its k-means and graph: same rows, same index
        for start in range(0, rows, _ADD_CHUNK):
            index.add(_side_by_side(parts, slice(start, start + _ADD_CHUNK), unit))
        return cls(index, unit, config)

    def to_bytes(self) -> bytes:
        import faiss

        return faiss.serialize_index(self._index).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, lam: float, config: ApproximateConfig = ApproximateConfig()) -> "ApproximateIndex":
        import faiss

        return cls(faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8)), lam < 0.5, config)

    @property
    def memory_bytes(self) -> int:
        """Bytes of the codes and row ids (the centroids and the graph over them are small beside them)."""
        return self.rows * (self.dim + 8)

    def describe(self) -> dict:
        return {"structure": f"IVF{self.nlist}_HNSW32,SQ8", "nlist": self.nlist, "nprobe": min(self.config.nprobe, self.nlist),
                "codes": "SQ8", "metric": "inner product of unit rows" if self.unit else "L2", "memory_bytes": self.memory_bytes}

    def candidates(self, query_parts: list[np.ndarray], count: int) -> np.ndarray:
        """Up to ``count`` row numbers near the query (nearest first by the index's metric)."""
        query = _side_by_side([np.asarray(q, dtype=np.float32).reshape(1, -1) for q in query_parts], slice(None), self.unit)
        _, ids = self._index.search(query, int(min(count, self.rows)))
        ids = ids[0]
        return ids[ids >= 0]
