"""Positive sample propagation (PSP), the core of PSP/CPSP, as read from the paper.

For one video with T segments, v, a ∈ R^{T×D} are the BiLSTM outputs of the two
modalities. Each modality gets two branch features, x¹ = Drop(ReLU(W¹x)) and
x² = Drop(ReLU(W²x)) (W without bias, D → D), and

    β_va = rownorm( ReLU( v² · a¹ᵀ / √D ) )          visual segment i → audio segment j
    β_av = rownorm( ReLU( v² · a¹ᵀ / √D )ᵀ )         audio segment j → visual segment i
    γ    = rownorm( 1[β > thr] · β )                 prune weak pairs, renormalise
    v̂    = v + γ_va · a²          â = a + γ_av · v¹   each modality takes in the other's
                                                       propagated positives
    v_out = LN(Drop(ReLU(W_v v̂)))   a_out = LN(Drop(ReLU(W_a â)))   (one shared LayerNorm)
    fused = (v_out + a_out) / 2

rownorm(x)_ij = x_ij / (Σ_j x_ij + ε): a row that is all zero (no positive pair
left) stays zero, so that segment keeps only its own feature. With T segments a
row of β averages 1/T, so ``threshold`` ≈ 1/T (0.099 for T = 10) keeps the pairs
at or above the average similarity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-8


def affinity(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """ReLU(q · kᵀ / √D) for [B, T, D] inputs -> [B, T, T] (row: query segment, column: key segment)."""
    return F.relu(torch.bmm(query, key.transpose(1, 2)) / math.sqrt(query.shape[-1]))


def row_normalise(x: torch.Tensor) -> torch.Tensor:
    return x / (x.sum(dim=-1, keepdim=True) + EPS)


def propagation_weights(raw: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative affinities [B, T, T] -> (β, γ): β row-normalised, γ = β pruned below ``threshold`` and renormalised.

    Pairs with β exactly equal to the threshold are pruned (the rule keeps β > thr).
    """
    beta = row_normalise(raw)
    gamma = row_normalise(beta * (beta > threshold).to(beta.dtype))
    return beta, gamma


def propagate(x: torch.Tensor, gamma: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """x + γ · values: each segment of x adds the weighted positives of the other modality."""
    return x + torch.bmm(gamma, values)


@dataclass(frozen=True)
class PSPOutput:
    """fused, visual, audio: [B, T, D] after PSP; gamma_va, gamma_av: [B, T, T] pruned weights (for inspection)."""

    fused: torch.Tensor
    visual: torch.Tensor
    audio: torch.Tensor
    gamma_va: torch.Tensor
    gamma_av: torch.Tensor


class PositiveSamplePropagation(nn.Module):
    """PSP on [B, T, dim] visual and audio sequences (equations in the module docstring)."""

    def __init__(self, dim: int, threshold: float, dropout: float = 0.1):
        super().__init__()
        self.threshold = threshold
        self.v_key = nn.Linear(dim, dim, bias=False)  # v¹: what audio segments receive from v
        self.v_query = nn.Linear(dim, dim, bias=False)  # v²: compared with a¹
        self.a_key = nn.Linear(dim, dim, bias=False)  # a¹
        self.a_value = nn.Linear(dim, dim, bias=False)  # a²: what visual segments receive from a
        self.v_out = nn.Linear(dim, dim, bias=False)
        self.a_out = nn.Linear(dim, dim, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        for layer in (self.v_key, self.v_query, self.a_key, self.a_value, self.v_out, self.a_out):
            nn.init.xavier_uniform_(layer.weight)

    def _branch(self, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(F.relu(layer(x)))

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> PSPOutput:
        v1, v2 = self._branch(self.v_key, visual), self._branch(self.v_query, visual)
        a1, a2 = self._branch(self.a_key, audio), self._branch(self.a_value, audio)
        raw = affinity(v2, a1)
        _, gamma_va = propagation_weights(raw, self.threshold)
        _, gamma_av = propagation_weights(raw.transpose(1, 2), self.threshold)
        v_hat = propagate(visual, gamma_va, a2)
        a_hat = propagate(audio, gamma_av, v1)
        v_out = self.norm(self._branch(self.v_out, v_hat))
        a_out = self.norm(self._branch(self.a_out, a_hat))
        return PSPOutput((v_out + a_out) / 2, v_out, a_out, gamma_va, gamma_av)
