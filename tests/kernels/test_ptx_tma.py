"""Hopper's bulk tensor copies (TMA) and mbarriers in the PTX emulator.

Small hand-written kernels with known answers: the tensor map's box with its zero fill and its
swizzle (cross-checked against what ``wgmma`` reads through a swizzled descriptor), a pair of
programs in a cluster that multicast halves of a box into each other, and a pipelined ring of
slots with full and empty mbarriers, whose synchronization bugs (a missing wait, a wrong parity,
an unpublished barrier, an early end) the emulator must refuse. Last, a Gluon kernel taking a
host ``TensorDescriptor``, launched through ``EmulatedKernel`` as Triton's launcher would.
"""

import re

import numpy as np
import pytest
import torch
from ptx_emulator import Memory, PtxError, TensorMap, parse, run_grid
from ptx_launch import EmulatedKernel, tensor_map, tensordesc_signature
from test_ptx_wgmma import a_fragment, d_fragment
from triton.backends.compiler import BaseBackend
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from triton.runtime.jit import native_specialize_impl

# the start of the hand-written modules below, and the registers the longer ones declare
PRELUDE = """
.version 8.7
.target sm_90a
.address_size 64
.extern .shared .align 16 .b8 global_smem[];
"""
REGISTER_DECLARATIONS = ".reg .pred %p<8>; .reg .b16 %rs<4>; .reg .b32 %r<64>; .reg .b64 %rd<16>;"


# ---------------------------------------------------------------------------------------- parsing

LOOPS = """
.version 8.7
.target sm_90a
.address_size 64
.visible .entry loops(
    .param .u64 .ptr .global .align 1 loops_param_0
)
.reqntid 32
{
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    .reg .pred %p<2>;
    ld.param.b64 %rd1, [loops_param_0];
    mov.u32 %r1, 0;
    mov.u32 %r2, 0;
    { .reg .pred %w; LOOP: add.s32 %r1, %r1, 1; setp.lt.u32 %w, %r1, 3; @%w bra LOOP; }
    { .reg .pred %w; LOOP: add.s32 %r2, %r2, 10; setp.lt.u32 %w, %r2, 50; @%w bra LOOP; }
    mov.u32 %r3, 0;
LOOP:
    add.s32 %r3, %r3, 100;
    setp.lt.u32 %p1, %r3, 200;
    { @%p1 bra LOOP; }
    st.global.b32 [%rd1], %r1;
    st.global.b32 [%rd1+4], %r2;
    st.global.b32 [%rd1+8], %r3;
    ret;
}
"""


def test_labels_are_scoped_to_their_block():
    """The same wait-loop block pasted twice defines its label twice: each branch loops in its own
    copy, and a branch in a block without the label goes to the enclosing block's."""
    memory = Memory("global")
    out = np.full(3, -1, dtype=np.int32)
    run_grid(LOOPS, (1,), 32, [memory.add(out.view(np.uint8), "out")], memory, 0)
    assert out.tolist() == [3, 50, 200]
    program = parse(LOOPS)
    assert list(program.labels) == ["LOOP"]  # the function's own; the blocks' are theirs
    assert [ins.target for ins in program.instrs if ins.op == "bra"] == [3, 6, 10]


@pytest.mark.parametrize("old, new, message", [
    # a second LOOP in the function's own block
    ("{ @%p1 bra LOOP; }", "@%p1 bra LOOP;\nLOOP:\n    mov.u32 %r4, 0;", "defined twice"),
    # the outer label gone: only the blocks' copies remain, invisible from outside them
    ("LOOP:\n    add.s32 %r3", "    add.s32 %r3", "not defined in its block"),
])
def test_label_scoping_errors(old, new, message):
    with pytest.raises(PtxError, match=message):
        parse(LOOPS.replace(old, new))


def test_parameters_declared_as_byte_arrays_have_addresses():
    ptx = LOOPS.replace(".param .u64 .ptr .global .align 1 loops_param_0",
                        ".param .align 64 .b8 loops_param_0[128],\n    .param .u32 loops_param_1,\n"
                        "    .param .u64 .ptr .global .align 1 loops_param_2")
    program = parse(ptx)
    assert program.params == ["loops_param_0", "loops_param_1", "loops_param_2"]
    assert program.param_bytes == {"loops_param_0": 128}
    at = list(program.param_addresses.values())
    assert all(a % 128 == 0 for a in at) and at[1] >= at[0] + 128 and at[2] >= at[1] + 8
    assert program.param_at(at[1]) == "loops_param_1" and program.param_at(at[1] + 4) is None


# ---------------------------------------------------------------------------------------- one program

def numpy_map(memory: Memory, x: np.ndarray, box: tuple[int, ...], swizzle: int) -> TensorMap:
    """A tensor map of the numpy array ``x`` (mapped into ``memory``), innermost dimension first."""
    base = memory.add(x.view(np.uint8).ravel(), "x")
    return TensorMap(base, x.shape[::-1], x.strides[::-1][1:], box, x.itemsize, swizzle)


def swizzled(linear: np.ndarray, swizzle: int) -> np.ndarray:
    """Bytes laid out row-major (``linear``) as a 1024-byte aligned TMA destination holds them."""
    out = np.empty_like(linear)
    at = np.arange(linear.size)
    out[at ^ (((at >> 7) & (swizzle // 16 - 1)) << 4) if swizzle else at] = linear
    return out


ONE = PRELUDE + """.visible .entry one(
    .param .align 64 .b8 one_param_0[128],
    .param .u64 .ptr .global .align 1 one_param_1,
    .param .u32 one_param_2,
    .param .u32 one_param_3,
    .param .u64 .ptr .global .align 1 one_param_4
)
.reqntid 128
{{
    """ + REGISTER_DECLARATIONS + """
    mov.b64 %rd1, one_param_0;
    cvta.param.u64 %rd2, %rd1;
    ld.param.b64 %rd3, [one_param_1];
    ld.param.b32 %r6, [one_param_2];
    ld.param.b32 %r7, [one_param_3];
    mov.u32 %r2, %tid.x;
    setp.eq.u32 %p1, %r2, 0;
    mov.u32 %r3, global_smem;
    add.u32 %r1, %r3, {bar};
    @%p1 mbarrier.init.shared::cta.b64 [%r1], 1;
    bar.sync 0;
    @%p1 mbarrier.arrive.expect_tx.shared::cta.b64 _, [%r1], {nbytes};
    @%p1 cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%r3], [%rd2, {{%r6, %r7}}], [%r1];
    mov.u32 %r4, 0;
    {{ .reg .pred %w; WAIT: mbarrier.try_wait.parity.shared::cta.b64 %w, [%r1], %r4; @!%w bra WAIT; }}
{after}
    ret;
}}
"""

# every thread copies 16 bytes of shared memory at a time out to the output (chunk %r8; %r15
# counts the rounds, the same in every thread: the branch is uniform)
COPY_OUT = """
    mov.u32 %r8, %r2;
    mov.u32 %r15, 0;
COPY:
    setp.lt.u32 %p3, %r8, {chunks};
    shl.b32 %r9, %r8, 4;
    add.u32 %r10, %r3, %r9;
    @%p3 ld.shared.v4.b32 {{%r11, %r12, %r13, %r14}}, [%r10];
    mul.wide.u32 %rd4, %r8, 16;
    add.s64 %rd5, %rd3, %rd4;
    @%p3 st.global.v4.b32 [%rd5], {{%r11, %r12, %r13, %r14}};
    add.u32 %r8, %r8, 128;
    add.u32 %r15, %r15, 128;
    setp.lt.u32 %p2, %r15, {chunks};
    @%p2 bra COPY;
"""


def one_ptx(nbytes: int) -> str:
    return ONE.format(bar=nbytes, nbytes=nbytes, after=COPY_OUT.format(chunks=nbytes // 16))


def load_one(x: np.ndarray, box: tuple[int, ...], swizzle: int, coords: tuple[int, int], ptx: str | None = None,
             out_bytes: int | None = None, extra: np.ndarray | None = None,
             shared: int | None = None) -> np.ndarray:
    """One program TMA-loads the box at ``coords`` (innermost first) and, unless ``ptx`` does
    something else, copies its shared memory out: the bytes, as laid out in shared memory.
    ``extra``: the last parameter's buffer."""
    memory = Memory("global")
    tmap = numpy_map(memory, x, box, swizzle)
    nbytes = tmap.box_bytes
    out = np.zeros(out_bytes or nbytes, dtype=np.uint8)
    args = [tmap, memory.add(out, "out"), coords[0] & 0xFFFFFFFF, coords[1] & 0xFFFFFFFF]
    if extra is not None:
        args.append(memory.add(extra.view(np.uint8).ravel(), "extra"))
    run_grid(ptx or one_ptx(nbytes), (1,), 128, args, memory, shared or nbytes + 64)
    return out


def test_a_box_outside_the_tensor_reads_zeros():
    x = (np.arange(10 * 24, dtype=np.float16) + 1).reshape(10, 24)
    out = load_one(x, (16, 8), 0, (16, -3)).view(np.float16).reshape(8, 16)
    expected = np.zeros((8, 16), np.float16)
    expected[3:, :8] = x[0:5, 16:24]  # rows -3..4 and columns 16..31 of a [10, 24] tensor
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("swizzle", [32, 64, 128])
def test_swizzle_by_address(swizzle):
    """Chunk c (16 bytes) of row r of a box lands at chunk c ^ (row of the swizzle pattern): for
    128 bytes, rows of 64 fp16 values, chunk c of row r at c ^ (r % 8)."""
    cols = swizzle // 2
    x = np.random.default_rng(swizzle).standard_normal((64, cols)).astype(np.float16)
    out = load_one(x, (cols, 64), swizzle, (0, 0)).view(np.float16).reshape(64, cols)
    if swizzle == 128:  # by hand, element by element
        expected = np.empty_like(x)
        for r in range(64):
            for c in range(cols):
                expected[r, 8 * ((c // 8) ^ (r % 8)) + c % 8] = x[r, c]
        np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out.view(np.uint8).ravel(), swizzled(x.view(np.uint8).ravel(), swizzle))


@pytest.mark.parametrize("kwargs, message", [
    (dict(base=8), "not 16-byte aligned"),
    (dict(strides_bytes=(72,)), "multiples of 16"),
    (dict(box=(64, 300)), "1 to 256"),
    (dict(box=(64, 0)), "1 to 256"),
    (dict(box=(4, 8)), "not a multiple of 16"),
    (dict(box=(128, 8), swizzle=128), "wider than its 128-byte swizzle"),
    (dict(box=(64, 8), swizzle=64), "wider than its 64-byte swizzle"),
    (dict(swizzle=16), "swizzle of 16"),
    (dict(elem_bytes=3), "elements of 3 bytes"),
    (dict(box=(64,)), "as many"),
    (dict(dims=(64, 0)), "dimensions"),
])
def test_tensor_maps_the_driver_would_refuse(kwargs, message):
    fields = dict(base=1 << 20, dims=(64, 32), strides_bytes=(128,), box=(64, 8), elem_bytes=2, swizzle=0) | kwargs
    with pytest.raises(ValueError, match=message):
        TensorMap(**fields)


WAIT_ONE = "{ .reg .pred %w; WAIT: mbarrier.try_wait.parity.shared::cta.b64 %w, [%r1], %r4; @!%w bra WAIT; }"
EXPECT_ONE = "@%p1 mbarrier.arrive.expect_tx.shared::cta.b64 _, [%r1], 4096;"
TMA_ONE = ("@%p1 cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes "
           "[%r3], [%rd2, {%r6, %r7}], [%r1];")
MULTICAST_ONE = TMA_ONE.replace("bytes [%r3]", "bytes.multicast::cluster [%r3]").replace("[%r1];", "[%r1], %rs1;")
AFTER_WAIT = "mov.u32 %r8, %r2;"  # the first instruction after the wait

# four chained wgmma m64n64k16, A from registers (16 words per thread, k-block by k-block), B the
# box [64 n, 64 k] just loaded (K-major, 128-byte swizzle: 8-row groups 1024 bytes apart, each
# k-block 32 bytes further along the rows); the accumulator stored per thread
WGMMA_ON_THE_BOX = """
    .reg .b32 %d<32>;
    ld.param.b64 %rd6, [one_param_4];
    mul.wide.u32 %rd7, %r2, 64;
    add.s64 %rd8, %rd6, %rd7;
    ld.global.v4.b32 {{%r20, %r21, %r22, %r23}}, [%rd8];
    ld.global.v4.b32 {{%r24, %r25, %r26, %r27}}, [%rd8+16];
    ld.global.v4.b32 {{%r28, %r29, %r30, %r31}}, [%rd8+32];
    ld.global.v4.b32 {{%r32, %r33, %r34, %r35}}, [%rd8+48];
{zeros}
    shr.u32 %r16, %r3, 4;
    cvt.u64.u32 %rd9, %r16;
    or.b64 %rd10, %rd9, {layout};
    add.s64 %rd11, %rd10, 2;
    add.s64 %rd12, %rd10, 4;
    add.s64 %rd13, %rd10, 6;
    wgmma.fence.sync.aligned;
    wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {acc}, {{%r20, %r21, %r22, %r23}}, %rd10, 1, 1, 1, 0;
    wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {acc}, {{%r24, %r25, %r26, %r27}}, %rd11, 1, 1, 1, 0;
    wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {acc}, {{%r28, %r29, %r30, %r31}}, %rd12, 1, 1, 1, 0;
    wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {acc}, {{%r32, %r33, %r34, %r35}}, %rd13, 1, 1, 1, 0;
    wgmma.commit_group.sync.aligned;
    wgmma.wait_group.sync.aligned 0;
    mul.wide.u32 %rd14, %r2, 128;
    add.s64 %rd15, %rd3, %rd14;
{stores}
"""


def wgmma_on_the_box_ptx() -> str:
    acc = "{" + ", ".join(f"%d{i}" for i in range(32)) + "}"
    after = WGMMA_ON_THE_BOX.format(
        zeros="\n".join(f"    mov.b32 %d{i}, 0;" for i in range(32)), layout=(1024 >> 4) << 32 | 1 << 62, acc=acc,
        stores="\n".join(f"    st.global.b32 [%rd15+{4 * i}], %d{i};" for i in range(32)))
    return ONE.format(bar=8192, nbytes=8192, after=after)


def test_what_wgmma_reads_through_a_swizzled_descriptor_is_the_box():
    """A [64, 64] fp16 box loaded with the 128-byte swizzle is the K-major B operand a 128-byte
    swizzle descriptor describes: the product is A @ box.T. TMA writes through the async proxy, so
    the wgmma reads it after the mbarrier wait with no fence.proxy.async; without the wait the
    bytes are still in flight."""
    rng = np.random.default_rng(7)
    a, box = rng.standard_normal((64, 64)).astype(np.float16), rng.standard_normal((64, 64)).astype(np.float16)
    words = np.concatenate([a_fragment(a[:, 16 * kb : 16 * kb + 16]) for kb in range(4)], 1)  # [128, 16]
    ptx = wgmma_on_the_box_ptx()
    out = load_one(box, (64, 64), 128, (0, 0), ptx, out_bytes=128 * 128, extra=words).view(np.float32).reshape(128, 32)
    d = np.full((64, 64), np.nan)
    for t, reg, row, col in d_fragment(64):
        d[row, col] = out[t, reg]
    np.testing.assert_allclose(d, a.astype(np.float64) @ box.astype(np.float64).T, rtol=1e-5, atol=1e-5)
    with pytest.raises(PtxError, match="has not observed"):
        load_one(box, (64, 64), 128, (0, 0), ptx.replace(WAIT_ONE, ""), out_bytes=128 * 128, extra=words)


ONE_PROGRAM_BUGS = {
    "read before the wait": ([(WAIT_ONE, "")], "has not observed"),
    # the copy has completed phase 0 (the emulator lands it at issue): parity 1 waits for phase 1
    "wrong parity": ([("mov.u32 %r4, 0;", "mov.u32 %r4, 1;")], "deadlock: rank 0 waits for phase 1 \\(parity 1\\)"),
    "too few bytes expected": ([("_, [%r1], 4096;", "_, [%r1], 2048;")],
                               "deadlock: rank 0 waits for phase 0 \\(parity 0\\).*tx-count of -2048"),
    "two arrivals": ([("setp.eq.u32 %p1, %r2, 0;", "setp.lt.u32 %p1, %r2, 2;")], "beyond the 1 its phase expects"),
    "an arrival counting two": ([(EXPECT_ONE, EXPECT_ONE + "\n    @%p1 mbarrier.arrive.shared::cta.b64 _, [%r1], 2;")],
                                "beyond the 1 its phase expects \\(0 missing"),
    "init in flight": ([(EXPECT_ONE, EXPECT_ONE + "\n@%p1 mbarrier.init.shared::cta.b64 [%r1], 1;")], "in flight"),
    "misaligned box": ([("add.u32 %r1, %r3, 4096;", "add.u32 %r1, %r3, 4096;\n    add.u32 %r10, %r3, 128;"),
                        ("[%r3], [%rd2", "[%r10], [%rd2")], "not 1024-byte aligned"),
    "init unseen by other warps": ([("bar.sync 0;\n    @%p1 mbarrier.arrive", "@%p1 mbarrier.arrive")],
                                   "did not initialize it"),
    "store into the barrier": ([(AFTER_WAIT, "st.shared.b32 [%r1], %r2;\n" + AFTER_WAIT)], "bytes of an mbarrier"),
    "parity per thread": ([("mov.u32 %r4, 0;", "and.b32 %r4, %r2, 1;")], "different barriers or parities"),
    "not a tensor map": ([("[%rd2, {%r6", "[%rd3, {%r6")], "not the address of a tensor-map parameter"),
    "multicast outside the cluster": ([(TMA_ONE, "mov.u16 %rs1, 3;\n    " + MULTICAST_ONE)],
                                      "outside the cluster of 1"),
    "copy over a copy in flight": ([(TMA_ONE, TMA_ONE + "\n    " + TMA_ONE), ("_, [%r1], 4096;", "_, [%r1], 8192;")],
                                   "nobody has waited for"),
    "ld.param of the map": ([(AFTER_WAIT, "ld.param.b64 %rd6, [one_param_0];\n" + AFTER_WAIT)],
                            "ld.param of a tensor-map"),
}


@pytest.mark.parametrize("edits, message", ONE_PROGRAM_BUGS.values(), ids=ONE_PROGRAM_BUGS.keys())
def test_one_program_refusals(edits, message):
    x = np.arange(32 * 64, dtype=np.float16).reshape(32, 64)
    ptx = one_ptx(4096)
    for old, new in edits:
        assert old in ptx
        ptx = ptx.replace(old, new)
    error = NotImplementedError if message.startswith("ld.param") else PtxError
    with pytest.raises(error, match=message):
        load_one(x, (64, 32), 128, (0, 0), ptx)


def test_tensor_maps_go_with_128_byte_parameters_only():
    memory = Memory("global")
    x = np.zeros((32, 64), np.float16)
    tmap = numpy_map(memory, x, (64, 32), 128)
    with pytest.raises(PtxError, match="one_param_1 \\(a scalar\\) given TensorMap"):
        run_grid(one_ptx(4096), (1,), 128, [tmap, tmap], memory, 8192)
    with pytest.raises(PtxError, match="one_param_0 \\(.b8 \\[128\\]\\) given 0"):
        run_grid(one_ptx(4096), (1,), 128, [0], memory, 8192)


COUNTED = PRELUDE + """.visible .entry counted(
    .param .u64 .ptr .global .align 1 counted_param_0
)
.reqntid 64
{
    .reg .pred %p<4>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    ld.param.b64 %rd1, [counted_param_0];
    mov.u32 %r2, %tid.x;
    setp.eq.u32 %p1, %r2, 0;
    setp.eq.u32 %p2, %r2, 32;
    mov.u32 %r1, global_smem;
    @%p1 mbarrier.init.shared::cta.b64 [%r1], 5;
    bar.sync 0;
    @%p1 mbarrier.arrive.shared::cta.b64 _, [%r1], 3;
    @%p2 mbarrier.arrive.shared::cta.b64 _, [%r1], 2;
    mov.u32 %r4, 0;
    { .reg .pred complete; waitLoop: mbarrier.try_wait.parity.shared::cta.b64 complete, [%r1], %r4;
      @!complete bra.uni waitLoop; }
    @%p1 st.global.b32 [%rd1], %r2;
    ret;
}
"""


def test_an_arrive_may_count_several_arrivals():
    """Gluon's ``mbarrier.arrive(bar, count=n)``: one thread's arrive counts ``n``; with the other
    warp's two the phase of five completes (the wait loop as Triton writes it: its predicate a
    register named without %)."""
    memory = Memory("global")
    out = np.full(1, -1, dtype=np.int32)
    run_grid(COUNTED, (1,), 64, [memory.add(out.view(np.uint8), "out")], memory, 64)
    assert out[0] == 0
    with pytest.raises(PtxError, match="deadlock: rank 0 waits for phase 0 \\(parity 0\\).*1 of 5 arrivals"):
        run_grid(COUNTED.replace("_, [%r1], 2;", "_, [%r1], 1;"), (1,), 64, [memory.add(out.view(np.uint8), "o")],
                 memory, 64)


def test_each_active_thread_issues_its_own_copy():
    """Threads 0 and 1 each copy a box (rows 16 t ..) to shared offset 2048 t, on one barrier
    expecting both."""
    x = np.random.default_rng(6).standard_normal((32, 64)).astype(np.float16)
    ptx = ONE.format(bar=4096, nbytes=4096, after=COPY_OUT.format(chunks=256))
    per_thread = TMA_ONE.replace("@%p1", "@%p4").replace("[%r3], [%rd2, {%r6, %r7}]", "[%r31], [%rd2, {%r6, %r33}]")
    ptx = ptx.replace(TMA_ONE, "setp.lt.u32 %p4, %r2, 2;\n    shl.b32 %r30, %r2, 11;\n    add.u32 %r31, %r3, %r30;\n"
                      "    shl.b32 %r32, %r2, 4;\n    add.u32 %r33, %r7, %r32;\n    " + per_thread)
    assert "@%p4 cp.async.bulk.tensor" in ptx
    out = load_one(x, (64, 16), 128, (0, 0), ptx, out_bytes=4096, shared=4096 + 64)
    np.testing.assert_array_equal(out, swizzled(x.view(np.uint8).ravel(), 128))


# ---------------------------------------------------------------------------------------- a cluster of two

PAIR = PRELUDE + """.visible .entry pair(
    .param .align 64 .b8 pair_param_0[128],
    .param .u64 .ptr .global .align 1 pair_param_1
)
.reqntid 128
{
    """ + REGISTER_DECLARATIONS + """
    mov.b64 %rd1, pair_param_0;
    cvta.param.u64 %rd2, %rd1;
    ld.param.b64 %rd3, [pair_param_1];
    mov.u32 %r2, %tid.x;
    setp.eq.u32 %p1, %r2, 0;
    mov.u32 %r5, %cluster_ctarank;
    mov.u32 %r3, global_smem;
    add.u32 %r1, %r3, 8192;
    @%p1 mbarrier.init.shared::cta.b64 [%r1], 1;
    @%p1 fence.mbarrier_init.release.cluster;
    barrier.cluster.arrive.release.aligned;
    barrier.cluster.wait.acquire.aligned;
    @%p1 mbarrier.arrive.expect_tx.shared::cta.b64 _, [%r1], 8192;
    shl.b32 %r6, %r5, 12;
    add.u32 %r7, %r3, %r6;
    shl.b32 %r8, %r5, 5;
    mov.u32 %r9, 0;
    mov.u16 %rs1, 3;
    @%p1 cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster
        [%r7], [%rd2, {%r9, %r8}], [%r1], %rs1;
    mov.u32 %r4, 0;
    { .reg .pred %w; WAIT: mbarrier.try_wait.parity.shared::cta.b64 %w, [%r1], %r4; @!%w bra WAIT; }
    mov.u32 %r16, %ctaid.x;
    mul.wide.u32 %rd4, %r16, 8192;
    add.s64 %rd3, %rd3, %rd4;
    mov.u32 %r8, %r2;
    mov.u32 %r15, 0;
COPY:
    shl.b32 %r9, %r8, 4;
    add.u32 %r10, %r3, %r9;
    ld.shared.v4.b32 {%r11, %r12, %r13, %r14}, [%r10];
    mul.wide.u32 %rd4, %r8, 16;
    add.s64 %rd5, %rd3, %rd4;
    st.global.v4.b32 [%rd5], {%r11, %r12, %r13, %r14};
    add.u32 %r8, %r8, 128;
    add.u32 %r15, %r15, 128;
    setp.lt.u32 %p2, %r15, 512;
    @%p2 bra COPY;
    barrier.cluster.arrive.release.aligned;
    barrier.cluster.wait.acquire.aligned;
    ret;
}
"""
CLUSTER_BARRIER = "barrier.cluster.arrive.release.aligned;\n    barrier.cluster.wait.acquire.aligned;\n"
LAST_BARRIER = CLUSTER_BARRIER + "    ret;"
FENCE_THEN_ARRIVE = "@%p1 fence.mbarrier_init.release.cluster;\n    barrier.cluster.arrive.release.aligned;"
ARRIVE_THEN_FENCE = "barrier.cluster.arrive.release.aligned;\n    @%p1 fence.mbarrier_init.release.cluster;"


def run_pair(ptx: str, x: np.ndarray, clusters: int = 1, reverse: bool = False) -> np.ndarray:
    """Every program of each cluster of two loads half of the [64, 64] fp16 tile, rows 32 r.., and
    multicasts it to both; each copies the whole tile out of its shared memory: [program, bytes]."""
    memory = Memory("global")
    tmap = numpy_map(memory, x, (64, 32), 128)
    out = np.zeros((2 * clusters, 8192), dtype=np.uint8)
    run_grid(ptx, (2 * clusters,), 128, [tmap, memory.add(out.ravel(), "out")], memory, 8192 + 64, cluster=2,
             reverse=reverse)
    return out


@pytest.mark.parametrize("first_arrive", ["release", "relaxed"])
@pytest.mark.parametrize("reverse", [False, True])
def test_two_programs_multicast_halves_of_one_tile_into_each_other(reverse, first_arrive):
    """A relaxed first arrive is enough: the fence.mbarrier_init before it releases the init (what
    Gluon's ``mbarrier.sync_cluster_init`` does)."""
    x = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float16)
    ptx = PAIR.replace("barrier.cluster.arrive.release.aligned;", f"barrier.cluster.arrive.{first_arrive}.aligned;", 1)
    out = run_pair(ptx, x, clusters=2, reverse=reverse)
    expected = swizzled(x.view(np.uint8).ravel(), 128)
    for program in range(4):
        np.testing.assert_array_equal(out[program], expected)
        np.testing.assert_array_equal(swizzled(out[program], 128).view(np.float16).reshape(64, 64), x)


@pytest.mark.parametrize("old, new, message", [
    ("@%p1 fence.mbarrier_init.release.cluster;", "", "no fence.mbarrier_init"),
    # the fence after the arrive: the arrive that would publish the init comes before it
    (FENCE_THEN_ARRIVE, ARRIVE_THEN_FENCE, "no cluster barrier"),
    # rank 0 multicasts into rank 1 before rank 1 has even started
    (CLUSTER_BARRIER + "    @%p1 mbarrier", "@%p1 mbarrier", "no mbarrier initialized at shared offset 8192 of rank 1"),
    # rank 0 ends while its copy into rank 1 is in flight (rank 1 has not even waited)
    (LAST_BARRIER, "ret;", "ends while its TMA multicast into rank 1 may still be in flight"),
])
def test_two_programs_need_their_barriers(old, new, message):
    assert old in PAIR
    with pytest.raises(PtxError, match=message):
        run_pair(PAIR.replace(old, new, 1), np.zeros((64, 64), np.float16))


# after the pair's tile has landed, each program's wgmma reads its first 8 rows (B of an m64n8k16,
# A zeros); then, after a cluster barrier, each multicasts its half again, into the partner only,
# expecting the partner's half on its own barrier (phase 1). Where the wgmma is waited for decides
# whether the partner's copy may overwrite what it reads: before the cluster barrier, or at the end
# (in flight while the partner's copy comes).
PAIR_WGMMA_TAIL = """    .reg .b32 %d<4>;
    mov.b32 %r20, 0;
    mov.b32 %r21, 0;
    mov.b32 %r22, 0;
    mov.b32 %r23, 0;
    shr.u32 %r16, %r3, 4;
    cvt.u64.u32 %rd9, %r16;
    or.b64 %rd10, %rd9, LAYOUT;
    wgmma.fence.sync.aligned;
    wgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16 {%d0, %d1, %d2, %d3}, {%r20, %r21, %r22, %r23}, %rd10, 0, 1, 1, 0;
    wgmma.commit_group.sync.aligned;
    WAIT_BEFORE_BARRIER
    barrier.cluster.arrive.release.aligned;
    barrier.cluster.wait.acquire.aligned;
    @%p1 mbarrier.arrive.expect_tx.shared::cta.b64 _, [%r1], 4096;
    xor.b32 %r17, %r5, 1;
    shl.b32 %r18, 1, %r17;
    cvt.u16.u32 %rs2, %r18;
    @%p1 cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster
        [%r7], [%rd2, {%r9, %r8}], [%r1], %rs2;
    mov.u32 %r4, 1;
    { .reg .pred %w; WAIT: mbarrier.try_wait.parity.shared::cta.b64 %w, [%r1], %r4; @!%w bra WAIT; }
    WAIT_AT_THE_END
    barrier.cluster.arrive.release.aligned;
    barrier.cluster.wait.acquire.aligned;
    ret;
}
"""


@pytest.mark.parametrize("retired", [True, False])
def test_a_partners_copy_may_not_overwrite_what_a_wgmma_in_flight_reads(retired):
    wait = "wgmma.wait_group.sync.aligned 0;"
    tail = PAIR_WGMMA_TAIL.replace("LAYOUT", str((1024 >> 4) << 32 | 1 << 62))
    tail = tail.replace("WAIT_BEFORE_BARRIER", wait if retired else "")
    tail = tail.replace("WAIT_AT_THE_END", "" if retired else wait)
    ptx = PAIR[: PAIR.index("    mov.u32 %r16, %ctaid.x;")] + tail
    x = np.random.default_rng(4).standard_normal((64, 64)).astype(np.float16)
    if not retired:
        with pytest.raises(PtxError, match="into shared bytes of rank [01] that are read by a wgmma.mma_async not yet"):
            run_pair(ptx, x)
        return
    run_pair(ptx, x)  # no fence.proxy.async needed either: TMA writes through the async proxy


def test_a_multicast_into_a_partner_that_has_ended_is_refused():
    """Rank 1 publishes its barrier and ends at once; rank 0's copy into it comes too late."""
    ptx = PAIR.replace("    @%p1 mbarrier.arrive.expect_tx", "    setp.eq.u32 %p3, %r5, 1;\n    @%p3 bra END;\n"
                       "    @%p1 mbarrier.arrive.expect_tx").replace("    ret;\n}", "END:\n    ret;\n}")
    with pytest.raises(PtxError, match="rank 1, a cluster partner that has ended"):
        run_pair(ptx, np.zeros((64, 64), np.float16))


# ---------------------------------------------------------------------------------------- a pipelined ring

# Two slots of a [16, 64] fp16 tile (2048 bytes each, 128-byte swizzle); round i uses slot s = i % 2,
# for the k = i // 2-th time. Each program of the pair produces half of every round's tile (rows
# 16 i + 8 rank ..) into slot s of both programs: it waits until both programs have consumed
# the slot's previous tile (empty[s], two arrivals a phase, parity of phase k - 1: the first
# wait passes at once), expects the whole tile's bytes on its full[s] and multicasts its half.
# Then it consumes: waits for full[s] (phase k), copies the slot out, and after a CTA barrier
# (every warp has read it) arrives on its own empty[s] and, remotely, on the partner's.
RING = PRELUDE + """.visible .entry ring(
    .param .align 64 .b8 ring_param_0[128],
    .param .u64 .ptr .global .align 1 ring_param_1,
    .param .u32 ring_param_2
)
.reqntid 128
{
    """ + REGISTER_DECLARATIONS + """
    mov.b64 %rd1, ring_param_0;
    cvta.param.u64 %rd2, %rd1;
    ld.param.b64 %rd3, [ring_param_1];
    ld.param.b32 %r30, [ring_param_2];        // rounds
    mov.u32 %r2, %tid.x;
    setp.eq.u32 %p1, %r2, 0;
    mov.u32 %r3, %cluster_ctarank;
    xor.b32 %r4, %r3, 1;                      // the partner
    mov.u32 %r5, global_smem;
    add.u32 %r6, %r5, 4096;                   // full[0], full[1], empty[0], empty[1]
    add.u32 %r7, %r6, 8;
    add.u32 %r8, %r6, 16;
    add.u32 %r9, %r6, 24;
    @%p1 mbarrier.init.shared::cta.b64 [%r6], 1;
    @%p1 mbarrier.init.shared::cta.b64 [%r7], 1;
    @%p1 mbarrier.init.shared::cta.b64 [%r8], 2;
    @%p1 mbarrier.init.shared::cta.b64 [%r9], 2;
    @%p1 fence.mbarrier_init.release.cluster;
    barrier.cluster.arrive.release.aligned;
    barrier.cluster.wait.acquire.aligned;
    mov.u16 %rs1, 3;                          // multicast into both
    mov.u32 %r10, 0;                          // round i
ROUND:
    and.b32 %r11, %r10, 1;                    // slot s
    shr.u32 %r12, %r10, 1;
    and.b32 %r13, %r12, 1;                    // parity of phase k of full[s]
    xor.b32 %r14, %r13, 1;                    // parity of phase k - 1 of empty[s]
    shl.b32 %r15, %r11, 3;
    add.u32 %r16, %r6, %r15;                  // full[s]
    add.u32 %r17, %r8, %r15;                  // empty[s]
    { .reg .pred %w; WAIT: mbarrier.try_wait.parity.shared::cta.b64 %w, [%r17], %r14; @!%w bra WAIT; }
    @%p1 mbarrier.arrive.expect_tx.shared::cta.b64 _, [%r16], 2048;
    shl.b32 %r18, %r11, 11;
    shl.b32 %r19, %r3, 10;
    add.u32 %r20, %r18, %r19;
    add.u32 %r21, %r5, %r20;                  // this program's half of slot s
    shl.b32 %r22, %r10, 4;
    shl.b32 %r23, %r3, 3;
    add.u32 %r24, %r22, %r23;                 // its first row
    mov.u32 %r25, 0;
    @%p1 cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster
        [%r21], [%rd2, {%r25, %r24}], [%r16], %rs1;
    { .reg .pred %w; WAIT: mbarrier.try_wait.parity.shared::cta.b64 %w, [%r16], %r13; @!%w bra WAIT; }
    shl.b32 %r26, %r2, 4;
    add.u32 %r27, %r5, %r18;
    add.u32 %r28, %r27, %r26;
    ld.shared.v4.b32 {%r40, %r41, %r42, %r43}, [%r28];
    mov.u32 %r44, %ctaid.x;
    mad.lo.u32 %r29, %r44, %r30, %r10;        // program * rounds + i
    mul.wide.u32 %rd4, %r29, 2048;
    add.s64 %rd5, %rd3, %rd4;
    mul.wide.u32 %rd6, %r2, 16;
    add.s64 %rd7, %rd5, %rd6;
    st.global.v4.b32 [%rd7], {%r40, %r41, %r42, %r43};
    bar.sync 0;
    mapa.shared::cluster.u32 %r31, %r17, %r4;
    @%p1 mbarrier.arrive.shared::cta.b64 _, [%r17];
    @%p1 mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%r31];
    add.u32 %r10, %r10, 1;
    setp.lt.u32 %p2, %r10, %r30;
    @%p2 bra ROUND;
    barrier.cluster.arrive.release.aligned;
    barrier.cluster.wait.acquire.aligned;
    ret;
}
"""
EMPTY_WAIT = "{ .reg .pred %w; WAIT: mbarrier.try_wait.parity.shared::cta.b64 %w, [%r17], %r14; @!%w bra WAIT; }"
FULL_WAIT = "{ .reg .pred %w; WAIT: mbarrier.try_wait.parity.shared::cta.b64 %w, [%r16], %r13; @!%w bra WAIT; }"
ROUNDS = 5


def run_ring(ptx: str, x: np.ndarray, clusters: int = 1) -> np.ndarray:
    """The ring over the rounds of ``x`` [16 ROUNDS, 64] fp16: each program's copy of every
    round's tile as its slot held it, [program, round, 2048 bytes]."""
    memory = Memory("global")
    tmap = numpy_map(memory, x, (64, 8), 128)
    out = np.zeros((2 * clusters, ROUNDS, 2048), dtype=np.uint8)
    run_grid(ptx, (2 * clusters,), 128, [tmap, memory.add(out.ravel(), "out"), ROUNDS], memory, 4096 + 64, cluster=2)
    return out


@pytest.mark.parametrize("empty_wait", ["default", "acquire.cluster"])
def test_a_ring_of_two_slots_shared_by_a_pair(empty_wait):
    """Also with the empty wait acquiring at cluster scope, with a suspend-time hint (it never times out)."""
    x = np.random.default_rng(2).standard_normal((16 * ROUNDS, 64)).astype(np.float16)
    ptx = RING
    if empty_wait != "default":
        ptx = ptx.replace(EMPTY_WAIT, EMPTY_WAIT.replace("parity.shared::cta", "parity.acquire.cluster.shared::cta")
                          .replace("%r14;", "%r14, 1000000;"))
        assert ptx != RING
    out = run_ring(ptx, x, clusters=2)
    for i in range(ROUNDS):
        expected = swizzled(x[16 * i : 16 * i + 16].view(np.uint8).ravel(), 128)
        for program in range(4):
            np.testing.assert_array_equal(out[program, i], expected)


RING_BUGS = {
    # the producer overwrites a slot its partner has not consumed: nothing orders the partner's
    # reads of the slot before the copy
    "no empty wait": ([(EMPTY_WAIT, "")], "touched with no release of theirs acquired here"),
    "read before the full wait": ([(FULL_WAIT, "")], "has not observed"),
    # waits for the phase of the empty barrier that its own arrival (after the copy) completes
    "wrong empty parity": ([(EMPTY_WAIT, EMPTY_WAIT.replace("%r14", "%r13"))],
                           "cluster deadlock: rank 0 waits for phase 0 \\(parity 0\\) of the mbarrier at shared offset "
                           "4112 .*2 of 2 arrivals.*; rank 1 waits for phase 0"),
    # parity 1 before the first phase completes passes at once: the slot is read before the partner's half lands
    "wrong full parity": ([(FULL_WAIT, FULL_WAIT.replace("%r13", "%r14"))], "has not observed"),
    "no fence.mbarrier_init": ([("@%p1 fence.mbarrier_init.release.cluster;", "")], "no fence.mbarrier_init"),
    "fence after the arrive": ([(FENCE_THEN_ARRIVE, ARRIVE_THEN_FENCE)], "no cluster barrier"),
    # a CTA barrier orders the init for this program's warps, but rank 0 runs ahead into rank 1
    "no first cluster barrier": ([(CLUSTER_BARRIER + "    mov.u16", "bar.sync 0;\n    mov.u16")],
                                 "no mbarrier initialized at shared offset 4096 of rank 1"),
    "no barrier at all after the init": ([(CLUSTER_BARRIER + "    mov.u16", "mov.u16")],
                                         "used by a warp that did not initialize it"),
    # warp 0 arrives for the CTA before the other warps' reads of the slot are ordered before it
    "no CTA barrier before the arrivals": ([("bar.sync 0;\n    mapa", "mapa")], "touched with no release of theirs"),
    "remote arrive at CTA scope": ([(".release.cluster.shared::cluster", ".shared::cluster")],
                                   "without .release.cluster"),
    "no final cluster barrier": ([(LAST_BARRIER, "ret;")], "ends while"),
}


@pytest.mark.parametrize("edits, message", RING_BUGS.values(), ids=RING_BUGS.keys())
def test_ring_synchronization_bugs_are_refused(edits, message):
    ptx = RING
    for old, new in edits:
        assert old in ptx
        ptx = ptx.replace(old, new, 1)
    with pytest.raises(PtxError, match=message):
        run_ring(ptx, np.zeros((16 * ROUNDS, 64), np.float16))


# the producer's tail, instead of the final cluster barrier: wait on both empty barriers for the
# phases the next two rounds would wait for, which the partner's last arrivals complete (what
# CUTLASS does so that no program ends while a partner may still arrive on its barriers)
PRODUCER_TAIL = """mov.u32 %r50, 0;
TAIL:
    and.b32 %r11, %r10, 1;
    shr.u32 %r12, %r10, 1;
    and.b32 %r13, %r12, 1;
    xor.b32 %r14, %r13, 1;
    shl.b32 %r15, %r11, 3;
    add.u32 %r17, %r8, %r15;
    { .reg .pred %w; WAIT: mbarrier.try_wait.parity.shared::cta.b64 %w, [%r17], %r14; @!%w bra WAIT; }
    add.u32 %r10, %r10, 1;
    add.u32 %r50, %r50, 1;
    setp.lt.u32 %p3, %r50, ROUNDS_LEFT;
    @%p3 bra TAIL;
    ret;"""


@pytest.mark.parametrize("rounds", [2, 1])
def test_a_producer_tail_may_end_the_ring(rounds):
    """Waiting for the partner to consume both slots orders its last remote arrivals and its
    observations of this program's copies before the end; waiting for one slot does not."""
    x = np.random.default_rng(3).standard_normal((16 * ROUNDS, 64)).astype(np.float16)
    ptx = RING.replace(LAST_BARRIER, PRODUCER_TAIL.replace("ROUNDS_LEFT", str(rounds)))
    if rounds == 1:
        with pytest.raises(PtxError, match="ends while"):
            run_ring(ptx, x)
        return
    out = run_ring(ptx, x)
    for i in range(ROUNDS):
        np.testing.assert_array_equal(out[:, i], np.stack([swizzled(x[16 * i : 16 * i + 16].view(np.uint8).ravel(),
                                                                    128)] * 2))


# ---------------------------------------------------------------------------------------- a Gluon kernel

# One thread initializes the mbarrier at byte 2048 of the dynamic shared memory, expects the box's
# 2048 bytes and copies the box at (column 0, row $1) to byte 0; every thread waits. The tensor map
# is the kernel's first parameter, named after the Python function.
_TMA_BOX_ASM = gl.constexpr("""{
    .reg .b32 %tb_tile, %tb_bar, %tb_t, %tb_zero;
    .reg .b64 %tb_map;
    .reg .pred %tb_leader, %tb_done;
    mov.u32 %tb_tile, global_smem;
    add.u32 %tb_bar, %tb_tile, 2048;
    mov.u32 %tb_t, %tid.x;
    setp.eq.u32 %tb_leader, %tb_t, 0;
    @%tb_leader mbarrier.init.shared::cta.b64 [%tb_bar], 1;
    bar.sync 0;
    @%tb_leader mbarrier.arrive.expect_tx.shared::cta.b64 _, [%tb_bar], 2048;
    mov.b64 %tb_map, tma_box_kernel_param_0;
    cvta.param.u64 %tb_map, %tb_map;
    mov.u32 %tb_zero, 0;
    @%tb_leader cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes
        [%tb_tile], [%tb_map, {%tb_zero, $1}], [%tb_bar];
    TB_WAIT:
    mbarrier.try_wait.parity.shared::cta.b64 %tb_done, [%tb_bar], %tb_zero;
    @!%tb_done bra TB_WAIT;
    mov.u32 $0, 0;
}""")


@gluon.jit
def tma_box_kernel(desc, out_ptr, row0):
    """out [16, 64] = the box of ``desc`` at row ``row0``, TMA-loaded by inline assembly into the
    first 16 rows of the only shared buffer (its row 16 holds the mbarrier) and read back by Gluon
    through the descriptor's own swizzled layout."""
    buf = gl.allocate_shared_memory(gl.float16, [32, 64], desc.layout)
    one: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
    gl.inline_asm_elementwise(_TMA_BOX_ASM, "=r,r", [gl.full([128], row0, gl.int32, one)], dtype=gl.int32,
                              is_pure=False, pack=1)
    blocked: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])
    tile = buf.slice(0, 16).load(blocked)
    rows = gl.arange(0, 16, layout=gl.SliceLayout(1, blocked))[:, None]
    cols = gl.arange(0, 64, layout=gl.SliceLayout(0, blocked))[None, :]
    gl.store(out_ptr + rows * 64 + cols, tile)


@pytest.mark.parametrize("row0", [8, 32])
def test_a_gluon_kernel_loads_a_box_through_a_host_tensor_descriptor(row0):
    """Launched as Triton's launcher launches it: the descriptor becomes the tensor map, its shape
    and its strides; the box lands where Gluon's NVMMA layout reads it (rows past the tensor's 40
    read as zeros)."""
    x = torch.randn(40, 64, generator=torch.Generator().manual_seed(row0)).half()
    desc = TensorDescriptor.from_tensor(x, [16, 64], gl.NVMMASharedLayout(128, 16, 2))
    out = torch.full((16, 64), float("nan"), dtype=torch.float16)
    kernel = EmulatedKernel(tma_box_kernel)
    kernel[(1,)](desc, out, row0, num_warps=4)
    expected = torch.zeros(16, 64, dtype=torch.float16)
    expected[: min(16, 40 - row0)] = x[row0 : row0 + 16]
    assert torch.equal(out, expected)
    ptx = kernel.launches[-1]["ptx"]
    # the map, its shape (i32) and strides (i64) outermost first, then out_ptr and row0
    declared = re.findall(r"\.param (?:\.align \d+ )?(\.\w+).*?tma_box_kernel_param_(\d+)(\[128\])?", ptx)
    assert declared[:7] == [(".b8", "0", "[128]"), (".u32", "1", ""), (".u32", "2", ""), (".u64", "3", ""),
                            (".u64", "4", ""), (".u64", "5", ""), (".u32", "6", "")]
    assert parse(ptx).param_bytes == {"tma_box_kernel_param_0": 128}


def test_the_launcher_specializes_a_descriptor_as_triton_does():
    """The signature Triton's own specialization gives, and the tensor map: dimensions, strides
    (bytes) and box innermost first, the layout's swizzle."""
    x = torch.zeros(64, 32, dtype=torch.bfloat16)
    desc = TensorDescriptor.from_tensor(x, [8, 32], gl.NVMMASharedLayout(64, 16, 2))
    assert tensordesc_signature(desc) == native_specialize_impl(BaseBackend, desc, False, True, True)[0]
    tmap = tensor_map(desc, 1 << 20)
    assert (tmap.dims, tmap.strides_bytes, tmap.box, tmap.elem_bytes, tmap.swizzle) == ((32, 64), (64,), (32, 8), 2, 64)
    with pytest.raises(NotImplementedError, match="zero padding"):
        tensor_map(TensorDescriptor.from_tensor(x, [8, 32], gl.NVMMASharedLayout(64, 16, 2), padding="nan"), 1 << 20)


@gluon.jit
def gluon_tma_kernel(desc, out_ptr, row0):
    """out [32, 64] = two boxes of ``desc`` at rows ``row0`` and ``row0 + 16``, loaded by Gluon's
    own TMA and mbarrier API one after the other on one mbarrier (phases 0 and 1: Triton pastes
    its wait loop, label and all, twice) and read back through the descriptor's layout."""
    a = gl.allocate_shared_memory(gl.float16, [16, 64], desc.layout)
    b = gl.allocate_shared_memory(gl.float16, [16, 64], desc.layout)
    bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(bar, count=1)
    mbarrier.expect(bar, 16 * 64 * 2)
    tma.async_copy_global_to_shared(desc, [row0, 0], bar, a)
    mbarrier.wait(bar, 0)
    mbarrier.expect(bar, 16 * 64 * 2)
    tma.async_copy_global_to_shared(desc, [row0 + 16, 0], bar, b)
    mbarrier.wait(bar, 1)
    blocked: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])
    rows = gl.arange(0, 16, layout=gl.SliceLayout(1, blocked))[:, None]
    cols = gl.arange(0, 64, layout=gl.SliceLayout(0, blocked))[None, :]
    gl.store(out_ptr + rows * 64 + cols, a.load(blocked))
    gl.store(out_ptr + (rows + 16) * 64 + cols, b.load(blocked))


def test_gluons_own_tma_and_mbarriers_agree():
    """What Triton emits for Gluon's TMA (elect.sync picks the issuing thread, the wait loop's
    predicate is a register named without %) gives the boxes, zero-filled past the tensor."""
    x = torch.randn(40, 64, generator=torch.Generator().manual_seed(5)).half()
    desc = TensorDescriptor.from_tensor(x, [16, 64], gl.NVMMASharedLayout(128, 16, 2))
    out = torch.full((32, 64), float("nan"), dtype=torch.float16)
    kernel = EmulatedKernel(gluon_tma_kernel)
    kernel[(1,)](desc, out, 16, num_warps=4)
    expected = torch.zeros(32, 64, dtype=torch.float16)
    expected[:24] = x[16:]
    assert torch.equal(out, expected)
    ptx = kernel.launches[-1]["ptx"]
    assert "elect.sync" in ptx and ptx.count("waitLoop:") == 2  # one label, one per pasted block
