"""The Gluon ``wgmma`` kernel (dense warpgroup MMA, 2:4 weight expanded in registers) on a Hopper GPU.

On CPU these tests are skipped; the same cases run there on the compiled PTX through the emulator
(``test_wgmma_ptx.py``). Tolerance as for ``spmma``: max |y - ref| / max |ref| against fp64.
"""

from dataclasses import replace

import pytest
import torch
from sp24_helpers import (
    DEVICE,
    WGMMA_CASES,
    WGMMA_CLUSTER_CASES,
    WGMMA_SHARED_X_CASES,
    WGMMA_SPARSE_CASES,
    assert_wgmma_bits_of,
    random_24,
    rel_err,
    run_wgmma_case,
    wgmma_case_ids,
)

from repro.kernels import compress_24, sparse24_matmul
from repro.kernels.fragments import WgmmaConfig

pytestmark = pytest.mark.skipif(
    DEVICE != "cuda" or torch.cuda.get_device_capability()[0] != 9,
    reason="wgmma needs an sm_90 (Hopper) CUDA GPU",
)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m, n, k, cfg", WGMMA_CASES, ids=wgmma_case_ids())
def test_wgmma_matches_dense_masked_matmul(m, n, k, cfg, dtype):
    out, ref = run_wgmma_case(m, n, k, cfg, dtype, with_bias=(m % 2 == 1), seed=m + n)
    assert not out.isnan().any(), "some output elements were never written"
    assert rel_err(out, ref) < (5e-3 if dtype == torch.float16 else 2e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m, n, k, cfg", WGMMA_SPARSE_CASES, ids=wgmma_case_ids(WGMMA_SPARSE_CASES))
def test_wgmma_sparse_matches_dense_masked_matmul(m, n, k, cfg, dtype):
    """The sparse form (``wgmma.mma_async.sp``), first run on hardware in its own test: where it
    fails, bench/gpu_check.sh benchmarks the dense form alone."""
    out, ref = run_wgmma_case(m, n, k, cfg, dtype, with_bias=(m % 2 == 1), seed=m + n)
    assert not out.isnan().any(), "some output elements were never written"
    assert rel_err(out, ref) < (5e-3 if dtype == torch.float16 else 2e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m, n, k, cfg", WGMMA_CLUSTER_CASES, ids=wgmma_case_ids(WGMMA_CLUSTER_CASES))
def test_wgmma_cluster_meet_gives_the_bits_of_the_workspace_meet(m, n, k, cfg, dtype):
    """A tile's K splits launched as one cluster, meeting in its shared memory, against the same
    tiling meeting through the workspace: the same adds in the same order, so the same bits. Run
    first and alone by bench/gpu_check.sh, which leaves the cluster tilings out where this fails."""
    assert_wgmma_bits_of(m, n, k, cfg, replace(cfg, cluster=False), dtype)


# every case in fp16, the first in bf16 too (the emulator runs all of them in both): each case is
# two compiles, and bench/gpu_check.sh runs these on the device's clock before the benchmark
SHARED_X_GPU_CASES = [(*case, torch.float16) for case in WGMMA_SHARED_X_CASES]
SHARED_X_GPU_CASES.append((*WGMMA_SHARED_X_CASES[0], torch.bfloat16))


@pytest.mark.parametrize("m, n, k, cfg, dtype", SHARED_X_GPU_CASES,
                         ids=[f"{m}x{n}x{k}-{cfg.label()}-{str(d)[6:]}" for m, n, k, cfg, d in SHARED_X_GPU_CASES])
def test_wgmma_shared_x_gives_the_bits_of_the_tiles_apart(m, n, k, cfg, dtype):
    """x shared by row tiles through TMA multicast, against the same tiling with each
    tile loading its own x: the same products in the same order, so the same bits. Run first and
    alone by bench/gpu_check.sh, which leaves the shared-x tilings out where this fails."""
    assert_wgmma_bits_of(m, n, k, cfg, replace(cfg, share=1), dtype)


def test_wgmma_shared_x_gives_the_same_bits_every_launch():
    _check_split_k_repeats(WgmmaConfig(G=1, T=128, U=2, stages=6, split_k=2, sparse=True, share=2))


def test_wgmma_cluster_meet_gives_the_same_bits_every_launch():
    _check_split_k_repeats(WgmmaConfig(G=2, T=128, U=2, stages=6, split_k=4, sparse=True, cluster=True))


def test_wgmma_reads_metadata_words_in_either_order():
    out, ref = run_wgmma_case(40, 130, 512, WgmmaConfig(G=2, T=32, U=2), torch.float16, False, "rows")
    assert rel_err(out, ref) < 5e-3


def test_dispatcher_runs_wgmma_from_a_table():
    from repro.kernels import dispatch

    n, k, m = 128, 512, 64
    table = {"entries": [dict(N=n, K=k, M=m, method="wgmma", config=WgmmaConfig(G=1, T=64, U=2).as_dict())]}
    dispatch.use_table(table)
    try:
        w = random_24(n, k)
        for layout in ("planar", "fragments"):
            w24 = compress_24(w) if layout == "planar" else compress_24(w).fragments()
            assert dispatch.choose(w24, m).method == "wgmma"
            x = torch.randn(m, k, device=DEVICE, dtype=torch.float16)
            assert rel_err(sparse24_matmul(x, w24), x.double() @ w.double().T) < 5e-3
    finally:
        dispatch.use_table(None)


def test_split_k_gives_the_same_bits_every_launch_and_leaves_its_counters_at_zero():
    _check_split_k_repeats(WgmmaConfig(G=1, T=64, U=2, split_k=4))


def test_wgmma_sparse_split_k_gives_the_same_bits_every_launch():
    """The sparse form with two MMA tiles per warpgroup, whose epilogue adds the partial sums in
    a loop (named apart, like the other sparse tests: see bench/gpu_check.sh)."""
    _check_split_k_repeats(WgmmaConfig(G=2, W=2, T=64, U=2, stages=6, split_k=8, sparse=True))


def _check_split_k_repeats(cfg):
    from repro.kernels.gluon_wgmma import launch_wgmma
    from repro.kernels.scratch import split_flags

    w = compress_24(random_24(4096, 4096)).fragments()
    x = torch.randn(64, 4096, device=DEVICE, dtype=torch.float16)
    outs = []
    for _ in range(5):
        out = torch.full((64, 4096), float("nan"), device=DEVICE, dtype=torch.float16)
        outs.append(launch_wgmma(x, w, None, out, cfg))
    assert int(split_flags(x.device, 1).abs().sum()) == 0
    assert all(torch.equal(outs[0], o) for o in outs[1:])
    assert rel_err(outs[0], x.double() @ w.decompress().double().T) < 5e-3
