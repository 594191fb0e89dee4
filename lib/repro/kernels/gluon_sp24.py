"""``spmma``: ``y = x @ W.T`` on the sparse tensor cores (``mma.sp``), written in Gluon.

Plain Triton has no way to issue ``mma.sp``: ``tl.dot`` is dense, and an inline-asm call only works
if every lane holds exactly its own piece of each operand, which Triton's layout passes do not
promise. Gluon, Triton's explicit-layout dialect, does: a ``BlockedLayout`` fixes which lane and
register hold which element, so the weight fragments of ``fragments.py`` are loaded straight into
the registers ``mma.sp`` reads, and one ``inline_asm_elementwise`` with ``pack=4`` per k-block
issues the instruction. The hardware skips the pruned half of the products and expands nothing.

One program (CTA) owns ``R*W`` 16-row tiles and ``8*T`` tokens; its ``R*S`` warps are laid out
as ``[R, S]``: warp ``(r, s)`` runs ``W`` row tiles (reusing each x register ``W`` times) over the
``s``-th of ``S`` equal slices of K (or, with ``interleave``, every ``S``-th turn of ``U``
k-blocks), ``U`` k-blocks per loop iteration (``U`` independent 16-byte weight loads in flight
per lane, ``U`` separate accumulators, or one with ``chain``), and the ``S`` partial sums meet
once at the end, through shared memory laid out without bank conflicts (``_sum_k_slices``), so
there are no atomics and no memset. With ``split_k`` > 1, K is first cut into that many runs,
one per program along a third grid axis, whose sums ``_meet_splits`` adds up. With ``stages``,
the operands go through a ring in shared memory filled by ``cp.async`` instead of registers.
The register tensors are 6-D, ``[row tile R*W, K slice S, lane, token tile T, k-block U, register 4]``.
x is read either as the four 4-byte pairs each lane's B registers hold, or (``wide_x``) as one
16-byte load per lane whose words are then moved into place by shuffles (``_QUAD_TRANSPOSE``).

Needs ``sm_80`` or newer (``mma.sp::ordered_metadata``, PTX 8.5) and fp16 or bf16.
"""

from __future__ import annotations

import functools

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy

from . import fast_launch
from .fragments import Sparse24Fragments, SpmmaConfig
from .scratch import split_flags, split_workspace

# a barrier of the program's threads: ``gl.barrier`` from Triton 3.7, ``gl.thread_barrier`` before
_cta_barrier = gl.barrier if hasattr(gl, "barrier") else gl.thread_barrier

_MMA = (
    "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.{t}.{t}.f32 "
    "{{$0, $1, $2, $3}}, {{$8, $9, $10, $11}}, {{$12, $13, $14, $15}}, {{$4, $5, $6, $7}}, $16, 0x0;"
)
_MMA_F16 = gl.constexpr(_MMA.format(t="f16"))
_MMA_BF16 = gl.constexpr(_MMA.format(t="bf16"))
# operands: d0-3 (out), c0-3, a0-3, b0-3, then four copies of the metadata word (only $16 is read)
_CONSTRAINTS = gl.constexpr("=f,=f,=f,=f,f,f,f,f,r,r,r,r,r,r,r,r,r,r,r,r")

# ``wide_x``: lane (g, q) of a group of four loaded x words 4q..4q+3 of token g; mma.sp wants words
# q, q+4, q+8, q+12, so the group's 4x4 block of words is transposed with two butterfly rounds,
# each swapping one bit of (lane, register): round b sends the register the partner lacks and
# keeps the other one. Operands: out 0-3, words 4-7, then four copies of q (only $8 is read).
_QUAD_TRANSPOSE = gl.constexpr(
    "{ .reg .pred %xp0, %xp1; .reg .b32 %xs, %xy, %xa0, %xa1, %xa2, %xa3; "
    "and.b32 %xs, $8, 1; setp.ne.b32 %xp0, %xs, 0; and.b32 %xs, $8, 2; setp.ne.b32 %xp1, %xs, 0; "
    "selp.b32 %xs, $4, $5, %xp0; shfl.sync.bfly.b32 %xy, %xs, 1, 31, 0xffffffff; "
    "selp.b32 %xa0, %xy, $4, %xp0; selp.b32 %xa1, $5, %xy, %xp0; "
    "selp.b32 %xs, $6, $7, %xp0; shfl.sync.bfly.b32 %xy, %xs, 1, 31, 0xffffffff; "
    "selp.b32 %xa2, %xy, $6, %xp0; selp.b32 %xa3, $7, %xy, %xp0; "
    "selp.b32 %xs, %xa0, %xa2, %xp1; shfl.sync.bfly.b32 %xy, %xs, 2, 31, 0xffffffff; "
    "selp.b32 $0, %xy, %xa0, %xp1; selp.b32 $2, %xa2, %xy, %xp1; "
    "selp.b32 %xs, %xa1, %xa3, %xp1; shfl.sync.bfly.b32 %xy, %xs, 2, 31, 0xffffffff; "
    "selp.b32 $1, %xy, %xa1, %xp1; selp.b32 $3, %xa3, %xy, %xp1; }"
)


# ``l2_ahead``: ask L2 for a later step's weight bytes without registers to hold them; the loads of
# that step then hit L2. One value address (16 bytes per lane, the k-block's 512) and one metadata
# address per lane and k-block; the result is a dummy the compiler must keep (not pure).
_L2_PREFETCH = gl.constexpr("prefetch.global.L2 [$1]; prefetch.global.L2 [$2]; mov.b32 $0, 0;")


@gluon.constexpr_function
def _layout(R, S, W, T, U, width):
    """Warps on ``[R, S]``, lanes on dim 2, and ``W x T x U x width`` registers per lane.

    The MMA operands use ``W`` row tiles, ``T`` token tiles and ``width`` 4; the weight registers
    (``T`` = 1), the metadata words (``width`` 1) and x (``W`` = 1) get their own layouts so each
    is loaded once, not once per register of a broadcast (the conversion to the MMA layout is then
    a register copy)."""
    return gl.BlockedLayout(
        size_per_thread=[W, 1, 1, T, U, width],
        threads_per_warp=[1, 1, 32, 1, 1, 1],
        warps_per_cta=[R, S, 1, 1, 1, 1],
        order=[5, 4, 3, 2, 1, 0],
    )


@gluon.constexpr_function
def _x_copy_layout(R, S, T, U):
    """x's words as ``_layout`` holds them for ``W`` = 1 (``[1, S, lane, T, U, 4]``), with the
    ``R`` row warps, which all read them, dealt the token tiles and then the k-blocks of a step
    to copy, so each word is copied once per program (``SpmmaConfig.check``: ``R <= T*U``)."""
    warps_t = min(R, T)
    warps_u = R // warps_t
    return gl.BlockedLayout(
        size_per_thread=[1, 1, 1, T // warps_t, U // warps_u, 4],
        threads_per_warp=[1, 1, 32, 1, 1, 1],
        warps_per_cta=[1, S, 1, warps_t, warps_u, 1],
        order=[5, 4, 3, 2, 1, 0],
    )


@gluon.constexpr_function
def _axis_layout(layout, axis, rank):
    """The 1-D layout of ``layout``'s dimension ``axis`` (all other dimensions sliced away)."""
    for dim in reversed(range(rank)):
        if dim != axis:
            layout = gl.SliceLayout(dim, layout)
    return layout


@gluon.jit
def _index(n: gl.constexpr, axis: gl.constexpr, layout: gl.constexpr, RANK: gl.constexpr = 6):
    """``arange(n)`` along ``axis`` of a ``RANK``-D ``layout``, size 1 along the other dimensions."""
    idx = gl.arange(0, n, layout=_axis_layout(layout, axis, RANK))
    for dim in gl.static_range(RANK):
        if dim != axis:
            idx = gl.expand_dims(idx, dim)
    return idx


@gluon.jit
def _k_blocks(KB, per_split, per_slice, TURN: gl.constexpr, SPLIT_K: gl.constexpr, layout: gl.constexpr):
    """The k-block each (K slice, k-block of a step) position loads first, and the end that bounds
    it. The program's share of K is the ``program_id(2)``-th run of ``per_split`` k-blocks (all of
    K without split-K); its warps take a contiguous slice of ``per_slice`` k-blocks each, or with
    ``TURN`` > 0 turns of ``TURN`` k-blocks (a step's) dealt to the ``S`` warps in order (later
    steps move ``S`` times as far). ``layout`` holds a step's k-blocks along dimension 4, or one
    of them (the others are then offsets of the loads)."""
    S: gl.constexpr = layout.warps_per_cta[1]
    U: gl.constexpr = layout.size_per_thread[4] * layout.warps_per_cta[4]
    if SPLIT_K == 1:  # constants, so the compiler spends no registers on them
        first = 0
        end = KB
    else:
        first = gl.program_id(2) * per_split
        end = gl.minimum(first + per_split, KB)
    k_slice = _index(S, 1, layout)
    if TURN > 0:
        return first + k_slice * TURN + _index(U, 4, layout), end + k_slice * 0
    else:
        return first + k_slice * per_slice + _index(U, 4, layout), gl.minimum(first + (k_slice + 1) * per_slice, end)


@gluon.jit
def _weight_stream(ptr, NT, KB, per_split, per_slice, WORDS: gl.constexpr, TURN: gl.constexpr,
                   SPLIT_K: gl.constexpr, layout: gl.constexpr):
    """Pointers to this program's first k-blocks of weight words (``WORDS`` int32 per tile and
    k-block: 128 value words, or 16 metadata words), plus what masks them.

    Value word of lane ``l``, register ``i``: ``4l + i``. Metadata word of lane ``4g + q``:
    ``2g + q % 2`` (lanes ``q`` = 2, 3 load a copy; the instruction reads ``q`` = 0, 1)."""
    R: gl.constexpr = layout.warps_per_cta[0] * layout.size_per_thread[0]  # row tiles per program
    tile = gl.program_id(0) * R + _index(R, 0, layout)
    kb, kb_end = _k_blocks(KB, per_split, per_slice, TURN, SPLIT_K, layout)  # k-block of the first step
    ptrs = ptr + (tile * KB + kb).to(gl.int64) * WORDS + _lane_words(WORDS, layout)
    return ptrs, tile < NT, kb, kb_end


@gluon.jit
def _lane_words(WORDS: gl.constexpr, layout: gl.constexpr):
    """The words of a tile's k-block that each lane (and register) loads: see ``_weight_stream``."""
    lane = _index(32, 2, layout)
    if WORDS == 128:
        return lane * 4 + _index(4, 5, layout)
    else:
        return (lane // 4) * 2 + lane % 2


@gluon.jit
def _clamped_meta(e_ptr, NT, KB, per_split, per_slice, TURN: gl.constexpr, SPLIT_K: gl.constexpr,
                  layout: gl.constexpr):
    """The metadata rows the staged copies read, row tiles past the last clamped onto it (k-blocks
    are clamped at each copy), and the first k-block: every word copied is a real, valid code,
    also where the values it describes are masked to zero, so no copy is masked."""
    kb, _ = _k_blocks(KB, per_split, per_slice, TURN, SPLIT_K, layout)
    return e_ptr + _clamped_tile(NT, layout) * KB * 16 + _lane_words(16, layout), kb


@gluon.jit
def _clamped_tile(NT, layout: gl.constexpr):
    """This program's row tiles (int64), those past the last clamped onto it."""
    R: gl.constexpr = layout.warps_per_cta[0] * layout.size_per_thread[0]
    return gl.minimum(gl.program_id(0) * R + _index(R, 0, layout), NT - 1).to(gl.int64)


@gluon.jit
def _l2_stream(v_ptr, e_ptr, NT, KB, per_split, per_slice, TURN: gl.constexpr, SPLIT_K: gl.constexpr,
               layout: gl.constexpr):
    """Per lane and k-block of a step: the row start of its value and metadata words, and the
    first k-block (``layout`` has one register per k-block). Row tiles past the last are clamped
    onto it, so that every address a prefetch is given lies inside the weight."""
    lane = _index(32, 2, layout)
    tile = _clamped_tile(NT, layout) * KB
    kb, _ = _k_blocks(KB, per_split, per_slice, TURN, SPLIT_K, layout)  # the clamp to KB - 1 bounds it
    return v_ptr + tile * 128 + lane * 4, e_ptr + tile * 16 + lane % 16, kb


@gluon.jit
def _l2_prefetch(l2_stream, step, KB, STRIDE: gl.constexpr):
    """Prefetch into L2 the k-blocks ``step`` steps in (clamped to the row's last k-block)."""
    v_rows, e_rows, kb = l2_stream
    block = gl.minimum(kb + step * STRIDE, KB - 1)
    gl.inline_asm_elementwise(_L2_PREFETCH, "=r,l,l", [v_rows + block * 128, e_rows + block * 16], gl.int32, False, 1)


@gluon.jit
def _x_stream(x_ptr, M, KB, per_split, per_slice, stride_xm, T: gl.constexpr, TURN: gl.constexpr,
              SPLIT_K: gl.constexpr, WIDE_X: gl.constexpr, layout: gl.constexpr):
    """Pointers to x's words of this program's first k-blocks, as int32 pairs, plus what masks
    them: B register i of lane (g, q) is the pair k = 2q + 8i, 2q + 8i + 1 of token g, word
    q + 4i of the k-block; ``WIDE_X`` loads words 4q + i instead and transposes them
    (``_QUAD_TRANSPOSE``)."""
    lane = _index(32, 2, layout)
    q = lane % 4
    reg = _index(4, 5, layout)
    token = gl.program_id(1) * (8 * T) + 8 * _index(T, 3, layout) + lane // 4
    kb, kb_end = _k_blocks(KB, per_split, per_slice, TURN, SPLIT_K, layout)
    if WIDE_X:  # one bound per 16-byte load (its last word), so the load stays one instruction
        b_word = kb * 16 + 4 * q + reg
        b_last = kb * 16 + 4 * q + 3 + reg * 0  # K % 8 == 0 (the format's rule): all four or none
    else:
        b_word = kb * 16 + q + 4 * reg
        b_last = b_word
    x_words = x_ptr.to(gl.pointer_type(gl.int32), bitcast=True)
    b_ptrs = x_words + token.to(gl.int64) * (stride_xm // 2) + b_word
    return b_ptrs, token < M, kb, kb_end, b_last


@gluon.jit
def _lane_q(layout: gl.constexpr):
    """The lane's ``q`` (lane % 4) in each of its x registers, for ``_QUAD_TRANSPOSE``."""
    return _index(32, 2, layout) % 4 + _index(4, 5, layout) * 0


@gluon.jit
def _load_step(a_stream, e_stream, b_stream, step, K, STRIDE: gl.constexpr, PARTS: gl.constexpr):
    """The weight words, metadata words and x pairs of the k-blocks at ``step``, which lie
    ``STRIDE * step`` k-blocks past the first ones: one load each for the step (``PARTS`` = 1),
    or for each of its ``PARTS`` k-blocks (``chain``), returned as tuples."""
    if PARTS == 1:
        return _load_kblocks(a_stream, e_stream, b_stream, step * STRIDE, K)
    else:
        a, e, b = (), (), ()
        for u in gl.static_range(PARTS):
            a_u, e_u, b_u = _load_kblocks(a_stream, e_stream, b_stream, step * STRIDE + u, K)
            a, e, b = a + (a_u,), e + (e_u,), b + (b_u,)
        return a, e, b


@gluon.jit
def _load_kblocks(a_stream, e_stream, b_stream, at, K):
    """The operands of the k-blocks ``at`` k-blocks past the streams' first ones (K is even: a
    pair of x is in bounds when its word is); masked values and x load as zeros, masked metadata
    as a valid code."""
    a_ptrs, a_tile_ok, a_kb, a_kb_end = a_stream
    e_ptrs, e_tile_ok, e_kb, e_kb_end = e_stream
    b_ptrs, token_ok, kb, kb_end, b_last = b_stream
    a = gl.load(a_ptrs + at * 128, mask=a_tile_ok & (a_kb + at < a_kb_end), other=0)
    e = gl.load(e_ptrs + at * 16, mask=e_tile_ok & (e_kb + at < e_kb_end), other=0x44444444)
    b_ok = token_ok & (kb + at < kb_end) & (b_last + at * 16 < K // 2)
    b = gl.load(b_ptrs + at * 16, mask=b_ok, other=0)
    return a, e, b


@gluon.jit
def _stage_buffers(STAGES: gl.constexpr, a_ptrs, e_ptrs, b_ptrs):
    """Shared memory for ``STAGES`` steps of weight words, metadata words and x words, each in
    the shape of its registers. A warp reads back the weight words it copied itself; x's words,
    one copy per program, are read by all ``R`` row warps (Triton puts a barrier after each wait
    for the copies, as for any shared memory written by one thread and read by another). In
    memory a lane's words of one k-block lie together and the 32 lanes' runs follow each other,
    so a warp's copy or read of a k-block touches one contiguous run of bytes, every bank once
    per pass (no bank conflicts; the stage is outermost)."""
    lanes_inner: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [5, 2, 4, 3, 1, 0])
    return (
        gl.allocate_shared_memory(gl.int32, [STAGES] + a_ptrs.shape, lanes_inner),
        gl.allocate_shared_memory(gl.int32, [STAGES] + e_ptrs.shape, lanes_inner),
        gl.allocate_shared_memory(gl.int32, [STAGES] + b_ptrs.shape, lanes_inner),
    )


@gluon.jit
def _copy_step(buffers, stage, a_stream, meta, b_stream, step, K, KB, STRIDE: gl.constexpr):
    """Start copying the ``U`` k-blocks at ``step`` into ``stage`` (``cp.async``: the bytes are
    in flight without registers to land in); masked values and x arrive as zeros."""
    a_buf, e_buf, b_buf = buffers
    a_ptrs, a_tile_ok, a_kb, a_kb_end = a_stream
    e_rows, e_kb = meta
    b_ptrs, token_ok, kb, kb_end, b_last = b_stream
    step = step * STRIDE
    a_ok = a_tile_ok & (a_kb + step < a_kb_end)
    async_copy.async_copy_global_to_shared(a_buf.index(stage), a_ptrs + step * 128, mask=a_ok)
    async_copy.async_copy_global_to_shared(e_buf.index(stage), e_rows + gl.minimum(e_kb + step, KB - 1) * 16)
    b_ok = token_ok & (kb + step < kb_end) & (b_last + step * 16 < K // 2)
    async_copy.async_copy_global_to_shared(b_buf.index(stage), b_ptrs + step * 16, mask=b_ok)
    async_copy.commit_group()


@gluon.jit
def _read_kblock(buffers, stage, u: gl.constexpr, LA: gl.constexpr, LE: gl.constexpr, LB: gl.constexpr):
    """The operands of k-block ``u`` of ``stage`` (layouts of one k-block)."""
    a_buf, e_buf, b_buf = buffers
    a = a_buf.index(stage).slice(u, 1, 4).load(LA)
    e = e_buf.index(stage).slice(u, 1, 4).load(LE)
    return a, e, b_buf.index(stage).slice(u, 1, 4).load(LB)


@gluon.jit
def _mma_step(acc, a, e, b, q, L: gl.constexpr, BF16: gl.constexpr, WIDE_X: gl.constexpr, PARTS: gl.constexpr):
    """The MMAs of a step as ``_load_step`` loaded it: into ``U`` accumulators at once, or (``PARTS``
    k-blocks, ``chain``) one k-block after the other into one accumulator per row and token tile."""
    if PARTS == 1:
        return _mma(acc, a, e, b, q, L, BF16, WIDE_X)
    else:
        for u in gl.static_range(PARTS):
            acc = _mma(acc, a[u], e[u], b[u], q, L, BF16, WIDE_X)
        return acc


@gluon.jit
def _mma(acc, a, e, b, q, L: gl.constexpr, BF16: gl.constexpr, WIDE_X: gl.constexpr):
    """One ``mma.sp`` per row tile, k-block and token tile; the operands are broadcast to the MMA
    layout (a register copy: each was loaded once per lane, see ``_layout``). With ``WIDE_X`` the
    x words are first moved to their MMA registers (here, where the MMAs need them, not at the
    load: a shuffle waits for its load, and the warp issues in order)."""
    if WIDE_X:
        b = gl.inline_asm_elementwise(_QUAD_TRANSPOSE, "=r,=r,=r,=r,r,r,r,r,r,r,r,r", [b, q], gl.int32, True, 4)
    a = gl.convert_layout(a, L)
    e = gl.convert_layout(e, L)
    b = gl.convert_layout(b, L)
    if BF16:
        return gl.inline_asm_elementwise(_MMA_BF16, _CONSTRAINTS, [acc, a, b, e], gl.float32, True, 4)
    else:
        return gl.inline_asm_elementwise(_MMA_F16, _CONSTRAINTS, [acc, a, b, e], gl.float32, True, 4)


@gluon.constexpr_function
def _summing_layout(R, S, W, T):
    """``[row tile, K slice, lane, token tile, register]`` with an output's ``S`` partial sums in
    one thread's registers: the ``R`` row warps keep their row tiles, the ``S`` K-slice warps
    take turns of token tiles, then of the four registers, then of row tiles (more would repeat)."""
    warps_t = min(S, T)
    warps_reg = min(S // warps_t, 4)
    warps_row = S // warps_t // warps_reg
    return gl.BlockedLayout(
        size_per_thread=[max(W // warps_row, 1), S, 1, T // warps_t, 4 // warps_reg],
        threads_per_warp=[1, 1, 32, 1, 1],
        warps_per_cta=[R * warps_row, 1, 1, warps_t, warps_reg],
        order=[4, 3, 2, 1, 0],
    )


@gluon.jit
def _sum_k_slices(acc, R: gl.constexpr, S: gl.constexpr, W: gl.constexpr, T: gl.constexpr):
    """The accumulators summed over a step's k-blocks (in registers) and the ``S`` K slices (the
    warps' partial sums meet in shared memory, where a warp's 32 lanes write and read 32
    consecutive words per register: one pass of the banks each; the summed layout Triton would
    pick reads and writes words a row of registers apart, up to 16 passes each)."""
    part = gl.sum(acc, axis=4)
    if S == 1:
        return gl.sum(part, axis=1)
    else:
        lanes_inner: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [2, 4, 3, 1, 0])
        partials = gl.allocate_shared_memory(gl.float32, part.shape, lanes_inner, part)
        return gl.sum(partials.load(_summing_layout(R, S, W, T)), axis=1)


@gluon.jit
def _store_output(out, y_ptr, bias_ptr, m_out, n_out, ok, stride_ym, HAS_BIAS: gl.constexpr):
    if HAS_BIAS:
        out += gl.load(bias_ptr + n_out, mask=ok, other=0.0).to(gl.float32)
    gl.store(y_ptr + m_out.to(gl.int64) * stride_ym + n_out, out.to(y_ptr.dtype.element_ty), mask=ok)


@gluon.jit
def _fence(NUM_WARPS: gl.constexpr):
    """``fence.acq_rel.gpu`` in every thread: its global stores are ordered before, and the global
    loads after, whatever this program does next with the other programs' counter."""
    one_per_thread: gl.constexpr = gl.BlockedLayout([1], [32], [NUM_WARPS], [0])
    gl.inline_asm_elementwise(
        "fence.acq_rel.gpu; mov.b32 $0, 0;", "=r,r", [gl.arange(0, 32 * NUM_WARPS, layout=one_per_thread)],
        gl.int32, False, 1,
    )


@gluon.jit
def _meet_splits(out, local, TILE: gl.constexpr, ws_ptr, flag_ptr, y_ptr, bias_ptr, m_out, n_out, ok, stride_ym,
                 HAS_BIAS: gl.constexpr, SPLIT_K: gl.constexpr, NUM_WARPS: gl.constexpr,
                 ONE_AT_A_TIME: gl.constexpr = False):
    """Split-K across programs without a memset or a second launch: every split stores its fp32
    partial sum, then counts itself in on its tile's flag; the split that arrives last adds all
    partial sums in split order (the same bits whichever split that is), writes ``y`` and puts
    the flag back to 0 for the next launch. The workspace is ``[split, token group, row group,
    TILE]``: ``local`` places each of the program's ``TILE`` floats in its run, all in bounds, so
    no mask is needed. ``ONE_AT_A_TIME`` adds the partial sums in a loop rather than unrolled, so
    that a large tile holds one partial in registers at a time (the same order, the same bits)."""
    tile = gl.program_id(1) * gl.num_programs(0) + gl.program_id(0)
    tiles = gl.num_programs(0) * gl.num_programs(1)
    split = gl.program_id(2)
    ws = ws_ptr + tile.to(gl.int64) * TILE + local
    STRIDE_SPLIT = tiles.to(gl.int64) * TILE  # workspace floats between two splits
    gl.store(ws + split * STRIDE_SPLIT, out)
    _fence(NUM_WARPS)
    _cta_barrier()  # every thread's partial is stored (and fenced) before the count
    if gl.atomic_add(flag_ptr + tile, 1, sem="acq_rel", scope="gpu") == SPLIT_K - 1:
        _fence(NUM_WARPS)
        total = gl.zeros_like(out)
        if ONE_AT_A_TIME:  # a loop: one partial's registers at a time (large tiles), the same order
            for j in range(SPLIT_K):
                total += gl.load(ws + j * STRIDE_SPLIT, cache_modifier=".cg")
        else:
            for j in gl.static_range(SPLIT_K):  # its own partial too: the same bits as ``out``
                # from L2, not L1: other SMs wrote these bytes during this launch ("cg")
                total += gl.load(ws + j * STRIDE_SPLIT, cache_modifier=".cg")
        _store_output(total, y_ptr, bias_ptr, m_out, n_out, ok, stride_ym, HAS_BIAS)
        gl.atomic_xchg(flag_ptr + tile, 0, sem="relaxed", scope="gpu")


@gluon.jit(do_not_specialize=["M"])
def _spmma_kernel(
    x_ptr,  # [M, K] fp16/bf16, unit stride along K, read as int32 pairs
    v_ptr,  # int32 [NT, KB, 32, 4]
    e_ptr,  # int32 [NT, KB, 16]
    bias_ptr,
    y_ptr,  # [M, N]
    ws_ptr,  # fp32: the splits' partial sums (SPLIT_K > 1 only; see _meet_splits)
    flag_ptr,  # int32 per (row group, token group): splits done so far, back to 0 at the end
    M,
    N,
    K,
    NT,
    KB,
    stride_xm,  # in elements
    stride_ym,
    HAS_BIAS: gl.constexpr,
    BF16: gl.constexpr,
    R: gl.constexpr,
    S: gl.constexpr,
    W: gl.constexpr,
    U: gl.constexpr,
    T: gl.constexpr,
    PREFETCH: gl.constexpr,
    WIDE_X: gl.constexpr,
    INTERLEAVE: gl.constexpr,
    L2_AHEAD: gl.constexpr,
    SPLIT_K: gl.constexpr,
    STAGES: gl.constexpr,
    CHAIN: gl.constexpr,
):
    # register tensors hold a step's U k-blocks, or with CHAIN one k-block each (a tuple of U)
    PARTS: gl.constexpr = U if CHAIN else 1
    UR: gl.constexpr = U // PARTS
    L: gl.constexpr = _layout(R, S, W, T, UR, 4)  # MMA operands and accumulators
    LB: gl.constexpr = _layout(R, S, 1, T, UR, 4)  # x: one load per lane, shared by the W row tiles
    STRIDE: gl.constexpr = S if INTERLEAVE else 1  # k-blocks a step moves, per k-block of a slice
    TURN: gl.constexpr = U if INTERLEAVE else 0
    per_split = gl.cdiv(KB, SPLIT_K)  # k-blocks per program
    per_slice = gl.cdiv(per_split, S)  # k-blocks per warp (with INTERLEAVE, the last turn may be short)
    LA: gl.constexpr = _layout(R, S, W, 1, UR, 4)
    LE: gl.constexpr = _layout(R, S, W, 1, UR, 1)
    a_stream = _weight_stream(v_ptr, NT, KB, per_split, per_slice, 128, TURN, SPLIT_K, LA)
    e_stream = _weight_stream(e_ptr, NT, KB, per_split, per_slice, 16, TURN, SPLIT_K, LE)
    a_ptrs, e_ptrs = a_stream[0], e_stream[0]

    b_stream = _x_stream(x_ptr, M, KB, per_split, per_slice, stride_xm, T, TURN, SPLIT_K, WIDE_X, LB)
    q_mma = _lane_q(LB)

    if L2_AHEAD > 0:  # one prefetch per k-block of a step
        l2_stream = _l2_stream(v_ptr, e_ptr, NT, KB, per_split, per_slice, TURN, SPLIT_K, _layout(R, S, W, 1, U, 1))
    AHEAD: gl.constexpr = L2_AHEAD * U  # k-blocks of the slice between a prefetch and its load
    if STAGES > 0:
        # A ring of STAGES steps in shared memory: STAGES - 1 steps are in flight while one is
        # multiplied (Marlin's pipeline, IST-DASLab, for 4-bit weights). Registers hold one
        # k-block at a time: its operands, read just before its MMAs, and one accumulator per row
        # and token tile, the step's U MMAs chained (their latency is tiny next to a step's bytes)
        L1: gl.constexpr = _layout(R, S, W, T, 1, 4)
        LA1: gl.constexpr = _layout(R, S, W, 1, 1, 4)
        LE1: gl.constexpr = _layout(R, S, W, 1, 1, 1)
        LB1: gl.constexpr = _layout(R, S, 1, T, 1, 4)
        q1 = _lane_q(LB1)
        meta = _clamped_meta(e_ptr, NT, KB, per_split, per_slice, TURN, SPLIT_K, LE)
        # x is staged once per program: the R row warps share its ring, each copying a part
        x_copies = _x_stream(x_ptr, M, KB, per_split, per_slice, stride_xm, T, TURN, SPLIT_K, WIDE_X,
                             _x_copy_layout(R, S, T, U))
        buffers = _stage_buffers(STAGES, a_ptrs, e_ptrs, x_copies[0])
        acc = gl.zeros([R * W, S, 32, T, 1, 4], gl.float32, L1)
        for ahead in gl.static_range(STAGES - 1):
            _copy_step(buffers, ahead, a_stream, meta, x_copies, ahead * U, K, KB, STRIDE)
        for step in range(0, per_slice, U):
            turn = step // U
            async_copy.wait_group(STAGES - 2)  # this step's copies (and all older ones) have landed
            # into the stage read one turn ago (Triton puts a barrier between those reads and these copies)
            _copy_step(buffers, (turn + STAGES - 1) % STAGES, a_stream, meta, x_copies,
                       step + (STAGES - 1) * U, K, KB, STRIDE)
            for u in gl.static_range(U):
                a, e, b = _read_kblock(buffers, turn % STAGES, u, LA1, LE1, LB1)
                acc = _mma(acc, a, e, b, q1, L1, BF16, WIDE_X)
        # the copies issued past the end (masked: zeros) still write the ring, whose bytes the
        # epilogue's reduction may reuse: they must land first
        async_copy.wait_group(0)
    elif PREFETCH:
        acc = gl.zeros([R * W, S, 32, T, UR, 4], gl.float32, L)
        # Two register sets in turn: one set's loads are in flight while the other's MMAs run.
        # (One set rotated every step hides nothing: ptxas copies it at the end of the loop and
        # the copy waits for those loads; bench/sp24/sass.py reads this from the machine code.)
        # Steps past the slice's end load masked zeros and a valid metadata word: they add 0.
        if L2_AHEAD > 0:  # the steps the first iterations load before their prefetches
            for ahead in gl.static_range(0, AHEAD + 2 * U, U):
                _l2_prefetch(l2_stream, ahead, KB, STRIDE)
        a0, e0, b0 = _load_step(a_stream, e_stream, b_stream, 0, K, STRIDE, PARTS)
        for step in range(0, per_slice, 2 * U):
            if L2_AHEAD > 0:
                _l2_prefetch(l2_stream, step + AHEAD + 2 * U, KB, STRIDE)
                _l2_prefetch(l2_stream, step + AHEAD + 3 * U, KB, STRIDE)
            a1, e1, b1 = _load_step(a_stream, e_stream, b_stream, step + U, K, STRIDE, PARTS)
            acc = _mma_step(acc, a0, e0, b0, q_mma, L, BF16, WIDE_X, PARTS)
            a0, e0, b0 = _load_step(a_stream, e_stream, b_stream, step + 2 * U, K, STRIDE, PARTS)
            acc = _mma_step(acc, a1, e1, b1, q_mma, L, BF16, WIDE_X, PARTS)
    else:
        acc = gl.zeros([R * W, S, 32, T, UR, 4], gl.float32, L)
        if L2_AHEAD > 0:
            for ahead in gl.static_range(0, AHEAD, U):
                _l2_prefetch(l2_stream, ahead, KB, STRIDE)
        for step in range(0, per_slice, U):
            if L2_AHEAD > 0:
                _l2_prefetch(l2_stream, step + AHEAD, KB, STRIDE)
            a, e, b = _load_step(a_stream, e_stream, b_stream, step, K, STRIDE, PARTS)
            acc = _mma_step(acc, a, e, b, q_mma, L, BF16, WIDE_X, PARTS)

    # D register i of lane (g, q): row (output feature) g + 8*(i // 2), column (token) 2q + i % 2,
    # indexed straight in the summed layout [row tile, lane, token tile, register].
    out = _sum_k_slices(acc, R, S, W, T)
    LO: gl.constexpr = out.type.layout
    lane = _index(32, 1, LO, 4)
    reg = _index(4, 3, LO, 4)
    n_out = gl.program_id(0) * (16 * R * W) + 16 * _index(R * W, 0, LO, 4) + lane // 4 + 8 * (reg // 2)
    m_out = gl.program_id(1) * (8 * T) + 8 * _index(T, 2, LO, 4) + 2 * (lane % 4) + reg % 2
    ok = (n_out < N) & (m_out < M)
    if SPLIT_K == 1:
        _store_output(out, y_ptr, bias_ptr, m_out, n_out, ok, stride_ym, HAS_BIAS)
    else:
        # the workspace holds the registers in their own order, [row tile, lane, token tile,
        # register]: each thread stores and loads runs of four floats
        local = ((_index(R * W, 0, LO, 4) * 32 + lane) * T + _index(T, 2, LO, 4)) * 4 + reg
        _meet_splits(out, local, R * W * 128 * T, ws_ptr, flag_ptr, y_ptr, bias_ptr, m_out, n_out, ok, stride_ym,
                     HAS_BIAS, SPLIT_K, R * S)


def fragment_kernel_args(x2d, w: Sparse24Fragments, bias, out, grid: tuple, split_k: int, tile_floats: int) -> tuple:
    """The runtime arguments of the kernels that read fragment order (``spmma``, ``wgmma``), in
    their order; with ``split_k`` > 1 the workspace (``tile_floats`` per output tile and split)
    and the per-tile counters of ``_meet_splits``."""
    m, k = x2d.shape
    nt, kb = w.values.shape[:2]
    if split_k > 1:
        tiles = grid[0] * grid[1]
        ws, flags = split_workspace(out.device, split_k * tiles * tile_floats), split_flags(out.device, tiles)
    else:
        ws, flags = out, out  # not read
    bias_or_out = out if bias is None else bias
    return (x2d, w.values, w.meta, bias_or_out, out, ws, flags, m, w.shape[0], k, nt, kb, x2d.stride(0), out.stride(0))


def spmma_call(x2d: torch.Tensor, w: Sparse24Fragments, bias: torch.Tensor | None, out: torch.Tensor,
               cfg: SpmmaConfig) -> tuple[object, tuple, tuple, dict]:
    """What ``launch_spmma`` hands ``fast_launch.launch``: ``(kernel, grid, args, options)``, x
    copied where its rows are not aligned 4-byte pairs. Apart so that the dispatcher can bind
    the launch and the benchmark time the kernel's launch alone."""
    if x2d.stride(0) % 2 or x2d.data_ptr() % 4:  # x is read as aligned 4-byte pairs (K is even)
        x2d = x2d.clone(memory_format=torch.contiguous_format)  # a fresh, aligned copy
    options = _spmma_options(cfg, bias is not None, x2d.dtype == torch.bfloat16)
    grid = cfg.grid(w.shape[0], x2d.shape[0])
    args = fragment_kernel_args(x2d, w, bias, out, grid, cfg.split_k, 128 * cfg.R * cfg.W * cfg.T)
    return _spmma_kernel, grid, args, options


@functools.lru_cache(maxsize=1024)
def _spmma_options(cfg: SpmmaConfig, has_bias: bool, bf16: bool) -> dict:
    """The kernel's constexprs and launch options for one tiling, the tiling checked once (this
    runs on every decode call; the dict is shared, and Triton and ``fast_launch`` only read it)."""
    cfg.check()
    return dict(
        HAS_BIAS=has_bias,
        BF16=bf16,
        R=cfg.R,
        W=cfg.W,
        S=cfg.S,
        U=cfg.U,
        T=cfg.T,
        PREFETCH=cfg.prefetch,
        WIDE_X=cfg.wide_x,
        INTERLEAVE=cfg.interleave,
        L2_AHEAD=cfg.l2_ahead,
        SPLIT_K=cfg.split_k,
        STAGES=cfg.stages,
        CHAIN=cfg.chain,
        num_warps=cfg.num_warps,
    )


def launch_spmma(
    x2d: torch.Tensor,
    w: Sparse24Fragments,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    cfg: SpmmaConfig,
    *,
    warmup: bool = False,
) -> torch.Tensor:
    """Write ``x2d @ W.T (+ bias)`` into ``out`` [M, N] with the sparse-MMA kernel.

    ``warmup=True`` only compiles (usable under ``triton.AsyncCompileMode``)."""
    fast_launch.launch(*spmma_call(x2d, w, bias, out, cfg), warmup=warmup)
    return out
