"""The scoring model (pipelines.score.model) reads the distance that matches the run's loss from its checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from epg.config import EPGConfig, LossConfig, ModelConfig
from epg.distance import distance
from pipelines.score.model import ClipEmbedder, ScoringModel
from pipelines.train.checkpoint import build_model, write_model
from pipelines.train.config import PretrainConfig


@pytest.mark.parametrize("loss, lam", [(LossConfig(kind="hadsell", lam=0.3), 0.3), (LossConfig(kind="infonce", lam=0.3), 0.0)])
def test_scoring_uses_the_distance_of_the_loss(tmp_path, loss, lam):
    epg = EPGConfig(model=ModelConfig.tiny(), loss=loss)
    config = PretrainConfig(clips="unused", run_dir=str(tmp_path), epg=epg, preset="tiny")
    write_model(tmp_path / "checkpoint_step000000001", config, build_model(config))
    scoring = ScoringModel.load(str(tmp_path))
    assert scoring.lam == lam
    video = np.random.default_rng(0).integers(0, 255, (3, 2, 3, 5, 32, 32), dtype=np.uint8)
    audio = np.random.default_rng(1).normal(-40, 20, (3, 1, 128, 64)).astype(np.float32)
    v, a, d, spectra = ClipEmbedder.in_process(scoring).embed(video, audio)
    torch.testing.assert_close(torch.from_numpy(d), distance(torch.from_numpy(v), torch.from_numpy(a), lam))
    np.testing.assert_allclose(spectra, audio[:, 0].mean(axis=2), rtol=1e-5)  # each clip's log-mel over time
