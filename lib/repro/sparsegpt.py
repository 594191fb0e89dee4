"""SparseGPT (Frantar & Alistarh, 2023): one-shot pruning with optimal-brain-surgeon weight updates.

For a linear layer with calibration inputs X (tokens x in_features), pruning weight w_q of a row and
compensating the error on the not-yet-visited weights of that row minimises ||(W - W') X^T||^2. With
H = X^T X and its inverse's upper Cholesky factor U, visiting columns left to right:

    err   = (w_q - 0) / U[q, q]
    W[:, q:] -= err U[q, q:]

Which weights to prune is decided block by block (128 columns) from w^2 / U[q, q]^2, the OBS saliency;
for N:M patterns it is decided for each group of M columns when the sweep reaches it.
"""

from __future__ import annotations

import torch


def inverse_hessian_factor(hessian: torch.Tensor, percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """(upper Cholesky factor of the damped inverse Hessian, mask of dead input channels).

    float32, as in the reference implementation: the 1% damping keeps the factorisation stable, and
    float64 factorisations were several times slower with this machine's BLAS."""
    h = hessian.float().clone()
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
                    m: int = 0, blocksize: int = 128, percdamp: float = 0.01) -> torch.Tensor:
    """The pruned and updated weight (same shape and dtype). N:M when n and m are given, else
    unstructured at ``sparsity`` (chosen per block of columns)."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if (n or m) and not (0 < n < m and weight.shape[1] % m == 0 and blocksize % m == 0):
        raise ValueError(f"N:M needs 0 < n < m, in_features and blocksize divisible by m; got n={n}, m={m}")
    u, dead = inverse_hessian_factor(hessian, percdamp)
    w = weight.detach().float().clone()
    w[:, dead] = 0
    # The sweep is thousands of small tensor operations: one thread avoids the synchronisation cost
    # that dominates them with more (measured 2-3x faster on the book's 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _sweep(w, u, sparsity, n, m, blocksize)
    finally:
        torch.set_num_threads(threads)
    return w.to(weight.dtype)


def _sweep(w: torch.Tensor, u: torch.Tensor, sparsity: float, n: int, m: int, blocksize: int) -> None:
    """Prune ``w`` in place, left to right, with the OBS update of the not-yet-visited columns.

    The sweep runs on the transpose (one input column per contiguous row): each step's update is
    then a rank-1 update of contiguous memory, about twice as fast on CPU as on column slices."""
    wt = w.t().contiguous()
    cols = wt.shape[0]
    for start in range(0, cols, blocksize):
        stop = min(start + blocksize, cols)
        block = wt[start:stop].clone()
        u_block = u[start:stop, start:stop]
        diag = torch.diag(u_block).unsqueeze(1)
        errors = torch.zeros_like(block)
        if n:
            prune = torch.zeros_like(block)
        else:
            saliency = block ** 2 / diag ** 2
            k = int(saliency.numel() * sparsity)
            threshold = saliency.flatten().kthvalue(k).values if k > 0 else -1.0
            prune = (saliency <= threshold).to(block.dtype)
        for i in range(stop - start):
            if n and i % m == 0:
                saliency = block[i:i + m] ** 2 / diag[i:i + m] ** 2
                drop = saliency.topk(m - n, dim=0, largest=False).indices
                prune[i:i + m].scatter_(0, drop, 1.0)
            # err is the pruned part of the column over its OBS denominator; the update sets the
            # pruned entries to zero (up to rounding) and moves their contribution to later columns
            err = block[i] * prune[i] / u_block[i, i]
            block[i:].addr_(u_block[i, i:], err, alpha=-1.0)
            errors[i] = err
        wt[start:stop] = block * (1 - prune)  # exact zeros where pruned
        wt[stop:] -= u[start:stop, stop:].t() @ errors
    w.copy_(wt.t())
