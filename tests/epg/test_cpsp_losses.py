"""The three CPSP losses and the two objectives on small cases with values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from epg.cpsp import CPSPLossConfig, avpsp_loss, spsa_loss, vpsa_loss
from epg.cpsp.loss_mil import attention_pool, mil_loss
from epg.cpsp.loss_vpsa import video_features
from epg.cpsp.model import CPSPOutput
from epg.cpsp.train import fully_supervised_loss, weakly_supervised_loss

E = math.e


def near(x: torch.Tensor, value: float) -> bool:
    return abs(float(x.detach()) - value) < 1e-5


# --- L_avpsp ------------------------------------------------------------------------------------------


def test_avpsp_is_zero_when_similarity_matches_the_soft_label():
    assert near(avpsp_loss(torch.tensor([[1.0, 1.0, 0.0, -1.0]]), torch.tensor([[1, 1, 0, 0]])), 0.0)


def test_avpsp_known_values():
    # ŝ = [1, 0, 0, 0], y = [.5, .5, 0, 0]: (0.25 + 0.25) / 4
    assert near(avpsp_loss(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), torch.tensor([[1, 1, 0, 0]])), 0.125)
    # ŝ = [.25] * 4, y = [1, 0, 0, 0]: (0.75² + 3 · 0.25²) / 4
    assert near(avpsp_loss(torch.full((1, 4), 0.5), torch.tensor([[1, 0, 0, 0]])), 0.1875)


def test_avpsp_leaves_out_videos_without_events():
    sim = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.3, -0.2, 0.9, 0.1]])
    events = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
    assert near(avpsp_loss(sim, events), 0.125)
    background_only = torch.zeros(2, 4, requires_grad=True)
    loss = avpsp_loss(background_only, torch.zeros(2, 4))
    loss.backward()
    assert near(loss, 0.0) and torch.equal(background_only.grad, torch.zeros(2, 4))


# --- L_spsa -------------------------------------------------------------------------------------------


def test_spsa_known_values():
    f = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    events = torch.tensor([[1, 1, 0]])
    # anchor 0 and 1: P = e + e (itself and the other event), N = e^0 / 1
    assert near(spsa_loss(f, events, temperature=1.0), -math.log(2 * E / (2 * E + 1)))
    assert near(spsa_loss(f, events, temperature=0.5), -math.log(2 * E**2 / (2 * E**2 + 1)))
    assert near(spsa_loss(5.0 * f, events, temperature=1.0), -math.log(2 * E / (2 * E + 1)))  # unit length first


def test_spsa_averages_the_negatives():
    f = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    expected = -math.log(2 * E / (2 * E + (1 + math.exp(-1)) / 2))
    assert near(spsa_loss(f, torch.tensor([[1, 1, 0, 0]]), temperature=1.0), expected)


def test_spsa_over_videos():
    f = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]] * 3)
    events = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    # video 2 (all event: no negative) has loss 0; video 3 (no anchor) is left out
    assert near(spsa_loss(f, events, 1.0), -math.log(2 * E / (2 * E + 1)) / 2)
    assert near(spsa_loss(f[2:], events[2:], 1.0), 0.0)


def test_spsa_gradient_pulls_events_together():
    f = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], requires_grad=True)
    loss = spsa_loss(f, torch.tensor([[1, 1, 0]]), temperature=0.6)
    loss.backward()
    assert torch.isfinite(f.grad).all()
    with torch.no_grad():
        moved = f - 0.1 * f.grad
    assert float(spsa_loss(moved, torch.tensor([[1, 1, 0]]), 0.6)) < float(loss.detach())


# --- L_vpsa -------------------------------------------------------------------------------------------


def videos(*points: tuple[float, float]) -> torch.Tensor:
    """Videos of two identical segments at the given unit points."""
    return torch.tensor([[p, p] for p in points])


A1, A2, B1 = (1.0, 0.0), (0.6, 0.8), (0.0, 1.0)
D_A1A2, D_A1B1, D_A2B1 = math.sqrt(0.8), math.sqrt(2.0), math.sqrt(0.4)


def test_vpsa_video_feature_is_the_mean_of_unit_segments():
    assert torch.allclose(video_features(torch.tensor([[[2.0, 0.0], [0.0, 3.0]]])), torch.tensor([[0.5, 0.5]]))


def test_vpsa_known_values():
    fused, classes = videos(A1, A2, B1), torch.tensor([0, 0, 1])
    # A1: d+ = |A1A2|, d- = |A1B1| (only one negative): hinge 0.2 + 0.894 - 1.414 < 0
    # A2: d+ = |A1A2|, d- = |A2B1|: 0.2 + 0.894 - 0.632; B1: d+ = 0 (itself), d- = mean(1.414, 0.632): hinge < 0
    assert near(vpsa_loss(fused, classes, margin=0.2, negatives=3), (0.2 + D_A1A2 - D_A2B1) / 3)
    assert near(vpsa_loss(fused, classes, margin=0.2, negatives=1), (0.2 + D_A1A2 - D_A2B1) / 3)
    expected = ((1 + D_A1A2 - D_A1B1) + (1 + D_A1A2 - D_A2B1) + 0.0) / 3  # B1: 1 - (1.414 + 0.632)/2 < 0
    assert near(vpsa_loss(fused, classes, margin=1.0, negatives=3), expected)
    assert near(vpsa_loss(fused, classes, margin=1.0, negatives=1), ((1 + D_A1A2 - D_A1B1) + (1 + D_A1A2 - D_A2B1)
                                                                     + (1 - D_A2B1)) / 3)


def test_vpsa_skips_unlabelled_videos_and_single_class_batches():
    fused = videos(A1, A2, B1, (0.0, -1.0))
    assert near(vpsa_loss(fused, torch.tensor([0, 0, 1, -1]), 0.2, 3), (0.2 + D_A1A2 - D_A2B1) / 3)
    assert near(vpsa_loss(fused, torch.tensor([0, 0, 0, -1]), 0.2, 3), 0.0)
    x = videos(A1, A1).requires_grad_()
    loss = vpsa_loss(x, torch.tensor([0, 1]), 0.2, 3)  # identical videos of two classes: d = 0 -> hinge 0.2
    loss.backward()
    assert near(loss, 0.2) and torch.isfinite(x.grad).all()


# --- objectives -----------------------------------------------------------------------------------------


def make_output(event_logits, class_logits, fused, av_similarity) -> CPSPOutput:
    none = torch.zeros(1)
    return CPSPOutput(event_logits, class_logits, fused, none, none, av_similarity, none, none)


def test_fully_supervised_objective_adds_the_weighted_terms():
    fused = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]])
    segment_labels = torch.tensor([[0, 0, 2], [2, 1, 1]])  # C = 2 classes; 2 = background
    out = make_output(torch.tensor([[1.0, 2.0, -1.0], [0.0, 0.5, 0.5]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]),
                      fused, torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.4, 0.4]]))
    config = CPSPLossConfig(avpsp_weight=100.0, spsa_weight=0.5, spsa_temperature=1.0, vpsa_weight=2.0, vpsa_margin=0.2)
    terms = fully_supervised_loss(out, segment_labels, config)
    is_event = torch.tensor([[1.0, 1, 0], [0, 1, 1]])
    assert near(terms["event"], float(F.binary_cross_entropy_with_logits(out.event_logits, is_event)))
    assert near(terms["class"], float(F.cross_entropy(out.class_logits, torch.tensor([0, 1]))))
    assert near(terms["avpsp"], float(avpsp_loss(out.av_similarity, is_event)))
    assert near(terms["spsa"], float(spsa_loss(fused, is_event, 1.0)))
    assert near(terms["vpsa"], float(vpsa_loss(fused, torch.tensor([0, 1]), 0.2, 3)))
    total = terms["event"] + terms["class"] + 100 * terms["avpsp"] + 0.5 * terms["spsa"] + 2 * terms["vpsa"]
    assert near(terms["loss"], float(total))


def test_fully_supervised_segment_head_uses_event_segments_only():
    logits = torch.tensor([[[3.0, 0.0], [0.0, 0.0], [-5.0, 9.0]]])
    out = make_output(torch.zeros(1, 3), logits, torch.randn(1, 3, 4), torch.zeros(1, 3))
    terms = fully_supervised_loss(out, torch.tensor([[0, 1, 2]]), CPSPLossConfig())
    assert near(terms["class"], float(F.cross_entropy(logits[0, :2], torch.tensor([0, 1]))))


def test_mil_pools_class_probabilities_over_open_and_over_closed_segments():
    # gates sigmoid([0, ln 3]) = [0.5, 0.75]; class probabilities t0 [0.5, 0.5], t1 [0.75, 0.25]
    event = torch.tensor([[0.0, math.log(3)]])
    logits = torch.tensor([[[0.0, 0.0], [math.log(3), -math.log(3)]]])
    assert torch.allclose(attention_pool(torch.sigmoid(logits), torch.sigmoid(event)), torch.tensor([[0.65, 0.35]]))
    # foreground (0.5·[.5, .5] + 0.75·[.75, .25]) / 1.25 = [0.65, 0.35]
    # background (0.5·[.5, .5] + 0.25·[.75, .25]) / 0.75 = [7/12, 5/12]
    background = (7 / 12, 5 / 12)
    terms = mil_loss(event, logits, torch.tensor([[1.0, 0.0]]), torch.tensor([True]))
    assert near(terms["foreground"], -math.log(0.65))
    assert near(terms["background"], -(math.log(1 - background[0]) + math.log(1 - background[1])) / 2)
    assert near(terms["pinned"], 0.0)  # a window with an event and background pins no gate
    # presence: softmax t0 [.5, .5], t1 [.9, .1]; gated t0 [.25, .25], t1 [.675, .075]; max over t [.675, .25]
    assert near(terms["class_presence"], -(math.log(0.675) + math.log(0.75)) / 2)
    assert near(terms["background_presence"], -math.log(0.5))  # the most-closed segment: 1 - 0.5
    out = make_output(event, logits, torch.randn(1, 2, 4), torch.zeros(1, 2))
    weak = weakly_supervised_loss(out, torch.tensor([[1.0, 0.0]]), torch.tensor([True]),
                                  CPSPLossConfig(vpsa_weight=1.0, mil_presence_weight=0.5))
    assert set(weak) == {"loss", "foreground", "background", "pinned", "class_presence", "background_presence",
                         "vpsa"} and near(weak["vpsa"], 0.0)
    presence = terms["class_presence"] + terms["background_presence"]
    assert near(weak["loss"], float(terms["foreground"] + terms["background"] + 0.5 * presence))
    early = weakly_supervised_loss(out, torch.tensor([[1.0, 0.0]]), torch.tensor([True]),
                                   CPSPLossConfig(mil_presence_weight=0.5, mil_presence_from_epoch=3), epoch=2)
    assert near(early["loss"], float(terms["foreground"] + terms["background"]))  # presence joins at epoch 3


def test_mil_pins_the_gates_of_windows_whose_label_fixes_them():
    event = torch.tensor([[0.0, math.log(3)], [0.0, math.log(3)]])  # gates [0.5, 0.75] in both windows
    logits = torch.zeros(2, 2, 2)
    # window 0: a class and no background (every segment an event); window 1: no class (every segment background)
    terms = mil_loss(event, logits, torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([False, True]))
    all_open = -(math.log(0.5) + math.log(0.75)) / 2
    all_closed = -(math.log(0.5) + math.log(0.25)) / 2
    assert near(terms["pinned"], (all_open + all_closed) / 2)
    # the closed-segment term counts the window with background only: probabilities 0.5 -> BCE ln 2, halved
    assert near(terms["background"], math.log(2) / 2)


def test_mil_opens_the_gate_where_the_label_class_is_and_shuts_it_elsewhere():
    event = torch.zeros(1, 3, requires_grad=True)  # every gate half open
    logits = torch.tensor([[[4.0, -4.0], [-4.0, -4.0], [-4.0, 4.0]]])  # t0 says class 0, t1 nothing, t2 class 1
    terms = mil_loss(event, logits, torch.tensor([[1.0, 0.0]]), torch.tensor([True]))  # class 0 and background
    (terms["foreground"] + terms["background"]).backward()
    grad = event.grad[0]
    assert grad[0] < 0 and grad[1] > 0 and grad[2] > 0  # descent opens t0 and shuts t1 and t2


def test_mil_presence_lets_each_labelled_class_claim_the_segment_most_like_it():
    # a window labelled car and bus, both gates open; t0 leans to car, t1 to bus
    event = torch.full((1, 2), 4.0)
    logits = torch.tensor([[[0.2, 0.0], [0.0, 0.2]]], requires_grad=True)
    terms = mil_loss(event, logits, torch.tensor([[1.0, 1.0]]), torch.tensor([False]))
    terms["class_presence"].backward()
    grad = logits.grad[0]
    assert grad[0, 0] < 0 < grad[0, 1] and grad[1, 1] < 0 < grad[1, 0]  # descent sharpens t0 to car, t1 to bus
    # the attention mean of sigmoids asks both segments for both classes instead
    logits.grad = None
    mil_loss(event, logits, torch.tensor([[1.0, 1.0]]), torch.tensor([False]))["foreground"].backward()
    assert (logits.grad < 0).all()


def test_mil_needs_per_segment_categories():
    with pytest.raises(ValueError, match="per-segment category logits"):
        mil_loss(torch.zeros(1, 3), torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, dtype=torch.bool))


@pytest.mark.parametrize("loss", ["avpsp", "spsa", "vpsa"])
def test_losses_are_zero_with_nothing_to_compare(loss):
    x = torch.randn(2, 4, 3, requires_grad=True)
    value = {"avpsp": lambda: avpsp_loss(x[..., 0], torch.zeros(2, 4)),
             "spsa": lambda: spsa_loss(x, torch.zeros(2, 4)),
             "vpsa": lambda: vpsa_loss(x, torch.tensor([-1, -1]))}[loss]()
    value.backward()
    assert near(value, 0.0) and torch.equal(x.grad, torch.zeros_like(x))
