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

from pipelines.media.storage import OutputStore
from pipelines.runtime.manifest import DamagedFile, StreamManifest, stream_dir
from pipelines.runtime.shards import read_shard


def stream_manifests(root: str, skipped: list[str] | None = None) -> list[StreamManifest]:
    """The manifests of a root's streams. One that cannot be read raises ``DamagedFile`` naming it, or,
    with a ``skipped`` list, is described there and left out."""
    store = OutputStore(root)
    infos = store.fs.get_file_info(pafs.FileSelector(store.path(), allow_not_found=True))
    ids = sorted(i.base_name.split("=", 1)[1] for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("stream_id="))
    manifests = []
    for sid in ids:
        try:
            manifest = StreamManifest.read(store, sid)
        except DamagedFile as exc:
            if skipped is None:
                raise
            skipped.append(str(exc).split("; ")[0])
            continue
        if manifest is not None:
            manifests.append(manifest)
    return manifests


def complete_stream_files(root: str, skipped: list[str] | None = None) -> list[str]:
    """Parquet files of every complete stream (and the committed files of live ones), in stream and time order.

    Any root laid out one ``stream_id=<id>/`` directory per stream with a manifest:
    the clips of ingest and the embeddings of scoring (``pipelines.score.embeddings``). A damaged
    manifest: as ``stream_manifests``."""
    store = OutputStore(root)
    files = []
    for manifest in stream_manifests(root, skipped):
        if manifest.readable:
            files += [f"{stream_dir(store, manifest.stream_id)}/{name}" for name in manifest.files]
    return files


def read_stream(root: str, stream_id: str, columns: list[str] | None = None) -> pa.Table:
    """All rows of one complete stream (or the committed rows of a live one), ordered by t; ``DamagedFile``
    naming a manifest or file that cannot be read."""
    store = OutputStore(root)
    manifest = StreamManifest.read(store, stream_id)
    if manifest is None or not manifest.readable:
        raise FileNotFoundError(f"{root}: stream {stream_id!r} is not completely ingested")
    paths = [f"{stream_dir(store, stream_id)}/{name}" for name in manifest.files]
    tables = [read_shard(p, store.fs, columns) for p in paths]
    return pa.concat_tables(tables).sort_by("t")
