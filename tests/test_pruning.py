"""The shared N:M module: masks, checks and sparsity."""

import pytest
import torch

from repro.pruning import is_nm_sparse, nm_mask, sparsity


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (4, 8)])
def test_mask_keeps_exactly_n_largest_per_group(n, m):
    scores = torch.randn(6, 4 * m)
    mask = nm_mask(scores, n, m)
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    groups, kept = scores.reshape(6, -1, m), mask.reshape(6, -1, m)
    assert bool((kept.sum(-1) == n).all())
    smallest_kept = torch.where(kept, groups, torch.inf).amin(-1)
    largest_dropped = torch.where(kept, -torch.inf, groups).amax(-1)
    assert bool((smallest_kept >= largest_dropped).all())


def test_mask_with_ties_still_keeps_exactly_n():
    mask = nm_mask(torch.ones(3, 8), 2, 4)
    assert bool((mask.reshape(3, 2, 4).sum(-1) == 2).all())


def test_mask_runs_along_the_input_dimension():
    scores = torch.tensor([[9.0, 8.0, 0.0, 0.0], [0.0, 0.0, 7.0, 6.0]])
    assert nm_mask(scores, 2, 4).tolist() == [[True, True, False, False], [False, False, True, True]]


@pytest.mark.parametrize(
    "shape, n, m, message",
    [
        ((4, 8), 4, 4, "1 <= n < m"),
        ((4, 8), 0, 4, "1 <= n < m"),
        ((4, 6), 2, 4, "not divisible"),
        ((8,), 2, 4, "2-D"),
        ((2, 4, 8), 2, 4, "2-D"),
    ],
)
def test_mask_rejects_invalid_input(shape, n, m, message):
    with pytest.raises(ValueError, match=message):
        nm_mask(torch.randn(shape), n, m)


def test_is_nm_sparse_and_sparsity():
    w = torch.randn(4, 16)
    pruned = w * nm_mask(w.abs(), 2, 4)
    assert is_nm_sparse(pruned, 2, 4) and not is_nm_sparse(w, 2, 4)
    assert not is_nm_sparse(torch.zeros(4, 6), 2, 4)  # K not divisible by m
    assert sparsity(pruned) == pytest.approx(0.5)
    assert sparsity(torch.zeros(0)) == 0.0
