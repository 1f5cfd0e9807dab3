import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from epg.config import LossConfig, PairConfig
from epg.loss_margin import multi_positive_margin_loss
from epg.pairs import PairLabels, pair_labels, tpg_labels
from epg.samples import CandidateSet, Samples


def two_clips(requires_grad: bool = False) -> Samples:
    # λ = 1: D(v1, a1) = 0, D(v2, a2) = 2, D(v1, a2) = √10, D(v2, a1) = √2.
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=requires_grad)
    a = torch.tensor([[1.0, 0.0], [0.0, 3.0]], requires_grad=requires_grad)
    return Samples(v, a, torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([-1, -1]))


def with_mined(labels: PairLabels, index: list[list[int]]) -> PairLabels:
    mined = torch.tensor(index)
    return PairLabels(labels.anchor_stream, labels.anchor_t, labels.tau, mined,
                      torch.where(mined >= 0, 0.0, float("inf")), labels.delta, labels.num_candidates, True)


def loss_of(anchors, labels, mined_weight=1.0, mined_as="positive", chunk=1, margin=2.0):
    config = LossConfig(kind="hadsell", negative_exclusion=0, lam=1.0, margin=margin)
    return multi_positive_margin_loss(anchors, CandidateSet([anchors]), labels, config, mined_weight, mined_as, chunk)


def test_hand_computed_tpg():
    anchors = two_clips()
    terms = loss_of(anchors, tpg_labels(anchors, CandidateSet([anchors]), 0, 1.0))
    # aligned: (0² + 2²) in each direction over 2 pairs → 2; negatives: (2 − √2)² in one direction
    # of each of the two off-diagonal pairs (the √10 ones are beyond the margin) → (2 − √2)²·2 / 4.
    assert (terms.num_aligned, terms.num_mined, terms.num_negative) == (2, 0, 2)
    assert math.isclose(float(terms.aligned), 2.0, rel_tol=1e-6)
    assert math.isclose(float(terms.negative), (2 - math.sqrt(2)) ** 2 / 2, rel_tol=1e-5)
    assert math.isclose(float(terms.loss), 5 - 2 * math.sqrt(2), rel_tol=1e-5)


def test_hand_computed_mined_pair():
    anchors = two_clips()
    labels = with_mined(tpg_labels(anchors, CandidateSet([anchors]), 0, 1.0), [[1], [-1]])  # (clip 1, clip 2) mined
    positive = loss_of(anchors, labels, mined_weight=0.5)
    # mined: D(v1, a2)² + D(a1, v2)² = 10 + 2 over 1 pair and 2 directions → 6, weighted by 0.5;
    # the one negative left, (2, 1): (2 − √2)² + 0 over 2 directions.
    assert math.isclose(float(positive.mined), 6.0, rel_tol=1e-5)
    assert math.isclose(float(positive.loss), 2 + 0.5 * 6 + (2 - math.sqrt(2)) ** 2 / 2, rel_tol=1e-5)
    ignored = loss_of(anchors, labels, mined_as="ignore")
    assert (ignored.num_mined, ignored.num_negative) == (1, 1)
    assert math.isclose(float(ignored.loss), 2 + (2 - math.sqrt(2)) ** 2 / 2, rel_tol=1e-5)


def test_bank_mining_only_gives_mined_positives_and_nothing_else():
    anchors = two_clips()
    # A bank of one stale copy of clip 1 (an aligned pair of clip 1 by (stream, t)) and the clip-2 sample.
    bank = Samples(anchors.v.detach().clone(), anchors.a.detach().clone() + 0.5, anchors.stream, anchors.t, anchors.label)
    candidates = CandidateSet([anchors, bank])
    # Anchor 0 mines bank row 1 (global index 3); anchor 1 mines nothing.
    labels = with_mined(tpg_labels(anchors, candidates, 0, 1.0), [[3], [-1]])
    config = LossConfig(kind="hadsell", negative_exclusion=0, lam=1.0, margin=2.0)
    full = multi_positive_margin_loss(anchors, candidates, labels, config, 1.0, "positive", 1)
    only = multi_positive_margin_loss(anchors, candidates, labels, config, 1.0, "positive", 1, bank_mining_only=True)
    batch = loss_of(anchors, tpg_labels(anchors, CandidateSet([anchors]), 0, 1.0))
    # Mining-only: aligned pairs and negatives are those of the batch alone; the mined bank row still counts.
    assert (full.num_aligned, full.num_mined, full.num_negative) == (4, 1, 3)
    assert (only.num_aligned, only.num_mined, only.num_negative) == (2, 1, 2)
    assert math.isclose(float(only.aligned), float(batch.aligned), rel_tol=1e-6)
    assert math.isclose(float(only.negative), float(batch.negative), rel_tol=1e-6)
    assert math.isclose(float(only.mined), float(full.mined), rel_tol=1e-6) and float(only.mined) > 0


def test_chunking_changes_neither_value_nor_gradient():
    generator = torch.Generator().manual_seed(0)
    n, d = 9, 5
    values = []
    for chunk in (1, 4, 100):
        v = torch.randn(n, d, generator=generator.manual_seed(1), requires_grad=True)
        a = torch.randn(n, d, generator=generator.manual_seed(2), requires_grad=True)
        anchors = Samples(v, a, torch.arange(n) % 3, torch.arange(n) // 3, torch.full((n,), -1))
        bank = Samples(torch.randn(7, d, generator=generator.manual_seed(3)), torch.randn(7, d, generator=generator.manual_seed(4)),
                       torch.zeros(7, dtype=torch.int64), torch.arange(7), torch.full((7,), -1))
        candidates = CandidateSet([anchors, bank])
        config = PairConfig(mining="topk", k=2, warmup_epochs=0, exclusion_window=1, mined_weight=0.7)
        labels = pair_labels(anchors, candidates, config, 0.5, epoch=0, chunk_size=chunk)
        terms = multi_positive_margin_loss(anchors, candidates, labels, LossConfig(kind="hadsell", negative_exclusion=0), 0.7, "positive", chunk)
        terms.loss.backward()
        values.append((terms.loss.detach(), v.grad, a.grad))
    for loss, gv, ga in values[1:]:
        torch.testing.assert_close(loss, values[0][0])
        torch.testing.assert_close(gv, values[0][1])
        torch.testing.assert_close(ga, values[0][2])


embeddings = st.integers(1, 6).flatmap(
    lambda n: st.tuples(
        st.lists(st.lists(st.floats(-5, 5, width=32), min_size=3, max_size=3), min_size=2 * n, max_size=2 * n),
        st.lists(st.integers(0, 3), min_size=n, max_size=n),
    )
)


@settings(max_examples=40, deadline=None)
@given(embeddings, st.floats(0, 1), st.floats(0.1, 3), st.sampled_from(["positive", "ignore"]))
def test_loss_is_non_negative(data, lam, margin, mined_as):
    rows, stream = data
    n = len(stream)
    x = torch.tensor(rows)
    anchors = Samples(x[:n], x[n:], torch.tensor(stream), torch.zeros(n, dtype=torch.int64), torch.full((n,), -1))
    candidates = CandidateSet([anchors])
    labels = pair_labels(anchors, candidates, PairConfig(mining="topk", k=1, warmup_epochs=0), lam, 0, 2)
    terms = multi_positive_margin_loss(anchors, candidates, labels, LossConfig(kind="hadsell", negative_exclusion=0, lam=lam, margin=margin), 1.0, mined_as, 2)
    assert float(terms.loss) >= 0 and math.isfinite(float(terms.loss))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 2), st.floats(0, 1), st.floats(0.05, 1.0))
def test_perfect_embedding_has_zero_loss(clips, crops, lam, margin):
    """v_i = a_i, identical for the crops of one clip, and one orthogonal direction per clip (D ≥ 1 ≥ m)."""
    index = torch.arange(clips).repeat_interleave(crops)
    x = 10.0 * torch.eye(8)[index]
    anchors = Samples(x.clone().requires_grad_(), x.clone(), index, torch.zeros_like(index), torch.full_like(index, -1))
    candidates = CandidateSet([anchors])
    labels = tpg_labels(anchors, candidates, 0, lam)
    terms = multi_positive_margin_loss(anchors, candidates, labels, LossConfig(kind="hadsell", negative_exclusion=0, lam=lam, margin=margin), 1.0, "positive", 3)
    assert terms.num_aligned == clips * crops * crops
    assert float(terms.loss.detach()) == pytest.approx(0.0, abs=1e-4)
