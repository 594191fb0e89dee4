"""Shared helpers of the kernel tests: random 2:4 weights, the error measure, and a model of one
warp-wide ``mma.sp.m16n8k32`` with the ``spmma`` kernel's addressing around it (no GPU needed)."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from repro.kernels import compress_24
from repro.kernels.fragments import SpmmaConfig, WgmmaConfig, to_fragments
from repro.pruning import nm_mask

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def random_24(n: int, k: int, dtype=torch.float16, device=DEVICE, seed: int = 0) -> torch.Tensor:
    """A random weight pruned 2:4 along K by magnitude (uniformly random patterns)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    return (w * nm_mask(w.abs(), 2, 4)).to(dtype=dtype, device=device)


# (M, N, K, config): decode and prefill token counts, tails in M (not a multiple of 8), N (not of
# 16) and K (not of 32), uneven K slices, several row tiles and token tiles per program
SPMMA_CASES = [
    (1, 64, 256, SpmmaConfig(R=1, S=4, U=4, T=1)),
    (8, 64, 256, SpmmaConfig(R=2, S=2, U=2, T=1)),
    (13, 70, 200, SpmmaConfig(R=1, S=4, U=4, T=2)),  # M, N, K tails
    (16, 96, 1000, SpmmaConfig(R=2, S=8, U=2, T=2)),  # K = 31.25 k-blocks over 8 slices
    (40, 130, 512, SpmmaConfig(R=4, S=2, U=1, T=4)),  # two token blocks
    (130, 64, 4096, SpmmaConfig(R=2, S=4, U=1, T=8)),
    (1, 64, 4096, SpmmaConfig(R=1, S=4, U=4, T=1, prefetch=True)),  # loads one step ahead
    (11, 96, 1000, SpmmaConfig(R=1, S=8, U=2, T=2, prefetch=True)),
    (5, 64, 736, SpmmaConfig(R=1, S=4, U=2, T=1, prefetch=True)),  # 3 steps: odd, last slice short
    (13, 70, 200, SpmmaConfig(R=1, S=4, U=2, T=2, W=2)),  # two row tiles per warp, N tail
    (40, 130, 512, SpmmaConfig(R=2, S=2, U=1, T=4, W=4)),  # 9 row tiles in programs of 8
    # x in 16-byte loads, transposed by shuffles: with and without prefetch, the 16-byte loads
    # where the strides allow them (K % 16 == 0), a K tail within the last k-block (1008, 200)
    (1, 64, 4096, SpmmaConfig(R=1, S=4, U=4, T=1, prefetch=True, wide_x=True)),
    (16, 96, 1008, SpmmaConfig(R=2, S=8, U=2, T=2, wide_x=True)),
    (13, 70, 200, SpmmaConfig(R=1, S=4, U=4, T=2, wide_x=True)),
    (40, 130, 512, SpmmaConfig(R=2, S=2, U=1, T=4, W=2, wide_x=True)),
    # K dealt to the warps in turns: whole turns (4096), a short last turn (736: 23 k-blocks in
    # turns of 8), and turns with prefetch, wide x loads and two row tiles
    (1, 64, 4096, SpmmaConfig(R=1, S=4, U=4, T=1, interleave=True)),
    (5, 64, 736, SpmmaConfig(R=1, S=4, U=2, T=1, prefetch=True, interleave=True)),
    (13, 70, 1000, SpmmaConfig(R=1, S=8, U=2, T=2, W=2, prefetch=True, wide_x=True, interleave=True)),
    # L2 prefetches ahead of the loads: addresses clamped inside the weight (the emulator checks),
    # with a row tile tail (N = 70: 5 tiles in programs of 2) and an uneven last slice
    (5, 70, 736, SpmmaConfig(R=2, S=4, U=2, T=1, l2_ahead=2)),
    (1, 64, 4096, SpmmaConfig(R=1, S=4, U=4, T=1, prefetch=True, wide_x=True, interleave=True, l2_ahead=2)),
    (13, 70, 1000, SpmmaConfig(R=1, S=2, U=4, T=2, W=2, prefetch=True, l2_ahead=1)),
    # fewer token tiles than the tokens need: several token programs per row tile
    (16, 64, 512, SpmmaConfig(R=1, S=2, U=4, T=1, prefetch=True)),
    (29, 70, 736, SpmmaConfig(R=1, S=2, U=2, T=1, W=2, prefetch=True, wide_x=True)),
    # K split across programs: even runs, uneven runs (32 k-blocks in 3), an empty last split
    # (7 k-blocks in 8 runs of 1), and with the other options
    (1, 64, 4096, SpmmaConfig(R=1, S=4, U=4, T=1, split_k=4)),
    (13, 70, 1000, SpmmaConfig(R=1, S=2, U=2, T=2, W=2, prefetch=True, wide_x=True, split_k=3)),
    (3, 64, 200, SpmmaConfig(R=1, S=1, U=1, T=1, split_k=8)),
    (5, 64, 736, SpmmaConfig(R=1, S=4, U=2, T=1, prefetch=True, interleave=True, split_k=2)),
    (40, 130, 512, SpmmaConfig(R=2, S=2, U=1, T=4, W=2, l2_ahead=1, split_k=4)),
    # operands staged through shared memory by cp.async: whole slices, tails in M, N and K (the
    # masked k-blocks' metadata replaced), two stages (wait for all), interleave, split-K
    (1, 64, 4096, SpmmaConfig(R=1, S=4, U=4, T=1, wide_x=True, stages=4)),
    (13, 70, 1000, SpmmaConfig(R=1, S=2, U=2, T=2, W=2, stages=3)),
    (5, 64, 736, SpmmaConfig(R=1, S=4, U=2, T=1, interleave=True, stages=2)),
    (40, 130, 512, SpmmaConfig(R=1, S=2, U=1, T=4, W=4, wide_x=True, stages=3, split_k=2)),
    # staged x shared by R row warps, each copying a part: token tiles dealt out (R <= T), then
    # k-blocks (T = 1), with tails in M, N and K and 4-byte x words
    (13, 70, 1000, SpmmaConfig(R=2, S=1, U=2, T=2, wide_x=True, stages=3)),
    (40, 130, 512, SpmmaConfig(R=4, S=2, U=1, T=4, W=2, wide_x=True, stages=4, split_k=2)),
    (5, 64, 736, SpmmaConfig(R=4, S=1, U=4, T=1, stages=3)),
    # a step's MMAs chained into one accumulator, each k-block loaded on its own: with prefetch
    # and tails, with interleave (a short last turn) and L2 prefetches, with split-K and x pairs
    (13, 70, 1000, SpmmaConfig(R=1, S=2, U=4, T=2, W=2, prefetch=True, wide_x=True, chain=True)),
    (5, 64, 736, SpmmaConfig(R=1, S=4, U=2, T=1, interleave=True, l2_ahead=1, chain=True)),
    (40, 130, 512, SpmmaConfig(R=2, S=2, U=2, T=4, split_k=2, chain=True)),
    # sixteen warps splitting K (512 threads, 16 partial sums to add): 43 k-blocks in slices of 3,
    # the last slice empty, with tails in M and N
    (13, 96, 1376, SpmmaConfig(R=1, S=16, U=4, T=2, W=2, wide_x=True, chain=True)),
]


# (M, N, K, config) for the ``wgmma`` kernel: tails in M (not a multiple of T), N (not of 64) and
# K (not of 32), an odd and an even count of steps after the first (the loop runs two at a time),
# one k-block per step (x rows of 64 bytes: a narrower swizzle), two warpgroups, several token
# groups, and split-K with even, uneven and empty runs
WGMMA_CASES = [
    (1, 64, 256, WgmmaConfig(G=1, T=8, U=2)),  # an 8-token MMA for one token
    (5, 70, 736, WgmmaConfig(G=2, T=8, U=4, split_k=2)),
    (16, 64, 256, WgmmaConfig(G=1, T=16, U=2)),
    (13, 70, 200, WgmmaConfig(G=1, T=16, U=2)),
    (5, 64, 736, WgmmaConfig(G=1, T=16, U=1)),  # 23 steps
    (29, 64, 736, WgmmaConfig(G=1, T=32, U=2)),  # 12 steps, the last one short
    (40, 130, 512, WgmmaConfig(G=2, T=32, U=2)),
    (64, 64, 4096, WgmmaConfig(G=1, T=64, U=4)),
    (100, 96, 1000, WgmmaConfig(G=1, T=128, U=2)),
    (200, 64, 256, WgmmaConfig(G=1, T=64, U=2)),  # four token groups
    (13, 70, 1000, WgmmaConfig(G=1, T=16, U=2, split_k=3)),
    (3, 64, 200, WgmmaConfig(G=1, T=16, U=1, split_k=8)),  # 7 k-blocks in 8 runs: one empty
    (40, 130, 512, WgmmaConfig(G=2, T=32, U=2, split_k=2)),
    # loads two or three steps ahead: odd and even step counts, a short last step, split-K runs
    # shorter than the distance
    (29, 64, 736, WgmmaConfig(G=1, T=32, U=2, ahead=2)),
    (13, 70, 1000, WgmmaConfig(G=1, T=16, U=1, ahead=2, split_k=3)),
    (100, 96, 1000, WgmmaConfig(G=2, T=64, U=2, ahead=3)),
    (3, 64, 200, WgmmaConfig(G=1, T=8, U=1, ahead=2, split_k=8)),
    # every operand through a cp.async ring: three to five stages, tokens and rows past the ends
    # (masked x and weight copies), two warpgroups, split-K with uneven and empty runs (every copy
    # of the last masked)
    (29, 64, 736, WgmmaConfig(G=1, T=32, U=2, stages=3)),
    (13, 70, 1000, WgmmaConfig(G=1, T=16, U=1, stages=4, split_k=3)),
    (100, 96, 1000, WgmmaConfig(G=2, T=64, U=2, stages=4)),
    (3, 64, 200, WgmmaConfig(G=1, T=8, U=1, stages=5, split_k=8)),
    # x resident in shared memory, staged a chunk of steps at a time: several chunks with a short
    # last one, an odd step count, split-K with uneven and empty runs, one chunk, two-step chunks,
    # a run of just the two steps before the loops
    (29, 64, 736, WgmmaConfig(G=1, T=32, U=2, stages=3, x_steps=4)),
    (13, 70, 1000, WgmmaConfig(G=1, T=16, U=1, stages=4, x_steps=8, split_k=3)),
    (100, 96, 1000, WgmmaConfig(G=2, T=64, U=2, stages=4, x_steps=16)),
    (3, 64, 200, WgmmaConfig(G=1, T=8, U=1, stages=5, x_steps=2, split_k=8)),
    (5, 64, 256, WgmmaConfig(G=1, T=8, U=4, stages=3, x_steps=2)),
]


# the sparse form (wgmma.sp on the compressed words, every operand through a ring refilled
# stages - 2 steps ahead): few steps, K and rows past a block (a short last step, masked rows),
# two warpgroups, 128 tokens, U = 4 (x's step in two 64-column blocks), split-K with uneven and
# empty runs, a ring deeper than the run, a long K, two MMA tiles per warpgroup
WGMMA_SPARSE_CASES = [
    (16, 64, 256, WgmmaConfig(G=1, T=16, U=2, stages=3, sparse=True)),
    (13, 70, 200, WgmmaConfig(G=1, T=16, U=1, stages=4, sparse=True)),
    (29, 64, 736, WgmmaConfig(G=1, T=32, U=2, stages=5, sparse=True)),
    (40, 130, 512, WgmmaConfig(G=2, T=32, U=2, stages=4, sparse=True)),
    (100, 96, 1000, WgmmaConfig(G=1, T=128, U=2, stages=4, sparse=True)),
    (200, 64, 256, WgmmaConfig(G=1, T=64, U=4, stages=3, sparse=True)),
    (13, 70, 1000, WgmmaConfig(G=1, T=16, U=1, stages=4, split_k=3, sparse=True)),
    (3, 64, 200, WgmmaConfig(G=1, T=16, U=1, stages=6, split_k=8, sparse=True)),
    (64, 64, 4096, WgmmaConfig(G=1, T=64, U=2, stages=6, sparse=True)),
    # the MMA's widest N: 256 tokens, the second token tile short
    (300, 130, 512, WgmmaConfig(G=2, T=256, U=2, stages=4, split_k=2, sparse=True)),
    # two MMA tiles per warpgroup (programs of 128 or 256 rows): rows past the end in the second
    # tile, x's ring after the value words' (T < 32GW), split-K
    (40, 200, 736, WgmmaConfig(G=1, W=2, T=32, U=2, stages=4, sparse=True)),
    (100, 300, 1000, WgmmaConfig(G=2, W=2, T=64, U=2, stages=4, split_k=2, sparse=True)),
    # x resident (staged once per chunk, no fence per step): two chunks with a short last one,
    # split-K uneven and with empty runs, two tiles per warpgroup, x's buffer as large as the
    # value words' ring (the allocator's order among equals)
    (29, 64, 736, WgmmaConfig(G=1, T=32, U=2, stages=3, x_steps=8, sparse=True)),
    (13, 70, 1000, WgmmaConfig(G=1, T=16, U=1, stages=4, x_steps=16, split_k=3, sparse=True)),
    (100, 300, 1000, WgmmaConfig(G=2, W=2, T=64, U=2, stages=4, x_steps=16, split_k=2, sparse=True)),
    (3, 64, 200, WgmmaConfig(G=1, T=16, U=1, stages=4, x_steps=8, split_k=8, sparse=True)),
]

# a tile's K splits as one cluster, meeting in its shared memory: uneven runs, empty ones (8 splits
# of 7 k-blocks), rows and tokens past the end, two tiles per warpgroup, x resident (apart from the
# others: bench/gpu_check.sh tests them first, in their own process, and leaves them out if they fail)
WGMMA_CLUSTER_CASES = [
    (13, 70, 1000, WgmmaConfig(G=1, T=16, U=1, stages=4, split_k=2, sparse=True, cluster=True)),
    (3, 64, 200, WgmmaConfig(G=1, T=16, U=1, stages=6, split_k=8, sparse=True, cluster=True)),
    (100, 300, 1000, WgmmaConfig(G=2, T=128, U=2, stages=4, split_k=4, sparse=True, cluster=True)),
    (100, 300, 1000, WgmmaConfig(G=2, W=2, T=64, U=2, stages=4, split_k=2, sparse=True, cluster=True)),
    (29, 64, 736, WgmmaConfig(G=1, T=32, U=2, stages=3, x_steps=8, split_k=4, sparse=True, cluster=True)),
]


# x shared by the row tiles of a cluster (TMA multicast), pairs: an odd count of row tiles (a last
# program past the weight), tokens past the end, K past a step (a short last step) and past 64
# columns of it, a ring deeper than the loop, U = 4 (two boxes a step), two warpgroups, two MMA
# tiles per warpgroup, split-K with uneven and empty runs (apart from the others, as the cluster meet)
WGMMA_SHARED_X_CASES = [
    (13, 70, 200, WgmmaConfig(G=1, T=16, U=2, stages=3, sparse=True, share=2)),
    (29, 130, 736, WgmmaConfig(G=1, T=32, U=2, stages=4, sparse=True, share=2)),
    (16, 128, 128, WgmmaConfig(G=1, T=16, U=2, stages=8, sparse=True, share=2)),
    (100, 130, 1000, WgmmaConfig(G=2, T=64, U=4, stages=3, split_k=3, sparse=True, share=2)),
    (40, 200, 736, WgmmaConfig(G=1, W=2, T=32, U=2, stages=4, sparse=True, share=2)),
    (3, 64, 200, WgmmaConfig(G=1, T=16, U=2, stages=6, split_k=8, sparse=True, share=2)),
    # two warpgroups read each slot, and each releases it for itself: the refill waits for both
    (40, 256, 1024, WgmmaConfig(G=2, T=32, U=2, stages=3, sparse=True, share=2)),
    # clusters of four: three programs past the weight, then two warpgroups with split-K and U = 4
    (40, 320, 1024, WgmmaConfig(G=1, T=32, U=2, stages=3, sparse=True, share=4)),
    (100, 256, 1000, WgmmaConfig(G=2, T=64, U=4, stages=3, split_k=2, sparse=True, share=4)),
    # the large-M tilings: 128-token tiles, several along the tokens (the last short), each its own clusters
    (300, 256, 512, WgmmaConfig(G=2, T=128, U=4, stages=4, sparse=True, share=2)),
    (200, 640, 256, WgmmaConfig(G=2, T=128, U=2, stages=4, sparse=True, share=4)),
    (300, 384, 512, WgmmaConfig(G=2, T=256, U=2, stages=4, sparse=True, share=2)),
    # the K splits of the tiles sharing x in the same cluster, meeting there: pairs of tiles with two
    # splits (one uneven, an odd row-tile count), pairs with four, fours with two
    (100, 130, 1000, WgmmaConfig(G=1, T=64, U=2, stages=3, split_k=2, sparse=True, cluster=True, share=2)),
    (29, 256, 2048, WgmmaConfig(G=1, T=32, U=2, stages=4, split_k=4, sparse=True, cluster=True, share=2)),
    (64, 320, 1024, WgmmaConfig(G=2, T=64, U=4, stages=3, split_k=2, sparse=True, cluster=True, share=4)),
]


def wgmma_case_ids(cases=None) -> list[str]:
    return [f"{m}x{n}x{k}-{cfg.label()}" for m, n, k, cfg in (WGMMA_CASES if cases is None else cases)]


def assert_wgmma_bits_of(m, n, k, cfg, apart, dtype, device=DEVICE):
    """``cfg`` writes every output element, right to the tolerance, and with the very bits of the
    tiling ``apart`` (the same adds in the same order); ``cfg`` runs last."""
    same, _ = run_wgmma_case(m, n, k, apart, dtype, with_bias=(m % 2 == 1), seed=m + n, device=device)
    out, ref = run_wgmma_case(m, n, k, cfg, dtype, with_bias=(m % 2 == 1), seed=m + n, device=device)
    assert not out.isnan().any(), "some output elements were never written"
    assert rel_err(out, ref) < (5e-3 if dtype == torch.float16 else 2e-2)
    assert torch.equal(out, same)


def run_wgmma_case(m, n, k, cfg, dtype, with_bias, meta_order=None, seed=0, device=DEVICE):
    """``launch_wgmma`` on random inputs into a NaN-poisoned output: (out, fp64 reference)."""
    from repro.kernels.gluon_wgmma import launch_wgmma

    return _run_fragment_case(launch_wgmma, m, n, k, cfg, dtype, with_bias, meta_order, seed, device)


def spmma_case_ids() -> list[str]:
    return [f"{m}x{n}x{k}-{cfg.label()}" for m, n, k, cfg in SPMMA_CASES]


def run_spmma_case(m, n, k, cfg, dtype, with_bias, meta_order=None, seed=0, device=DEVICE):
    """``launch_spmma`` on random inputs into a NaN-poisoned output: (out, fp64 reference)."""
    from repro.kernels.gluon_sp24 import launch_spmma

    return _run_fragment_case(launch_spmma, m, n, k, cfg, dtype, with_bias, meta_order, seed, device)


def _run_fragment_case(launch, m, n, k, cfg, dtype, with_bias, meta_order, seed, device):
    w = random_24(n, k, dtype=dtype, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(m, k, generator=g).to(dtype=dtype, device=device)
    bias = torch.randn(n, generator=g).to(dtype=dtype, device=device) if with_bias else None
    out = torch.full((m, n), float("nan"), dtype=dtype, device=device)  # poisoned
    launch(x, to_fragments(compress_24(w), meta_order), bias, out, cfg)
    ref = x.double() @ w.double().T + (bias.double() if with_bias else 0)
    return out, ref


def first_token_counts(configs, token_counts) -> list[tuple[int, object]]:
    """Every configuration ``configs(m)`` gives for the benchmark's token counts, each once, with
    the smallest count that times it."""
    first = {}
    for m in token_counts:
        for cfg in configs(m):
            first.setdefault(cfg, m)
    return [(m, cfg) for cfg, m in first.items()]


def assert_correct_and_conflict_free(out, ref, traffic) -> None:
    """An emulated run wrote every output, close to the fp64 reference, and each shared-memory
    access took no more passes of the banks than its bytes need (``ptx_emulator.SharedTraffic``)."""
    assert not out.isnan().any(), "some output elements were never written"
    assert rel_err(out, ref) < 5e-3
    conflicts = {text: passes for text, passes in traffic.passes.items() if passes[0] > passes[1]}
    assert not conflicts, f"bank conflicts ([passes, conflict-free passes]): {conflicts}"


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    """max |y - ref| / max |ref| (NaN-propagating)."""
    y, ref = y.detach().double(), ref.detach().double()
    return float((y - ref).abs().max() / ref.abs().max())


def _lanes():
    lane = torch.arange(32)
    return lane, lane // 4, lane % 4


def metadata_bits(row: int, group: int, reading: str = "pairs") -> tuple[int, int]:
    """(lane, bit shift) of the 4-bit code of one (row, group) of an m16n8k32 A tile.

    ``"pairs"`` is the PTX ISA's figure: lane ``4g + h`` (g = row % 8) holds groups ``4h..4h+3`` of
    rows g (low half-word) and g + 8 (high). ``"rows"`` models hardware that read the figure the
    other way (lane ``4g`` all of row g, lane ``4g + 1`` all of row g + 8), so that tests can check
    that a wrong reading is noticed and named."""
    if reading == "pairs":
        return 4 * (row % 8) + group // 4, 16 * (row // 8) + 4 * (group % 4)
    return 4 * (row % 8) + row // 8, 4 * group


def ptx_mma_sp(a_regs, b_regs, e_words, c, meta_reading="pairs"):
    """One ``mma.sp.m16n8k32`` (selector 0) from per-lane registers, as the PTX ISA defines it.

    a_regs [32, 4, 2] and b_regs [32, 4, 2] hold two 16-bit elements per register, e_words [32]
    the metadata words, c [32, 4] the accumulators. Returns d [32, 4] = A @ B + C per lane.
    """
    lane, g, q = _lanes()
    a = torch.zeros(16, 32, dtype=torch.float64)
    for row in range(16):
        for group in range(8):
            src = 4 * (row % 8) + group % 4  # the lane holding these two values
            reg = row // 8 + 2 * (group // 4)
            meta_lane, shift = metadata_bits(row, group, meta_reading)  # lanes q = 0, 1 give metadata
            code = (int(e_words[meta_lane]) & 0xFFFFFFFF) >> shift & 0xF
            a[row, 4 * group + (code & 3)] = a_regs[src, reg, 0]
            a[row, 4 * group + (code >> 2)] = a_regs[src, reg, 1]
    b = torch.zeros(32, 8, dtype=torch.float64)
    for k in range(32):
        for n in range(8):
            b[k, n] = b_regs[4 * n + (k % 8) // 2, k // 8, k % 2]
    d = a @ b
    out = c.clone()
    for reg in range(4):
        out[:, reg] += d[g + 8 * (reg // 2), 2 * q + reg % 2]
    return out


def emulate_spmma(x: torch.Tensor, frags, meta_reading: str = "pairs") -> torch.Tensor:
    """The ``spmma`` kernel's loads, MMAs and stores for one warp per (tile, 8-token block)."""
    m, k = x.shape
    n = frags.shape[0]
    nt, kb_count = frags.values.shape[:2]
    values = frags.values.view(x.dtype).reshape(nt, kb_count, 32, 4, 2).double()
    x_pairs = torch.nn.functional.pad(x.double(), (0, kb_count * 32 - k)).reshape(m, -1, 2)
    lane, g, q = _lanes()
    y = torch.zeros(m, n, dtype=torch.float64)
    for tile in range(nt):
        for m0 in range(0, m, 8):
            acc = torch.zeros(32, 4, dtype=torch.float64)
            token = m0 + g
            for kb in range(kb_count):
                a = values[tile, kb]  # lane, register, half: the kernel's a_base + kb * 128
                e = frags.meta[tile, kb, 2 * g + lane % 2]  # the kernel's e_base + kb * 16
                b = torch.zeros(32, 4, 2, dtype=torch.float64)
                for reg in range(4):
                    pair = kb * 16 + q + 4 * reg  # the kernel's x_base + kb * 16
                    ok = token < m
                    b[ok, reg] = x_pairs[token[ok], pair[ok]]
                acc = ptx_mma_sp(a, b, e, acc, meta_reading)
            for reg in range(4):  # the kernel's store: row g + 8 (reg // 2), token 2q + reg % 2
                rows = tile * 16 + g + 8 * (reg // 2)
                tokens = m0 + 2 * q + reg % 2
                ok = (rows < n) & (tokens < m)
                y[tokens[ok], rows[ok]] = acc[ok, reg]
    return y


@functools.cache
def _mma_sp_indices(meta_reading: str):
    """Index arrays of the A fragment (source lane, register) and metadata (lane, shift) per
    (row, group) of an m16n8k32 tile, and of the B fragment (lane, register, half) per (k, n)."""
    row, group = np.meshgrid(np.arange(16), np.arange(8), indexing="ij")
    a_lane, a_reg = 4 * (row % 8) + group % 4, row // 8 + 2 * (group // 4)
    meta = [[metadata_bits(r, gr, meta_reading) for gr in range(8)] for r in range(16)]
    e_lane, e_shift = np.array(meta)[..., 0], np.array(meta)[..., 1]
    k, n = np.meshgrid(np.arange(32), np.arange(8), indexing="ij")
    return a_lane, a_reg, e_lane, e_shift, (4 * n + (k % 8) // 2, k // 8, k % 2)


VALID_CODES = {0b0100, 0b1000, 0b1100, 0b1001, 0b1101, 0b1110}  # i0 < i1: the only codes mma.sp defines


def mma_sp_warps(op: str, a, b, c, e, meta_reading: str = "pairs"):
    """``mma.sp...m16n8k32`` for every warp at once, on the PTX emulator's registers.

    ``a``, ``b``, ``c``: four uint64 arrays each (one entry per thread, raw register bits), ``e``
    the metadata register. Same semantics as :func:`ptx_mma_sp` (checked against it in
    ``test_ptx_emulator.py``); products summed in fp64, rounded to fp32 once. Metadata codes other
    than the six that the ISA defines raise, since the hardware result would be undefined."""
    if ".m16n8k32.row.col.f32." not in op:
        raise NotImplementedError(f"only m16n8k32 row.col with f32 accumulators is modelled, got {op}")
    bf16 = ".bf16.bf16." in op

    def halves(regs):  # [warps, lane, register, half] as float64
        words = np.stack(regs, -1).astype(np.uint32).reshape(-1, 32, 4)
        h = words.view(np.uint16).reshape(-1, 32, 4, 2)
        if bf16:
            return (h.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        return h.view(np.float16).astype(np.float64)

    a_h, b_h = halves(a), halves(b)
    acc = np.stack(c, -1).astype(np.uint32).view(np.float32).reshape(-1, 32, 4).astype(np.float64)
    words = e.astype(np.uint64).reshape(-1, 32)
    a_lane, a_reg, e_lane, e_shift, b_index = _mma_sp_indices(meta_reading)
    codes = (words[:, e_lane] >> e_shift.astype(np.uint64)) & np.uint64(0xF)  # [warps, 16, 8]
    bad = ~np.isin(codes, list(VALID_CODES))
    if bad.any():
        raise ValueError(f"mma.sp metadata code {int(codes[bad][0]):#06b} is not one the ISA defines")
    warps = a_h.shape[0]
    dense = np.zeros((warps, 16, 32))
    w, r, gr = np.meshgrid(np.arange(warps), np.arange(16), np.arange(8), indexing="ij")
    dense[w, r, 4 * gr + (codes & np.uint64(3)).astype(int)] = a_h[:, a_lane, a_reg, 0]
    dense[w, r, 4 * gr + (codes >> np.uint64(2)).astype(int)] = a_h[:, a_lane, a_reg, 1]
    d = dense @ b_h[:, b_index[0], b_index[1], b_index[2]]  # [warps, 16 rows, 8 columns]
    lane, reg = np.arange(32)[:, None], np.arange(4)[None, :]
    acc += d[:, lane // 4 + 8 * (reg // 2), 2 * (lane % 4) + reg % 2]
    out = acc.astype(np.float32).view(np.uint32).astype(np.uint64).reshape(-1, 4)
    return [out[:, i] for i in range(4)]


def offline_compile_report(probe: str, *args: str) -> dict:
    """Run ``probe`` (Python that compiles with ``bench/compile_offline.py`` and prints one JSON
    line) in a child process from the repository root, without ``TRITON_INTERPRET``: the suite
    sets it on CPU, and under it Gluon cannot compile."""
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # the worktree's lib first, then the caller's path (e.g. another Triton, PYTHONPATH=/tmp/t36:lib)
    env["PYTHONPATH"] = os.pathsep.join([str(root / "lib"), *filter(None, [os.environ.get("PYTHONPATH")])])
    done = subprocess.run(
        [sys.executable, "-c", probe, *args], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode:
        if "No such file" in done.stderr and ("ptxas" in done.stderr or "nvdisasm" in done.stderr):
            pytest.skip("this Triton install has no ptxas or nvdisasm")  # pragma: no cover
        raise AssertionError(done.stderr[-3000:])
    return json.loads(done.stdout.splitlines()[-1])


def assert_fragment_map_as_documented(launch) -> None:
    """``bench/sp24/fragment_map.py`` through ``launch``: every A slot and metadata code where
    ``fragments.py`` puts them, read as "pairs" (the other reading differs on half the codes).
    The caller has ``bench`` on ``sys.path``."""
    from sp24 import fragment_map as fm

    values, meta = fm.value_map(launch), fm.meta_map(launch)
    assert fm.describe(values, meta) == [
        "A values: 256/256 slots as documented",
        "metadata: 128/128 codes as 'pairs', 64/128 as 'rows'",
    ]
