"""E-Sparse (Li et al., 2023): an entropy-enhanced N:M pruning metric and two channel shuffles.

The paper's abstract fixes the ingredients; its exact formulas are not public, so each unknown is an
option here (see the chapter for the choice and the evidence):

- channel entropy: a histogram of each input channel's calibration activations, ``bins`` equal-width
  bins between the channel's min and max, natural log;
- how entropy meets Wanda's |W| * ||X||: ``"scaled"`` |W| ||X|| (1 + alpha H / log bins),
  ``"product"`` |W| ||X|| H, or ``"sum"`` |W| (||X|| / mean ||X|| + alpha H / log bins);
- global naive shuffle: rank input channels by their total score and deal them round-robin into the
  N:M groups, so that no group collects several of the most important channels;
- local block shuffle: inside blocks of a few groups, greedily swap channels between groups while the
  score kept by the N:M mask grows.

A shuffle permutes the input channels of a layer, x -> x[perm] and W -> W[:, perm], which leaves the
layer's output unchanged; only the grouping that the N:M mask sees changes.
"""

from __future__ import annotations

import math

import torch

COMBINATIONS = ("scaled", "product", "sum")


def channel_entropy(x: torch.Tensor, bins: int = 64) -> torch.Tensor:
    """Entropy (nats) of each column of x (tokens x channels) over ``bins`` equal-width bins.

    A constant channel has entropy 0; values spread evenly over the bins give log(bins).
    """
    if x.ndim != 2:
        raise ValueError(f"expected activations of shape (tokens, channels), got {tuple(x.shape)}")
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    x = x.float()
    lo, hi = x.min(0).values, x.max(0).values
    width = (hi - lo).clamp_min(torch.finfo(torch.float32).tiny)
    index = ((x - lo) / width * bins).long().clamp_(0, bins - 1)
    channels = x.shape[1]
    counts = torch.zeros(channels * bins, dtype=torch.float32, device=x.device)
    flat = (index + torch.arange(channels, device=x.device) * bins).flatten()
    counts.index_add_(0, flat, torch.ones_like(flat, dtype=torch.float32))
    p = counts.view(channels, bins) / x.shape[0]
    return -(p * torch.log(p.clamp_min(1e-30))).sum(1)


def esparse_scores(weight: torch.Tensor, act_norm: torch.Tensor, entropy: torch.Tensor, *,
                   combine: str = "scaled", alpha: float = 1.0, bins: int = 64) -> torch.Tensor:
    """Importance of each weight: Wanda's |W_ij| ||X_j|| enhanced by channel entropy H_j."""
    if combine not in COMBINATIONS:
        raise ValueError(f"combine must be one of {COMBINATIONS}, got {combine!r}")
    magnitude = weight.detach().abs().float()
    h = entropy.float() / math.log(bins)  # normalised to [0, 1]
    norm = act_norm.float()
    if combine == "scaled":
        channel = norm * (1 + alpha * h)
    elif combine == "product":
        channel = norm * entropy.float()
    else:
        channel = norm / norm.mean().clamp_min(1e-12) + alpha * h
    return magnitude * channel.unsqueeze(0)


def global_naive_shuffle(scores: torch.Tensor, m: int) -> torch.Tensor:
    """Permutation of input channels dealing them, from most to least important, round-robin over the
    in_features / m groups: group g receives the channels ranked g, g + G, g + 2G, ..."""
    cols = scores.shape[1]
    if cols % m:
        raise ValueError(f"in_features {cols} is not divisible by m={m}")
    groups = cols // m
    ranked = scores.sum(0).argsort(descending=True)
    # slot s of group g holds rank g + s * groups; position in the new order is g * m + s
    return ranked.view(m, groups).t().reshape(-1)


def retained(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Score kept by the best N:M mask, per group: scores (..., rows, groups * m) -> (..., groups)."""
    grouped = scores.reshape(*scores.shape[:-1], -1, m)
    return grouped.topk(n, dim=-1).values.sum(-1).sum(-2)


def swap_gains(block_scores: torch.Tensor, swap_a: torch.Tensor, swap_b: torch.Tensor, n: int,
               m: int) -> torch.Tensor:
    """Change of the retained N:M score when channels ``swap_a[i]`` and ``swap_b[i]`` (positions in
    different groups of a block) trade places: blocks x rows x width -> blocks x swaps, summed over rows.

    Only the two groups involved change, and each in closed form: a group that loses channel a keeps
    the top-n of the other m - 1, whose sum is S_{n+1} - s_a if s_a is among its top n values (else
    S_n), and whose n-th largest value t is v_{n+1} (else v_n); the incoming score x then adds
    max(0, x - t). One top-(n+1) per group replaces a top-n over every candidate block."""
    blocks, rows, width = block_scores.shape
    top = block_scores.view(blocks, rows, width // m, m).topk(n + 1, dim=-1).values
    kept = top[..., :n].sum(-1)                                                 # S_n per group
    group = torch.arange(width, device=block_scores.device) // m
    v_n, v_next = top[..., n - 1][..., group], top[..., n][..., group]          # per channel's group
    in_top = block_scores >= v_n
    kept_without = torch.where(in_top, kept[..., group] + v_next - block_scores, kept[..., group])
    threshold = torch.where(in_top, v_next, v_n)
    score_a, score_b = block_scores[..., swap_a], block_scores[..., swap_b]
    new_a = kept_without[..., swap_a] + (score_b - threshold[..., swap_a]).clamp_min(0)
    new_b = kept_without[..., swap_b] + (score_a - threshold[..., swap_b]).clamp_min(0)
    before = kept[..., group[swap_a]] + kept[..., group[swap_b]]
    return (new_a + new_b - before).sum(1)


def local_block_shuffle(scores: torch.Tensor, perm: torch.Tensor, n: int, m: int, block_groups: int = 2,
                        passes: int = 2, max_rows: int | None = 256) -> torch.Tensor:
    """Improve a permutation by channel swaps between the groups of each block of ``block_groups``
    groups, accepting in every block the best swap that raises the retained N:M score. Each pass visits
    every block once (vectorised over blocks); blocks are offset by one group on odd passes so that
    channels can travel further. The gain of a swap is summed over at most ``max_rows`` evenly spaced
    output rows (all rows when None): a cheap estimate that keeps the search fast on wide layers."""
    perm = perm.clone()
    if max_rows is not None and scores.shape[0] > max_rows:
        step = -(-scores.shape[0] // max_rows)
        scores = scores[::step]
    cols = perm.numel()
    width = block_groups * m
    pairs = [(a, b) for a in range(width) for b in range(a + 1, width) if a // m != b // m]
    swap_a = torch.tensor([a for a, _ in pairs], device=perm.device)
    swap_b = torch.tensor([b for _, b in pairs], device=perm.device)
    for p in range(passes):
        offset = (p % 2) * m if block_groups > 1 else 0
        usable = (cols - offset) // width * width
        if usable == 0:
            continue
        idx = perm[offset:offset + usable].view(-1, width)                      # blocks x width
        block_scores = scores[:, idx].permute(1, 0, 2)                            # blocks x rows x width
        base = retained(block_scores, n, m).sum(-1)                               # blocks
        best_gain, best = swap_gains(block_scores, swap_a, swap_b, n, m).max(1)   # blocks
        improve = best_gain > 1e-9 * base.abs().clamp_min(1e-30)
        swapped = idx.clone()
        rows = torch.arange(len(idx), device=idx.device)
        swapped[rows, swap_a[best]], swapped[rows, swap_b[best]] = idx[rows, swap_b[best]], idx[rows, swap_a[best]]
        perm[offset:offset + usable] = torch.where(improve[:, None], swapped, idx).reshape(-1)
    return perm


def retained_fraction(scores: torch.Tensor, perm: torch.Tensor | None, n: int, m: int) -> float:
    """Share of the total score that the N:M mask keeps after permuting the input channels
    (``perm`` None: in their own order)."""
    permuted = scores if perm is None else scores[:, perm]
    return float(retained(permuted, n, m).sum() / scores.sum())
