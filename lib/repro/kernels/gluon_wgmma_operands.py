"""The operands of the ``wgmma`` kernel (``gluon_wgmma.py``): register and shared-memory layouts,
the in-lane expansion of the 2:4 weight into the dense A operand, the permutation of x's K that
goes with it, and the loads and ``cp.async`` copies that bring a step's weight words and x.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy

from .gluon_sp24 import _index

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
    """x's ``[T, KS]`` step: eight consecutive columns (one 16-byte load) per thread, and a warp's
    lanes over at most 64 columns of a row: the MMA buffer keeps each 64 columns in a 128-byte
    swizzle atom of its own, and lanes spread over two atoms of one row would store into the
    same banks (2-way conflicts at 128 columns per step)."""
    lanes_k = min(KS // 8, 8)
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
def _rings(STAGES: gl.constexpr, w_stream, x_stream, X_RING: gl.constexpr):
    """Shared memory for ``STAGES`` steps of value words, metadata words and, with ``X_RING``, x,
    each in the shape of its registers and in their order (a lane's words together, the lanes'
    runs one after another; x row-major, 16 bytes per thread): every copy and read of a warp
    touches one contiguous run, each bank once per pass. A thread reads back exactly the bytes
    it copied."""
    v_ptrs, e_ptrs, x_ptrs = w_stream[0], w_stream[3], x_stream[0]
    v_order: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [3, 2, 1, 0])  # per stage, row-major
    x_order: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
    rings = (
        gl.allocate_shared_memory(gl.int32, [STAGES] + v_ptrs.shape, v_order),
        gl.allocate_shared_memory(gl.int32, [STAGES] + e_ptrs.shape, v_order),
    )
    if X_RING:
        rings = rings + (gl.allocate_shared_memory(x_ptrs.dtype.element_ty, [STAGES] + x_ptrs.shape, x_order),)
    return rings


@gluon.jit
def _copy_weight_words(rings, stage, w_stream, step):
    """Start copying the value and metadata words of ``step`` into ring ``stage`` (``cp.async``:
    the bytes are in flight without registers to land in). Masked words arrive as zeros:
    metadata code 0 expands to zeros (``_EXPAND``), which the zero values make right anyway."""
    v_ptrs, v_ok, kb, e_ptrs, e_ok, e_kb, end = w_stream
    async_copy.async_copy_global_to_shared(rings[0].index(stage), v_ptrs + step * 128, mask=v_ok & (kb + step < end))
    async_copy.async_copy_global_to_shared(rings[1].index(stage), e_ptrs + step * 16, mask=e_ok & (e_kb + step < end))


@gluon.jit
def _copy_x(buffer, x_stream, step):
    """Start copying x's ``[T, KS]`` of ``step`` into ``buffer`` as it lies in memory; columns
    past the program's run of K and tokens past M arrive as zeros, and add nothing."""
    x_ptrs, token_ok, col, col_end = x_stream
    async_copy.async_copy_global_to_shared(buffer, x_ptrs + step * 32, mask=token_ok & (col + step * 32 < col_end))


@gluon.jit
def _copy_step(rings, stage, w_stream, x_stream, step):
    """The copies of ``step``'s weight words and x into ring ``stage``, as one group."""
    _copy_weight_words(rings, stage, w_stream, step)
    _copy_x(rings[2].index(stage), x_stream, step)
    async_copy.commit_group()
