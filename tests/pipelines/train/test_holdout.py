"""The held-out slice of the training streams (pipelines.train.holdout) on real ingested clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.ingest.clips_dataset import read_stream
from pipelines.train.checkpoint import build_model
from pipelines.train.config import build_pretrain_config
from pipelines.train.data import build_dataset, inspect_clips
from pipelines.train.holdout import PREFIX, describe, holdout_cutoffs, holdout_diagnostics, load_holdout
from tests.pipelines.train.test_data import synthetic_clips


@pytest.fixture(scope="module")
def clips(tmp_path_factory, ray_local) -> tuple[Path, Path]:
    return synthetic_clips(tmp_path_factory, ray_local)


def test_the_last_share_of_every_stream_is_held_out_and_never_trained_on(clips):
    info = inspect_clips(str(clips[0]))
    cutoffs = holdout_cutoffs(info, 0.3)  # 18 of 60 s: pairs more than 10 s apart exist
    assert set(cutoffs) == set(info.stream_ids) and holdout_cutoffs(info, 0.0) == {}
    trained = build_dataset(info, holdout=cutoffs).select_columns(["stream", "t"]).take_all()
    held = 0
    for sid in info.stream_ids:
        table = read_stream(str(clips[0]), sid).to_pydict()
        t = np.asarray(table["t"])
        assert 0.25 <= float((t >= cutoffs[sid]).mean()) <= 0.35
        complete = np.asarray(table["has_audio"]) & np.asarray(table["has_video"])
        kept = [row["t"] for row in trained if row["stream"] == info.stream_index()[sid]]
        assert sorted(kept) == sorted(2 * [int(x) for x in t[complete & (t < cutoffs[sid])]])  # two crops each
        held += int((complete & (t >= cutoffs[sid])).sum())
    decoded = load_holdout(info, cutoffs, max_clips=1000)
    assert decoded is not None and len(decoded["t"]) == 2 * held  # two visual samples per clip
    stream_ids = {i: sid for sid, i in info.stream_index().items()}
    assert all(t >= cutoffs[stream_ids[int(s)]] for s, t in zip(decoded["stream"], decoded["t"]))
    assert len(load_holdout(info, cutoffs, max_clips=4)["t"]) == 8

    config = build_pretrain_config(str(clips[0]), "unused", preset="tiny")
    model = build_model(config)
    model.train()
    found = holdout_diagnostics(model, decoded, lam=0.5, device=torch.device("cpu"), batch_size=8)
    assert model.training  # restored
    assert found[f"{PREFIX}clips"] == held and 0.0 <= found[f"{PREFIX}pair_auc"] <= 1.0
    assert 0.0 <= found[f"{PREFIX}recall_chance"] <= 1.0 and found[f"{PREFIX}v_spread"] > 0
    assert "pair AUC" in describe(found)
    collapsed = {**found, f"{PREFIX}collapsed": 1.0}
    assert "still collapsed" in describe(collapsed) and "collapsed" not in describe(collapsed, trained=False)
