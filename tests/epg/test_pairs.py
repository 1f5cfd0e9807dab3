import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from epg.config import PairConfig
from epg.pairs import pair_labels, tpg_labels
from epg.samples import CandidateSet, Samples


def samples(v, a, stream, t, label=None) -> Samples:
    n = len(stream)
    return Samples(torch.tensor(v, dtype=torch.float32), torch.tensor(a, dtype=torch.float32),
                   torch.tensor(stream), torch.tensor(t), torch.tensor(label if label is not None else [-1] * n))


# Four clips, λ = 1 (plain Euclidean) so every distance is easy to check by hand:
# visual: |v0 v2| = 1, |v1 v3| = 3, all others > 10;  audio: |a1 a3| = 2, |a1 a2| = 10, |a0 a1| = 20, …
HAND = samples(
    v=[[0, 0], [10, 0], [0, 1], [10, 3]],
    a=[[0, 0], [20, 0], [30, 0], [20, 2]],
    stream=[0, 0, 1, 1],
    t=[0, 50, 0, 50],
)


def mined_sets(labels) -> list[set[int]]:
    return [set(int(j) for j in row if j >= 0) for row in labels.mined_index]


def label(config: PairConfig, anchors: Samples = HAND, candidates: list[Samples] | None = None, chunk: int = 3, epoch: int = 0):
    return pair_labels(anchors, CandidateSet(candidates or [anchors]), config, lam=1.0, epoch=epoch, chunk_size=chunk)


def test_tpg_hand_computed():
    anchors = samples(v=[[0.0]] * 4, a=[[0.0]] * 4, stream=[0, 0, 0, 1], t=[10, 11, 13, 10])
    candidates = CandidateSet([anchors])
    dense0 = tpg_labels(anchors, candidates, tau=0, lam=0.5).dense(candidates)
    assert torch.equal(dense0, torch.eye(4, dtype=torch.int8))
    dense1 = tpg_labels(anchors, candidates, tau=1, lam=0.5).dense(candidates)
    assert dense1.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


@pytest.mark.parametrize(
    "rule, extra, expected",
    [
        ("topk", {}, [{1, 2}, {3}, {0, 1}, {1}]),
        ("consensus", {}, [set(), {3}, set(), {1}]),
        # δ = D(v_i, a_i) = 0, 10, √901, √101; the test is strict (< δ).
        ("adaptive", {}, [set(), {3}, {0, 1, 3}, {1}]),
        ("adaptive", {"cap": 1}, [set(), {3}, {0}, {1}]),
        # 12 eligible ordered pairs; q = 0.15 → the 2nd smallest: visual 1, audio 2.
        ("quantile", {"quantile": 0.15}, [{2}, {3}, {0}, {1}]),
    ],
)
def test_mining_rules_hand_computed(rule, extra, expected):
    config = PairConfig(mining=rule, k=1, cap=extra.pop("cap", 8), exclusion_window=10, warmup_epochs=0, **extra)
    labels = label(config)
    assert labels.mining
    assert mined_sets(labels) == expected
    assert torch.allclose(labels.delta, torch.tensor([0.0, 10.0, math.sqrt(901), math.sqrt(101)]))


def test_exclusion_window_blocks_same_stream_neighbours():
    config = PairConfig(mining="topk", k=1, exclusion_window=60, warmup_epochs=0)
    # Same-stream candidates (all within 60 s here) are off limits: anchor 0 must look in stream 1,
    # where v2 is its visual and a3 (√404 < 30) its audio nearest neighbour.
    assert mined_sets(label(config)) == [{2, 3}, {3}, {0, 1}, {1}]


def test_cap_keeps_the_nearest_and_warmup_mines_nothing():
    config = PairConfig(mining="topk", k=2, cap=1, exclusion_window=10, warmup_epochs=1)
    assert mined_sets(label(config, epoch=1)) == [{2}, {3}, {0}, {1}]
    warm = label(config, epoch=0)
    assert not warm.mining and warm.mined_index.numel() == 0
    assert mined_sets(label(PairConfig(enabled=False, warmup_epochs=0))) == [set()] * 4


def test_bank_candidates_and_chunking():
    bank = samples(v=[[0, 1.5], [50, 50]], a=[[50, 50], [21, 0]], stream=[7, 7], t=[0, 1])
    config = PairConfig(mining="topk", k=1, exclusion_window=10, warmup_epochs=0)
    # Bank rows are candidates 4 and 5: v4 is nearer to v2 (0.5) than v0 is (1), a5 nearer to a1 (1) and
    # to a2 (9) than any batch audio.
    expected = [{1, 2}, {3, 5}, {4, 5}, {1}]
    for chunk in (1, 2, 100):
        assert mined_sets(label(config, candidates=[HAND, bank], chunk=chunk)) == expected


metadata = st.integers(1, 8).flatmap(
    lambda n: st.tuples(
        st.lists(st.lists(st.floats(-3, 3, width=32), min_size=3, max_size=3), min_size=n, max_size=n),
        st.lists(st.lists(st.floats(-3, 3, width=32), min_size=3, max_size=3), min_size=n, max_size=n),
        st.lists(st.integers(0, 2), min_size=n, max_size=n),
        st.lists(st.integers(0, 6), min_size=n, max_size=n),
    )
)


@settings(max_examples=40, deadline=None)
@given(metadata, st.sampled_from(["adaptive", "topk", "consensus", "quantile"]), st.integers(0, 2), st.integers(0, 3),
       st.integers(1, 3), st.sampled_from([None, 1, 2]), st.integers(1, 5))
def test_epg_contains_tpg(data, rule, tau, extra_window, k, cap, chunk):
    anchors = samples(*data)
    candidates = CandidateSet([anchors])
    config = PairConfig(mining=rule, tau=tau, exclusion_window=tau + extra_window, k=k, cap=cap, quantile=0.3,
                        warmup_epochs=0)
    epg = pair_labels(anchors, candidates, config, lam=0.5, epoch=0, chunk_size=chunk).dense(candidates)
    tpg = tpg_labels(anchors, candidates, tau, 0.5).dense(candidates)
    assert (epg[tpg == 1] == 1).all()  # every TPG pair stays an aligned positive
    assert ((epg == 1) == (tpg == 1)).all()
    mined = epg == 2
    same = anchors.stream[:, None] == anchors.stream[None, :]
    near = (anchors.t[:, None] - anchors.t[None, :]).abs() <= config.exclusion_window
    assert not (mined & same & near).any()  # never inside the exclusion window
    if cap is not None:
        assert (mined.sum(1) <= cap).all()
