"""The Gluon ``spmma`` kernel (``mma.sp`` via inline PTX) on a real GPU (sm_80 or newer).

There is no interpreter for inline PTX, so on CPU these tests are skipped; the layout and the
kernel's addressing are checked on any machine by ``test_fragments.py``'s warp model.
Tolerance as in ``test_triton_sp24.py``: max |y - ref| / max |ref| against fp64, 5e-3 for fp16.
"""

import pytest
import torch
from sp24_helpers import DEVICE, random_24, rel_err

from repro.kernels import compress_24, sparse24_matmul
from repro.kernels.fragments import SpmmaConfig, to_fragments

pytestmark = pytest.mark.skipif(
    DEVICE != "cuda" or torch.cuda.get_device_capability() < (8, 0),
    reason="mma.sp needs an sm_80+ CUDA GPU (no interpreter for inline PTX)",
)

# (M, N, K, config): decode and prefill token counts, tails in M (not a multiple of 8), N (not of
# 16) and K (not of 32), uneven K slices, several row tiles and token tiles per program
CASES = [
    (1, 64, 256, SpmmaConfig(R=1, S=4, U=4, T=1)),
    (8, 64, 256, SpmmaConfig(R=2, S=2, U=2, T=1)),
    (13, 70, 200, SpmmaConfig(R=1, S=4, U=4, T=2)),  # M, N, K tails
    (16, 96, 1000, SpmmaConfig(R=2, S=8, U=2, T=2)),  # K = 31.25 k-blocks over 8 slices
    (40, 130, 512, SpmmaConfig(R=4, S=2, U=1, T=4)),  # two token blocks
    (130, 64, 4096, SpmmaConfig(R=2, S=4, U=1, T=8)),
    (1, 64, 4096, SpmmaConfig(R=1, S=4, U=4, T=1, prefetch=True)),  # loads one step ahead
    (11, 96, 1000, SpmmaConfig(R=1, S=8, U=2, T=2, prefetch=True)),
    (13, 70, 200, SpmmaConfig(R=1, S=4, U=2, T=2, W=2)),  # two row tiles per warp, N tail
    (40, 130, 512, SpmmaConfig(R=2, S=2, U=1, T=4, W=4)),  # 9 row tiles in programs of 8
]


def _run(m, n, k, cfg, dtype, with_bias, meta_order=None, seed=0):
    from repro.kernels.gluon_sp24 import launch_spmma

    w = random_24(n, k, dtype=dtype, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(m, k, generator=g).to(dtype=dtype, device=DEVICE)
    bias = torch.randn(n, generator=g).to(dtype=dtype, device=DEVICE) if with_bias else None
    out = torch.full((m, n), float("nan"), dtype=dtype, device=DEVICE)  # poisoned
    launch_spmma(x, to_fragments(compress_24(w), meta_order), bias, out, cfg)
    ref = x.double() @ w.double().T + (bias.double() if with_bias else 0)
    return out, ref


def test_metadata_order_matches_the_hardware():
    """The fragment layout follows one reading of the PTX figure for m16n8k32 metadata; if the
    hardware disagrees, say which reading it follows (a one-line fix in ``to_fragments``)."""
    cfg = SpmmaConfig(R=1, S=1, U=1, T=1)
    errors = {order: rel_err(*_run(8, 16, 32, cfg, torch.float16, False, order)) for order in ("pairs", "rows")}
    assert errors["pairs"] < 5e-3, f"metadata order 'pairs' is wrong on this GPU; errors per order: {errors}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m, n, k, cfg", CASES, ids=[f"{c[0]}x{c[1]}x{c[2]}-{c[3].label()}" for c in CASES])
def test_spmma_matches_dense_masked_matmul(m, n, k, cfg, dtype):
    out, ref = _run(m, n, k, cfg, dtype, with_bias=(m % 2 == 1), seed=m + n)
    assert not out.isnan().any(), "some output elements were never written"
    assert rel_err(out, ref) < (5e-3 if dtype == torch.float16 else 2e-2)


def test_misaligned_x_is_copied_not_misread():
    from repro.kernels.triton_sp24 import launch

    w = random_24(64, 256)
    base = torch.randn(4 * 256 + 1, device=DEVICE, dtype=torch.float16)
    x = base[1:].view(4, 256)  # 2-byte aligned: the kernel reads 4-byte pairs
    out = torch.full((4, 64), float("nan"), device=DEVICE, dtype=torch.float16)
    launch("spmma", x, compress_24(w), None, out, SpmmaConfig(R=1, S=2, U=2, T=1))
    assert rel_err(out, x.double() @ w.double().T) < 5e-3


def test_dispatcher_runs_spmma_from_a_table():
    from repro.kernels import dispatch

    n, k, m = 64, 256, 4
    table = {"entries": [dict(N=n, K=k, M=m, method="spmma", config=SpmmaConfig(R=1, S=2, U=2, T=1).as_dict())]}
    dispatch.use_table(table)
    try:
        assert dispatch.choose(compress_24(random_24(n, k)), m).method == "spmma"
        w = random_24(n, k)
        x = torch.randn(m, k, device=DEVICE, dtype=torch.float16)
        y = sparse24_matmul(x, compress_24(w))
        assert rel_err(y, x.double() @ w.double().T) < 5e-3
    finally:
        dispatch.use_table(None)


@pytest.mark.parametrize("m", [1, 16, 100])
def test_fragment_layout_sparse_linear_on_gpu(m):
    """A fragment-order layer runs spmma (M <= 64 without a table entry) or cuBLAS (above)."""
    from torch import nn

    from repro.kernels import SparseLinear, dispatch

    lin = nn.Linear(256, 96).half().to(DEVICE)
    with torch.no_grad():
        lin.weight.copy_(random_24(96, 256))
    layer = SparseLinear.from_linear(lin, layout="fragments")
    assert dispatch.choose(layer.weight24, m).method == ("spmma" if m <= 64 else "cublas")
    x = torch.randn(m, 256, device=DEVICE, dtype=torch.float16)
    assert rel_err(layer(x), x.double() @ lin.weight.double().T + lin.bias.double()) < 5e-3
