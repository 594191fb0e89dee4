"""The ``wgmma`` kernel's compiled PTX, run on the CPU by ``ptx_emulator`` (no GPU needed).

The kernel is compiled for sm_90a with the specialization its launcher would get and every
instruction runs in the emulator, ``wgmma.mma_async`` included (the PTX ISA's register fragments
and shared-memory matrix descriptors, checked in ``test_ptx_wgmma.py`` against Triton's own
``tl.dot``), and its sparse form ``wgmma.mma_async.sp`` through the same ``mma.sp`` model as
``spmma``'s tests (each warp's A registers and metadata word read as one ``m16n8k32``). The
emulator also refuses what the hardware would silently get wrong: rewriting the A registers (or
metadata) or the x buffer of an MMA still in flight, a shared-memory write the MMA's async proxy
was not fenced for, and any out-of-bounds or misaligned access.
"""

import re
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import torch
from ptx_emulator import PtxError, SharedTraffic
from ptx_launch import EmulatedKernel
from sp24_helpers import (
    WGMMA_CASES,
    WGMMA_CLUSTER_CASES,
    WGMMA_SHARED_X_CASES,
    WGMMA_SPARSE_CASES,
    assert_correct_and_conflict_free,
    assert_fragment_map_as_documented,
    assert_wgmma_bits_of,
    first_token_counts,
    mma_sp_warps,
    rel_err,
    run_wgmma_case,
    wgmma_case_ids,
)

from repro.kernels import gluon_wgmma
from repro.kernels.fragments import WgmmaConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import spmma_probe  # noqa: E402
from sp24.common import MS  # noqa: E402
from sp24.sweep import wgmma_configs  # noqa: E402

KERNEL, SHARED_X_KERNEL = gluon_wgmma._wgmma_kernel, gluon_wgmma._wgmma_shared_x_kernel


@pytest.fixture
def gpu(monkeypatch):
    """Swap the kernels for their emulated PTX; returns the main one, or with ``shared_x`` the shared-x form's."""

    def use(traffic: SharedTraffic | None = None, reverse: bool = False, reading: str = "pairs",
            shared_x: bool = False) -> EmulatedKernel:
        mma = partial(mma_sp_warps, meta_reading=reading)
        kernel = EmulatedKernel(KERNEL, mma=mma, traffic=traffic, reverse=reverse)
        shared_x_kernel = EmulatedKernel(SHARED_X_KERNEL, mma=mma, traffic=traffic, reverse=reverse)
        monkeypatch.setattr(gluon_wgmma, "_wgmma_kernel", kernel)
        monkeypatch.setattr(gluon_wgmma, "_wgmma_shared_x_kernel", shared_x_kernel)
        return shared_x_kernel if shared_x else kernel

    return use


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m, n, k, cfg", WGMMA_CASES, ids=wgmma_case_ids())
def test_compiled_wgmma_matches_dense_masked_matmul(gpu, m, n, k, cfg, dtype):
    kernel = gpu()
    out, ref = run_wgmma_case(m, n, k, cfg, dtype, with_bias=(m % 2 == 1), seed=m + n, device="cpu")
    assert not out.isnan().any(), "some output elements were never written"
    assert rel_err(out, ref) < (5e-3 if dtype == torch.float16 else 2e-2)
    assert kernel.launches[-1]["num_warps"] == cfg.num_warps


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m, n, k, cfg", WGMMA_SPARSE_CASES, ids=wgmma_case_ids(WGMMA_SPARSE_CASES))
def test_compiled_sparse_wgmma_matches_dense_masked_matmul(gpu, m, n, k, cfg, dtype):
    """The sparse form: x is read where the descriptor points, so a wrong offset of its ring in
    shared memory (``gluon_wgmma_sparse._ring_offset``) or a wrong stage gives a wrong product."""
    kernel = gpu()
    out, ref = run_wgmma_case(m, n, k, cfg, dtype, with_bias=(m % 2 == 1), seed=m + n, device="cpu")
    assert not out.isnan().any(), "some output elements were never written"
    assert rel_err(out, ref) < (5e-3 if dtype == torch.float16 else 2e-2)
    assert "wgmma.mma_async.sp" in kernel.launches[-1]["ptx"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m, n, k, cfg", WGMMA_CLUSTER_CASES, ids=wgmma_case_ids(WGMMA_CLUSTER_CASES))
def test_splits_meeting_in_a_cluster_give_the_bits_of_the_workspace_meet(gpu, m, n, k, cfg, dtype):
    """The programs of each cluster run together in the emulator, which refuses a read of a
    partner's shared memory that no cluster barrier orders after the partner's store, and a
    program that ends while a partner may still read it."""
    kernel = gpu()
    assert_wgmma_bits_of(m, n, k, cfg, replace(cfg, cluster=False), dtype, device="cpu")
    launch = kernel.launches[-1]
    assert launch["grid"].cluster == cfg.split_k and "ld.shared::cluster.f32" in launch["ptx"]


_BARRIER = "barrier.cluster.arrive.release.aligned; barrier.cluster.wait.acquire.aligned;"


@pytest.mark.parametrize(
    "which, refusal", [(0, "no (cluster )?barrier between"), (-1, "may still access|partner that has ended")]
)
def test_the_cluster_meet_needs_both_its_barriers(gpu, monkeypatch, which, refusal):
    """Without the first barrier a program reads partners' partial sums they may not have stored
    yet; without the second it may end (its shared memory gone) while a partner still reads it."""
    kernel = gpu()
    compile_ = kernel.compile

    def without_one_barrier(*args):
        ptx, shared = compile_(*args)
        at = [i for i in range(len(ptx)) if ptx.startswith(_BARRIER, i)]
        assert len(at) == 2, "the meet has two cluster barriers"
        return ptx[: at[which]] + ptx[at[which] + len(_BARRIER) :], shared

    monkeypatch.setattr(kernel, "compile", without_one_barrier)
    with pytest.raises(PtxError, match=refusal):
        run_wgmma_case(13, 70, 1000, WGMMA_CLUSTER_CASES[0][3], torch.float16, with_bias=False, device="cpu")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m, n, k, cfg", WGMMA_SHARED_X_CASES, ids=wgmma_case_ids(WGMMA_SHARED_X_CASES))
def test_x_shared_by_a_cluster_gives_the_bits_of_the_tiles_apart(gpu, m, n, k, cfg, dtype):
    """The programs of each cluster run together in the emulator, x landing by TMA multicast in
    all of them: it refuses a read of x before the barrier phase that brings it has been waited
    for, a copy into a slot whose earlier bytes a partner has not finished with, and a program
    that ends while a partner may still take what it sent. With the splits of the tiles in the
    cluster too, meeting there, the bits are those of the same meet with x loaded by each tile."""
    kernel = gpu(shared_x=True)
    assert_wgmma_bits_of(m, n, k, cfg, replace(cfg, share=1), dtype, device="cpu")
    launch = kernel.launches[-1]
    in_cluster = cfg.share * (cfg.split_k if cfg.cluster else 1)  # with `cluster`, the tiles' splits too
    assert launch["grid"].cluster == in_cluster and ".multicast::cluster" in launch["ptx"]


_EMPTY_WAIT = "mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%r_peer]"


def _drop_slot_waits(ptx: str) -> str:
    """The refill's wait for the slot's release by both programs (the wait block right after each
    release block) taken out."""
    out, at = [], 0
    while (rel := ptx.find(_EMPTY_WAIT, at)) >= 0:
        wait = ptx.index("SLOT_WAIT:", rel)
        lo, hi = ptx.rfind("{", 0, wait), ptx.index("}", wait) + 1
        out.append(ptx[at:lo])
        at = hi
    return "".join(out) + ptx[at:]


@pytest.mark.parametrize(
    "mutation, refusal",
    [
        ("no slot wait", "read by a wgmma.mma_async not yet waited for"),
        ("no final cluster wait", "ends while its TMA multicast into rank 1 may still be in flight"),
        ("no release", "cluster deadlock"),
    ],
)
def test_x_shared_by_a_cluster_needs_its_barriers(gpu, monkeypatch, mutation, refusal):
    """Without waiting for the partner's release, a program's multicast overwrites x the partner's
    MMAs may still read; without the last cluster barrier a program may end with its copies into
    the partner in flight; without the releases no slot is ever refilled."""
    kernel = gpu(shared_x=True)
    compile_ = kernel.compile

    def mutated(*args):
        ptx, shared = compile_(*args)
        if mutation == "no slot wait":
            ptx = _drop_slot_waits(ptx)
        elif mutation == "no final cluster wait":
            at = ptx.rindex("barrier.cluster.wait.acquire.aligned;")
            ptx = ptx[:at] + ptx[at + len("barrier.cluster.wait.acquire.aligned;"):]
        else:
            ptx = ptx.replace("@%r_lead " + _EMPTY_WAIT + ";", "")
        return ptx, shared

    monkeypatch.setattr(kernel, "compile", mutated)
    with pytest.raises(PtxError, match=refusal):
        run_wgmma_case(64, 128, 2048, WgmmaConfig(G=1, T=64, U=2, stages=3, sparse=True, share=2), torch.float16,
                       with_bias=False, device="cpu")


@pytest.mark.parametrize(
    "pattern, replacement, refusal",
    [
        (r"shl\.b16 %l_mask, %l_mask, %r\d+;", "shl.b16 %l_mask, %l_mask, 0;",
         "rank 0's warps touched with no release"),
        (r"add\.u32 %r_t, %r\d+, (\d+);", r"mov.u32 %r_t, \1;", "read by a wgmma.mma_async not yet waited for"),
    ],
    ids=["multicast into the first pair", "releases to the first pair"],
)
def test_tiles_sharing_x_and_meeting_splits_address_their_own_partners(gpu, monkeypatch, pattern, replacement,
                                                                        refusal):
    """With a tile's splits in the cluster too, x goes to and slots are released by the programs of
    the same split only (ranks ``split * share ..``): the multicast mask and the releases offset by
    it. Aimed at the first ``share`` ranks instead, the later splits' programs find slots
    overwritten, or their partners' still in use."""
    kernel = gpu(shared_x=True)
    compile_ = kernel.compile

    def mutated(*args):
        ptx, shared = compile_(*args)
        ptx, count = re.subn(pattern, replacement, ptx)
        assert count > 0, "the offset is no longer where the test looks for it"
        return ptx, shared

    monkeypatch.setattr(kernel, "compile", mutated)
    combined = next(cfg for _, _, _, cfg in WGMMA_SHARED_X_CASES if cfg.cluster)
    with pytest.raises(PtxError, match=refusal):
        run_wgmma_case(100, 130, 1000, combined, torch.float16, with_bias=False, device="cpu")


def test_sparse_form_refuses_weights_packed_in_the_other_metadata_order():
    with pytest.raises(ValueError, match="pairs"):
        run_wgmma_case(16, 64, 256, WgmmaConfig(G=1, T=16, U=2, stages=3, sparse=True), torch.float16, False,
                       meta_order="rows", device="cpu")


@pytest.mark.parametrize("cfg", [WgmmaConfig(G=1, T=16, U=2), WgmmaConfig(G=2, T=32, U=1, split_k=2)])
def test_metadata_words_in_either_order(gpu, cfg):
    """The fragment format can hold its metadata words in the other reading of the PTX figure
    (``meta_order="rows"``, for hardware that would follow it); the expansion reads both."""
    gpu()
    out, ref = run_wgmma_case(13, 70, 1000, cfg, torch.float16, with_bias=False, meta_order="rows", device="cpu")
    assert rel_err(out, ref) < 5e-3


def _sweep() -> list[tuple[int, WgmmaConfig]]:
    return first_token_counts(wgmma_configs, MS)


@pytest.mark.parametrize("m, cfg", _sweep(), ids=[cfg.label() for _, cfg in _sweep()])
def test_every_benchmark_configuration_is_correct_and_free_of_bank_conflicts(gpu, m, cfg):
    """N and K multiples of 16, like the LLaMA shapes: the same divisibility hints, so the same
    PTX the benchmark will run (a smaller grid of it). Every shared-memory access (rings, x's
    permuted stores, the partial sums) must take no more passes of the banks than its bytes
    need: x's stores at 128 columns per step once took twice that."""
    traffic = SharedTraffic()
    gpu(traffic=traffic)
    out, ref = run_wgmma_case(m, 128, 512, cfg, torch.float16, with_bias=False, seed=m, device="cpu")
    assert_correct_and_conflict_free(out, ref, traffic)


@pytest.mark.parametrize(
    "cfg", [WgmmaConfig(G=1, T=16, U=1, split_k=3), WgmmaConfig(G=1, W=2, T=16, U=1, stages=4, split_k=3, sparse=True)]
)
def test_split_k_gives_the_same_bits_whichever_split_finishes_last(gpu, cfg):
    """As for ``spmma``: the last split to count in adds all partial sums in split order (in the
    sparse form with two MMA tiles per warpgroup, in a loop rather than unrolled)."""
    from repro.kernels.scratch import split_flags

    outs = []
    for reverse in (False, True):
        gpu(reverse=reverse)
        out, ref = run_wgmma_case(13, 70, 1000, cfg, torch.float16, with_bias=True, seed=3, device="cpu")
        assert rel_err(out, ref) < 5e-3
        assert int(split_flags(torch.device("cpu"), 1).abs().sum()) == 0
        outs.append(out)
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("reading", ["pairs", "rows"])
def test_probe_names_the_metadata_reading_of_the_sparse_form(gpu, reading):
    """``bench/spmma_probe.py --kernel wgmma-sparse``'s product check through the compiled sparse
    form: it reports the reading the (emulated) hardware follows, and only that one."""
    gpu(reading=reading)
    assert spmma_probe.working_orders(spmma_probe.launchers("wgmma-sparse")[0], "cpu") == [reading]


def test_fragment_map_of_the_sparse_form_matches_the_layout(gpu):
    """The probe's slot-by-slot map through the compiled sparse form (g1t16u1c3s): each warp of
    the warpgroup reads its A registers and metadata words where ``mma.sp`` does."""
    gpu()
    assert_fragment_map_as_documented(spmma_probe.launchers("wgmma-sparse")[1])
