"""The whole GPU benchmark (``bench/sparse24.py``'s ``run``), run on the CPU before a GPU session.

A device session lasts 15 minutes, and the benchmark's paths for the sparse-tensor-core kernel
have never run on a GPU: the fragment-order weight copies, that kernel's sweep and precompile,
its dispatch-table entries, the dispatcher routing to it, the fragment-layout model end to end,
the report and the ingest of the run. A Python error in any of them would cost a session's
measurements. Here every line of them runs, on one small layer: the Triton kernels in Triton's
interpreter, the Gluon kernels (``spmma``, ``wgmma``) as their compiled PTX in ``ptx_emulator``.

Only the timer is a stand-in. It runs each timed call once and charges a fixed cost per kernel
that ran (``COST_US``), so the decisions the benchmark makes from its times (the dispatch table,
the report) are known in advance and can be asserted. The outputs are real: the benchmark checks
every configuration against its fp32 reference before timing it, as on the GPU.
"""

import json
import sys
from pathlib import Path

import pytest
import torch
from cusparselt_standin import MAX_ALG_ID, StandIn
from ptx_launch import EmulatedKernel
from sp24_helpers import mma_sp_warps

from repro.kernels import cusparselt, dispatch, gluon_sp24, gluon_wgmma, triton_sp24
from repro.kernels.fragments import SpmmaConfig, WgmmaConfig

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import ingest_sparse24  # noqa: E402
import sparse24  # noqa: E402
from sp24.common import KERNELS  # noqa: E402
from sp24.sweep import case_configs  # noqa: E402

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="the CPU stand-in for bench/sparse24.py; on a GPU, run the benchmark"
)

N, K = 64, 256  # multiples of 16 like the LLaMA shapes, so the kernels get the same specializations
MS = [1, 128]  # fma and spmma's one-token-tile sweep at 1; spmma's eight token tiles and wgmma at 128
COST_US = {"spmma": 8.0, "fma": 12.0, "mma": 20.0, "expand": 24.0, "wgmma": 10.0}  # per launch, for M <= 16
# above M = 16 every kernel but wgmma is charged 2.5x, which hands M = 128 to wgmma (10 us < cuBLAS's 16)
LARGE_M_FACTOR = {"wgmma": 1.0}
CUBLAS_US = 16.0  # a call that launched none of our kernels
CUSPARSELT_US = 14.0  # a call into the stand-in cuSPARSELt (between wgmma and cuBLAS: timed, never chosen)
E2E_DIMS = dict(hidden=64, inter=128, heads=2)
KSCAN = (N, (1,), (128, 256))  # the fixed-cost sweep: width, Ms, Ks
INFO = dict(
    gpu="CPU dry run",
    arch="sm90",
    sms=132,
    l2_mb=50.0,
    torch=torch.__version__,
    cuda=None,
    triton="interpreter",
    cusparselt="unavailable: CPU",
    copy_gbps=4000.0,
)


class ChargingTimer:
    """Runs each timed call once on the CPU and charges it ``COST_US`` for the kernels it launched."""

    device = "cpu"

    def __init__(self, library: StandIn):
        self.launched: list[tuple[str, int]] = []  # (kernel, M) of every real (not warm-up) launch
        self.library = library  # the stand-in cuSPARSELt, whose products it counts

    def spy(self, launch):
        def spied(kernel, x2d, *args, **kwargs):
            if not kwargs.get("warmup"):
                self.launched.append((kernel, x2d.shape[0]))
            return launch(kernel, x2d, *args, **kwargs)

        return spied

    def charge(self, fn) -> float:
        start, products = len(self.launched), self.library.calls.get("cusparseLtMatmul", 0)
        fn()
        ran = self.launched[start:]
        if self.library.calls.get("cusparseLtMatmul", 0) > products:
            return CUSPARSELT_US
        return sum(_cost(k, m) for k, m in ran) if ran else CUBLAS_US

    def median_us(self, fn, reps=30):
        return self.charge(fn)

    def paired_us(self, fns, reps=30):
        return [self.charge(fn) for fn in fns]

    def streamed_us(self, fns, rounds=4):
        return sum(self.charge(fn) for fn in fns) / len(fns)

    def host_us(self, fn, calls=30):
        fn()
        return 5.0

    def best_host_us(self, fn):
        return self.host_us(fn)

    def wall_us(self, fn, reps=30):
        return self.charge(fn)

    def graph_us(self, fn):
        return self.charge(fn)


def _cost(kernel: str, m: int) -> float:
    return COST_US[kernel] * (1 if m <= 16 else LARGE_M_FACTOR.get(kernel, 2.5))


@pytest.fixture(scope="module")
def gluon_kernels():
    """The Gluon kernels as their emulated PTX (they record what they compiled and launched)."""
    return dict(spmma=EmulatedKernel(gluon_sp24._spmma_kernel, mma=mma_sp_warps),
                wgmma=EmulatedKernel(gluon_wgmma._wgmma_kernel, mma=mma_sp_warps),
                wgmma_shared_x=EmulatedKernel(gluon_wgmma._wgmma_shared_x_kernel, mma=mma_sp_warps))


def _keeps(kernel: str, m: int, label: str) -> bool:
    """The run's short list (``sp24/shortlist.py``): all but the five-stage ``fma`` tilings."""
    return not (kernel == "fma" and "s5/" in label)


@pytest.fixture(scope="module")
def run(tmp_path_factory, gluon_kernels):
    """One dry run of the benchmark: (output folder, records, log lines, Markdown report)."""
    out = tmp_path_factory.mktemp("bench-out")
    library = StandIn(stream=0x5EED)
    timer, lines = ChargingTimer(library), []
    with pytest.MonkeyPatch.context() as mp:
        # cuSPARSELt: the CPU stand-in (cusparselt_standin.py), as tests/kernels/test_cusparselt.py runs it
        mp.setattr(cusparselt, "_device_index", lambda device: 0)
        mp.setattr(cusparselt, "_stream", lambda device: 0x5EED)
        mp.setattr(cusparselt, "_check_device", lambda t, what: None)
        mp.setattr(cusparselt, "available", lambda device=None: True)
        cusparselt.use_library(cusparselt.Library(library))
        mp.setattr(gluon_sp24, "_spmma_kernel", gluon_kernels["spmma"])
        mp.setattr(gluon_wgmma, "_wgmma_kernel", gluon_kernels["wgmma"])
        mp.setattr(gluon_wgmma, "_wgmma_shared_x_kernel", gluon_kernels["wgmma_shared_x"])
        spied = timer.spy(triton_sp24.launch)
        mp.setattr(triton_sp24, "launch", spied)
        mp.setattr(dispatch, "arch_name", lambda device: INFO["arch"])  # the dispatcher asks the GPU
        mp.setattr(dispatch, "gpu_name", lambda device: INFO["gpu"])
        mp.setattr(dispatch, "_sm_count", lambda device: INFO["sms"])
        try:
            report = sparse24.run(
                out, dict(INFO), timer, [(N, K)], MS, lines.append, e2e_layers=1, e2e_dims=E2E_DIMS, kscan=KSCAN,
                keeps=_keeps,
            )
        finally:
            dispatch.use_table(None)  # the run installed its own table for this process
            cusparselt.use_library(None)
    (out / "sparse24.log").write_text("\n".join(lines) + "\n")
    return out, json.loads((out / "sparse24.json").read_text()), lines, report


@pytest.mark.parametrize("name", ["spmma", "wgmma", "wgmma_shared_x"])
def test_precompile_compiles_every_gluon_configuration_the_run_launches(run, gluon_kernels, name):
    """On the GPU the precompile runs the compiles in 16 threads; a configuration it misses is
    compiled in the middle of the sweep, one at a time, on the device's clock (split-K counts
    are compile-time constants of the Gluon kernels, and which integer arguments are multiples
    of 16 is part of what a compile is keyed on)."""
    kernel = gluon_kernels[name]
    declared = {p.name for p in kernel.fn.params if p.is_constexpr}  # not the ints Triton specializes

    def tiling(call):
        constexprs = tuple(sorted((k, v) for k, v in call["constexprs"].items() if k in declared))
        return call["num_warps"], constexprs, tuple(call["divisible"])

    precompiled = {tiling(call) for call in kernel.warmups}
    # not the host probe's 1024-row layer: here its counts are multiples of 16 and the run's layer's
    # are not, on the GPU it is of 4096x4096's kind, which the precompile covers
    launched = {tiling(call) for call in kernel.launches if call["grid"] != (1024 // 16, 1, 1)}
    split_k = {dict(key)["SPLIT_K"] for _, key, _ in launched}
    assert launched and split_k > {1}  # the sweep at M = 1 and 128 launches split-K configurations
    assert launched <= precompiled, sorted(launched - precompiled)[:3]


def test_precompile_compiles_each_shapes_own_specialization(monkeypatch):
    """K = 4096 and K = 11008 give k-block counts of different kinds (128, a multiple of 16, and 344),
    so a Gluon kernel compiles once per kind: the precompile covers every shape of the run, not
    only the first (which left 4096x11008's compiles to the sweep, one at a time on the device).
    Here K = 256 and 512 (8 and 16 k-blocks) do the same."""
    from sp24 import sweep

    spmma = EmulatedKernel(gluon_sp24._spmma_kernel, mma=mma_sp_warps)
    monkeypatch.setattr(gluon_sp24, "_spmma_kernel", spmma)
    cfg = SpmmaConfig.from_label("r1s2u2t1p")
    monkeypatch.setattr(sweep, "kernel_configs", lambda kernel, m: [cfg] if kernel == "spmma" else [])
    shapes = [(N, K), (N, 2 * K)]
    sweep.precompile(shapes, [1], "cpu", log=lambda msg: None)
    for n, k in shapes:
        x, w = torch.randn(1, k, dtype=torch.float16), _pruned(n, k)
        triton_sp24.launch("spmma", x, w, None, torch.empty(1, n, dtype=torch.float16), cfg)
    compiled = [(c["num_warps"], tuple(c["divisible"])) for c in spmma.warmups]
    launched = [(c["num_warps"], tuple(c["divisible"])) for c in spmma.launches]
    assert len(set(launched)) == 2 and set(launched) <= set(compiled)
    assert {"M"} & {name for _, names in compiled for name in names} == set()  # M never specialized
    jobs = sweep.precompile_jobs(shapes, [1, 4, 16])
    assert {(n, k) for _, _, (n, k) in jobs} == set(shapes)


def test_precompile_only_compiles_what_the_run_would_launch_and_writes_nothing(monkeypatch, tmp_path):
    """``--precompile-only`` (run by gpu_check.sh beside the GPU tests): the same compiles as the run's
    own precompile for the same arguments, on a GPU with no committed runs the whole sweep, and no
    file in --out (the benchmark writes its log and records there afterwards)."""
    from sp24 import sweep

    spmma = EmulatedKernel(gluon_sp24._spmma_kernel, mma=mma_sp_warps)
    monkeypatch.setattr(gluon_sp24, "_spmma_kernel", spmma)
    cfg = SpmmaConfig.from_label("r1s2u2t1p")
    monkeypatch.setattr(sweep, "kernel_configs", lambda kernel, m: [cfg] if kernel == "spmma" else [])
    monkeypatch.setattr(sparse24, "SHAPES", [(N, K), (N, 2 * K)])
    args = sparse24.parse_args(["--precompile-only", "--out", str(tmp_path / "out"), "--ms", "1"])
    lines = []
    sparse24.precompile_only(args, {"gpu": "NVIDIA Stand-in GPU"}, "cpu", lines.append)
    assert lines[0] == "sweep: whole" and lines[1].startswith("precompiled 2 variants")
    assert sorted(c["divisible"] for c in spmma.warmups) == sorted(
        c["divisible"] for c in _warmups_of_the_runs_precompile(monkeypatch, cfg))
    assert not (tmp_path / "out").exists()


def _warmups_of_the_runs_precompile(monkeypatch, cfg):
    from sp24 import sweep

    spmma = EmulatedKernel(gluon_sp24._spmma_kernel.fn, mma=mma_sp_warps)
    monkeypatch.setattr(gluon_sp24, "_spmma_kernel", spmma)
    sweep.precompile([(N, K), (N, 2 * K)], [1], "cpu", log=lambda msg: None)
    return spmma.warmups


def _pruned(n, k):
    from repro.kernels import compress_24
    from repro.pruning import nm_mask

    dense = torch.randn(n, k, dtype=torch.float16)
    return compress_24(dense * nm_mask(dense.abs(), 2, 4))


def test_the_run_says_when_each_part_ended(run):
    """The log and the run's info give the time at which each part ended, in order (the next device
    call's budget is sized from them)."""
    _, recs, lines, _ = run
    phases = recs[0]["info"]["phase_seconds"]
    assert list(phases) == ["precompile", f"sweep {N}x{K}", "dispatcher", "K sweep", "end to end"]
    assert list(phases.values()) == sorted(phases.values())
    assert f"sweep {N}x{K}: done at {phases[f'sweep {N}x{K}']:.0f} s" in lines


def test_host_overhead_takes_the_spmma_launch_apart(run, gluon_kernels):
    """Triton's launch alone, through ``fast_launch``, with our ``launch()`` around it, the
    chosen method's route without a bound launch, and the whole route with ``fast_launch`` on
    and off: the first four run the kernel on the probe's 1024-row layer (on the CPU the whole
    route takes the reference path)."""
    _, recs, _, _ = run
    names = ("spmma kernel[grid] alone, M=1", "spmma kernel via fast_launch alone, M=1", "launch() spmma kernel, M=1",
             "run_choice -> spmma (fragment order, no bound launch), M=1",
             "sparse24_matmul -> spmma (fragment order), M=1",
             "sparse24_matmul -> spmma (fragment order), x as [1, 1, K]",
             "sparse24_matmul -> spmma (fragment order), M=1, fast_launch off")
    assert set(names) <= set(recs[0]["info"]["host_us_per_call"])
    probe = [call for call in gluon_kernels["spmma"].launches if call["grid"] == (1024 // 16, 1, 1)]
    assert len(probe) >= 4


def _rec(recs, m, method):
    return next(r for r in recs if r.get("M") == m and r["method"] == method and r.get("N") == N)


def test_every_configuration_of_every_kernel_is_checked_correct_and_timed(run):
    _, recs, lines, _ = run
    assert not [line for line in lines if line.startswith(("WRONG", "FAILED"))]
    assert not [line for line in lines if "precompile unavailable" in line]  # compiled ahead, in threads
    for m in MS:
        for kernel in KERNELS:
            configs, kept = case_configs(kernel, N, m, K), case_configs(kernel, N, m, K, _keeps)
            if not kept:
                continue
            rec = _rec(recs, m, f"repro_{kernel}")
            assert rec["status"] == "ok" and rec["rel_err"] < 2e-2
            assert rec["note"] == f"best of {len(kept)} timed, 0 wrong"  # the short list only
            assert sorted(label for label, _ in rec["sweep"]) == sorted(c.label() for c in kept)
            if kernel == "fma" and m == 1:
                assert len(kept) < len(configs)
            cost = _cost(kernel, m)
            assert rec["us"] == cost and rec["us_streamed"] == cost
            assert rec["speedup_vs_cublas"] == pytest.approx(CUBLAS_US / cost)


def test_cusparselt_is_checked_and_timed_for_each_of_its_algorithms(run):
    """The direct cuSPARSELt route: every algorithm id the library offers (up to the benchmark's
    limit) checked against the reference and timed, the fastest recorded with its id."""
    _, recs, _, _ = run
    for m in MS:
        rec = _rec(recs, m, "cusparselt")
        assert rec["status"] == "ok" and rec["rel_err"] < 2e-2 and rec["us"] == CUSPARSELT_US
        assert sorted(label for label, _ in rec["sweep"]) == [f"alg{i}" for i in range(MAX_ALG_ID)]
        # the stand-in reads the library's bound as a count: the id equal to it is refused, not wrong
        assert rec["note"] == f"best of {MAX_ALG_ID} algorithms timed, 0 wrong, 1 refused"
        assert rec["config"] == {"alg_id": 0} and rec["weight_bytes"] == N * K * 2 * 9 // 16


def test_the_table_takes_the_cheapest_kernel_and_resolves_to_its_configuration(run):
    out, recs, _, _ = run
    table = json.loads((out / "dispatch_sm90.json").read_text())
    chosen = {e["M"]: e["method"] for e in table["entries"]}
    assert chosen == {1: "spmma", 128: "wgmma"}
    choice = dispatch._table_choice(table, N, K, 1, torch.float16)
    assert choice == dispatch.Choice("spmma", SpmmaConfig(**_rec(recs, 1, "repro_spmma")["config"]))
    choice = dispatch._table_choice(table, N, K, 128, torch.float16, layout="fragments")
    assert choice == dispatch.Choice("wgmma", WgmmaConfig(**_rec(recs, 128, "repro_wgmma")["config"]))


def test_the_dispatcher_runs_the_tables_choice(run):
    """On the CPU ``sparse24_matmul`` takes the torch reference path, so the table's choice is seen
    in the same choice called directly (``us_direct``), which the benchmark times right after."""
    _, recs, _, _ = run
    spmma, wgmma = _rec(recs, 1, "repro_dispatch"), _rec(recs, 128, "repro_dispatch")
    assert spmma["status"] == "ok" and spmma["cfg"].startswith("spmma ")
    assert spmma["us_direct"] == COST_US["spmma"]  # the direct call really launched spmma, once
    assert wgmma["status"] == "ok" and wgmma["cfg"].startswith("wgmma ")
    assert wgmma["us_direct"] == COST_US["wgmma"]
    # cuBLAS timed again beside it (the stand-in charges a call that launched none of ours as cuBLAS):
    # the targets divide that pair
    assert spmma["cublas_us_paired"] == CUBLAS_US and spmma["speedup_vs_cublas"] == CUBLAS_US / spmma["us"]


def test_end_to_end_runs_both_sparse_layouts_and_matches_dense(run):
    _, recs, _, _ = run
    e2e = [r for r in recs if r["method"].startswith("e2e_")]
    assert {(r["M"], r["method"]) for r in e2e} == {
        (b, f"e2e_{name}") for b in (1, 8) for name in ("dense", "sparse24", "sparse24_fragments")
    }
    dense_bytes = next(r["weight_bytes"] for r in e2e if r["method"] == "e2e_dense")
    for r in e2e:
        assert r["rel_err"] < 1e-2
        if r["method"] != "e2e_dense":
            assert r["weight_bytes"] / dense_bytes == pytest.approx(0.5625)
            assert r["swapped_linears"] == 7 and r["hidden"] == E2E_DIMS["hidden"]
            assert r["full_way_per_step"] == 0  # on the CPU every product takes the reference path


def test_the_k_sweep_times_the_floor_cublas_and_the_tables_kernel_and_fits_their_lines(run):
    """The stand-in timer charges a fixed cost per call, so each fitted line is that cost as its
    intercept and no growth with K (no rate). The read-only floor reads both byte counts."""
    from sp24.kscan import fit_line

    _, recs, _, _ = run
    scans = [r for r in recs if r["method"].startswith("kscan_")]
    expected = {(f"kscan_{m}", 1, k) for m in ("cublas", "spmma") for k in KSCAN[2]}
    expected |= {("kscan_read", 0, k) for k in KSCAN[2]}
    assert {(r["method"], r["M"], r["K"]) for r in scans} == expected
    assert all(r["status"] == "ok" and r["rel_err"] < 2e-2 for r in scans)
    reads = [r for r in scans if r["method"] == "kscan_read"]
    assert sorted(r["weight_bytes"] for r in reads) == sorted(
        b for k in KSCAN[2] for b in (2 * N * k * 9 // 16, 2 * N * k)
    )
    spmma = fit_line(recs, "kscan_spmma", 1)
    assert spmma["intercept_us"] == pytest.approx(COST_US["spmma"]) and spmma["gbps"] is None
    assert fit_line(recs, "kscan_cublas", 1)["intercept_us"] == pytest.approx(CUBLAS_US)
    assert fit_line(recs, "kscan_read", 0)["points"] == 2 * len(KSCAN[2])


def test_report_has_a_column_per_kernel_and_the_run_ingests(run, tmp_path):
    out, recs, _, report = run
    header = next(line for line in report.splitlines() if line.startswith("| N×K | M |"))
    assert all(f"repro_{kernel}" in header for kernel in KERNELS)
    assert f"| {N}×{K} | 1 |" in report and f"| {N}×{K} | 128 |" in report
    (out / "spmma-probe.txt").write_text("use: pairs\n")
    (out / "ablation.json").write_text("[]\n")  # gpu_check.sh's ablation, when the budget left time for it
    stem = ingest_sparse24.ingest(out, "2027-01-02", False, results=tmp_path / "results", kernels=tmp_path)
    assert stem == "cpu-dry-run-2027-01-02"
    assert (tmp_path / "results" / f"{stem}-wgmma-ablation.json").read_text() == "[]\n"
    installed = tmp_path / "dispatch_sm90_cpu-dry-run.json"  # one table per GPU (dispatch.table_path)
    assert json.loads(installed.read_text())["entries"][0]["method"] == "spmma"
    written = ingest_sparse24.regenerate(tmp_path / "results" / f"{stem}.json")
    assert {p.name for p in written} == {f"{stem}-speedup.png", f"{stem}-e2e.png", f"{stem}-summary.md"}
    summary = (tmp_path / "results" / f"{stem}-summary.md").read_text()
    label = SpmmaConfig(**_rec(recs, 1, "repro_spmma")["config"]).label()
    wgmma = WgmmaConfig(**_rec(recs, 128, "repro_wgmma")["config"]).label()
    assert f"| 1 | `spmma {label}` |" in summary and f"| 128 | `wgmma {wgmma}` |" in summary  # what the dispatcher ran
    assert f"| spmma `{label}` | 1 | 8.0 µs | – (no growth with K) |" in summary  # the fixed-cost sweep
    assert "| read only (the floor) | – | 16.0 µs |" in summary
