"""cuSPARSELt called directly with kept plans (``repro.kernels.cusparselt``).

On the CPU the route runs against a stand-in library (``cusparselt_standin.py``) that checks what
each call is told and computes from the raw memory as the descriptors lay it out; on a GPU the same
products run through the real library, inside a CUDA graph too. Where the real library's header is
installed (torch's CUDA wheels bring it), the declared signatures are checked against it."""

import ctypes
import glob
import os
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cusparselt_standin import MAX_ALG_ID, StandIn
from sp24_helpers import random_24

from repro.kernels import compress_24, dispatch
from repro.kernels import cusparselt as lt

STREAM = 0x5EED
CUDA = torch.cuda.is_available()


@pytest.fixture
def standin(monkeypatch):
    """The route on the CPU, every call going to the stand-in library."""
    library = StandIn(STREAM)
    monkeypatch.setattr(lt, "_device_index", lambda device: 0)
    monkeypatch.setattr(lt, "_stream", lambda device: STREAM)
    monkeypatch.setattr(lt, "_check_device", lambda t, what: None)
    lt.use_library(lt.Library(library))
    yield library
    lt.use_library(None)


def reference(x, dense, bias=None):
    return F.linear(x.float(), dense.float(), None if bias is None else bias.float())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m", [1, 5, 8, 24])
@pytest.mark.parametrize("with_bias", [False, True])
def test_route_computes_x_times_w_transposed_as_laid_out(standin, dtype, m, with_bias):
    dense = random_24(48, 64, dtype, "cpu", seed=m)
    x = torch.randn(m, 64, dtype=dtype)
    bias = torch.randn(48, dtype=dtype) if with_bias else None
    y = lt.CusparseLtWeight(dense).matmul(x, bias)
    assert y.shape == (m, 48) and y.dtype == dtype and y.is_contiguous()
    torch.testing.assert_close(y.float(), reference(x, dense, bias), rtol=1e-2, atol=1e-2)


def test_x_is_read_transposed_and_y_written_column_major_with_leading_dimension_n(standin):
    w = lt.CusparseLtWeight(random_24(32, 64, device="cpu"))
    w.matmul(torch.randn(16, 64, dtype=torch.float16))
    (plan,) = standin.plans.values()
    mm = plan["matmul"]
    assert (mm["op_a"], mm["op_b"]) == (lt.OP_NON_TRANSPOSE, lt.OP_TRANSPOSE)
    assert {k: mm["B"][k] for k in ("rows", "cols", "ld", "order")} == dict(rows=16, cols=64, ld=64, order=lt.ORDER_ROW)
    assert {k: mm["D"][k] for k in ("rows", "cols", "ld", "order")} == dict(rows=32, cols=16, ld=32, order=lt.ORDER_COL)
    assert {k: mm["A"][k] for k in ("rows", "cols", "ld", "order")} == dict(rows=32, cols=64, ld=64, order=lt.ORDER_ROW)


def test_token_counts_off_the_multiple_of_8_are_padded_and_cut_back(standin):
    dense = random_24(32, 64, device="cpu")
    x = torch.randn(5, 64, dtype=torch.float16)
    y = lt.CusparseLtWeight(dense).matmul(x)
    (plan,) = standin.plans.values()
    assert plan["matmul"]["B"]["rows"] == 8  # the padded copy of x
    assert y.shape == (5, 32) and y.is_contiguous()
    torch.testing.assert_close(y.float(), reference(x, dense), rtol=1e-2, atol=1e-2)


def test_plans_are_kept_per_token_count_bias_and_algorithm(standin):
    w = lt.CusparseLtWeight(random_24(32, 64, device="cpu"))
    x8, x16 = torch.randn(8, 64, dtype=torch.float16), torch.randn(16, 64, dtype=torch.float16)
    bias = torch.randn(32, dtype=torch.float16)
    for _ in range(3):
        w.matmul(x8)
        w.matmul(x16)
        w.matmul(x8, bias)
        w.matmul(x8, config=lt.CusparseLtConfig(alg_id=2))
    assert standin.calls["cusparseLtMatmulPlanInit"] == 4 == w.plan_count()
    assert standin.calls["cusparseLtMatmul"] == 12
    assert standin.calls["cusparseLtSpMMACompress2"] == 1  # the weight is compressed once
    assert sorted(p["alg_id"] for p in standin.plans.values()) == [0, 0, 0, 2]


def test_the_oldest_plan_is_destroyed_past_the_limit(standin, monkeypatch):
    monkeypatch.setattr(lt, "MAX_PLANS", 2)
    w = lt.CusparseLtWeight(random_24(32, 64, device="cpu"))
    for m in (8, 16, 24):
        w.matmul(torch.randn(m, 64, dtype=torch.float16))
    assert w.plan_count() == 2 and len(standin.plans) == 2
    assert [p["matmul"]["B"]["rows"] for p in standin.plans.values()] == [16, 24]
    assert standin.destroyed == ["plan", "algorithm", "descriptor", "descriptor"]
    w.close()
    assert not standin.plans and not standin.algs and len(standin.descriptors) == 1  # the weight's own


def test_a_bias_off_a_16_byte_boundary_is_added_after_the_product(standin):
    dense = random_24(32, 64, device="cpu")
    x = torch.randn(8, 64, dtype=torch.float16)
    bias = torch.randn(33, dtype=torch.float16)[1:]  # 2 bytes past an aligned start
    y = lt.CusparseLtWeight(dense).matmul(x, bias)
    (plan,) = standin.plans.values()
    assert plan["matmul"]["bias"] == 0
    torch.testing.assert_close(y.float(), reference(x, dense, bias), rtol=1e-2, atol=1e-2)


def test_the_algorithm_count_comes_from_the_library(standin):
    assert lt.CusparseLtWeight(random_24(32, 64, device="cpu")).max_alg_id() == MAX_ALG_ID


def test_an_error_status_names_the_call_and_the_librarys_message(standin):
    w = lt.CusparseLtWeight(random_24(32, 64, device="cpu"))
    standin.fail["cusparseLtMatmulPlanInit"] = 3
    with pytest.raises(lt.CusparseLtError, match=r"cusparseLtMatmulPlanInit returned status 3 \(invalid value\)"):
        w.matmul(torch.randn(8, 64, dtype=torch.float16))
    assert w.plan_count() == 0  # nothing half-made is kept


def test_an_algorithm_the_library_does_not_have_is_refused_and_nothing_is_kept(standin):
    w = lt.CusparseLtWeight(random_24(32, 64, device="cpu"))
    assert list(w.algorithm_ids(8, limit=10)) == list(range(MAX_ALG_ID + 1))  # the bound tried as an id too
    with pytest.raises(lt.AlgorithmRefused, match="algorithm 3 refused: cusparseLtMatmulAlgSetAttribute"):
        w.matmul(torch.randn(8, 64, dtype=torch.float16), config=lt.CusparseLtConfig(alg_id=MAX_ALG_ID))
    assert w.plan_count() == 1  # the default algorithm's plan, made to read the bound
    assert len(standin.algs) == 1 and len(standin.descriptors) == 1 + 2  # the weight's, and that plan's two


def test_a_failed_set_up_destroys_what_it_made(standin):
    w = lt.CusparseLtWeight(random_24(32, 64, device="cpu"))
    standin.fail["cusparseLtMatmulGetWorkspace"] = 3
    with pytest.raises(lt.CusparseLtError, match="cusparseLtMatmulGetWorkspace"):
        w.matmul(torch.randn(8, 64, dtype=torch.float16))
    assert not standin.plans and not standin.algs and len(standin.descriptors) == 1
    assert standin.destroyed == ["plan", "algorithm", "descriptor", "descriptor"]


@pytest.mark.parametrize(
    "dense, match",
    [
        (torch.zeros(32, 64, dtype=torch.float32), "dtype torch.float32 is not supported"),
        (torch.zeros(24, 64, dtype=torch.float16), r"multiples of 16, got \(24, 64\)"),
        (torch.zeros(32, 40, dtype=torch.float16), r"multiples of 16, got \(32, 40\)"),
        (torch.zeros(2, 32, 64, dtype=torch.float16), r"must be \[N, K\]"),
    ],
)
def test_weights_the_library_cannot_take_are_rejected_before_any_call(standin, dense, match):
    with pytest.raises(ValueError, match=match):
        lt.CusparseLtWeight(dense)
    assert "cusparseLtStructuredDescriptorInit" not in standin.calls


def test_bad_inputs_are_rejected_by_name(standin):
    w = lt.CusparseLtWeight(random_24(32, 64, device="cpu"))
    with pytest.raises(ValueError, match=r"x must be \[M, 64\] torch.float16"):
        w.matmul(torch.randn(8, 32, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"x must be"):
        w.matmul(torch.randn(8, 64, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match=r"bias must be \[32\]"):
        w.matmul(torch.randn(8, 64, dtype=torch.float16), torch.randn(31, dtype=torch.float16))
    assert w.plan_count() == 0


def test_the_mapped_library_is_found_in_proc_maps():
    maps = (
        "7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/libc.so.6\n"
        "7f02-7f03 r-xp 00000000 08:01 2 /site/nvidia/cusparselt/lib/libcusparseLt.so.0\n"
        "7f04-7f05 rw-p 00000000 00:00 0\n"
    )
    assert lt.mapped_library(maps) == "/site/nvidia/cusparselt/lib/libcusparseLt.so.0"
    assert lt.mapped_library("7f04-7f05 rw-p 00000000 00:00 0 [heap]\n") is None


def test_switched_off_or_missing_the_dispatcher_runs_cublas(monkeypatch):
    monkeypatch.setenv("REPRO_CUSPARSELT", "0")
    assert not lt.available()
    assert not dispatch._cusparselt_usable(4096, 4096, torch.float16, torch.device("cpu"))


def test_a_table_entry_for_cusparselt_carries_its_algorithm():
    table = {"entries": [dict(N=64, K=64, M=128, method="cusparselt", config={"alg_id": 2})]}
    assert dispatch._table_choice(table, 64, 64, 100, torch.float16) == dispatch.Choice(
        "cusparselt", lt.CusparseLtConfig(alg_id=2)
    )


def test_the_dispatchers_route_keeps_one_compressed_copy_and_counts_it(standin):
    dense = random_24(32, 64, device="cpu")
    w = compress_24(dense)
    x = torch.randn(8, 64, dtype=torch.float16)
    choice = dispatch.Choice("cusparselt", lt.CusparseLtConfig())
    for _ in range(2):
        y = dispatch.run_choice(choice, x, w, None)
    torch.testing.assert_close(y.float(), reference(x, dense), rtol=1e-2, atol=1e-2)
    assert standin.calls["cusparseLtSpMMACompress2"] == 1
    assert w.cache_nbytes == 32 * 64 * 2 * 9 // 16


def _installed_header() -> str | None:
    paths = [os.environ.get("REPRO_CUSPARSELT_HEADER", "")]
    for root in sys.path:
        paths += sorted(glob.glob(os.path.join(root, "nvidia", "*", "include", "cusparseLt.h")))
    return next((p for p in paths if p and os.path.exists(p)), None)


@pytest.mark.skipif(_installed_header() is None, reason="no cusparseLt.h installed (torch's CUDA wheels bring one)")
def test_declared_signatures_and_values_match_the_installed_header():
    text = re.sub(r"//[^\n]*", "", open(_installed_header()).read())
    declared = dict(re.findall(r"cusparseStatus_t\s+CUSPARSELT_API\s+(\w+)\s*\(([^)]*)\)", text))
    scalars = {"int64_t": ctypes.c_int64, "uint32_t": ctypes.c_uint32, "int32_t": ctypes.c_int32, "size_t": None}
    for name, argtypes in lt._SIGNATURES.items():
        params = [p.strip() for p in declared[name].split(",")]
        assert len(params) == len(argtypes), name
        for param, argtype in zip(params, argtypes):
            kind = " ".join(param.replace("const ", "").split()[:-1])
            if "*" in param or kind == "cudaStream_t":
                assert argtype is ctypes.c_void_p or hasattr(argtype, "_type_") and argtype._type_ != "i", param
            elif kind in scalars:
                assert argtype is scalars[kind] or kind == "size_t" and argtype is ctypes.c_size_t, param
            else:  # an enum
                assert argtype is ctypes.c_int, param

    def value(enum, member):
        body = re.search(r"typedef enum \{([^}]*)\}\s*" + enum, text).group(1)
        names = [item.split("=")[0].strip() for item in body.split(",") if item.strip()]
        assert "=" not in body.split(member)[0].rsplit(",", 1)[-1]
        return names.index(member)

    assert value("cusparseComputeType", "CUSPARSE_COMPUTE_32F") == lt.COMPUTE_32F
    assert value("cusparseLtMatmulDescAttribute_t", "CUSPARSELT_MATMUL_BIAS_POINTER") == lt.MATMUL_BIAS_POINTER
    assert value("cusparseLtMatmulAlgAttribute_t", "CUSPARSELT_MATMUL_ALG_CONFIG_ID") == lt.ALG_CONFIG_ID
    assert value("cusparseLtMatmulAlgAttribute_t", "CUSPARSELT_MATMUL_ALG_CONFIG_MAX_ID") == lt.ALG_CONFIG_MAX_ID
    assert re.search(r"uint8_t\s+data\[(\d+)\]", text) and all(
        int(size) <= lt.OPAQUE_BYTES for size in re.findall(r"uint8_t\s+data\[(\d+)\]", text)
    )


# ----------------------------------------------------------------------------- on a GPU

gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


@gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n, k, m", [(256, 512, 1), (256, 512, 13), (512, 256, 128), (4096, 4096, 2048)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_gpu_route_matches_the_dense_product(dtype, n, k, m, with_bias):
    dense = random_24(n, k, dtype, "cuda", seed=n + m)
    x = torch.randn(m, k, dtype=dtype, device="cuda")
    bias = torch.randn(n, dtype=dtype, device="cuda") if with_bias else None
    w = lt.CusparseLtWeight(dense)
    ref = reference(x, dense, bias)
    for alg_id in w.algorithm_ids(m, limit=3):
        try:
            y = w.matmul(x, bias, lt.CusparseLtConfig(alg_id))
        except lt.AlgorithmRefused:
            continue
        assert y.shape == (m, n) and y.is_contiguous()
        err = ((y.float() - ref).norm() / ref.norm()).item()
        assert err < 2e-2, (alg_id, err)


@gpu
def test_gpu_every_case_the_benchmark_times_runs_correctly():
    """Each (shape, M, algorithm) the benchmark will time, run once here first: a fault in the
    benchmark's own process would lose the whole run, a fault here only this route."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from sp24.common import MS, SHAPES
    from sp24.sweep import CUSPARSELT_ALGORITHMS

    for n, k in SHAPES:
        dense = random_24(n, k, device="cuda", seed=n + k) * 0.02
        w = lt.CusparseLtWeight(dense)
        for m in MS:
            x = torch.randn(m, k, dtype=torch.float16, device="cuda")
            ref = reference(x, dense)
            for alg_id in w.algorithm_ids(m, CUSPARSELT_ALGORITHMS):
                try:
                    y = w.matmul(x, None, lt.CusparseLtConfig(alg_id))
                except lt.AlgorithmRefused:
                    continue
                err = ((y.float() - ref).norm() / ref.norm()).item()
                assert err < 2e-2, (n, k, m, alg_id, err)
        w.close()
        del w, dense


@gpu
def test_gpu_route_replays_in_a_cuda_graph():
    dense = random_24(512, 1024, device="cuda")
    w = lt.CusparseLtWeight(dense)
    x = torch.randn(64, 1024, dtype=torch.float16, device="cuda")
    w.matmul(x)  # plan made outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = w.matmul(x)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    ref = reference(x, dense)
    assert ((y.float() - ref).norm() / ref.norm()).item() < 2e-2


@gpu
def test_gpu_dispatcher_route_through_sparse24_matmul(monkeypatch):
    dense = random_24(256, 512, device="cuda")
    w = compress_24(dense)
    table = {"entries": [dict(N=256, K=512, M=64, method="cusparselt", config={"alg_id": 0})]}
    dispatch.use_table(table)
    try:
        x = torch.randn(2, 32, 512, dtype=torch.float16, device="cuda")
        assert dispatch.choose(w, 64).method == "cusparselt"
        y = dispatch.sparse24_matmul(x, w)
        ref = reference(x, dense)
        assert y.shape == (2, 32, 256) and ((y.float() - ref).norm() / ref.norm()).item() < 2e-2
    finally:
        dispatch.use_table(None)
