"""Reading a dataset's Parquet shards so that damage names the file: one shard, its footer, all of them.

    read_shard(path, fs)          the table; ``DamagedFile`` naming the file when it does not decode
    shard_footer(path, fs)        its footer (schema, rows), checked the same way
    damaged_shards(paths, root)   {path: why} for every shard whose data pages do not decode
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.media.storage import OutputStore
from pipelines.runtime.datasets import run_map
from pipelines.runtime.manifest import SKIP_HINT, DamagedFile


def read_shard(path: str, filesystem: pafs.FileSystem, columns: list[str] | None = None, filters=None) -> pa.Table:
    """One Parquet file of a dataset; ``DamagedFile`` naming it when it is missing or cannot be decoded."""
    try:
        return pq.read_table(path, columns=columns, filters=filters, filesystem=filesystem,
                             page_checksum_verification=True)  # pages written with a checksum (OutputStore)
    except (pa.ArrowException, OSError) as exc:  # ArrowInvalid (a bad footer or page), a missing file
        raise DamagedFile(f"{path}: cannot be read as Parquet ({type(exc).__name__}: {exc}); {SKIP_HINT}") from None


def shard_footer(path: str, filesystem: pafs.FileSystem) -> pq.FileMetaData:
    """A Parquet file's footer (its schema and row count); ``DamagedFile`` naming it when unreadable."""
    try:
        with filesystem.open_input_file(path) as handle:
            return pq.ParquetFile(handle).metadata
    except (pa.ArrowException, OSError) as exc:
        raise DamagedFile(f"{path}: cannot be read as Parquet ({type(exc).__name__}: {exc}); {SKIP_HINT}") from None


def _read_whole(item: dict) -> dict:
    try:
        read_shard(item["path"], OutputStore(item["root"]).fs)
        return {"path": item["path"], "error": ""}
    except DamagedFile as exc:
        return {"path": item["path"], "error": str(exc)}


IN_DRIVER_BYTES = 512 * 2**20  # a dataset this small is checked by the driver itself (no Ray tasks to start)


def damaged_shards(paths: list[str], root: str, show_progress: bool = False) -> dict[str, str]:
    """Read every Parquet file of a dataset once: {path: why} for those that cannot be decoded.

    Footers are checked before a job starts (``inspect_clips``); damage inside a file's data pages shows
    only when its pages are decompressed, and deep in a Ray Data read it would name no file. So the job
    reads the data once more first: in the driver's threads when it is small, else in Ray tasks across
    the cluster (training reads it every epoch anyway; scoring's model costs far more than a read)."""
    items = [{"path": p, "root": root} for p in paths]
    size = sum(max(0, info.size or 0) for info in OutputStore(root).fs.get_file_info(paths))
    if size <= IN_DRIVER_BYTES:
        with ThreadPoolExecutor(max_workers=4) as pool:
            rows = list(pool.map(_read_whole, items))
    else:
        rows = run_map(items, _read_whole, 1.0, "checking", "file", show_progress)
    return {row["path"]: row["error"] for row in rows if row["error"]}
