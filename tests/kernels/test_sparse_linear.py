"""SparseLinear and to_sparse24: drop-in behaviour, memory, the CPU notice, a tiny LLaMA."""

import logging

import pytest
import torch
from sp24_helpers import DEVICE, rel_err
from torch import nn

from repro.kernels import SparseLinear, dispatch
from repro.pruning import nm_mask, to_sparse24


def _pruned_linear(k, n, bias=True, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight.mul_(nm_mask(lin.weight.abs(), 2, 4))
    return lin.to(dtype=dtype, device=DEVICE)


@pytest.mark.parametrize("bias", [True, False])
def test_sparse_linear_matches_linear(bias):
    lin = _pruned_linear(96, 40, bias=bias)
    sparse = SparseLinear.from_linear(lin)
    x = torch.randn(3, 5, 96, device=DEVICE)
    assert rel_err(sparse(x), lin(x)) < 1e-5
    assert (sparse.in_features, sparse.out_features) == (96, 40)


def test_from_dense_linear_with_mask():
    torch.manual_seed(1)
    lin = nn.Linear(64, 16).to(DEVICE)
    mask = nm_mask(lin.weight.abs(), 2, 4)
    sparse = SparseLinear.from_linear(lin, mask)
    x = torch.randn(4, 64, device=DEVICE)
    expected = nn.functional.linear(x, lin.weight * mask, lin.bias)
    assert rel_err(sparse(x), expected) < 1e-5


@pytest.mark.parametrize("layout", ["planar", "fragments"])
def test_weight_memory_is_56_25_percent_of_dense_fp16(layout):
    sparse = SparseLinear.from_linear(_pruned_linear(256, 64, dtype=torch.float16), layout=layout)
    assert sparse.weight_nbytes / (256 * 64 * 2) == pytest.approx(0.5625)
    assert sparse.weight24.layout == layout and sparse.weight24.cache_nbytes == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fragment_layout_matches_linear_and_survives_to(dtype):
    lin = _pruned_linear(96, 40, dtype=dtype)
    sparse = SparseLinear.from_linear(lin, layout="fragments")
    x = torch.randn(3, 96, device=DEVICE, dtype=dtype)
    assert rel_err(sparse(x), lin(x)) < 1e-2
    moved = sparse.to("cpu")  # buffers re-bound: the weight is rebuilt over them, same layout
    assert moved.weight24.layout == "fragments" and moved.weight24.values is moved.values
    assert torch.equal(moved.weight24.decompress().to(DEVICE), lin.weight.detach())
    assert "fragments" in repr(sparse)


def test_forward_follows_buffers_replaced_and_a_bias_made_a_parameter():
    """forward reads its buffers from the module's table, not through attribute lookup: buffers
    replaced (as ``Module._apply`` does) rebuild the weight over them, and a bias replaced by a
    parameter is the one added."""
    lin = _pruned_linear(64, 16)
    sparse = SparseLinear.from_linear(lin)
    sparse._apply(torch.clone)
    assert sparse.weight24.values is sparse.values and sparse.weight24.meta is sparse.meta
    sparse.bias = nn.Parameter(torch.full((16,), 3.0, device=DEVICE))
    x = torch.randn(2, 64, device=DEVICE)
    assert rel_err(sparse(x), nn.functional.linear(x, lin.weight, sparse.bias)) < 1e-5


def test_unknown_layout_is_rejected():
    with pytest.raises(ValueError, match="layout must be one of"):
        SparseLinear.from_linear(_pruned_linear(32, 8), layout="csr")
    with pytest.raises(ValueError, match="fp16 or bf16"):  # mma.sp has no fp32 form
        SparseLinear.from_linear(_pruned_linear(32, 8), layout="fragments")


@pytest.mark.skipif(DEVICE == "cuda", reason="the notice is for the CPU reference path")
def test_cpu_path_says_so_once(caplog, monkeypatch):
    monkeypatch.setitem(dispatch._state, "warned_cpu", False)
    sparse = SparseLinear.from_linear(_pruned_linear(32, 8))
    with caplog.at_level(logging.WARNING, logger="repro.kernels.dispatch"):
        sparse(torch.randn(2, 32))
        sparse(torch.randn(2, 32))
    notices = [r for r in caplog.records if "reference path" in r.getMessage()]
    assert len(notices) == 1


def test_to_sparse24_swaps_only_24_sparse_linears():
    model = nn.Sequential(
        _pruned_linear(64, 64), nn.ReLU(), nn.Linear(64, 32).to(DEVICE), nn.Sequential(_pruned_linear(64, 16))
    )
    model[2].weight.data.normal_()  # dense: must stay an nn.Linear
    assert to_sparse24(model) == 2
    assert isinstance(model[0], SparseLinear) and isinstance(model[3][0], SparseLinear)
    assert type(model[2]) is nn.Linear
    tiny = nn.Sequential(_pruned_linear(8, 8))
    assert to_sparse24(tiny, min_features=16) == 0
    halves = nn.Sequential(_pruned_linear(64, 32, dtype=torch.float16))
    assert to_sparse24(halves, layout="fragments") == 1 and halves[0].weight24.layout == "fragments"


def test_tiny_llama_same_logits_with_sparse_linear(make_tiny_llama):
    model = make_tiny_llama(128, 64, 128).to(DEVICE)
    with torch.no_grad():
        for layer in model.model.layers:
            for lin in [m for m in layer.modules() if isinstance(m, nn.Linear)]:
                lin.weight.mul_(nm_mask(lin.weight.abs(), 2, 4))
    ids = torch.randint(0, 128, (2, 9), device=DEVICE)
    with torch.no_grad():
        dense_logits = model(ids).logits
        swapped = to_sparse24(model)
        sparse_logits = model(ids).logits
    assert swapped == 2 * 7  # q, k, v, o, gate, up, down per layer; lm_head is dense and stays
    assert isinstance(model.model.layers[0].mlp.down_proj, SparseLinear)
    assert rel_err(sparse_logits, dense_logits) < 1e-4
