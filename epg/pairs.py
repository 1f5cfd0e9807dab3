"""TPG and EPG pair labels (DESIGN §4), computed without gradient and in chunks.

For anchor i and candidate j:
- aligned (TPG): same stream and |t_i − t_j| ≤ τ;
- mined (EPG): j is a neighbour of i in the visual or audio space under the
  configured rule, among candidates that are not within the exclusion window
  (same stream, |t_i − t_j| ≤ W, which contains every TPG pair since W ≥ τ);
  at most ``cap`` per anchor, the nearest kept.

Aligned labels are cheap functions of (stream, t) and are recomputed per chunk;
mined labels are stored sparsely as [N, M] candidate indices (−1 = empty), so
memory stays O(N·(chunk + M)) whatever the bank size.

Why the safeguards: a simulation of the paper's plain ``adaptive`` rule mined
positives no better than chance (cross-modal distances run larger than
same-modality ones, so δ_i admits a large share of all candidates, and near-in-time
clips look alike through slow drifts). Hence the exclusion window, the cap,
warm-up, the weight w, and the ``topk``/``consensus`` rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch.utils.checkpoint import checkpoint

from epg.config import PairConfig
from epg.distance import distance, pairwise_distance
from epg.samples import CandidateSet, Samples

# Above this many anchors the ``quantile`` threshold is estimated on a strided subset of anchor rows.
_QUANTILE_MAX_ROWS = 2048


def time_window_mask(anchors: Samples, candidates: Samples, window: int) -> torch.Tensor:
    """[N, m] bool: same stream and |t_i − t_j| ≤ window (the exclusion window W; with τ, the TPG label)."""
    return aligned_mask(anchors.stream, anchors.t, candidates.stream, candidates.t, window)


def aligned_mask(anchor_stream: torch.Tensor, anchor_t: torch.Tensor, stream: torch.Tensor, t: torch.Tensor, tau: int) -> torch.Tensor:
    """[N, m] TPG labels: same stream and |t_i − t_j| ≤ τ."""
    same = anchor_stream[:, None] == stream[None, :]
    return same & ((anchor_t[:, None] - t[None, :]).abs() <= tau)


def mined_mask(mined_index: torch.Tensor, offset: int, size: int) -> torch.Tensor:
    """[N, size] bool from sparse mined indices [N, M] (−1 = empty), for candidates offset … offset + size − 1."""
    mask = torch.zeros(mined_index.shape[0], size + 1, dtype=torch.bool, device=mined_index.device)
    inside = (mined_index >= offset) & (mined_index < offset + size)
    column = torch.where(inside, mined_index - offset, size)
    mask.scatter_(1, column, True)
    return mask[:, :size]


def loss_masks(anchor_stream: torch.Tensor, anchor_t: torch.Tensor, stream: torch.Tensor, t: torch.Tensor,
               mined_index: torch.Tensor, offset: int, tau: int, exclusion: int,
               batch_chunk: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[N, m] (aligned, mined, negative) masks of one candidate chunk, as both losses read them.

    Negatives are the candidates neither aligned nor mined nor, when ``exclusion`` > 0, of the
    anchor's stream within ±exclusion s. A chunk of the bank that serves mining only
    (``batch_chunk`` false) keeps its mined pairs and nothing else. Rebuilt inside each chunk
    from (stream, t) and the sparse mined indices, so checkpointing saves only those.
    """
    aligned = aligned_mask(anchor_stream, anchor_t, stream, t, tau)
    mined = mined_mask(mined_index, offset, stream.shape[0]) & ~aligned
    negative = ~(aligned | mined)
    if exclusion:
        negative &= ~aligned_mask(anchor_stream, anchor_t, stream, t, exclusion)
    if not batch_chunk:
        aligned = torch.zeros_like(aligned)
        negative = torch.zeros_like(negative)
    return aligned, mined, negative


@dataclass(frozen=True)
class PairLabels:
    """Labels of every (anchor, candidate) pair of one step.

    anchor_stream/anchor_t: [N] metadata of the anchors; tau: TPG window;
    mined_index: [N, M] global candidate indices of mined positives (−1 = empty slot);
    mined_score: [N, M] same-modality distance that ranked each mined pair (inf = empty);
    delta: [N] D(v_i, a_i), each anchor's aligned distance; mining: whether EPG mining ran.
    """

    anchor_stream: torch.Tensor
    anchor_t: torch.Tensor
    tau: int
    mined_index: torch.Tensor
    mined_score: torch.Tensor
    delta: torch.Tensor
    num_candidates: int
    mining: bool

    @property
    def mined_valid(self) -> torch.Tensor:
        return self.mined_index >= 0

    @property
    def mined_per_anchor(self) -> torch.Tensor:
        return self.mined_valid.sum(dim=1)

    def aligned_chunk(self, chunk: Samples) -> torch.Tensor:
        """[N, m] TPG labels against a chunk of candidates."""
        return aligned_mask(self.anchor_stream, self.anchor_t, chunk.stream, chunk.t, self.tau)

    def mined_chunk(self, offset: int, size: int) -> torch.Tensor:
        """[N, size] mined labels for candidates offset … offset + size − 1."""
        return mined_mask(self.mined_index, offset, size)

    def dense(self, candidates: CandidateSet) -> torch.Tensor:
        """[N, C] int8: 0 negative, 1 aligned (TPG), 2 mined. For tests and small inspections only."""
        out = torch.zeros(self.anchor_stream.shape[0], len(candidates), dtype=torch.int8, device=self.mined_index.device)
        for offset, chunk in candidates.chunks(len(candidates)):
            out[:, offset:offset + len(chunk)] = self.aligned_chunk(chunk).to(torch.int8)
            out[:, offset:offset + len(chunk)][self.mined_chunk(offset, len(chunk))] = 2
        return out


@dataclass(frozen=True)
class ChunkPairs:
    """The metadata from which a loss rebuilds one candidate chunk's masks (``loss_masks``) inside a checkpoint."""

    anchor_stream: torch.Tensor
    anchor_t: torch.Tensor
    stream: torch.Tensor
    t: torch.Tensor
    mined_index: torch.Tensor
    offset: int
    tau: int
    exclusion: int
    batch_chunk: bool

    def masks(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return loss_masks(self.anchor_stream, self.anchor_t, self.stream, self.t, self.mined_index, self.offset,
                          self.tau, self.exclusion, self.batch_chunk)


def loss_chunks(n_anchors: int, candidates: CandidateSet, labels: PairLabels, chunk_size: int, exclusion: int,
                bank_mining_only: bool) -> Iterator[tuple[Samples, ChunkPairs]]:
    """Each candidate chunk with its ``ChunkPairs``; with ``bank_mining_only`` the chunks after the global batch
    (the first ``n_anchors`` candidates) give mined pairs only."""
    for offset, chunk in candidates.chunks(chunk_size):
        yield chunk, ChunkPairs(labels.anchor_stream, labels.anchor_t, chunk.stream, chunk.t, labels.mined_index,
                                offset, labels.tau, exclusion, not bank_mining_only or offset < n_anchors)


def run_chunk(function: Callable[..., tuple[torch.Tensor, ...]], *args: Any) -> tuple[torch.Tensor, ...]:
    """``function(*args)``, under activation checkpointing when gradients are on: backward recomputes the
    chunk's N × chunk matrices instead of keeping every chunk's alive."""
    if torch.is_grad_enabled():
        return checkpoint(function, *args, use_reentrant=False, preserve_rng_state=False)
    return function(*args)


class _RunningTopK:
    """The k smallest scores per row seen so far over a stream of column chunks."""

    def __init__(self, rows: int, k: int, device: torch.device) -> None:
        self.value = torch.full((rows, k), float("inf"), device=device)
        self.index = torch.full((rows, k), -1, dtype=torch.int64, device=device)

    def update(self, scores: torch.Tensor, offset: int) -> None:
        k = self.value.shape[1]
        columns = offset + torch.arange(scores.shape[1], device=scores.device).expand_as(scores)
        value = torch.cat([self.value, scores], dim=1)
        index = torch.cat([self.index, columns], dim=1)
        self.value, order = value.topk(k, dim=1, largest=False, sorted=True)
        self.index = index.gather(1, order)
        self.index[~torch.isfinite(self.value)] = -1


def tpg_labels(anchors: Samples, candidates: CandidateSet, tau: int, lam: float) -> PairLabels:
    """TPG only: no mined pairs (the baseline, and EPG during warm-up)."""
    empty = torch.empty(len(anchors), 0, device=anchors.v.device)
    return PairLabels(
        anchor_stream=anchors.stream,
        anchor_t=anchors.t,
        tau=tau,
        mined_index=empty.to(torch.int64),
        mined_score=empty,
        delta=distance(anchors.v.detach(), anchors.a.detach(), lam),
        num_candidates=len(candidates),
        mining=False,
    )


@torch.no_grad()
def pair_labels(
    anchors: Samples,
    candidates: CandidateSet,
    config: PairConfig,
    lam: float,
    epoch: int,
    chunk_size: int,
) -> PairLabels:
    """TPG labels, plus mined EPG positives when ``config.mining_active(epoch)``.

    Rules (same-modality distances D(v_i, v_j), D(a_i, a_j), λ = ``lam``):
    ``adaptive``: either below δ_i = D(v_i, a_i); ``topk``: the k nearest in each
    modality, pooled; ``consensus``: among the k nearest in both modalities;
    ``quantile``: either at or below that modality's ``config.quantile`` quantile of
    the eligible anchor-vs-global-batch distances (the ⌈q·n⌉-th smallest). The cap keeps the ``cap`` nearest
    (score = the smaller of the two distances; for ``consensus`` the larger).
    """
    anchors = anchors.detach()
    base = tpg_labels(anchors, candidates, config.tau, lam)
    if not config.mining_active(epoch):
        return base
    n, total = len(anchors), len(candidates)
    device = anchors.v.device
    window = config.exclusion_window
    if config.mining in ("topk", "consensus"):
        k = min(config.k, total)
        best_v, best_a = _RunningTopK(n, k, device), _RunningTopK(n, k, device)
        for offset, chunk in candidates.chunks(chunk_size):
            blocked = time_window_mask(anchors, chunk, window)
            best_v.update(pairwise_distance(anchors.v, chunk.v, lam).masked_fill_(blocked, float("inf")), offset)
            best_a.update(pairwise_distance(anchors.a, chunk.a, lam).masked_fill_(blocked, float("inf")), offset)
        if config.mining == "topk":
            index, score = _pool(best_v, best_a)
        else:
            index, score = _intersect(best_v, best_a)
        index, score = _keep_nearest(index, score, config.cap)
    else:
        if config.mining == "adaptive":
            limit_v = limit_a = base.delta[:, None]
        else:
            limit_v, limit_a = _batch_quantiles(anchors, config, lam)
        keep = min(config.cap if config.cap is not None else total, total)
        best = _RunningTopK(n, keep, device)
        for offset, chunk in candidates.chunks(chunk_size):
            d_v = pairwise_distance(anchors.v, chunk.v, lam)
            d_a = pairwise_distance(anchors.a, chunk.a, lam)
            if config.mining == "adaptive":
                close = (d_v < limit_v) | (d_a < limit_a)
            else:
                close = (d_v <= limit_v) | (d_a <= limit_a)
            hit = close & ~time_window_mask(anchors, chunk, window)
            best.update(torch.minimum(d_v, d_a).masked_fill_(~hit, float("inf")), offset)
        index, score = best.index, best.value
    return PairLabels(
        anchor_stream=anchors.stream,
        anchor_t=anchors.t,
        tau=config.tau,
        mined_index=index,
        mined_score=score,
        delta=base.delta,
        num_candidates=total,
        mining=True,
    )


def _pool(best_v: _RunningTopK, best_a: _RunningTopK) -> tuple[torch.Tensor, torch.Tensor]:
    """Union of both modalities' neighbours; a candidate found in both keeps its smaller distance."""
    index = torch.cat([best_v.index, best_a.index], dim=1)
    score = torch.cat([best_v.value, best_a.value], dim=1)
    score, order = score.sort(dim=1, stable=True)
    index = index.gather(1, order)
    earlier = torch.ones(index.shape[1], index.shape[1], dtype=torch.bool, device=index.device).tril(-1)
    duplicate = ((index[:, :, None] == index[:, None, :]) & earlier).any(dim=2) & (index >= 0)
    index = index.masked_fill(duplicate, -1)
    score = score.masked_fill(duplicate, float("inf"))
    return index, score


def _intersect(best_v: _RunningTopK, best_a: _RunningTopK) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbours in both modalities (consensus); score = the larger of the two distances."""
    match = (best_v.index[:, :, None] == best_a.index[:, None, :]) & (best_v.index[:, :, None] >= 0)
    found = match.any(dim=2)
    other = torch.where(match, best_a.value[:, None, :], torch.full_like(match, float("inf"), dtype=best_a.value.dtype)).amin(dim=2)
    score = torch.where(found, torch.maximum(best_v.value, other), torch.full_like(best_v.value, float("inf")))
    index = best_v.index.masked_fill(~found, -1)
    return index, score


def _keep_nearest(index: torch.Tensor, score: torch.Tensor, cap: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``cap`` lowest-score valid entries per row (all if cap is None), sorted by score."""
    score, order = score.sort(dim=1, stable=True)
    index = index.gather(1, order)
    if cap is not None:
        score, index = score[:, :cap], index[:, :cap]
    return index, score


def _batch_quantiles(anchors: Samples, config: PairConfig, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-modality ``config.quantile`` of the eligible same-modality distances within the global batch."""
    rows = anchors.slice(0, len(anchors))
    if len(anchors) > _QUANTILE_MAX_ROWS:
        pick = torch.arange(0, len(anchors), len(anchors) // _QUANTILE_MAX_ROWS + 1, device=anchors.v.device)
        rows = Samples(anchors.v[pick], anchors.a[pick], anchors.stream[pick], anchors.t[pick], anchors.label[pick])
    eligible = ~time_window_mask(rows, anchors, config.exclusion_window)
    limits = []
    for mine, theirs in ((rows.v, anchors.v), (rows.a, anchors.a)):
        values = pairwise_distance(mine, theirs, lam)[eligible]
        if values.numel() == 0:
            limits.append(torch.tensor(float("-inf"), device=anchors.v.device))
            continue
        rank = max(1, math.ceil(config.quantile * values.numel()))
        limits.append(values.kthvalue(rank).values)
    return limits[0], limits[1]
