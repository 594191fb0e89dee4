"""The Gluon ``spmma`` kernel (``mma.sp`` via inline PTX) on a real GPU (sm_80 or newer).

On CPU these tests are skipped; the same cases run there on the compiled PTX through the emulator
(``test_spmma_ptx.py``), which checks everything but the hardware's own reading of the operands.
Tolerance as in ``test_triton_sp24.py``: max |y - ref| / max |ref| against fp64, 5e-3 for fp16.
"""

import pytest
import torch
from sp24_helpers import DEVICE, SPMMA_CASES, random_24, rel_err, run_spmma_case, spmma_case_ids

from repro.kernels import compress_24, sparse24_matmul
from repro.kernels.fragments import SpmmaConfig

pytestmark = pytest.mark.skipif(
    DEVICE != "cuda" or torch.cuda.get_device_capability() < (8, 0),
    reason="mma.sp needs an sm_80+ CUDA GPU (no interpreter for inline PTX)",
)

ORDERS = ("pairs", "rows")


def test_metadata_order_matches_the_hardware():
    """The fragment layout follows one reading of the PTX figure for m16n8k32 metadata; if the
    hardware disagrees, say which reading it follows (a one-line fix in ``to_fragments``)."""
    cfg = SpmmaConfig(R=1, S=1, U=1, T=1)
    errors = {order: rel_err(*run_spmma_case(8, 16, 32, cfg, torch.float16, False, order)) for order in ORDERS}
    assert errors["pairs"] < 5e-3, f"metadata order 'pairs' is wrong on this GPU; errors per order: {errors}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m, n, k, cfg", SPMMA_CASES, ids=spmma_case_ids())
def test_spmma_matches_dense_masked_matmul(m, n, k, cfg, dtype):
    out, ref = run_spmma_case(m, n, k, cfg, dtype, with_bias=(m % 2 == 1), seed=m + n)
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


def test_split_k_gives_the_same_bits_every_launch_and_leaves_its_counters_at_zero():
    """On a GPU the splits of a tile finish in whatever order the hardware runs them; the split
    that finishes last adds all partial sums in split order, so every launch gives the same bits.
    A counter left raised would make the next launch finish its tile early (wrong, not hung)."""
    from repro.kernels.gluon_sp24 import launch_spmma
    from repro.kernels.scratch import split_flags

    w = compress_24(random_24(4096, 4096)).fragments()
    x = torch.randn(16, 4096, device=DEVICE, dtype=torch.float16)
    outs = []
    for cfg in (SpmmaConfig(R=1, S=2, U=2, T=2, W=2, prefetch=True, wide_x=True, split_k=4),
                SpmmaConfig(R=1, S=1, U=4, T=2, wide_x=True, stages=4, split_k=4)):
        for _ in range(5):
            out = torch.full((16, 4096), float("nan"), device=DEVICE, dtype=torch.float16)
            outs.append((cfg, launch_spmma(x, w, None, out, cfg)))
        assert int(split_flags(x.device, 1).abs().sum()) == 0
    for cfg, out in outs:
        same = [o for c, o in outs if c == cfg]
        assert all(torch.equal(out, o) for o in same)
    assert rel_err(outs[0][1], x.double() @ w.decompress().double().T) < 5e-3
