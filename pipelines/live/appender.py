"""Append a live stream's rows to a dataset root (clips or embeddings), committed second by second.

The stream's directory has the layout of a batch-written one (``stream_id=<id>/`` with Parquet
files ordered by t and a manifest), with status ``live``. Each commit writes a small shard
(atomically), then the manifest that lists it, so a reader (``complete_stream_files``,
``read_stream``) sees committed seconds only and a killed watcher loses nothing it committed.
Once the small shards hold ``shard_seconds`` of footage they are merged into one file the same
way (new file, then the manifest); the small ones are deleted at the next merge, so a reader
that listed them just before still finds them. Files that no manifest lists (a commit cut
short, merged shards) are removed when the stream is opened again.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.live.config import redacted
from pipelines.media.storage import OutputStore
from pipelines.runtime.manifest import STATUS_LIVE, StreamManifest, stream_dir
from pipelines.runtime.stream_job import keep_only, remove_temporaries

SMALL_PREFIX = "live-"


class LiveAppender:
    """The rows of one live stream under ``root``."""

    def __init__(self, root: str, stream_id: str, source: str, config_hash: str, config: dict,
                 schema: pa.Schema, compression: str, shard_seconds: int) -> None:
        self.store = OutputStore(root)
        self.stream_id, self.schema, self.compression = stream_id, schema, compression
        self.shard_seconds = shard_seconds
        self.dir = stream_dir(self.store, stream_id)
        # A damaged manifest is an error (DamagedFile names it): starting the stream anew would delete its
        # committed files, which only that manifest lists.
        previous = StreamManifest.read(self.store, stream_id)
        if previous is not None and previous.status == STATUS_LIVE and previous.config_hash != config_hash:
            raise ValueError(f"{self.dir}: live stream {stream_id!r} was written with other settings "
                             f"(config {previous.config_hash}, now {config_hash}); use another --clips or stream name")
        if previous is not None and previous.status != STATUS_LIVE:
            raise ValueError(f"{self.dir}: stream {stream_id!r} exists and is not live ({previous.status}); "
                             "give the source another stream name")
        if previous is not None and redacted(previous.source) == source:
            previous.source = source  # written before passwords were redacted: stored without it from now on
        if previous is not None and previous.source != source:
            raise ValueError(f"{self.dir}: live stream {stream_id!r} follows {previous.source}, not {source}; "
                             "give this source another stream name")
        if previous is None:
            previous = StreamManifest(stream_id, source, STATUS_LIVE, config_hash, config, committed_until=0)
        self.manifest = previous
        self.retired: list[str] = []  # merged small shards, deleted at the next merge
        self.store.makedirs(self.dir)
        remove_temporaries(self.store, self.dir)
        keep_only(self.store, stream_id, self.manifest.files)

    @property
    def committed_until(self) -> int:
        return int(self.manifest.committed_until or 0)

    def commit(self, table: pa.Table | None, until: int, gaps: list[dict] = (), state: dict | None = None,
               errors: list[str] = ()) -> None:
        """Rows (t < ``until``, after what is committed) and the seconds without rows, then the manifest."""
        if table is not None and table.num_rows:
            first = int(table.column("t")[0].as_py())
            name = f"{SMALL_PREFIX}{first:09d}-{until:09d}.parquet"
            self.manifest.rows += self.store.write_parquet(f"{self.dir}/{name}", [table], self.schema, self.compression)
            self.manifest.files.append(name)
        for gap in gaps:  # a gap that continues the last one with the same reason extends it
            last = self.manifest.gaps[-1] if self.manifest.gaps else None
            if last is not None and last["end"] == gap["start"] and last["reason"] == gap["reason"]:
                last["end"] = gap["end"]
            else:
                self.manifest.gaps.append(dict(gap))
        self.manifest.errors += list(errors)
        self.manifest.committed_until = until
        if state is not None:
            self.manifest.live = state
        self.manifest.save(self.store)
        if sum(1 for f in self.manifest.files if f.startswith(SMALL_PREFIX)) and self._small_seconds() >= self.shard_seconds:
            self.compact()

    def _small_seconds(self) -> int:
        spans = [shard_span(f) for f in self.manifest.files if f.startswith(SMALL_PREFIX)]
        return spans[-1][1] - spans[0][0] if spans else 0

    def compact(self) -> None:
        """Merge the small shards into one file (published like a commit)."""
        small = [f for f in self.manifest.files if f.startswith(SMALL_PREFIX)]
        if len(small) < 2:
            return
        first, until = shard_span(small[0])[0], shard_span(small[-1])[1]
        name = f"part-{first:09d}-{until:09d}.parquet"
        tables = (pq.read_table(f"{self.dir}/{f}", filesystem=self.store.fs, schema=self.schema) for f in small)
        self.store.write_parquet(f"{self.dir}/{name}", tables, self.schema, self.compression)
        self.manifest.files = [f for f in self.manifest.files if not f.startswith(SMALL_PREFIX)] + [name]
        self.manifest.save(self.store)
        for f in self.retired:
            self.store.delete_file(f"{self.dir}/{f}")
        self.retired = small


def shard_span(name: str) -> tuple[int, int]:
    """(first t, until) of a shard named ``<prefix><first>-<until>.parquet``."""
    first, until = name.rsplit(".", 1)[0].split("-")[-2:]
    return int(first), int(until)
