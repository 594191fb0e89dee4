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
runs in float64 on CPU, where it takes about a third longer here (chapter 1: 33-41 s per pruned model
against 23-29 s) and a rerun with another BLAS gives the same masks, and in float32 on GPUs (as the
reference implementation does), where float64 is slow; ``working_dtype`` says which.
"""

from __future__ import annotations

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
                      n: int = 0, m: int = 0, blocksize: int = 128) -> torch.Tensor:
    """``sparsegpt_prune`` given ``inverse_hessian_factor``'s output, computed in the factor's dtype:
    linears that read the same input share one factor."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if (n or m) and not (0 < n < m and weight.shape[1] % m == 0 and blocksize % m == 0):
        raise ValueError(f"N:M needs 0 < n < m, in_features and blocksize divisible by m; got n={n}, m={m}")
    w = weight.detach().to(factor.dtype).clone()
    w[:, dead] = 0
    # The sweep is thousands of small tensor operations: one thread avoids the synchronisation cost
    # that dominates them with more (measured 2-3x faster on the book's 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _sweep(w, factor, sparsity, n, m, blocksize)
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
