"""One EPG training step: encode, gather, label, loss, diagnostics, bank update.

Used the same way from a Ray Train worker and from a plain loop::

    bank = EmbeddingBank.from_config(config.bank)          # once, on every worker
    ...
    out = train_step(model, batch, bank, config, epoch=e, step=s)
    optimizer.zero_grad()
    out.loss.backward()              # or out.ddp_loss.backward() when model is DDP-wrapped
    sum_gradients(model)             # (not with DDP) add the other workers' shares
    optimizer.step()

Batch format (one dict of tensors per worker, all on the model's device):

    video  float [B, 3, F=5, H, W]  pixels in [0, 1], one *visual sample* per row.
                                    A clip row of the clips table yields two visual
                                    samples, one per crop, with the same (stream, t).
    audio  float [B, 1, 128, 64]    log-mel in dB (epg.features.log_mel). Row i is the
                                    audio of visual sample i: a clip's log-mel is
                                    duplicated for its two crops, so the pairing
                                    between video[i] and audio[i] is positional.
    stream int64 [B]                stream index, the same numbering on every worker.
    t      int64 [B]                clip start second.
    label  int64 [B] (optional)     class id, −1 = none/background; diagnostics only.

Rows whose clip lacks audio or video (``has_audio``/``has_video`` false in the
clips table) have no aligned pair and must be left out of the batch by the caller.
``out.metrics`` is the same on every rank (log it from rank 0).

Both crops of a clip are TPG positives of each other and of each other's audio
(same stream, |Δt| = 0 ≤ τ), like in DESIGN §4 ("both crops of a clip are
separate visual samples of the same (s, t)").

Distributed: the loss is the global loss over the gathered batch, identical on
every rank; after ``loss.backward()`` a rank's gradients are its own share, and
their sum over ranks equals the gradient of one worker with the whole batch
(see ``epg.bank``). BatchNorm statistics are per worker, as in any data-parallel
run: the equality is exact for per-sample encoders (eval-mode or frozen
BatchNorm, or SyncBatchNorm on GPUs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn as nn

from epg.augment import audio_augment, visual_augment
from epg.bank import EmbeddingBank, gather_samples, world
from epg.config import EPGConfig
from epg.loss_infonce import multi_positive_infonce_loss
from epg.loss_margin import LossTerms, multi_positive_margin_loss
from epg.pairs import PairLabels, pair_labels
from epg.samples import CandidateSet, Samples, pool_clips

# Random candidates drawn per anchor for the "random pairs" baselines of the diagnostics.
RANDOM_PAIRS_PER_ANCHOR = 16


class NonFiniteLossError(FloatingPointError):
    """The loss of a step is NaN or infinite; the message names the step and its statistics."""


@dataclass
class StepOutput:
    """loss: global loss (same value on every rank). metrics: floats for logging (NaN = undefined)."""

    loss: torch.Tensor
    metrics: dict[str, float]
    labels: PairLabels
    world_size: int
    terms: LossTerms = field(repr=False)

    @property
    def ddp_loss(self) -> torch.Tensor:
        """What to backward when gradients are *averaged* over workers (DDP): loss × world size."""
        return self.loss * self.world_size


def train_step(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    bank: EmbeddingBank | None,
    config: EPGConfig,
    *,
    epoch: int,
    step: int,
    generator: torch.Generator | None = None,
    group: Any = None,
    temperature: nn.Module | None = None,
) -> StepOutput:
    """Loss and metrics of one step; pushes the gathered batch into ``bank`` (when given) afterwards.

    ``model(video, audio) -> (v, a)`` (``epg.encoders.AVEncoders``, DDP-wrapped or not).
    Augmentation runs when ``config.augment.enabled`` and the model is in training
    mode, drawing from ``generator`` (default: seeded from optim.seed, rank and step).
    ``temperature``: the learned T of the infonce loss (``epg.temperature.LearnedTemperature``,
    with ``config.loss.learn_temperature``); its value is the metric ``temperature``.
    Raises ``NonFiniteLossError`` (before touching the bank) if the loss is not finite.
    """
    rank, world_size = world(group)
    if config.loss.learn_temperature != (temperature is not None):
        raise ValueError(f"train_step: loss.learn_temperature is {config.loss.learn_temperature} but a learned "
                         f"temperature was {'not ' if temperature is None else ''}given")
    video, audio, local_meta = _check_batch(batch)
    if config.augment.enabled and model.training:
        if generator is None:
            generator = torch.Generator(device=video.device)
            generator.manual_seed(_seed(config.optim.seed, rank, step))
        video = visual_augment(config.augment)(video, generator)
        audio = audio_augment(config.augment)(audio, generator)
    v, a = model(video, audio)
    anchors = gather_samples(Samples(v, a, *local_meta), group)
    if config.loss.pool_crops:  # over the gathered batch, so every rank pools the same clips alike
        anchors = pool_clips(anchors)
    bank_segments = bank.segments() if bank is not None else []
    candidates = CandidateSet([anchors] + bank_segments)
    chunk = config.bank.chunk_size
    labels = pair_labels(anchors, candidates, config.pairs, config.loss.distance_lam, epoch, chunk)
    args = (anchors, candidates, labels, config.loss, config.pairs.mined_weight, config.pairs.mined_as, chunk)
    t = temperature() if temperature is not None else None
    if config.loss.kind == "infonce":
        terms = multi_positive_infonce_loss(*args, bank_mining_only=config.bank.mining_only, temperature=t)
    else:
        terms = multi_positive_margin_loss(*args, bank_mining_only=config.bank.mining_only)
    metrics = step_metrics(anchors.detach(), candidates, labels, terms, step=step, seed=config.optim.seed)
    if config.loss.kind == "infonce":
        metrics["temperature"] = float(t.detach()) if t is not None else config.loss.temperature
    metrics["world_size"] = float(world_size)
    if not math.isfinite(metrics["loss"]):
        raise NonFiniteLossError(_describe_failure(epoch, step, metrics, anchors))
    if bank is not None:
        bank.push(anchors)
    return StepOutput(terms.loss, metrics, labels, world_size, terms)


def _seed(seed: int, rank: int, step: int) -> int:
    return (seed * 1_000_003 + rank * 7_919 + step) % (2**63 - 1)


def _check_batch(batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    for key in ("video", "audio", "stream", "t"):
        if key not in batch:
            raise KeyError(f"batch lacks {key!r}; expected keys video, audio, stream, t (label optional)")
    video, audio = batch["video"], batch["audio"]
    n = video.shape[0]
    if video.dim() != 5 or audio.dim() != 4 or audio.shape[0] != n:
        raise ValueError(
            f"batch: video must be [B, 3, F, H, W] and audio [B, 1, n_mels, T] with one audio row per visual "
            f"sample, got {tuple(video.shape)} and {tuple(audio.shape)}"
        )
    label = batch.get("label")
    if label is None:
        label = torch.full((n,), -1, dtype=torch.int64, device=video.device)
    meta = []
    for key, value in (("stream", batch["stream"]), ("t", batch["t"]), ("label", label)):
        if value.shape != (n,):
            raise ValueError(f"batch[{key!r}] must have shape [{n}], got {tuple(value.shape)}")
        meta.append(value.to(device=video.device, dtype=torch.int64))
    return video, audio, tuple(meta)


@torch.no_grad()
def step_metrics(
    anchors: Samples, candidates: CandidateSet, labels: PairLabels, terms: LossTerms, *, step: int, seed: int = 0
) -> dict[str, float]:
    """Diagnostics of DESIGN §4, identical on every rank (computed from the gathered batch).

    positives_per_anchor: aligned + mined positives; extra_positives_per_anchor: mined (EPG beyond TPG);
    mean_delta: mean D(v_i, a_i); v_std/a_std: mean per-dimension std over the batch (→ 0 on collapse);
    mined_time_gap / random_time_gap: mean |Δt| of same-stream mined / random pairs (random:
    16 uniform non-aligned candidates per anchor, seeded by the step);
    mined_same_stream: share of mined pairs within one stream; with labels (≥ 0):
    mined_label_precision / random_label_share: share of pairs whose anchor has a label
    and whose candidate has the same label.
    """
    n = len(anchors)
    mined_valid = labels.mined_valid
    num_mined = int(mined_valid.sum())
    metrics: dict[str, float] = {
        "loss": float(terms.loss.detach()),
        "loss_aligned": float(terms.aligned.detach()),
        "loss_mined": float(terms.mined.detach()),
        "loss_negative": float(terms.negative.detach()),
        "global_batch": float(n),
        "candidates": float(len(candidates)),
        "mining_active": float(labels.mining),
        "aligned_per_anchor": terms.num_aligned / n,
        "extra_positives_per_anchor": num_mined / n,
        "positives_per_anchor": (terms.num_aligned + num_mined) / n,
        "mean_delta": float(labels.delta.mean()),
        "v_std": float(anchors.v.std(dim=0).mean()) if n > 1 else math.nan,
        "a_std": float(anchors.a.std(dim=0).mean()) if n > 1 else math.nan,
    }
    anchor_rows = torch.arange(n, device=anchors.v.device)[:, None]
    mined_rows = anchor_rows.expand_as(labels.mined_index)[mined_valid]
    mined_cols = labels.mined_index[mined_valid]
    generator = torch.Generator().manual_seed(_seed(seed, 0, step))
    random_cols = torch.randint(0, len(candidates), (n, RANDOM_PAIRS_PER_ANCHOR), generator=generator).to(anchors.v.device)
    random_rows = anchor_rows.expand_as(random_cols).reshape(-1)
    random_cols = random_cols.reshape(-1)
    aligned = (anchors.stream[random_rows] == candidates.stream[random_cols]) & (
        (anchors.t[random_rows] - candidates.t[random_cols]).abs() <= labels.tau
    )
    random_rows, random_cols = random_rows[~aligned], random_cols[~aligned]
    for name, rows, cols in (("mined", mined_rows, mined_cols), ("random", random_rows, random_cols)):
        same_stream = anchors.stream[rows] == candidates.stream[cols]
        gaps = (anchors.t[rows] - candidates.t[cols]).abs()[same_stream].float()
        metrics[f"{name}_time_gap"] = float(gaps.mean()) if gaps.numel() else math.nan
        metrics[f"{name}_same_stream"] = float(same_stream.float().mean()) if rows.numel() else math.nan
        labelled = anchors.label[rows] >= 0
        if labelled.any():
            share = (anchors.label[rows] == candidates.label[cols])[labelled].float().mean()
            metrics["mined_label_precision" if name == "mined" else "random_label_share"] = float(share)
        else:
            metrics["mined_label_precision" if name == "mined" else "random_label_share"] = math.nan
    return metrics


def _describe_failure(epoch: int, step: int, metrics: Mapping[str, float], anchors: Samples) -> str:
    v, a = anchors.v.detach(), anchors.a.detach()
    stats = {
        "non_finite_v": int((~torch.isfinite(v)).sum()),
        "non_finite_a": int((~torch.isfinite(a)).sum()),
        "max_abs_v": float(v.abs().nan_to_num(nan=math.inf).max()) if v.numel() else math.nan,
        "max_abs_a": float(a.abs().nan_to_num(nan=math.inf).max()) if a.numel() else math.nan,
    }
    keys = ("loss", "loss_aligned", "loss_mined", "loss_negative", "mean_delta", "v_std", "a_std",
            "positives_per_anchor", "extra_positives_per_anchor")
    shown = ", ".join(f"{k}={metrics[k]:.6g}" for k in keys) + ", " + ", ".join(f"{k}={val}" for k, val in stats.items())
    return f"non-finite loss at epoch {epoch} step {step}: {shown}"
