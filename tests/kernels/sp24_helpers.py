"""Shared helpers of the kernel tests: random 2:4 weights and the error measure."""

import torch

from repro.pruning import nm_mask

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def random_24(n: int, k: int, dtype=torch.float16, device=DEVICE, seed: int = 0) -> torch.Tensor:
    """A random weight pruned 2:4 along K by magnitude (uniformly random patterns)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    return (w * nm_mask(w.abs(), 2, 4)).to(dtype=dtype, device=device)


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    """max |y - ref| / max |ref| (NaN-propagating)."""
    y, ref = y.detach().double(), ref.detach().double()
    return float((y - ref).abs().max() / ref.abs().max())
