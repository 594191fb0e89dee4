"""Hopper's warpgroup MMA (``wgmma``) in the PTX emulator.

Three kinds of evidence: hand-written kernels whose operands are laid out here from the PTX
ISA's descriptions (fragments, canonical shared-memory layouts, swizzles) and compared with
numpy; Triton's and Gluon's own wgmma code (correct on hardware), which must give the matmul
torch gives; and mutations of the hand-written kernel with the pipelining bugs a GPU would
hide (touching an operand or the accumulator before the wait, no proxy fence, no barrier),
each of which the emulator must refuse.
"""

import re

import numpy as np
import pytest
import torch
import triton
import triton.language as tl
from ptx_emulator import Memory, PtxError, RaceCheck, run_grid, wgmma_addresses
from ptx_launch import EmulatedKernel
from test_ptx_emulator import run
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, warpgroup_mma, warpgroup_mma_wait

# ---------------------------------------------------------------------------------------- hand-written kernels

IMAGE_BYTES = 32768  # the shared memory of the hand-written kernel, copied in from a global buffer
MODES = {0: 0, 128: 1, 64: 2, 32: 3}  # swizzle bytes -> descriptor bits 62-63


def wgmma_ptx(
    n: int,
    ty: str = "f16",
    a_regs: bool = False,
    trans_a: int = 0,
    trans_b: int = 0,
    scales: tuple[int, int] = (1, 1),
    before: str = "",
    between: str = "",
    barrier: str = "bar.sync 0;",
    proxy_fence: str = "fence.proxy.async.shared::cta;",
    wgmma_fence: str = "wgmma.fence.sync.aligned;",
    wait: str = "wgmma.wait_group.sync.aligned 0;",
    store: bool = True,
    sparse: bool = False,
    sp_sel: int = 0,
) -> str:
    """One warpgroup: copy the image into shared memory, load this thread's A fragment and
    accumulator, issue one ``wgmma`` (descriptors from the parameters, start fields relative to
    the image), wait and store the accumulator. The keyword arguments are the places a test
    changes: ``before`` runs before the wgmma.fence, ``between`` between commit and wait.
    ``sparse``: the ``.sp`` form (m64nNk32), this thread's metadata word loaded into %r24 from
    the last parameter and sparsity selector ``sp_sel``."""
    acc = ", ".join(f"%d{i}" for i in range(n // 2))
    a = "{%r20, %r21, %r22, %r23}" if a_regs else "%rd10"
    flags = f"{scales[0]}, {scales[1]}, " + ("" if a_regs else f"{trans_a}, ") + f"{trans_b}"
    loads = "\n".join(f"    ld.global.b32 %d{i}, [%rd15+{4 * i}];" for i in range(n // 2))
    stores = "\n".join(f"    st.global.b32 [%rd16+{4 * i}], %d{i};" for i in range(n // 2)) if store else ""
    if sparse:
        loads += "\n    ld.param.u64 %rd17, [wg_meta];\n    mul.wide.u32 %rd18, %r2, 4;"
        loads += "\n    add.s64 %rd19, %rd17, %rd18;\n    ld.global.b32 %r24, [%rd19];"
        mma = f"wgmma.mma_async.sp.sync.aligned.m64n{n}k32.f32.{ty}.{ty} {{{acc}}}, {a}, %rd11, %r24, {sp_sel}, %p2, "
    else:
        mma = f"wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{ty}.{ty} {{{acc}}}, {a}, %rd11, %p2, "
    return f"""
.version 8.7
.target sm_90a
.address_size 64
.extern .shared .align 16 .b8 global_smem[];
.visible .entry wg(
    .param .u64 wg_out, .param .u64 wg_image, .param .u64 wg_a, .param .u64 wg_c,
    .param .u64 wg_desc_a, .param .u64 wg_desc_b, .param .u32 wg_scale_d, .param .u64 wg_meta
)
.reqntid 128
{{
    .reg .pred %p<4>;
    .reg .b32 %r<40>;
    .reg .b32 %d<130>;
    .reg .b64 %rd<20>;
    ld.param.u64 %rd1, [wg_out];
    ld.param.u64 %rd2, [wg_image];
    ld.param.u64 %rd3, [wg_a];
    ld.param.u64 %rd4, [wg_c];
    ld.param.u64 %rd5, [wg_desc_a];
    ld.param.u64 %rd6, [wg_desc_b];
    ld.param.u32 %r1, [wg_scale_d];
    mov.u32 %r2, %tid.x;
    mov.u32 %r3, global_smem;
    mov.u32 %r4, %r2;                    // the image, 16 bytes per thread at a time
$L_copy:
    mul.wide.u32 %rd7, %r4, 16;
    add.s64 %rd8, %rd2, %rd7;
    ld.global.v4.b32 {{%r5, %r6, %r7, %r8}}, [%rd8];
    shl.b32 %r9, %r4, 4;
    add.s32 %r10, %r3, %r9;
    st.shared.v4.b32 [%r10], {{%r5, %r6, %r7, %r8}};
    add.s32 %r4, %r4, 128;
    setp.lt.u32 %p1, %r4, {IMAGE_BYTES // 16};
    @%p1 bra $L_copy;
    {barrier}
    {proxy_fence}
    shr.u32 %r11, %r3, 4;                // the image's shared address, encoded as a start field
    cvt.u64.u32 %rd9, %r11;
    add.s64 %rd10, %rd5, %rd9;
    add.s64 %rd11, %rd6, %rd9;
    mul.wide.u32 %rd12, %r2, 16;
    add.s64 %rd13, %rd3, %rd12;
    ld.global.v4.b32 {{%r20, %r21, %r22, %r23}}, [%rd13];
    mul.wide.u32 %rd14, %r2, {2 * n};
    add.s64 %rd15, %rd4, %rd14;
    add.s64 %rd16, %rd1, %rd14;
{loads}
    setp.ne.u32 %p2, %r1, 0;
    {before}
    {wgmma_fence}
    {mma}{flags};
    wgmma.commit_group.sync.aligned;
    {between}
    {wait}
{stores}
    ret;
}}
"""


def descriptor(start: int, lbo: int, sbo: int, swizzle: int) -> int:
    return start >> 4 | (lbo >> 4) << 16 | (sbo >> 4) << 32 | MODES[swizzle] << 62


def place(image: np.ndarray, values: np.ndarray, mn_major: bool, swizzle: int, start: int, lbo: int, sbo: int):
    """Write an operand [i, k] (16-bit values; i is A's row or B's column) into the byte
    ``image`` as the PTX ISA draws its canonical layouts. Without swizzle: core matrices of
    8 x 16 bytes, each 128 contiguous bytes (K-major: 8 rows of i, each 8 values of k; MN-major:
    8 rows of k, each 8 values of i), the core matrix of (i // 8, k // 8) at SBO * (i // 8) +
    LBO * (k // 8). Swizzled by W bytes: atoms of 8 rows of W bytes (K-major: a row of i holds
    its k; MN-major: a row of k holds W / 2 values of i, W-byte blocks of i LBO apart), 8-row
    atoms SBO apart, and 16-byte chunk c of atom row r stored at c ^ ((r // (128 / W)) % (W / 16)),
    the phase of Triton's swizzled shared layouts. K is ``values.shape[1]``: 16 for one dense
    instruction, 32 for the sparse one, more for several side by side (K-major)."""
    for i in range(values.shape[0]):
        for k in range(values.shape[1]):
            if swizzle == 0:
                core = start + sbo * (i // 8) + lbo * (k // 8)
                byte = core + (16 * (k % 8) + 2 * (i % 8) if mn_major else 16 * (i % 8) + 2 * (k % 8))
            else:
                per_row = swizzle // 2
                if mn_major:
                    atom, row, col = start + lbo * (i // per_row) + sbo * (k // 8), k % 8, 2 * (i % per_row)
                else:
                    atom, row, col = start + sbo * (i // 8), i % 8, 2 * k
                phase = (row // (128 // swizzle)) % (swizzle // 16)
                byte = atom + swizzle * row + 16 * ((col // 16) ^ phase) + col % 16
            image[byte : byte + 2] = values[i, k : k + 1].view(np.uint8)


def thread_coordinates():
    """(thread, warp, g, q) of the warpgroup's 128 threads: lane = 4g + q."""
    for t in range(128):
        yield t, t // 32, t % 32 // 4, t % 4


def a_fragment(a: np.ndarray) -> np.ndarray:
    """The A registers [128, 4 words] of an m64k16 tile [64, 16] (16-bit values): thread 4g+q
    of warp w holds rows 16w+g (registers 0, 2) and 16w+g+8 (1, 3), k = 2q, 2q+1 (0, 1) and
    2q+8, 2q+9 (2, 3), the lower k in the low half."""
    words = np.zeros((128, 4), dtype=np.uint32)
    for t, w, g, q in thread_coordinates():
        for reg, (row, k) in enumerate([(g, 2 * q), (g + 8, 2 * q), (g, 2 * q + 8), (g + 8, 2 * q + 8)]):
            words[t, reg] = a[16 * w + row, k : k + 2].view(np.uint32)[0]
    return words


def d_fragment(n: int):
    """(register, row, column) of every accumulator register of thread 4g+q of warp w:
    registers 4j..4j+3 are columns 8j+2q, 8j+2q+1 of row 16w+g, then of row 16w+g+8."""
    for t, w, g, q in thread_coordinates():
        for j in range(n // 8):
            for r in range(4):
                yield t, 4 * j + r, 16 * w + g + 8 * (r // 2), 8 * j + 2 * q + r % 2


def to_bits(x: np.ndarray, ty: str) -> np.ndarray:
    return torch.from_numpy(x).to(torch.float16 if ty == "f16" else torch.bfloat16).view(torch.int16).numpy()


def from_bits(bits: np.ndarray, ty: str) -> np.ndarray:
    return torch.from_numpy(bits).view(torch.float16 if ty == "f16" else torch.bfloat16).double().numpy()


def run_wgmma(
    ptx: str,
    n: int,
    a_words: np.ndarray,
    image: np.ndarray,
    c: np.ndarray,
    desc_a: int,
    desc_b: int,
    scale_d: int,
    e_words: np.ndarray | None = None,
    mma=None,
) -> np.ndarray:
    """Run one hand-written kernel; the accumulator [64, n] it stores. ``e_words`` [128]: the
    metadata word of each thread (sparse form), ``mma`` the model of ``mma.sp`` it needs."""
    memory = Memory("global")
    out = np.full((128, n // 2), np.nan, dtype=np.float32)
    c_regs = np.zeros((128, n // 2), dtype=np.float32)
    for t, reg, row, col in d_fragment(n):
        c_regs[t, reg] = c[row, col]
    buffers = [out.view(np.uint8).ravel(), image, a_words.view(np.uint8).ravel(), c_regs.view(np.uint8).ravel()]
    args = [memory.add(b, f"arg{i}") for i, b in enumerate(buffers)] + [desc_a, desc_b, scale_d]
    if e_words is not None:
        args.append(memory.add(np.asarray(e_words, dtype=np.uint32).view(np.uint8).ravel(), "meta"))
    run_grid(ptx, (1,), 128, args, memory, IMAGE_BYTES, mma=mma)
    d = np.full((64, n), np.nan)
    for t, reg, row, col in d_fragment(n):
        d[row, col] = out[t, reg]
    return d


# (n, type, A: "registers" or (MN-major, swizzle, start, LBO, SBO), B: the same, imm-scale-a, -b, scale-d)
HAND_CASES = {
    "regs-A-B-K-major-interleaved": (8, "f16", "registers", (False, 0, 4096, 128, 256), 1, 1, 1),
    "K-128B-MN-128B-no-accumulate": (64, "bf16", (False, 128, 0, 0, 1024), (True, 128, 8192, 0, 1024), 1, 1, 0),
    "MN-64B-K-64B-negated-A": (32, "f16", (True, 64, 0, 1024, 512), (False, 64, 4096, 0, 512), -1, 1, 1),
    "K-32B-MN-32B-negated-B": (16, "f16", (False, 32, 0, 0, 256), (True, 32, 4096, 0, 256), 1, -1, 1),
    "MN-none-MN-none": (24, "f16", (True, 0, 0, 1024, 128), (True, 0, 4096, 512, 128), 1, 1, 1),
    "regs-A-B-K-128B-n256": (256, "bf16", "registers", (False, 128, 0, 0, 1024), 1, 1, 1),
    "K-none-MN-64B-blocks": (128, "bf16", (False, 0, 0, 128, 256), (True, 64, 4096, 2048, 512), 1, 1, 1),
}


@pytest.mark.parametrize("case", HAND_CASES.values(), ids=HAND_CASES.keys())
def test_hand_built_wgmma_matches_numpy(case):
    n, ty, a_spec, b_spec, scale_a, scale_b, scale_d = case
    rng = np.random.default_rng(n)
    a_bits, b_bits = to_bits(rng.standard_normal((64, 16)), ty), to_bits(rng.standard_normal((n, 16)), ty)
    c = rng.standard_normal((64, n)).astype(np.float32) if scale_d else np.full((64, n), np.nan, np.float32)
    image = np.zeros(IMAGE_BYTES, dtype=np.uint8)
    descriptors = []
    for values, spec in ((a_bits, a_spec), (b_bits, b_spec)):
        if spec == "registers":
            descriptors.append(0)
            continue
        mn_major, swizzle, start, lbo, sbo = spec
        place(image, values, mn_major, swizzle, start, lbo, sbo)
        descriptors.append(descriptor(start, lbo, sbo, swizzle))
    a_regs = a_spec == "registers"
    ptx = wgmma_ptx(
        n, ty, a_regs=a_regs, trans_a=0 if a_regs else int(a_spec[0]), trans_b=int(b_spec[0]), scales=(scale_a, scale_b)
    )
    d = run_wgmma(ptx, n, a_fragment(a_bits), image, c, *descriptors, scale_d)
    expected = (scale_a * from_bits(a_bits, ty)) @ (scale_b * from_bits(b_bits, ty)).T + (c if scale_d else 0)
    np.testing.assert_allclose(d, expected, rtol=1e-6, atol=1e-6)


# the PTX ISA's worked examples of canonical layouts ("Major-ness supported by strides"): element
# bytes, MN-major, swizzle bytes, LBO and SBO in bytes, and the exact layout they give, as a CuTe
# (shape, stride) in elements over (i, k), before the swizzle
ISA_EXAMPLES = {
    "K-none-tf32": (4, False, 0, 64 * 4, 32 * 4, ((8, 2), (4, 4)), ((4, 32), (1, 64))),
    "K-32B-tf32": (4, False, 32, 16, 64 * 4, ((8, 2), (4, 4)), ((8, 64), (1, 4))),
    "MN-none-bf16": (2, True, 0, 128 * 2, 64 * 2, ((8, 1, 2), (8, 2)), ((1, 8, 64), (8, 128))),
    "MN-32B-bf16": (2, True, 32, 128 * 2, 256 * 2, ((8, 2, 2), (8, 2)), ((1, 8, 128), (16, 256))),
    "MN-64B-bf16": (2, True, 64, 256 * 2, 512 * 2, ((8, 4, 2), (8, 2)), ((1, 8, 256), (32, 512))),
}


def cute(coordinate: int, shape: tuple, stride: tuple) -> int:
    """A CuTe layout mode at a 1-D coordinate (split colexicographically over ``shape``)."""
    offset = 0
    for size, step in zip(shape, stride):
        offset += coordinate % size * step
        coordinate //= size
    return offset


@pytest.mark.parametrize("example", ISA_EXAMPLES.values(), ids=ISA_EXAMPLES.keys())
def test_descriptor_addresses_follow_the_isa_examples(example):
    elem, mn_major, swizzle, lbo, sbo, shape, stride = example
    rows, depth = int(np.prod(shape[0])), int(np.prod(shape[1]))
    start = 2048  # a multiple of every swizzle pattern
    expected = np.array(
        [
            [start + elem * (cute(i, shape[0], stride[0]) + cute(k, shape[1], stride[1])) for k in range(depth)]
            for i in range(rows)
        ]
    )
    bits = {0: 0, 32: 1, 64: 2, 128: 3}[swizzle]  # CuTe's Swizzle<bits, 4, 3> on byte addresses
    expected ^= (expected >> 3) & (((1 << bits) - 1) << 4)
    got = wgmma_addresses(descriptor(start, lbo, sbo, swizzle), rows, mn_major, elem, depth)
    np.testing.assert_array_equal(got, expected)


def _k128_mn128(n: int = 64):
    """A K-major A (128B swizzle, at 0) and an MN-major B (128B, at 8192): (A B, the arguments
    of ``run_wgmma`` after the PTX, C = 0)."""
    rng = np.random.default_rng(0)
    a_bits, b_bits = to_bits(rng.standard_normal((64, 16)), "f16"), to_bits(rng.standard_normal((n, 16)), "f16")
    image = np.zeros(IMAGE_BYTES, dtype=np.uint8)
    place(image, a_bits, False, 128, 0, 0, 1024)
    place(image, b_bits, True, 128, 8192, 0, 1024)
    c, descriptors = np.zeros((64, n), np.float32), (descriptor(0, 0, 1024, 128), descriptor(8192, 0, 1024, 128))
    return from_bits(a_bits, "f16") @ from_bits(b_bits, "f16").T, (n, a_fragment(a_bits), image, c, *descriptors, 1)


def _mutant(**changes) -> None:
    """Run the ``_k128_mn128`` case with ``changes`` to its kernel (see ``wgmma_ptx``)."""
    product, args = _k128_mn128()
    d = run_wgmma(wgmma_ptx(64, trans_b=1, **changes), *args)
    np.testing.assert_allclose(d, product, rtol=1e-6, atol=1e-6)


# this thread's word of B's first 512 bytes (shared offset 8192), in %r32
B_WORD = "add.s32 %r30, %r3, 8192; shl.b32 %r31, %r2, 2; add.s32 %r32, %r30, %r31;"

MUTANTS = {
    "unchanged": ({}, None),
    "accumulator-read-before-wait": ({"between": "mov.b32 %r30, %d5;"}, "read of %d5, the accumulator of a wgmma"),
    "accumulator-stored-after-wait-1": ({"wait": "wgmma.wait_group.sync.aligned 1;"}, "read of %d0, the accumulator"),
    "B-overwritten-before-wait": (
        {"between": B_WORD + "st.shared.b32 [%r32], %r2;"},
        "shared bytes at 8192 are read by a wgmma.mma_async not yet waited for",
    ),
    "B-copied-over-before-wait": (
        {"between": B_WORD + "cp.async.ca.shared.global [%r32], [%rd2], 4, 4;"},
        "shared bytes at 8192 are read by a wgmma.mma_async not yet waited for.*cp.async",
    ),
    "B-overwritten-after-wait": (
        {"wait": "wgmma.wait_group.sync.aligned 0;" + B_WORD + "st.shared.b32 [%r32], %r2;"},
        None,
    ),
    "no-proxy-fence": ({"proxy_fence": ""}, "no fence.proxy.async before the wgmma"),
    "proxy-fence-before-the-last-store": (
        {"before": B_WORD + "st.shared.b32 [%r32], %r2; bar.sync 0;"},
        "shared bytes at 8192 were written .* no fence.proxy.async",
    ),
    "copied-in-after-the-proxy-fence": (
        {
            "before": B_WORD + "cp.async.ca.shared.global [%r32], [%rd2], 4, 4; cp.async.commit_group;"
            "cp.async.wait_group 0; bar.sync 0;"
        },
        "shared bytes at 8192 were written .* no fence.proxy.async",
    ),
    "no-barrier": ({"barrier": ""}, "shared-memory race at byte .* before the wgmma that reads it"),
    "B-still-copying": (
        {"before": B_WORD + "cp.async.ca.shared.global [%r32], [%rd2], 4, 4; cp.async.commit_group;"},
        "cp.async not yet waited for: wgmma",
    ),
    "no-wgmma-fence": ({"wgmma_fence": ""}, "no wgmma.fence before it"),
    "accumulator-written-after-the-fence": (
        {"wgmma_fence": "wgmma.fence.sync.aligned; mov.b32 %d3, 0;"},
        "%d3 was accessed since the last wgmma.fence",
    ),
    "ends-before-the-wait": ({"wait": "", "store": False}, "ends with a wgmma.mma_async not yet waited for"),
}


def check_mutant(run, changes: dict, error: str | None) -> None:
    """Run a kernel with ``changes``: it must be refused with ``error``, or (None) run."""
    if error is None:
        run(**changes)
    else:
        with pytest.raises(PtxError, match=error):
            run(**changes)


@pytest.mark.parametrize("changes, error", MUTANTS.values(), ids=MUTANTS.keys())
def test_pipelining_bugs_are_refused(changes, error):
    check_mutant(_mutant, changes, error)


def test_wgmmas_chain_on_one_accumulator_but_not_on_an_overlapping_one():
    ptx = wgmma_ptx(64, trans_b=1)
    line = re.search(r"wgmma\.mma_async[^;]*;", ptx).group(0)
    chained = line + "wgmma.commit_group.sync.aligned;"  # no wgmma.fence needed between the two
    shifted = line.replace("{%d0, ", "{").replace("%d31}", "%d31, %d32}")  # %d1..%d32: overlaps the first
    product, args = _k128_mn128()
    d = run_wgmma(ptx.replace(line, line + chained), *args)
    np.testing.assert_allclose(d, 2 * product, rtol=1e-6, atol=1e-6)
    with pytest.raises(PtxError, match="%d1 is the accumulator of a wgmma.mma_async not yet waited for"):
        run_wgmma(ptx.replace(line, line + shifted), *args)


def test_a_wgmma_stops_reading_at_its_wait_for_its_own_warpgroup_only():
    # after warpgroup 0's wgmma read bytes 0..63 and was waited for, its own warps may overwrite
    # them at once; a warp of warpgroup 1 needs a barrier first
    races, offsets = RaceCheck(64), np.arange(64)
    races.async_read_done(offsets, group=0)
    races.access(offsets[None, :4], np.array([3]), True, "st.shared by warp 3")
    with pytest.raises(PtxError, match="shared-memory race at byte 8"):
        races.access(offsets[None, 8:12], np.array([4]), True, "st.shared by warp 4")
    races.barrier()
    races.access(offsets[None, 8:12], np.array([4]), True, "st.shared by warp 4")


def test_register_a_may_not_be_rewritten_before_the_wait():
    ptx = wgmma_ptx(8, a_regs=True, between="mov.b32 %r21, 0;")
    image, a_words = np.zeros(IMAGE_BYTES, dtype=np.uint8), np.zeros((128, 4), np.uint32)
    with pytest.raises(PtxError, match="write of %r21, the A operand of a wgmma.mma_async not yet waited for"):
        run_wgmma(ptx, 8, a_words, image, np.zeros((64, 8), np.float32), 0, descriptor(0, 128, 256, 0), 1)


DESC_B = "add.s64 %rd11, %rd6, %rd9;"


@pytest.mark.parametrize(
    "edit, error",
    [
        (("wgmma.mma_async", "@%p2 wgmma.mma_async"), "predicated wgmma"),
        ((DESC_B, DESC_B + "or.b64 %rd11, %rd11, 562949953421312;"), "with a base offset"),  # bit 49
        ((DESC_B, DESC_B + "add.s64 %rd11, %rd11, 2048;"), "reaches outside the 32768 bytes of shared memory"),
        ((DESC_B, DESC_B + "or.b64 %rd11, %rd11, 16384;"), "reserved bits set"),  # bit 14
    ],
    ids=["predicated", "base-offset", "out-of-bounds", "reserved-bits"],
)
def test_wgmma_refusals(edit, error):
    ptx = wgmma_ptx(8).replace(*edit)
    image, a_words = np.zeros(IMAGE_BYTES, dtype=np.uint8), np.zeros((128, 4), np.uint32)
    with pytest.raises((PtxError, NotImplementedError), match=error):
        run_wgmma(
            ptx,
            8,
            a_words,
            image,
            np.zeros((64, 8), np.float32),
            descriptor(0, 128, 256, 0),
            descriptor(IMAGE_BYTES - 256, 128, 256, 0),
            0,
        )


def test_instructions_triton_uses_around_wgmma():
    # bfe.s32 sign-extends the field (bit 31 when it runs past it), neg.s32, add.f16x2 rounds
    # each half, mov unpacks a b32 into two b16 registers and packs them (here swapped), prmt
    # picks bytes of two registers (low halves: 0x5410) or copies a byte's sign (0x8880)
    body = """
    sub.s32 %r3, %r2, 16;
    bfe.s32 %r4, %r3, 2, 3;
    bfe.s32 %r5, %r3, 30, 4;
    neg.s32 %r6, %r3;
    mad.lo.s32 %r8, %r2, 196609, 1006648320;   // fp16 halves 1 + t / 1024 (low), 1 + 3t / 1024
    mad.lo.s32 %r11, %r2, 65537, 335549440;    // halves 0x1400 + t: (1 + t / 1024) / 1024
    add.f16x2 %r9, %r8, %r11;
    mov.b32 {%rs1, %rs2}, %r8;
    mov.b32 %r10, {%rs2, %rs1};
    prmt.b32 %r12, %r8, %r11, 0x5410;
    mul.lo.s32 %r13, %r2, 9;
    prmt.b32 %r14, %r13, %r8, 0x8880;
    st.global.b32 [%rd3], %r4;
    st.global.b32 [%rd3+4], %r5;
    st.global.b32 [%rd3+8], %r6;
    st.global.b32 [%rd3+12], %r9;
    st.global.b32 [%rd3+16], %r10;
    st.global.b32 [%rd3+20], %r12;
    st.global.b32 [%rd3+24], %r14;
    """
    out = run(body, 7)[0]
    v = np.arange(32) - 16
    field = (v >> 2) & 7
    assert out[:, 0].tolist() == np.where(field >= 4, field - 8, field).tolist()
    assert out[:, 1].tolist() == (v >> 30).tolist()  # bits 30, 31, then copies of bit 31
    assert out[:, 2].tolist() == (-v).tolist()
    t = np.arange(32, dtype=np.uint32)
    words, small = t * 196609 + 0x3C003C00, t * 65537 + 0x14001400
    halves = [torch.from_numpy(w.view(np.int16).copy()).view(torch.float16).double() for w in (words, small)]
    summed = (halves[0] + halves[1]).half().view(torch.int16).numpy().view(np.uint32)
    assert out[:, 3].view(np.uint32).tolist() == summed.tolist()
    assert out[:, 4].view(np.uint32).tolist() == ((words >> 16) | ((words & 0xFFFF) << 16)).tolist()
    assert out[:, 5].view(np.uint32).tolist() == ((words & 0xFFFF) | ((small & 0xFFFF) << 16)).tolist()
    assert out[:, 6].tolist() == (t * 9 % 256).astype(np.uint8).view(np.int8).tolist()


# ---------------------------------------------------------------------------------------- Triton and Gluon


@triton.jit
def matmul_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    K,
    sam,
    sak,
    sbk,
    sbn,
    scm,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    SCALE_A: tl.constexpr,
):
    """C = A @ B (or (2 A) @ B, which keeps A in registers): one [BM, BN] tile per program."""
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, K, BK):
        a = tl.load(a_ptr + rm[:, None] * sam + (k + rk)[None, :] * sak)
        b = tl.load(b_ptr + (k + rk)[:, None] * sbk + rn[None, :] * sbn)
        if SCALE_A:
            a = a + a
        acc = tl.dot(a, b, acc)
    tl.store(c_ptr + rm[:, None] * scm + rn[None, :], acc)


def triton_matmul(dtype, bm, bn, stages, warps, a_mn_major=False, b_k_major=False, scale_a=False):
    """Run ``matmul_kernel`` on 128 x 192 @ 192 x 256 in the emulator: (C, reference, PTX)."""
    g = torch.Generator().manual_seed(bm + bn)
    m, n, k = 128, 256, 192
    a = torch.randn(m, k, generator=g).to(dtype)
    b = torch.randn(k, n, generator=g).to(dtype)
    a = a.T.contiguous().T if a_mn_major else a  # strides (1, m): M contiguous
    b = b.T.contiguous().T if b_k_major else b  # strides (1, k): K contiguous
    c = torch.full((m, n), float("nan"))
    kernel = EmulatedKernel(matmul_kernel)
    kernel[(m // bm, n // bn)](
        a,
        b,
        c,
        k,
        *a.stride(),
        *b.stride(),
        c.stride(0),
        BM=bm,
        BN=bn,
        BK=64,
        SCALE_A=scale_a,
        num_warps=warps,
        num_stages=stages,
    )
    ref = (a.float() * (2 if scale_a else 1)) @ b.float()
    return c, ref, kernel.launches[-1]["ptx"]


# what the emulator finds in Triton's cp.async pipelines (num_stages > 1), per version: 3.6 puts
# no fence.proxy.async between the copies into shared memory and the wgmmas that read them (the
# 3.7 release branch has the fix, triton-lang/triton#10537); 3.7 with A in registers rewrites the
# A registers of the wgmma still in flight at the top of the next iteration, which ptxas notices
# and serializes the wgmmas (its warning C7515: slower, not wrong)
PIPELINE_BUGS = {
    ("3.6", False): "no fence.proxy.async before the wgmma",
    ("3.6", True): "no fence.proxy.async before the wgmma",
    ("3.7", True): r"write of %r\d+, the A operand of a wgmma.mma_async not yet waited for",
}


def pipeline_bug(stages: int, register_a: bool) -> str | None:
    """The refusal the emulator gives this Triton's pipeline, if it has a known bug."""
    version = ".".join(triton.__version__.split(".")[:2])
    return PIPELINE_BUGS.get((version, register_a)) if stages > 1 else None


def wgmma_lines(ptx: str) -> list[str]:
    return re.findall(r"wgmma\.mma_async[^;]*", ptx)


def register_a(line: str) -> bool:
    return re.search(r"\}, \{%r\d+, ?%r\d+, ?%r\d+, ?%r\d+\}, %rd", line) is not None


@pytest.mark.parametrize(
    "dtype, bm, bn, stages, warps, a_mn_major, b_k_major",
    [
        (torch.float16, 64, 64, 3, 4, False, False),  # cp.async pipeline, wait_group 1
        (torch.bfloat16, 128, 128, 1, 4, False, False),  # two m64 halves per warpgroup
        (torch.float16, 128, 16, 3, 8, False, False),  # two warpgroups
        (torch.bfloat16, 64, 128, 3, 4, True, True),  # A M-major, B K-major
        (torch.float16, 128, 64, 1, 8, True, False),
        (torch.float16, 64, 16, 1, 4, False, True),
    ],
)
def test_triton_matmul_agrees_with_torch(dtype, bm, bn, stages, warps, a_mn_major, b_k_major):
    if bug := pipeline_bug(stages, register_a=False):
        with pytest.raises(PtxError, match=bug):
            triton_matmul(dtype, bm, bn, stages, warps, a_mn_major, b_k_major)
        return
    c, ref, ptx = triton_matmul(dtype, bm, bn, stages, warps, a_mn_major, b_k_major)
    torch.testing.assert_close(c, ref, rtol=1e-5, atol=1e-4)
    lines = wgmma_lines(ptx)
    assert lines and all(f"m64n{bn}k16.f32" in line for line in lines)
    trans = {tuple(line.replace(" ", "").split(",")[-2:]) for line in lines}  # imm-trans-a, imm-trans-b
    assert trans == {(str(int(a_mn_major)), str(int(not b_k_major)))}
    if stages > 1:
        assert "cp.async.cg.shared.global" in ptx and "wgmma.wait_group.sync.aligned 1;" in ptx


@pytest.mark.parametrize("stages", [1, 3])
def test_triton_register_a_operand(stages):
    if bug := pipeline_bug(stages, register_a=True):
        with pytest.raises(PtxError, match=bug):
            triton_matmul(torch.float16, 64, 64, stages, 4, scale_a=True)
        return
    c, ref, ptx = triton_matmul(torch.float16, 64, 64, stages, 4, scale_a=True)
    torch.testing.assert_close(c, ref, rtol=1e-5, atol=1e-4)
    assert all(register_a(line) for line in wgmma_lines(ptx))


@gluon.jit
def gluon_mma_kernel(
    a_ptr, b_ptr, c_ptr, N: gl.constexpr, K: gl.constexpr, SWIZZLE: gl.constexpr, B_TRANSPOSED: gl.constexpr
):
    """C [64, N] = A [64, K] @ B [K, N] (row-major): A in registers in the wgmma operand layout, B
    in shared memory, N-major, or K-major as the transposed view of a [N, K] buffer."""
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, N, 16])
    blocked: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])
    rows: gl.constexpr = gl.SliceLayout(1, blocked)
    cols: gl.constexpr = gl.SliceLayout(0, blocked)
    a = gl.load(a_ptr + gl.arange(0, 64, layout=rows)[:, None] * K + gl.arange(0, K, layout=cols)[None, :])
    a = gl.convert_layout(a, gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2))
    dtype: gl.constexpr = a_ptr.dtype.element_ty
    if B_TRANSPOSED:
        n_, k_ = gl.arange(0, N, layout=rows)[:, None], gl.arange(0, K, layout=cols)[None, :]
        smem = gl.allocate_shared_memory(dtype, [N, K], gl.NVMMASharedLayout(SWIZZLE, 16, 2))
        smem.store(gl.load(b_ptr + k_ * N + n_))
        b = smem.permute((1, 0))
    else:
        k_, n_ = gl.arange(0, K, layout=rows)[:, None], gl.arange(0, N, layout=cols)[None, :]
        smem = gl.allocate_shared_memory(dtype, [K, N], gl.NVMMASharedLayout(SWIZZLE, 16, 2))
        smem.store(gl.load(b_ptr + k_ * N + n_))
        b = smem
    fence_async_shared()
    acc = warpgroup_mma(a, b, gl.zeros([64, N], gl.float32, layout=mma), is_async=True)
    acc = gl.convert_layout(warpgroup_mma_wait(0, deps=[acc]), blocked)
    gl.store(c_ptr + gl.arange(0, 64, layout=rows)[:, None] * N + gl.arange(0, N, layout=cols)[None, :], acc)


@pytest.mark.parametrize("transposed", [False, True], ids=["N-major", "K-major"])
@pytest.mark.parametrize(
    "swizzle, n, k, dtype",
    [
        (128, 64, 64, torch.float16),
        (128, 128, 64, torch.bfloat16),
        (64, 32, 32, torch.float16),
        (32, 16, 32, torch.bfloat16),
    ],
)
def test_gluon_warpgroup_mma_agrees_with_torch(swizzle, n, k, dtype, transposed):
    g = torch.Generator().manual_seed(n + k)
    a, b = torch.randn(64, k, generator=g).to(dtype), torch.randn(k, n, generator=g).to(dtype)
    c = torch.full((64, n), float("nan"))
    kernel = EmulatedKernel(gluon_mma_kernel)
    kernel[(1,)](a, b, c, N=n, K=k, SWIZZLE=swizzle, B_TRANSPOSED=transposed)
    torch.testing.assert_close(c, a.float() @ b.float(), rtol=1e-5, atol=1e-4)
    ptx = kernel.launches[-1]["ptx"]
    lines = wgmma_lines(ptx)
    assert lines and all(register_a(line) and line.endswith(f", {int(not transposed)}") for line in lines)
    constants = re.findall(r"(?:or|add)\.b64\s+%rd\d+, %rd\d+, (-?\d+)", ptx)
    assert MODES[swizzle] in {int(v) % 2**64 >> 62 for v in constants}  # the descriptor's swizzle is the layout's
