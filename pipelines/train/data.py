"""Training data for EPG pretraining (Ray Data): clips Parquet -> batches of visual samples.

Flow (every stage a Ray Data operator, so it runs in CPU tasks next to the
training workers and streams ahead of them):

    read_parquet(complete streams only, DESIGN §3.1 columns)
      -> drop clips without audio or video (they have no aligned pair), and the held-out
         seconds (Arrow predicates: the JPEG lists stay Arrow until the decode)
      -> (global_shuffle) one seeded random order of the clips across all footage
      -> map_batches(decode_clips): JPEG decode of the 2·F crops, log-mel
         reshape to [1, n_mels, T], stream id -> index, optional label join;
         each clip row becomes TWO visual samples (crop 0, crop 1) with the same
         (stream, t) and a copy of the clip's log-mel (``epg.step`` batch format)
      -> Ray Train splits it across workers (``streaming_split``, equal shares)
      -> each worker: ``iter_batches`` with a seeded local shuffle per epoch,
         prefetching, then ``to_torch_batch`` on the worker's device.

Decoded video stays uint8 until it reaches the worker (4x less to move than
float); ``to_torch_batch`` scales it to [0, 1].

Decisions:
- The decode is deterministic (no randomness in the map tasks): a dataset is
  executed afresh every epoch with the same function and cannot see the epoch,
  so augmentation runs in ``epg.step.train_step`` on the worker's device,
  seeded by (seed, rank, step) -- which also makes a resumed run draw exactly
  the augmentations of an uninterrupted one.
- Labels (``--labels``) are joined by (stream_id, t) for diagnostics only. A
  second may carry several classes; its label is the first of them in sorted
  class-name order; a second without any class is -1 (background).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from epg.config import ModelConfig
from pipelines.ingest.clips_dataset import stream_manifests
from pipelines.media.storage import OutputStore
from pipelines.runtime.manifest import DamagedFile, stream_dir
from pipelines.runtime.shards import shard_footer

CLIP_COLUMNS = ["stream_id", "t", "frames", "logmel", "has_audio", "has_video"]


class ClipsError(ValueError):
    """The clips directory cannot feed this training run; the message says why."""


@dataclass(frozen=True)
class ClipsInfo:
    """What a clips root holds: its files, streams and the shape metadata written by ingest."""

    root: str
    files: tuple[str, ...]
    stream_ids: tuple[str, ...]
    rows: int
    crop_size: int
    frames_per_clip: int
    n_mels: int
    logmel_frames: int
    skipped: tuple[str, ...] = ()  # damaged manifests and files left out (--skip-bad-shards), each with why

    def stream_index(self) -> dict[str, int]:
        """stream_id -> index, the same on every worker (sorted stream ids)."""
        return {sid: i for i, sid in enumerate(self.stream_ids)}


def inspect_clips(root: str, skip_bad_shards: bool = False) -> ClipsInfo:
    """Read the manifests and Parquet footers of a clips root; ``ClipsError`` when unusable.

    Checks: the root exists, holds at least one completely ingested stream with
    rows, every file has the §3.1 columns, and all files agree on crop size,
    frames per clip and log-mel shape (schema metadata written by ingest). A manifest or
    footer that cannot be read is an error naming the file, or with ``skip_bad_shards``
    that stream or file is left out (``ClipsInfo.skipped`` says which).
    """
    store = OutputStore(root)
    if not store.exists(store.path()):
        raise ClipsError(f"clips directory {root!r} does not exist")
    skipped: list[str] | None = [] if skip_bad_shards else None
    try:
        manifests = stream_manifests(root, skipped)
    except DamagedFile as exc:
        raise ClipsError(str(exc)) from None
    complete = [m for m in manifests if m.readable]  # live streams: their committed seconds
    if not complete:
        found = ", ".join(f"{m.stream_id} ({m.status})" for m in manifests) or "no stream_id=* directories"
        raise ClipsError(f"clips directory {root!r} has no completely ingested stream ({found}); run jobs/ingest.py first")
    listed = [f"{stream_dir(store, m.stream_id)}/{name}" for m in complete for name in m.files]
    if not listed:
        raise ClipsError(f"clips directory {root!r}: the complete streams list no Parquet files")
    shapes: dict[tuple[int, int, int, int], str] = {}
    rows = 0
    files = []
    for path in listed:
        try:
            meta = shard_footer(path, store.fs)
        except DamagedFile as exc:
            if skipped is None:
                raise ClipsError(str(exc)) from None
            skipped.append(str(exc).split("; ")[0])
            continue
        files.append(path)
        schema = meta.schema.to_arrow_schema()
        missing = [c for c in CLIP_COLUMNS if c not in schema.names]
        if missing:
            raise ClipsError(f"{path}: not a clips file (DESIGN §3.1), missing column(s) {missing}")
        raw = schema.metadata or {}
        try:
            shape = tuple(int(raw[k.encode()]) for k in ("crop_size", "frames_per_clip", "n_mels", "logmel_frames"))
        except KeyError as exc:
            raise ClipsError(f"{path}: schema metadata lacks {exc.args[0]!r} (written by an older ingest?)") from None
        shapes.setdefault(shape, path)  # type: ignore[arg-type]
        rows += meta.num_rows
    if not files:
        raise ClipsError(f"clips directory {root!r}: every file of its complete streams is damaged: "
                         + "; ".join(skipped or []))
    if len(shapes) > 1:
        described = "; ".join(f"crop {s[0]}, {s[1]} frames, mel {s[2]}x{s[3]} (e.g. {p})" for s, p in shapes.items())
        raise ClipsError(f"clips directory {root!r} mixes clip shapes: {described}; ingest them again with one config")
    crop, frames, n_mels, t = next(iter(shapes))
    if rows == 0:
        raise ClipsError(f"clips directory {root!r} has no clip rows")
    streams = {f.rsplit("/", 2)[-2].split("=", 1)[1] for f in files}
    return ClipsInfo(root, tuple(files), tuple(sorted(m.stream_id for m in complete if m.stream_id in streams)), rows,
                     crop, frames, n_mels, t, tuple(skipped or ()))


def check_compatible(info: ClipsInfo, model: ModelConfig) -> None:
    """``ClipsError`` when the clips do not have the shapes the model expects."""
    problems = []
    if info.crop_size != model.visual.crop_size:
        problems.append(f"crop size {info.crop_size} != model visual.crop_size {model.visual.crop_size}")
    if info.frames_per_clip != model.visual.frames:
        problems.append(f"{info.frames_per_clip} frames per clip != model visual.frames {model.visual.frames}")
    if (info.n_mels, info.logmel_frames) != (model.audio.n_mels, model.audio.frames):
        problems.append(f"log-mel {info.n_mels}x{info.logmel_frames} != model audio {model.audio.n_mels}x{model.audio.frames}")
    if problems:
        raise ClipsError(
            f"clips in {info.root!r} do not match the model: " + "; ".join(problems)
            + " (ingest again with --crop-size, or choose another preset)"
        )


def load_label_index(path: str, stream_ids: tuple[str, ...]) -> tuple[dict[str, dict[int, int]], list[str]]:
    """labels table (DESIGN §3.3, Parquet or CSV) -> ({stream_id: {t: class id}}, class names).

    Only rows of the given streams are kept. ``ClipsError`` when the file is missing,
    lacks columns, or shares no stream with the clips.
    """
    import pyarrow.csv as pacsv

    if not Path(path).is_file():
        raise ClipsError(f"labels file {path!r} does not exist")
    table = pacsv.read_csv(path) if path.endswith(".csv") else pq.read_table(path)
    missing = [c for c in ("stream_id", "t", "label") if c not in table.column_names]
    if missing:
        raise ClipsError(f"labels file {path!r} lacks column(s) {missing}")
    frame = table.select(["stream_id", "t", "label"]).to_pandas()
    frame = frame[frame.stream_id.isin(stream_ids)]
    if frame.empty:
        raise ClipsError(f"labels file {path!r} has no rows for the clips' streams {list(stream_ids)}")
    names = sorted(str(x) for x in frame.label.unique())
    class_id = {name: i for i, name in enumerate(names)}
    index: dict[str, dict[int, int]] = {}
    for (stream_id, t), labels in frame.groupby(["stream_id", "t"]).label:
        index.setdefault(str(stream_id), {})[int(t)] = min(class_id[str(x)] for x in labels)
    return index, names


def decode_clips(
    batch: Mapping[str, Any],
    *,
    stream_index: Mapping[str, int],
    frames_per_clip: int,
    n_mels: int,
    logmel_frames: int,
    labels: Mapping[str, Mapping[int, int]] | None = None,
) -> dict[str, np.ndarray]:
    """Clip rows -> visual samples (two per clip, crop 0 then crop 1, adjacent).

    Out: video uint8 [2N, 3, F, H, W]; audio float32 [2N, 1, n_mels, T] (log-mel dB);
    stream, t, crop, label int64 [2N] (label −1 without labels).
    """
    n = len(batch["t"])
    f = frames_per_clip
    videos, audios, streams, times, crops, classes = [], [], [], [], [], []
    for i in range(n):
        sid = str(batch["stream_id"][i])
        t = int(batch["t"][i])
        jpegs = list(batch["frames"][i])
        if len(jpegs) != 2 * f:
            raise ValueError(f"clip ({sid}, {t}) has {len(jpegs)} frames, expected 2·{f}")
        mel = np.asarray(batch["logmel"][i], dtype=np.float32).reshape(1, n_mels, logmel_frames)
        label = -1 if labels is None else labels.get(sid, {}).get(t, -1)
        for crop in (0, 1):
            pixels = np.stack([np.asarray(Image.open(io.BytesIO(j)).convert("RGB")) for j in jpegs[crop * f:(crop + 1) * f]])
            videos.append(pixels.transpose(3, 0, 1, 2))  # [F, H, W, 3] -> [3, F, H, W]
            audios.append(mel)
            streams.append(stream_index[sid])
            times.append(t)
            crops.append(crop)
            classes.append(label)
    return {
        "video": np.ascontiguousarray(np.stack(videos)),
        "audio": np.stack(audios),
        "stream": np.asarray(streams, dtype=np.int64),
        "t": np.asarray(times, dtype=np.int64),
        "crop": np.asarray(crops, dtype=np.int64),
        "label": np.asarray(classes, dtype=np.int64),
    }


def build_dataset(
    info: ClipsInfo,
    labels: Mapping[str, Mapping[int, int]] | None = None,
    *,
    clips_per_task: int = 32,
    shuffle_seed: int | None = None,
    holdout: Mapping[str, int] | None = None,
):
    """The training dataset of visual samples (lazy; Ray Train executes it once per epoch).

    Its order is deterministic, so with ``preserve_order`` the split across workers is too
    (see ``pipelines.train.driver``): file order and rows in time order, or, with
    ``shuffle_seed``, the clips in one seeded random order across all of the footage (time-ordered
    rows would make every batch a few minutes of one stream). The per-epoch variation comes
    from each worker's seeded local shuffle in ``iter_batches``. A clip's two crops stay adjacent.
    ``holdout`` ({stream_id: first held-out second}, ``pipelines.train.holdout``) leaves those seconds out.
    """
    import ray.data
    from ray.data.expressions import col

    dataset = ray.data.read_parquet(list(info.files), columns=CLIP_COLUMNS, filesystem=OutputStore(info.root).fs)
    # Filters as Arrow predicates: the rows (JPEG lists in ``frames``) stay Arrow until decode_clips,
    # instead of a numpy round trip that Arrow cannot take back (a pickled column).
    dataset = dataset.filter(expr=col("has_audio") & col("has_video"))
    if holdout:
        from pipelines.train.holdout import training_filter

        dataset = dataset.filter(expr=training_filter(holdout))
    if shuffle_seed is not None:
        dataset = dataset.random_shuffle(seed=shuffle_seed)
    return dataset.map_batches(
        decode_clips,
        batch_format="numpy",
        batch_size=clips_per_task,
        fn_kwargs={
            "stream_index": info.stream_index(),
            "frames_per_clip": info.frames_per_clip,
            "n_mels": info.n_mels,
            "logmel_frames": info.logmel_frames,
            "labels": labels,
        },
    )


def to_torch_batch(batch: Mapping[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """A numpy batch of ``decode_clips`` rows -> the ``epg.step`` batch on ``device`` (video in [0, 1]).

    Ray hands out read-only views of its blocks; each column is copied once into a writable array,
    which PyTorch may then own. The video is copied as uint8 and cast on ``device`` (a quarter of
    the bytes to move to a GPU).
    """
    video = torch.from_numpy(np.array(batch["video"], dtype=np.uint8)).to(device, non_blocking=True).float().div_(255.0)
    out = {"video": video, "audio": torch.from_numpy(np.array(batch["audio"], dtype=np.float32)).to(device, non_blocking=True)}
    for key in ("stream", "t", "label"):
        out[key] = torch.from_numpy(np.array(batch[key], dtype=np.int64)).to(device)
    return out
