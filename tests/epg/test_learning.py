"""Learning diagnostics (epg.learning) on embeddings whose answer is known."""

import math

import pytest
import torch

from epg.learning import chance_of_a_hit, learning_diagnostics


def clips(n_streams: int = 2, seconds: int = 60):
    stream = torch.arange(n_streams).repeat_interleave(seconds)
    t = torch.arange(seconds).repeat(n_streams)
    return stream, t


def test_matched_embeddings_score_perfectly_and_random_ones_at_chance():
    stream, t = clips()
    g = torch.Generator().manual_seed(0)
    v = torch.randn(len(t), 16, generator=g)
    good = learning_diagnostics(v, v + 0.01 * torch.randn(v.shape, generator=g), stream, t, lam=0.5)
    assert good["pair_auc"] > 0.99 and good["recall_at_k"] == 1.0 and good["collapsed"] == 0.0
    # Chance of a hit within ±2 s (5 of 120 candidates) among the 10 nearest: about 1 − (115/120)^10.
    assert 0.3 < good["recall_chance"] < 0.4
    random = learning_diagnostics(v, torch.randn(v.shape, generator=g), stream, t, lam=0.5)
    assert abs(random["pair_auc"] - 0.5) < 0.05
    assert abs(random["recall_at_k"] - random["recall_chance"]) < 0.15
    assert 0.0 < random["v_spread"] and 0.0 < random["a_spread"]


def test_collapse_is_flagged():
    stream, t = clips()
    v = torch.ones(len(t), 8) + 1e-6 * torch.randn(len(t), 8)
    out = learning_diagnostics(v, v.clone(), stream, t, lam=0.5)
    assert out["v_spread"] < 1e-3 and out["collapsed"] == 1.0
    assert math.isnan(learning_diagnostics(v[:1], v[:1], stream[:1], t[:1], lam=0.5)["pair_auc"])


def test_chance_of_a_hit_counts_draws_without_replacement():
    assert chance_of_a_hit(5, 1, 2) == pytest.approx(1 - (4 / 5) * (3 / 4))  # 0.4, by hand
    assert chance_of_a_hit(5, 4, 2) == pytest.approx(1.0)  # one miss cannot fill two draws
    assert chance_of_a_hit(5, 0, 3) == 0.0
    many = chance_of_a_hit(torch.tensor([5.0, 5.0], dtype=torch.float64), torch.tensor([1.0, 4.0], dtype=torch.float64), 2)
    assert many.tolist() == pytest.approx([0.4, 1.0])
