import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from epg.distance import distance, pairwise_distance


def test_hand_computed():
    x, y = torch.tensor([3.0, 4.0]), torch.tensor([4.0, 3.0])
    # ‖x − y‖ = √2, cos = 24/25.
    assert math.isclose(float(distance(x, y, 0.5)), 0.5 * math.sqrt(2) + 0.5 * (1 - 24 / 25), rel_tol=1e-6)
    assert math.isclose(float(distance(x, y, 1.0)), math.sqrt(2), rel_tol=1e-6)
    assert math.isclose(float(distance(x, y, 0.0)), 1 - 24 / 25, rel_tol=1e-5)
    opposite = distance(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0]), 0.3)
    assert math.isclose(float(opposite), 0.3 * 2 + 0.7 * 2, rel_tol=1e-6)
    matrix = pairwise_distance(torch.stack([x, -x]), torch.stack([y, x]), 0.5)
    expected = torch.tensor([[0.5 * math.sqrt(2) + 0.02, 0.0], [0.5 * math.sqrt(98) + 0.5 * (1 + 24 / 25), 0.5 * 10 + 1.0]])
    torch.testing.assert_close(matrix, expected, atol=1e-5, rtol=1e-5)


def test_gradient_is_finite_at_zero_distance():
    x = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    (distance(x, x.detach()).sum() + pairwise_distance(x, x.detach()).sum()).backward()
    assert torch.isfinite(x.grad).all()
    zero = torch.zeros(1, 3, requires_grad=True)
    pairwise_distance(zero, torch.zeros(1, 3)).sum().backward()
    assert torch.isfinite(zero.grad).all()


# Non-zero vectors: the cosine of a zero vector is undefined (taken as 0, see epg.distance).
vectors = st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=4, max_size=4).filter(
    lambda row: sum(value * value for value in row) > 1e-6
)


@settings(max_examples=50, deadline=None)
@given(st.lists(vectors, min_size=1, max_size=5), st.floats(0, 1))
def test_properties(rows, lam):
    x = torch.tensor(rows)
    torch.testing.assert_close(distance(x, x, lam), torch.zeros(len(rows)), atol=1e-5, rtol=0)
    matrix = pairwise_distance(x, x, lam)
    assert (matrix >= 0).all()
    scale = 1 + float(x.norm(dim=1).max())
    # The matrix form expands ‖x − y‖², so it is exact only up to √(ε·‖x‖²).
    torch.testing.assert_close(matrix.diagonal(), torch.zeros(len(rows)), atol=2e-3 * scale, rtol=0)
    # Symmetric to the same precision: x @ xᵀ is not bit-symmetric, and near-equal rows lose digits in √.
    torch.testing.assert_close(matrix, matrix.T, atol=2e-3 * scale, rtol=0)
    y = x.flip(0)
    torch.testing.assert_close(pairwise_distance(x, y, lam).diagonal(), distance(x, y, lam), atol=2e-3 * scale, rtol=1e-4)
