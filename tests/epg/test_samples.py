"""Samples and pooling a clip's crops (epg.samples)."""

import torch

from epg.samples import Samples, pool_clips


def test_pooling_gives_one_row_per_clip_with_the_mean_embedding_and_gradient():
    v = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 4.0], [5.0, 5.0], [2.0, 2.0]], requires_grad=True)
    a = torch.tensor([[1.0, 1.0], [1.0, 3.0], [2.0, 0.0], [0.0, 0.0], [4.0, 4.0]], requires_grad=True)
    # clips: (stream 1, t 5) has rows 0 and 3; (0, 9) rows 1 and 4; (0, 2) row 2 alone (its partner is elsewhere)
    samples = Samples(v, a, torch.tensor([1, 0, 0, 1, 0]), torch.tensor([5, 9, 2, 5, 9]), torch.tensor([3, 2, -1, 3, 2]))
    pooled = pool_clips(samples)
    assert pooled.stream.tolist() == [0, 0, 1] and pooled.t.tolist() == [2, 9, 5]
    torch.testing.assert_close(pooled.v, torch.tensor([[0.0, 4.0], [2.5, 2.0], [3.0, 2.5]]))
    torch.testing.assert_close(pooled.a, torch.tensor([[2.0, 0.0], [2.5, 3.5], [0.5, 0.5]]))
    assert pooled.label.tolist() == [-1, 2, 3]
    pooled.v.sum().backward()
    torch.testing.assert_close(v.grad, torch.tensor([[0.5, 0.5], [0.5, 0.5], [1.0, 1.0], [0.5, 0.5], [0.5, 0.5]]))
