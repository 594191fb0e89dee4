"""Triton kernels for ``y = x @ W.T`` with W in the book's 2:4 format (see ``format.py``).

All three step along K by ``BP`` group pairs (``8*BP`` dense columns) over ``BN`` weight rows and
read only the compressed bytes: four value planes ``[BN, BP]`` (v0/v1 of the even and odd group of
each pair) and one metadata byte tile ``[BN, BP]``, with plain 2-D (16-byte vector) loads.

``fma`` (CUDA cores, "select-X"; decode, M <= 2 in practice): the x tile is split in registers into
its phases x[m, 8p + 4h + j]; the x value multiplying each kept weight is chosen by its 2-bit index
with ``where`` (no gathers); products accumulate elementwise in a ``[BM, BN, BP]`` fp32 register
tile, reduced once after the K loop. Its arithmetic grows with M.

``mma`` (tensor cores, four phase dots): with ``d_j[n, g] = W[n, 4g + j]``,
    y^T[n, m] = sum over group parity h and phase j of  d_{h,j} @ X_{h,j}^T,
so each K-step is eight ``tl.dot``s of a ``[BN, BP]`` expanded phase with a ``[BP, BM]`` slice of
x; ``d_j`` is an AND/OR of v0/v1 with masks from the indices. Weights are the wide MMA side
("swap-AB"), so small M pads only the token side.

``expand`` (tensor cores, expanded tile; the large-M path): the phases are joined in registers into
the natural-order ``[BN, 8*BP]`` weight tile, the A operand of one dot per K-step whose B operand,
the plain x tile, goes straight from global to shared memory. Triton keeps these wgmmas in flight
(``wait_group`` > 0), unlike the eight dots of ``mma``; the joined tile costs one register-to-
register re-layout through a per-warp scratch buffer per step.

All can split K across programs (``split_k`` > 1) so that few output tiles still fill 132 SMs;
partial sums meet in ``y`` through a serial fix-up (split 0 stores, the others add atomically once
its flag is raised), which avoids a separate memset launch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import torch
import triton
import triton.language as tl

from . import fast_launch
from .format import Sparse24Weight
from .scratch import split_flags

KERNELS = ("fma", "mma", "expand", "spmma", "wgmma")


@dataclass(frozen=True)
class KernelConfig:
    """One launch configuration. ``split_k`` is a run-time argument (no recompile)."""

    BM: int
    BN: int
    BP: int  # group pairs per K-step (dense K-step = 8*BP columns)
    num_warps: int = 4
    num_stages: int = 3
    split_k: int = 1

    def label(self) -> str:
        return f"{self.BM}x{self.BN}x{8 * self.BP}/w{self.num_warps}s{self.num_stages}/sk{self.split_k}"

    def as_dict(self) -> dict:
        return asdict(self)


@triton.jit
def _split_phases(x_tile, BM: tl.constexpr, BP: tl.constexpr):
    """[BM, 8*BP] dense x columns -> the eight phases x[m, 8p + 4h + j] (h: even/odd group, j: 0..3).

    A register shuffle (reshape + split); returned as (x0e, x1e, x2e, x3e, x0o, x1o, x2o, x3o).
    """
    e = tl.reshape(x_tile, (BM, BP, 2, 2, 2))  # [m, p, h, a, b] = x[m, 8p + 4h + 2a + b]
    b0, b1 = tl.split(e)
    j0, j2 = tl.split(b0)
    j1, j3 = tl.split(b1)
    x0e, x0o = tl.split(j0)
    x1e, x1o = tl.split(j1)
    x2e, x2o = tl.split(j2)
    x3e, x3o = tl.split(j3)
    return x0e, x1e, x2e, x3e, x0o, x1o, x2o, x3o


@triton.jit
def _tile_pointers(x_ptr, v_ptr, meta_ptr, M, N, stride_xm, stride_vn, stride_meta,
                   BM: tl.constexpr, BN: tl.constexpr, BP: tl.constexpr):
    """This program's output tile (rows n of W, rows m of x): offsets, bounds masks and the pointers to the
    first K-step of the value planes, the metadata and x. Shared by every kernel (inlined by Triton)."""
    offs_n = tl.program_id(0) * BN + tl.arange(0, BN)
    offs_m = tl.program_id(1) * BM + tl.arange(0, BM)
    offs_p = tl.arange(0, BP)
    offs_k = tl.arange(0, 8 * BP)
    row_ok = offs_n[:, None] < N
    m_ok = offs_m[:, None] < M
    v_ptrs = v_ptr + offs_n[:, None] * stride_vn + offs_p[None, :]
    meta_ptrs = meta_ptr + offs_n[:, None] * stride_meta + offs_p[None, :]
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :]
    return offs_n, offs_m, offs_p, offs_k, row_ok, m_ok, v_ptrs, meta_ptrs, x_ptrs


@triton.jit
def _k_range(Q, BP: tl.constexpr, split_k):
    """This program's slice [first, last) of K-steps when K is split ``split_k`` ways."""
    steps = tl.cdiv(Q, BP)
    per_split = tl.cdiv(steps, split_k)
    first = tl.program_id(2) * per_split
    last = tl.minimum(first + per_split, steps)
    return first, last


@triton.jit
def _store_output(
    y_ptr,
    acc_t,
    offs_m,
    offs_n,
    M,
    N,
    stride_ym,
    bias_ptr,
    flag_ptr,
    split_k,
    HAS_BIAS: tl.constexpr,
    SPLIT: tl.constexpr,
):
    """Write acc_t[n, m] (+ bias) to y[m, n].

    With split-K (serial fix-up, no memset of y): split 0 stores its partial sum and raises the
    tile's flag; the other splits wait for the flag, add theirs with atomics and count in; the
    last one resets the flag to 0 for the next launch. Split 0's programs come first in launch
    order (grid axis 2), so a waiting program never waits on one that cannot be scheduled.
    """
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)
        acc_t += tl.where(tl.program_id(2) == 0, bias, 0.0)[:, None]
    y_ptrs = y_ptr + offs_m[None, :] * stride_ym + offs_n[:, None]
    mask = (offs_n[:, None] < N) & (offs_m[None, :] < M)
    out = acc_t.to(y_ptr.dtype.element_ty)
    if SPLIT:
        flag = flag_ptr + tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
        if tl.program_id(2) == 0:
            tl.store(y_ptrs, out, mask=mask)
            tl.debug_barrier()  # every thread's store happens before the release below
            tl.atomic_add(flag, 1, sem="release")
        else:
            while tl.atomic_add(flag, 0, sem="acquire") == 0:
                pass
            tl.debug_barrier()
            tl.atomic_add(y_ptrs, out, mask=mask, sem="relaxed")
            tl.debug_barrier()
            if tl.atomic_add(flag, 1, sem="acq_rel") == split_k - 1:
                tl.atomic_xchg(flag, 0, sem="relaxed")
    else:
        tl.store(y_ptrs, out, mask=mask)


@triton.jit
def _load_weight_tile(v_ptrs, meta_ptrs, Q, p0, offs_p, row_ok, EVEN_Q: tl.constexpr):
    """One K-step of the weight: the four value planes [BN, BP] and the codes of even/odd groups."""
    if EVEN_Q:
        ok = row_ok
    else:
        ok = row_ok & (offs_p[None, :] + p0 < Q)
    v0e = tl.load(v_ptrs + p0, mask=ok, other=0.0)
    v1e = tl.load(v_ptrs + (Q + p0), mask=ok, other=0.0)
    v0o = tl.load(v_ptrs + (2 * Q + p0), mask=ok, other=0.0)
    v1o = tl.load(v_ptrs + (3 * Q + p0), mask=ok, other=0.0)
    byte = tl.load(meta_ptrs + p0, mask=ok, other=0).to(tl.int32)
    return v0e, v1e, v0o, v1o, byte & 15, byte >> 4


@triton.jit
def _load_x_tile(x_ptrs, k0, K, offs_k, m_ok, EVEN_Q: tl.constexpr):
    """The [BM, 8*BP] x columns k0 .. k0 + 8*BP (zeros past K and past M)."""
    if EVEN_Q:
        return tl.load(x_ptrs + k0, mask=m_ok, other=0.0)
    return tl.load(x_ptrs + k0, mask=m_ok & (offs_k[None, :] + k0 < K), other=0.0)


@triton.jit
def _load_x_phases(x_ptrs, k0, K, offs_k, m_ok, BM: tl.constexpr, BP: tl.constexpr, EVEN_Q: tl.constexpr):
    return _split_phases(_load_x_tile(x_ptrs, k0, K, offs_k, m_ok, EVEN_Q), BM, BP)


@triton.jit
def _expand_planes(v0, v1, code):
    """The four dense phases d_j[n, p] = W[n, 4g + j] of one group per pair (g = 2p or 2p+1).

    Written as bit masks (AND/OR on the raw bits) rather than ``where``: Triton then hoists the
    conversion to the MMA operand layout above these ops, onto the loaded tiles, instead of sending
    the four expanded tiles through shared memory (it does not hoist through selects, nor through
    broadcasts, which is why the format needs no per-row shifts).
    """
    INT: tl.constexpr = tl.int16 if v0.dtype.primitive_bitwidth == 16 else tl.int32
    i0 = code & 3
    i1 = code >> 2
    b0 = v0.to(INT, bitcast=True)
    b1 = v1.to(INT, bitcast=True)
    d0 = b0 & -(i0 == 0).to(INT)
    d1 = (b0 & -(i0 == 1).to(INT)) | (b1 & -(i1 == 1).to(INT))
    d2 = (b0 & -(i0 == 2).to(INT)) | (b1 & -(i1 == 2).to(INT))
    d3 = b1 & -(i1 == 3).to(INT)
    return (
        d0.to(v0.dtype, bitcast=True),
        d1.to(v0.dtype, bitcast=True),
        d2.to(v0.dtype, bitcast=True),
        d3.to(v0.dtype, bitcast=True),
    )


@triton.jit
def _mma_group(acc, v0, v1, code, x0, x1, x2, x3, DOT_PRECISION: tl.constexpr):
    """acc[BN, BM] += sum_j d_j @ x_j^T for one group of each pair."""
    d0, d1, d2, d3 = _expand_planes(v0, v1, code)
    acc = tl.dot(d0, tl.trans(x0), acc, input_precision=DOT_PRECISION)
    acc = tl.dot(d1, tl.trans(x1), acc, input_precision=DOT_PRECISION)
    acc = tl.dot(d2, tl.trans(x2), acc, input_precision=DOT_PRECISION)
    acc = tl.dot(d3, tl.trans(x3), acc, input_precision=DOT_PRECISION)
    return acc


@triton.jit
def _fma_group(v0, v1, code, x0, x1, x2, x3):
    """[BM, BN, BP] products v0 * x[i0] + v1 * x[i1], x chosen by the 2-bit indices (select-X)."""
    i0 = (code & 3)[None, :, :]
    i1 = (code >> 2)[None, :, :]
    x0 = x0.to(tl.float32)[:, None, :]
    x1 = x1.to(tl.float32)[:, None, :]
    x2 = x2.to(tl.float32)[:, None, :]
    x3 = x3.to(tl.float32)[:, None, :]
    x_at_i0 = tl.where(i0 == 0, x0, tl.where(i0 == 1, x1, x2))  # i0 in {0, 1, 2}
    x_at_i1 = tl.where(i1 == 3, x3, tl.where(i1 == 2, x2, x1))  # i1 in {1, 2, 3}
    return v0.to(tl.float32)[None, :, :] * x_at_i0 + v1.to(tl.float32)[None, :, :] * x_at_i1


@triton.jit(do_not_specialize=["M", "split_k"])
def _sp24_mma_kernel(
    x_ptr,
    v_ptr,
    meta_ptr,
    bias_ptr,
    y_ptr,
    flag_ptr,
    M,
    N,
    Q,
    split_k,
    stride_xm,
    stride_vn,
    stride_meta,
    stride_ym,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BP: tl.constexpr,
    NUM_STAGES: tl.constexpr,
    EVEN_Q: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SPLIT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    offs_n, offs_m, offs_p, offs_k, row_ok, m_ok, v_ptrs, meta_ptrs, x_ptrs = _tile_pointers(
        x_ptr, v_ptr, meta_ptr, M, N, stride_xm, stride_vn, stride_meta, BM, BN, BP
    )

    first, last = _k_range(Q, BP, split_k)
    acc = tl.zeros((BN, BM), dtype=tl.float32)
    for step in tl.range(first, last, num_stages=NUM_STAGES):
        p0 = step * BP
        v0e, v1e, v0o, v1o, ce, co = _load_weight_tile(v_ptrs, meta_ptrs, Q, p0, offs_p, row_ok, EVEN_Q)
        x0e, x1e, x2e, x3e, x0o, x1o, x2o, x3o = _load_x_phases(
            x_ptrs, 8 * p0, 8 * Q, offs_k, m_ok, BM, BP, EVEN_Q
        )
        acc = _mma_group(acc, v0e, v1e, ce, x0e, x1e, x2e, x3e, DOT_PRECISION)
        acc = _mma_group(acc, v0o, v1o, co, x0o, x1o, x2o, x3o, DOT_PRECISION)
    _store_output(y_ptr, acc, offs_m, offs_n, M, N, stride_ym, bias_ptr, flag_ptr, split_k, HAS_BIAS, SPLIT)


@triton.jit
def _dense_order(v0e, v1e, ce, v0o, v1o, co, BN: tl.constexpr, BP: tl.constexpr):
    """The weight tile [BN, 8*BP] in natural k order, built in registers from the planes.

    Joins append a new innermost axis; joining the parity h first, then a, then b gives
    [BN, BP, h, a, b] with k = 8p + 4h + 2a + b, so the final reshape moves no data.
    """
    d0e, d1e, d2e, d3e = _expand_planes(v0e, v1e, ce)
    d0o, d1o, d2o, d3o = _expand_planes(v0o, v1o, co)
    h0, h1, h2, h3 = tl.join(d0e, d0o), tl.join(d1e, d1o), tl.join(d2e, d2o), tl.join(d3e, d3o)
    t = tl.join(tl.join(h0, h2), tl.join(h1, h3))  # [BN, BP, h, a, b]
    return tl.reshape(t, (BN, 8 * BP))


@triton.jit(do_not_specialize=["M", "split_k"])
def _sp24_expand_kernel(
    x_ptr,
    v_ptr,
    meta_ptr,
    bias_ptr,
    y_ptr,
    flag_ptr,
    M,
    N,
    Q,
    split_k,
    stride_xm,
    stride_vn,
    stride_meta,
    stride_ym,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BP: tl.constexpr,
    NUM_STAGES: tl.constexpr,
    EVEN_Q: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SPLIT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    offs_n, offs_m, offs_p, offs_k, row_ok, m_ok, v_ptrs, meta_ptrs, x_ptrs = _tile_pointers(
        x_ptr, v_ptr, meta_ptr, M, N, stride_xm, stride_vn, stride_meta, BM, BN, BP
    )

    first, last = _k_range(Q, BP, split_k)
    acc = tl.zeros((BN, BM), dtype=tl.float32)
    for step in tl.range(first, last, num_stages=NUM_STAGES):
        p0 = step * BP
        v0e, v1e, v0o, v1o, ce, co = _load_weight_tile(v_ptrs, meta_ptrs, Q, p0, offs_p, row_ok, EVEN_Q)
        w_tile = _dense_order(v0e, v1e, ce, v0o, v1o, co, BN, BP)
        x_tile = _load_x_tile(x_ptrs, 8 * p0, 8 * Q, offs_k, m_ok, EVEN_Q)
        acc = tl.dot(w_tile, tl.trans(x_tile), acc, input_precision=DOT_PRECISION)
    _store_output(y_ptr, acc, offs_m, offs_n, M, N, stride_ym, bias_ptr, flag_ptr, split_k, HAS_BIAS, SPLIT)


@triton.jit(do_not_specialize=["M", "split_k"])
def _sp24_fma_kernel(
    x_ptr,
    v_ptr,
    meta_ptr,
    bias_ptr,
    y_ptr,
    flag_ptr,
    M,
    N,
    Q,
    split_k,
    stride_xm,
    stride_vn,
    stride_meta,
    stride_ym,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BP: tl.constexpr,
    NUM_STAGES: tl.constexpr,
    EVEN_Q: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SPLIT: tl.constexpr,
):
    offs_n, offs_m, offs_p, offs_k, row_ok, m_ok, v_ptrs, meta_ptrs, x_ptrs = _tile_pointers(
        x_ptr, v_ptr, meta_ptr, M, N, stride_xm, stride_vn, stride_meta, BM, BN, BP
    )

    first, last = _k_range(Q, BP, split_k)
    acc = tl.zeros((BM, BN, BP), dtype=tl.float32)
    for step in tl.range(first, last, num_stages=NUM_STAGES):
        p0 = step * BP
        v0e, v1e, v0o, v1o, ce, co = _load_weight_tile(v_ptrs, meta_ptrs, Q, p0, offs_p, row_ok, EVEN_Q)
        x0e, x1e, x2e, x3e, x0o, x1o, x2o, x3o = _load_x_phases(
            x_ptrs, 8 * p0, 8 * Q, offs_k, m_ok, BM, BP, EVEN_Q
        )
        acc += _fma_group(v0e, v1e, ce, x0e, x1e, x2e, x3e)
        acc += _fma_group(v0o, v1o, co, x0o, x1o, x2o, x3o)
    acc_t = tl.trans(tl.sum(acc, axis=2))  # [BN, BM]
    _store_output(y_ptr, acc_t, offs_m, offs_n, M, N, stride_ym, bias_ptr, flag_ptr, split_k, HAS_BIAS, SPLIT)


def _check_config(cfg: KernelConfig, kernel: str) -> None:
    if kernel in ("spmma", "wgmma"):
        cfg.check()
        return
    if kernel in ("mma", "expand") and (cfg.BM < 16 or cfg.BN < 16 or cfg.BP < 16):
        raise ValueError(f"{kernel} kernel needs BM, BN, BP >= 16 (tl.dot tiles), got {cfg.label()}")
    for name in ("BM", "BN", "BP"):
        value = getattr(cfg, name)
        if value & (value - 1):
            raise ValueError(f"{name} = {value} must be a power of two")
    if cfg.split_k < 1:
        raise ValueError(f"split_k must be >= 1, got {cfg.split_k}")


@lru_cache(maxsize=None)
def _launch_options(kernel: str, cfg: KernelConfig, even_q: bool, has_bias: bool, split: bool, fp32: bool):
    """The jitted function and its constexpr/launch options (cached: this runs on every call)."""
    _check_config(cfg, kernel)
    options = dict(
        BM=cfg.BM,
        BN=cfg.BN,
        BP=cfg.BP,
        NUM_STAGES=cfg.num_stages,
        EVEN_Q=even_q,
        HAS_BIAS=has_bias,
        SPLIT=split,
        num_warps=cfg.num_warps,
    )
    if kernel in ("mma", "expand"):
        options["DOT_PRECISION"] = "ieee" if fp32 else "tf32"
        return (_sp24_mma_kernel if kernel == "mma" else _sp24_expand_kernel), options
    if kernel == "fma":
        return _sp24_fma_kernel, options
    raise ValueError(f"unknown kernel {kernel!r}; allowed: {', '.join(KERNELS)}")


def launch(
    kernel: str,
    x2d: torch.Tensor,
    w: Sparse24Weight,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    cfg: KernelConfig,
    *,
    warmup: bool = False,
) -> torch.Tensor:
    """Run ``kernel`` (one of ``KERNELS``) writing ``x2d @ W.T (+ bias)`` into ``out``.

    ``x2d`` [M, K] must have unit stride along K and ``out`` unit stride along N. With split-K,
    partial sums are added with atomics (round-off-level non-determinism) and no memset is needed.
    ``warmup=True`` only compiles (usable under ``triton.AsyncCompileMode``).
    """
    fast_launch.launch(*kernel_call(kernel, x2d, w, bias, out, cfg), warmup=warmup)
    return out


def kernel_call(
    kernel: str, x2d: torch.Tensor, w: Sparse24Weight, bias: torch.Tensor | None, out: torch.Tensor, cfg
) -> tuple[object, tuple, tuple, dict]:
    """What ``launch`` hands ``fast_launch.launch`` for ``kernel``: ``(fn, grid, args, options)``."""
    if kernel == "spmma":  # the Gluon kernel on the sparse tensor cores, fragment-order weight
        from .gluon_sp24 import spmma_call

        return spmma_call(x2d, w.fragments(), bias, out, cfg)
    if kernel == "wgmma":  # the Gluon kernel on the warpgroup MMA (sparse form, or dense on the expanded weight)
        from .gluon_wgmma import wgmma_call

        return wgmma_call(x2d, w.fragments(), bias, out, cfg)
    m, k = x2d.shape
    n = w.shape[0]
    pairs = k // 8
    split_k = max(1, min(cfg.split_k, -(-pairs // cfg.BP)))
    fn, options = _launch_options(
        kernel, cfg, pairs % cfg.BP == 0, bias is not None, split_k > 1, x2d.dtype == torch.float32
    )
    grid = (-(-n // cfg.BN), -(-m // cfg.BM), split_k)
    flags = split_flags(x2d.device, grid[0] * grid[1]) if split_k > 1 else out
    args = (
        x2d,
        w.values,
        w.meta,
        out if bias is None else bias,
        out,
        flags,
        m,
        n,
        pairs,
        split_k,
        x2d.stride(0),
        w.values.stride(0),
        w.meta.stride(0),
        out.stride(0),
    )
    return fn, grid, args, options
