"""The dispatcher's table lookup, and the committed H200 table's consistency with the kernels."""

import pytest
import torch

from repro.kernels import dispatch
from repro.kernels.triton_sp24 import KERNELS, KernelConfig

FMA = dict(BM=1, BN=4, BP=64, num_warps=1, num_stages=4, split_k=1)
MMA = dict(BM=16, BN=64, BP=32, num_warps=4, num_stages=3, split_k=4)
TABLE = {
    "entries": [
        dict(N=64, K=128, M=1, dtype="float16", method="fma", config=FMA),
        dict(N=64, K=128, M=16, dtype="float16", method="mma", config=MMA),
        dict(N=64, K=128, M=512, dtype="float16", method="cublas", config=None),
    ]
}


@pytest.mark.parametrize(
    "m, expected",
    [
        (1, dispatch.Choice("fma", KernelConfig(**FMA))),
        (2, dispatch.Choice("mma", KernelConfig(**MMA))),  # the smallest measured M >= m
        (16, dispatch.Choice("mma", KernelConfig(**MMA))),
        (17, dispatch.Choice("cublas", None)),
        (4096, dispatch.Choice("cublas", None)),  # beyond the last measured M: the last entry
    ],
)
def test_table_choice_takes_the_smallest_measured_m_at_or_above(m, expected):
    assert dispatch._table_choice(TABLE, 64, 128, m, torch.float16) == expected


def test_table_choice_is_none_for_unmeasured_shapes_and_dtypes():
    assert dispatch._table_choice(TABLE, 64, 256, 1, torch.float16) is None
    assert dispatch._table_choice(TABLE, 64, 128, 1, torch.bfloat16) is None
    assert dispatch._table_choice({}, 64, 128, 1, torch.float16) is None


def test_committed_h200_table_names_only_known_methods_and_valid_configs():
    table = dispatch._committed_table("sm90")
    assert table["entries"], "the committed sm90 table is empty"
    for entry in table["entries"]:
        assert entry["method"] in dispatch.METHODS
        if entry["method"] in KERNELS:
            KernelConfig(**entry["config"])  # raises on unknown fields
        else:
            assert entry["config"] is None
        # the rule: anything but cuBLAS must have measured >= 3% faster than cuBLAS
        assert entry["method"] == "cublas" or entry["speedup_vs_cublas"] >= 1 / 0.97
