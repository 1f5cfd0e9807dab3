"""The multi-positive InfoNCE loss (epg.loss_infonce): hand-computed cases, masks, chunking, bounds."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from epg.config import LossConfig
from epg.loss_infonce import multi_positive_infonce_loss
from epg.loss_margin import multi_positive_margin_loss
from epg.pairs import PairLabels, tpg_labels
from epg.samples import CandidateSet, Samples
from epg.temperature import MIN_TEMPERATURE, LearnedTemperature


def two_clips(streams=(0, 1), times=(0, 0), requires_grad: bool = False) -> Samples:
    # Normalised: v1 = a1 = (1, 0), v2 = a2 = (0, 1) (a2 = (0, 3) before normalising): cos 1 on the
    # diagonal, 0 off it.
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=requires_grad)
    a = torch.tensor([[1.0, 0.0], [0.0, 3.0]], requires_grad=requires_grad)
    return Samples(v, a, torch.tensor(streams), torch.tensor(times), torch.tensor([-1, -1]))


def with_mined(labels: PairLabels, index: list[list[int]]) -> PairLabels:
    mined = torch.tensor(index)
    return PairLabels(labels.anchor_stream, labels.anchor_t, labels.tau, mined,
                      torch.where(mined >= 0, 0.0, float("inf")), labels.delta, labels.num_candidates, True)


def loss_of(anchors, labels, candidates=None, mined_weight=1.0, mined_as="positive", chunk=1, **config):
    config = LossConfig(kind="infonce", temperature=config.pop("temperature", 1.0),
                        negative_exclusion=config.pop("negative_exclusion", 0), **config)
    return multi_positive_infonce_loss(anchors, candidates or CandidateSet([anchors]), labels, config, mined_weight,
                                       mined_as, chunk, bank_mining_only=False)


LSE = math.log(math.e + 1.0)  # log(e^1 + e^0): one positive at cos 1, one negative at cos 0, T = 1


def test_hand_computed_tpg():
    anchors = two_clips()
    terms = loss_of(anchors, tpg_labels(anchors, CandidateSet([anchors]), 0, 0.0))
    assert (terms.num_aligned, terms.num_mined, terms.num_negative) == (2, 0, 2)
    assert math.isclose(float(terms.loss), LSE - 1.0, rel_tol=1e-6)  # = log(1 + 1/e), both directions alike
    assert math.isclose(float(terms.aligned), float(terms.negative), rel_tol=1e-6)
    # The temperature scales the logits: at T = 0.5 the same pairs give log(e² + 1) − 2.
    half = loss_of(anchors, tpg_labels(anchors, CandidateSet([anchors]), 0, 0.0), temperature=0.5)
    assert math.isclose(float(half.loss), math.log(math.e ** 2 + 1) - 2, rel_tol=1e-6)


def test_a_learned_temperature_gives_the_fixed_loss_and_its_hand_computed_gradient():
    anchors = two_clips()
    labels = tpg_labels(anchors, CandidateSet([anchors]), 0, 0.0)
    learned = LearnedTemperature(0.5)
    config = LossConfig(kind="infonce", temperature=0.5, negative_exclusion=0, learn_temperature=True)
    terms = multi_positive_infonce_loss(anchors, CandidateSet([anchors]), labels, config, 1.0, "positive", 1,
                                        temperature=learned())
    assert math.isclose(float(terms.loss.detach()), math.log(math.e ** 2 + 1) - 2, rel_tol=1e-6)
    terms.loss.backward()
    # L(T) = log(e^(1/T) + 1) − 1/T, so dL/d(log T) = T · dL/dT = 1 / (T (e^(1/T) + 1)): at T = 0.5, 2 / (e² + 1)
    # (> 0: with every positive already nearest, a lower temperature lowers the loss).
    assert math.isclose(float(learned.log_temperature.grad), 2 / (math.e ** 2 + 1), rel_tol=1e-5)


def test_a_learned_temperature_stays_within_its_bounds():
    learned = LearnedTemperature(0.1)
    with torch.no_grad():
        learned.log_temperature.fill_(math.log(1e-4))
    assert float(learned().detach()) == pytest.approx(MIN_TEMPERATURE)
    with pytest.raises(ValueError, match="temperature: initial value 2.0"):
        LearnedTemperature(2.0)


def test_hand_computed_mined_pair_weighted_or_ignored():
    anchors = two_clips()
    labels = with_mined(tpg_labels(anchors, CandidateSet([anchors]), 0, 0.0), [[1], [-1]])  # anchor 1 mines clip 2
    weighted = loss_of(anchors, labels, mined_weight=0.5)
    # Anchor 1: positives a1 (w 1, logit 1) and a2 (w 0.5, logit 0), no negative; anchor 2: as in TPG.
    first = (1.0 * (LSE - 1.0) + 0.5 * (LSE - 0.0)) / 1.5
    assert math.isclose(float(weighted.loss), (first + LSE - 1.0) / 2, rel_tol=1e-6)
    ignored = loss_of(anchors, labels, mined_as="ignore")
    # Ignored: anchor 1 keeps only its aligned pair (ℓ = 0); anchor 2 unchanged.
    assert math.isclose(float(ignored.loss), (0.0 + LSE - 1.0) / 2, rel_tol=1e-6)


def test_near_in_time_candidates_leave_the_negatives_of_both_losses():
    anchors = two_clips(streams=(0, 0), times=(0, 2))  # one stream, two seconds apart
    labels = tpg_labels(anchors, CandidateSet([anchors]), 0, 0.0)
    assert loss_of(anchors, labels).num_negative == 2
    kept = loss_of(anchors, labels, negative_exclusion=2)
    assert kept.num_negative == 0 and math.isclose(float(kept.loss), 0.0, abs_tol=1e-6)
    assert loss_of(anchors, labels, negative_exclusion=1).num_negative == 2  # 2 s apart: outside ±1 s
    margin = LossConfig(kind="hadsell", lam=1.0, margin=2.0, negative_exclusion=2)
    terms = multi_positive_margin_loss(anchors, CandidateSet([anchors]), labels, margin, 1.0, "positive", 1)
    assert terms.num_negative == 0 and float(terms.negative) == 0.0


def test_bank_mining_only_adds_mined_positives_and_nothing_else():
    anchors = two_clips()
    bank = Samples(anchors.v.detach().clone(), anchors.a.detach().clone(), anchors.stream, anchors.t, anchors.label)
    candidates = CandidateSet([anchors, bank])
    labels = with_mined(tpg_labels(anchors, candidates, 0, 0.0), [[3], [-1]])  # anchor 1 mines bank row 1
    config = LossConfig(kind="infonce", temperature=1.0, negative_exclusion=0)
    only = multi_positive_infonce_loss(anchors, candidates, labels, config, 1.0, "positive", 1, bank_mining_only=True)
    assert (only.num_aligned, only.num_mined, only.num_negative) == (2, 1, 2)
    # Anchor 1: a1 (aligned, logit 1), bank a2 (mined, logit 0), batch a2 (negative, logit 0).
    lse = math.log(math.e + 2.0)
    first = ((lse - 1.0) + (lse - 0.0)) / 2
    assert math.isclose(float(only.loss), (first + LSE - 1.0) / 2, rel_tol=1e-6)


def test_chunking_changes_neither_value_nor_gradient():
    torch.manual_seed(0)
    n = 6
    v = torch.randn(n, 4, requires_grad=True)
    a = torch.randn(n, 4, requires_grad=True)
    anchors = Samples(v, a, torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 0, 3, 3, 1, 1]), torch.full((n,), -1))
    labels = with_mined(tpg_labels(anchors, CandidateSet([anchors]), 0, 0.0), [[2, -1], [-1, -1], [4, 5], [-1, -1], [-1, -1], [0, -1]])
    results = []
    for chunk in (1, 4, 100):
        v.grad = a.grad = None
        terms = loss_of(anchors, labels, chunk=chunk, mined_weight=0.7, temperature=0.2)
        terms.loss.backward()
        results.append((float(terms.loss.detach()), v.grad.clone(), a.grad.clone()))
    for value, gv, ga in results[1:]:
        assert math.isclose(value, results[0][0], rel_tol=1e-5)
        torch.testing.assert_close(gv, results[0][1], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(ga, results[0][2], rtol=1e-4, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6), st.integers(0, 10_000), st.floats(0.05, 2.0))
def test_loss_is_non_negative(n, seed, temperature):
    g = torch.Generator().manual_seed(seed)
    anchors = Samples(torch.randn(n, 3, generator=g), torch.randn(n, 3, generator=g),
                      torch.randint(0, 3, (n,), generator=g), torch.randint(0, 3, (n,), generator=g), torch.full((n,), -1))
    terms = loss_of(anchors, tpg_labels(anchors, CandidateSet([anchors]), 0, 0.0), temperature=temperature)
    assert float(terms.loss) >= -1e-6 and math.isfinite(float(terms.loss))
