"""The Triton kernels against the dense masked matmul (interpreter on CPU, real kernels on CUDA).

Tolerance: max |y - ref| / max |ref| against an fp64 reference, 5e-3 for fp16 outputs (fp16
rounding of y and of split-K partial sums) and 1e-5 for fp32 (exact fp32 arithmetic; the mma
kernel runs fp32 dots in IEEE mode).
"""

import pytest
import torch
from sp24_helpers import DEVICE, random_24, rel_err

from repro.kernels import compress_24, sparse24_matmul
from repro.kernels.triton_sp24 import KernelConfig, launch

TOL = {torch.float16: 5e-3, torch.float32: 1e-5}

# (kernel, M, N, K, config); small shapes, large blocks, and tails in M, N and K for each path
CASES = [
    ("mma", 5, 64, 256, KernelConfig(BM=16, BN=32, BP=16, split_k=1)),
    ("mma", 33, 70, 200, KernelConfig(BM=16, BN=32, BP=16, split_k=1)),  # M, N, K tails
    ("mma", 16, 70, 200, KernelConfig(BM=16, BN=64, BP=16, split_k=2)),  # uneven K split
    ("expand", 5, 64, 256, KernelConfig(BM=16, BN=32, BP=16, split_k=1)),
    ("expand", 33, 70, 200, KernelConfig(BM=16, BN=32, BP=16, split_k=1)),  # M, N, K tails
    ("expand", 16, 70, 200, KernelConfig(BM=16, BN=64, BP=16, split_k=2)),  # uneven K split
    ("fma", 1, 64, 256, KernelConfig(BM=1, BN=32, BP=16, split_k=1)),
    ("fma", 3, 70, 200, KernelConfig(BM=2, BN=32, BP=8, split_k=1)),  # M, N, K tails
    ("fma", 1, 70, 200, KernelConfig(BM=1, BN=32, BP=8, split_k=3)),  # uneven K split
    ("fma", 1, 70, 200, KernelConfig(BM=1, BN=4, BP=64, num_warps=1, num_stages=4)),  # decode default
]


def _run(kernel, m, n, k, cfg, dtype, with_bias, seed=0):
    w = random_24(n, k, dtype=dtype, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(m, k, generator=g).to(dtype=dtype, device=DEVICE)
    bias = torch.randn(n, generator=g).to(dtype=dtype, device=DEVICE) if with_bias else None
    out = torch.full(
        (m, n), float("nan"), dtype=dtype, device=DEVICE
    )  # poison: every element must be written
    launch(kernel, x, compress_24(w), bias, out, cfg)
    ref = x.double() @ w.double().T + (bias.double() if with_bias else 0)
    return out, ref


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize(
    "kernel, m, n, k, cfg", CASES, ids=[f"{c[0]}-{c[1]}x{c[2]}x{c[3]}-sk{c[4].split_k}" for c in CASES]
)
def test_kernel_matches_dense_masked_matmul(kernel, m, n, k, cfg, dtype):
    out, ref = _run(kernel, m, n, k, cfg, dtype, with_bias=(m % 2 == 1))
    assert not out.isnan().any(), "some output elements were never written"
    assert rel_err(out, ref) < TOL[dtype]


@pytest.mark.skipif(DEVICE != "cuda", reason="bf16 arithmetic is broken in the Triton interpreter")
@pytest.mark.parametrize("kernel, m, n, k, cfg", [c for c in CASES if c[4].split_k == 1])
def test_kernel_bf16_on_gpu(kernel, m, n, k, cfg):
    out, ref = _run(kernel, m, n, k, cfg, torch.bfloat16, with_bias=True)
    assert not out.isnan().any()
    assert rel_err(out, ref) < 2e-2


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_matmul_with_leading_batch_dims_and_bias(dtype):
    w = random_24(48, 128, dtype=dtype, seed=3)
    x = torch.randn(2, 3, 128).to(dtype=dtype, device=DEVICE)
    bias = torch.randn(48).to(dtype=dtype, device=DEVICE)
    y = sparse24_matmul(x, compress_24(w), bias)
    assert y.shape == (2, 3, 48)
    assert rel_err(y, x.double() @ w.double().T + bias.double()) < TOL[dtype]


def test_matmul_rejects_mismatched_inputs():
    w = compress_24(random_24(16, 64))
    x = torch.randn(2, 64, dtype=torch.float16, device=DEVICE)
    for wrong in (torch.randn(2, 32), torch.tensor(1.0)):  # K = 32, not 64; no K at all
        with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., K=64\]"):
            sparse24_matmul(wrong.to(dtype=torch.float16, device=DEVICE), w)
    with pytest.raises(ValueError, match="dtype"):
        sparse24_matmul(x.float(), w)
    for bias in (torch.zeros(8, dtype=torch.float16), torch.zeros(1, 16, dtype=torch.float16), torch.zeros(16)):
        with pytest.raises(ValueError, match=r"bias must be a \[16\] torch.float16 tensor"):
            sparse24_matmul(x, w, bias.to(DEVICE))
    if DEVICE == "cuda":
        with pytest.raises(ValueError, match="bias must be"):
            sparse24_matmul(x, w, torch.zeros(16, dtype=torch.float16))


def test_invalid_kernel_configs_are_rejected():
    w = compress_24(random_24(16, 64))
    x = torch.randn(2, 64, dtype=torch.float16, device=DEVICE)
    out = torch.empty(2, 16, dtype=torch.float16, device=DEVICE)
    with pytest.raises(ValueError, match=">= 16"):
        launch("mma", x, w, None, out, KernelConfig(BM=8, BN=32, BP=16))
    with pytest.raises(ValueError, match="power of two"):
        launch("fma", x, w, None, out, KernelConfig(BM=1, BN=24, BP=16))
    with pytest.raises(ValueError, match="unknown kernel"):
        launch("gather", x, w, None, out, KernelConfig(BM=1, BN=32, BP=16))


def test_split_k_leaves_its_flags_zeroed_for_the_next_launch():
    from repro.kernels.scratch import split_flags

    for _ in range(2):  # a second launch would hang or go wrong if the first left flags raised
        out, ref = _run("fma", 2, 70, 200, KernelConfig(BM=2, BN=32, BP=8, split_k=3), torch.float16, True)
        assert rel_err(out, ref) < TOL[torch.float16]
    assert int(split_flags(torch.device(DEVICE), 1).abs().sum()) == 0


def test_split_k_buffers_grow_without_freeing_what_a_graph_may_hold():
    from repro.kernels import scratch

    device = torch.device("cpu")
    small = scratch.split_workspace(device, 10)
    assert scratch.split_workspace(device, 10) is small  # reused while big enough
    big = scratch.split_workspace(device, small.numel() + 1)
    assert big.numel() > small.numel() and any(t is small for t in scratch._outgrown)
    flags = scratch.split_flags(device, 1)
    assert int(flags.abs().sum()) == 0 and scratch.split_flags(device, flags.numel() + 1).numel() > flags.numel()
