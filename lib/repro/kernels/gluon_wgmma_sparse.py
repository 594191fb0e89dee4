"""The sparse form of the ``wgmma`` kernel (``WgmmaConfig.sparse``): Hopper's ``wgmma.mma_async.sp``.

The dense form (``gluon_wgmma.py``) expands the 2:4 weight into a dense A operand and permutes
x's K to match; the ablation (``bench/wgmma_ablation.py``) found that movement, not the MMA,
costing most of a step. ``wgmma.sp`` reads the compressed weight as it is: per warp of the
warpgroup, its four A registers and its metadata word are exactly those of an
``mma.sp ... m16n8k32`` (the fragment order ``spmma`` reads, ``fragments.py``), and the
metadata tells the tensor cores which of each group's four x values to use. So nothing is
expanded, x stays in its natural order, and the MMA does half the dense work.

Every operand goes through rings in shared memory filled by ``cp.async``, ``stages`` steps each:
x straight into the MMA's swizzled buffer, where ``wgmma.sp`` reads it (no register round trip,
no permutation), and the weight's value and metadata words into their own rings, read back a step
at a time into the registers the instruction takes. A step's slots are refilled two steps later
(``stages - 2`` steps ahead), once the ``wgmma`` that read its x has been retired.

Gluon has no ``wgmma.sp`` (its ``warpgroup_mma`` is dense), so the instruction is inline
assembly, which needs x's shared address for the matrix descriptor. Gluon does not hand a
buffer's address to inline assembly; the dynamic shared memory is the PTX symbol ``global_smem``
and every buffer a constant offset into it, chosen by Triton's allocator (buffers alive together
placed largest first, in program order among equals: ``_ring_offset``). The weight words go
the same way: copied, waited for and read back by inline assembly at their rings' offsets
(each thread reads only the words it copied), so Triton sees no access to their rings and adds
none of the CTA barriers it puts after its own waits, before its reads of a ring just written to
and before its writes to a ring written to the step before (it does not tell a ring's slots
apart). A streamed step keeps the one barrier it needs (every thread's x copies before the
MMAs); a step with x resident has none. The tests run every tiling of the sweep through the PTX emulator,
which reads wherever the descriptor and the addresses point, so a wrong offset gives a wrong
product there.

Through inline assembly every operand must have the accumulator's shape ``[64G, T]`` and layout
(the MMA's), ``pack = T / 2`` elements per thread per instance: exactly the ``T / 2`` accumulator
registers of one ``wgmma`` (register ``4j + 2h + c`` is row ``g + 8h``, column ``8j + 2q + c`` of
lane ``(g, q)``). The A words and metadata words are laid into that shape so that a thread's
registers ``4u .. 4u + 3`` hold k-block ``u``'s A words and register ``4u`` its metadata word
(``_mma_operand``): ``T >= 8U``.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, warpgroup_mma_wait

from .gluon_sp24 import _cta_barrier, _index
from .gluon_wgmma_operands import _copy_x, _x_layout, _x_stream

SWIZZLE_MODE = {128: 1, 64: 2, 32: 3}  # swizzle bytes -> descriptor bits 62-63


@gluon.constexpr_function
def _x_smem_layout(KS):
    """x's ``[T, KS]`` step as the MMA reads it: K-major, the widest swizzle a row fills."""
    return gl.NVMMASharedLayout(swizzle_byte_width=min(2 * KS, 128), element_bitwidth=16, rank=2)


@gluon.constexpr_function
def _ring_offset(which, G, W, T, U, STAGES, X_STEPS):
    """The byte offset in ``global_smem`` of buffer ``which`` (0: x, 1: value words, 2: metadata
    words). The three are alive together, so Triton's allocator lays them out one after another,
    largest first and, among equal sizes, in program order (x, value words, metadata words). Per
    stage x takes ``64 T U`` bytes (``X_STEPS`` steps when resident), the value words ``2048 G W
    U`` and the metadata words ``512 G W U``; x is never smaller than the metadata (``T >= 8GW``),
    and a resident x is the largest (``WgmmaConfig.check``), so every offset is a multiple of 1024."""
    sizes = [(X_STEPS if X_STEPS else STAGES) * 64 * T * U, STAGES * 2048 * G * W * U, STAGES * 512 * G * W * U]
    ahead = [i for i in range(3) if sizes[i] > sizes[which] or (sizes[i] == sizes[which] and i < which)]
    return sum(sizes[i] for i in ahead)


@gluon.constexpr_function
def _wgmma_sp_asm(T, U, BF16, USE_ACC, X_RING):
    """One step's ``U`` ``wgmma.sp`` (one per k-block of 32 columns) as one inline-assembly block.

    Operands (``pack = T / 2``): ``$0 ..`` the accumulator (tied to its inputs), then the A words,
    the metadata words and the byte offset of this step's x stage in its ring, ``T / 2`` each (see
    the module docstring for which of a thread's registers are read). The descriptor: start
    address bits 0-13 (``>> 4``), stride between 8-row groups bits 32-45, swizzle bits 62-63; a
    k-block's 32 columns are 64 bytes of a row, the next one 64 bytes on, or (past a 128-byte row)
    in the next block of ``T`` rows."""
    P = T // 2
    ty = "bf16" if BF16 else "f16"
    width = min(64 * U, 128)  # bytes of one swizzled row of x's step
    high = 8 * width // 16 | SWIZZLE_MODE[width] << 30  # descriptor bits 32-63
    acc = ", ".join(f"${i}" for i in range(P))
    lines = [
        "{ .reg .pred %sp_acc, %sp_one; .reg .b32 %sp_x, %sp_lo; .reg .b64 %sp_desc;",
        f"setp.ne.b32 %sp_acc, {int(USE_ACC)}, 0; setp.ne.b32 %sp_one, 1, 0;",
        f"mov.u32 %sp_x, global_smem; add.u32 %sp_x, %sp_x, {X_RING}; add.u32 %sp_x, %sp_x, ${4 * P};",
        "wgmma.fence.sync.aligned;",
    ]
    for u in range(U):
        start = (u // 2) * T * 128 + (u % 2) * 64
        a = ", ".join(f"${2 * P + 4 * u + r}" for r in range(4))
        lines += [
            f"add.u32 %sp_lo, %sp_x, {start}; shr.u32 %sp_lo, %sp_lo, 4; and.b32 %sp_lo, %sp_lo, 16383;",
            f"mov.b64 %sp_desc, {{%sp_lo, {high}}};",
            f"wgmma.mma_async.sp.sync.aligned.m64n{T}k32.f32.{ty}.{ty} {{{acc}}}, {{{a}}}, %sp_desc, "
            f"${3 * P + 4 * u}, 0, {'%sp_acc' if u == 0 else '%sp_one'}, 1, 1, 0;",
        ]
    lines.append("wgmma.commit_group.sync.aligned; }")
    return " ".join(lines)


@gluon.constexpr_function
def _wgmma_sp_constraints(T):
    """Outputs: the accumulator; inputs: the accumulator again (tied), A words, metadata, x offset."""
    P = T // 2
    return ",".join(["=f"] * P + [str(i) for i in range(P)] + ["r"] * (3 * P))


@gluon.constexpr_function
def _read_values_asm(WAIT):
    """Wait until at most ``WAIT`` of this thread's ``cp.async`` groups are pending, then load four
    value words from byte ``$4`` of ``global_smem`` (``pack = 4``: ``$5 .. $7`` are not read)."""
    return ("{ .reg .b32 %w_at; " + f"cp.async.wait_group {WAIT}; "
            "mov.u32 %w_at, global_smem; add.u32 %w_at, %w_at, $4; ld.shared.v4.b32 {$0, $1, $2, $3}, [%w_at]; }")


_READ_META_ASM = gl.constexpr(
    "{ .reg .b32 %m_at; mov.u32 %m_at, global_smem; add.u32 %m_at, %m_at, $1; ld.shared.b32 $0, [%m_at]; }")


# Start copying 16 bytes (``$12`` of them read, the rest zero-filled) from global address ``$8`` to
# byte ``$4`` of ``global_smem`` (``pack = 4``: one copy per four value words; its outputs are not used)
_COPY_VALUES_ASM = gl.constexpr(
    "{ .reg .b32 %c_at; mov.u32 %c_at, global_smem; add.u32 %c_at, %c_at, $4; "
    "cp.async.cg.shared.global [%c_at], [$8], 16, $12; mov.b32 $0, 0; mov.b32 $1, 0; mov.b32 $2, 0; mov.b32 $3, 0; }")
_COPY_VALUES_CONSTRAINTS = gl.constexpr("=r,=r,=r,=r,r,r,r,r,l,l,l,l,r,r,r,r")  # outputs, shared at, source, bytes
# the same for one metadata word: 4 bytes from ``$2`` to byte ``$1``
_COPY_META_ASM = gl.constexpr(
    "{ .reg .b32 %c_at; mov.u32 %c_at, global_smem; add.u32 %c_at, %c_at, $1; "
    "cp.async.ca.shared.global [%c_at], [$2], 4, 4; mov.b32 $0, 0; }")


@gluon.constexpr_function
def _doublings(T, U):
    """How many times ``[64G, 8U]`` doubles its columns to reach ``T``."""
    return (T // (8 * U)).bit_length() - 1


@gluon.constexpr_function
def _word_layout(G, W, U):
    """A step's weight words ``[W, 4G, U, 32, 4]``: row tile ``4G i + w`` (MMA tile ``i`` of warp
    ``w``; the accumulator's rows ``64G i + 16w ..``), lane ``l`` holds its four words of each
    k-block (one 16-byte copy each); the metadata words ``[W, 4G, U, 32]`` are its slice along the
    last dimension (one word per lane)."""
    return gl.BlockedLayout([W, 1, U, 1, 4], [1, 1, 1, 32, 1], [1, 4 * G, 1, 1, 1], [4, 3, 2, 1, 0])


@gluon.jit
def _mma_operand(words, T: gl.constexpr, MMA: gl.constexpr):
    """A step's words ``[W, 4G, U, 32, 4]`` (MMA tile ``i``, warp ``w``, k-block ``u``, lane ``4g +
    q``, word ``r``) laid into the accumulator's shape and layout, so that each ``T/2`` registers
    of a thread that one ``wgmma`` accumulates in have k-block ``u``'s four words as registers
    ``4u .. 4u + 3``: row ``64G i + 16w + 8h + g``, column ``8u + 2q + c`` holds word ``2h + c``.
    The columns past ``8U`` repeat the first ones (and are not read). A relabelling of each
    thread's registers: no data moves between threads."""
    W: gl.constexpr = words.shape[0]
    G: gl.constexpr = words.shape[1] // 4
    U: gl.constexpr = words.shape[2]
    t = gl.reshape(words, [W, 4 * G, U, 8, 4, 2, 2])  # i, w, u, g, q, h, c
    t = gl.reshape(gl.permute(t, [0, 1, 5, 3, 2, 4, 6]), [64 * G * W, 8 * U])  # (i, w, h, g), (u, q, c)
    for _ in gl.static_range(_doublings(T, U)):
        t = gl.reshape(gl.permute(gl.join(t, t), [0, 2, 1]), [64 * G * W, 2 * t.shape[1]])
    return gl.convert_layout(t, MMA)


@gluon.jit
def _wgmma_sp(acc, v, e, x_stage, X_RING: gl.constexpr, USE_ACC: gl.constexpr, BF16: gl.constexpr):
    """Issue the ``wgmma.sp`` of a step, each MMA tile's as one commit group: value words ``v``
    ``[W, 4G, U, 32, 4]``, metadata words ``e`` ``[W, 4G, U, 32]``, x at byte ``x_stage`` of its
    ring (the same for every tile)."""
    T: gl.constexpr = acc.shape[1]
    U: gl.constexpr = v.shape[2]
    MMA: gl.constexpr = acc.type.layout
    a = _mma_operand(v, T, MMA)
    meta = _mma_operand(gl.broadcast(gl.expand_dims(e, 4), v)[0], T, MMA)
    offset = gl.full(acc.shape, x_stage, gl.int32, MMA)
    return gl.inline_asm_elementwise(
        _wgmma_sp_asm(T, U, BF16, USE_ACC, X_RING), _wgmma_sp_constraints(T), [acc, a, meta, offset],
        dtype=gl.float32, is_pure=False, pack=T // 2)


@gluon.jit
def _sparse_rings(STAGES: gl.constexpr, G: gl.constexpr, W: gl.constexpr, T: gl.constexpr, U: gl.constexpr,
                  DTYPE: gl.constexpr, X_STEPS: gl.constexpr):
    """The three buffers, in the program order ``_ring_offset`` assumes: x ``[STAGES, T, 32U]`` as the
    MMA reads it (``X_STEPS`` steps of it when resident), then the rings of value words ``[STAGES,
    W, 4G, U, 32, 4]`` and metadata words ``[STAGES, W, 4G, U, 32]`` in the order of their
    registers (a warp's copies and reads touch contiguous runs)."""
    x = gl.allocate_shared_memory(DTYPE, [X_STEPS if X_STEPS else STAGES, T, 32 * U], _x_smem_layout(32 * U))
    v = gl.allocate_shared_memory(gl.int32, [STAGES, W, 4 * G, U, 32, 4],
                                  gl.SwizzledSharedLayout(1, 1, 1, [4, 3, 2, 1, 0]))
    e = gl.allocate_shared_memory(gl.int32, [STAGES, W, 4 * G, U, 32], gl.SwizzledSharedLayout(1, 1, 1, [3, 2, 1, 0]))
    return x, v, e


@gluon.jit
def _sparse_streams(x_ptr, v_ptr, e_ptr, M, K, NT, KB, stride_xm, row_tile, first, end,
                    G: gl.constexpr, W: gl.constexpr, T: gl.constexpr, U: gl.constexpr):
    """Where this program's first step of each operand lies, and what bounds it: value words of
    lane ``l`` are words ``4l .. 4l+3`` of their tile and k-block (masked past the weight: zeros);
    the metadata word of lane ``4g + q`` is word ``2g + q % 2`` (the instruction reads lanes
    ``q`` = 0, 1), its row tile and k-block clamped inside the weight, so that every copy brings a
    valid code (also where the values are masked to zero: they add nothing); x as
    ``_x_stream``."""
    LW: gl.constexpr = _word_layout(G, W, U)
    LE: gl.constexpr = gl.SliceLayout(4, LW)
    tile = row_tile * (4 * G * W) + _index(W, 0, LW, 5) * (4 * G) + _index(4 * G, 1, LW, 5)
    kb = first + _index(U, 2, LW, 5)
    v_ptrs = v_ptr + (tile * KB + kb).to(gl.int64) * 128 + _index(32, 3, LW, 5) * 4 + _index(4, 4, LW, 5)
    lane = _index(32, 3, LE, 4)
    e_tile = row_tile * (4 * G * W) + _index(W, 0, LE, 4) * (4 * G) + _index(4 * G, 1, LE, 4)
    e_rows = e_ptr + gl.minimum(e_tile, NT - 1).to(gl.int64) * KB * 16 + (lane // 4) * 2 + lane % 2
    e_kb = first + _index(U, 2, LE, 4)
    x_stream = _x_stream(x_ptr, M, K, stride_xm, first, end, T, 32 * U, _x_layout(G, T, 32 * U))
    return (v_ptrs, tile < NT, kb, end), (e_rows, e_kb, KB), x_stream


@gluon.jit
def _copy_words(rings, stage, streams, step):
    """Start copying the value and metadata words of ``step`` (k-blocks past the first) into ring
    slot ``stage`` (``cp.async``), by inline assembly to where ``_read_words`` reads them back
    (``_slot_addresses``): Triton, seeing no write to the rings, adds no barrier before the
    copies (it does not tell a ring's slots apart)."""
    v_ptrs, v_ok, kb, end = streams[0]
    e_rows, e_kb, KB = streams[1]
    v_at, e_at = _slot_addresses(rings, stage)
    v_bytes = gl.where(v_ok & (kb + step < end), 16, 0)  # past the weight: zeros
    gl.inline_asm_elementwise(_COPY_VALUES_ASM, _COPY_VALUES_CONSTRAINTS, [v_at, v_ptrs + step * 128, v_bytes],
                              dtype=gl.int32, is_pure=False, pack=4)
    e_src = e_rows + gl.minimum(e_kb + step, KB - 1) * 16  # clamped inside the weight: always a valid code
    gl.inline_asm_elementwise(_COPY_META_ASM, "=r,r,l", [e_at, e_src], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _sparse_copy(rings, stage, streams, step):
    """Start copying every operand of ``step`` into ring slot ``stage``, as one ``cp.async`` group."""
    _copy_words(rings, stage, streams, step)
    _copy_x(rings[0].index(stage), streams[2], step)
    async_copy.commit_group()


@gluon.jit
def _keep_word_rings(rings):
    """The word rings are copied to and read only by inline assembly: a use after the loop keeps
    them allocated (alive with x, so laid out as ``_ring_offset`` says) until the loop is done."""
    rings[1]._keep_alive()
    rings[2]._keep_alive()


@gluon.jit
def _sparse_step(step, acc, rings, streams, X_RING: gl.constexpr, USE_ACC: gl.constexpr, BF16: gl.constexpr):
    """One step: wait for this thread's copies of the step and read its weight words, hand the x
    copies to the MMA's async proxy (the fence) and wait for everyone's (the barrier, the step's
    only one), refill the slot of the step two back (whose ``wgmma`` every warpgroup retired
    before this barrier) and issue the MMAs on x where it lies."""
    STAGES: gl.constexpr = rings[0].shape[0]
    T: gl.constexpr = rings[0].shape[1]
    U: gl.constexpr = rings[1].shape[3]
    turn = step // U
    v, e = _read_words(rings, turn % STAGES, STAGES - 3)  # this step's group (and older) landed
    fence_async_shared()
    _cta_barrier()
    _sparse_copy(rings, (turn + STAGES - 2) % STAGES, streams, step + (STAGES - 2) * U)
    return _wgmma_sp(acc, v, e, (turn % STAGES) * (T * 64 * U), X_RING, USE_ACC, BF16)


@gluon.jit
def _sparse_loop(acc, rings, streams, run, X_RING: gl.constexpr, BF16: gl.constexpr):
    """The main loop of the sparse form: ``run`` k-blocks. The first step runs before the loop
    with a zero accumulator (``USE_ACC`` false; ptxas serializes every wgmma when a loop carries
    the zeros in, C7515), then two steps per iteration: their weight words are two sets of
    registers, one read by the MMA in flight while the other is loaded (a wgmma reads its A and
    metadata registers until a wait retires it). A step commits one group per MMA tile (``W``),
    and each wait keeps just the step's own in flight. A step past the run brings zeros and adds
    nothing."""
    W: gl.constexpr = rings[1].shape[1]
    U: gl.constexpr = rings[1].shape[3]
    STAGES: gl.constexpr = rings[0].shape[0]
    for ahead in gl.static_range(STAGES - 2):
        _sparse_copy(rings, ahead, streams, ahead * U)
    acc = _sparse_step(0, acc, rings, streams, X_RING, False, BF16)
    acc = warpgroup_mma_wait(W, deps=[acc])
    for step in range(U, run, 2 * U):
        acc = _sparse_step(step, acc, rings, streams, X_RING, True, BF16)
        acc = warpgroup_mma_wait(W, deps=[acc])
        acc = _sparse_step(step + U, acc, rings, streams, X_RING, True, BF16)
        acc = warpgroup_mma_wait(W, deps=[acc])
    _keep_word_rings(rings)
    return warpgroup_mma_wait(0, deps=[acc])


@gluon.jit
def _slot_addresses(rings, stage):
    """Where this thread's value words (``[W, 4G, U, 32, 4]``, ``_word_layout``) and metadata words
    (its slice) of ring slot ``stage`` lie in ``global_smem``, in bytes: the rings' offsets
    (``_ring_offset``, from the three buffers' shapes) plus the place in the slot (the rings are
    unswizzled and row-major)."""
    x_ring = rings[0]
    v_ring = rings[1]
    STAGES: gl.constexpr = v_ring.shape[0]
    W: gl.constexpr = v_ring.shape[1]
    G: gl.constexpr = v_ring.shape[2] // 4
    U: gl.constexpr = v_ring.shape[3]
    XS: gl.constexpr = x_ring.shape[0]  # steps of x: the ring's stages, or the resident steps
    T: gl.constexpr = x_ring.shape[1]
    V_AT: gl.constexpr = _ring_offset(1, G, W, T, U, STAGES, XS)
    E_AT: gl.constexpr = _ring_offset(2, G, W, T, U, STAGES, XS)
    LW: gl.constexpr = _word_layout(G, W, U)
    LE: gl.constexpr = gl.SliceLayout(4, LW)
    v = (_index(W, 0, LW, 5) * (4 * G) + _index(4 * G, 1, LW, 5)) * U + _index(U, 2, LW, 5)
    v = (v * 32 + _index(32, 3, LW, 5)) * 16 + _index(4, 4, LW, 5) * 4
    e = (_index(W, 0, LE, 4) * (4 * G) + _index(4 * G, 1, LE, 4)) * U + _index(U, 2, LE, 4)
    e = (e * 32 + _index(32, 3, LE, 4)) * 4
    return v + (V_AT + stage * (2048 * G * W * U)), e + (E_AT + stage * (512 * G * W * U))


@gluon.jit
def _read_words(rings, stage, WAIT: gl.constexpr):
    """A step's value and metadata words, from ring slot ``stage`` into registers, once at most
    ``WAIT`` of this thread's copy groups are pending. Each thread reads back only the words it
    copied itself (the same layout), so its own wait is all it needs, and the reads and the wait
    are inline assembly (``_slot_addresses``): Triton sees no shared-memory access in them and
    adds no CTA barrier. Its own ``wait_group`` and loads would bring two per step, one after the
    wait and one before the reads, since it does not tell a ring's slots apart."""
    v_at, e_at = _slot_addresses(rings, stage)
    v = gl.inline_asm_elementwise(_read_values_asm(WAIT), "=r,=r,=r,=r,r,r,r,r", [v_at], dtype=gl.int32,
                                  is_pure=False, pack=4)
    e = gl.inline_asm_elementwise(_READ_META_ASM, "=r,r", [e_at], dtype=gl.int32, is_pure=False, pack=1)
    return v, e


@gluon.jit
def _stage_x_chunk(x_res, x_stream, step):
    """x of the resident buffer's steps from ``step`` (k-blocks past the first), copied as it lies
    in memory: one ``cp.async`` group, waited for with every older one (the weight words in
    flight too), fenced for the MMAs' async proxy and seen by every thread (the barrier)."""
    XS: gl.constexpr = x_res.shape[0]
    U: gl.constexpr = x_res.shape[2] // 32
    for j in gl.static_range(XS):
        _copy_x(x_res.index(j), x_stream, step + j * U)
    async_copy.commit_group()
    async_copy.wait_group(0)
    fence_async_shared()
    _cta_barrier()


@gluon.jit
def _sparse_resident_step(step, chunk, acc, rings, streams, X_RING: gl.constexpr, USE_ACC: gl.constexpr,
                          BF16: gl.constexpr):
    """One step with x resident (the buffer holds the steps from ``chunk``): wait for this thread's
    copies of the step's weight words and read them, start copying those of the step ``stages -
    1`` later (into the slot the step before read: its words are in registers now) and issue the
    MMAs. No fence and no barrier: the words reach the MMA through registers, each thread's its
    own copies."""
    x_res = rings[0]
    STAGES: gl.constexpr = rings[1].shape[0]
    U: gl.constexpr = rings[1].shape[3]
    T: gl.constexpr = x_res.shape[1]
    turn = step // U
    v, e = _read_words(rings, turn % STAGES, STAGES - 2)  # this step's words (and older) landed
    _copy_words(rings, (turn + STAGES - 1) % STAGES, streams, step + (STAGES - 1) * U)
    async_copy.commit_group()
    return _wgmma_sp(acc, v, e, ((step - chunk) // U) * (T * 64 * U), X_RING, USE_ACC, BF16)


@gluon.jit
def _sparse_resident_loop(acc, rings, streams, run, X_RING: gl.constexpr, BF16: gl.constexpr):
    """The sparse form's main loop with x resident (``x_steps``): ``run`` k-blocks in chunks of the
    buffer's steps, each staged once (one fence per chunk, none per step), after every MMA
    reading the chunk before has finished. The weight words stream through their rings across
    chunks, ``stages - 1`` steps ahead. The first two steps run before the loops, the first with
    a zero accumulator; then two per iteration, two sets of registers (as ``_sparse_loop``)."""
    W: gl.constexpr = rings[1].shape[1]
    U: gl.constexpr = rings[1].shape[3]
    STAGES: gl.constexpr = rings[1].shape[0]
    CHUNK: gl.constexpr = rings[0].shape[0] * U
    for ahead in gl.static_range(STAGES - 1):
        _copy_words(rings, ahead, streams, ahead * U)
        async_copy.commit_group()
    _stage_x_chunk(rings[0], streams[2], 0)
    acc = _sparse_resident_step(0, 0, acc, rings, streams, X_RING, False, BF16)
    acc = warpgroup_mma_wait(W, deps=[acc])
    acc = _sparse_resident_step(U, 0, acc, rings, streams, X_RING, True, BF16)
    acc = warpgroup_mma_wait(W, deps=[acc])
    for chunk in range(0, run, CHUNK):
        if chunk > 0:
            acc = warpgroup_mma_wait(0, deps=[acc])  # every MMA that reads the buffer has finished
            _stage_x_chunk(rings[0], streams[2], chunk)
        for step in range(gl.maximum(chunk, 2 * U), gl.minimum(chunk + CHUNK, run), 2 * U):
            acc = _sparse_resident_step(step, chunk, acc, rings, streams, X_RING, True, BF16)
            acc = warpgroup_mma_wait(W, deps=[acc])
            acc = _sparse_resident_step(step + U, chunk, acc, rings, streams, X_RING, True, BF16)
            acc = warpgroup_mma_wait(W, deps=[acc])
    _keep_word_rings(rings)
    return warpgroup_mma_wait(0, deps=[acc])
