"""CPSP head: config, positive sample propagation, the model, training and model selection."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from epg.cpsp import (
    CPSPConfig,
    CPSPData,
    CPSPLossConfig,
    CPSPModel,
    CPSPModelConfig,
    CPSPTrainConfig,
    PositiveSamplePropagation,
    evaluate,
    predict,
    predict_segments,
    propagation_weights,
    segment_accuracy,
    train_cpsp,
)
from epg.cpsp.model import CPSPOutput
from epg.cpsp.psp import affinity, propagate
from epg.cpsp.train import first_labelled_class, video_class, video_labels_from_segments
from epg.metrics import roc_auc

C, T, D = 3, 10, 8


def small_model_config(**overrides) -> CPSPModelConfig:
    base = dict(num_classes=C, visual_dim=D, audio_dim=D, proj_dim=16, lstm_hidden=8, attention_dim=8, dropout=0.0)
    return CPSPModelConfig(**{**base, **overrides})


def toy_split(n: int, seed: int, noise: float = 0.3) -> CPSPData:
    """Separable toy videos: one class per video on a random span of >= 2 segments, class prototypes
    (one per modality) on event segments, noise elsewhere."""
    protos = np.random.default_rng(123).normal(size=(2, C, D)).astype(np.float32)
    rng = np.random.default_rng(seed)
    v = noise * rng.normal(size=(n, T, D)).astype(np.float32)
    a = noise * rng.normal(size=(n, T, D)).astype(np.float32)
    seg = np.full((n, T), C)
    for i in range(n):
        c, s = rng.integers(C), rng.integers(0, T - 2)
        e = rng.integers(s + 2, T + 1)
        seg[i, s:e] = c
        v[i, s:e] += protos[0, c]
        a[i, s:e] += protos[1, c]
    return CPSPData(v, a, seg, video_labels_from_segments(seg, C))


@pytest.fixture(scope="module")
def toy():
    return toy_split(96, 1), toy_split(32, 2), toy_split(32, 3)


# --- config -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: CPSPModelConfig(psp_threshold=1.0), "CPSPModelConfig.psp_threshold"),
        (lambda: CPSPModelConfig(lstm_hidden=0), "CPSPModelConfig.lstm_hidden"),
        (lambda: CPSPModelConfig(category_head="frame"), "CPSPModelConfig.category_head"),
        (lambda: CPSPModelConfig(dropout=-0.1), "CPSPModelConfig.dropout"),
        (lambda: CPSPModelConfig(event_threshold=1.0), "CPSPModelConfig.event_threshold"),
        (lambda: CPSPModelConfig(local_heads=True), "CPSPModelConfig.local_heads"),
        (lambda: CPSPConfig(train=CPSPTrainConfig(supervision="weak")), "CPSPModelConfig.category_head"),
        (lambda: CPSPLossConfig(vpsa_margin=-1), "CPSPLossConfig.vpsa_margin"),
        (lambda: CPSPLossConfig(mil_presence_weight=-1), "CPSPLossConfig.mil_presence_weight"),
        (lambda: CPSPLossConfig(spsa_temperature=0), "CPSPLossConfig.spsa_temperature"),
        (lambda: CPSPLossConfig(vpsa_negatives=0), "CPSPLossConfig.vpsa_negatives"),
        (lambda: CPSPTrainConfig(supervision="semi"), "CPSPTrainConfig.supervision"),
        (lambda: CPSPTrainConfig(lr_milestones=(20, 10)), "CPSPTrainConfig.lr_milestones"),
        (lambda: CPSPTrainConfig(grad_clip_norm=0.0), "CPSPTrainConfig.grad_clip_norm"),
    ],
)
def test_config_errors_name_the_field(build, name):
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        build()


def test_config_defaults_and_round_trip():
    config = CPSPConfig()
    assert (config.model.psp_threshold, config.loss.avpsp_weight, config.loss.vpsa_margin) == (0.099, 100.0, 0.2)
    assert config.model.feature_dim == 256
    custom = CPSPConfig(model=small_model_config(category_head="segment"), train=CPSPTrainConfig(lr_milestones=(3, 5)))
    assert CPSPConfig.from_dict(custom.to_dict()) == custom
    with pytest.raises(ValueError, match="unknown field"):
        CPSPConfig.from_dict({"loss": {"lambda": 1}})


# --- PSP ----------------------------------------------------------------------------------------------


def test_propagation_weights_prune_and_renormalise():
    raw = torch.tensor([[[1.0, 3.0, 0.0], [2.0, 1.0, 1.0], [0.0, 0.0, 0.0]]])
    beta, gamma = propagation_weights(raw, threshold=0.3)
    assert torch.allclose(beta, torch.tensor([[[0.25, 0.75, 0.0], [0.5, 0.25, 0.25], [0.0, 0.0, 0.0]]]), atol=1e-6)
    # row 0 keeps only 0.75 (> 0.3), row 1 only 0.5; an all-zero row stays zero (no positive to propagate)
    assert torch.allclose(gamma, torch.tensor([[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]), atol=1e-6)
    _, keep_all = propagation_weights(raw, threshold=0.0)
    assert torch.allclose(keep_all, beta, atol=1e-6)
    _, equal = propagation_weights(torch.ones(1, 2, 2), threshold=0.5)  # β = 0.5 is not > 0.5: pruned
    assert torch.equal(equal, torch.zeros(1, 2, 2))


def test_affinity_is_scaled_relu_dot_product():
    q = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]]])
    k = torch.tensor([[[4.0, 0.0, 0.0, 0.0], [-1.0, 1.0, 0.0, 0.0]]])
    assert torch.allclose(affinity(q, k), torch.tensor([[[2.0, 0.0], [0.0, 1.0]]]))  # /√4, ReLU


def test_propagate_adds_weighted_positives_of_the_other_modality():
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    values = torch.tensor([[[10.0, 20.0], [30.0, 40.0]]])
    gamma = torch.tensor([[[0.0, 1.0], [0.5, 0.5]]])
    assert torch.allclose(propagate(x, gamma, values), torch.tensor([[[31.0, 40.0], [20.0, 31.0]]]))


def test_psp_module_with_identity_branches_matches_the_equations():
    psp = PositiveSamplePropagation(dim=2, threshold=0.4, dropout=0.0)
    with torch.no_grad():
        for layer in (psp.v_key, psp.v_query, psp.a_key, psp.a_value, psp.v_out, psp.a_out):
            layer.weight.copy_(torch.eye(2))
    v = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])
    a = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    out = psp(v, a)
    # raw = ReLU(v aᵀ/√2): rows [2, 0, 0], [0, 2, 0], [2, 1, 0] (/√2); β_va rows [1,0,0], [0,1,0], [2/3,1/3,0]
    expected_gamma_va = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]])  # 1/3 < 0.4 pruned
    # β_av = rownorm(rawᵀ): rows [2,0,2]/4, [0,2,1]/3, [0,0,0]
    expected_gamma_av = torch.tensor([[[0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])  # 1/3 pruned
    assert torch.allclose(out.gamma_va, expected_gamma_va, atol=1e-6)
    assert torch.allclose(out.gamma_av, expected_gamma_av, atol=1e-6)
    v_hat = v + expected_gamma_va @ a  # a² = ReLU(a) = a
    a_hat = a + expected_gamma_av @ v  # v¹ = ReLU(v) = v
    norm = torch.nn.functional.layer_norm
    assert torch.allclose(out.visual, norm(v_hat, (2,), psp.norm.weight, psp.norm.bias, 1e-6), atol=1e-5)
    assert torch.allclose(out.audio, norm(a_hat, (2,), psp.norm.weight, psp.norm.bias, 1e-6), atol=1e-5)
    assert torch.allclose(out.fused, (out.visual + out.audio) / 2)


# --- model --------------------------------------------------------------------------------------------


def test_model_shapes_for_vectors_and_spatial_maps():
    torch.manual_seed(0)
    for head, class_shape in (("video", (2, C)), ("segment", (2, T, C))):
        model = CPSPModel(small_model_config(category_head=head)).eval()
        for visual in (torch.randn(2, T, D), torch.randn(2, T, 3, 3, D)):
            out = model(visual, torch.randn(2, T, D))
            assert out.event_logits.shape == (2, T) and tuple(out.class_logits.shape) == class_shape
            assert out.fused.shape == (2, T, 16) and out.av_similarity.shape == (2, T)
            assert out.segment_class_logits().shape == (2, T, C)
            assert torch.all(out.av_similarity.abs() <= 1 + 1e-5)
    with pytest.raises(ValueError, match="visual must be"):
        model(torch.randn(2, T, D + 1), torch.randn(2, T, D))


def test_spatial_pooling_of_identical_cells_equals_the_vector_input():
    """Attention weights sum to 1, so a map whose cells are all equal pools to that vector; ``mean`` likewise."""
    torch.manual_seed(0)
    vectors, audio = torch.randn(2, T, D), torch.randn(2, T, D)
    maps = vectors[:, :, None, None, :].expand(2, T, 3, 3, D).contiguous()
    for spatial in ("attention", "mean"):
        model = CPSPModel(small_model_config(spatial=spatial)).eval()
        assert torch.allclose(model(maps, audio).fused, model(vectors, audio).fused, atol=1e-5)
    model = CPSPModel(small_model_config()).eval()
    alpha = model.attention.weights(torch.randn(4, 9, D), torch.randn(4, 16))
    assert torch.allclose(alpha.sum(-1), torch.ones(4)) and bool((alpha > 0).all())
    different = maps.clone()
    different[:, :, 0, 0] += 5.0
    assert not torch.allclose(model(different, audio).fused, model(maps, audio).fused, atol=1e-3)


def test_prediction_rule_background_unless_the_event_gate_opens():
    event = torch.tensor([[2.0, -2.0, 0.1, 0.0]])  # sigmoid: 0.88, 0.12, 0.52, 0.5
    video = CPSPOutput(event, torch.tensor([[0.1, 3.0, -1.0]]), *([torch.zeros(1)] * 6))
    assert predict_segments(video).tolist() == [[1, 3, 1, 3]]  # 0.5 is not > 0.5: background (3)
    assert predict_segments(video, event_threshold=0.8).tolist() == [[1, 3, 3, 3]]
    per_segment = torch.tensor([[[5.0, 0, 0], [5.0, 0, 0], [0, 0, 5.0], [0, 5.0, 0]]])
    segment = CPSPOutput(event, per_segment, *([torch.zeros(1)] * 6))
    assert predict_segments(segment).tolist() == [[0, 3, 2, 3]]


def test_label_helpers():
    seg = torch.tensor([[3, 1, 1, 0, 0], [3, 3, 3, 3, 3], [2, 0, 2, 0, 3]])
    assert video_class(seg, 3).tolist() == [0, -1, 0]  # ties -> lower class; no event -> -1
    assert video_labels_from_segments(seg.numpy(), 3).tolist() == [[1, 1, 0], [0, 0, 0], [1, 0, 1]]
    assert first_labelled_class(torch.tensor([[0.0, 1, 1], [0, 0, 0]])).tolist() == [1, -1]
    assert segment_accuracy([[0, 3], [1, 1]], [[0, 3], [1, 2]]) == 0.75
    data = CPSPData.from_one_hot(np.zeros((1, 2, D)), np.zeros((1, 2, D)), np.eye(4)[[[1, 3]]])
    assert data.segment_labels.tolist() == [[1, 3]] and data.video_labels.tolist() == [[0, 1, 0]]
    three = CPSPData(np.zeros((3, 2, D)), np.zeros((3, 2, D)), [[0, 1], [1, 2], [2, 3]], np.zeros((3, 3)))
    assert three.subset(np.array([True, False, True])).segment_labels.tolist() == [[0, 1], [2, 3]]
    assert three.subset([2, 0]).segment_labels.tolist() == [[2, 3], [0, 1]]
    assert three.video_background.tolist() == [False, False, True]  # derived: a segment of class C = 3
    assert three.subset([2, 0]).video_background.tolist() == [True, False]
    with pytest.raises(ValueError, match="segment_labels must lie in 0..3"):
        CPSPData(np.zeros((1, 2, D)), np.zeros((1, 2, D)), [[0, 4]], np.zeros((1, 3)))


# --- training -----------------------------------------------------------------------------------------


def fast_config(supervision: str = "full", epochs: int = 8, **model) -> CPSPConfig:
    return CPSPConfig(model=small_model_config(**model),
                      train=CPSPTrainConfig(supervision=supervision, epochs=epochs, batch_size=16, lr=0.01,
                                            lr_milestones=(), seed=0))


def test_fully_supervised_training_localizes_a_separable_toy_set(toy):
    train, val, test = toy
    seen = []
    result = train_cpsp(fast_config(), train, val, test, on_epoch=lambda e, loss, acc: seen.append((e, acc)))
    assert len(result.val_accuracy) == 8 and len(result.train_loss) == 8
    assert seen == list(enumerate(result.val_accuracy))
    assert result.best_epoch == int(np.argmax(result.val_accuracy))  # first maximum
    assert result.best_val_accuracy == max(result.val_accuracy) >= 0.95
    assert result.test_accuracy >= 0.95
    chance = float((test.segment_labels == C).float().mean())  # all-background prediction
    assert result.test_accuracy > chance + 0.3
    # the returned model is the selected one, and test accuracy is its accuracy
    assert evaluate(result.model, val) == pytest.approx(result.best_val_accuracy)
    assert evaluate(result.model, test) == pytest.approx(result.test_accuracy)
    first, last = result.train_loss[0], result.train_loss[-1]
    assert set(first) == {"loss", "event", "class", "avpsp", "spsa", "vpsa"} and last["loss"] < 0.2 * first["loss"]
    assert result.to_dict()["best_epoch"] == result.best_epoch


def test_segment_category_head_learns_two_classes_in_one_window():
    rng = np.random.default_rng(0)
    protos = rng.normal(size=(C, D)).astype(np.float32)

    def split(n: int) -> CPSPData:
        seg = np.full((n, T), C)
        seg[:, :4] = rng.integers(C, size=(n, 1))
        seg[:, 6:] = (seg[:, :1] + 1) % C  # a second class later in the same window
        x = 0.3 * rng.normal(size=(n, T, D)).astype(np.float32) + np.vstack([protos, np.zeros((1, D), np.float32)])[seg]
        return CPSPData(x, x.copy(), seg, video_labels_from_segments(seg, C))

    result = train_cpsp(fast_config(category_head="segment"), split(64), split(32), split(32))
    assert result.test_accuracy >= 0.95  # one category per window could reach at most 0.6 here


def test_selection_uses_validation_only_and_runs_repeat(toy):
    train, val, test = toy
    config = fast_config(epochs=3)
    with_test = train_cpsp(config, train, val, test)
    without_test = train_cpsp(config, train, val)
    assert with_test.val_accuracy == without_test.val_accuracy  # same seed: same run; test changes nothing
    assert with_test.best_epoch == without_test.best_epoch and without_test.test_accuracy is None
    params = dict(without_test.model.named_parameters())
    assert all(torch.equal(p, params[n]) for n, p in with_test.model.named_parameters())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weak_supervision_localises_nearly_as_well_as_full_supervision(toy, seed):
    """Same seeds, same budget, same network: only the labels differ (segments vs classes present)."""
    train, val, test = toy
    results = {}
    for supervision in ("full", "weak"):
        config = fast_config(supervision, category_head="segment", local_heads=True)
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
        results[supervision] = train_cpsp(config, train, val, test)
    assert results["full"].test_accuracy >= 0.95
    assert results["weak"].test_accuracy >= 0.85
    assert set(results["weak"].train_loss[0]) == {"loss", "foreground", "background", "pinned", "class_presence",
                                                   "background_presence", "vpsa"}
    always_background = float((test.segment_labels == C).float().mean())
    assert results["weak"].test_accuracy > always_background + 0.3


def test_weak_gate_finds_the_event_segments_it_never_saw(toy):
    """The training split's segment labels never reach the weak loss; its gate still ranks their events first."""
    train, val, _ = toy
    result = train_cpsp(fast_config("weak", category_head="segment", local_heads=True), train, val)
    with torch.no_grad():
        gate = torch.sigmoid(result.model(train.visual, train.audio).event_logits)
    is_event = (train.segment_labels < C).numpy().ravel()
    assert roc_auc(is_event, gate.numpy().ravel()) >= 0.9
    assert predict(result.model, train).shape == (len(train), T)


def test_training_refuses_mismatched_splits(toy):
    train, val, _ = toy
    with pytest.raises(ValueError, match="num_classes is 4"):
        train_cpsp(CPSPConfig(model=small_model_config(num_classes=4)), train, val)
    with pytest.raises(ValueError, match="val split is empty"):
        train_cpsp(fast_config(), train, val.subset([]))
