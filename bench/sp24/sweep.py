"""Per layer shape: cuBLAS, torch's semi-structured sparsity and a checked, timed sweep of our kernels."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from repro.kernels import compress_24

from .common import COPIES, KERNELS, TOL, pruned_weight, record, recs_at, rel_err

SPLITS = [1, 2, 3, 4, 6, 8, 12, 16]
GLUON = ("spmma", "wgmma")  # the kernels that read the weight in fragment order


def spmma_configs(m: int):
    """(R, S, U, W, options) per token-tile count T = the power of two >= ceil(M/8), at most 8;
    options ``p`` prefetch, ``x`` wide_x, ``i`` interleave, ``a<n>`` l2_ahead, and in
    ``_K_SPLITS``, ``_STAGED`` and ``_SHARED_X`` also ``k<n>`` split_k and ``c<n>`` stages, in
    ``_CHAINED`` ``h`` chain. All compile for sm_90a with Triton 3.6 without spills; the ``x``
    ones were kept where ``sp24/sass.py`` finds at most one memory round trip per loop
    iteration, plus pairs with and without ``x`` on the same tiling, which measure it alone; the
    ``i`` and ``a<n>`` ones pair with the fastest tilings of the 2026-11-27 run (and S = 8 with and
    without)."""
    from repro.kernels.fragments import SpmmaConfig, token_tiles

    t = token_tiles(m)
    if t == 1:
        shapes = [(1, 4, 4, 1, ""), (2, 4, 4, 1, ""), (1, 4, 8, 1, ""), (1, 4, 4, 1, "p")]
        shapes += [(2, 4, 4, 1, "x"), (1, 4, 8, 1, "x"), (1, 4, 8, 1, "px"), (2, 4, 8, 1, "px")]
        shapes += [(1, 4, 2, 2, "px"), (1, 4, 2, 4, "px")]
        shapes += [(1, 4, 8, 1, "pxi"), (2, 4, 8, 1, "pxi"), (1, 4, 4, 1, "pi"), (1, 8, 4, 1, "p"), (1, 8, 4, 1, "pi")]
        shapes += [(1, 2, 4, 1, "p"), (1, 2, 4, 1, "pi"), (1, 2, 8, 1, "px")]  # 11008 rows in one wave
        shapes += [(1, 2, 4, 1, "px"), (1, 2, 2, 2, "px")]
        shapes += [(1, 4, 8, 1, "pxia1"), (1, 4, 8, 1, "pxia2"), (1, 4, 8, 1, "pxa2"), (1, 4, 4, 1, "pia2")]
        shapes += [(1, 4, 4, 1, "pia4"), (1, 2, 4, 1, "pa2"), (1, 2, 4, 1, "pxa2")]
    elif t == 2:
        shapes = [(2, 4, 4, 1, ""), (1, 8, 2, 2, ""), (2, 4, 4, 1, "x"), (1, 8, 2, 2, "x"), (1, 4, 4, 2, "x")]
        shapes += [(2, 4, 4, 2, "x"), (1, 4, 2, 2, "px"), (1, 2, 2, 2, "px"), (1, 4, 2, 4, "px")]
        shapes += [(1, 4, 2, 2, "pxi"), (1, 2, 2, 2, "pxi"), (1, 8, 2, 2, "pxi")]
        shapes += [(1, 2, 4, 1, "px")]  # two warps: 11008 rows in one wave
        shapes += [(1, 4, 2, 2, "pxa2"), (1, 8, 2, 2, "pxia2"), (1, 2, 2, 2, "pxa2")]
        # the runner-up at 16 tokens on 4096² in both runs, r1w2s8u2t2x (124 registers, 2 KiB of weights
        # a warp per round trip): with twice the k-blocks per trip at the same registers (chained, 128),
        # with twice the warps (122 registers, 16 warps: one 32-row program per SM either way), and with
        # both (126 registers: 16 warps fill an SM's registers, four times the runner-up's weights in flight)
        shapes += [(1, 8, 4, 2, "xh"), (1, 16, 2, 2, "x"), (1, 16, 4, 2, "xh")]
    elif t == 4:
        shapes = [(1, 4, 2, 1, ""), (2, 4, 2, 1, ""), (1, 8, 2, 2, ""), (2, 4, 1, 2, "")]
        shapes += [(1, 8, 2, 2, "x"), (1, 4, 2, 2, "x"), (1, 4, 1, 2, "px"), (1, 4, 2, 2, "px"), (1, 4, 1, 2, "pxi")]
    else:
        shapes = [(2, 4, 1, 1, ""), (2, 4, 1, 2, ""), (1, 8, 1, 2, ""), (4, 2, 1, 2, "")]
        shapes += [(2, 4, 1, 2, "x"), (4, 2, 1, 2, "x"), (2, 4, 1, 2, "px"), (1, 8, 1, 2, "px"), (2, 4, 1, 2, "pxi")]
    configs = [SpmmaConfig.from_label(f"r{r}w{w}s{s}u{u}t{t}{opts}") for r, s, u, w, opts in shapes]
    labels = _TOKEN_SPLITS.get(t, ()) + _K_SPLITS.get(t, ()) + _STAGED.get(t, ()) + _SHARED_X.get(t, ())
    labels += _CHAINED.get(t, ())
    return configs + [SpmmaConfig.from_label(label) for label in labels]


# Fewer token tiles than the tokens need: the grid then runs two (or four) programs per row tile,
# each with the register budget of the smaller tile and each reading the same weights, the
# second read from L2 when the programs run together (tilings that fit the grid in one wave)
_TOKEN_SPLITS = {
    2: ("r1s2u8t1px", "r1s2u4t1p", "r1s4u4t1pi", "r1w2s2u2t1px", "r1s4u8t1pxi"),
    4: ("r1s2u4t1p", "r1w2s2u2t1px", "r1w2s2u2t2px", "r1w2s4u2t2px"),
}


# K split across programs (``k<n>``): programs of 32-64 rows, so x is read from L2 once per 32-64
# rows instead of once per 16 (at M = 16-32 its bytes rival the weight's), while the grid keeps
# 256-1376 programs; none spills (Triton 3.6, sm_90a)
_K_SPLITS = {
    2: ("r1w2s2u2t2pxk2", "r1w2s2u2t2pxk4", "r1w4s2u2t2pxk4", "r2w2s2u2t2pxk4", "r1w2s2u4t2k2"),
    4: ("r1w2s2u1t4pxk4", "r2w2s2u1t4pxk4", "r1w2s4u1t4pxk2", "r1w2s2u2t4pxk4"),
}

# Operands staged through shared memory (``c<n>``: a ring of n steps filled by cp.async, so
# n - 1 steps are in flight, one k-block at a time in registers): 6-10 KiB of weights in flight
# per warp at 48-96 registers for up to 16 tokens, against 4-9 KiB at 150-250 with the two
# register sets of ``p``. One-warp programs with split-K keep the barriers Triton adds around
# the ring within one warp. From 32 tokens x is the larger stream: W = 2-4 row tiles share each
# x word
_STAGED = {
    1: ("r1s1u4t1xc4k4", "r1s1u4t1xc6k4", "r1s2u4t1xc4k2", "r1s2u4t1xc4", "r1s4u4t1xc4", "r1s2u2t1xc8",
        "r1s1u8t1xc3k2"),
    2: ("r1s1u4t2xc4k4", "r1w2s1u2t2xc4k4", "r1s2u4t2xc4", "r1w2s2u2t2xc4k2", "r1s1u8t2xc3k2"),
    4: ("r1w2s2u1t4xc4k4", "r1s2u2t4xc4k2", "r1w4s1u1t4xc4k4", "r1w2s2u2t4xc4k2"),
    8: ("r1w2s1u1t8xc4k4", "r1w2s2u1t8xc3k2"),
}


# Staged with R > 1 row warps sharing one copy of x per program (each copies a part): programs of
# 32-128 rows read x from L2 once, where one-warp programs read it once per 16-32 rows; at 32-128
# tokens x's bytes are 2-7 times the weight's per row tile
_SHARED_X = {
    1: ("r2s1u4t1xc4k4", "r4s1u4t1xc4k4"),
    2: ("r2s1u4t2xc4k4", "r2w2s1u2t2xc4k4", "r4s1u2t2xc4k4"),
    4: ("r4w2s2u1t4xc4k4", "r2w2s2u1t4xc4k2", "r4w1s1u2t4xc3k4"),
    8: ("r2w2s2u1t8xc4k4", "r4w1s2u1t8xc4k4", "r4w2s2u1t8xc3k4"),
}


# The register-fed loops with a step's MMAs chained (``h``), against the same tilings without:
# 40-60% fewer registers (r1s4u8t1pxi 252 -> 152, r1s2u4t1px 128 -> 64, Triton 3.6), but ptxas
# then issues loads after MMAs and sass.py counts about twice the round trips per iteration, so
# per SM about the same bytes in flight from twice the warps; r1w2s2u4t2pxh has no unchained twin
# (it spills)
_CHAINED = {
    1: ("r1s4u8t1pxih", "r1s2u4t1pxh", "r1s2u4t1ph"),
    2: ("r1s2u8t1pxh", "r1w2s2u2t2pxh", "r1w2s2u4t2pxh"),
    4: ("r1w2s4u2t4pxh",),
}


# ``wgmma`` (dense warpgroup MMA on the weight expanded in registers): programs of 64 or 128 rows
# (``g1``, ``g2``) and a token tile T of the MMA's width, split-K so that 4096-row layers still
# give 128-256 programs. Fed through registers (no ``c``), the H200 (h200-2026-11-27d) took about
# one memory round trip per step whatever ``a<n>`` was: ptxas's six scoreboards make a step wait
# for the loads of later steps too. ``c<n>``: every operand through a cp.async ring of n steps
# (n - 1 in flight, nothing in registers), which did no better (h200-2026-11-27e); a few
# register-fed tilings stay as twins and as the best of those runs. ``x<n>``: x resident in
# shared memory n steps at a time, staged once per chunk, so no step moves x or fences (x's
# movement cost more than the MMAs in the wgmma ablation); split-K makes most programs' runs one
# chunk. Up to 16 tokens the MMA multiplies mostly padding, but the call is bound by the weight's
# bytes, which the ring streams as ``spmma`` does.
# ``s``: the sparse form (``wgmma.mma_async.sp`` on the compressed words, x where the ring put it:
# no expansion, no permutation, no register trip for x), token tiles of 16 and up (T >= 8U), also
# for 1-8 tokens; rings of 4-8 stages and split-K for 128-256 programs. ``w2``: each warpgroup runs
# two MMA tiles of 64 rows on the same x (programs of 256 rows with two warpgroups, token tiles of
# 32 at least, which up to 16 tokens multiply padding but read only the tokens there are).
# ``x<n>s``: x resident, staged once per chunk, so no step fences (if the fence waits for the copies
# in flight, bench/fence_probe.py, a streamed ring runs no step ahead across it). Mostly 128-256
# rows: every program reads x for its rows, so x's L2 bytes grow with the row groups; spmma's
# 32-row warps read 0.9 times the bytes of x that they read of weight at 16 tokens on 4096x4096,
# 3.6 times at 64.
# Run -f (bench/results/partial/h200-2026-11-27f) found the sparse form 1.2-2x its dense twins from
# 16 tokens on, and a deeper ring ahead wherever both depths of a sparse tiling were timed at 64-128
# tokens (11008x4096, 128 tokens: g2t128u2c6s 31.0 us, c4 36.0; 4096x4096, 64: g2t64u2c6sk4 15.9,
# c4 17.4), while its profile of a 64-token tiling showed a loop waiting on memory latency with DRAM
# at 18% of its peak. So each token count's winners there have a twin one or two stages deeper
# (g1t16u2c8sk4, g1t32u2c8sk4, g1t64u2c8s, g1t64u2c8sk2, g1t64u4c6sk2, g2t128u2c8s, g1t128u2c8sk2),
# and at 16 and 32 tokens one with the split of the other shapes' winner (g1t16u2c6sk8, g1t32u2c6sk2).
# Dense tilings among the slowest at their token count in h200-2026-11-27d/e left to make room
# (g2t16u4c4k2, g1t16u4c6k4, g2t32u4c4k2, g2t32u2c5k4, g1t32u4c4k4, g1t64u2k2, g1t64u2c5k2,
# g1t64u2c4k4, g2t64u2c5k4; at 128 and 512 tokens g2t128u2c5k2, g1t64u2c5k4, g2t128u1c6k2,
# g2t128u2c4k2). All compile for sm_90a with Triton 3.6 (fp16, and bf16 with bias) within 227 KiB
# of shared memory, MMAs asynchronous (no C7515), without spills, except the epilogues of
# g2w2t128 (fp16: 8-20 bytes; bf16 with bias: 52-128 bytes; none in any loop).
# The first H100 run (h100-2026-11-28) left 128 tokens on 4096x11008 at 1.08x of cuBLAS with
# g1t128u2c8sk2, whose row tiles of 64 read x 64 times (180 MB of L2 traffic, bench/sp24/traffic.py);
# programs of 128 rows read it half as often but were timed there only with a 4-stage ring
# (g2t128u2c4sk4 40.0 us), while the deeper ring gained 20% for g2t128 without split (11008x4096:
# c4s 39.3 us, c8s 31.4). So g2t128 with 4 splits gets the 6- and 8-stage rings, and g2t64u2c6sk2
# (the best at 128 tokens on 4096x4096) its 8-stage twin; three dense tilings, 2-4 times slower
# than the fastest there on both GPUs, left (g2t128u2, g2t128u2c4, g2t64u2c6x8k8).
# Session 20: the split tilings again with their splits as one cluster, meeting in its shared memory
# (label suffix q; gluon_cluster.py), three or four per token count from 16 on, and six at 128 where
# the meet's serial tail held back the 128-row tiles; dense tilings 1.3-4x slower than the fastest on
# the H100 (h100-2026-11-28) left to make room (at 16 g1t16u4c4x16k2, g1t16u4c6x8k4; at 32
# g1t32u2a2k2, g1t32u4c5k2, g1t32u2c6x16k4; at 64 g1t64u2a2, g1t64u2c4x16k4, g1t64u2c4, g1t64u2c6x8k8;
# at 128 g2t128u2a2, g1t64u2c4x16k4, g2t64u2c4x16k4, g1t128u2c4k2, g2t64u2a2k2).
# Session 21: x shared by the row tiles of a cluster through TMA multicast (label suffix m2 for pairs,
# m4 for four; gluon_shared_x.py), twins of the fastest workspace tilings at 16-128 tokens in
# h100-2026-11-28c (four only at 64-128: clusters of four large programs ran slower in v20), where
# x crosses the L2 once per row tile: 64 times on 4096x4096 with 64-row tiles (at 16 tokens 8 MB
# against the weight's 18.9, at 128 tokens 67 MB). To make room, tilings 1.4-1.9x slower than the
# fastest at their token count on every shape in both h100-2026-11-28c and the H200's run -f left (at
# 64 g2t64u2c4k2, g1t64u2c6; at 128 g2t64u2c4k2, g2t64u4c4k2, g2t128u2c4sk2, g2w2t128u2c4x8sk8; at
# 512 g2t128u2c5, g2t128u2a2).
# Session 22: the same at 512-2048 tokens, where the fastest tilings of h100-2026-11-28c moved 6.4-8.6
# TB/s through the L2, x 1.8 times the weight's bytes (g2t128u4c4s on 11008x4096 at 2048: 2.3 GB in
# 312 us): pairs and fours of g2t128u2c4s and g2t128u4c4s, and a pair of g2w2t128u2c4s (256 rows, the
# fastest at 2048 on two shapes). Out: the dense g2t128u2c4 (1.85-2.27 times the fastest in both
# H100 runs) and g2w2t128u2c4sk2 (1.08-1.46). And 256-token tiles (the MMA's widest N), which read
# the weight once per 256 tokens instead of 128: alone, and shared by pairs and fours. At 16-128 tokens,
# pairs sharing x whose K splits also meet in the cluster (suffix qm2: clusters of share x splits), twins
# of the cluster-meet tilings that were the fastest at their token count in h100-2026-11-28c.
_WGMMA = {
    1: ("g2t16u2c6sk4", "g2t16u1c8sk4", "g2t16u2c4x16sk4", "g2w2t32u2c6sk8", "g1t8u4k4", "g1t8u4c4k2", "g1t8u4c4k4",
        "g1t8u2c6k4", "g2t8u4c4k2", "g1t8u4c6k2", "g1t8u4c4x16k2", "g1t8u4c6x8k4"),
    16: ("g2t16u2c6sk4", "g2t16u1c8sk4", "g2t16u2c4x16sk4", "g2w2t32u2c6sk8", "g2w2t32u2c4x16sk8", "g1t16u2c6sk4",
         "g1t16u1c6sk4", "g1t16u2c4sk2", "g1t16u2c8sk4", "g1t16u2c6sk8", "g1t16u4k4", "g1t16u4c4k2", "g1t16u4c4k4",
         "g1t16u2c6k4", "g1t16u4c5k2", "g1t16u2c6sk4q", "g1t16u2c8sk4q", "g2t16u2c6sk4q", "g1t16u2c6sk4m2",
         "g1t16u2c8sk4m2", "g1t16u2c6sk4qm2"),
    32: ("g2w2t32u2c6sk8", "g2t32u2c6sk4", "g2t32u4c4sk4", "g2t32u2c6x16sk4", "g2w2t32u2c4x16sk8", "g1t32u2c6sk4",
         "g1t32u4c4sk2", "g1t32u2c5sk2", "g1t32u2c8sk4", "g1t32u2c6sk2", "g1t32u4k4", "g1t32u4c4k2", "g1t32u2c5k2",
         "g1t32u2c6k4", "g1t32u4c4x8k4", "g1t32u2c6sk4q", "g1t32u2c8sk4q", "g2t32u2c6sk4q", "g1t32u4c4sk2m2",
         "g1t32u2c6sk4m2", "g1t32u2c6sk4qm2"),
    64: ("g2w2t64u2c6sk8", "g1w2t64u2c6sk4", "g2t64u2c6sk4", "g2t64u2c4sk4", "g1t64u2c6s", "g1t64u2c6sk2",
         "g2t64u2c4sk2", "g1t64u2c8sk4", "g1t64u4c4sk2", "g2t64u2c6x16sk4", "g2w2t64u2c4x8sk8", "g1t64u2c8s",
         "g1t64u2c8sk2", "g1t64u4c6sk2", "g1t64u2c4k2", "g1t64u4c4k2", "g2t64u2c4x16k4", "g1t64u4c6sk2q",
         "g1t64u2c6sk2q", "g2t64u2c6sk4q", "g2w2t64u2c6sk8q", "g1t64u2c6sm2", "g1t64u2c8sm2", "g1t64u4c6sk2m2",
         "g1t64u2c6sk2m2", "g1t64u2c6sm4", "g1t64u4c6sk2m4", "g1t64u4c6sk2qm2"),
    128: ("g2w2t128u2c4sk8", "g2w2t128u2c4sk4", "g2t128u2c6sk2", "g2t128u2c6s", "g2t128u2c4s", "g1t128u2c6sk2",
          "g2t64u2c6sk2", "g1t128u4c4sk2", "g2t128u2c4sk4", "g2t128u2c4x8sk4", "g2t128u2c8s", "g1t128u2c8sk2",
          "g2t128u2c8sk4", "g2t128u2c6sk4", "g2t64u2c8sk2", "g1t128u2c6sk2q", "g2t64u2c6sk2q", "g2t128u2c6sk4q",
          "g2t128u2c8sk4q", "g1t128u2c4sk4q", "g2w2t128u2c4sk4q", "g1t128u2c6sk2m2", "g1t128u2c8sk2m2",
          "g2t64u2c6sk2m2", "g2t128u2c6sm2", "g1t64u2c6sm2", "g2t128u2c6sk2m2", "g1t128u2c6sk2m4", "g2t64u2c6sk2m4",
          "g1t128u2c6sk2qm2", "g2t64u2c6sk2qm2"),
    512: ("g2w2t128u2c4s", "g2t128u2c4s", "g2t128u4c4s", "g2t128u2c4sm2", "g2t128u4c4sm2", "g2t128u2c4sm4",
          "g2t128u4c4sm4", "g2w2t128u2c4sm2", "g2t256u2c4s", "g2t256u2c4sm2", "g2t256u2c4sm4"),
}


def wgmma_configs(m: int):
    """The ``wgmma`` tilings timed at ``m`` tokens (``_WGMMA``: those of the largest token count
    not above ``m``); none on a CUDA GPU other than Hopper (sm_90), which has no ``wgmma``."""
    from repro.kernels.fragments import WgmmaConfig

    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] != 9:
        return []
    key = max(t for t in _WGMMA if t <= m)
    configs = [WgmmaConfig.from_label(label) for label in _WGMMA[key]]
    if os.environ.get("REPRO_WGMMA_SPARSE", "1") == "0":  # gpu_check.sh: the sparse form failed its GPU test
        configs = [cfg for cfg in configs if not cfg.sparse]
    if os.environ.get("REPRO_WGMMA_CLUSTER", "1") == "0":  # gpu_check.sh: the cluster meet failed its GPU test
        configs = [cfg for cfg in configs if not cfg.cluster]
    if os.environ.get("REPRO_WGMMA_SHARED_X", "1") == "0":  # gpu_check.sh: x shared by a pair failed its GPU test
        configs = [cfg for cfg in configs if cfg.share == 1]
    if os.environ.get("REPRO_WGMMA_T256", "1") == "0":  # gpu_check.sh: 256-token tiles failed their GPU tests
        configs = [cfg for cfg in configs if cfg.T != 256]
    if os.environ.get("REPRO_WGMMA_SHARED_MEET", "1") == "0":  # gpu_check.sh: shared x with the meet in the cluster
        configs = [cfg for cfg in configs if not (cfg.cluster and cfg.share > 1)]
    return configs


def kernel_configs(kernel: str, m: int):
    from repro.kernels.triton_sp24 import KernelConfig as C

    if kernel == "spmma":  # sparse tensor cores; its own split-K is part of the configuration
        return spmma_configs(m)
    if kernel == "wgmma":
        return wgmma_configs(m)
    if kernel == "fma":  # CUDA-core select-X: only while its arithmetic hides under the loads
        if m > 8:
            return []
        if m > 4:
            return [C(8, 8, 32, 1, 4), C(8, 8, 32, 1, 3)]
        if m > 2:
            return [C(4, 8, 32, 1, 4), C(4, 8, 32, 1, 3), C(4, 16, 32, 2, 4), C(4, 32, 32, 4, 4)]
        if m == 2:
            return [C(2, 16, 64, 2, 4), C(2, 16, 32, 2, 4), C(2, 32, 32, 4, 3)]
        return [
            C(1, bn, bp, {4: 1, 8: 1, 16: 2}[bn], stages)
            for bn in (4, 8, 16)
            for bp in (64, 128)
            for stages in (3, 4, 5)
        ]
    # tiles chosen from offline sm_90a compiles: no spills, shared memory <= 227 KiB
    if kernel == "expand":  # (BM, BN, BP, warps, stages); BM is the token side (wgmma n)
        if m <= 16:
            return [
                C(16, 64, 32, 4, 3),
                C(16, 64, 32, 4, 4),
                C(16, 64, 16, 4, 4),
                C(16, 128, 32, 8, 3),
            ]
        if m <= 32:
            return [C(32, 64, 32, 4, 3), C(32, 128, 32, 8, 3), C(32, 128, 16, 4, 4)]
        if m <= 64:
            return [C(64, 64, 32, 4, 3), C(64, 128, 32, 8, 3), C(64, 128, 16, 4, 4)]
        if m <= 128:
            return [C(128, 64, 16, 4, 3), C(128, 128, 16, 8, 3), C(64, 128, 32, 8, 3)]
        return [C(128, 128, 16, 8, 3)]
    if m <= 16:
        return [
            C(16, 64, 32, 4, 3),
            C(16, 64, 32, 4, 4),
            C(16, 128, 32, 8, 3),
            C(16, 32, 32, 2, 4),
            C(16, 16, 32, 1, 4),
        ]
    if m <= 32:
        return [C(32, 64, 32, 4, 3), C(32, 128, 32, 8, 3)]
    if m <= 128:
        return [C(64, 64, 32, 8, 3), C(64, 128, 32, 8, 3)]
    return [C(64, 128, 32, 8, 3)]  # the large-M path, for the record


def case_configs(kernel: str, n: int, m: int, k: int, keeps=None) -> list:
    """The configurations (split-K counts included) the sweep times for one case; ``keeps``
    (``Shortlist.keeps``, or None for all) narrows them to a short list, on which every tiling of
    ``wgmma`` keeps its twin (``traffic.twin_of``: the one its traffic was predicted from), so that a
    score of the prediction has the twin timed in the same run."""
    from .traffic import twin_of

    configs = [cfg for base in kernel_configs(kernel, m) for cfg in with_splits(base, n, m, k)]
    if keeps is None:
        return configs
    kept = {cfg for cfg in configs if keeps(kernel, m, cfg.label())}
    if kernel == "wgmma":
        kept |= {twin_of(cfg) for cfg in kept}
    return [cfg for cfg in configs if cfg in kept]


def with_splits(cfg, n: int, m: int, k: int):
    from dataclasses import replace

    if not hasattr(cfg, "BP"):  # spmma, wgmma: split-K is part of the configuration (the sweep's labels)
        return [cfg]
    steps = k // 8 // cfg.BP
    tiles = -(-n // cfg.BN) * -(-m // cfg.BM)
    out = []
    for s in SPLITS:
        if s > 1 and (steps // s < 2 or tiles * s > 16 * 132):
            continue
        out.append(replace(cfg, split_k=s))
    return out


def precompile_jobs(shapes, ms, keeps=None) -> list[tuple]:
    """``(kernel, configuration, (N, K))`` for every compile the sweep will launch. Triton compiles a
    kernel again for each way its integer arguments specialize (1, a multiple of 16, or neither).
    Our kernels leave M and the split count out of that (``do_not_specialize``) but not the shape:
    the Gluon kernels' k-block count differs in kind between the shapes (128 on K = 4096, 344 on
    K = 11008), the Triton kernels' tiles may or may not divide K. So each configuration is compiled
    per shape, and the Triton kernels' in their plain and their atomic (split-K) variant.
    ``keeps``: as ``case_configs``."""
    from dataclasses import replace

    jobs = []
    for n, k in shapes:
        for m in ms:
            for kernel in KERNELS:
                for cfg in case_configs(kernel, n, m, k, keeps):
                    if hasattr(cfg, "BP"):
                        cfg = replace(cfg, split_k=min(cfg.split_k, 2))
                    jobs.append((kernel, cfg, (n, k)))
    return list(dict.fromkeys(jobs))


def precompile(shapes, ms, device, log=print, keeps=None):
    """Compile every variant the sweep will launch (``precompile_jobs``) in parallel threads, so that
    none is compiled one at a time between timings. A job whose specialization an earlier one
    already compiled is a hit in Triton's cache."""
    import triton

    from repro.kernels.triton_sp24 import launch

    jobs = precompile_jobs(shapes, ms, keeps)
    weights = {(n, k): compress_24(torch.zeros(n, k, device=device, dtype=torch.float16)) for n, k in shapes}
    xs, outs = {}, {}
    # each Gluon kernel in its own batch: if its compiles fail, the other kernels' still ran
    batches = [[j for j in jobs if j[0] not in GLUON]] + [[j for j in jobs if j[0] == g] for g in GLUON]
    t0 = time.time()
    for batch in batches:
        try:
            with triton.AsyncCompileMode(ThreadPoolExecutor(16)):
                for kernel, cfg, (n, k) in batch:  # 16 tokens: M is not specialized on
                    x = xs.setdefault(k, torch.zeros(16, k, device=device, dtype=torch.float16))
                    out = outs.setdefault(n, torch.empty(16, n, device=device, dtype=torch.float16))
                    launch(kernel, x, weights[(n, k)], None, out, cfg, warmup=True)
        except Exception as exc:  # older Triton: compile lazily
            log(f"parallel precompile unavailable ({exc!r}); compiling lazily")
    log(f"precompiled {len(jobs)} variants in {time.time() - t0:.1f}s")


CUSPARSELT_ALGORITHMS = 4  # cuSPARSELt's first algorithm ids timed per case (alg 0 is its default)


def fastest_correct(timer, ref, candidates, log, where: str, skip=()):
    """Each ``(config, run)`` run once and checked against ``ref``, the correct ones timed (20
    calls). ``run()`` computes the product and returns it. A candidate that raises counts as wrong
    (a compile error, a library's error status), except for an exception of a ``skip`` type.
    Returns the best ``(us, config, err, run)`` or None, the sweep ``[(label, us)]`` fastest first,
    and the counts of wrong and skipped candidates."""
    best, sweep, wrong, skipped = None, [], 0, 0
    for cfg, run in candidates:
        try:
            err = rel_err(run(), ref)
        except skip:
            skipped += 1
            continue
        except Exception as exc:
            log(f"FAILED {where} {cfg.label()}: {type(exc).__name__}: {str(exc)[:300]}")
            wrong += 1
            continue
        if not err < TOL:  # NaN (unwritten) fails too
            log(f"WRONG {where} {cfg.label()}: rel_err={err}")
            wrong += 1
            continue
        us = timer.median_us(run, reps=20)
        sweep.append((cfg.label(), round(us, 2)))
        if best is None or us < best[0]:
            best = (us, cfg, err, run)
    return best, sorted(sweep, key=lambda t: t[1]), wrong, skipped


def _kernel_run(kernel, x, w, cfg, device):
    """One configuration's launch into its own output, poisoned first (NaN where nothing wrote)."""
    from repro.kernels.triton_sp24 import launch

    out = torch.full((x.shape[0], w.shape[0]), float("nan"), device=device, dtype=torch.float16)

    def run():
        launch(kernel, x, w, None, out, cfg)
        return out

    return run


def cusparselt_weight(dense):
    """cuSPARSELt's compressed copy of ``dense`` for the ``cusparselt`` route, and why there is none
    where there is none (``REPRO_CUSPARSELT=0``, set by gpu_check.sh when the route's GPU tests
    fail, or a library that does not load)."""
    from repro.kernels import cusparselt

    if not cusparselt.available(dense.device):
        return None, "switched off (REPRO_CUSPARSELT=0) or the library did not load"
    try:
        return cusparselt.CusparseLtWeight(dense), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"[:200]


def bench_cusparselt(info, timer, w_lt, x, ref, log) -> dict:
    """The fastest correct of cuSPARSELt's first algorithms for one case, as a record."""
    from repro.kernels.cusparselt import AlgorithmRefused, CusparseLtConfig

    (n, k), m = w_lt.shape, x.shape[0]
    try:
        algorithms = w_lt.algorithm_ids(m, CUSPARSELT_ALGORITHMS)
    except Exception as exc:
        return record(info, n, k, m, "cusparselt", "failed", note=f"{type(exc).__name__}: {exc}"[:200])
    candidates = ((cfg, lambda cfg=cfg: w_lt.matmul(x, None, cfg)) for cfg in map(CusparseLtConfig, algorithms))
    # AlgorithmRefused: fewer algorithms for this shape than the library's bound read as an id
    best, sweep, n_wrong, n_refused = fastest_correct(
        timer, ref, candidates, log, f"cusparselt {n}x{k} M={m}", skip=(AlgorithmRefused,)
    )
    if best is None:
        return record(info, n, k, m, "cusparselt", "wrong", note=f"{n_wrong} of {len(algorithms)} algorithms wrong")
    us, cfg, err, fn = best
    us = timer.median_us(fn, reps=30)
    rec = record(
        info, n, k, m, "cusparselt", "ok", us, err, w_lt.nbytes, cfg.label(), host=timer.host_us(fn),
        note=f"best of {len(sweep)} algorithms timed, {n_wrong} wrong, {n_refused} refused",
    )  # fmt: skip
    rec["config"] = cfg.as_dict()
    rec["sweep"] = sweep
    return rec


def bench_shape(info, timer, n, k, ms, log, keeps=None) -> list[dict]:
    from repro.kernels.triton_sp24 import launch

    dense = pruned_weight(n, k, timer.device, seed=n + k)
    w = compress_24(dense)
    assert torch.equal(w.decompress(), dense), f"compress/decompress round trip failed on {timer.device}"
    try:
        from torch.sparse import to_sparse_semi_structured

        w_ss = to_sparse_semi_structured(dense)
        ss_bytes = sum(
            t.nbytes for t in (getattr(w_ss, "packed", None), getattr(w_ss, "meta", None)) if t is not None
        )
        ss_error = None
    except Exception as exc:
        w_ss, ss_bytes, ss_error = None, None, f"{type(exc).__name__}: {exc}"[:200]
    w_lt, lt_error = cusparselt_weight(dense)
    dense_copies = [dense] + [dense.clone() for _ in range(COPIES - 1)]
    w_copies = [w] + [type(w)(w.values.clone(), w.meta.clone(), w.shape) for _ in range(COPIES - 1)]
    if set(GLUON) & set(KERNELS):  # their fragment-order copies, built before any timing
        for c in w_copies:
            c.fragments()
    recs = []
    for m in ms:
        x = torch.randn(m, k, device=timer.device, dtype=torch.float16)
        ref = x.float() @ dense.float().T
        # cuBLAS
        fn = lambda: F.linear(x, dense)  # noqa: E731
        err = rel_err(fn(), ref)
        us = timer.median_us(fn)
        cublas_us = us
        recs.append(record(info, n, k, m, "cublas", "ok", us, err, dense.nbytes, host=timer.host_us(fn)))
        recs[-1]["us_streamed"] = timer.streamed_us([lambda d=d: F.linear(x, d) for d in dense_copies])
        # torch semi-structured (cuSPARSELt)
        if w_ss is None:
            recs.append(record(info, n, k, m, "torch_semi_structured", "unavailable", note=ss_error))
        else:
            fn = lambda: F.linear(x, w_ss)  # noqa: E731
            try:
                err = rel_err(fn(), ref)
                status = "ok" if err < TOL else "wrong"
                us = timer.median_us(fn, reps=10) if status == "ok" else None
                recs.append(
                    record(
                        info,
                        n,
                        k,
                        m,
                        "torch_semi_structured",
                        status,
                        us,
                        err,
                        ss_bytes,
                        host=timer.host_us(fn, 10) if us else None,
                    )
                )
            except Exception as exc:
                recs.append(
                    record(
                        info,
                        n,
                        k,
                        m,
                        "torch_semi_structured",
                        "failed",
                        note=f"{type(exc).__name__}: {exc}"[:200],
                    )
                )
        # cuSPARSELt called directly, its plans kept: each of its algorithms checked and timed
        if w_lt is None:
            recs.append(record(info, n, k, m, "cusparselt", "unavailable", note=lt_error))
        else:
            recs.append(bench_cusparselt(info, timer, w_lt, x, ref, log))
        # our kernels: every configuration checked, the correct ones timed, the best recorded
        for kernel in KERNELS:
            configs = case_configs(kernel, n, m, k, keeps)
            # one output per configuration, made as its turn comes (a generator: not all at once)
            candidates = ((cfg, _kernel_run(kernel, x, w, cfg, timer.device)) for cfg in configs)
            best, sweep, n_wrong, _ = fastest_correct(timer, ref, candidates, log, f"{kernel} {n}x{k} M={m}")
            if best is None:
                if configs:
                    recs.append(record(info, n, k, m, f"repro_{kernel}", "wrong", note=f"{n_wrong} wrong"))
                continue
            us, cfg, err, fn = best
            us = timer.median_us(fn, reps=30)  # re-time the winner with more calls
            recs.append(
                record(
                    info,
                    n,
                    k,
                    m,
                    f"repro_{kernel}",
                    "ok",
                    us,
                    err,
                    w.nbytes,
                    cfg.label(),
                    host=timer.host_us(fn),
                    note=f"best of {len(sweep)} timed, {n_wrong} wrong",
                )
            )
            recs[-1]["config"] = cfg.as_dict()
            recs[-1]["sweep"] = sweep
            out = torch.empty(m, n, device=timer.device, dtype=torch.float16)
            recs[-1]["us_streamed"] = timer.streamed_us(
                [lambda c=c: launch(kernel, x, c, None, out, cfg) for c in w_copies]
            )
        cublas_streamed = recs_at(recs, n, k, m, "cublas")["us_streamed"]
        for r in recs:
            if r["N"] == n and r["K"] == k and r["M"] == m and r.get("us"):
                r["speedup_vs_cublas"] = cublas_us / r["us"]
                if r.get("us_streamed"):
                    r["speedup_streamed"] = cublas_streamed / r["us_streamed"]
        line = " ".join(
            f"{r['method']}={r['speedup_vs_cublas']:.2f}x/{r.get('speedup_streamed') or 0:.2f}x"
            for r in recs
            if r["M"] == m and r["N"] == n and r["K"] == k and r.get("speedup_vs_cublas")
        )
        log(f"{n}x{k} M={m}: cublas {cublas_us:.1f}us | {line}")
    del dense_copies, w_copies
    if w_lt is not None:
        w_lt.close()
    return recs, {"w": w, "dense": dense, "w_ss": w_ss}
