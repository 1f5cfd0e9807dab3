"""The held-out slice of the training streams and the learning diagnostics measured on it every epoch.

The last ``holdout_fraction`` of every training stream's seconds is never trained on; at every
epoch end rank 0 embeds (eval mode, v = the mean of the two crops, as scoring does) an evenly
spread sample of at most ``holdout_max_clips`` of those clips and computes
``epg.learning.learning_diagnostics`` with the distance of the run's loss. The split is a
deterministic function of the clips (each stream's time span), so the driver's training dataset
and every worker agree on it, and a resumed run holds out the same seconds. Before the first
step, rank 0 also measures the initial model (``metrics/holdout_init.json``): the random-init
anchor every epoch is read against.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from epg.encoders import AVEncoders
from epg.learning import INIT_DIAGNOSTICS_FILE, learning_diagnostics
from pipelines.media.storage import OutputStore
from pipelines.runtime.shards import read_shard
from pipelines.train.data import CLIP_COLUMNS, ClipsInfo, decode_clips

if TYPE_CHECKING:
    from ray.data.expressions import Expr

PREFIX = "holdout_"


def holdout_cutoffs(info: ClipsInfo, fraction: float) -> dict[str, int]:
    """{stream_id: first held-out second}: seconds t >= cutoff of each stream are held out (none with fraction 0)."""
    if fraction <= 0:
        return {}
    store = OutputStore(info.root)
    times: dict[str, list[np.ndarray]] = {}
    for path in info.files:
        with store.fs.open_input_file(path) as handle:
            table = pq.read_table(handle, columns=["stream_id", "t"])
        for sid in pc.unique(table["stream_id"]).to_pylist():
            mask = pc.equal(table["stream_id"], sid)
            times.setdefault(str(sid), []).append(table.filter(mask)["t"].to_numpy())
    cutoffs = {}
    for sid, parts in times.items():
        t = np.sort(np.concatenate(parts))
        cutoffs[sid] = int(t[min(len(t) - 1, int(math.floor(len(t) * (1.0 - fraction))))])
    return cutoffs


def training_filter(cutoffs: Mapping[str, int]) -> "Expr":
    """The Ray Data predicate of the rows that are not held out: every second of a stream without a
    cutoff, and the seconds before it of one with (evaluated on the Arrow blocks, which stay Arrow)."""
    from ray.data.expressions import col

    kept = col("stream_id").not_in(list(cutoffs))
    for sid, cutoff in cutoffs.items():
        kept = kept | ((col("stream_id") == sid) & (col("t") < cutoff))
    return kept


def load_holdout(info: ClipsInfo, cutoffs: Mapping[str, int], max_clips: int) -> dict[str, np.ndarray] | None:
    """Decoded held-out clips (``decode_clips`` layout: two visual samples per clip), evenly sampled; None if none."""
    if not cutoffs:
        return None
    # Only the held-out tail is read: the filter lets pyarrow skip files and row groups whose t statistics
    # lie before the cutoff (the rows of a stream are in t order), so rank 0 does not read the footage.
    held_out = None
    for sid, cutoff in cutoffs.items():
        term = (pc.field("stream_id") == sid) & (pc.field("t") >= cutoff)
        held_out = term if held_out is None else held_out | term
    wanted = held_out & pc.field("has_audio") & pc.field("has_video")
    store = OutputStore(info.root)
    tables = [read_shard(path, store.fs, list(CLIP_COLUMNS), filters=wanted) for path in info.files]
    tables = [table for table in tables if table.num_rows]
    held = pa.concat_tables(tables) if tables else None
    if held is None or held.num_rows == 0:
        return None
    if held.num_rows > max_clips:
        held = held.take(np.linspace(0, held.num_rows - 1, max_clips).round().astype(np.int64))
    batch = {name: held[name].to_numpy(zero_copy_only=False) for name in held.column_names}
    return decode_clips(batch, stream_index=info.stream_index(), frames_per_clip=info.frames_per_clip,
                        n_mels=info.n_mels, logmel_frames=info.logmel_frames)


@torch.no_grad()
def holdout_diagnostics(model: AVEncoders, clips: Mapping[str, np.ndarray], lam: float, device: torch.device,
                        batch_size: int = 64) -> dict[str, float]:
    """``learning_diagnostics`` of the held-out clips under ``model`` (eval mode; restored after), keys prefixed."""
    was_training = model.training
    model.eval()
    vs, as_ = [], []
    try:
        for lo in range(0, len(clips["t"]), 2 * batch_size):
            video = torch.as_tensor(clips["video"][lo:lo + 2 * batch_size]).to(device).float().div_(255.0)
            audio = torch.as_tensor(clips["audio"][lo:lo + 2 * batch_size]).to(device)
            v, a = model(video, audio)
            vs.append(v.float().reshape(-1, 2, v.shape[1]).mean(dim=1).cpu())  # the clip's two crops, adjacent
            as_.append(a.float()[::2].cpu())
    finally:
        model.train(was_training)
    stream = torch.as_tensor(clips["stream"][::2])
    t = torch.as_tensor(clips["t"][::2])
    found = learning_diagnostics(torch.cat(vs), torch.cat(as_), stream, t, lam=lam)
    return {f"{PREFIX}{key}": value for key, value in found.items()} | {f"{PREFIX}clips": float(len(t))}


def write_init_diagnostics(metrics_dir: Path, diagnostics: Mapping[str, float]) -> None:
    """Record the initial model's diagnostics (atomically), so every later epoch can be read against them."""
    store = OutputStore(str(metrics_dir))
    store.write_json(store.path(INIT_DIAGNOSTICS_FILE), dict(diagnostics))


def describe(diagnostics: Mapping[str, float], trained: bool = True) -> str:
    """The progress line's part: pair AUC, recall against chance, and whether the embeddings are still
    collapsed (no spread, or pair AUC at chance) after training (``trained``; a random init often is)."""
    if not diagnostics:
        return ""
    auc, recall, chance = (diagnostics.get(f"{PREFIX}{k}", math.nan) for k in ("pair_auc", "recall_at_k", "recall_chance"))
    text = f"; held out: pair AUC {auc:.3f} (chance 0.5), v->a recall@10 {recall:.3f} (chance {chance:.3f})"
    if trained and diagnostics.get(f"{PREFIX}collapsed") == 1.0:
        text += "; the embeddings are still collapsed (no spread, or pair AUC at chance)"
    return text
