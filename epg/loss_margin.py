"""The multi-positive margin loss of EPG (DESIGN §4, paper Eq. 4, Hadsell-style).

    L = mean_{P_aligned} D² + w · mean_{P_mined} D² + ν · mean_{N} max(0, m − D)²

over anchors i (the global batch) and candidates j (global batch + bank; with
``BankConfig.mining_only`` the bank gives mined positives only), in both directions, D(v_i, a_j) and D(a_i, v_j), with one label matrix for both
(the two directions' means are averaged). ν is ``negative_weight`` (1 by
default). A mined pair is a weighted positive (``mined_as="positive"``) or only
left out of the negatives (``"ignore"``); same-stream candidates within
±``negative_exclusion`` s are left out of the negatives. An empty set contributes 0.

Memory: the N × C distance matrices are built one candidate chunk at a time,
and each chunk's partial sums run under activation checkpointing, so backward
recomputes a chunk instead of keeping every chunk's matrices alive; the label
masks are rebuilt inside the chunk from metadata for the same reason. Peak
memory is a few N × chunk matrices whatever the bank size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from epg.config import LossConfig, MinedAs
from epg.distance import pairwise_distance
from epg.pairs import ChunkPairs, PairLabels, loss_chunks, run_chunk
from epg.samples import CandidateSet, Samples


@dataclass(frozen=True)
class LossTerms:
    """The loss and its parts. aligned/mined: mean D² over that set; negative: mean hinge²; counts per direction."""

    loss: torch.Tensor
    aligned: torch.Tensor
    mined: torch.Tensor
    negative: torch.Tensor
    num_aligned: int
    num_mined: int
    num_negative: int


def _chunk_sums(v: torch.Tensor, a: torch.Tensor, cand_v: torch.Tensor, cand_a: torch.Tensor, pairs: ChunkPairs,
                lam: float, margin: float, mined_positive: bool) -> tuple[torch.Tensor, ...]:
    """One candidate chunk, both directions: Σ_aligned D², Σ_mined D², Σ_negative hinge², and the three counts.

    The label masks are rebuilt here (``ChunkPairs.masks``), so that checkpointing saves
    only small inputs and never an N × chunk mask.
    """
    aligned, mined, negative = pairs.masks()
    d_va = pairwise_distance(v, cand_a, lam)
    d_av = pairwise_distance(a, cand_v, lam)
    squared = d_va.square() + d_av.square()
    hinge = F.relu(margin - d_va).square() + F.relu(margin - d_av).square()
    zero = squared.new_zeros(())
    return (
        torch.where(aligned, squared, zero).sum(),
        torch.where(mined, squared, zero).sum() if mined_positive else zero,
        torch.where(negative, hinge, zero).sum(),
        aligned.sum(),
        mined.sum(),
        negative.sum(),
    )


def multi_positive_margin_loss(
    anchors: Samples,
    candidates: CandidateSet,
    labels: PairLabels,
    config: LossConfig,
    mined_weight: float,
    mined_as: MinedAs,
    chunk_size: int,
    bank_mining_only: bool = False,
) -> LossTerms:
    """Loss of ``anchors`` (with gradient) against ``candidates`` under ``labels``.

    Gradients reach whatever candidate rows require grad (the local slice of the
    gathered batch); bank rows are detached. ``bank_mining_only``: candidates after
    the global batch (the bank) give mined positives only, no aligned pairs and no
    negatives (``BankConfig.mining_only``).
    """
    zero = anchors.v.new_zeros(())
    totals = [zero, zero, zero]
    counts = [torch.zeros((), dtype=torch.int64, device=zero.device) for _ in range(3)]
    for chunk, pairs in loss_chunks(len(anchors), candidates, labels, chunk_size, config.negative_exclusion,
                                    bank_mining_only):
        parts = run_chunk(_chunk_sums, anchors.v, anchors.a, chunk.v, chunk.a, pairs, config.lam, config.margin,
                          mined_as == "positive")
        totals = [total + part for total, part in zip(totals, parts[:3])]
        counts = [count + part for count, part in zip(counts, parts[3:])]
    num_aligned, num_mined, num_negative = (int(count) for count in counts)
    aligned_mean = totals[0] / (2 * num_aligned) if num_aligned else zero
    mined_mean = totals[1] / (2 * num_mined) if num_mined and mined_as == "positive" else zero
    negative_mean = totals[2] / (2 * num_negative) if num_negative else zero
    loss = aligned_mean + mined_weight * mined_mean + config.negative_weight * negative_mean
    return LossTerms(loss, aligned_mean, mined_mean, negative_mean, num_aligned, num_mined, num_negative)
