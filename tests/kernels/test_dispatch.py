"""The dispatcher's table lookup, and the committed tables' (H100, H200) consistency with the kernels."""

import json

import pytest
import torch

from repro.kernels import dispatch
from repro.kernels.cusparselt import CusparseLtConfig
from repro.kernels.fragments import SpmmaConfig, WgmmaConfig
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


def test_table_choice_builds_the_config_class_of_its_method():
    spmma = dict(R=1, S=8, U=4, T=1, W=1, prefetch=False)
    table = {"entries": [dict(N=64, K=128, M=4, dtype="float16", method="spmma", config=spmma)]}
    assert dispatch._table_choice(table, 64, 128, 3, torch.float16) == dispatch.Choice("spmma", SpmmaConfig(**spmma))


@pytest.mark.parametrize("m, programs", [(1, 1), (8, 1), (9, 2), (16, 2), (17, 1), (40, 1), (64, 1)])
def test_spmma_default_covers_m_with_at_most_two_token_programs_per_row_tile(m, programs):
    """Up to 16 tokens one token tile per program (9-16: two programs per row tile, the measured
    winner), above that one token block per program."""
    choice = dispatch.spmma_default(m)
    assert choice.method == "spmma"
    assert -(-m // (8 * choice.config.T)) == programs
    choice.config.check()
    assert dispatch.spmma_default(65) == dispatch.Choice("cublas")


@pytest.mark.parametrize(
    "layout, m, method",
    [
        ("planar", 1, "fma"),
        ("fragments", 1, "spmma"),  # fma cannot read fragments: spmma_default
        ("planar", 16, "mma"),
        ("fragments", 16, "spmma"),
        ("fragments", 512, "cublas"),
    ],
)
def test_fragment_weights_only_get_methods_that_read_them(monkeypatch, layout, m, method):
    monkeypatch.setattr(dispatch, "arch_name", lambda device: "sm90")
    monkeypatch.setattr(dispatch, "gpu_name", lambda device: "NVIDIA H200")
    monkeypatch.setattr(dispatch, "_sm_count", lambda device: 132)
    dispatch.use_table(TABLE)
    try:
        choice = dispatch._cached_choice(64, 128, m, torch.float16, 0, layout)
    finally:
        dispatch.use_table(None)
    assert choice.method == method
    assert choice.method in dispatch.LAYOUT_METHODS[layout]


def test_fragment_weights_take_the_entrys_fragments_choice_where_it_has_one(monkeypatch):
    spmma = dict(R=1, S=4, U=8, T=1, W=1, prefetch=True, wide_x=True)
    entry = dict(N=64, K=128, M=1, dtype="float16", method="fma", config=FMA)
    entry["fragments"] = dict(method="spmma", config=spmma)
    table = {"entries": [entry]}
    assert dispatch._table_choice(table, 64, 128, 1, torch.float16) == dispatch.Choice("fma", KernelConfig(**FMA))
    fragments = dispatch._table_choice(table, 64, 128, 1, torch.float16, "fragments")
    assert fragments == dispatch.Choice("spmma", SpmmaConfig(**spmma))
    monkeypatch.setattr(dispatch, "arch_name", lambda device: "sm90")
    monkeypatch.setattr(dispatch, "gpu_name", lambda device: "NVIDIA H200")
    dispatch.use_table(table)
    try:
        assert dispatch._cached_choice(64, 128, 1, torch.float16, 0, "fragments") == fragments
    finally:
        dispatch.use_table(None)


def test_unmeasured_fragment_weights_get_spmma_not_a_dense_copy(monkeypatch):
    monkeypatch.setattr(dispatch, "arch_name", lambda device: "sm90")
    monkeypatch.setattr(dispatch, "gpu_name", lambda device: "NVIDIA H200")
    monkeypatch.setattr(dispatch, "_sm_count", lambda device: 132)
    dispatch.use_table({"entries": []})
    try:
        assert dispatch._cached_choice(64, 128, 16, torch.float16, 0, "fragments") == dispatch.spmma_default(16)
        assert dispatch._cached_choice(64, 128, 16, torch.float16, 0, "planar").method == "cublas"
    finally:
        dispatch.use_table(None)


def test_table_choice_is_none_for_unmeasured_shapes_and_dtypes():
    assert dispatch._table_choice(TABLE, 64, 256, 1, torch.float16) is None
    assert dispatch._table_choice(TABLE, 64, 128, 1, torch.bfloat16) is None
    assert dispatch._table_choice({}, 64, 128, 1, torch.float16) is None


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_committed_tables_name_only_known_methods_and_valid_configs(gpu):
    table = dispatch._committed_table("sm90", gpu)
    assert table["entries"], f"the committed sm90 table of the {gpu} is empty"
    assert dispatch.gpu_key(table["gpu"]) == gpu
    for entry in table["entries"]:
        assert entry["method"] in dispatch.METHODS
        if entry["method"] == "spmma":
            SpmmaConfig(**entry["config"]).check()  # raises on unknown fields or invalid tiles
        elif entry["method"] == "wgmma":
            WgmmaConfig(**entry["config"]).check()
        elif entry["method"] in KERNELS:
            KernelConfig(**entry["config"])  # raises on unknown fields
        elif entry["method"] == "cusparselt":
            assert CusparseLtConfig(**entry["config"]).alg_id >= 0
        else:
            assert entry["config"] is None
        # the rule: anything but cuBLAS must have measured >= 3% faster than cuBLAS
        assert entry["method"] == "cublas" or entry["speedup_vs_cublas"] >= 1 / 0.97


@pytest.mark.parametrize(
    "name, key",
    [("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H200", "h200"), ("NVIDIA A100-SXM4-80GB", "a100"),
     ("NVIDIA GH200 480GB", "h200"), ("Some GPU X", "some-gpu-x")],
)
def test_gpu_key_is_the_short_name_tables_and_results_go_by(name, key):
    assert dispatch.gpu_key(name) == key


def test_a_gpus_own_table_comes_first_then_its_architectures_newest(monkeypatch, tmp_path):
    """H100 and H200 are one architecture with different memory: each reads its own measurements;
    a GPU of that architecture with none (an H800) reads the most recently measured; an
    architecture without any table gets {} (rules of thumb)."""
    for gpu, measured in (("h100", "2026-11-28"), ("h200", "2026-11-27")):
        (tmp_path / f"dispatch_sm90_{gpu}.json").write_text(json.dumps({"gpu": gpu, "measured": measured}))
    monkeypatch.setattr(dispatch, "_TABLE_DIR", tmp_path)
    dispatch._committed_table.cache_clear()
    try:
        assert dispatch.load_table("sm90", "h200")["gpu"] == "h200"
        assert dispatch.load_table("sm90", "h100")["gpu"] == "h100"
        assert dispatch.load_table("sm90", "h800")["gpu"] == "h100"
        assert dispatch.load_table("sm80", "a100") == {}
    finally:
        dispatch._committed_table.cache_clear()


def test_each_gpu_dispatches_by_its_own_committed_table(monkeypatch):
    """The two committed tables disagree where the memory does: at 128 tokens on 11008x4096 the
    H200 (faster memory) keeps cuBLAS, the H100 runs the sparse wgmma."""
    monkeypatch.setattr(dispatch, "arch_name", lambda device: "sm90")
    monkeypatch.setattr(dispatch, "_sm_count", lambda device: 132)
    picks = {}
    for name in ("NVIDIA H200", "NVIDIA H100 80GB HBM3"):
        monkeypatch.setattr(dispatch, "gpu_name", lambda device, name=name: name)
        dispatch._cached_choice.cache_clear()
        picks[name] = dispatch._cached_choice(11008, 4096, 128, torch.float16, 0, "planar").method
    dispatch._cached_choice.cache_clear()
    assert picks == {"NVIDIA H200": "cublas", "NVIDIA H100 80GB HBM3": "wgmma"}
