"""``wgmma``: ``y = x @ W.T`` on Hopper's warpgroup MMA: dense on the 2:4 weight expanded in registers,
or (``sparse``) sparse on the words as stored.

``spmma`` (``gluon_sp24.py``) runs the sparse ``mma.sp`` of one warp: every warp reads x for its
own 16 rows, so past about 32 tokens x's traffic through L1 and shared memory outgrows the
weight's. Hopper's ``wgmma.mma_async`` reads its B operand from shared memory for a whole
warpgroup (64 rows) at a time and runs asynchronously, but the sparse form (``wgmma.sp``) needs a
shared-memory address that Gluon does not hand to inline assembly. This kernel was first built on
the dense form with the A operand (the weight) in registers, expanding the 2:4 weight into it in
registers (the sparse form, with the address worked out, is described at the end):

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

One program owns ``64*G`` rows (``G`` warpgroups, 4 warps each; ``64*G*W`` in the sparse form,
whose warpgroups may run ``W`` MMA tiles each) and ``T`` tokens and walks its
share of K ``U`` k-blocks at a time, one MMA in flight (``is_async``) while the next step's
operands are made ready. The operands come one of two ways:

- through registers: the weight words and x of the step ``ahead`` steps later are loaded while
  this step's MMA runs. On the H200 this waits for about one memory round trip per step
  whatever ``ahead`` is: ptxas has six scoreboards for all loads in flight, so loads of several
  steps share one, and waiting for the oldest waits for the newest;
- through a ring in shared memory (``stages``): ``cp.async`` copies every operand of the step
  ``stages - 1`` steps later, weight words and x alike (x as it lies in memory), and a step
  reads its own from the ring with short shared-memory loads. No load in the loop lands in a
  register, so no scoreboard ties a step to the copies in flight. On the H200 this did no
  better: an ablation (``bench/wgmma_ablation.py``) found x's movement through every step
  costing more than the MMAs;
- with x resident (``x_steps``, and the ring for the weight words): a chunk of steps' x is
  copied once, permuted in place and fenced once, and a step moves only weight words.

The layouts, the expansion and the copies are in ``gluon_wgmma_operands.py``.

With ``sparse`` the kernel runs the sparse form instead (``gluon_wgmma_sparse.py``): the sparse
warpgroup MMA, ``wgmma.mma_async.sp``, by inline assembly on the weight words as stored, with x
in its natural order where ``cp.async`` put it, so nothing is expanded or permuted; it shares
this kernel's split-K and epilogue.

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
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from . import fast_launch
from .fragments import Sparse24Fragments, WgmmaConfig
from .gluon_cluster import _meet_in_cluster
from .gluon_shared_x import BOX_COLUMNS, X_BOX_LAYOUT, _barriers_at, _shared_x_loop, cluster_arrive, cluster_wait
from .gluon_sp24 import _meet_splits, _store_output, fragment_kernel_args
from .gluon_wgmma_operands import (
    _copy_step,
    _copy_weight_words,
    _copy_x,
    _expand,
    _group_layout,
    _load_step,
    _meta_layout,
    _mma_layout,
    _permute_x,
    _rings,
    _weight_stream,
    _x_layout,
    _x_stream,
)
from .gluon_wgmma_sparse import _ring_offset, _sparse_loop, _sparse_resident_loop, _sparse_rings, _sparse_streams


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


@gluon.jit
def _streamed_loop(
    acc, smem, w_stream, x_stream, run, AHEAD: gl.constexpr, A_LAYOUT: gl.constexpr, META_ROWS: gl.constexpr
):
    """The main loop with x streamed a step at a time (``_step``): ``run`` k-blocks.

    The first step runs outside the loop: the accumulator is then only ever written by MMAs while
    one is in flight (ptxas serializes every wgmma otherwise, C7515). Then two steps per
    iteration: their A operands are two sets of registers, each expanded while the other's MMA
    runs (a wgmma reads its A registers until a wait retires it: rewriting them earlier is
    undefined). A step past the end loads zeros (and valid metadata) and adds nothing."""
    U: gl.constexpr = w_stream[0].shape[1]
    pending = ()
    if len(smem) > 1:  # the ring's first STAGES - 1 steps
        STAGES: gl.constexpr = smem[1].shape[0]
        for ahead in gl.static_range(STAGES - 1):
            _copy_step(smem[1:], ahead, w_stream, x_stream, ahead * U)
    else:
        for ahead in gl.static_range(AHEAD):
            pending = pending + (_load_step(w_stream, x_stream, ahead * U),)
    acc, pending = _step(0, pending, acc, False, smem, w_stream, x_stream, A_LAYOUT, META_ROWS)
    acc = warpgroup_mma_wait(1, deps=[acc])  # (one MMA in flight: nothing to wait for)
    for step in range(U, run, 2 * U):
        acc, pending = _step(step, pending, acc, True, smem, w_stream, x_stream, A_LAYOUT, META_ROWS)
        acc = warpgroup_mma_wait(1, deps=[acc])  # the step before has finished: its x buffer is free
        acc, pending = _step(step + U, pending, acc, True, smem, w_stream, x_stream, A_LAYOUT, META_ROWS)
        acc = warpgroup_mma_wait(1, deps=[acc])
    return warpgroup_mma_wait(0, deps=[acc])


@gluon.jit
def _stage_x(x_res, x_stream, step):
    """x of the resident buffer's steps from ``step`` (k-blocks past the first), permuted: copied as
    it lies in memory (one ``cp.async`` group, waited for with every older one), then permuted
    in place a step at a time (Triton puts a barrier between a buffer's reads and the stores
    that overwrite them), and one fence hands the buffer to the MMAs' async proxy."""
    XS: gl.constexpr = x_res.shape[0]
    U: gl.constexpr = x_res.shape[2] // 32
    LX: gl.constexpr = x_stream[0].type.layout
    for j in gl.static_range(XS):
        _copy_x(x_res.index(j), x_stream, step + j * U)
    async_copy.commit_group()
    async_copy.wait_group(0)
    for j in gl.static_range(XS):
        x_buf = x_res.index(j)
        x_buf.store(_permute_x(x_buf.load(LX)))
    fence_async_shared()  # the MMAs read shared memory through the async proxy


@gluon.jit
def _resident_step(step, chunk, acc, use_acc, rings, x_res, w_stream, A_LAYOUT: gl.constexpr, META_ROWS: gl.constexpr):
    """Start the MMA of one step whose x is resident (``x_res`` holds the steps from ``chunk``):
    wait for this step's weight words, start copying those of the step ``stages - 1`` later,
    read and expand this step's."""
    U: gl.constexpr = w_stream[0].shape[1]
    STAGES: gl.constexpr = rings[0].shape[0]
    turn = step // U
    async_copy.wait_group(STAGES - 2)  # this step's words (and all older ones) have landed
    _copy_weight_words(rings, (turn + STAGES - 1) % STAGES, w_stream, step + (STAGES - 1) * U)
    async_copy.commit_group()
    v = rings[0].index(turn % STAGES).load(w_stream[0].type.layout)
    e = rings[1].index(turn % STAGES).load(w_stream[3].type.layout)
    a = _expand(v, e, x_res.dtype, A_LAYOUT, META_ROWS)
    x_buf = x_res.index((step - chunk) // U)
    return warpgroup_mma(a, x_buf.permute((1, 0)), acc, use_acc=use_acc, is_async=True)


@gluon.jit
def _resident_pairs(acc, first, last, chunk, rings, x_res, w_stream, A_LAYOUT: gl.constexpr, META_ROWS: gl.constexpr):
    """The steps from k-block ``first`` to before ``last`` of the chunk staged from ``chunk``, two
    per iteration: their A operands are two sets of registers, as in ``_streamed_loop``."""
    U: gl.constexpr = w_stream[0].shape[1]
    for step in range(first, last, 2 * U):
        acc = _resident_step(step, chunk, acc, True, rings, x_res, w_stream, A_LAYOUT, META_ROWS)
        acc = warpgroup_mma_wait(1, deps=[acc])
        acc = _resident_step(step + U, chunk, acc, True, rings, x_res, w_stream, A_LAYOUT, META_ROWS)
        acc = warpgroup_mma_wait(1, deps=[acc])
    return acc


@gluon.jit
def _resident_loop(acc, x_res, rings, w_stream, x_stream, run, A_LAYOUT: gl.constexpr, META_ROWS: gl.constexpr):
    """The main loop with x resident in shared memory: ``run`` k-blocks in chunks of the buffer's
    steps. Each chunk after the first waits for every MMA (they read the buffer), then stages its
    x once (one fence per chunk, none per step). The weight words stream through their ring
    across chunks. The first two steps run before the loops, the first with ``use_acc=False``:
    the accumulator is then only ever written by MMAs (ptxas serializes every wgmma otherwise,
    C7515). An odd step count ends with a step past the run: zeros, adding nothing."""
    U: gl.constexpr = w_stream[0].shape[1]
    CHUNK: gl.constexpr = x_res.shape[0] * U
    _stage_x(x_res, x_stream, 0)
    acc = _resident_step(0, 0, acc, False, rings, x_res, w_stream, A_LAYOUT, META_ROWS)
    acc = warpgroup_mma_wait(1, deps=[acc])
    acc = _resident_step(U, 0, acc, True, rings, x_res, w_stream, A_LAYOUT, META_ROWS)
    acc = warpgroup_mma_wait(1, deps=[acc])
    for chunk in range(0, run, CHUNK):
        if chunk > 0:
            acc = warpgroup_mma_wait(0, deps=[acc])  # every MMA that reads the buffer has finished
            _stage_x(x_res, x_stream, chunk)
        first, last = gl.maximum(chunk, 2 * U), gl.minimum(chunk + CHUNK, run)
        acc = _resident_pairs(acc, first, last, chunk, rings, x_res, w_stream, A_LAYOUT, META_ROWS)
    return warpgroup_mma_wait(0, deps=[acc])


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
    W: gl.constexpr,
    T: gl.constexpr,
    U: gl.constexpr,
    SPLIT_K: gl.constexpr,
    AHEAD: gl.constexpr,
    STAGES: gl.constexpr,
    X_STEPS: gl.constexpr,
    META_ROWS: gl.constexpr,
    SPARSE: gl.constexpr,
    CLUSTER: gl.constexpr,
):
    DTYPE: gl.constexpr = x_ptr.dtype.element_ty
    KS: gl.constexpr = 32 * U  # dense columns per step
    MMA: gl.constexpr = _mma_layout(G, T)
    ROWS: gl.constexpr = 64 * G * W  # output rows per program
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
    if CLUSTER:  # a tile's splits are one cluster, side by side along x (gluon_cluster.py)
        row_tile = gl.program_id(0) // SPLIT_K
        split = gl.program_id(0) % SPLIT_K
    else:
        row_tile = gl.program_id(0)
        split = gl.program_id(2)
    first, end = _split_run(split, KB, SPLIT_K, U)
    if SPARSE:  # wgmma.sp on the compressed words, every operand through a ring
        rings = _sparse_rings(STAGES, G, W, T, U, DTYPE, X_STEPS)
        streams = _sparse_streams(x_ptr, v_ptr, e_ptr, M, K, NT, KB, stride_xm, row_tile, first, end, G, W, T, U)
        acc = gl.zeros([ROWS, T], gl.float32, MMA)
        X_AT: gl.constexpr = _ring_offset(0, G, W, T, U, STAGES, X_STEPS)
        if X_STEPS > 0:  # x resident a chunk at a time: no fence per step
            acc = _sparse_resident_loop(acc, rings, streams, end - first, X_AT, DTYPE == gl.bfloat16)
        else:
            acc = _sparse_loop(acc, rings, streams, end - first, X_AT, DTYPE == gl.bfloat16)
    else:  # the dense form: the weight expanded in registers, x permuted to match
        w_stream = _weight_stream(v_ptr, e_ptr, NT, KB, first, end, LV, LE)
        x_stream = _x_stream(x_ptr, M, K, stride_xm, first, end, T, KS, LX)
        acc = gl.zeros([ROWS, T], gl.float32, MMA)
        if X_STEPS > 0:  # x resident X_STEPS steps at a time, the weight words through their ring
            x_res = gl.allocate_shared_memory(DTYPE, [X_STEPS, T, KS], X_SMEM)
            rings = _rings(STAGES, w_stream, x_stream, False)
            for ahead in gl.static_range(STAGES - 1):
                _copy_weight_words(rings, ahead, w_stream, ahead * U)
                async_copy.commit_group()
            acc = _resident_loop(acc, x_res, rings, w_stream, x_stream, end - first, A_LAYOUT, META_ROWS)
        else:  # x a step at a time, through two MMA buffers
            smem = (gl.allocate_shared_memory(DTYPE, [2, T, KS], X_SMEM),)
            if STAGES > 0:  # a ring of all operands filled by cp.async, STAGES - 1 steps ahead
                smem = smem + _rings(STAGES, w_stream, x_stream, True)
            acc = _streamed_loop(acc, smem, w_stream, x_stream, end - first, AHEAD, A_LAYOUT, META_ROWS)
    if STAGES > 0:  # the copies issued past the end (masked: zeros) must land before the program ends
        async_copy.wait_group(0)
    if CLUSTER:
        _meet_in_cluster(acc, split, row_tile * ROWS, gl.program_id(1) * T, y_ptr, bias_ptr, M, N, stride_ym,
                         HAS_BIAS, SPLIT_K, 4 * G)
    else:
        _store_or_meet(acc, ws_ptr, flag_ptr, y_ptr, bias_ptr, M, N, stride_ym, HAS_BIAS, SPLIT_K, G, ROWS, T)


@gluon.jit
def _split_run(split, KB, SPLIT_K: gl.constexpr, U: gl.constexpr):
    """The k-blocks ``[first, end)`` of K split ``split``: runs of whole steps."""
    if SPLIT_K == 1:
        first = 0
        end = KB
    else:
        per_split = gl.cdiv(gl.cdiv(KB, SPLIT_K), U) * U
        first = split * per_split
        end = gl.minimum(first + per_split, KB)
    return first, end


@gluon.jit(do_not_specialize=["M"])
def _wgmma_shared_x_kernel(
    x_desc,  # TMA tensor map of x [M, K], boxes of [T / SHARE, 64]: read only by inline assembly (gluon_shared_x.py)
    x_ptr, v_ptr, e_ptr, bias_ptr, y_ptr, ws_ptr, flag_ptr, M, N, K, NT, KB, stride_xm, stride_ym,  # as _wgmma_kernel's
    HAS_BIAS: gl.constexpr, G: gl.constexpr, W: gl.constexpr, T: gl.constexpr, U: gl.constexpr,
    SPLIT_K: gl.constexpr, STAGES: gl.constexpr, SHARE: gl.constexpr, CLUSTER: gl.constexpr,
):
    """The sparse form with x shared by the ``SHARE`` row tiles of a cluster (``WgmmaConfig.share``,
    ``gluon_shared_x.py``); the same arguments as ``_wgmma_kernel`` after the descriptor. With
    ``CLUSTER`` the tiles' K splits are in the cluster too and meet there (``gluon_cluster.py``):
    ``SHARE * SPLIT_K`` programs, rank ``split * SHARE + part``, the row tiles along x."""
    DTYPE: gl.constexpr = x_ptr.dtype.element_ty
    ROWS: gl.constexpr = 64 * G * W
    if CLUSTER:
        rank = gl.program_id(0) % (SHARE * SPLIT_K)
        split = rank // SHARE
        part = rank % SHARE
        row_tile = gl.program_id(0) // (SHARE * SPLIT_K) * SHARE + part
    else:
        split = gl.program_id(2)
        part = gl.program_id(0) % SHARE
        row_tile = gl.program_id(0)
    first, end = _split_run(split, KB, SPLIT_K, U)
    rings = _sparse_rings(STAGES, G, W, T, U, DTYPE, 0)
    streams = _sparse_streams(x_ptr, v_ptr, e_ptr, M, K, NT, KB, stride_xm, row_tile, first, end, G, W, T, U)
    X_AT: gl.constexpr = _ring_offset(0, G, W, T, U, STAGES, 0)
    BAR_AT: gl.constexpr = _barriers_at(G, W, T, U, STAGES)
    bars = gl.allocate_shared_memory(gl.int64, [2 * STAGES], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    acc = gl.zeros([ROWS, T], gl.float32, _mma_layout(G, T))
    acc = _shared_x_loop(acc, rings, streams, first, end - first, K, part, (split * SHARE) if CLUSTER else 0, X_AT,
                         BAR_AT, DTYPE == gl.bfloat16, SHARE)
    bars._keep_alive()
    async_copy.wait_group(0)  # the word copies issued past the end (masked: zeros) land before the program ends
    if CLUSTER:  # its first cluster barrier also orders every copy into this program before the partials
        # through shared memory as Triton sees it: the one access of this path that is not inline
        # assembly, without which LLVM drops global_smem, which all the assembly names
        out = gl.convert_layout(acc, _coalesced(G))
        _meet_in_cluster(out, split, row_tile * ROWS, gl.program_id(1) * T, y_ptr, bias_ptr, M, N, stride_ym,
                         HAS_BIAS, SPLIT_K, 4 * G, part, SHARE)
    else:
        cluster_arrive(4 * G)  # this program has taken every copy its partners multicast into it
        _store_or_meet(acc, ws_ptr, flag_ptr, y_ptr, bias_ptr, M, N, stride_ym, HAS_BIAS, SPLIT_K, G, ROWS, T)
        cluster_wait(4 * G)  # and its partners every copy this program multicast: now it may end


@gluon.constexpr_function
def _coalesced(G):
    """A program's tile ``[rows, tokens]`` with rows along the lanes: its stores to ``y`` coalesce."""
    return gl.BlockedLayout([1, 1], [32, 1], [1, 4 * G], [0, 1])


@gluon.jit
def _store_or_meet(acc, ws_ptr, flag_ptr, y_ptr, bias_ptr, M, N, stride_ym, HAS_BIAS: gl.constexpr,
                   SPLIT_K: gl.constexpr, G: gl.constexpr, ROWS: gl.constexpr, T: gl.constexpr):
    """The program's tile into ``y``, or with ``SPLIT_K`` > 1 its partial sum to meet the other
    splits' in the workspace (``_meet_splits``)."""
    OUT: gl.constexpr = _coalesced(G)
    out = gl.convert_layout(acc, OUT)
    n_out = gl.program_id(0) * ROWS + gl.expand_dims(gl.arange(0, ROWS, layout=gl.SliceLayout(1, OUT)), 1)
    m_out = gl.program_id(1) * T + gl.expand_dims(gl.arange(0, T, layout=gl.SliceLayout(0, OUT)), 0)
    ok = (n_out < N) & (m_out < M)
    if SPLIT_K == 1:
        _store_output(out, y_ptr, bias_ptr, m_out, n_out, ok, stride_ym, HAS_BIAS)
    else:
        # token-major, so that a warp's lanes (consecutive rows) store and load consecutive floats
        local = (m_out - gl.program_id(1) * T) * ROWS + (n_out - gl.program_id(0) * ROWS)
        _meet_splits(
            out,
            local,
            ROWS * T,
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
            True,  # one partial sum in registers at a time (unrolled, tiles of 64 x 64 and up spilled)
        )


# the order in which the sparse form's hardware reads a warp's metadata words (fragments._meta_words):
# that of mma.sp, as the PTX ISA describes wgmma.sp; bench/spmma_probe.py --kernel wgmma-sparse
# sets it to try the other
SPARSE_META_ORDER = "pairs"


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
    fast_launch.launch(*wgmma_call(x2d, w, bias, out, cfg), warmup=warmup)
    return out


def wgmma_call(x2d: torch.Tensor, w: Sparse24Fragments, bias: torch.Tensor | None, out: torch.Tensor,
               cfg: WgmmaConfig) -> tuple[object, tuple, tuple, dict]:
    """What ``launch_wgmma`` hands ``fast_launch.launch``: ``(kernel, grid, args, options)``, x
    copied where its rows are not 16-byte aligned; the GPU, tiling and metadata order checked."""
    if x2d.is_cuda and _capability(x2d.get_device())[0] != 9:
        major, minor = _capability(x2d.get_device())
        raise ValueError(f"the wgmma kernel needs a Hopper GPU (sm_90), got sm_{major}{minor}; use spmma or cublas")
    if x2d.stride(1) != 1 or x2d.stride(0) % 8 or x2d.data_ptr() % 16:  # x is read in 16-byte loads
        x2d = x2d.clone(memory_format=torch.contiguous_format)
    cfg.check()
    if cfg.sparse and w.meta_order != SPARSE_META_ORDER:
        raise ValueError(
            f"the sparse wgmma form reads metadata words in the {SPARSE_META_ORDER!r} order (as mma.sp does), got "
            f"a weight packed in {w.meta_order!r}; repack it with to_fragments(..., meta_order={SPARSE_META_ORDER!r})"
        )
    grid = cfg.grid(w.shape[0], x2d.shape[0])
    if cfg.share > 1:
        return _shared_x_call(x2d, w, bias, out, cfg, grid)
    if cfg.cluster:  # a tile's splits side by side along x, one cluster; no workspace
        grid = fast_launch.ClusterGrid((grid[0] * grid[2], grid[1], 1), cfg.split_k)
    args = fragment_kernel_args(x2d, w, bias, out, grid, 1 if cfg.cluster else cfg.split_k, cfg.rows * cfg.T)
    options = dict(
        HAS_BIAS=bias is not None,
        G=cfg.G,
        W=cfg.W,
        T=cfg.T,
        U=cfg.U,
        SPLIT_K=cfg.split_k,
        AHEAD=cfg.ahead,
        STAGES=cfg.stages,
        X_STEPS=cfg.x_steps,
        META_ROWS=w.meta_order == "rows",
        SPARSE=cfg.sparse,
        CLUSTER=cfg.cluster,
        num_warps=cfg.num_warps,
    )
    return _wgmma_kernel, grid, args, options


def _shared_x_call(x2d, w, bias, out, cfg: WgmmaConfig, grid: tuple) -> tuple[object, tuple, tuple, dict]:
    """``wgmma_call`` for ``cfg.share``: row tiles that many at a time as clusters, x's TMA
    descriptor (boxes of ``T / share`` tokens) first."""
    if cfg.cluster:  # a cluster holds the splits of `share` row tiles: all of them side by side along x
        grid = fast_launch.ClusterGrid((grid[0] * grid[2], grid[1], 1), cfg.share * cfg.split_k)
    else:
        grid = fast_launch.ClusterGrid(grid, cfg.share)
    x_desc = TensorDescriptor.from_tensor(x2d, [cfg.T // cfg.share, BOX_COLUMNS], X_BOX_LAYOUT)
    split_k = 1 if cfg.cluster else cfg.split_k  # splits meeting in the cluster need no workspace
    args = (x_desc, *fragment_kernel_args(x2d, w, bias, out, grid, split_k, cfg.rows * cfg.T))
    options = dict(HAS_BIAS=bias is not None, G=cfg.G, W=cfg.W, T=cfg.T, U=cfg.U, SPLIT_K=cfg.split_k,
                   STAGES=cfg.stages, SHARE=cfg.share, CLUSTER=cfg.cluster, num_warps=cfg.num_warps)
    return _wgmma_shared_x_kernel, grid, args, options
