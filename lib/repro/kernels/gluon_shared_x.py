"""x shared by the row tiles of a cluster (``WgmmaConfig.share``, the sparse ``wgmma`` form): TMA multicast.

Every program of the sparse form reads its tokens' x for its whole run of K, and a program covers
only 64 to 256 rows: at 64-128 tokens on a 4096-row weight, x passes through the L2 32-64 times
and outweighs the weight's own bytes 2-3 to 1 (``bench/l2_traffic.py``, ``bench/results/*-traffic.md``).
``share`` (2 or 4) programs side by side along x (as many row tiles, the same tokens and run of K)
can run as one thread-block cluster and load x once between them: each asks the tensor memory
accelerator (TMA) for its ``1 / share`` of a step's tokens and has it written into every program's
shared memory at once (``cp.async.bulk.tensor ... .multicast::cluster``). The L2 then sees x
``share`` times less often.

The TMA writes the 128-byte swizzle the MMA reads (``_x_smem_layout``: the same buffer and
offsets as ``cp.async`` filled), so ``wgmma.sp`` reads x as before. What changes is how a step
knows its x has landed and when a slot may be written again, since partners write into it:

- ``full[s]`` (one per ring slot, in each program): the program's thread 0 announces a step's
  bytes (``mbarrier.arrive.expect_tx``), and every program's part counts its bytes off as it
  lands (``complete_tx``). Every thread waits on it before the step's MMAs.
- ``empty[s]``: a slot may be refilled once the MMAs of every program that read it have retired.
  After its ``wgmma`` wait, the first thread of each warpgroup arrives on ``empty[s]`` of every
  program of the cluster (``mapa`` gives a partner's address of the barrier); a program waits
  for all ``share * G`` arrivals before its thread 0 issues the next copy into slot ``s``.

So a step has no CTA barrier and no proxy fence (the MMA reads what the TMA wrote after the
barrier wait: both are the async proxy), and x is refilled ``stages - 1`` steps ahead, as soon as
the step that read the slot has retired. The weight words stay as in ``gluon_wgmma_sparse.py``:
each thread copies its own with ``cp.async`` and reads them back, ``stages - 1`` steps ahead.

The start: thread 0 sets the barriers up, and before any partner may signal them, one cluster
barrier (split in two: its arrival right after the set-up, its wait after the first step's MMAs
are issued) orders the set-up before the partners' first remote operation. Until then each
program fills its first ``stages`` slots alone, every part with ordinary TMA loads, so the
barrier's latency (about 0.5 µs on the H100, ``bench/cluster_probe.py``) hides behind them.
The end: only the steps the loop runs are ever loaded, and a program arrives on a partner's
``empty`` only where that partner will wait for it, so nothing of a partner's lands after a
program's loop; a second cluster barrier (arrival after the loop, wait after the epilogue) keeps
each program alive until its partners have taken the last copies it multicast.

With ``WgmmaConfig.cluster`` too, the K splits of the tiles that share x run in the same cluster and
meet there (``gluon_cluster.py``): ``SHARE * SPLIT_K`` programs, rank ``split * SHARE + part``. The
programs of one split share x as above, so the multicast mask and the releases are those of ranks
``split * SHARE ..`` (the ``base`` the loop is given); the programs of one tile meet, reading the
partials of ranks ``part + s * SHARE``. The meet's first cluster barrier also does the work of the
end barrier: every copy into a program has landed before it gets there.

Gluon 3.6 has TMA loads but no multicast, and hands inline assembly no buffer addresses; the x
descriptor is the kernel's first argument, a TMA tensor map Triton's launcher encodes on every
call (``TensorDescriptor``, boxes of ``T / share`` tokens), which the assembly names by its
parameter symbol (``_wgmma_shared_x_kernel_param_0``). The buffers lie where Triton's allocator
puts them (``_barriers_at``; a test checks it against the compiled kernel).
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import warpgroup_mma_wait

from .gluon_sp24 import _cta_barrier
from .gluon_wgmma_sparse import _copy_words, _keep_word_rings, _read_words, _ring_offset, _wgmma_sp

KERNEL_NAME = "_wgmma_shared_x_kernel"
_DESCRIPTOR = f"{KERNEL_NAME}_param_0"  # the x tensor map: the kernel's first parameter
BOX_COLUMNS = 64  # x columns per TMA box: one 128-byte swizzled row of fp16/bf16
# the shared layout of x's boxes, which the descriptor's TMA writes: the MMA's 128-byte swizzle
X_BOX_LAYOUT = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)


@gluon.constexpr_function
def _barriers_at(G, W, T, U, STAGES):
    """Byte offset of the barriers in ``global_smem``: ``full[s]`` at ``+ 8 s``, ``empty[s]`` at ``+ 8
    (stages + s)``. They are the smallest buffer, so Triton's allocator puts them after x's ring and
    the two word rings (``_ring_offset``), whose sizes are multiples of 1024."""
    return _ring_offset(2, G, W, T, U, STAGES, 0) + STAGES * 512 * G * W * U


@gluon.constexpr_function
def _thread0(prefix):
    """PTX that sets predicate ``%{prefix}_one`` in thread 0 of the program."""
    return f"mov.u32 %{prefix}_t, %tid.x; setp.eq.u32 %{prefix}_one, %{prefix}_t, 0;"


@gluon.constexpr_function
def _init_asm(AT, STAGES, G, SHARE):
    """Thread 0 sets up ``full[s]`` (one arrival: its own, with the step's bytes) and ``empty[s]``
    (``SHARE * G`` arrivals: each warpgroup of every program), then makes them visible to the cluster."""
    lines = ["{ .reg .b32 %i_at, %i_t; .reg .pred %i_one;", _thread0("i"),
             f"mov.u32 %i_at, global_smem; add.u32 %i_at, %i_at, {AT};"]
    for s in range(STAGES):
        lines.append(f"@%i_one mbarrier.init.shared::cta.b64 [%i_at+{8 * s}], 1;")
        lines.append(f"@%i_one mbarrier.init.shared::cta.b64 [%i_at+{8 * (STAGES + s)}], {SHARE * G};")
    lines += ["fence.mbarrier_init.release.cluster;", "mov.b32 $0, 0; }"]
    return " ".join(lines)


@gluon.constexpr_function
def _load_asm(T, U, SHARE, MULTICAST):
    """Thread 0 announces a step's x bytes on ``full`` and starts its copies. Operands: ``$1`` the
    byte offset of the slot (its first 64 columns, first token), ``$2`` the barrier's, ``$3`` the
    step's first column, ``$4`` the tile's first token, ``$5`` this program's part (its place among
    the ``SHARE`` programs that share x), ``$6`` the cluster rank of the first of them (0, or with
    the splits meeting in the cluster too, ``split * SHARE``). Alone (``MULTICAST`` false) it loads
    every part of the tokens into its own slot; in the cluster its own part into those programs'.
    Each 64 columns of a step are a block of ``T`` swizzled 128-byte rows
    (``gluon_wgmma_sparse._wgmma_sp_asm``); a part is ``T / SHARE`` of them."""
    part = T // SHARE
    step_bytes = T * 64 * U
    lines = [
        "{ .reg .b32 %l_t, %l_dst, %l_bar, %l_row, %l_base, %l_colb; .reg .b64 %l_desc; .reg .b16 %l_mask;",
        ".reg .pred %l_one;", _thread0("l"),
        f"mov.b64 %l_desc, {_DESCRIPTOR}; cvta.param.u64 %l_desc, %l_desc;",
        "mov.u32 %l_base, global_smem; add.u32 %l_bar, %l_base, $2;",
        f"@%l_one mbarrier.arrive.expect_tx.shared::cta.b64 _, [%l_bar], {step_bytes};",
        f"mov.b16 %l_mask, {(1 << SHARE) - 1}; shl.b16 %l_mask, %l_mask, $6;",
    ]
    parts = [None] if MULTICAST else list(range(SHARE))
    for block in range(U // 2):
        for h in parts:
            lines.append(f"add.u32 %l_dst, %l_base, $1; add.u32 %l_dst, %l_dst, {block * T * 128};")
            lines.append(f"add.s32 %l_colb, $3, {block * BOX_COLUMNS};")
            if h is None:  # this program's part: rank * T/SHARE tokens on, in every program
                lines.append(f"mad.lo.u32 %l_dst, $5, {part * 128}, %l_dst; mad.lo.s32 %l_row, $5, {part}, $4;")
                lines.append(
                    "@%l_one cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
                    ".multicast::cluster [%l_dst], [%l_desc, {%l_colb, %l_row}], [%l_bar], %l_mask;")
            else:
                lines.append(f"add.u32 %l_dst, %l_dst, {h * part * 128}; add.s32 %l_row, $4, {h * part};")
                lines.append(
                    "@%l_one cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
                    " [%l_dst], [%l_desc, {%l_colb, %l_row}], [%l_bar];")
    lines.append("mov.b32 $0, 0; }")
    return " ".join(lines)


# every thread waits until the phase of parity $2 of the barrier at byte $1 has completed
_WAIT_ASM = gl.constexpr(
    "{ .reg .b32 %w_at; .reg .pred %w_done; mov.u32 %w_at, global_smem; add.u32 %w_at, %w_at, $1; "
    "SLOT_WAIT: mbarrier.try_wait.parity.shared::cta.b64 %w_done, [%w_at], $2; @!%w_done bra SLOT_WAIT; "
    "mov.b32 $0, 0; }")


@gluon.constexpr_function
def _release_asm(SHARE):
    """The first thread of each warpgroup arrives on the barrier at byte ``$1`` of every program
    that shares x with it (cluster ranks ``$2 ..``, its own included)."""
    lines = ["{ .reg .b32 %r_t, %r_at, %r_peer; .reg .pred %r_lead;",
             "mov.u32 %r_t, %tid.x; and.b32 %r_t, %r_t, 127; setp.eq.u32 %r_lead, %r_t, 0;",
             "mov.u32 %r_at, global_smem; add.u32 %r_at, %r_at, $1;"]
    for rank in range(SHARE):
        lines.append(f"add.u32 %r_t, $2, {rank}; mapa.shared::cluster.u32 %r_peer, %r_at, %r_t;")
        lines.append("@%r_lead mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%r_peer];")
    lines.append("mov.b32 $0, 0; }")
    return " ".join(lines)


_CLUSTER_ARRIVE_ASM = gl.constexpr("barrier.cluster.arrive.release.aligned; mov.b32 $0, 0;")
_CLUSTER_WAIT_ASM = gl.constexpr("barrier.cluster.wait.acquire.aligned; mov.b32 $0, 0;")


@gluon.jit
def _per_thread(asm: gl.constexpr, constraints: gl.constexpr, values, NUM_WARPS: gl.constexpr):
    """Run ``asm`` once in every thread, with each of ``values`` (scalars) as an operand."""
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [NUM_WARPS], [0])
    operands = [gl.full([32 * NUM_WARPS], v, gl.int32, layout) for v in values]
    gl.inline_asm_elementwise(asm, constraints, operands, gl.int32, False, 1)


@gluon.jit
def cluster_arrive(NUM_WARPS: gl.constexpr):
    """Every thread arrives at the cluster barrier (its shared-memory operations before released)."""
    _per_thread(_CLUSTER_ARRIVE_ASM, "=r,r", [0], NUM_WARPS)


@gluon.jit
def cluster_wait(NUM_WARPS: gl.constexpr):
    """Every thread waits until every thread of the cluster has arrived (theirs acquired)."""
    _per_thread(_CLUSTER_WAIT_ASM, "=r,r", [0], NUM_WARPS)


@gluon.jit
def _wait_phase(at, parity, NUM_WARPS: gl.constexpr):
    _per_thread(_WAIT_ASM, "=r,r,r", [at, parity], NUM_WARPS)


@gluon.jit
def _load_step(turn, slot, source, X_AT: gl.constexpr, BAR_AT: gl.constexpr, T: gl.constexpr, U: gl.constexpr,
               SHARE: gl.constexpr, MULTICAST: gl.constexpr, NUM_WARPS: gl.constexpr):
    """Thread 0 starts the copies of x's step ``turn`` (in steps from the run's first k-block) into
    ring slot ``slot``; ``source`` is ``(first k-block, K, first token, part, steps of the run, first
    rank)`` (``_load_asm``).
    A step past the run is asked for at column ``K``, wholly outside x, which the TMA fills with
    zeros (the weight words there are zeros too). Columns past ``K`` come as zeros as well; those
    of a last step that run past a split's end into the next split's come as they are, and meet
    weight words masked to zero."""
    first, K, token0, part, run_turns, base = source
    col = gl.where(turn < run_turns, (first + turn * U) * 32, K)
    at = [X_AT + slot * (T * 64 * U), BAR_AT + 8 * slot, col, token0, part, base]
    _per_thread(_load_asm(T, U, SHARE, MULTICAST), "=r,r,r,r,r,r,r", at, NUM_WARPS)


@gluon.jit
def _shared_x_step(turn, acc, rings, streams, X_AT: gl.constexpr, BAR_AT: gl.constexpr, USE_ACC: gl.constexpr,
                   BF16: gl.constexpr, NUM_WARPS: gl.constexpr):
    """Step ``turn``: its weight words (this thread's copies landed), the copies of the words
    ``stages - 1`` steps on into the slot the step before read, the wait for its x, its MMAs."""
    STAGES: gl.constexpr = rings[0].shape[0]
    T: gl.constexpr = rings[0].shape[1]
    U: gl.constexpr = rings[1].shape[3]
    slot = turn % STAGES
    v, e = _read_words(rings, slot, STAGES - 2)
    _copy_words(rings, (turn + STAGES - 1) % STAGES, streams, (turn + STAGES - 1) * U)
    async_copy.commit_group()
    _wait_phase(BAR_AT + 8 * slot, (turn // STAGES) % 2, NUM_WARPS)
    return _wgmma_sp(acc, v, e, slot * (T * 64 * U), X_AT, USE_ACC, BF16)


@gluon.jit
def _refill(done, steps, source, X_AT: gl.constexpr, BAR_AT: gl.constexpr, STAGES: gl.constexpr, T: gl.constexpr,
            U: gl.constexpr, SHARE: gl.constexpr, NUM_WARPS: gl.constexpr):
    """Step ``done`` has retired here: if the loop has a step ``stages`` later, release the slot in
    every program of the cluster, wait until all of them have released it, and multicast this
    program's part of that step into all of them."""
    if done + STAGES < steps:
        slot = done % STAGES
        empty = BAR_AT + 8 * (STAGES + slot)
        _per_thread(_release_asm(SHARE), "=r,r,r", [empty, source[5]], NUM_WARPS)
        _wait_phase(empty, (done // STAGES) % 2, NUM_WARPS)
        _load_step(done + STAGES, slot, source, X_AT, BAR_AT, T, U, SHARE, True, NUM_WARPS)


@gluon.jit
def _shared_x_loop(acc, rings, streams, first, run, K, part, base, X_AT: gl.constexpr, BAR_AT: gl.constexpr,
                   BF16: gl.constexpr, SHARE: gl.constexpr):
    """The sparse form's main loop with x shared by ``SHARE`` programs of the cluster (ranks ``base``
    on; this one is ``part`` of them): ``run`` k-blocks from ``first``. The first step runs before
    the loop with a zero accumulator (C7515, as ``_sparse_loop``), then two per iteration (two sets
    of word registers); with an even number of steps the loop runs one past the run, which brings
    zeros."""
    STAGES: gl.constexpr = rings[0].shape[0]
    T: gl.constexpr = rings[0].shape[1]
    W: gl.constexpr = rings[1].shape[1]
    G: gl.constexpr = rings[1].shape[2] // 4
    U: gl.constexpr = rings[1].shape[3]
    NUM_WARPS: gl.constexpr = 4 * G
    run_turns = gl.cdiv(gl.maximum(run, 0), U)  # steps with k-blocks of the run (an empty split has none)
    steps = run_turns + 1 - run_turns % 2  # the steps the loop runs: at least one
    source = (first, K, gl.program_id(1) * T, part, run_turns, base)
    _per_thread(_init_asm(BAR_AT, STAGES, G, SHARE), "=r,r", [0], NUM_WARPS)
    _cta_barrier()  # every thread sees the barriers set up before it waits on them
    cluster_arrive(NUM_WARPS)
    for ahead in gl.static_range(STAGES - 1):
        _copy_words(rings, ahead, streams, ahead * U)
        async_copy.commit_group()
    for ahead in gl.static_range(STAGES):  # every part alone: the partners' barriers may not be set up yet
        if ahead < steps:
            _load_step(ahead, ahead, source, X_AT, BAR_AT, T, U, SHARE, False, NUM_WARPS)
    acc = _shared_x_step(0, acc, rings, streams, X_AT, BAR_AT, False, BF16, NUM_WARPS)
    acc = warpgroup_mma_wait(W, deps=[acc])
    cluster_wait(NUM_WARPS)  # the partners' barriers are set up: remote operations from here on
    for turn in range(1, steps, 2):
        acc = _shared_x_step(turn, acc, rings, streams, X_AT, BAR_AT, True, BF16, NUM_WARPS)
        acc = warpgroup_mma_wait(W, deps=[acc])
        _refill(turn - 1, steps, source, X_AT, BAR_AT, STAGES, T, U, SHARE, NUM_WARPS)
        acc = _shared_x_step(turn + 1, acc, rings, streams, X_AT, BAR_AT, True, BF16, NUM_WARPS)
        acc = warpgroup_mma_wait(W, deps=[acc])
        _refill(turn, steps, source, X_AT, BAR_AT, STAGES, T, U, SHARE, NUM_WARPS)
    rings[0]._keep_alive()  # x's ring too: only the TMA writes it and only the MMAs' assembly reads it
    _keep_word_rings(rings)
    return warpgroup_mma_wait(0, deps=[acc])


