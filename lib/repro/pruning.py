"""N:M structured sparsity shared by the book's chapters.

N:M means: in every group of ``m`` consecutive weights along the *input* dimension (the last
dimension of an ``nn.Linear`` weight ``[out_features, in_features]``) at most ``n`` are non-zero.

- :func:`nm_mask` turns any score tensor (magnitude, E-Sparse's entropy metric, ...) into a mask.
- :func:`is_nm_sparse` / :func:`sparsity` inspect a weight.
- :func:`to_sparse24` swaps 2:4-pruned ``nn.Linear`` layers for :class:`repro.kernels.SparseLinear`.
"""

from __future__ import annotations

import torch
from torch import nn


def _check_nm(n: int, m: int) -> None:
    if not (isinstance(n, int) and isinstance(m, int)):
        raise ValueError(f"n and m must be integers, got n={n!r}, m={m!r}")
    if n < 1 or n >= m:
        raise ValueError(f"need 1 <= n < m for N:M sparsity, got n={n}, m={m}")


def _check_2d_divisible(t: torch.Tensor, m: int, name: str) -> None:
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D [out_features, in_features], got shape {tuple(t.shape)}")
    if t.shape[1] % m:
        raise ValueError(f"{name}'s last dimension {t.shape[1]} is not divisible by m={m}")


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Bool mask keeping the ``n`` largest scores in every group of ``m`` along the last dimension.

    Exactly ``n`` are kept per group even with ties (``topk`` breaks them), so the result is
    always a valid N:M pattern. ``scores`` is 2-D, weight-shaped ``[out, in]``; ``in % m == 0``.
    """
    _check_nm(n, m)
    _check_2d_divisible(scores, m, "scores")
    rows, cols = scores.shape
    grouped = scores.detach().reshape(rows, cols // m, m)
    if grouped.dtype in (torch.float16, torch.bfloat16):
        grouped = grouped.float()  # topk on half is not implemented on every device
    kept = grouped.topk(n, dim=-1).indices
    mask = torch.zeros(grouped.shape, dtype=torch.bool, device=scores.device)
    mask.scatter_(-1, kept, True)
    return mask.reshape(rows, cols)


def is_nm_sparse(weight: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of ``m`` consecutive weights along the last dimension has <= ``n`` non-zeros."""
    _check_nm(n, m)
    if weight.dim() != 2 or weight.shape[1] % m:
        return False
    nonzero = (weight.detach() != 0).reshape(weight.shape[0], -1, m).sum(-1)
    return bool((nonzero <= n).all())


def sparsity(weight: torch.Tensor) -> float:
    """Fraction of exactly-zero elements (0.0 for an empty tensor)."""
    if weight.numel() == 0:
        return 0.0
    return float((weight.detach() == 0).sum()) / weight.numel()


def to_sparse24(model: nn.Module, *, min_features: int = 0, layout: str = "planar") -> int:
    """Replace every ``nn.Linear`` whose weight is 2:4 sparse along its input dimension by
    :class:`repro.kernels.SparseLinear`, in place. Returns how many layers were swapped.

    Layers with ``min(in_features, out_features) < min_features`` (e.g. a tiny head where the
    compressed kernel cannot pay off) and dense layers are left alone. ``layout`` is the storage
    order of the compressed weights (see ``SparseLinear``): ``"planar"`` or ``"fragments"``.
    """
    from repro.kernels import SparseLinear  # lazy: keeps `import repro.pruning` cheap

    swaps = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is nn.Linear
        and min(child.in_features, child.out_features) >= min_features
        and is_nm_sparse(child.weight, 2, 4)
    ]
    for parent, name, child in swaps:
        setattr(parent, name, SparseLinear.from_linear(child, layout=layout))
    return len(swaps)
