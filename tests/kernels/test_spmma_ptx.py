"""The ``spmma`` kernel's compiled PTX, run on the CPU by ``ptx_emulator`` (no GPU needed).

The kernel is compiled for sm_90a with the specialization its launcher would get, and every
instruction of it runs in the emulator, except ``mma.sp`` itself, which is the warp model of
``sp24_helpers`` (the PTX ISA's fragment layout). So these tests check the kernel's address
arithmetic, masks, split-K reduction, stores and the Python launcher around it, on the cases the
GPU test runs; what they cannot check is whether the hardware reads the operands as the ISA's figure
says, which ``bench/spmma_probe.py`` finds out on the first GPU run. The emulator also refuses any
out-of-bounds or misaligned access, which a GPU would not always report, and counts the passes
of the shared-memory banks, so bank conflicts are found without a profiler.
"""

import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from ptx_emulator import SharedTraffic
from ptx_launch import EmulatedKernel
from sp24_helpers import (
    SPMMA_CASES,
    assert_correct_and_conflict_free,
    assert_fragment_map_as_documented,
    first_token_counts,
    mma_sp_warps,
    rel_err,
    run_spmma_case,
    spmma_case_ids,
)

from repro.kernels import gluon_sp24
from repro.kernels.fragments import SpmmaConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import spmma_probe  # noqa: E402
from sp24.common import MS  # noqa: E402
from sp24.sweep import spmma_configs  # noqa: E402

KERNEL = gluon_sp24._spmma_kernel


@pytest.fixture
def gpu(monkeypatch):
    """Swap the kernel for its emulated PTX on hardware that reads metadata one way or the other."""

    def use(meta_reading: str = "pairs", traffic: SharedTraffic | None = None) -> EmulatedKernel:
        kernel = EmulatedKernel(KERNEL, mma=partial(mma_sp_warps, meta_reading=meta_reading), traffic=traffic)
        monkeypatch.setattr(gluon_sp24, "_spmma_kernel", kernel)
        return kernel

    return use


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m, n, k, cfg", SPMMA_CASES, ids=spmma_case_ids())
def test_compiled_spmma_matches_dense_masked_matmul(gpu, m, n, k, cfg, dtype):
    kernel = gpu()
    out, ref = run_spmma_case(m, n, k, cfg, dtype, with_bias=(m % 2 == 1), seed=m + n, device="cpu")
    assert not out.isnan().any(), "some output elements were never written"
    assert rel_err(out, ref) < (5e-3 if dtype == torch.float16 else 2e-2)
    assert kernel.launches[-1]["num_warps"] == cfg.num_warps


def _sweep() -> list[tuple[int, SpmmaConfig]]:
    return first_token_counts(spmma_configs, MS)


@pytest.mark.parametrize("m, cfg", _sweep(), ids=[cfg.label() for _, cfg in _sweep()])
def test_every_benchmark_configuration_is_correct_and_free_of_bank_conflicts(gpu, m, cfg):
    """N, K and the tile counts all multiples of 16, like the LLaMA shapes: the same divisibility
    hints, so the same PTX the benchmark will run (a smaller grid of it). Every shared-memory
    access (the staged ring, the K slices' partial sums) must take no more passes of the banks
    than its bytes need: Triton's own layouts for the partial sums once took 8-16 times that."""
    traffic = SharedTraffic()
    gpu(traffic=traffic)
    out, ref = run_spmma_case(m, 256, 512, cfg, torch.float16, with_bias=False, seed=m, device="cpu")
    assert_correct_and_conflict_free(out, ref, traffic)


def test_emulated_ptx_is_specialized_like_the_launcher(gpu):
    """The compile must see the arguments as Triton's launcher would, or the PTX would be another
    kernel: integers equal to 1 become constants, multiples of 16 carry a divisibility hint."""
    kernel = gpu()
    run_spmma_case(1, 16, 64, SpmmaConfig(R=1, S=1, U=1, T=1), torch.float16, False, device="cpu")
    launch = kernel.launches[-1]
    assert launch["constexprs"]["NT"] == 1  # N = 16: one row tile
    assert "M" not in launch["constexprs"]  # M = 1, but the kernel asks not to specialize on it
    assert {"N", "x_ptr", "y_ptr"} <= set(launch["divisible"]) and "KB" not in launch["divisible"]  # KB = 2
    run_spmma_case(3, 70, 64, SpmmaConfig(R=1, S=1, U=1, T=1), torch.float16, False, device="cpu")
    assert "N" not in kernel.launches[-1]["divisible"] and "K" in kernel.launches[-1]["divisible"]


@pytest.mark.parametrize("reading", ["pairs", "rows"])
def test_probe_names_the_metadata_reading_of_the_hardware(gpu, reading):
    """``bench/spmma_probe.py``'s first check, run through the compiled kernel: it must report the
    reading the (emulated) hardware follows, and only that one."""
    gpu(reading)
    assert spmma_probe.working_orders(spmma_probe.launchers("spmma")[0], "cpu") == [reading]


def test_fragment_map_of_the_compiled_kernel_matches_the_layout(gpu):
    """The probe's slot-by-slot map, run through the compiled kernel as on a GPU (r1s1u1t1)."""
    gpu()
    assert_fragment_map_as_documented(spmma_probe.launchers("spmma")[1])


def test_split_k_gives_the_same_bits_whichever_split_finishes_last(monkeypatch):
    """The split that counts in last adds every partial sum in split order, so the output may not
    depend on which split that is; here the programs run first to last, then last to first (so
    the last to arrive is split 2, then split 0). Each launch must also leave its counters at 0,
    or the next launch would finish tiles early."""
    from repro.kernels.scratch import split_flags

    cfg = SpmmaConfig(R=1, S=2, U=2, T=2, W=2, prefetch=True, split_k=3)
    outs = []
    for reverse in (False, True):
        kernel = EmulatedKernel(KERNEL, mma=mma_sp_warps, reverse=reverse)
        monkeypatch.setattr(gluon_sp24, "_spmma_kernel", kernel)
        out, ref = run_spmma_case(13, 70, 1000, cfg, torch.float16, with_bias=True, seed=3, device="cpu")
        assert rel_err(out, ref) < 5e-3
        assert int(split_flags(torch.device("cpu"), 1).abs().sum()) == 0
        outs.append(out)
    assert torch.equal(outs[0], outs[1])
