"""Training and evaluation of the CPSP head on in-memory tensors.

Data: ``CPSPData`` (visual, audio, segment classes with background = C, video
labels). Training runs ``epochs`` epochs of Adam; after each one the model is
evaluated on the validation split, the epoch with the best validation accuracy
is kept (ties: the earliest), and the test split (when given) is evaluated once,
with that model only. The test split never influences any choice.

Fully supervised loss (segment labels):
    L = BCE(event_logits, 1[event]) + L_class
        + w_avpsp·L_avpsp + w_spsa·L_spsa + w_vpsa·L_vpsa
  L_class, ``video`` head: cross-entropy of the video category, the most frequent
  event class of the video (ties: the lower class index; videos without an event
  segment are left out); ``segment`` head: cross-entropy over event segments.
Weakly supervised loss (video labels only: the classes y ∈ {0, 1}^C and whether
the window holds background; ``segment`` category head):
    L = L_mil(event_logits, class_logits, y, background) + w_vpsa·L_vpsa
  L_mil (``epg.cpsp.loss_mil``): the class probabilities averaged over the open
  segments must match y and those averaged over the closed ones must hold no class;
  with ``mil_presence_weight`` > 0, each labelled class must also dominate an open
  segment (max-pooled over time), and a window with background must close one.
  The class of L_vpsa is the lowest labelled class of the video (−1 = none).
  Segment labels of the training split are not used.
Metric: per-segment accuracy over all segments, background a class of its own
(prediction rule in ``epg.cpsp.model``), as a fraction in [0, 1].

Seeded and self-contained: everything random (initialisation, shuffling,
dropout) draws from a forked RNG seeded with ``train.seed``, so a run is
repeatable and leaves the caller's global RNG untouched.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from epg.cpsp.config import CPSPConfig, CPSPLossConfig
from epg.cpsp.loss_avpsp import avpsp_loss
from epg.cpsp.loss_mil import mil_loss
from epg.cpsp.loss_spsa import spsa_loss
from epg.cpsp.loss_vpsa import vpsa_loss
from epg.cpsp.model import CPSPModel, CPSPOutput, predict_segments


def _tensor(x: Any, dtype: torch.dtype) -> torch.Tensor:
    return x.to(dtype) if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=dtype)


@dataclass
class CPSPData:
    """One split: visual [N, T, d_v] or [N, T, H, W, d_v]; audio [N, T, d_a];
    segment_labels int64 [N, T] in 0..C (C = background); video_labels float32 [N, C] (multi-hot);
    video_background bool [N]: the video holds a background segment (background as a class of its own in
    the video label; derived from segment_labels when not given, as video labels are from per-second ones).

    Arrays are converted to float32 / int64 / bool tensors on construction.
    """

    visual: torch.Tensor
    audio: torch.Tensor
    segment_labels: torch.Tensor
    video_labels: torch.Tensor
    video_background: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.visual = _tensor(self.visual, torch.float32)
        self.audio = _tensor(self.audio, torch.float32)
        self.segment_labels = _tensor(self.segment_labels, torch.int64)
        self.video_labels = _tensor(self.video_labels, torch.float32)
        n, t = self.segment_labels.shape if self.segment_labels.dim() == 2 else (None, None)
        if n is None:
            raise ValueError(f"segment_labels must be [N, T], got {list(self.segment_labels.shape)}")
        if self.visual.dim() not in (3, 5) or tuple(self.visual.shape[:2]) != (n, t):
            raise ValueError(f"visual must be [{n}, {t}, d] or [{n}, {t}, H, W, d], got {list(self.visual.shape)}")
        if self.audio.dim() != 3 or tuple(self.audio.shape[:2]) != (n, t):
            raise ValueError(f"audio must be [{n}, {t}, d], got {list(self.audio.shape)}")
        if self.video_labels.dim() != 2 or self.video_labels.shape[0] != n:
            raise ValueError(f"video_labels must be [{n}, C], got {list(self.video_labels.shape)}")
        c = self.video_labels.shape[1]
        if n and (int(self.segment_labels.min()) < 0 or int(self.segment_labels.max()) > c):
            raise ValueError(f"segment_labels must lie in 0..{c} ({c} = background)")
        if self.video_background is None:
            self.video_background = (self.segment_labels == c).any(dim=1)
        self.video_background = _tensor(self.video_background, torch.bool)
        if tuple(self.video_background.shape) != (n,):
            raise ValueError(f"video_background must be [{n}], got {list(self.video_background.shape)}")

    @classmethod
    def from_one_hot(cls, visual: Any, audio: Any, segment_one_hot: Any, video_labels: Any | None = None) -> "CPSPData":
        """From AVE-style one-hot segment labels [N, T, C+1] (last column background).

        Without ``video_labels`` they are the classes present in the segment labels.
        """
        one_hot = np.asarray(segment_one_hot)
        classes = one_hot.argmax(axis=-1)
        c = one_hot.shape[-1] - 1
        if video_labels is None:
            video_labels = video_labels_from_segments(classes, c)
        return cls(visual, audio, classes, video_labels)

    def __len__(self) -> int:
        return int(self.segment_labels.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.video_labels.shape[1])

    @property
    def segments(self) -> int:
        return int(self.segment_labels.shape[1])

    def subset(self, index: Any) -> "CPSPData":
        """The videos at ``index`` (integer positions or a boolean mask)."""
        index = torch.as_tensor(np.asarray(index))
        index = index.nonzero().flatten() if index.dtype == torch.bool else index.to(torch.int64)
        return CPSPData(self.visual[index], self.audio[index], self.segment_labels[index], self.video_labels[index],
                        self.video_background[index])


def video_labels_from_segments(segment_labels: Any, num_classes: int) -> np.ndarray:
    """Segment classes [N, T] (C = background) -> multi-hot [N, C] of the classes present."""
    labels = np.asarray(segment_labels)
    out = np.zeros((labels.shape[0], num_classes), np.float32)
    rows, cols = np.nonzero(labels < num_classes)
    out[rows, labels[rows, cols]] = 1.0
    return out


def video_class(segment_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[B, T] segment classes -> [B]: the most frequent event class (ties: lower index), −1 without events."""
    counts = F.one_hot(segment_labels, num_classes + 1)[..., :num_classes].sum(dim=1)  # [B, C]
    best = counts.argmax(dim=1)  # argmax returns the first maximum
    return torch.where(counts.sum(dim=1) > 0, best, torch.full_like(best, -1))


def first_labelled_class(video_labels: torch.Tensor) -> torch.Tensor:
    """[B, C] multi-hot -> [B]: the lowest labelled class, −1 for a video without labels."""
    present = video_labels > 0.5
    first = present.to(torch.int64).argmax(dim=1)
    return torch.where(present.any(dim=1), first, torch.full_like(first, -1))


def segment_accuracy(predicted: Any, target: Any) -> float:
    """Share of segments whose predicted class equals the target (background a class of its own)."""
    predicted, target = np.asarray(predicted), np.asarray(target)
    if predicted.shape != target.shape or predicted.size == 0:
        raise ValueError(f"predictions {predicted.shape} and targets {target.shape} must match and be non-empty")
    return float((predicted == target).mean())


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the kept items; 0 (still in the graph) when none is kept."""
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], target[keep])


def fully_supervised_loss(out: CPSPOutput, segment_labels: torch.Tensor, config: CPSPLossConfig) -> dict[str, torch.Tensor]:
    """The fully supervised objective and its parts (keys: loss, event, class, avpsp, spsa, vpsa)."""
    num_classes = out.class_logits.shape[-1]
    is_event = segment_labels < num_classes
    event = F.binary_cross_entropy_with_logits(out.event_logits, is_event.to(out.event_logits.dtype))
    vclass = video_class(segment_labels, num_classes)
    if out.class_logits.dim() == 2:
        cls = _cross_entropy(out.class_logits, vclass, vclass >= 0)
    else:
        cls = _cross_entropy(out.class_logits, segment_labels, is_event)
    terms = {"event": event, "class": cls}
    terms["avpsp"] = avpsp_loss(out.av_similarity, is_event)
    terms["spsa"] = spsa_loss(out.fused, is_event, config.spsa_temperature)
    terms["vpsa"] = vpsa_loss(out.fused, vclass, config.vpsa_margin, config.vpsa_negatives)
    terms["loss"] = (event + cls + config.avpsp_weight * terms["avpsp"] + config.spsa_weight * terms["spsa"]
                     + config.vpsa_weight * terms["vpsa"])
    return terms


def weakly_supervised_loss(out: CPSPOutput, video_labels: torch.Tensor, video_background: torch.Tensor,
                           config: CPSPLossConfig, epoch: int | None = None) -> dict[str, torch.Tensor]:
    """The weakly supervised objective and its parts (keys: loss, foreground, background, pinned, class_presence,
    background_presence, vpsa)."""
    terms = mil_loss(out.event_logits, out.class_logits, video_labels, video_background)
    terms["vpsa"] = vpsa_loss(out.fused, first_labelled_class(video_labels), config.vpsa_margin, config.vpsa_negatives)
    presence = terms["class_presence"] + terms["background_presence"]
    presence_weight = config.mil_presence_weight if epoch is None or epoch >= config.mil_presence_from_epoch else 0.0
    terms["loss"] = (terms["foreground"] + terms["background"] + terms["pinned"]
                     + presence_weight * presence + config.vpsa_weight * terms["vpsa"])
    return terms


@torch.no_grad()
def predict(model: CPSPModel, data: CPSPData, batch_size: int = 256, device: str | torch.device = "cpu") -> np.ndarray:
    """Segment classes [N, T] (int64, C = background) of ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    parts = []
    for start in range(0, len(data), batch_size):
        sl = slice(start, start + batch_size)
        out = model(data.visual[sl].to(device), data.audio[sl].to(device))
        parts.append(predict_segments(out, model.config.event_threshold).cpu())
    model.train(was_training)
    if not parts:
        return np.zeros((0, data.segments), np.int64)
    return torch.cat(parts).numpy()


def evaluate(model: CPSPModel, data: CPSPData, batch_size: int = 256, device: str | torch.device = "cpu") -> float:
    """Per-segment accuracy of ``model`` on ``data`` (background a class of its own)."""
    return segment_accuracy(predict(model, data, batch_size, device), data.segment_labels.numpy())


@dataclass
class CPSPResult:
    """What a training run gives back.

    val_accuracy[e] is the validation accuracy after epoch e (0-based); best_epoch
    the selected epoch; test_accuracy is computed once, with the selected model
    (None when no test split was given). ``model`` holds the selected weights, in
    eval mode on the CPU. train_loss[e] has the epoch means of the loss terms.
    """

    config: CPSPConfig
    val_accuracy: list[float]
    best_epoch: int
    best_val_accuracy: float
    test_accuracy: float | None
    train_loss: list[dict[str, float]] = field(default_factory=list)
    model: CPSPModel | None = None

    def to_dict(self) -> dict[str, Any]:
        """Everything but the model, as plain values (for run records)."""
        return {
            "config": self.config.to_dict(),
            "val_accuracy": list(self.val_accuracy),
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_val_accuracy,
            "test_accuracy": self.test_accuracy,
            "train_loss": [dict(x) for x in self.train_loss],
        }


def _check_splits(config: CPSPConfig, splits: dict[str, CPSPData | None]) -> None:
    m = config.model
    for name, data in splits.items():
        if data is None:
            continue
        if len(data) == 0:
            raise ValueError(f"the {name} split is empty")
        if data.num_classes != m.num_classes:
            raise ValueError(f"the {name} split has {data.num_classes} classes, "
                             f"CPSPModelConfig.num_classes is {m.num_classes}")
        if data.visual.shape[-1] != m.visual_dim or data.audio.shape[-1] != m.audio_dim:
            raise ValueError(f"the {name} split has visual/audio dims {data.visual.shape[-1]}/{data.audio.shape[-1]}, "
                             f"CPSPModelConfig says {m.visual_dim}/{m.audio_dim}")


def train_cpsp(
    config: CPSPConfig,
    train: CPSPData,
    val: CPSPData,
    test: CPSPData | None = None,
    on_epoch: Callable[[int, dict[str, float], float], None] | None = None,
) -> CPSPResult:
    """Train on ``train``, select the epoch on ``val``, evaluate ``test`` once with the selected model.

    ``on_epoch(epoch, train_loss_terms, val_accuracy)`` is called after every epoch (logging).
    """
    _check_splits(config, {"train": train, "val": val, "test": test})
    tc = config.train
    device = torch.device(tc.device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(tc.seed)
        model = CPSPModel(config.model).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(tc.lr_milestones), gamma=tc.lr_gamma)
        generator = torch.Generator().manual_seed(tc.seed)
        val_accuracy: list[float] = []
        train_loss: list[dict[str, float]] = []
        best_state: dict[str, torch.Tensor] | None = None
        best_epoch, best_acc = -1, -math.inf
        for epoch in range(tc.epochs):
            train_loss.append(_train_epoch(model, optimizer, train, config, generator, device, epoch))
            scheduler.step()
            acc = evaluate(model, val, tc.eval_batch_size, device)
            val_accuracy.append(acc)
            if on_epoch is not None:
                on_epoch(epoch, train_loss[-1], acc)
            if acc > best_acc:
                best_acc, best_epoch = acc, epoch
                best_state = copy.deepcopy(model.state_dict())
        assert best_state is not None
        model.load_state_dict(best_state)
        test_accuracy = evaluate(model, test, tc.eval_batch_size, device) if test is not None else None
    model.to("cpu").eval()
    return CPSPResult(config, val_accuracy, best_epoch, best_acc, test_accuracy, train_loss, model)


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data: CPSPData, config: CPSPConfig,
                 generator: torch.Generator, device: torch.device, epoch: int) -> dict[str, float]:
    tc = config.train
    model.train()
    order = torch.randperm(len(data), generator=generator)
    sums: dict[str, float] = {}
    batches = 0
    for start in range(0, len(data), tc.batch_size):
        index = order[start:start + tc.batch_size]
        out = model(data.visual[index].to(device), data.audio[index].to(device))
        if tc.supervision == "full":
            terms = fully_supervised_loss(out, data.segment_labels[index].to(device), config.loss)
        else:
            terms = weakly_supervised_loss(out, data.video_labels[index].to(device),
                                           data.video_background[index].to(device), config.loss, epoch)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if tc.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip_norm)
        optimizer.step()
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach())
        batches += 1
    return {key: value / batches for key, value in sums.items()}
