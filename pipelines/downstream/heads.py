"""Localization heads behind ``jobs/localize.py --head``: fit on labelled seconds, predict one class per second.

A head sees whole streams (stream_id, t, v, a in time order), not just a feature
matrix, so the sequence head CPSP sits in ``HEADS`` next to the linear probe and
both are trained on the same targets and scored by the same code.

- ``linear``: ``epg.probe`` on audio, visual or both features (one head per set).
- ``cpsp``: ``epg.cpsp`` on windows of ``length`` seconds (``pipelines.downstream.cpsp_windows``).

Decisions for the CPSP head (where the design is silent):
- Modalities: CPSP propagates positives between an audio and a visual sequence,
  so it always reads both v and a; it runs only for the feature set ``both``.
- Targets: the job's per-second targets (``pipelines.downstream.labels``), in
  CPSP's layout (background last); all classes of the labels table, so the class
  list and indices are the linear probe's.
- Training windows: ``length`` consecutive seconds every ``stride`` seconds of the
  training streams (never across a gap); stride 5 and batches of 16 windows by
  default, because labelled footage is short: AVE's non-overlapping windows in
  batches of 64 give a few minutes of footage about one optimiser step an epoch
  and an under-trained head.
- Model selection: ``split_by_time`` keeps the last ``val_fraction`` of every
  training stream's seconds as validation (no second in both); the epoch with the
  best validation per-segment accuracy (exact target, background a class) is kept.
  Eval streams never take part in training or in the choice; the validation
  seconds are not retrained on afterwards.
- Weak supervision trains on the windows' video labels (classes present) only,
  through ``epg.cpsp.loss_mil``; validation still uses the segment targets to
  choose the epoch.
- Local heads on by default (``local_heads``): each second's gate and category
  also read that second's own embeddings, not only its window's context (the
  weak head needs it to tell which seconds hold the event; see docs/design.md).
- Input normalisation ``l2`` by default: EPG embeddings are not normalised and
  their scale differs between modalities and checkpoints.
- PSP threshold 0.99 / ``length`` (the published 0.099 for T = 10): a row of the
  similarities averages 1 / T.
- Category head ``segment`` by default: a 10-s window of a street often holds
  several classes; the paper's ``video`` head gives all its event seconds one class.
- Prediction: windows tile every second of each stream (``cover``: an extra window
  aligned to a run's end, a run shorter than ``length`` as one shorter window);
  a second covered by two windows takes the first window's prediction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from epg.configs import Config, fail, non_negative, one_of, positive
from epg.cpsp.config import (
    CATEGORY_HEADS,
    INPUT_NORMS,
    SUPERVISIONS,
    CategoryHead,
    CPSPConfig,
    CPSPLossConfig,
    CPSPModelConfig,
    CPSPTrainConfig,
    InputNorm,
    Supervision,
)
from epg.cpsp.model import CPSPModel, predict_segments
from epg.cpsp.train import CPSPResult, train_cpsp
from epg.probe import (
    FEATURE_SETS,
    FeatureSet,
    LinearProbe,
    ProbeConfig,
    select_features,
    train_probe,
)
from pipelines.downstream.cpsp_windows import (
    cover,
    cut_windows,
    from_segment_labels,
    split_by_time,
    to_segment_labels,
)


@dataclass(frozen=True)
class LabelledSeconds:
    """Seconds of some streams, ordered by (stream_id, t): embeddings and targets (class indices)."""

    stream_id: np.ndarray
    t: np.ndarray
    v: np.ndarray
    a: np.ndarray
    target: np.ndarray
    present: np.ndarray  # [N, C] bool: every class of the second


class Head(Protocol):
    def fit(self, data: LabelledSeconds, classes: tuple[str, ...]) -> None:
        """Train on ``data``; ``classes`` are the labels table's classes (background first)."""

    def predict(self, data: LabelledSeconds) -> np.ndarray:
        """One class index per row of ``data``."""

    def record(self) -> dict[str, Any]:
        """What fitting chose (for summary.json); {} when nothing."""


class LinearHead:
    """The linear probe of ``epg.probe`` on audio, visual or both features."""

    def __init__(self, features: FeatureSet, config: ProbeConfig):
        self.features = features
        self.config = config
        self.probe: LinearProbe | None = None

    def fit(self, data: LabelledSeconds, classes: tuple[str, ...]) -> None:
        self.probe = train_probe(select_features(data.v, data.a, self.features), data.target, len(classes), self.config)

    def predict(self, data: LabelledSeconds) -> np.ndarray:
        if self.probe is None:
            raise RuntimeError("LinearHead.predict before fit")
        return self.probe.predict(select_features(data.v, data.a, self.features))

    def record(self) -> dict[str, Any]:
        return {}


_TRAIN = CPSPTrainConfig()
_MODEL = CPSPModelConfig()


@dataclass(frozen=True)
class CPSPHeadConfig(Config):
    """The CPSP head of the localize job: windows, validation split and the CPSP settings that matter here.

    Everything else (loss weights aside, in ``loss``) takes the defaults of
    ``epg.cpsp.config``; ``cpsp_config`` builds the full ``CPSPConfig`` for the data's
    class count and embedding size, and the job records it.
    """

    supervision: Supervision = "full"
    epochs: int = _TRAIN.epochs
    batch_size: int = 16  # windows; AVE's 64 gives a labelled hour only ~6 steps an epoch
    lr: float = _TRAIN.lr
    weight_decay: float = _TRAIN.weight_decay
    seed: int = 0
    device: str = "cpu"  # torch device string, e.g. "cuda"
    length: int = 10  # seconds per window (AVE: 10)
    stride: int = 5  # seconds between training windows (overlapping: each event at two positions)
    val_fraction: float = 0.2  # last share of each training stream used for model selection
    input_norm: InputNorm = "l2"
    category_head: CategoryHead = "segment"
    local_heads: bool = True  # segment head only: logits also read each second's own embeddings
    hidden: int = _MODEL.lstm_hidden  # BiLSTM hidden size per direction; the projection has the same size
    loss: CPSPLossConfig = field(default_factory=CPSPLossConfig)

    def __post_init__(self) -> None:
        one_of(self, "supervision", SUPERVISIONS)
        one_of(self, "input_norm", INPUT_NORMS)
        one_of(self, "category_head", CATEGORY_HEADS)
        positive(self, "epochs", "batch_size", "lr", "length", "stride", "hidden")
        non_negative(self, "weight_decay")
        if not 0.0 < self.val_fraction < 1.0:
            fail(self, "val_fraction", "in (0, 1)", self.val_fraction)
        try:
            torch.device(self.device)
        except RuntimeError:
            fail(self, "device", "a torch device string such as 'cpu' or 'cuda'", self.device)
        if not isinstance(self.loss, CPSPLossConfig):
            fail(self, "loss", "a CPSPLossConfig", type(self.loss).__name__)
        if self.category_head == "video" and self.local_heads:
            fail(self, "local_heads", "False with the video category head (--no-cpsp-local-heads)", self.local_heads)
        if self.supervision == "weak" and self.category_head != "segment":
            fail(self, "category_head", "'segment' for weak supervision", self.category_head)

    def cpsp_config(self, num_classes: int, dim: int) -> CPSPConfig:
        """The full CPSP configuration for C event classes and d-dimensional v and a."""
        model = CPSPModelConfig(num_classes=num_classes, visual_dim=dim, audio_dim=dim, input_norm=self.input_norm,
                                category_head=self.category_head, local_heads=self.local_heads,
                                proj_dim=self.hidden, lstm_hidden=self.hidden,
                                psp_threshold=round(0.99 / self.length, 6))
        train = dataclasses.replace(_TRAIN, supervision=self.supervision, epochs=self.epochs, batch_size=self.batch_size,
                                    lr=self.lr, weight_decay=self.weight_decay, seed=self.seed, device=self.device)
        return CPSPConfig(model=model, loss=self.loss, train=train)


class CPSPHead:
    """CPSP trained on windows of the training streams, selected on their last seconds, predicting every second."""

    def __init__(self, config: CPSPHeadConfig):
        self.config = config
        self.model: CPSPModel | None = None
        self.result: CPSPResult | None = None
        self.split: dict[str, Any] = {}

    def fit(self, data: LabelledSeconds, classes: tuple[str, ...]) -> None:
        c = self.config
        events = tuple(classes[1:])
        if not events:
            raise ValueError("the cpsp head needs at least one event class in the labels (only background found)")
        segment = to_segment_labels(data.target, len(events))
        windows = cut_windows(data.stream_id, data.t, data.v, data.a, segment, events, length=c.length, stride=c.stride)
        train, val = split_by_time(windows, c.val_fraction) if len(windows) else (windows, windows)
        if not len(train) or not len(val):
            raise ValueError(f"the cpsp head needs training windows and validation windows of {c.length} consecutive "
                             f"seconds: the training streams give {len(windows)} window(s), {len(train)} for training "
                             f"and {len(val)} for validation (val_fraction {c.val_fraction}); label more footage "
                             f"or lower the window length")
        config = c.cpsp_config(len(events), data.v.shape[1])
        self.result = train_cpsp(config, train.to_cpsp_data(), val.to_cpsp_data())
        self.model = self.result.model
        self.split = {
            "train_windows": len(train), "val_windows": len(val),
            "val_from": {s: int(val.t0[val.stream_id == s].min()) for s in sorted(set(val.stream_id.tolist()))},
        }

    def predict(self, data: LabelledSeconds) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("CPSPHead.predict before fit")
        n_events = self.model.config.num_classes
        out = np.full(len(data.t), -1, np.int64)
        by_length: dict[int, list[np.ndarray]] = {}
        for stream in sorted(set(data.stream_id.tolist())):
            rows = np.nonzero(data.stream_id == stream)[0]
            for start, stop in cover(data.t[rows], self.config.length):
                by_length.setdefault(stop - start, []).append(rows[start:stop])
        for windows in by_length.values():
            index = np.stack(windows)  # [W, L] rows of data
            segments = self._predict_windows(data.v[index], data.a[index])
            for rows, predicted in zip(index, from_segment_labels(segments, n_events)):
                unset = out[rows] < 0
                out[rows[unset]] = predicted[unset]
        assert (out >= 0).all(), "every second is in a window"
        return out

    def _predict_windows(self, visual: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """CPSP classes [W, L] of windows [W, L, d]."""
        assert self.model is not None
        device = torch.device(self.config.device)
        model = self.model.to(device).eval()
        batch = _TRAIN.eval_batch_size
        parts = []
        with torch.no_grad():
            for start in range(0, len(visual), batch):
                v = torch.as_tensor(visual[start:start + batch], dtype=torch.float32, device=device)
                a = torch.as_tensor(audio[start:start + batch], dtype=torch.float32, device=device)
                parts.append(predict_segments(model(v, a), model.config.event_threshold).cpu().numpy())
        return np.concatenate(parts)

    def record(self) -> dict[str, Any]:
        if self.result is None:
            return {}
        return {**self.split, "best_epoch": self.result.best_epoch, "best_val_accuracy": self.result.best_val_accuracy,
                "val_accuracy": self.result.val_accuracy, "cpsp_config": self.result.config.to_dict()}


@dataclass(frozen=True)
class HeadSpec:
    """A head the job can run: the feature sets it can use and how to build it."""

    features: tuple[str, ...]
    build: Callable[[FeatureSet, ProbeConfig, CPSPHeadConfig], Head]


#: --head name → spec
HEADS: dict[str, HeadSpec] = {
    "linear": HeadSpec(FEATURE_SETS, lambda features, probe, cpsp: LinearHead(features, probe)),
    "cpsp": HeadSpec(("both",), lambda features, probe, cpsp: CPSPHead(cpsp)),
}
