"""Configuration of the CPSP localization head: model, losses, training.

Every choice the paper leaves to its code (threshold, loss weights, margin,
temperature, hidden sizes, dropout, schedule) is a field here, so a run can
record its whole configuration (``CPSPConfig.to_dict``) and be rebuilt from it
(``CPSPConfig.from_dict``). Defaults follow the published AVE setting (VGG-19
visual maps [10, 7, 7, 512], VGGish audio [10, 128], 28 classes). Validation
errors name the field (``CPSPLossConfig.vpsa_margin must be >= 0, got -1``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from epg.configs import Config, fail, non_negative, one_of, positive

CategoryHead = Literal["video", "segment"]
SpatialPool = Literal["attention", "mean"]
InputNorm = Literal["none", "l2", "layer"]
Supervision = Literal["full", "weak"]

CATEGORY_HEADS: tuple[str, ...] = get_args(CategoryHead)
SPATIAL_POOLS: tuple[str, ...] = get_args(SpatialPool)
INPUT_NORMS: tuple[str, ...] = get_args(InputNorm)
SUPERVISIONS: tuple[str, ...] = get_args(Supervision)


def _unit_interval(obj: object, name: str, closed_right: bool = False) -> None:
    value = getattr(obj, name)
    ok = 0.0 <= value <= 1.0 if closed_right else 0.0 <= value < 1.0
    if not ok:
        fail(obj, name, "in [0, 1]" if closed_right else "in [0, 1)", value)


@dataclass(frozen=True)
class CPSPModelConfig(Config):
    """The network (see ``epg.cpsp.model``).

    num_classes: C event classes (background is class C, not counted here).
    visual_dim / audio_dim: input feature sizes (AVE: 512 / 128; EPG: d / d).
    spatial: how [.., H, W, C] visual maps become one vector per segment:
      ``attention`` (audio-guided, the paper) or ``mean`` (average of the cells).
      Pooled vector inputs skip this step.
    attention_dim: hidden size of the audio-guided attention.
    input_norm: applied to both inputs first: ``none`` (AVE features), ``l2``
      (unit length per segment), ``layer`` (LayerNorm without affine).
    proj_dim: each modality is projected to this size before its BiLSTM.
    lstm_hidden / lstm_layers: per-direction hidden size and depth of the BiLSTMs
      (their outputs, and everything after them, have 2 · lstm_hidden features).
    psp_threshold: pruning threshold on the row-normalised similarities β (a
      row of T entries averages 1/T; 0.099 for T = 10 as published).
    dropout: dropout inside PSP (branches and output layers).
    category_head: ``video`` (the paper: one category from the time-averaged fused
      feature) or ``segment`` (a category per segment, for windows that hold
      several classes, as our streams do).
    local_heads: the event and category logits of a segment also read that
      segment's own projected inputs (a linear skip past the BiLSTMs and PSP), so
      its gate can rest on its own evidence and not only on its window's context;
      ``segment`` head only.
    event_threshold: a segment is an event when sigmoid(event logit) > this.
    """

    num_classes: int = 28
    visual_dim: int = 512
    audio_dim: int = 128
    spatial: SpatialPool = "attention"
    attention_dim: int = 512
    input_norm: InputNorm = "none"
    proj_dim: int = 128
    lstm_hidden: int = 128
    lstm_layers: int = 1
    psp_threshold: float = 0.099
    dropout: float = 0.1
    category_head: CategoryHead = "video"
    local_heads: bool = False
    event_threshold: float = 0.5

    def __post_init__(self) -> None:
        positive(self, "num_classes", "visual_dim", "audio_dim", "attention_dim", "proj_dim", "lstm_hidden",
                  "lstm_layers")
        one_of(self, "spatial", SPATIAL_POOLS)
        one_of(self, "input_norm", INPUT_NORMS)
        one_of(self, "category_head", CATEGORY_HEADS)
        _unit_interval(self, "psp_threshold")
        _unit_interval(self, "dropout")
        if not 0.0 < self.event_threshold < 1.0:
            fail(self, "event_threshold", "in (0, 1)", self.event_threshold)
        if self.local_heads and self.category_head != "segment":
            fail(self, "local_heads", "False with the video category head (it adds per-segment logits)",
                 self.local_heads)

    @property
    def feature_dim(self) -> int:
        """Size of the encoded, propagated and fused segment features."""
        return 2 * self.lstm_hidden


@dataclass(frozen=True)
class CPSPLossConfig(Config):
    """Weights and parameters of the three CPSP losses (0 weight = term off).

    avpsp_weight: L_avpsp, fully supervised only (published 100).
    spsa_weight / spsa_temperature: L_spsa, fully supervised only (published 0.01 / 0.6).
    vpsa_weight / vpsa_margin / vpsa_negatives: L_vpsa, both settings
      (published 1 / 0.2 / 3 nearest other-class videos).
    mil_presence_weight: weak supervision only: weight of L_mil's max-pooled presence
      terms (``epg.cpsp.loss_mil``; 0 = the attention means alone), from epoch
      ``mil_presence_from_epoch`` (0-based) on: the attention means first settle
      which segments are events, and the presence terms then sharpen the classes.
    """

    avpsp_weight: float = 100.0
    spsa_weight: float = 0.01
    spsa_temperature: float = 0.6
    vpsa_weight: float = 1.0
    vpsa_margin: float = 0.2
    vpsa_negatives: int = 3
    mil_presence_weight: float = 1.0
    mil_presence_from_epoch: int = 3

    def __post_init__(self) -> None:
        non_negative(self, "avpsp_weight", "spsa_weight", "vpsa_weight", "vpsa_margin", "mil_presence_weight",
                     "mil_presence_from_epoch")
        positive(self, "spsa_temperature", "vpsa_negatives")


@dataclass(frozen=True)
class CPSPTrainConfig(Config):
    """Training (see ``epg.cpsp.train``).

    supervision: ``full`` (segment labels) or ``weak`` (video labels only; the
      validation split still needs segment labels for model selection; needs the
      ``segment`` category head, whose per-segment categories tell the gate where
      the label's class is).
    Adam with ``lr`` and ``weight_decay``; the learning rate is multiplied by
    ``lr_gamma`` at each epoch in ``lr_milestones``; gradients clipped to
    ``grad_clip_norm`` (None = off). ``device``: torch device string.
    """

    supervision: Supervision = "full"
    epochs: int = 45
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_milestones: tuple[int, ...] = (10, 20, 30)
    lr_gamma: float = 0.5
    grad_clip_norm: float | None = 0.1
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        one_of(self, "supervision", SUPERVISIONS)
        positive(self, "epochs", "batch_size", "eval_batch_size", "lr", "lr_gamma")
        non_negative(self, "weight_decay")
        if any(m < 1 for m in self.lr_milestones) or list(self.lr_milestones) != sorted(set(self.lr_milestones)):
            fail(self, "lr_milestones", "increasing epochs >= 1", self.lr_milestones)
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            fail(self, "grad_clip_norm", "> 0 or None", self.grad_clip_norm)


@dataclass(frozen=True)
class CPSPConfig(Config):
    model: CPSPModelConfig = field(default_factory=CPSPModelConfig)
    loss: CPSPLossConfig = field(default_factory=CPSPLossConfig)
    train: CPSPTrainConfig = field(default_factory=CPSPTrainConfig)

    def __post_init__(self) -> None:
        if self.train.supervision == "weak" and self.model.category_head != "segment":
            fail(self.model, "category_head", "'segment' for weak supervision (the video head gives every "
                 "segment the same category, so the video labels cannot tell the gate where the event is)",
                 self.model.category_head)
