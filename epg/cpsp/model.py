"""The CPSP network: (audio-guided spatial attention) → BiLSTM per modality → PSP → heads.

Inputs per video: visual [B, T, d_v] (pooled vectors, e.g. our EPG embeddings) or
[B, T, H, W, d_v] (spatial maps, e.g. AVE's VGG-19 [10, 7, 7, 512]); audio [B, T, d_a].

1. Optional input normalisation (config ``input_norm``).
2. Audio: a = W_a x_a (d_a → proj_dim).
3. Spatial maps only, ``spatial="attention"`` (AVEL's audio-guided attention, as read):
   for the cells u_k ∈ R^{d_v} of one segment,
       z_k = w_hᵀ tanh( U_v ReLU(P_v u_k) + U_g ReLU(P_a a) ),  α = softmax_k(z),  x_v = Σ_k α_k u_k;
   ``spatial="mean"`` averages the cells instead.
4. Visual: v = W_v x_v (d_v → proj_dim).
5. A BiLSTM per modality over the T segments (outputs 2 · lstm_hidden = D features).
6. PSP (``epg.cpsp.psp``) gives v_out, a_out and fused = (v_out + a_out) / 2.
7. Heads on the fused feature:
   - event: one logit per segment (event vs background);
   - category: ``video`` head: C logits from the time average of fused (the
     paper); ``segment`` head: C logits per segment.
   - av_similarity: cos(v_out_t, a_out_t) per segment, the input of L_avpsp.
   ``local_heads`` (segment head only): both logits of segment t add a linear
   read-out of [v_t, a_t] (steps 2 and 4, before the BiLSTMs), the segment's own
   evidence beside its context.

Prediction (the paper's rule): segment t is background (class C) when
sigmoid(event_t) ≤ event_threshold, else the arg-max category (of the video, or
of the segment with the ``segment`` head).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from epg.cpsp.config import CPSPModelConfig
from epg.cpsp.psp import PositiveSamplePropagation


@dataclass(frozen=True)
class CPSPOutput:
    """event_logits [B, T]; class_logits [B, C] (video head) or [B, T, C] (segment head);
    fused, visual, audio [B, T, D] after PSP; av_similarity [B, T]; gamma_va, gamma_av [B, T, T]."""

    event_logits: torch.Tensor
    class_logits: torch.Tensor
    fused: torch.Tensor
    visual: torch.Tensor
    audio: torch.Tensor
    av_similarity: torch.Tensor
    gamma_va: torch.Tensor
    gamma_av: torch.Tensor

    def segment_class_logits(self) -> torch.Tensor:
        """Category logits per segment, [B, T, C] (the video head's logits repeated over T)."""
        if self.class_logits.dim() == 3:
            return self.class_logits
        return self.class_logits.unsqueeze(1).expand(-1, self.event_logits.shape[1], -1)


class AudioGuidedAttention(nn.Module):
    """Pools the H·W cells of each segment's visual map with weights guided by that segment's audio."""

    def __init__(self, visual_dim: int, audio_dim: int, hidden: int):
        super().__init__()
        self.visual = nn.Linear(visual_dim, hidden)
        self.audio = nn.Linear(audio_dim, hidden)
        self.visual_score = nn.Linear(hidden, hidden, bias=False)
        self.audio_score = nn.Linear(hidden, hidden, bias=False)
        self.score = nn.Linear(hidden, 1, bias=False)
        for layer in (self.visual, self.audio, self.visual_score, self.audio_score, self.score):
            nn.init.xavier_uniform_(layer.weight)

    def weights(self, cells: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """cells [N, K, d_v], audio [N, d_a] -> attention α [N, K] (softmax over the K cells)."""
        hv = self.visual_score(F.relu(self.visual(cells)))
        ha = self.audio_score(F.relu(self.audio(audio))).unsqueeze(1)
        return torch.softmax(self.score(torch.tanh(hv + ha)).squeeze(-1), dim=-1)

    def forward(self, maps: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """maps [B, T, H, W, d_v], audio [B, T, d_a] -> attended visual [B, T, d_v]."""
        b, t, h, w, d = maps.shape
        cells = maps.reshape(b * t, h * w, d)
        alpha = self.weights(cells, audio.reshape(b * t, -1))
        return torch.bmm(alpha.unsqueeze(1), cells).reshape(b, t, d)


class CPSPModel(nn.Module):
    def __init__(self, config: CPSPModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.audio_proj = nn.Linear(c.audio_dim, c.proj_dim)
        self.visual_proj = nn.Linear(c.visual_dim, c.proj_dim)
        self.attention = (AudioGuidedAttention(c.visual_dim, c.proj_dim, c.attention_dim)
                          if c.spatial == "attention" else None)
        self.audio_lstm = nn.LSTM(c.proj_dim, c.lstm_hidden, c.lstm_layers, batch_first=True, bidirectional=True)
        self.visual_lstm = nn.LSTM(c.proj_dim, c.lstm_hidden, c.lstm_layers, batch_first=True, bidirectional=True)
        self.psp = PositiveSamplePropagation(c.feature_dim, c.psp_threshold, c.dropout)
        self.event_head = nn.Linear(c.feature_dim, 1)
        self.category_head = nn.Linear(c.feature_dim, c.num_classes)
        self.local_event_head = nn.Linear(2 * c.proj_dim, 1) if c.local_heads else None
        self.local_category_head = nn.Linear(2 * c.proj_dim, c.num_classes) if c.local_heads else None

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.input_norm == "l2":
            return F.normalize(x, dim=-1)
        if self.config.input_norm == "layer":
            return F.layer_norm(x, x.shape[-1:])
        return x

    def _check(self, visual: torch.Tensor, audio: torch.Tensor) -> None:
        c = self.config
        if audio.dim() != 3 or audio.shape[-1] != c.audio_dim:
            raise ValueError(f"audio must be [B, T, {c.audio_dim}], got {list(audio.shape)}")
        if visual.dim() not in (3, 5) or visual.shape[-1] != c.visual_dim:
            raise ValueError(f"visual must be [B, T, {c.visual_dim}] or [B, T, H, W, {c.visual_dim}], "
                             f"got {list(visual.shape)}")
        if visual.shape[:2] != audio.shape[:2]:
            raise ValueError(f"visual {list(visual.shape)} and audio {list(audio.shape)} differ in batch or segments")

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> CPSPOutput:
        self._check(visual, audio)
        visual, audio = self._normalise(visual), self._normalise(audio)
        a = self.audio_proj(audio)
        if visual.dim() == 5:
            visual = self.attention(visual, a) if self.attention is not None else visual.mean(dim=(2, 3))
        v = self.visual_proj(visual)
        local = torch.cat([v, a], dim=-1)
        a, _ = self.audio_lstm(a)
        v, _ = self.visual_lstm(v)
        psp = self.psp(v, a)
        event_logits = self.event_head(psp.fused).squeeze(-1)
        if self.config.category_head == "video":
            class_logits = self.category_head(psp.fused.mean(dim=1))
        else:
            class_logits = self.category_head(psp.fused)
        if self.local_event_head is not None and self.local_category_head is not None:
            event_logits = event_logits + self.local_event_head(local).squeeze(-1)
            class_logits = class_logits + self.local_category_head(local)
        av_similarity = F.cosine_similarity(psp.visual, psp.audio, dim=-1)
        return CPSPOutput(event_logits, class_logits, psp.fused, psp.visual, psp.audio, av_similarity,
                          psp.gamma_va, psp.gamma_av)

    @torch.no_grad()
    def predict(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Segment classes [B, T] (int64; C = background) by the rule in the module docstring."""
        return predict_segments(self(visual, audio), self.config.event_threshold)


def predict_segments(output: CPSPOutput, event_threshold: float = 0.5) -> torch.Tensor:
    """Segment classes [B, T]: background (C) where sigmoid(event) ≤ threshold, else the arg-max category."""
    logits = output.segment_class_logits()
    background = logits.shape[-1]
    classes = logits.argmax(dim=-1)
    is_event = torch.sigmoid(output.event_logits) > event_threshold
    return torch.where(is_event, classes, torch.full_like(classes, background))
