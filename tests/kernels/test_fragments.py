"""The mma.sp fragment order (``fragments.py``) and the addressing of the ``spmma`` kernel.

The Gluon kernel itself needs an sm_80+ GPU (``test_spmma_gpu.py``). Here a model of one warp-wide
``mma.sp.m16n8k32``, written from the PTX ISA's fragment tables and independent of
``to_fragments``, is fed registers gathered with the kernel's own address formulas; it must
reproduce ``x @ W.T``. That checks the layout and the kernel's index arithmetic on any machine.
"""

from dataclasses import replace

import pytest
import torch
from sp24_helpers import emulate_spmma, random_24

from repro.kernels import compress_24
from repro.kernels.fragments import WgmmaConfig, to_fragments, token_tiles, wgmma_columns


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("meta_order", ["pairs", "rows"])
@pytest.mark.parametrize("shape", [(16, 32), (40, 72), (33, 200), (64, 256)])
def test_fragments_round_trip(dtype, meta_order, shape):
    w = random_24(*shape, dtype=dtype, device="cpu", seed=shape[0] + shape[1])
    frags = to_fragments(compress_24(w), meta_order=meta_order)
    nt, kb = -(-shape[0] // 16), -(-shape[1] // 32)
    assert frags.values.shape == (nt, kb, 32, 4) and frags.values.dtype == torch.int32
    assert frags.meta.shape == (nt, kb, 16) and frags.meta.dtype == torch.int32
    assert torch.equal(frags.decompress(), w)


def test_fragment_registers_match_the_ptx_tables():
    # one 16x32 tile with distinct values: lane (g, q), register i must hold row g + 8 (i % 2),
    # group q + 4 (i // 2), and the metadata word of lane (g, h) codes rows g / g + 8, groups 4h..
    w = torch.zeros(16, 32)
    for row in range(16):
        for group in range(8):
            keep = ((row + group) % 3, 3)  # positions (0|1|2, 3)
            w[row, 4 * group + keep[0]] = 100 * row + 10 * group + 1
            w[row, 4 * group + keep[1]] = 100 * row + 10 * group + 2
    frags = to_fragments(compress_24(w.half()))
    regs = frags.values.view(torch.float16).reshape(32, 4, 2).float()
    for lane in range(32):
        g, q = divmod(lane, 4)
        for i in range(4):
            row, group = g + 8 * (i % 2), q + 4 * (i // 2)
            assert regs[lane, i].tolist() == [100 * row + 10 * group + 1, 100 * row + 10 * group + 2]
        if q < 2:
            word = int(frags.meta[0, 0, 2 * g + q]) & 0xFFFFFFFF
            for half, row in ((0, g), (1, g + 8)):
                for j in range(4):
                    code = (word >> (16 * half + 4 * j)) & 0xF
                    assert code == ((row + 4 * q + j) % 3) | (3 << 2)


def test_wgmma_order_puts_each_lanes_groups_where_its_dense_a_registers_are():
    """The ``wgmma`` kernel expands a lane's fragment-order groups in place: under the permutation
    of K, the columns of the groups lane ``(g, q)`` holds (``q``, ``q + 4``, read back from
    ``to_fragments``) must be exactly the columns of the dense wgmma A fragment of lane ``q``
    (PTX ISA: ``2q, 2q+1, 2q+8, 2q+9`` of each 16-column step)."""
    perm = wgmma_columns()
    assert sorted(perm.tolist()) == list(range(32))  # a permutation
    w = torch.zeros(16, 32)
    for group in range(8):
        w[:, 4 * group : 4 * group + 2] = group + 1  # kept values name their group
    regs = to_fragments(compress_24(w.half())).values.view(torch.float16).reshape(32, 4, 2)
    for lane in range(32):
        q = lane % 4
        groups = {int(v) - 1 for v in regs[lane].flatten().tolist()}
        columns = {int(perm[4 * group + j]) for group in groups for j in range(4)}
        assert columns == {16 * half + 2 * q + d for half in (0, 1) for d in (0, 1, 8, 9)}


def test_padding_uses_valid_metadata_and_zero_values():
    frags = to_fragments(compress_24(random_24(20, 40, device="cpu", seed=3)))
    words = frags.meta.to(torch.int64) & 0xFFFFFFFF
    nibbles = (words.unsqueeze(-1) >> (4 * torch.arange(8))) & 0xF
    i0, i1 = nibbles & 3, nibbles >> 2
    assert bool((i0 < i1).all()), "every code, padding included, must have i0 < i1 (ordered metadata)"
    assert frags.values.view(torch.float16)[1, :, :, :].abs().sum() > 0  # rows 16..19 are real
    v0, v1, _ = frags.groups()
    assert bool((v0[20:] == 0).all() and (v1[20:] == 0).all() and (v0[:, 10:] == 0).all())


@pytest.mark.parametrize("shape,m", [((16, 32), 8), ((40, 72), 3), ((33, 96), 11)])
def test_emulated_kernel_computes_x_wt(shape, m):
    n, k = shape
    w = random_24(n, k, device="cpu", seed=n * k)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).half()
    y = emulate_spmma(x, to_fragments(compress_24(w)))
    ref = x.double() @ w.double().T
    assert torch.allclose(y, ref, atol=1e-9, rtol=0)


def test_emulated_kernel_notices_a_wrong_metadata_order():
    # the warp model reads metadata as the PTX figure says ("pairs"); the other order must fail,
    # which shows the model can tell layouts apart
    w = random_24(16, 64, device="cpu", seed=5)
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(5)).half()
    y = emulate_spmma(x, to_fragments(compress_24(w), meta_order="rows"))
    assert not torch.allclose(y, x.double() @ w.double().T, atol=1e-3)
    # and the "rows" writer is right for hardware that reads metadata that way
    y = emulate_spmma(x, to_fragments(compress_24(w), meta_order="rows"), meta_reading="rows")
    assert torch.allclose(y, x.double() @ w.double().T, atol=1e-9, rtol=0)


def test_fp32_and_bad_meta_order_are_rejected():
    with pytest.raises(ValueError, match="fp16 or bf16"):
        to_fragments(compress_24(random_24(16, 32, dtype=torch.float32, device="cpu")))
    with pytest.raises(ValueError, match="meta_order"):
        to_fragments(compress_24(random_24(16, 32, device="cpu")), meta_order="cols")


def test_fragment_tensors_the_kernels_cannot_index_are_rejected():
    """The kernels read the two tensors as dense arrays, a lane's four value words in one 16-byte
    access: a strided view, a wrong dtype or shape, or values starting off a 16-byte boundary
    name the field and what is needed (a fresh copy is accepted)."""
    w = to_fragments(compress_24(random_24(32, 64, device="cpu")))
    with pytest.raises(ValueError, match=r"values must be a contiguous int32 .* \(not contiguous\)"):
        w.with_tensors(w.values.transpose(0, 1), w.meta)
    with pytest.raises(ValueError, match=r"meta must be a contiguous int32 tensor \[NT, KB, 16\], got torch.int64"):
        w.with_tensors(w.values, w.meta.long())
    with pytest.raises(ValueError, match="they must match"):
        w.with_tensors(w.values, w.meta[:1])
    flat = torch.zeros(w.values.numel() + 1, dtype=torch.int32)
    shifted = flat[1:].view(w.values.shape)  # 4 bytes past an aligned start
    with pytest.raises(ValueError, match="16-byte boundary .* 4 bytes past"):
        w.with_tensors(shifted, w.meta)
    assert w.with_tensors(shifted.clone(), w.meta).values.data_ptr() % 16 == 0


@pytest.mark.parametrize(
    "label", ["g1t64u2", "g2t8u4a2k4", "g1t128u1a3k16", "g2t128u2c5k2", "g1t64u2c4x16k4", "g1t64u2c6s", "g2t128u2c4sk2",
              "g2w2t64u2c6sk8", "g1t128u2c6sk2q", "g1t128u2c6sk2m2", "g2w2t64u4c4sm2", "g1t64u2c6sk2m4"]
)
def test_wgmma_labels_round_trip(label):
    cfg = WgmmaConfig.from_label(label)
    cfg.check()
    assert cfg.label() == label and cfg.num_warps == 4 * cfg.G


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(G=4), "G must be 1 or 2"),
        (dict(T=48), "T must be 8, 16"),
        (dict(U=3), "U must be 1, 2 or 4"),
        (dict(split_k=0), "split_k must be 1"),
        (dict(ahead=4), "ahead must be 1, 2 or 3"),
        (dict(stages=2), "stages must be 0"),
        (dict(ahead=2, stages=4), "ahead must stay 1"),
        (dict(x_steps=8), "x resident needs a weight ring"),
        (dict(stages=4, x_steps=3), "2, 4, 8, 16, 32 or 64 steps"),
        (dict(sparse=True), "sparse form streams the weight words through a ring"),
        (dict(sparse=True, stages=4, T=16, x_steps=2), "x_steps \\* T must be at least 32 \\* stages"),
        (dict(sparse=True, stages=4, T=8, U=1), "T in 16..256"),
        (dict(sparse=True, stages=4, T=256, W=2), "T \\* W must be at most 256"),
        (dict(sparse=True, stages=4, T=16, U=4), "T >= 8U"),
        (dict(W=2, stages=4), "W must be 1, or 2 MMA tiles per warpgroup in the sparse form"),
        (dict(W=3, stages=4, sparse=True), "W must be 1, or 2"),
        (dict(G=2, W=2, T=16, U=1, stages=4, sparse=True), "at least 8GW"),
        (dict(T=64, U=2, stages=4, share=2), "share=2 with sparse=False"),
        (dict(T=64, U=2, stages=4, sparse=True, share=3), "share must be 1 \\(off\\), or 2 or 4"),
        (dict(T=16, U=2, stages=4, sparse=True, share=4), "T >= 8 \\* share"),
        (dict(T=16, U=1, stages=4, sparse=True, share=2), "U 2 or 4"),
        (dict(T=32, U=2, stages=4, x_steps=8, sparse=True, share=2), "x streamed"),
        (dict(T=32, U=2, stages=4, split_k=8, sparse=True, cluster=True, share=2), "at most 8 may run as one"),
    ],
)
def test_bad_wgmma_configurations_name_the_field_and_what_is_allowed(fields, message):
    with pytest.raises(ValueError, match=message):
        WgmmaConfig(**fields).check()
    with pytest.raises(ValueError, match=r"expected g<G>\[w<W>\]t<T>u<U>"):
        WgmmaConfig.from_label("r1s4u4t1")


def test_row_tiles_sharing_x_are_launched_whole_clusters():
    """x shared by ``share`` row tiles: the row tiles are rounded up to a multiple of it, the last
    programs past the weight (their rows masked), so that every program has its partners."""
    cfg = WgmmaConfig(G=1, T=32, U=2, stages=4, split_k=2, sparse=True, share=2)
    assert cfg.grid(3 * 64, 40) == (4, 2, 2) and cfg.grid(4 * 64, 40) == (4, 2, 2)
    assert replace(cfg, share=4).grid(5 * 64, 40) == (8, 2, 2) and replace(cfg, share=4).grid(8 * 64, 40) == (8, 2, 2)
    assert replace(cfg, share=1).grid(3 * 64, 40) == (3, 2, 2)


def test_footprint_matches_the_planar_format():
    packed = compress_24(random_24(64, 256, device="cpu"))
    assert to_fragments(packed).nbytes == packed.nbytes == 64 * 256 * 2 * 0.5625


@pytest.mark.parametrize("m, tiles", [(1, 1), (8, 1), (9, 2), (16, 2), (17, 4), (32, 4), (33, 8), (64, 8), (2048, 8)])
def test_token_tiles_is_the_power_of_two_covering_m_up_to_64(m, tiles):
    assert token_tiles(m) == tiles
