"""The sparse warpgroup MMA (``wgmma.mma_async.sp``, 2:4-sparse A in registers) in the PTX emulator.

The emulator computes it through the caller's ``mma.sp`` model: warp w's A registers and metadata
word are those of one ``mma.sp.m16n8k32`` for rows 16w..16w+15, once per 8-column block of B. Here:
the pieces of that mapping (the B fragment of ``mma.sp``, wgmma's D fragment as the m16n8 C
fragment of each block) against ``sp24_helpers``' model; hand-written kernels whose A is a random
2:4 matrix compressed by ``repro.kernels.fragments`` and whose B is laid out in shared memory from
the PTX ISA's description, against numpy and against the same A, dense, through two dense
register-A wgmmas; and the pipelining bugs and unsupported forms the emulator must refuse.
"""

import re
from functools import partial

import numpy as np
import pytest
import torch
from ptx_emulator import PtxError, _mma_sp_b_fragment, _wgmma_d_fragment
from sp24_helpers import _mma_sp_indices, mma_sp_warps, random_24
from test_ptx_wgmma import (
    IMAGE_BYTES,
    a_fragment,
    check_mutant,
    d_fragment,
    descriptor,
    from_bits,
    place,
    run_wgmma,
    to_bits,
    wgmma_ptx,
)

from repro.kernels import compress_24
from repro.kernels.fragments import to_fragments

# ---------------------------------------------------------------------------------------- the mapping


def test_emulator_b_fragment_is_the_one_of_the_mma_sp_model():
    # sp24_helpers puts B[k, n] of an m16n8k32 at (lane 4n + (k % 8) // 2, register k // 8, half k % 2)
    k, column = _mma_sp_b_fragment()
    lane, reg, half = _mma_sp_indices("pairs")[4]  # each [32 k, 8 n]
    kk, nn = np.meshgrid(np.arange(32), np.arange(8), indexing="ij")
    np.testing.assert_array_equal(k[lane, reg, half], kk)
    np.testing.assert_array_equal(column[lane, reg, half], nn)
    assert len({(a, b, c) for a, b, c in zip(lane.ravel(), reg.ravel(), half.ravel())}) == 256  # one place each


@pytest.mark.parametrize("n", [8, 24, 256])
def test_wgmma_d_registers_4j_to_4j3_are_the_m16n8_c_fragment_of_block_j(n):
    row, col = _wgmma_d_fragment(n)  # [128 threads, n / 2 registers]
    t, reg = np.arange(128)[:, None], np.arange(n // 2)[None, :]
    lane, warp, block, i = t % 32, t // 32, reg // 4, reg % 4
    # the m16n8 C/D fragment (sp24_helpers.mma_sp_warps): register i of lane 4g+q is row g + 8 (i // 2),
    # column 2q + i % 2; for wgmma in warp w's rows and block j's columns
    np.testing.assert_array_equal(row, 16 * warp + lane // 4 + 8 * (i // 2))
    np.testing.assert_array_equal(col, 8 * block + 2 * (lane % 4) + i % 2)
    for thread, r, d_row, d_col in d_fragment(n):  # the dense tests' independent reading
        assert (row[thread, r], col[thread, r]) == (d_row, d_col)


# ---------------------------------------------------------------------------------------- hand-written kernels

GARBAGE = 0xDEADBEEF  # metadata of the lanes that sparsity selector 0 does not read (q = 2, 3)


def sparse_a(ty: str, seed: int, reading: str = "pairs"):
    """A random 2:4 A [64, 32] (exactly two nonzeros in each row's groups of 4 along K): (its
    16-bit values [64, 32], its A registers [128, 4] and metadata words [128]). Warp w's
    registers and words are the ``mma.sp`` fragment of rows 16w..16w+15 that
    ``repro.kernels.fragments`` builds (``values``, ``meta`` of row tile w): lane 4g+q holds
    metadata word 2g+q for q < 2, garbage for q >= 2."""
    w = random_24(64, 32, dtype=torch.float16 if ty == "f16" else torch.bfloat16, device="cpu", seed=seed)
    assert ((w != 0).reshape(64, 8, 4).sum(-1) == 2).all()
    frags = to_fragments(compress_24(w), reading)
    words = frags.values[:, 0].numpy().view(np.uint32).reshape(128, 4)  # tile (warp), lane, register
    meta = frags.meta[:, 0].numpy().view(np.uint32)  # [4 tiles, 16]
    e = np.full(128, GARBAGE, dtype=np.uint32)
    for t in range(128):
        g, q = t % 32 // 4, t % 4
        if q < 2:
            e[t] = meta[t // 32, 2 * g + q]
    return w.view(torch.int16).numpy(), words, e


# B: swizzle bytes, LBO, SBO, the values of K placed per row, and the K offset of the instruction's
# descriptor in them (K-major, at shared offset 0)
B_LAYOUTS = {
    "K-128B": (128, 0, 1024, 32, 0),
    "K-128B-upper-half": (128, 0, 1024, 64, 32),  # a second k32 step inside the 128-byte rows
    "K-64B": (64, 0, 512, 32, 0),
    "K-none": (0, 128, 512, 32, 0),  # core matrices of 8 k LBO apart, 8-row groups SBO apart
}


def sparse_b(n: int, ty: str, layout: str, seed: int):
    """A random B placed in a shared-memory image: (B [32, n] as float64 (the instruction's K),
    the image, the descriptor)."""
    swizzle, lbo, sbo, placed, k0 = B_LAYOUTS[layout]
    bits = to_bits(np.random.default_rng(seed).standard_normal((n, placed)), ty)  # [i = column of B, k]
    image = np.zeros(IMAGE_BYTES, dtype=np.uint8)
    place(image, bits, False, swizzle, 0, lbo, sbo)
    start = 2 * k0 if swizzle else k0 // 8 * lbo  # k0 = 32: 64 bytes into a row, or 4 core matrices on
    return from_bits(bits, ty).T[k0 : k0 + 32], image, descriptor(start, lbo, sbo, swizzle)


def sparse_case(n, ty, layout, scale_d, seed=0, reading="pairs"):
    """Everything a sparse kernel runs on, and what it must compute: (expected D [64, n], A bits
    [64, 32], B's descriptor, the image, A registers, metadata words, C)."""
    a_bits, a_words, e = sparse_a(ty, seed, reading)
    b, image, desc_b = sparse_b(n, ty, layout, seed + 1)
    rng = np.random.default_rng(seed + 2)
    c = rng.standard_normal((64, n)).astype(np.float32) if scale_d else np.full((64, n), np.nan, np.float32)
    expected = from_bits(a_bits, ty) @ b + (c if scale_d else 0)
    return expected, a_bits, desc_b, image, a_words, e, c


def run_sparse(ptx, n, case, scale_d, mma=mma_sp_warps):
    _, _, desc_b, image, a_words, e, c = case
    return run_wgmma(ptx, n, a_words, image, c, 0, desc_b, scale_d, e_words=e, mma=mma)


SPARSE_CASES = {
    "n8-f16-K128B": (8, "f16", "K-128B", 1),
    "n16-bf16-K64B-no-accumulate": (16, "bf16", "K-64B", 0),
    "n24-f16-K-none": (24, "f16", "K-none", 1),
    "n64-bf16-K128B-upper-half": (64, "bf16", "K-128B-upper-half", 1),
    "n64-f16-K-none-no-accumulate": (64, "f16", "K-none", 0),
    "n256-f16-K128B": (256, "f16", "K-128B", 1),
    "n256-bf16-K128B-no-accumulate": (256, "bf16", "K-128B", 0),
}


@pytest.mark.parametrize("case", SPARSE_CASES.values(), ids=SPARSE_CASES.keys())
def test_hand_built_sparse_wgmma_matches_numpy(case):
    n, ty, layout, scale_d = case
    data = sparse_case(n, ty, layout, scale_d, seed=n)
    calls = []

    def model(op, *registers):
        calls.append((op, len(registers[-1])))
        return mma_sp_warps(op, *registers)

    d = run_sparse(wgmma_ptx(n, ty, a_regs=True, sparse=True), n, data, scale_d, mma=model)
    np.testing.assert_allclose(d, data[0], rtol=1e-6, atol=1e-6)
    # one call for the warpgroup: its 4 warps times n / 8 blocks, as that many warps of mma.sp
    assert calls == [(f"mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.{ty}.{ty}.f32", 4 * n // 8 * 32)]


def test_the_metadata_is_read_by_the_model():
    # the emulator does not read the metadata itself: A compressed with the other reading of the
    # ISA's figure gives the product under the model of that reading, and not under the ISA's
    n, ty = 32, "f16"
    data = sparse_case(n, ty, "K-128B", 1, seed=3, reading="rows")
    ptx = wgmma_ptx(n, ty, a_regs=True, sparse=True)
    d = run_sparse(ptx, n, data, 1, mma=partial(mma_sp_warps, meta_reading="rows"))
    np.testing.assert_allclose(d, data[0], rtol=1e-6, atol=1e-6)
    wrong = run_sparse(ptx, n, data, 1)  # every nibble is a valid code under either reading
    assert not np.allclose(wrong, data[0], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "n, ty, layout", [(8, "bf16", "K-128B"), (64, "f16", "K-none"), (128, "f16", "K-128B-upper-half")]
)
def test_sparse_wgmma_agrees_with_two_dense_wgmmas_on_the_expanded_a(n, ty, layout):
    expected, a_bits, desc_b, image, a_words, e, c = data = sparse_case(n, ty, layout, 1, seed=n + 7)
    sparse = run_sparse(wgmma_ptx(n, ty, a_regs=True, sparse=True), n, data, 1)
    # dense: A[:, :16] then A[:, 16:] (second registers at +2048 in the A buffer), B's k 16..31
    # 32 bytes further along a swizzled row, or two core matrices (2 LBO) further without swizzle
    swizzle, lbo = B_LAYOUTS[layout][:2]
    step = 32 if swizzle else 2 * lbo
    before = f"ld.global.v4.b32 {{%r24, %r25, %r26, %r27}}, [%rd13+2048]; add.s64 %rd17, %rd11, {step >> 4};"
    ptx = wgmma_ptx(n, ty, a_regs=True, before=before)
    first = re.search(r"wgmma\.mma_async[^;]*;", ptx).group(0)
    second = first.replace("{%r20, %r21, %r22, %r23}", "{%r24, %r25, %r26, %r27}").replace("%rd11", "%rd17")
    assert second != first
    halves = [a_fragment(np.ascontiguousarray(a_bits[:, k : k + 16])) for k in (0, 16)]
    dense = run_wgmma(ptx.replace(first, first + second), n, np.concatenate(halves), image, c, 0, desc_b, 1)
    np.testing.assert_allclose(sparse, dense, rtol=1e-6, atol=1e-5)  # the dense chain rounds to fp32 twice
    np.testing.assert_allclose(dense, expected, rtol=1e-6, atol=1e-5)


# ---------------------------------------------------------------------------------------- refusals

MUTANT_N = 64


def _sparse_mutant(**changes) -> None:
    """Run the n = 64 fp16 sparse kernel (B K-major, 128-byte swizzle, at 0) with ``changes``."""
    data = sparse_case(MUTANT_N, "f16", "K-128B", 1, seed=5)
    ptx = wgmma_ptx(MUTANT_N, "f16", a_regs=True, sparse=True, **changes)
    np.testing.assert_allclose(run_sparse(ptx, MUTANT_N, data, 1), data[0], rtol=1e-6, atol=1e-6)


B_WORD = "shl.b32 %r31, %r2, 2; add.s32 %r32, %r3, %r31;"  # this thread's word of B's first 512 bytes

SPARSE_MUTANTS = {
    "unchanged": ({}, None),
    "metadata-rewritten-after-wait": ({"wait": "wgmma.wait_group.sync.aligned 0; mov.b32 %r24, 0;"}, None),
    "metadata-written-before-wait": (
        {"between": "mov.b32 %r24, 0;"},
        "write of %r24, the sparsity metadata of a wgmma.mma_async not yet waited for",
    ),
    "A-written-before-wait": (
        {"between": "mov.b32 %r22, 0;"},
        "write of %r22, the A operand of a wgmma.mma_async not yet waited for",
    ),
    "metadata-written-after-the-fence": (
        {"wgmma_fence": "wgmma.fence.sync.aligned; mov.b32 %r24, 0;"},
        "%r24 was accessed since the last wgmma.fence",
    ),
    "accumulator-read-before-wait": ({"between": "mov.b32 %r30, %d5;"}, "read of %d5, the accumulator of a wgmma"),
    "B-overwritten-before-wait": (
        {"between": B_WORD + "st.shared.b32 [%r32], %r2;"},
        "shared bytes at 0 are read by a wgmma.mma_async not yet waited for",
    ),
    "no-proxy-fence": ({"proxy_fence": ""}, "no fence.proxy.async before the wgmma"),
    "no-barrier": ({"barrier": ""}, "shared-memory race at byte .* before the wgmma that reads it"),
    "no-wgmma-fence": ({"wgmma_fence": ""}, "no wgmma.fence before it"),
    "ends-before-the-wait": ({"wait": "", "store": False}, "ends with a wgmma.mma_async not yet waited for"),
}


@pytest.mark.parametrize("changes, error", SPARSE_MUTANTS.values(), ids=SPARSE_MUTANTS.keys())
def test_sparse_pipelining_bugs_are_refused(changes, error):
    check_mutant(_sparse_mutant, changes, error)


def test_sparse_wgmmas_chain_on_one_accumulator_sharing_a_and_metadata():
    data = sparse_case(MUTANT_N, "f16", "K-128B", 1, seed=5)
    ptx = wgmma_ptx(MUTANT_N, "f16", a_regs=True, sparse=True)
    line = re.search(r"wgmma\.mma_async[^;]*;", ptx).group(0)
    d = run_sparse(ptx.replace(line, line + "wgmma.commit_group.sync.aligned;" + line), MUTANT_N, data, 1)
    c = data[-1]
    np.testing.assert_allclose(d, 2 * (data[0] - c) + c, rtol=1e-6, atol=1e-5)
    # the metadata register in the accumulator of another wgmma: refused while the first reads it
    accumulator = "{" + ", ".join(["%r24"] + [f"%d{i}" for i in range(33, 64)]) + "}"
    clash = re.sub(r"\{%d0,[^}]*\}", accumulator, line)
    assert clash != line
    with pytest.raises(PtxError, match="%r24 is the sparsity metadata of a wgmma.mma_async not yet waited for"):
        run_sparse(ptx.replace(line, line + clash), MUTANT_N, data, 1)


@pytest.mark.parametrize(
    "kernel, error",
    [
        ({"sp_sel": 1}, "sparsity selector \\(sp-sel\\) 1: only 0 is emulated"),
        ({"scales": (-1, 1)}, "imm-scale-a -1, imm-scale-b 1: only 1 is emulated"),
        ({"trans_b": 1}, "MN-major B \\(imm-trans-b 1\\)"),
        ({"a_regs": False}, "A from a shared-memory descriptor \\(the SS form\\)"),
    ],
    ids=["sp-sel-1", "negated-A", "MN-major-B", "A-descriptor"],
)
def test_unsupported_sparse_forms_are_refused(kernel, error):
    data = sparse_case(8, "f16", "K-128B", 1)
    ptx = wgmma_ptx(8, "f16", **{"a_regs": True, "sparse": True, **kernel})
    with pytest.raises(NotImplementedError, match=error):
        run_sparse(ptx, 8, data, 1)


def test_sparse_wgmma_needs_an_mma_sp_model():
    data = sparse_case(8, "f16", "K-128B", 1)
    with pytest.raises(NotImplementedError, match="no model for wgmma.mma_async.sp"):
        run_sparse(wgmma_ptx(8, "f16", a_regs=True, sparse=True), 8, data, 1, mma=None)


def test_sparse_b_in_a_32_byte_swizzle_is_refused():
    # one instruction's 32 values of K (64 bytes) do not fit in a row of a 32-byte swizzle atom
    data = list(sparse_case(8, "f16", "K-128B", 1))
    data[2] = descriptor(0, 0, 256, 32)
    with pytest.raises(NotImplementedError, match="64 bytes deep in a 32-byte swizzle"):
        run_sparse(wgmma_ptx(8, "f16", a_regs=True, sparse=True), 8, data, 1)
    # the dense form's 32 bytes fit
    dense = wgmma_ptx(8, "f16", a_regs=True)
    bits = to_bits(np.random.default_rng(0).standard_normal((8, 16)), "f16")
    image = np.zeros(IMAGE_BYTES, dtype=np.uint8)
    place(image, bits, False, 32, 0, 0, 256)
    a = to_bits(np.random.default_rng(1).standard_normal((64, 16)), "f16")
    d = run_wgmma(dense, 8, a_fragment(a), image, np.zeros((64, 8), np.float32), 0, descriptor(0, 0, 256, 32), 1)
    np.testing.assert_allclose(d, from_bits(a, "f16") @ from_bits(bits, "f16").T, rtol=1e-6, atol=1e-6)
