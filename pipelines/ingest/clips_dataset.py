"""Find the finished clip files under a clips root.

A stream's files are only listed once its manifest says complete, so a
reader never sees a stream that an ingest run is still writing (or that
failed). A live stream (``pipelines.live``) is listed with the files its
manifest names: its committed seconds, never one being written. Use these
lists with ``ray.data.read_parquet`` or pyarrow.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.media.storage import OutputStore
from pipelines.runtime.manifest import StreamManifest, stream_dir


def stream_manifests(root: str) -> list[StreamManifest]:
    store = OutputStore(root)
    infos = store.fs.get_file_info(pafs.FileSelector(store.path(), allow_not_found=True))
    ids = sorted(i.base_name.split("=", 1)[1] for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("stream_id="))
    manifests = [StreamManifest.load(store, sid) for sid in ids]
    return [m for m in manifests if m is not None]


def complete_stream_files(root: str) -> list[str]:
    """Parquet files of every complete stream (and the committed files of live ones), in stream and time order.

    Any root laid out one ``stream_id=<id>/`` directory per stream with a manifest:
    the clips of ingest and the embeddings of scoring (``pipelines.score.embeddings``)."""
    store = OutputStore(root)
    files = []
    for manifest in stream_manifests(root):
        if manifest.readable:
            files += [f"{stream_dir(store, manifest.stream_id)}/{name}" for name in manifest.files]
    return files


def read_stream(root: str, stream_id: str, columns: list[str] | None = None) -> pa.Table:
    """All rows of one complete stream (or the committed rows of a live one), ordered by t."""
    store = OutputStore(root)
    manifest = StreamManifest.load(store, stream_id)
    if manifest is None or not manifest.readable:
        raise FileNotFoundError(f"{root}: stream {stream_id!r} is not completely ingested")
    paths = [f"{stream_dir(store, stream_id)}/{name}" for name in manifest.files]
    tables = [pq.read_table(p, columns=columns, filesystem=store.fs) for p in paths]
    return pa.concat_tables(tables).sort_by("t")
