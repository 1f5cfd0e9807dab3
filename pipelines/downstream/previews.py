"""What a person sees of a clip in a report: its first frame (JPEG) and its log-mel.

Reads the clips dataset (DESIGN §3.1) of a few (stream, t). Like
``pipelines.ingest.clips_dataset.read_stream`` it only reads streams whose manifest says
complete, but it reads only the files (and, by their statistics, row groups) that
hold the wanted seconds: a whole day's ``frames`` column is gigabytes, and a
contact sheet needs ten rows.

A clip that is not in the clips dataset (stream not ingested, second missing) has
no preview; the report shows its text only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.media.storage import OutputStore
from pipelines.runtime.manifest import StreamManifest, stream_dir
from pipelines.runtime.shards import read_shard, shard_footer

DEFAULT_N_MELS = 128


@dataclass(frozen=True)
class ClipPreview:
    stream_id: str
    t: int
    frame: bytes  # the clip's first JPEG (crop 0, frame 0)
    logmel: np.ndarray  # float32 [n_mels, T]
    has_audio: bool
    has_video: bool


def clips_root_exists(root: str) -> bool:
    store = OutputStore(root)
    return store.exists(store.path())


def load_previews(root: str, clips: Iterable[tuple[str, int]]) -> dict[tuple[str, int], ClipPreview]:
    """Previews of the given (stream_id, t) that the clips dataset at ``root`` holds."""
    store = OutputStore(root)
    wanted: dict[str, set[int]] = {}
    for stream_id, t in clips:
        wanted.setdefault(str(stream_id), set()).add(int(t))
    found: dict[tuple[str, int], ClipPreview] = {}
    for stream_id, seconds in sorted(wanted.items()):
        manifest = StreamManifest.read(store, stream_id)  # DamagedFile (a ValueError) names a damaged one
        if manifest is None or not manifest.readable:
            continue
        for name in manifest.files:
            path = f"{stream_dir(store, stream_id)}/{name}"
            metadata = shard_footer(path, store.fs).schema.to_arrow_schema().metadata or {}
            n_mels = int(metadata.get(b"n_mels", DEFAULT_N_MELS))
            t_values = read_shard(path, store.fs, ["t"]).column("t")
            if not pc.any(pc.is_in(t_values, value_set=pa.array(sorted(seconds), pa.int32()))).as_py():
                continue
            table = read_shard(path, store.fs, ["t", "frames", "logmel", "has_audio", "has_video"],
                               filters=[("t", "in", sorted(seconds))])
            for row in table.to_pylist():
                logmel = np.asarray(row["logmel"], dtype=np.float32)
                found[(stream_id, int(row["t"]))] = ClipPreview(
                    stream_id=stream_id,
                    t=int(row["t"]),
                    frame=row["frames"][0] if row["frames"] else b"",
                    logmel=logmel.reshape(n_mels, -1),
                    has_audio=bool(row["has_audio"]),
                    has_video=bool(row["has_video"]),
                )
    return found

