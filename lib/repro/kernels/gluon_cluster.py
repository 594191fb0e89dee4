"""K splits that meet in a thread-block cluster (``WgmmaConfig.cluster``, the sparse ``wgmma`` form).

With ``split_k`` > 1 every program sums a run of K for its tile, and the partial sums have to meet.
``_meet_splits`` (``gluon_sp24.py``) does it through global memory: each split stores its partial
into a workspace and counts itself in, and the split that arrives last reads all of them back and
writes the output, alone, while the others have left. On 128-row tiles that tail is the slowest
part of the sparse form (``bench/results/*-traffic.md``: the tilings that need it reach about half
the rate of the others).

On Hopper the splits of one tile can run as one cluster instead: programs that the GPU schedules
together and that can read each other's shared memory. Then each split leaves its partial in its
own shared memory, one cluster barrier makes them all visible, and each split adds up a
``1 / split_k`` slice of the tile's tokens from all of them (``ld.shared::cluster``), in split
order (the bits of ``_meet_splits``), and writes that slice. A second barrier keeps every program alive
until the others have read its partial. No workspace, no counters, and the adding is shared.

Gluon 3.6 has no cluster operations, so they are inline assembly: ``mapa.shared::cluster`` gives a
partner's address of a shared byte, ``barrier.cluster.arrive.release`` / ``wait.acquire`` the
barrier. The partial goes where the operand rings were (their copies landed and their MMAs retired:
the caller makes sure), from byte 0 of ``global_smem``, token-major with each token's rows padded by
4 floats: a warp's stores from the accumulator's layout (lane ``4g + q`` holds row ``g``,
token ``2q``) then fall on 32 different banks, and the reads, 32 rows of one token per warp (the
output's contiguous axis, so the stores to ``y`` are coalesced too), on consecutive words.
Triton sees none of these accesses and allocates nothing after the loop on this path, so nothing
of its own lies there. The launch makes the clusters (``fast_launch.ClusterGrid``).
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from .gluon_sp24 import _cta_barrier, _store_output

# st.shared.f32 of $1 at byte $2 of global_smem ($0: an unused result, which inline assembly must have)
_STORE_PARTIAL_ASM = gl.constexpr(
    "{ .reg .b32 %p_at; mov.u32 %p_at, global_smem; add.u32 %p_at, %p_at, $2; st.shared.f32 [%p_at], $1; "
    "mov.b32 $0, 0; }")

_CLUSTER_BARRIER_ASM = gl.constexpr(
    "barrier.cluster.arrive.release.aligned; barrier.cluster.wait.acquire.aligned; mov.b32 $0, 0;")


@gluon.constexpr_function
def _sum_partials_asm(SPLITS, STRIDE):
    """``$0`` = the float at byte ``$1`` of ``global_smem`` in the cluster's programs of ranks
    ``$2 + s * STRIDE``, ``s`` < ``SPLITS``, added in that order from zero (the order and the bits
    of ``_meet_splits``)."""
    lines = ["{ .reg .b32 %s_at, %s_peer, %s_rank; .reg .f32 %s_part;",
             "mov.u32 %s_at, global_smem; add.u32 %s_at, %s_at, $1; mov.f32 $0, 0f00000000;"]
    for split in range(SPLITS):
        lines.append(f"add.u32 %s_rank, $2, {split * STRIDE}; mapa.shared::cluster.u32 %s_peer, %s_at, %s_rank; "
                     "ld.shared::cluster.f32 %s_part, [%s_peer]; add.f32 $0, $0, %s_part;")
    lines.append("}")
    return " ".join(lines)


@gluon.constexpr_function
def _slice_layout(ROWS, NUM_WARPS):
    """A program's slice ``[ROWS, tokens]`` of the tile: 32 rows of one token per warp, the warps
    along the rows as far as they go, then along the tokens."""
    along_rows = min(NUM_WARPS, ROWS // 32)
    return gl.BlockedLayout([1, 1], [32, 1], [along_rows, NUM_WARPS // along_rows], [0, 1])


@gluon.jit
def _cluster_barrier(NUM_WARPS: gl.constexpr):
    """Every thread of every program of the cluster arrives (its shared-memory accesses before
    released) and waits for all the others (theirs acquired)."""
    one_per_thread: gl.constexpr = gl.BlockedLayout([1], [32], [NUM_WARPS], [0])
    gl.inline_asm_elementwise(_CLUSTER_BARRIER_ASM, "=r,r", [gl.arange(0, 32 * NUM_WARPS, layout=one_per_thread)],
                              gl.int32, False, 1)


@gluon.jit
def _store_partial(acc, PITCH: gl.constexpr):
    """This thread's accumulator registers into shared memory from byte 0, token-major, ``PITCH``
    floats per token."""
    MMA: gl.constexpr = acc.type.layout
    rows = gl.expand_dims(gl.arange(0, acc.shape[0], layout=gl.SliceLayout(1, MMA)), 1)
    tokens = gl.expand_dims(gl.arange(0, acc.shape[1], layout=gl.SliceLayout(0, MMA)), 0)
    at = (tokens * PITCH + rows) * 4
    gl.inline_asm_elementwise(_STORE_PARTIAL_ASM, "=r,f,r", [acc, at], gl.int32, False, 1)


@gluon.jit
def _meet_in_cluster(acc, rank, row0, token0, y_ptr, bias_ptr, M, N, stride_ym, HAS_BIAS: gl.constexpr,
                     SPLITS: gl.constexpr, NUM_WARPS: gl.constexpr, first_peer=0, STRIDE: gl.constexpr = 1):
    """The ``SPLITS`` partial sums ``acc`` ``[R, T]`` of the tile whose first row is ``row0`` and
    first token ``token0``, one per program of the cluster (``rank`` its split): program ``rank``
    adds up and writes tokens ``rank * T / SPLITS ..`` of the tile. The tile's splits are the
    cluster ranks ``first_peer + s * STRIDE`` (all of it, 0, 1, .., unless the cluster holds the
    splits of several tiles, ``gluon_shared_x.py``). The caller has waited for its copies and MMAs;
    the CTA barrier here makes sure every thread has before any thread writes over the rings."""
    R: gl.constexpr = acc.shape[0]
    T: gl.constexpr = acc.shape[1]
    PITCH: gl.constexpr = R + 4
    SLICE: gl.constexpr = T // SPLITS
    _cta_barrier()
    _store_partial(acc, PITCH)
    _cluster_barrier(NUM_WARPS)  # every program's partial stored
    OUT: gl.constexpr = _slice_layout(R, NUM_WARPS)
    rows = gl.expand_dims(gl.arange(0, R, layout=gl.SliceLayout(1, OUT)), 1)
    tokens = rank * SLICE + gl.expand_dims(gl.arange(0, SLICE, layout=gl.SliceLayout(0, OUT)), 0)
    at = (tokens * PITCH + rows) * 4
    total = gl.inline_asm_elementwise(_sum_partials_asm(SPLITS, STRIDE), "=f,r,r", [at, at * 0 + first_peer],
                                      gl.float32, False, 1)
    _cluster_barrier(NUM_WARPS)  # every program has read the partials it needs: now any may end
    n_out = row0 + rows
    m_out = token0 + tokens
    _store_output(total, y_ptr, bias_ptr, m_out, n_out, (n_out < N) & (m_out < M), stride_ym, HAS_BIAS)
