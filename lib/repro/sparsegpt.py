"""SparseGPT (Frantar & Alistarh, 2023): one-shot pruning with optimal-brain-surgeon weight updates.

For a linear layer with calibration inputs X (tokens x in_features), pruning weight w_q of a row and
compensating the error on the not-yet-visited weights of that row minimises ||(W - W') X^T||^2. With
H = X^T X and its inverse's upper Cholesky factor U, visiting columns left to right:

    err   = (w_q - 0) / U[q, q]
    W[:, q:] -= err U[q, q:]

Which weights to prune is decided block by block (128 columns) from w^2 / U[q, q]^2, the OBS saliency;
for N:M patterns it is decided for each group of M columns when the sweep reaches it.

Precision: with fewer calibration tokens than input channels (the book's CPU profiles), H is
rank-deficient and held together by the damping, and rounding decides near-ties. On SmolLM2-135M,
Hessians computed in float32 instead of float64 (relative difference ~1e-7) flip the 2:4 choice of
about 0.01% of a layer's weights; over 30 layers, where each layer's calibration inputs come from the
pruned layers before it, that moved the 2:4 perplexity between 198 and 226. The computation therefore
runs in float64 on CPU, where it takes 20-35% longer here (26-32 s per pruned SmolLM2-135M against
22-24 s in float32, 2 cores, 8x128 calibration tokens) and a rerun with another BLAS gives the same
masks, and in float32 on GPUs (as the reference implementation does), where float64 is slow;
``working_dtype`` says which.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


def working_dtype(device: torch.device | str) -> torch.dtype:
    """The precision of the factor and the sweep: float64 on CPU, float32 elsewhere (module docstring)."""
    return torch.float64 if torch.device(device).type == "cpu" else torch.float32


def hessian_of(x: torch.Tensor) -> torch.Tensor:
    """H = X^T X of calibration inputs X (tokens x in_features), in the working precision."""
    x = x.reshape(-1, x.shape[-1]).to(working_dtype(x.device))
    return x.t() @ x


def inverse_hessian_factor(hessian: torch.Tensor, percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """(upper Cholesky factor of the damped inverse Hessian, mask of dead input channels), in the
    Hessian's floating-point dtype."""
    h = hessian.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    damp = percdamp * torch.diag(h).mean()
    h += damp * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    # With J the index reversal, J H J = L L^T gives H = R R^T for the upper-triangular R = J L J,
    # so H^-1 = (R^-1)^T R^-1: R^-1 is already the upper Cholesky factor of H^-1. One factorisation
    # and one triangular solve, instead of forming H^-1 and factorising it again.
    r = torch.linalg.cholesky(h.flip(0, 1)).flip(0, 1)
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    return torch.linalg.solve_triangular(r, eye, upper=True), dead


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, *, sparsity: float = 0.5, n: int = 0,
                    m: int = 0, blocksize: int = 128, percdamp: float = 0.01,
                    dtype: torch.dtype | None = None) -> torch.Tensor:
    """The pruned and updated weight (same shape and dtype). N:M when n and m are given, else
    unstructured at ``sparsity`` (chosen per block of columns). ``dtype``: the precision of the
    computation, by default ``working_dtype`` of the weight's device."""
    dtype = dtype or working_dtype(weight.device)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    factor, dead = inverse_hessian_factor(hessian.to(dtype), percdamp)
    return prune_with_factor(weight, factor, dead, sparsity=sparsity, n=n, m=m, blocksize=blocksize)


def prune_with_factor(weight: torch.Tensor, factor: torch.Tensor, dead: torch.Tensor, *, sparsity: float = 0.5,
                      n: int = 0, m: int = 0, blocksize: int = 128,
                      row_groups: list[int] | None = None) -> torch.Tensor:
    """``sparsegpt_prune`` given ``inverse_hessian_factor``'s output, computed in the factor's dtype:
    linears that read the same input share one factor, and can share one sweep with their weights
    stacked row-wise. ``row_groups`` (row counts summing to ``out_features``) are then the stacked
    linears: unstructured pruning picks each one's weights among its own rows, as separate runs
    would. N:M choices are per row anyway."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if (n or m) and not (0 < n < m and weight.shape[1] % m == 0 and blocksize % m == 0):
        raise ValueError(f"N:M needs 0 < n < m, in_features and blocksize divisible by m; got n={n}, m={m}")
    row_groups = list(row_groups or [weight.shape[0]])
    if sum(row_groups) != weight.shape[0] or min(row_groups) < 1:
        raise ValueError(f"row_groups must be positive row counts summing to {weight.shape[0]}, got {row_groups}")
    w = weight.detach().to(factor.dtype).clone()
    w[:, dead] = 0
    _sweep(w, factor, sparsity, n, m, blocksize, row_groups)
    return w.to(weight.dtype)


@contextmanager
def _threads(count: int):
    """Run the enclosed torch operations on ``count`` threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _unstructured_choice(block: torch.Tensor, diag: torch.Tensor, sparsity: float,
                         row_groups: list[int]) -> torch.Tensor:
    """1 where a weight of the block is pruned: in each row group, the ``sparsity`` share of its
    entries with the lowest saliency."""
    saliency = block ** 2 / diag ** 2
    prune = torch.zeros_like(block)
    for rows, part in zip(saliency.split(row_groups, dim=1), prune.split(row_groups, dim=1)):
        k = int(rows.numel() * sparsity)
        if k > 0:
            part.copy_(rows <= rows.flatten().kthvalue(k).values)
    return prune


def _sweep(w: torch.Tensor, u: torch.Tensor, sparsity: float, n: int, m: int, blocksize: int,
           row_groups: list[int]) -> None:
    """Prune ``w`` in place, left to right, with the OBS update of the not-yet-visited columns.

    The sweep runs on the transpose (one input column per contiguous row). Within a block, the
    columns go in sub-blocks of about 16: a column's error updates only the rest of its sub-block
    (rank-1), and each finished sub-block updates the rest of the block in one matrix product.
    That is the same arithmetic in another order (the results agree to rounding), and a column's
    step touches 16 rows instead of the whole rest of the block; the block-level step is the
    reference implementation's.

    Threads: the column loop is thousands of small operations, which one thread runs faster than
    several (their synchronisation dominates: 2-3x on the book's 2-core machine); the update of
    the later columns after each block is one large matrix product, most of the arithmetic, and
    gets the caller's threads."""
    wt = w.t().contiguous()
    cols = wt.shape[0]
    sub = m * max(1, 16 // m) if n else 16  # N:M choices are made at group starts: whole groups
    for start in range(0, cols, blocksize):
        stop = min(start + blocksize, cols)
        block = wt[start:stop].clone()
        u_block = u[start:stop, start:stop]
        diag = torch.diag(u_block).unsqueeze(1)
        errors = torch.empty_like(block)
        if n:
            prune = torch.zeros_like(block)
        else:
            prune = _unstructured_choice(block, diag, sparsity, row_groups)
        with _threads(1):
            _sweep_block(block, u_block, diag, prune, errors, n, m, sub)
        wt[start:stop] = block * (1 - prune)  # exact zeros where pruned
        wt[stop:].addmm_(u[start:stop, stop:].t(), errors, alpha=-1.0)
    w.copy_(wt.t())


def _sweep_block(block: torch.Tensor, u_block: torch.Tensor, diag: torch.Tensor, prune: torch.Tensor,
                 errors: torch.Tensor, n: int, m: int, sub: int) -> None:
    """The column loop of one block: fills ``errors`` (and ``prune`` for N:M), updating ``block``."""
    size = block.shape[0]
    for first in range(0, size, sub):
        last = min(first + sub, size)
        for i in range(first, last):
            if n and i % m == 0:  # N:M: decided for each group when the sweep reaches it
                saliency = block[i:i + m] ** 2 / diag[i:i + m] ** 2
                drop = saliency.topk(m - n, dim=0, largest=False).indices
                prune[i:i + m].scatter_(0, drop, 1.0)
            # err is the pruned part of the column over its OBS denominator; it moves the pruned
            # weights' contribution onto the later columns (the caller masks the column itself:
            # its kept entries have err = 0 and would not change)
            torch.mul(block[i], prune[i], out=errors[i]).div_(diag[i])
            if i + 1 < last:
                block[i + 1:last].addr_(u_block[i, i + 1:last], errors[i], alpha=-1.0)
        if last < size:
            block[last:].addmm_(u_block[first:last, last:].t(), errors[first:last], alpha=-1.0)
