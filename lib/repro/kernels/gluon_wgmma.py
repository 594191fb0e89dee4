"""``wgmma``: ``y = x @ W.T`` on Hopper's dense warpgroup MMA, the 2:4 weight expanded in registers.

``spmma`` (``gluon_sp24.py``) runs the sparse ``mma.sp`` of one warp: every warp reads x for its
own 16 rows, so past about 32 tokens x's traffic through L1 and shared memory outgrows the
weight's. Hopper's ``wgmma.mma_async`` reads its B operand from shared memory for a whole
warpgroup (64 rows) at a time and runs asynchronously, but the sparse form (``wgmma.sp``) needs a
shared-memory address that Gluon does not hand to inline assembly. This kernel uses the dense form
with the A operand (the weight) in registers, and expands the 2:4 weight into it in registers:

- the weight is read in ``mma.sp`` fragment order (``fragments.py``, the format ``spmma`` reads):
  lane ``(g, q)`` of a warp holds, per 16-row tile and 32-column k-block, the two kept values of
  groups ``q`` and ``q + 4`` of rows ``g`` and ``g + 8``: four whole groups;
- dense ``wgmma`` wants lane ``(g, q)`` to hold columns ``2q, 2q+1, 2q+8, 2q+9`` of each 16-column
  k-step of the same rows. So K is permuted inside each k-block: group ``q + 4b`` (columns
  ``16b + 4q .. 16b + 4q + 3``) goes to columns ``16b + 2q, 16b + 2q + 1, 16b + 2q + 8,
  16b + 2q + 9``, and every lane expands its own four groups with two byte permutes (``prmt``)
  each, no data crosses lanes;
- x goes through shared memory with the same permutation of K (a relabelling of registers before
  the store), so the product is unchanged.

One program owns ``64*G`` rows (``G`` warpgroups, 4 warps each) and ``T`` tokens and walks its
share of K ``U`` k-blocks at a time, one MMA in flight (``is_async``) while the next step's
operands are made ready. The operands come one of two ways:

- through registers: the weight words and x of the step ``ahead`` steps later are loaded while
  this step's MMA runs. On the H200 this waits for about one memory round trip per step
  whatever ``ahead`` is: ptxas has six scoreboards for all loads in flight, so loads of several
  steps share one, and waiting for the oldest waits for the newest;
- through a ring in shared memory (``stages``): ``cp.async`` copies every operand of the step
  ``stages - 1`` steps later, weight words and x alike (x as it lies in memory), and a step
  reads its own from the ring with short shared-memory loads. No load in the loop lands in a
  register, so no scoreboard ties a step to the copies in flight.

With ``split_k`` > 1, K is cut into that many runs, one per program along a third grid axis,
whose fp32 sums meet as in ``spmma``.

Needs ``sm_90`` (``wgmma``) and fp16 or bf16.
"""

from __future__ import annotations

import functools

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, warpgroup_mma, warpgroup_mma_wait

from .fragments import Sparse24Fragments, WgmmaConfig
from .gluon_sp24 import _index, _meet_splits, _store_output, fragment_kernel_args

# One 2:4 group: $2 holds its two kept values (v0 low, v1 high), $4 its metadata word, $6 the bit
# offset of its 4-bit code (i0 | i1 << 2) in that word; $0 gets positions 0, 1 of the dense group,
# $1 positions 2, 3. A prmt selector picks each output byte from {v0, v1, 0}: per position two
# nibbles, 0x10 for v0, 0x32 for v1, 0x54 for a zero (bytes 4, 5 of the zero operand), so the
# four positions' selectors are 0x54545454 with byte i0 turned into 0x10 (xor 0x44) and byte i1
# into 0x32 (xor 0x66). Inputs come twice (pack 2: one instance per pair of halves); $3, $5, $7
# are the copies.
_EXPAND = gl.constexpr(
    "{ .reg .b32 %ec, %e0, %e1, %es; "
    "shr.b32 %ec, $4, $6; "
    "shl.b32 %e0, %ec, 3; and.b32 %e0, %e0, 24; shl.b32 %e0, 68, %e0; "
    "shl.b32 %e1, %ec, 1; and.b32 %e1, %e1, 24; shl.b32 %e1, 102, %e1; "
    "xor.b32 %es, %e0, %e1; xor.b32 %es, %es, 0x54545454; "
    "prmt.b32 $0, $2, 0, %es; shr.b32 %es, %es, 16; prmt.b32 $1, $2, 0, %es; }"
)
_OPERANDS = gl.constexpr("=r,=r,r,r,r,r,r,r")


@gluon.constexpr_function
def _lane_layout(G, U, inner):
    """``[row tile 4G, k-block U, lane 32, *inner]``: a warp per 16-row tile, the last dimensions
    in each lane's registers. ``_group_layout``: a lane's four groups per k-block, each as the
    pair of halves one ``prmt`` writes; ``_meta_layout``: the two metadata words of a lane's
    quad, each broadcast over the two row halves it describes."""
    return gl.BlockedLayout(
        size_per_thread=[1, U, 1, *inner],
        threads_per_warp=[1, 1, 32, 1, 1],
        warps_per_cta=[4 * G, 1, 1, 1, 1],
        order=[4, 3, 2, 1, 0],
    )


@gluon.constexpr_function
def _group_layout(G, U):
    return _lane_layout(G, U, [4, 2])


@gluon.constexpr_function
def _meta_layout(G, U):
    return _lane_layout(G, U, [2, 2])


@gluon.constexpr_function
def _mma_layout(G, T):
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4 * G, 1], instr_shape=[16, T, 16])


@gluon.constexpr_function
def _x_layout(G, T, KS):
    """x's ``[T, KS]`` step: eight consecutive columns (one 16-byte load) per thread."""
    lanes_k = min(KS // 8, 32)
    return gl.BlockedLayout(
        size_per_thread=[1, 8],
        threads_per_warp=[32 // lanes_k, lanes_k],
        warps_per_cta=[4 * G, 1],
        order=[1, 0],
    )


@gluon.jit
def _expand(v, e, DTYPE: gl.constexpr, A_LAYOUT: gl.constexpr, META_ROWS: gl.constexpr):
    """The dense, K-permuted A operand ``[64G, 32U]`` from a step's value and metadata words.

    ``v`` ``[4G, U, 32, 4]``: register ``i`` of lane ``(g, q)`` is row ``g + 8(i % 2)``, group
    ``q + 4(i // 2)``; ``e`` ``[4G, U, 32, 2]``: the lane's quad's two metadata words. In the
    ``"pairs"`` order (``fragments._meta_words``) word ``h`` holds groups ``4h .. 4h+3`` of row ``g``
    (low 16 bits) and ``g + 8`` (high 16 bits); in ``"rows"`` (``META_ROWS``) word ``h`` holds the
    eight groups of row ``g + 8h``."""
    G: gl.constexpr = v.shape[0] // 4
    U: gl.constexpr = v.shape[1]
    LG: gl.constexpr = v.type.layout
    # each register's word, broadcast over the registers it serves: i // 2 ("pairs") or i % 2
    rows = gl.zeros([4 * G, U, 32, 2, 2], gl.int32, _meta_layout(G, U))
    e = gl.reshape(gl.broadcast(gl.expand_dims(e, 3 if META_ROWS else 4), rows)[0], [4 * G, U, 32, 4])
    e = gl.convert_layout(e, LG, assert_trivial=True)
    lane = _index(32, 2, LG, 4)
    reg = _index(4, 3, LG, 4)
    if META_ROWS:  # the code of register i sits at bit 16 (i // 2) + 4q of its word
        shift = 16 * (reg // 2) + 4 * (lane % 4)
    else:  # at bit 16 (i % 2) + 4q
        shift = 16 * (reg % 2) + 4 * (lane % 4)
    pair = gl.zeros([4 * G, U, 32, 4, 2], gl.int32, _group_layout(G, U))
    v2 = gl.broadcast(gl.expand_dims(v, 4), pair)[0]
    e2 = gl.broadcast(gl.expand_dims(e, 4), pair)[0]
    s2 = gl.broadcast(gl.expand_dims(gl.broadcast(shift, v)[0], 4), pair)[0]
    if DTYPE == gl.bfloat16:
        lo, hi = gl.inline_asm_elementwise(_EXPAND, _OPERANDS, [v2, e2, s2], (gl.bfloat16, gl.bfloat16), True, 2)
    else:
        lo, hi = gl.inline_asm_elementwise(_EXPAND, _OPERANDS, [v2, e2, s2], (gl.float16, gl.float16), True, 2)
    dense = gl.join(lo, hi)  # [w, kb, lane, i, j, hh]: position 2hh + j of the group
    dense = gl.reshape(dense, [4 * G, U, 8, 4, 2, 2, 2, 2])  # w, kb, g, q, b, rh, j, hh
    dense = gl.permute(dense, [0, 5, 2, 1, 4, 7, 3, 6])  # w, rh, g, kb, b, hh, q, j
    dense = gl.reshape(dense, [64 * G, 32 * U])  # row 16w + 8rh + g, column 32kb + 16b + 8hh + 2q + j
    return gl.convert_layout(dense, A_LAYOUT, assert_trivial=True)


@gluon.jit
def _permute_x(xt):
    """x's step ``[T, 32U]`` with K permuted as the weight's (``_expand``): column
    ``32kb + 16b + 4q + 2hh + j`` moves to ``32kb + 16b + 8hh + 2q + j``."""
    T: gl.constexpr = xt.shape[0]
    U: gl.constexpr = xt.shape[1] // 32
    xt = gl.reshape(xt, [T, U, 2, 4, 2, 2])  # t, kb, b, q, hh, j
    xt = gl.permute(xt, [0, 1, 2, 4, 3, 5])  # t, kb, b, hh, q, j
    return gl.reshape(xt, [T, 32 * U])


@gluon.jit
def _weight_stream(v_ptr, e_ptr, NT, KB, first, end, LV: gl.constexpr, LE: gl.constexpr):
    """Pointers to this program's first step of weight words, and what masks them: value words
    ``[4G, U, 32, 4]`` (tile ``4G * pid + w``, k-block ``first + kb``; lane ``l`` reads words
    ``4l .. 4l+3``) and metadata words ``[4G, U, 32, 2]`` (words ``2g, 2g + 1`` of the lane's quad)."""
    G: gl.constexpr = LV.parent.warps_per_cta[0] // 4
    U: gl.constexpr = LV.parent.size_per_thread[1]
    tile = gl.program_id(0) * (4 * G) + _index(4 * G, 0, LV, 4)
    kb = first + _index(U, 1, LV, 4)
    v_ptrs = v_ptr + (tile * KB + kb).to(gl.int64) * 128 + _index(32, 2, LV, 4) * 4 + _index(4, 3, LV, 4)
    e_tile = gl.program_id(0) * (4 * G) + _index(4 * G, 0, LE, 4)
    e_kb = first + _index(U, 1, LE, 4)
    e_ptrs = e_ptr + (e_tile * KB + e_kb).to(gl.int64) * 16 + (_index(32, 2, LE, 4) // 4) * 2 + _index(2, 3, LE, 4)
    return v_ptrs, tile < NT, kb, e_ptrs, e_tile < NT, e_kb, end


@gluon.jit
def _x_stream(x_ptr, M, K, stride_xm, first, end, T: gl.constexpr, KS: gl.constexpr, LX: gl.constexpr):
    """Pointers to x's first step ``[T, KS]`` (tokens ``T * pid(1) ..``) and what masks them."""
    token = gl.program_id(1) * T + gl.expand_dims(gl.arange(0, T, layout=gl.SliceLayout(1, LX)), 1)
    col = first * 32 + gl.expand_dims(gl.arange(0, KS, layout=gl.SliceLayout(0, LX)), 0)
    return x_ptr + token.to(gl.int64) * stride_xm + col, token < M, col, gl.minimum(end * 32, K)


@gluon.jit
def _load_step(w_stream, x_stream, step):
    """The value words, metadata words and x of the step ``step`` k-blocks past the first, into
    registers: ``(v, e, x)``. Past the end, zeros and a valid metadata code: such a step adds
    nothing."""
    x_ptrs, token_ok, col, col_end = x_stream
    xt = gl.load(x_ptrs + step * 32, mask=token_ok & (col + step * 32 < col_end), other=0.0)
    v_ptrs, v_ok, kb, e_ptrs, e_ok, e_kb, end = w_stream
    v = gl.load(v_ptrs + step * 128, mask=v_ok & (kb + step < end), other=0)
    e = gl.load(e_ptrs + step * 16, mask=e_ok & (e_kb + step < end), other=0x44444444)
    return v, e, xt


@gluon.jit
def _rings(STAGES: gl.constexpr, w_stream, x_stream):
    """Shared memory for ``STAGES`` steps of value words, metadata words and x, each in the shape
    of its registers and in their order (a lane's words together, the lanes' runs one after
    another; x row-major, 16 bytes per thread): every copy and read of a warp touches one
    contiguous run, each bank once per pass. A thread reads back exactly the bytes it copied."""
    v_ptrs, e_ptrs, x_ptrs = w_stream[0], w_stream[3], x_stream[0]
    v_order: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [3, 2, 1, 0])  # per stage, row-major
    x_order: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
    return (
        gl.allocate_shared_memory(gl.int32, [STAGES] + v_ptrs.shape, v_order),
        gl.allocate_shared_memory(gl.int32, [STAGES] + e_ptrs.shape, v_order),
        gl.allocate_shared_memory(x_ptrs.dtype.element_ty, [STAGES] + x_ptrs.shape, x_order),
    )


@gluon.jit
def _copy_step(rings, stage, w_stream, x_stream, step):
    """Start copying the value words, metadata words and x of ``step`` into ring ``stage``
    (``cp.async``: the bytes are in flight without registers to land in), as one group. Masked
    bytes arrive as zeros: metadata code 0 expands to zeros (``_EXPAND``), which the zero values
    make right anyway, and x's zero columns past K add nothing."""
    v_ptrs, v_ok, kb, e_ptrs, e_ok, e_kb, end = w_stream
    x_ptrs, token_ok, col, col_end = x_stream
    async_copy.async_copy_global_to_shared(rings[0].index(stage), v_ptrs + step * 128, mask=v_ok & (kb + step < end))
    async_copy.async_copy_global_to_shared(rings[1].index(stage), e_ptrs + step * 16, mask=e_ok & (e_kb + step < end))
    x_ok = token_ok & (col + step * 32 < col_end)
    async_copy.async_copy_global_to_shared(rings[2].index(stage), x_ptrs + step * 32, mask=x_ok)
    async_copy.commit_group()


@gluon.jit
def _step(step, pending, acc, use_acc, smem, w_stream, x_stream, A_LAYOUT: gl.constexpr, META_ROWS: gl.constexpr):
    """Start the MMA of one step and make the operands of a later step ready.

    Through registers (``smem`` is x's MMA buffers alone): ``pending`` holds the operands of this
    step and of the ``AHEAD - 1`` after it, loaded earlier, and comes back one step on with the
    step ``AHEAD`` later loaded. With ``AHEAD`` = 1 that load is issued before this step's
    operands are used (else it would have no time to land); from 2 after, into the registers
    those operands leave free (loaded before, it would need its own, and ptxas would copy them
    back at the end of the loop, waiting for the load).
    Through the ring (``smem[1:]``, ``stages``; ``pending`` is empty): wait for this step's copy
    group, start the copies of the step ``stages - 1`` later, read this step's operands.
    Either way x goes to the MMA through shared buffer ``step % 2`` (``smem[0]``), K permuted."""
    U: gl.constexpr = w_stream[0].shape[1]
    x_smem = smem[0]
    RING: gl.constexpr = len(smem) > 1
    if RING:  # (x_smem, value ring, metadata ring, x ring)
        rings = smem[1:]
        STAGES: gl.constexpr = rings[0].shape[0]
        turn = step // U
        async_copy.wait_group(STAGES - 2)  # this step's group (and all older ones) has landed
        # into the stage read one step ago (Triton puts a barrier between those reads and these copies)
        _copy_step(rings, (turn + STAGES - 1) % STAGES, w_stream, x_stream, step + (STAGES - 1) * U)
        v = rings[0].index(turn % STAGES).load(w_stream[0].type.layout)
        e = rings[1].index(turn % STAGES).load(w_stream[3].type.layout)
        xt = rings[2].index(turn % STAGES).load(x_stream[0].type.layout)
    else:
        AHEAD: gl.constexpr = len(pending)
        v, e, xt = pending[0]
        if AHEAD == 1:
            loaded = _load_step(w_stream, x_stream, step + U)
    x_buf = x_smem.index((step // U) % 2)
    x_buf.store(_permute_x(xt))
    fence_async_shared()  # the MMA reads shared memory through the async proxy
    a = _expand(v, e, xt.dtype, A_LAYOUT, META_ROWS)
    if not RING:
        if AHEAD > 1:
            loaded = _load_step(w_stream, x_stream, step + AHEAD * U)
        pending = pending[1:] + (loaded,)
    acc = warpgroup_mma(a, x_buf.permute((1, 0)), acc, use_acc=use_acc, is_async=True)
    return acc, pending


@gluon.jit(do_not_specialize=["M"])
def _wgmma_kernel(
    x_ptr,  # [M, K] fp16/bf16, unit stride along K
    v_ptr,  # int32 [NT, KB, 32, 4]
    e_ptr,  # int32 [NT, KB, 16]
    bias_ptr,
    y_ptr,  # [M, N]
    ws_ptr,  # fp32: the splits' partial sums (SPLIT_K > 1 only)
    flag_ptr,  # int32 per (row group, token group)
    M,
    N,
    K,
    NT,
    KB,
    stride_xm,
    stride_ym,
    HAS_BIAS: gl.constexpr,
    G: gl.constexpr,
    T: gl.constexpr,
    U: gl.constexpr,
    SPLIT_K: gl.constexpr,
    AHEAD: gl.constexpr,
    STAGES: gl.constexpr,
    META_ROWS: gl.constexpr,
):
    DTYPE: gl.constexpr = x_ptr.dtype.element_ty
    KS: gl.constexpr = 32 * U  # dense columns per step
    MMA: gl.constexpr = _mma_layout(G, T)
    A_LAYOUT: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2)
    LV: gl.constexpr = gl.SliceLayout(4, _group_layout(G, U))  # [4G, U, 32, 4]
    LE: gl.constexpr = gl.SliceLayout(3 if META_ROWS else 4, _meta_layout(G, U))  # [4G, U, 32, 2]
    LX: gl.constexpr = _x_layout(G, T, KS)
    # a row of x's step is 2*KS bytes: the widest swizzle that fits it (fewest bank conflicts)
    X_SMEM: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=min(2 * KS, 128), element_bitwidth=16, rank=2)

    if STAGES > 0:  # cp.async copies x 16 bytes at a time, and the compiler must know it may: the
        # 2:4 format has K % 8 == 0 and the launcher gives x rows of 16-byte multiples, which these
        # no-op roundings tell it (multiple_of hints on scalar arguments do not reach cp.async)
        K = K // 8 * 8
        stride_xm = stride_xm // 8 * 8
    if SPLIT_K == 1:
        first = 0
        end = KB
    else:  # runs of whole steps
        per_split = gl.cdiv(gl.cdiv(KB, SPLIT_K), U) * U
        first = gl.program_id(2) * per_split
        end = gl.minimum(first + per_split, KB)
    w_stream = _weight_stream(v_ptr, e_ptr, NT, KB, first, end, LV, LE)
    x_stream = _x_stream(x_ptr, M, K, stride_xm, first, end, T, KS, LX)
    x_smem = gl.allocate_shared_memory(DTYPE, [2, T, KS], X_SMEM)

    # The first step outside the loop: the accumulator is then only ever written by MMAs while
    # one is in flight (ptxas serializes every wgmma otherwise, C7515). Then two steps per
    # iteration: their A operands are two sets of registers, each expanded while the other's MMA
    # runs (a wgmma reads its A registers until a wait retires it: rewriting them earlier is
    # undefined). A step past the end loads zeros (and valid metadata) and adds nothing.
    smem = (x_smem,)
    pending = ()
    if STAGES > 0:  # a ring of all operands filled by cp.async, STAGES - 1 steps ahead
        smem = smem + _rings(STAGES, w_stream, x_stream)
        for ahead in gl.static_range(STAGES - 1):
            _copy_step(smem[1:], ahead, w_stream, x_stream, ahead * U)
    else:
        for ahead in gl.static_range(AHEAD):
            pending = pending + (_load_step(w_stream, x_stream, ahead * U),)
    acc = gl.zeros([64 * G, T], gl.float32, MMA)
    acc, pending = _step(0, pending, acc, False, smem, w_stream, x_stream, A_LAYOUT, META_ROWS)
    acc = warpgroup_mma_wait(1, deps=[acc])  # (one MMA in flight: nothing to wait for)
    for step in range(U, end - first, 2 * U):
        acc, pending = _step(step, pending, acc, True, smem, w_stream, x_stream, A_LAYOUT, META_ROWS)
        acc = warpgroup_mma_wait(1, deps=[acc])  # the step before has finished: its x buffer is free
        acc, pending = _step(step + U, pending, acc, True, smem, w_stream, x_stream, A_LAYOUT, META_ROWS)
        acc = warpgroup_mma_wait(1, deps=[acc])
    acc = warpgroup_mma_wait(0, deps=[acc])
    if STAGES > 0:  # the copies issued past the end (masked: zeros) must land before the program ends
        async_copy.wait_group(0)

    OUT: gl.constexpr = gl.BlockedLayout([1, 1], [32, 1], [1, 4 * G], [0, 1])  # rows along lanes: coalesced
    out = gl.convert_layout(acc, OUT)
    n_out = gl.program_id(0) * (64 * G) + gl.expand_dims(gl.arange(0, 64 * G, layout=gl.SliceLayout(1, OUT)), 1)
    m_out = gl.program_id(1) * T + gl.expand_dims(gl.arange(0, T, layout=gl.SliceLayout(0, OUT)), 0)
    ok = (n_out < N) & (m_out < M)
    if SPLIT_K == 1:
        _store_output(out, y_ptr, bias_ptr, m_out, n_out, ok, stride_ym, HAS_BIAS)
    else:
        local = (n_out - gl.program_id(0) * (64 * G)) * T + (m_out - gl.program_id(1) * T)
        _meet_splits(
            out,
            local,
            64 * G * T,
            ws_ptr,
            flag_ptr,
            y_ptr,
            bias_ptr,
            m_out,
            n_out,
            ok,
            stride_ym,
            HAS_BIAS,
            SPLIT_K,
            4 * G,
        )


@functools.cache
def _capability(device_index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device_index)  # once per device: launches are host-bound


def launch_wgmma(
    x2d: torch.Tensor,
    w: Sparse24Fragments,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    cfg: WgmmaConfig,
    *,
    warmup: bool = False,
) -> torch.Tensor:
    """Write ``x2d @ W.T (+ bias)`` into ``out`` [M, N] with the warpgroup-MMA kernel.

    ``warmup=True`` only compiles (usable under ``triton.AsyncCompileMode``)."""
    if x2d.is_cuda and _capability(x2d.get_device())[0] != 9:
        major, minor = _capability(x2d.get_device())
        raise ValueError(f"the wgmma kernel needs a Hopper GPU (sm_90), got sm_{major}{minor}; use spmma or cublas")
    if x2d.stride(1) != 1 or x2d.stride(0) % 8 or x2d.data_ptr() % 16:  # x is read in 16-byte loads
        x2d = x2d.clone(memory_format=torch.contiguous_format)
    cfg.check()
    grid = cfg.grid(w.shape[0], x2d.shape[0])
    args = fragment_kernel_args(x2d, w, bias, out, grid, cfg.split_k, 64 * cfg.G * cfg.T)
    options = dict(
        HAS_BIAS=bias is not None,
        G=cfg.G,
        T=cfg.T,
        U=cfg.U,
        SPLIT_K=cfg.split_k,
        AHEAD=cfg.ahead,
        STAGES=cfg.stages,
        META_ROWS=w.meta_order == "rows",
        num_warps=cfg.num_warps,
    )
    if warmup:
        _wgmma_kernel.warmup(*args, grid=grid, **options)
    else:
        _wgmma_kernel[grid](*args, **options)
    return out
