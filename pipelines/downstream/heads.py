"""Localization heads behind ``jobs/localize.py --head``: fit on labelled seconds, predict one class per second.

A head sees whole streams (stream_id, t, v, a in time order), not just a feature
matrix, so a sequence head such as CPSP (ten 1-s segments) can be registered in
``HEADS`` next to the linear probe without changing the job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from epg.probe import FeatureSet, LinearProbe, ProbeConfig, select_features, train_probe


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
    def fit(self, data: LabelledSeconds, n_classes: int) -> None: ...

    def predict(self, data: LabelledSeconds) -> np.ndarray: ...


class LinearHead:
    """The linear probe of ``epg.probe`` on audio, visual or both features."""

    def __init__(self, features: FeatureSet, config: ProbeConfig):
        self.features = features
        self.config = config
        self.probe: LinearProbe | None = None

    def fit(self, data: LabelledSeconds, n_classes: int) -> None:
        self.probe = train_probe(select_features(data.v, data.a, self.features), data.target, n_classes, self.config)

    def predict(self, data: LabelledSeconds) -> np.ndarray:
        if self.probe is None:
            raise RuntimeError("LinearHead.predict before fit")
        return self.probe.predict(select_features(data.v, data.a, self.features))


#: --head name → factory(features, probe config) → Head
HEADS: dict[str, Callable[[FeatureSet, ProbeConfig], Head]] = {"linear": LinearHead}
