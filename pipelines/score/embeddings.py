"""The embeddings dataset (DESIGN §3.2): schema, layout and the in-memory view the downstream tasks use.

Layout, like the clips (one directory per stream, a manifest that says when it is complete):

    <root>/stream_id=<id>/part-00000.parquet ...   rows ordered by t
    <root>/stream_id=<id>/manifest.json            pipelines.runtime.manifest.StreamManifest

Columns: stream_id, t, v_emb (mean of the two crops' visual embeddings), a_emb,
av_dist = D(v, a) with the run's λ, model (checkpoint id), and spectrum (the clip's
log-mel averaged over time, ``epg.features.spectrum``: a fixed feature, not learned, for
the anomaly job's ``knn_spectrum``; embeddings written before it have none). The schema metadata
records d, λ and the checkpoint id, so a task that compares embeddings uses the
same D as the model was trained with.

Only streams whose manifest says complete are read, so a reader never sees a
stream that a scoring run is still writing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipelines.ingest.clips_dataset import complete_stream_files
from pipelines.media.storage import OutputStore
from pipelines.runtime.manifest import DamagedFile
from pipelines.runtime.shards import read_shard


class EmbeddingsError(ValueError):
    """The embeddings directory cannot be used; the message names it and says why."""


def embeddings_schema(dim: int, model_id: str, lam: float, n_mels: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("stream_id", pa.string(), nullable=False),
            pa.field("t", pa.int32(), nullable=False),
            pa.field("v_emb", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("a_emb", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("av_dist", pa.float32(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("spectrum", pa.list_(pa.float32(), n_mels), nullable=False),
        ],
        metadata={"dim": str(dim), "model": model_id, "lam": repr(float(lam))},
    )


def embeddings_table(
    stream_id: str, t: np.ndarray, v: np.ndarray, a: np.ndarray, av_dist: np.ndarray, model_id: str, lam: float,
    spectrum: np.ndarray,
) -> pa.Table:
    """One stream's rows as a table of the §3.2 schema (rows kept in the given order); spectrum [N, n_mels]."""
    n, dim = v.shape
    n_mels = spectrum.shape[1]
    schema = embeddings_schema(dim, model_id, lam, n_mels)
    return pa.table(
        {
            "stream_id": pa.array([stream_id] * n, pa.string()),
            "t": pa.array(np.asarray(t, np.int32)),
            "v_emb": pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(v, np.float32).reshape(-1)), dim),
            "a_emb": pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(a, np.float32).reshape(-1)), dim),
            "av_dist": pa.array(np.asarray(av_dist, np.float32)),
            "model": pa.array([model_id] * n, pa.string()),
            "spectrum": pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(spectrum, np.float32).reshape(-1)), n_mels),
        },
        schema=schema,
    )


@dataclass
class Embeddings:
    """Embeddings of one or more streams in memory, rows ordered by (stream_id, t).

    stream_id: str [N]; t: int64 [N]; v, a: float32 [N, d]; av_dist: float32 [N];
    spectrum: float32 [N, n_mels]; NaN rows for streams scored before scoring stored it (None when no stream has it).
    """

    stream_id: np.ndarray
    t: np.ndarray
    v: np.ndarray
    a: np.ndarray
    av_dist: np.ndarray
    model: str
    lam: float
    skipped: list[str] = field(default_factory=list)  # damaged manifests and files left out (skip_bad_shards)
    spectrum: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.t)

    @property
    def streams(self) -> list[str]:
        return sorted(set(self.stream_id.tolist()))

    def select(self, mask: np.ndarray) -> "Embeddings":
        return Embeddings(self.stream_id[mask], self.t[mask], self.v[mask], self.a[mask], self.av_dist[mask], self.model, self.lam,
                          self.skipped, None if self.spectrum is None else self.spectrum[mask])

    def of_streams(self, stream_ids: list[str] | tuple[str, ...]) -> "Embeddings":
        return self.select(np.isin(self.stream_id, list(stream_ids)))

    def index_of(self, stream_id: str, t: int) -> int:
        """Row of clip (stream_id, t); ``KeyError`` naming the clip when absent."""
        rows = np.nonzero((self.stream_id == stream_id) & (self.t == t))[0]
        if rows.size == 0:
            raise KeyError(f"no embedding for clip (stream {stream_id!r}, t {t} s)")
        return int(rows[0])


def read_embeddings(root: str, stream_ids: list[str] | None = None, skip_bad_shards: bool = False) -> Embeddings:
    """All complete streams of an embeddings root (or the given ones); ``EmbeddingsError`` when unusable,
    naming a manifest or file that cannot be read, unless ``skip_bad_shards``: then those are left out and
    ``Embeddings.skipped`` says which and why."""
    store = OutputStore(root)
    if not store.exists(store.path()):
        raise EmbeddingsError(f"embeddings directory {root!r} does not exist; run jobs/embed.py first")
    skipped: list[str] | None = [] if skip_bad_shards else None
    try:
        files = complete_stream_files(root, skipped)
    except DamagedFile as exc:
        raise EmbeddingsError(str(exc)) from None
    if stream_ids is not None:
        wanted = {f"stream_id={sid}" for sid in stream_ids}
        files = [f for f in files if f.rsplit("/", 2)[-2] in wanted]
        found = {f.rsplit("/", 2)[-2].split("=", 1)[1] for f in files}
        missing = sorted(set(stream_ids) - found)
        if missing:
            raise EmbeddingsError(f"embeddings directory {root!r} has no complete stream(s) {missing}")
    if not files:
        raise EmbeddingsError(f"embeddings directory {root!r} has no completely scored stream")
    tables = []
    for path in files:
        try:
            tables.append(read_shard(path, store.fs))
        except DamagedFile as exc:
            if skipped is None:
                raise EmbeddingsError(str(exc)) from None
            skipped.append(str(exc).split("; ")[0])
    if not tables:
        raise EmbeddingsError(f"embeddings directory {root!r}: every file is damaged: " + "; ".join(skipped or []))
    models = {(t.schema.metadata or {}).get(b"model", b"").decode() for t in tables}
    lams = {(t.schema.metadata or {}).get(b"lam", b"0.5").decode() for t in tables}
    if len(models) > 1 or len(lams) > 1:
        raise EmbeddingsError(f"embeddings directory {root!r} mixes models {sorted(models)}; score it again with one checkpoint")
    with_spectrum = [t for t in tables if "spectrum" in t.column_names]
    if with_spectrum and len(with_spectrum) < len(tables):  # some streams were scored before the spectrum: NaN rows
        field_ = with_spectrum[0].schema.field("spectrum")
        n_mels = field_.type.list_size
        tables = [t if "spectrum" in t.column_names else t.append_column(field_, pa.FixedSizeListArray.from_arrays(
            pa.array(np.full(t.num_rows * n_mels, np.nan, np.float32)), n_mels)) for t in tables]
    table = pa.concat_tables(tables).sort_by([("stream_id", "ascending"), ("t", "ascending")])
    dim = table.schema.field("v_emb").type.list_size
    spectrum = None
    if "spectrum" in table.column_names:
        n_mels = table.schema.field("spectrum").type.list_size
        spectrum = table.column("spectrum").combine_chunks().flatten().to_numpy().reshape(-1, n_mels).astype(np.float32, copy=False)
    return Embeddings(
        stream_id=np.asarray(table.column("stream_id").to_pylist(), dtype=object),
        t=table.column("t").to_numpy().astype(np.int64),
        v=table.column("v_emb").combine_chunks().flatten().to_numpy().reshape(-1, dim).astype(np.float32, copy=False),
        a=table.column("a_emb").combine_chunks().flatten().to_numpy().reshape(-1, dim).astype(np.float32, copy=False),
        av_dist=table.column("av_dist").to_numpy().astype(np.float32),
        model=models.pop(),
        lam=float(lams.pop()),
        skipped=list(skipped or []),
        spectrum=spectrum,
    )
