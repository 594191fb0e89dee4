"""The compressed 2:4 format: layout, exact round trip, footprint and input validation."""

import pytest
import torch
from sp24_helpers import random_24

from repro.kernels import Sparse24Weight, compress_24


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(1, 8), (7, 40), (64, 256), (33, 200)])
def test_round_trip_is_exact(dtype, shape):
    w = random_24(*shape, dtype=dtype, device="cpu", seed=sum(shape))
    packed = compress_24(w)
    assert packed.values.shape == (shape[0], shape[1] // 2)
    assert packed.meta.shape == (shape[0], shape[1] // 8)
    assert packed.values.dtype == dtype and packed.meta.dtype == torch.uint8
    assert torch.equal(packed.decompress(), w)


def test_round_trip_with_empty_and_single_groups_and_ties():
    w = torch.tensor(
        [
            [0, 0, 0, 0, 0, 0, 0, 5.0],  # empty group, one kept at position 3
            [1, 1, 0, 0, 0, 2, 2, 0],  # ties
            [0, 3, 0, 4, 0, -1, 0, 0],
        ],
        dtype=torch.float16,
    )
    packed = compress_24(w)
    assert torch.equal(packed.decompress(), w)
    codes = torch.stack((packed.meta & 15, packed.meta >> 4), -1).reshape(3, 2)
    i0, i1 = codes & 3, codes >> 2
    assert bool((i0 < i1).all()), "the format promises i0 < i1 in every group"


def test_documented_bit_layout():
    # one row, K = 8: group 0 keeps positions {1, 3}, group 1 keeps {0, 2}
    w = torch.tensor([[0, 10, 0, 11, 20, 0, 21, 0]], dtype=torch.float32)
    packed = compress_24(w)
    # planes [v0 even | v1 even | v0 odd | v1 odd] with one pair per row
    assert packed.values.tolist() == [[10, 11, 20, 21]]
    code_g0 = 1 | 3 << 2  # 0b1101
    code_g1 = 0 | 2 << 2  # 0b1000
    assert packed.meta.tolist() == [[code_g0 | code_g1 << 4]]


def test_footprint_is_56_25_percent_of_dense_fp16():
    packed = compress_24(random_24(64, 512, device="cpu"))
    assert packed.nbytes / (64 * 512 * 2) == pytest.approx(0.5625)


def test_mask_selects_the_kept_weights():
    dense = torch.randn(16, 64)
    mask = torch.zeros(16, 64, dtype=torch.bool)
    mask[:, 1::4] = True
    mask[:, 2::4] = True
    assert torch.equal(compress_24(dense, mask).decompress(), dense * mask)


def test_to_moves_both_tensors():
    packed = compress_24(random_24(8, 64, device="cpu"))
    moved = packed.to("cpu")
    assert isinstance(moved, Sparse24Weight) and moved.shape == packed.shape
    assert torch.equal(moved.decompress(), packed.decompress())


@pytest.mark.parametrize(
    "weight, message",
    [
        (torch.ones(4, 16), "not 2:4"),
        (torch.zeros(4, 12), "multiple of 8"),
        (torch.zeros(4, 16, dtype=torch.float64), "dtype"),
        (torch.zeros(4, 16, dtype=torch.int8), "dtype"),
        (torch.zeros(16), "2-D"),
        (torch.zeros(4, 16, device="meta"), "device"),
    ],
)
def test_invalid_weights_are_rejected(weight, message):
    with pytest.raises(ValueError, match=message):
        compress_24(weight)


def test_invalid_masks_are_rejected():
    w = torch.randn(4, 16)
    with pytest.raises(ValueError, match="not 2:4"):
        compress_24(w, torch.ones(4, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask shape"):
        compress_24(w, torch.ones(4, 8, dtype=torch.bool))


def test_package_imports_and_runs_on_cpu_without_triton():
    """`import repro.kernels` must only need torch; Triton is imported when a kernel first runs."""
    import os
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from repro.kernels import SparseLinear, compress_24, sparse24_matmul\n"
        "from repro.pruning import nm_mask, to_sparse24\n"
        "lin = torch.nn.Linear(16, 8)\n"
        "sparse = SparseLinear.from_linear(lin, nm_mask(lin.weight.abs(), 2, 4))\n"
        "x = torch.randn(3, 16)\n"
        "assert sparse(x).shape == (3, 8)\n"
        "assert 'triton' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
    )
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
