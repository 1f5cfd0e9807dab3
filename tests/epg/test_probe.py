"""The linear probe (epg.probe): learns separable classes, stays at chance on shuffled labels, is deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from epg.probe import ProbeConfig, select_features, train_probe


def blobs(n_per_class: int, centres: np.ndarray, spread: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = np.repeat(np.arange(len(centres)), n_per_class)
    x = centres[y] + rng.normal(scale=spread, size=(len(y), centres.shape[1]))
    return x.astype(np.float32), y


def test_separable_classes_are_learned_and_generalise():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(4, 16))
    x_train, y_train = blobs(100, centres, 1.0, rng)
    x_test, y_test = blobs(200, centres, 1.0, rng)
    probe = train_probe(x_train, y_train, 4, ProbeConfig(epochs=100, batch_size=64))
    assert (probe.predict(x_train) == y_train).mean() >= 0.98
    assert (probe.predict(x_test) == y_test).mean() >= 0.95
    assert probe.losses[-1] < probe.losses[0] / 5
    proba = probe.predict_proba(x_test)
    assert proba.shape == (800, 4) and np.allclose(proba.sum(1), 1.0, atol=1e-5)


def test_shuffled_labels_give_chance_on_held_out_data():
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=3.0, size=(3, 16))
    x_train, y_train = blobs(300, centres, 1.0, rng)
    x_test, y_test = blobs(1000, centres, 1.0, rng)
    probe = train_probe(x_train, rng.permutation(y_train), 3, ProbeConfig(epochs=50, batch_size=128))
    held_out = (probe.predict(x_test) == y_test).mean()
    assert abs(held_out - 1 / 3) < 0.06, held_out


def test_standardisation_makes_scale_and_offset_irrelevant():
    rng = np.random.default_rng(2)
    centres = rng.normal(scale=3.0, size=(3, 8))
    x, y = blobs(100, centres, 1.0, rng)
    scale = np.array([1e3, 1e-2, 1, 1, 50, 1, 1, 1], dtype=np.float32)
    shifted = x * scale + 100.0
    config = ProbeConfig(epochs=60, batch_size=0)
    plain, scaled = train_probe(x, y, 3, config), train_probe(shifted, y, 3, config)
    assert scaled.mean.numpy() == pytest.approx(shifted.mean(0), rel=1e-4)
    assert (scaled.predict(shifted) == plain.predict(x)).mean() >= 0.98
    assert (scaled.predict(shifted) == y).mean() >= 0.95
    # A feature constant in training is divided by 1, not by 0.
    constant = np.concatenate([x, np.full((len(x), 1), 7.0, np.float32)], axis=1)
    probe = train_probe(constant, y, 3, config)
    assert float(probe.scale[-1]) == 1.0 and np.isfinite(probe.predict_proba(constant)).all()


def test_same_seed_same_probe_and_different_seed_different_order():
    rng = np.random.default_rng(3)
    x, y = blobs(50, rng.normal(size=(3, 8)), 1.0, rng)
    first = train_probe(x, y, 3, ProbeConfig(epochs=5, batch_size=16, seed=4))
    second = train_probe(x, y, 3, ProbeConfig(epochs=5, batch_size=16, seed=4))
    other = train_probe(x, y, 3, ProbeConfig(epochs=5, batch_size=16, seed=5))
    assert torch.equal(first.linear.weight, second.linear.weight)
    assert not torch.equal(first.linear.weight, other.linear.weight)


def test_feature_sets_and_validation():
    v, a = np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32)
    assert select_features(v, a, "visual").shape == (4, 3)
    assert select_features(v, a, "audio").shape == (4, 2)
    both = select_features(v, a, "both")
    assert both.shape == (4, 5) and both[:, :3].all() and not both[:, 3:].any()  # [v, a]
    with pytest.raises(ValueError, match="features must be one of"):
        select_features(v, a, "smell")
    with pytest.raises(ValueError, match="ProbeConfig.epochs"):
        ProbeConfig(epochs=0)
    with pytest.raises(ValueError, match="ProbeConfig.class_weight"):
        ProbeConfig(class_weight="sometimes")
    with pytest.raises(ValueError, match="unknown field"):
        ProbeConfig.from_dict({"epochs": 3, "momentum": 0.9})
    with pytest.raises(ValueError, match="targets must lie"):
        train_probe(v, np.array([0, 1, 2, 3]), 3)


def test_balanced_class_weight_recovers_a_rare_class():
    rng = np.random.default_rng(5)
    centres = np.array([[0.0, 0.0], [1.5, 0.0]])
    x_common, _ = blobs(950, centres[:1], 1.0, rng)
    x_rare, _ = blobs(50, centres[1:], 1.0, rng)
    x = np.concatenate([x_common, x_rare])
    y = np.r_[np.zeros(950, int), np.ones(50, int)]
    plain = train_probe(x, y, 2, ProbeConfig(epochs=40, batch_size=0, lr=0.05))
    balanced = train_probe(x, y, 2, ProbeConfig(epochs=40, batch_size=0, lr=0.05, class_weight="balanced"))
    rare_recall = lambda probe: (probe.predict(x_rare) == 1).mean()  # noqa: E731
    assert rare_recall(balanced) > rare_recall(plain) + 0.3
