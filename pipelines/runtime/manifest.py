"""The per-stream manifest (DESIGN §3.1): what was ingested from where, with
which settings, and how it ended. It is what makes ingest resumable: a
stream whose manifest says complete for the same config hash is skipped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from pipelines.media.storage import OutputStore

STATUS_RUNNING = "running"
STATUS_COMPLETE = "complete"
STATUS_FAILED = "failed"
# A live stream (``pipelines.live``): its listed files hold every committed second below ``committed_until``.
STATUS_LIVE = "live"
READABLE_STATUSES = (STATUS_COMPLETE, STATUS_LIVE)
MANIFEST_NAME = "manifest.json"


class DamagedFile(ValueError):
    """A manifest or Parquet shard of a dataset that cannot be read; the message names the file."""


SKIP_HINT = "repair or remove it, or pass --skip-bad-shards to go on without it"


def stream_dir(store: OutputStore, stream_id: str) -> str:
    return store.path(f"stream_id={stream_id}")


@dataclass
class StreamManifest:
    stream_id: str
    source: str
    status: str
    config_hash: str
    config: dict
    info: dict | None = None  # VideoInfo: duration, fps, sample rate, codecs ...
    source_key: str = ""  # changes when the source file is replaced (path, size, mtime)
    rows: int = 0
    files: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    frame_backend: str = ""
    windows_by_backend: dict[str, int] = field(default_factory=dict)
    seconds_without_audio: int = 0
    seconds_without_video: int = 0
    max_frame_offset: float | None = None  # the longest a target's frame was shown before it (s)
    windows_decoded_in_full: int = 0  # with a frame skip: windows whose skipping decode exceeded the tolerance
    damaged_packets: int = 0  # undecodable packets left out (a damaged recording; the seconds keep their rows)
    decode_seconds: float = 0.0  # wall time of the stream's window decodes in the run that wrote it, summed
    committed_until: int | None = None  # live: every second below this is in ``files`` or in ``gaps``
    gaps: list[dict] = field(default_factory=list)  # live: {"start", "end" (exclusive), "reason"} without rows
    live: dict = field(default_factory=dict)  # live: the watcher's resume state (epochs, last segment)
    updated_at: float = field(default_factory=time.time)

    def is_complete_for(self, config_hash: str, source: str, source_key: str) -> bool:
        """Complete for these settings and this very file (not a replaced one)."""
        return (
            self.status == STATUS_COMPLETE
            and self.config_hash == config_hash
            and self.source == source
            and self.source_key == source_key
        )

    @property
    def readable(self) -> bool:
        """Complete, or live (its listed files are committed)."""
        return self.status in READABLE_STATUSES

    def count_backends(self, backends: Iterable[str]) -> None:
        """Add windows decoded by each frame backend ("" = no frames decoded) to ``windows_by_backend``."""
        for backend in backends:
            if backend:
                self.windows_by_backend[backend] = self.windows_by_backend.get(backend, 0) + 1

    def save(self, store: OutputStore) -> None:
        self.updated_at = time.time()
        store.write_json(f"{stream_dir(store, self.stream_id)}/{MANIFEST_NAME}", asdict(self))

    @classmethod
    def load(cls, store: OutputStore, stream_id: str) -> "StreamManifest | None":
        """The stream's manifest; None when it has none, or one that is not a manifest (a writer redoes the
        stream). Readers use ``read``, which says so. Storage errors are raised, never taken for absence."""
        try:
            return cls.read(store, stream_id)
        except DamagedFile:
            return None

    @classmethod
    def read(cls, store: OutputStore, stream_id: str) -> "StreamManifest | None":
        """The stream's manifest (None when it has none); ``DamagedFile`` naming it when it cannot be read."""
        path = f"{stream_dir(store, stream_id)}/{MANIFEST_NAME}"
        try:
            with store.fs.open_input_stream(path) as handle:
                raw = handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:  # storage trouble (permissions, a timeout), not damage: the caller must not redo it
            if path in str(exc):
                raise
            message = f"{path}: cannot be read: {exc.strerror or exc}"
            raise (OSError(exc.errno, message) if exc.errno else OSError(message)) from exc
        try:
            data = json.loads(raw.decode())
            if not isinstance(data, dict):
                raise ValueError(f"a JSON {type(data).__name__}, not an object")
            known = set(cls.__dataclass_fields__)
            manifest = cls(**{k: v for k, v in data.items() if k in known})
            if not isinstance(manifest.files, list) or not all(isinstance(f, str) for f in manifest.files):
                raise ValueError("its files are not a list of names")
        except (UnicodeDecodeError, ValueError, TypeError) as exc:
            raise DamagedFile(f"{path}: not a stream manifest ({type(exc).__name__}: {exc}); {SKIP_HINT}") from None
        return manifest
