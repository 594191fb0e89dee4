"""The PTX emulator on small hand-written kernels with known answers, and its refusals.

Each kernel writes its results to an int32 buffer, one row per thread; the expected values are
computed here with numpy (and the float roundings with torch), so every instruction the ``spmma``
kernel needs is checked on its own before the emulator is trusted with the whole kernel.
"""

import numpy as np
import pytest
import torch
from ptx_emulator import Memory, PtxError, SharedTraffic, run_grid
from sp24_helpers import VALID_CODES, mma_sp_warps, ptx_mma_sp

HEADER = """
.version 8.7
.target sm_90a
.address_size 64
.visible .entry probe(
    .param .u64 .ptr .global .align 1 probe_param_0,
    .param .u32 probe_param_1
)
.reqntid {threads}
{{
    .reg .pred %p<8>;
    .reg .b16 %rs<8>;
    .reg .b32 %r<40>;
    .reg .b64 %rd<16>;
    ld.param.b64 %rd1, [probe_param_0];
    ld.param.b32 %r1, [probe_param_1];
    mov.u32 %r2, %tid.x;
    mov.u32 %r38, %ctaid.x;
    mad.lo.s32 %r39, %r38, {threads}, %r2;  // row of this thread in the whole grid
    mul.wide.u32 %rd2, %r39, {row_bytes};
    add.s64 %rd3, %rd1, %rd2;            // this thread's output row
{body}
    ret;
}}
"""


def run(body: str, columns: int, threads: int = 32, param: int = 0, grid=(1,), shared: int = 0,
        reverse: bool = False, traffic: SharedTraffic | None = None) -> np.ndarray:
    """Run ``body`` (thread id in %r2, its output row address in %rd3, the u32 parameter in %r1)
    and return the int32 output [program, thread, column]."""
    ptx = HEADER.format(threads=threads, row_bytes=4 * columns, body=body)
    out = np.full(int(np.prod(grid)) * threads * columns, -1, dtype=np.int32)
    memory = Memory("global")
    base = memory.add(out.view(np.uint8), "out")
    run_grid(ptx, grid, threads, [base, param], memory, shared, reverse=reverse, traffic=traffic)
    return out.reshape(-1, threads, columns)


def test_integer_arithmetic_follows_ptx_signedness():
    body = """
    sub.s32 %r3, %r2, 16;                // -16 .. 15
    shr.s32 %r4, %r3, 2;                 // arithmetic shift
    shr.u32 %r5, %r3, 28;                // logical shift
    mul.wide.s32 %rd4, %r3, %r1;         // sign-extended product
    cvt.u32.u64 %r6, %rd4;
    shr.u64 %rd5, %rd4, 32;
    cvt.u32.u64 %r7, %rd5;
    bfe.u32 %r8, %r2, 2, 3;
    setp.lt.s32 %p1, %r3, 0;
    setp.lt.u32 %p2, %r3, 0;             // never: unsigned
    selp.b32 %r9, 1, 0, %p1;
    selp.b32 %r10, 1, 0, %p2;
    max.s32 %r11, %r3, -3;
    mad.lo.s32 %r12, %r3, %r3, 7;
    st.global.b32 [%rd3], %r4;
    st.global.b32 [%rd3+4], %r5;
    st.global.b32 [%rd3+8], %r6;
    st.global.b32 [%rd3+12], %r7;
    st.global.b32 [%rd3+16], %r8;
    st.global.b32 [%rd3+20], %r9;
    st.global.b32 [%rd3+24], %r10;
    st.global.b32 [%rd3+28], %r11;
    st.global.b32 [%rd3+32], %r12;
    """
    out = run(body, 9, param=100_000)[0]
    t = np.arange(32)
    v = t - 16
    product = v.astype(np.int64) * 100_000
    expected = np.stack([v >> 2, (v % 2**32) >> 28, product.astype(np.int32), product >> 32, (t >> 2) & 7,
                         v < 0, np.zeros(32), np.maximum(v, -3), v * v + 7], axis=1)
    np.testing.assert_array_equal(out, expected.astype(np.int32))


def test_high_half_of_a_product_follows_signedness():
    body = """
    sub.s32 %r3, %r2, 16;                // -16 .. 15
    mul.hi.s32 %r4, %r3, 1431655766;     // (2^32 + 2) / 3: the high half is t / 3 (toward -inf)
    mul.hi.u32 %r5, %r3, 1431655766;     // the same bits read as unsigned
    st.global.b32 [%rd3], %r4;
    st.global.b32 [%rd3+4], %r5;
    """
    out = run(body, 2)[0]
    v = np.arange(32) - 16
    assert out[:, 0].tolist() == ((v * 1431655766) >> 32).tolist()
    assert out[:, 1].tolist() == (((v % 2**32) * 1431655766) >> 32).astype(np.int32).tolist()


@pytest.mark.parametrize("reverse", [False, True])
def test_atomics_serialize_threads_and_programs_in_launch_order(reverse):
    # every thread of two programs counts itself in on word 1 (starting at -1) and keeps what it
    # saw; the threads of a program in order, the programs in launch order or reversed
    body = """
    atom.global.gpu.acq_rel.add.u32 %r3, [%rd1+4], 1;
    fence.acq_rel.gpu;
    st.global.b32 [%rd3], %r3;
    setp.eq.s32 %p1, %r2, 31;
    @%p1 atom.global.gpu.relaxed.exch.b32 %r4, [%rd1+8], %r3;  // only the last thread
    @%p1 st.global.b32 [%rd3+4], %r4;
    """
    out = run(body, 3, grid=(2,), reverse=reverse)
    seen = out[:, :, 0]
    first, second = (1, 0) if reverse else (0, 1)
    assert seen[first].tolist() == list(range(-1, 31)) and seen[second].tolist() == list(range(31, 63))
    assert out[0, 0, 1] == 63  # the counter, after 64 increments of -1
    assert out[first, 31, 1] == -1 and out[second, 31, 1] == 30  # exch returns the value it replaced


def test_float_conversions_round_to_nearest_even_like_torch():
    # per thread: x = 1 + t * 2^-12 in fp32, rounded to fp16 and to bf16 (ties included)
    body = """
    shl.b32 %r3, %r2, 11;                // t * 2^-12 in the fp32 mantissa of 1.0
    add.s32 %r4, %r3, 1065353216;        // 0x3F800000 = 1.0f
    cvt.rn.f16.f32 %rs1, %r4;
    cvt.rn.bf16.f32 %rs2, %r4;
    cvt.u32.u16 %r5, %rs1;
    cvt.u32.u16 %r6, %rs2;
    cvt.f32.f16 %r7, %rs1;
    add.f32 %r8, %r7, 0f3F800000;        // + 1.0
    st.global.b32 [%rd3], %r5;
    st.global.b32 [%rd3+4], %r6;
    st.global.b32 [%rd3+8], %r8;
    """
    out = run(body, 3)[0]
    x = torch.tensor(1 + np.arange(32) * 2.0**-12, dtype=torch.float32)
    half, brain = x.half(), x.bfloat16()
    assert out[:, 0].tolist() == half.view(torch.int16).numpy().astype(np.uint16).astype(np.int32).tolist()
    assert out[:, 1].tolist() == brain.view(torch.int16).numpy().astype(np.uint16).astype(np.int32).tolist()
    assert (out[:, 2].view(np.float32) == half.float().numpy() + 1).all()


def test_warp_shuffle_stays_inside_each_warp():
    body = """
    mul.lo.s32 %r3, %r2, 3;
    shfl.sync.bfly.b32 %r4, %r3, 1, 31, -1;
    shfl.sync.bfly.b32 %r5, %r3, 16, 31, -1;
    st.global.b32 [%rd3], %r4;
    st.global.b32 [%rd3+4], %r5;
    """
    out = run(body, 2, threads=64)[0]
    t = np.arange(64)
    assert out[:, 0].tolist() == (3 * (t ^ 1)).tolist()
    assert out[:, 1].tolist() == (3 * (t ^ 16)).tolist()  # lane 16 of warp 1 is thread 48, not 16


def test_shared_memory_and_a_uniform_loop():
    # thread t stores t * t to shared word t; after the barrier it reads word (t + 1) % 32, then adds
    # 0 + 1 + ... + (n - 1) with a loop whose trip count n is the parameter
    body = """
    mov.b32 %r3, global_smem;
    shl.b32 %r4, %r2, 2;
    add.s32 %r5, %r3, %r4;
    mul.lo.s32 %r6, %r2, %r2;
    st.shared.b32 [%r5], %r6;
    bar.sync 0;
    add.s32 %r7, %r2, 1;
    and.b32 %r8, %r7, 31;
    shl.b32 %r9, %r8, 2;
    add.s32 %r10, %r3, %r9;
    ld.shared.b32 %r11, [%r10];
    mov.b32 %r12, 0;
    mov.b32 %r13, 0;
$L_loop:
    add.s32 %r12, %r12, %r13;
    add.s32 %r13, %r13, 1;
    setp.lt.s32 %p1, %r13, %r1;
    @%p1 bra $L_loop;
    st.global.b32 [%rd3], %r11;
    st.global.b32 [%rd3+4], %r12;
    """
    out = run(body, 2, param=10, grid=(2,), shared=128)
    t = np.arange(32)
    for program in out:  # each program starts with its own shared memory
        assert program[:, 0].tolist() == (((t + 1) % 32) ** 2).tolist()
        assert (program[:, 1] == 45).all()


def _swap_words(first: str, then: str = "") -> str:
    # thread t of 64 writes shared word t, then (after ``first``) reads word t ^ 32, written by
    # the other warp, runs ``then`` and stores what it read
    return f"""
    mov.b32 %r3, global_smem;
    shl.b32 %r4, %r2, 2;
    add.s32 %r5, %r3, %r4;
    st.shared.b32 [%r5], %r2;
    {first}
    xor.b32 %r6, %r2, 32;
    shl.b32 %r7, %r6, 2;
    add.s32 %r8, %r3, %r7;
    ld.shared.b32 %r9, [%r8];
    {then}
    st.global.b32 [%rd3], %r9;
    """


def _swapped_or_race(body: str, race: str | None) -> None:
    """Run a ``_swap_words`` body: each thread has its partner's id, or the emulator names ``race``."""
    if race is None:
        assert run(body, 1, threads=64, shared=256)[0, :, 0].tolist() == (np.arange(64) ^ 32).tolist()
    else:
        with pytest.raises(PtxError, match=race):
            run(body, 1, threads=64, shared=256)


@pytest.mark.parametrize("barrier", [True, False])
def test_a_missing_barrier_between_warps_is_a_race(barrier):
    body = _swap_words("bar.sync 0;" if barrier else "")
    _swapped_or_race(body, None if barrier else "shared-memory race at byte 128")


def test_predicated_loads_keep_the_old_value_on_inactive_threads():
    body = """
    mov.u32 %r3, 77;
    setp.lt.u32 %p1, %r2, 4;
    @%p1 ld.global.b32 %r3, [%rd1];      // word 0 of the output: still -1 when read
    st.global.b32 [%rd3], %r3;
    """
    out = run(body, 1)[0, :, 0]
    assert out.tolist() == [-1] * 4 + [77] * 28


@pytest.mark.parametrize(
    "body, error, message",
    [
        ("    st.global.b32 [%rd3+4], %r2;\n", PtxError, r"outside every buffer \(out \["),
        ("    ld.global.b32 %r3, [%rd1+2];\n", PtxError, "misaligned global access of 4 bytes"),
        ("    ld.global.v4.b32 {%r3, %r4, %r5, %r6}, [%rd1+4];\n", PtxError, "misaligned 16-byte vector load"),
        ("    add.s32 %r3, %r30, 1;\n", PtxError, "read of register %r30 before any write"),
        ("    setp.lt.u32 %p1, %r2, 3;\n    @%p1 bra $L_x;\n$L_x:\n", PtxError, "divergent branch"),
        ("    popc.b32 %r3, %r2;\n", NotImplementedError, "popc.b32 %r3, %r2"),
        ("    shfl.sync.bfly.b32 %r3, %r2, 1, 15, -1;\n", NotImplementedError, "only full-warp shuffles"),
        ("    add.sat.s32 %r3, %r2, 1;\n", NotImplementedError, "add.sat.s32"),
        ("    cvt.rn.f32.u32 %r3, %r2;\n", NotImplementedError, "cvt.rn.f32.u32"),
    ],
    ids=["out-of-bounds", "misaligned", "misaligned-vector", "unwritten", "divergent", "unknown", "segmented-shuffle",
         "unknown-modifier", "unknown-conversion"],
)
def test_bugs_are_refused_with_a_message_naming_them(body, error, message):
    with pytest.raises(error, match=message):
        run(body, 1)


def _random_fragments(warps: int, seed: int):
    rng = np.random.default_rng(seed)
    halves = lambda: rng.standard_normal((warps * 32, 4, 2)).astype(np.float16)  # noqa: E731
    a, b = halves(), halves()
    codes = rng.choice(sorted(VALID_CODES), size=(warps * 32, 8))
    e = (codes.astype(np.uint64) << (4 * np.arange(8, dtype=np.uint64))).sum(1).astype(np.uint64)
    c = rng.standard_normal((warps * 32, 4)).astype(np.float32)
    return a, b, c, e


def _registers(halves: np.ndarray) -> list[np.ndarray]:
    words = halves.view(np.uint32).reshape(-1, 4).astype(np.uint64)
    return [words[:, i] for i in range(4)]


@pytest.mark.parametrize("reading", ["pairs", "rows"])
def test_vectorized_mma_sp_agrees_with_the_scalar_model(reading):
    a, b, c, e = _random_fragments(warps=3, seed=1)
    c_regs = [c[:, i].view(np.uint32).astype(np.uint64) for i in range(4)]
    op = "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32"
    d = mma_sp_warps(op, _registers(a), _registers(b), c_regs, e, reading)
    got = np.stack([x.astype(np.uint32).view(np.float32) for x in d], 1)
    for w in range(3):
        lanes = slice(32 * w, 32 * w + 32)
        ref = ptx_mma_sp(torch.from_numpy(a[lanes].astype(np.float64)), torch.from_numpy(b[lanes].astype(np.float64)),
                         torch.from_numpy(e[lanes].astype(np.int64)), torch.from_numpy(c[lanes].astype(np.float64)),
                         reading)
        np.testing.assert_allclose(got[lanes], ref.numpy(), rtol=1e-6, atol=1e-5)


def test_mma_sp_refuses_metadata_the_isa_does_not_define():
    a, b, c, e = _random_fragments(warps=1, seed=2)
    e[0] = (e[0] & ~np.uint64(0xF)) | np.uint64(0b0101)  # positions (1, 1): undefined on hardware
    op = "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32"
    c_regs = [c[:, i].view(np.uint32).astype(np.uint64) for i in range(4)]
    with pytest.raises(ValueError, match="0b0101"):
        mma_sp_warps(op, _registers(a), _registers(b), c_regs, e)


def _copy_body(wait: str) -> str:
    # each thread copies 16 bytes of the output's first 512 into shared memory (thread 31 with
    # source size 0: zeros), then reads them back after ``wait``
    return f"""
    mov.b32 %r3, global_smem;
    shl.b32 %r4, %r2, 4;
    add.s32 %r5, %r3, %r4;
    mul.wide.u32 %rd4, %r2, 16;
    add.s64 %rd5, %rd1, %rd4;
    setp.lt.u32 %p1, %r2, 31;
    selp.b32 %r6, 16, 0, %p1;
    cp.async.cg.shared.global [%r5], [%rd5], 16, %r6;
    cp.async.commit_group;
    {wait}
    ld.shared.v4.b32 {{%r7, %r8, %r9, %r10}}, [%r5];
    st.global.b32 [%rd3+512], %r7;
    st.global.b32 [%rd3+516], %r10;
    """


def test_cp_async_lands_at_the_wait_and_zero_fills():
    # 160 columns per thread: the first 512 bytes of the buffer are the copies' source (-1 bytes),
    # columns 128 and 129 of each thread's row keep what it read back
    out = run(_copy_body("cp.async.wait_group 0;"), 160, shared=512)[0]
    assert (out[:31, 128:130] == -1).all() and (out[31, 128:130] == 0).all()


def test_reading_a_copy_before_its_wait_is_refused():
    with pytest.raises(PtxError, match="cp.async not yet waited for"):
        run(_copy_body("cp.async.wait_group 1;"), 160, shared=512)


@pytest.mark.parametrize("barrier", [True, False])
def test_a_copy_into_bytes_another_warp_read_needs_a_barrier_before_it_is_issued(barrier):
    # after the swap, every thread copies 4 bytes into its own word, which the other warp read:
    # the copy may land as soon as it is issued, so without a barrier before it, it races with
    # that read, even though a barrier comes before the wait
    copy = """
    cp.async.ca.shared.global [%r5], [%rd3], 4, 4;
    cp.async.commit_group;
    bar.sync 0;
    cp.async.wait_group 0;
    """
    body = _swap_words("bar.sync 0;", ("bar.sync 0;" if barrier else "") + copy)
    _swapped_or_race(body, None if barrier else "shared-memory race at byte 0 .*cp.async")


def test_ldmatrix_hands_each_lane_two_elements_of_one_row():
    # shared word w holds w; lane l names the row at word 4 * (31 - l) (rows in reverse), so
    # lanes 8j..8j+7 name matrix j's rows; lane t gets word t % 4 of row t // 4 of each matrix
    body = """
    mov.b32 %r3, global_smem;
    shl.b32 %r4, %r2, 2;
    add.s32 %r5, %r3, %r4;
    st.shared.b32 [%r5], %r2;
    add.s32 %r6, %r2, 32;
    st.shared.b32 [%r5+128], %r6;
    add.s32 %r6, %r2, 64;
    st.shared.b32 [%r5+256], %r6;
    add.s32 %r6, %r2, 96;
    st.shared.b32 [%r5+384], %r6;
    bar.sync 0;
    sub.s32 %r7, 31, %r2;
    shl.b32 %r8, %r7, 4;                 // 16 bytes per row
    add.s32 %r9, %r3, %r8;
    ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%r12, %r13}, [%r9];
    st.global.b32 [%rd3], %r12;
    st.global.b32 [%rd3+4], %r13;
    """
    out = run(body, 2, shared=512)[0]
    t = np.arange(32)
    for j in range(2):
        assert out[:, j].tolist() == (4 * (31 - (8 * j + t // 4)) + t % 4).tolist()


@pytest.mark.parametrize(
    "load, stride, passes, ideal",
    [
        ("ld.shared.b32 %r10", 4, 1, 1),  # 32 consecutive words: one pass
        ("ld.shared.b32 %r10", 8, 2, 1),  # every other word: two lanes per bank
        ("ld.shared.b32 %r10", 0, 1, 1),  # one word for all: shared, not a conflict
        ("ld.shared.v2.b32 {%r10, %r11}", 8, 2, 2),  # two half-warp phases of 128 bytes
        ("ld.shared.v4.b32 {%r10, %r11, %r12, %r13}", 16, 4, 4),  # four quarter-warp phases
        ("ld.shared.v4.b32 {%r10, %r11, %r12, %r13}", 64, 16, 4),  # 8 lanes on 8 banks: 4 per bank
        ("ld.shared.v4.b32 {%r10, %r11, %r12, %r13}", 32, 8, 4),
    ],
)
def test_shared_traffic_counts_the_passes_bank_conflicts_cost(load, stride, passes, ideal):
    # lane t reads at byte t * stride; the values read must not matter to the count
    body = f"""
    mov.b32 %r3, global_smem;
    mul.lo.s32 %r4, %r2, {stride};
    add.s32 %r5, %r3, %r4;
    st.shared.b32 [%r3], %r2;
    bar.sync 0;
    mov.b32 %r10, 0;
    {load}, [%r5];
    st.global.b32 [%rd3], %r10;
    """
    traffic = SharedTraffic()
    run(body, 1, shared=2048, traffic=traffic)
    store, read = traffic.passes.values()
    assert store == [1, 1]  # one word, one pass
    assert read == [passes, ideal]
    assert traffic.excess("ld.shared") == passes - ideal and traffic.excess("st.shared") == 0


def test_shared_traffic_of_ldmatrix_and_cp_async():
    # ldmatrix rows 16 bytes apart: one pass per matrix; 128 bytes apart: eight rows on the same
    # four banks. cp.async: 16 bytes per lane, consecutive, then 64 bytes apart
    def body(row_bytes, copy_bytes):
        return f"""
    mov.b32 %r3, global_smem;
    mul.lo.s32 %r4, %r2, {row_bytes};
    add.s32 %r5, %r3, %r4;
    mul.lo.s32 %r6, %r2, {copy_bytes};
    add.s32 %r7, %r3, %r6;
    cp.async.cg.shared.global [%r7], [%rd1], 16, 0;
    cp.async.commit_group;
    cp.async.wait_group 0;
    bar.sync 0;
    ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{%r12, %r13, %r14, %r15}}, [%r5];
    st.global.b32 [%rd3], %r12;
    """

    for row_bytes, copy_bytes, excess in [(16, 16, (0, 0)), (128, 64, (28, 12))]:
        traffic = SharedTraffic()
        run(body(row_bytes, copy_bytes), 1, shared=4096, traffic=traffic)
        assert (traffic.excess("ldmatrix"), traffic.excess("cp.async")) == excess


def test_stmatrix_puts_each_lanes_two_elements_where_ldmatrix_takes_them():
    # lane l names the row at word 4 * (31 - l); after stmatrix .x4 of values 100 * j + l, an
    # ldmatrix of the same rows must hand every lane its own values back, and word 4r + c of
    # matrix j's row r (named by lane 8j + r) holds the value of lane 4r + c
    body = """
    mov.b32 %r3, global_smem;
    sub.s32 %r7, 31, %r2;
    shl.b32 %r8, %r7, 4;
    add.s32 %r9, %r3, %r8;
    add.s32 %r12, %r2, 0;
    add.s32 %r13, %r2, 100;
    add.s32 %r14, %r2, 200;
    add.s32 %r15, %r2, 300;
    stmatrix.sync.aligned.m8n8.x4.shared.b16 [%r9], {%r12, %r13, %r14, %r15};
    bar.sync 0;
    ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%r16, %r17, %r18, %r19}, [%r9];
    shl.b32 %r20, %r2, 2;
    add.s32 %r21, %r3, %r20;
    ld.shared.b32 %r22, [%r21];
    st.global.b32 [%rd3], %r16;
    st.global.b32 [%rd3+4], %r19;
    st.global.b32 [%rd3+8], %r22;
    """
    out = run(body, 3, shared=512)[0]
    t = np.arange(32)
    assert out[:, 0].tolist() == t.tolist() and out[:, 1].tolist() == (t + 300).tolist()
    # shared word w: row w // 4 of the memory is named by lane 31 - w // 4 = 8j + r
    namer = 31 - t // 4
    assert out[:, 2].tolist() == (100 * (namer // 8) + 4 * (namer % 8) + t % 4).tolist()
