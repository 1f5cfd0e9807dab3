"""Which search index a search job uses (exact or approximate, by size), and the cache that keeps approximate ones.

Exact search scores every row per query: the reference, and fast enough for days of
clips. From ``approximate_from`` rows on (``index = auto``), the job builds a faiss
index (``epg.search_ann``) once and answers from its candidates. Building one over a
month of clips takes minutes, far more than one exact query, so a job given
``index_cache`` (a directory, local or a URI) keeps each built index there and the
next search over the same embeddings loads it instead.

A cached index is found by a fingerprint of what it was built from: the model, λ, the
mode, the approximate settings, every (stream, t) and a strided sample of the vectors
(every 97th row of v and a, so a re-scored stream changes it without hashing gigabytes).
It is written under a temporary name and renamed, so a reader never loads half a file.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np

from epg.search import Mode, SearchIndex
from epg.search_ann import ApproximateConfig, ApproximateIndex
from pipelines.downstream.outputs import OutputDir
from pipelines.score.embeddings import Embeddings

INDEX_KINDS = ("auto", "exact", "approximate")
_SAMPLE_STRIDE = 97


@dataclass(frozen=True)
class IndexChoice:
    """The index a search used, and why: reported in summary.json and on the console."""

    kind: str  # exact | approximate
    reason: str
    build_seconds: float
    cache: str | None  # None (no cache), "hit" or "written"
    details: dict

    def describe(self) -> str:
        if self.kind == "exact":
            return f"exact index ({self.reason})"
        how = {"hit": "loaded from the cache", "written": "built and cached", None: "built"}[self.cache]
        return (f"approximate index IVF{self.details['nlist']} (nprobe {self.details['nprobe']}; {self.reason}), "
                f"{how} in {self.build_seconds:.1f} s")


def fingerprint(emb: Embeddings, mode: Mode, approximate: ApproximateConfig) -> str:
    """What an approximate index of ``emb`` in ``mode`` depends on, as a hex digest."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps({"model": emb.model, "lam": emb.lam, "mode": mode, "rows": len(emb), "dim": emb.v.shape[1],
                              "approximate": approximate.to_dict()}, sort_keys=True).encode())
    digest.update("\n".join(map(str, emb.stream_id)).encode())
    digest.update(np.ascontiguousarray(emb.t, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(emb.v[::_SAMPLE_STRIDE], dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(emb.a[::_SAMPLE_STRIDE], dtype=np.float32).tobytes())
    return digest.hexdigest()


def open_index(emb: Embeddings, mode: Mode, kind: str, approximate_from: int, approximate: ApproximateConfig,
               index_cache: str | None) -> tuple[SearchIndex, IndexChoice]:
    """The search index of ``emb`` for queries in ``mode``, ready to answer (an approximate one built or loaded)."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"index must be one of {INDEX_KINDS}, got {kind!r}")
    rows = len(emb)
    if kind == "auto":
        use_approximate = rows >= approximate_from
        reason = f"{rows:,} clips {'≥' if use_approximate else '<'} approximate_from {approximate_from:,}"
    else:
        use_approximate, reason = kind == "approximate", f"index = {kind}"
    started = time.perf_counter()
    index = SearchIndex(emb.stream_id, emb.t, emb.v, emb.a, emb.lam, approximate=approximate if use_approximate else None)
    if not use_approximate:
        return index, IndexChoice("exact", reason, time.perf_counter() - started, None, {})
    cache, built = None, None
    if index_cache is not None:
        store = OutputDir(index_cache)
        name = f"{fingerprint(emb, mode, approximate)}-{mode}.faiss"
        if store.store.exists(store.path(name)):
            try:
                with store.store.fs.open_input_stream(store.path(name)) as source:
                    built, cache = ApproximateIndex.from_bytes(source.read(), emb.lam, approximate), "hit"
                index.prepare(mode, built)
            except (OSError, RuntimeError, ValueError):  # damaged or foreign file: build again and replace it
                built, cache = None, None
    ann = index.prepare(mode, built) if built is not None else index.prepare(mode)
    if index_cache is not None and built is None:
        store.write_bytes(name, ann.to_bytes())
        cache = "written"
    return index, IndexChoice("approximate", reason, time.perf_counter() - started, cache, ann.describe())
