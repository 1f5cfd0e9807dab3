"""What ingest and scoring share as per-stream jobs: outcomes, summaries, staging and publishing.

Both write one dataset directory per stream (``stream_id=<id>/part-*.parquet`` + manifest,
``pipelines.runtime.manifest``) and promise the same things: a stream is published whole or
not at all (a failed stream keeps no rows and its manifest says why), an interrupted run
leaves nothing a reader can mistake for output, and each stream ends as one outcome in the
job's summary.

    StreamOutcome / StreamJobSummary     one stream's end, and what a summary derives from them
    fail_stream(store, manifest, errors) drop the stream's rows, record why
    publish_staged(store, manifest, ...) move staged parts in under a ``running`` manifest, then complete
    keep_only / remove_temporaries / remove_empty_staging   the clean-up both jobs do
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow.fs as pafs

from pipelines.media.storage import OutputStore
from pipelines.runtime.manifest import STATUS_COMPLETE, STATUS_FAILED, STATUS_RUNNING, StreamManifest, stream_dir

STAGING = "_staging"
STATUS_SKIPPED = "skipped"


@dataclass
class StreamOutcome:
    """How one stream of a run ended: complete, skipped (already complete) or failed (with the reasons)."""

    stream_id: str
    source: str
    status: str
    rows: int = 0
    seconds: float = 0.0  # footage of the stream (ingest)
    unscored: int = 0  # clips without audio or video, so without a row (scoring)
    errors: list[str] = field(default_factory=list)


class StreamJobSummary:
    """What a per-stream job's summary derives from its outcomes and its input errors."""

    streams: list[StreamOutcome]
    input_errors: list[str]

    def of(self, status: str) -> list[StreamOutcome]:
        return [s for s in self.streams if s.status == status]

    @property
    def failed(self) -> list[StreamOutcome]:
        return self.of(STATUS_FAILED)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.input_errors

    def failure_lines(self) -> list[str]:
        """The summary's closing lines: every failed stream with its reasons, then the input errors."""
        lines = []
        for stream in self.failed:
            lines.append(f"  FAILED {stream.stream_id} ({stream.source}):")
            lines.extend(f"    - {error}" for error in stream.errors)
        lines.extend(f"  INPUT ERROR {error}" for error in self.input_errors)
        return lines


def staging_root(store: OutputStore, stream_id: str | None = None) -> str:
    """Where unpublished parts wait (all streams, or one)."""
    return store.path(STAGING, stream_id) if stream_id else store.path(STAGING)


def keep_only(store: OutputStore, stream_id: str, names: set[str] | list[str]) -> None:
    """Delete the stream's Parquet files that are not in ``names`` (an earlier run's, or all with an empty set)."""
    keep = set(names)
    for path in store.list_files(stream_dir(store, stream_id), ".parquet"):
        if path.rsplit("/", 1)[-1] not in keep:
            store.delete_file(path)


def fail_stream(store: OutputStore, manifest: StreamManifest, errors: list[str]) -> StreamOutcome:
    """A failed stream publishes no rows: its files go, its manifest says why."""
    keep_only(store, manifest.stream_id, set())
    manifest.status, manifest.errors = STATUS_FAILED, errors
    manifest.rows, manifest.files = 0, []
    manifest.save(store)
    return StreamOutcome(manifest.stream_id, manifest.source, STATUS_FAILED, errors=errors)


def publish_staged(store: OutputStore, manifest: StreamManifest, parts: list[str], rows: int) -> None:
    """Move a stream's staged parts into its directory and mark it complete.

    The manifest says ``running`` while the files change, so readers (which list complete
    streams only) see the old rows, no rows, or the new rows, never a mix.
    """
    manifest.status = STATUS_RUNNING
    manifest.save(store)
    directory = stream_dir(store, manifest.stream_id)
    names = [p.rsplit("/", 1)[-1] for p in parts]
    for part, name in zip(parts, names):
        store.fs.move(part, f"{directory}/{name}")
    keep_only(store, manifest.stream_id, names)
    manifest.status, manifest.files, manifest.rows = STATUS_COMPLETE, names, rows
    manifest.save(store)


def remove_temporaries(store: OutputStore, directory: str) -> None:
    """Drop half-written files an interrupted run left in a directory tree."""
    infos = store.fs.get_file_info(pafs.FileSelector(directory, recursive=True, allow_not_found=True))
    for info in infos:
        if info.is_file and info.base_name.startswith(".tmp-"):
            store.delete_file(info.path)


def remove_empty_staging(store: OutputStore) -> None:
    """The staging root goes once no stream has anything staged."""
    root = staging_root(store)
    if store.exists(root) and not store.fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        store.delete_dir(root)
