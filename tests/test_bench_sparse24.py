"""The CPU-checkable parts of the 2:4 GEMM benchmark (bench/sp24): the dispatcher-table rule, the
report, the sweep's configurations and the end-to-end model. The timings themselves need a GPU."""

import shutil
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from sp24.common import KERNELS, MS, SHAPES, record  # noqa: E402
from sp24.dispatcher import build_table  # noqa: E402
from sp24.e2e import DecoderLayer  # noqa: E402
from sp24.options import option_pairs  # noqa: E402
from sp24.report import markdown, roofline_limit  # noqa: E402
from sp24.sweep import fastest_correct, kernel_configs, with_splits  # noqa: E402

from repro.kernels import SparseLinear, dispatch  # noqa: E402
from repro.kernels.fragments import SpmmaConfig  # noqa: E402
from repro.kernels.triton_sp24 import KernelConfig, _check_config  # noqa: E402
from repro.pruning import nm_mask, to_sparse24  # noqa: E402

INFO = dict(gpu="NVIDIA H200", arch="sm90", sms=132, torch="t", cuda="c", triton="tr", cusparselt=800, copy_gbps=4200.0)
FMA = KernelConfig(BM=1, BN=4, BP=64, num_warps=1, num_stages=4)


def _rec(m, method, us, host=5.0, config=None, n=4096, k=4096):
    rec = record(INFO, n, k, m, method, "ok", us, 1e-3, 2 * n * k, host=host)
    rec["config"] = config.as_dict() if config else None
    return rec


def _run(rows_by_m):
    """Records of one shape: {m: [(method, us, host, config), ...]} with cuBLAS's speedup filled in."""
    recs = []
    for m, rows in rows_by_m.items():
        shape = [_rec(m, method, us, host, config) for method, us, host, config in rows]
        cublas_us = next(r["us"] for r in shape if r["method"] == "cublas")
        for r in shape:
            r["speedup_vs_cublas"] = cublas_us / r["us"]
        recs += shape
    return recs


def test_table_keeps_cublas_unless_another_method_is_3_percent_faster():
    recs = _run(
        {
            1: [("cublas", 16.0, 5, None), ("repro_fma", 10.0, 20, FMA)],  # 1.6x: taken (launch-bound is fine)
            4: [("cublas", 15.0, 5, None), ("repro_fma", 14.8, 20, FMA)],  # 1.3% faster: not enough
            2048: [("cublas", 250.0, 5, None), ("torch_semi_structured", 200.0, 430, None)],  # host-bound
            4096: [("cublas", 500.0, 5, None), ("torch_semi_structured", 400.0, 300, None)],  # not host-bound
        }
    )
    methods = {e["M"]: e["method"] for e in build_table(INFO, recs)["entries"]}
    assert methods == {1: "fma", 4: "cublas", 2048: "cublas", 4096: "torch_semi_structured"}


def test_table_round_trips_through_the_dispatcher_lookup():
    recs = _run({1: [("cublas", 16.0, 5, None), ("repro_fma", 10.0, 20, FMA)], 8: [("cublas", 16.0, 5, None)]})
    table = build_table(INFO, recs)
    assert dispatch._table_choice(table, 4096, 4096, 1, torch.float16) == dispatch.Choice("fma", FMA)
    assert dispatch._table_choice(table, 4096, 4096, 5, torch.float16) == dispatch.Choice("cublas", None)


def test_table_names_the_best_fragment_order_method_where_its_choice_cannot_read_fragments():
    spmma = SpmmaConfig(R=1, S=4, U=8, T=1, prefetch=True, wide_x=True)
    recs = _run(
        {
            1: [("cublas", 16.0, 5, None), ("repro_fma", 10.0, 20, FMA), ("repro_spmma", 12.0, 20, spmma)],
            8: [("cublas", 16.0, 5, None), ("repro_fma", 15.9, 20, FMA)],  # fma not 3% faster: cuBLAS
        }
    )
    entries = {e["M"]: e for e in build_table(INFO, recs)["entries"]}
    assert entries[1]["method"] == "fma" and entries[1]["fragments"]["method"] == "spmma"
    assert "fragments" not in entries[8]  # cuBLAS reads any layout
    choice = dispatch._table_choice(build_table(INFO, recs), 4096, 4096, 1, torch.float16, "fragments")
    assert choice == dispatch.Choice("spmma", spmma)


def test_option_pairs_match_labels_that_differ_by_the_option_alone():
    sweep = [["r1s4u8t1", 12.0], ["r1s4u8t1x", 10.0], ["r1s4u8t1p", 11.0], ["r1s4u8t1px", 8.0], ["r1w2s4u2t2px", 9.0]]
    wide = [("r1s4u8t1", "r1s4u8t1x", 1.2), ("r1s4u8t1p", "r1s4u8t1px", 11 / 8)]
    prefetch = [("r1s4u8t1", "r1s4u8t1p", 12 / 11), ("r1s4u8t1x", "r1s4u8t1px", 1.25)]
    assert sorted(option_pairs(sweep, "wide_x")) == wide  # r1w2s4u2t2px has no partner
    assert sorted(option_pairs(sweep, "prefetch")) == prefetch
    staged = [["r1s2u4t1px", 10.0], ["r1s2u4t1xc4", 8.0], ["r1s2u4t1xc4k2", 7.0], ["r1s2u4t1pxk2", 14.0]]
    assert sorted(option_pairs(staged, "stages")) == [("r1s2u4t1px", "r1s2u4t1xc4", 1.25),
                                                      ("r1s2u4t1pxk2", "r1s2u4t1xc4k2", 2.0)]
    assert option_pairs(staged, "split_k") == [("r1s2u4t1xc4", "r1s2u4t1xc4k2", 8 / 7),
                                               ("r1s2u4t1px", "r1s2u4t1pxk2", 10 / 14)]
    chained = [["r1s2u4t1px", 10.0], ["r1s2u4t1pxh", 8.0], ["r1w2s2u4t2pxh", 9.0]]  # the last: no twin
    assert option_pairs(chained, "chain") == [("r1s2u4t1px", "r1s2u4t1pxh", 1.25)]
    wgmma = [["g1t64u2", 20.0], ["g1t64u2a2", 16.0], ["g1t64u2a2k4", 10.0], ["g2t64u4a2k4", 9.0]]
    assert option_pairs(wgmma, "ahead", "wgmma") == [("g1t64u2", "g1t64u2a2", 1.25)]
    assert option_pairs(wgmma, "split_k", "wgmma") == [("g1t64u2a2", "g1t64u2a2k4", 1.6)]
    ring = [["g1t64u2", 16.0], ["g1t64u2c4", 12.8], ["g1t64u2c4x16", 10.0], ["g1t64u2c5x16", 9.0]]
    assert option_pairs(ring, "stages", "wgmma") == [("g1t64u2", "g1t64u2c4", 1.25)]  # x16 has no twin without
    assert option_pairs(ring, "x_steps", "wgmma") == [("g1t64u2c4", "g1t64u2c4x16", 1.28)]
    sparse = [["g1t64u2c6", 30.0], ["g1t64u2c6s", 15.0], ["g1t64u2c6sk2", 12.0], ["g2t128u2c4sk2", 11.0]]
    assert option_pairs(sparse, "sparse", "wgmma") == [("g1t64u2c6", "g1t64u2c6s", 2.0)]  # the others: no twin


def test_spmma_labels_parse_back_to_their_configurations():
    configs = {cfg for m in MS for cfg in kernel_configs("spmma", m)}
    assert len(configs) > 30 and all(SpmmaConfig.from_label(cfg.label()) == cfg for cfg in configs)
    every_option = SpmmaConfig(S=4, U=2, W=2, wide_x=True, interleave=True, chain=True, l2_ahead=1, split_k=2)
    assert every_option.label() == "r1w2s4u2t1xiha1k2" and SpmmaConfig.from_label("r1w2s4u2t1xiha1k2") == every_option
    with pytest.raises(ValueError, match="not an spmma label"):
        SpmmaConfig.from_label("1x4x512/w1s4/sk1")


def test_fit_line_recovers_intercept_and_rate():
    from sp24.kscan import fit_line

    # 5 us of fixed cost, then 2,000 GB/s: 2e6 bytes per us
    recs = [_rec(4, "kscan_spmma", 5.0 + b / 2000e3) | {"weight_bytes": b} for b in (1e6, 4e6, 9e6)]
    fit = fit_line(recs, "kscan_spmma")
    assert fit["intercept_us"] == pytest.approx(5.0) and fit["gbps"] == pytest.approx(2000.0)
    assert fit["max_residual_us"] == pytest.approx(0.0, abs=1e-9) and fit["points"] == 3
    assert fit_line(recs[:1], "kscan_spmma") is None  # one point fits no line
    other_m = [r | {"M": 1, "us": r["us"] + 3.0} for r in recs]
    assert fit_line(recs + other_m, "kscan_spmma", 1)["intercept_us"] == pytest.approx(8.0)  # M apart


def test_the_spin_before_a_timed_call_outlasts_the_calls_host_side():
    """A timed call's events must bracket GPU work only: the spin before the start event lasts
    longer than the call takes to enqueue (cuSPARSELt plans on the host: ~600 us), never less
    than the 200 us our launches need, and never runs away after a call that compiled."""
    from sp24.timing import CYCLES_PER_US, MAX_SLEEP_CYCLES, SLEEP_CYCLES, sleep_cycles

    assert sleep_cycles(0) == sleep_cycles(20) == SLEEP_CYCLES
    assert sleep_cycles(600) / CYCLES_PER_US > 600 + 200
    assert sleep_cycles(600) < sleep_cycles(700)
    assert sleep_cycles(5e6) == MAX_SLEEP_CYCLES
    with pytest.raises(ValueError, match="host_us"):
        sleep_cycles(-1)


@pytest.fixture
def h100_runs(tmp_path):
    """The two whole H100 runs of session 19 and 20, as a results folder of their own (with a file
    beside them that is not a run), so that the short list's answers do not move with later runs."""
    for name in ("h100-2026-11-28.json", "h100-2026-11-28c.json", "h100-2026-11-28c-spmma-map.json"):
        shutil.copy(ROOT / "bench" / "results" / name, tmp_path / name)
    return tmp_path


def test_short_list_keeps_each_cases_fastest_and_whatever_this_gpu_never_timed(h100_runs, tmp_path_factory):
    """From the committed H100 runs: a case's winner stays, a tiling that lost by 2x in every run
    goes, one never timed on the H100 stays; a GPU with no committed run gets the whole sweep."""
    from sp24.shortlist import committed_runs, shortlist

    runs = committed_runs("h100", h100_runs)
    assert [p.name for p in runs] == ["h100-2026-11-28.json", "h100-2026-11-28c.json"]
    short = shortlist("h100", h100_runs)
    assert short.keeps("spmma", 1, "r1s4u8t1pxi")  # 4096x4096's winner at one token in run -c
    assert short.keeps("wgmma", 2048, "g2t128u2c4s")  # 11008x4096's winner at 2048 tokens
    assert not short.keeps("wgmma", 2048, "g2t128u2c4")  # the dense form: 2.0-2.3x the fastest there
    assert short.keeps("wgmma", 2048, "g2t256u2c4sm2")  # new since run -c
    assert shortlist("a100", h100_runs) is None and shortlist("h100", tmp_path_factory.mktemp("none")) is None
    with pytest.raises(ValueError, match="top must be at least 1"):
        shortlist("h100", h100_runs, top=0)


def test_the_benchmark_takes_the_gpus_short_list_unless_told_to_explore(h100_runs):
    """What ``bench/sparse24.py`` does with the GPU's name before it times anything (its main needs
    a GPU; this part does not): the short list of that GPU's runs, the whole sweep with
    ``--explore`` or for a GPU without runs, and the run's info says which."""
    from sparse24 import sweep_choice

    info = dict(gpu="NVIDIA H100 80GB HBM3")
    keeps = sweep_choice(info, results=h100_runs)
    assert keeps("spmma", 1, "r1s4u8t1pxi") and info["sweep"].startswith("short list (top 3 of h100-2026-11-28.json")
    assert sweep_choice(info, explore=True, results=h100_runs) is None and info["sweep"] == "whole"
    other = dict(gpu="NVIDIA A100-SXM4-80GB")
    assert sweep_choice(other, results=h100_runs) is None and other["sweep"] == "whole"


def test_short_list_narrows_the_sweep_and_its_compiles_and_keeps_twins_timed_together(h100_runs):
    """The default run times under half of the sweep on the H100, and a tiling new since the
    last run is timed beside the twin it was made from (the options tables pair them)."""
    from sp24.shortlist import shortlist, sweep_size
    from sp24.sweep import case_configs

    keeps = shortlist("h100", h100_runs).keeps
    (whole, whole_jobs), (short, short_jobs) = sweep_size(), sweep_size(keeps)
    assert short < 0.5 * whole and short_jobs < 0.6 * whole_jobs
    labels = {cfg.label() for cfg in case_configs("wgmma", 4096, 128, 4096, keeps)}
    assert {"g1t128u2c6sk2m2", "g1t128u2c6sk2"} <= labels
    # a twin that placed among the three fastest nowhere stays for its new tiling's sake
    assert not keeps("wgmma", 128, "g2t128u2c6sk2") and {"g2t128u2c6sk2m2", "g2t128u2c6sk2"} <= labels


def test_the_docs_give_the_short_lists_size_as_it_is():
    """README and the page quote how many timings a default run makes on each GPU; a new tiling or
    a new committed run changes that, and the docs with it."""
    from sp24.shortlist import shortlist, sweep_size

    whole = sweep_size()[0]
    h100, h200 = (sweep_size(shortlist(gpu).keeps)[0] for gpu in ("h100", "h200"))
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"{h100:,} of the sweep's {whole:,} timings on the H100 and {h200:,} on the H200" in readme
    page = " ".join((ROOT / "book" / "sparse24.md").read_text().split())
    assert f"On the H100 that is {h100:,} of the {whole:,} timings; on the H200 {h200:,}," in page


def test_the_profiled_layer_is_named_as_n_by_k_and_bad_shapes_say_what_is_allowed():
    import argparse

    from profile_sp24 import _shape

    assert _shape("11008x4096") == (11008, 4096) and _shape("4096X11008") == (4096, 11008)
    for bad, message in (("4096", "expected N x K"), ("100x4096", "multiple of 16"), ("4096x100", "K of 64")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            _shape(bad)


def test_paired_timing_interleaves_the_calls_and_gives_each_its_own_median(monkeypatch):
    """``Timer.paired_us`` on a stand-in clock (the events and the spin are CUDA's): after each
    call's warm-up, the calls alternate, each after a flush and a spin of its own, and each gets
    the median of its own event pairs."""
    from sp24 import timing

    clock, order, spins = [0.0], [], []

    class Event:
        def __init__(self, enable_timing=False):
            self.at = None

        def record(self):
            self.at = clock[0]

        def elapsed_time(self, end):  # milliseconds, as CUDA's
            return (end.at - self.at) / 1e3

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "_sleep", spins.append)
    timer = timing.Timer.__new__(timing.Timer)  # no flush buffer: nothing runs on a GPU here
    timer.flush = lambda: order.append("flush")

    def call(name, us):
        def fn():
            clock[0] += us
            order.append(name)
        return fn

    dispatcher, cublas = timer.paired_us([call("ours", 12.0), call("cublas", 18.0)], reps=5)
    assert (dispatcher, cublas) == (pytest.approx(12.0), pytest.approx(18.0))
    timed = [name for name in order[6:] if name != "flush"]  # after two warm-ups and a timed enqueue each
    assert timed == ["ours", "cublas"] * 5 and order[6:].count("flush") == 10
    assert len(spins) == 10 and min(spins) >= timing.SLEEP_CYCLES
    assert timer.median_us(call("alone", 7.0), reps=3) == pytest.approx(7.0)


def test_read_floor_kernel_reads_every_word_and_its_check_notices_a_missed_one():
    from sp24.readfloor import CONFIGS, check, read_call

    words = torch.randint(-(2**31), 2**31 - 1, (3 * 8192 + 77,), dtype=torch.int32)  # a partial block
    for config in CONFIGS:
        folded = read_call(words, config)()
        assert check(words, folded), config
        assert not check(words, folded[:-1])  # the last program's words left out
    assert not check(words[:-1], read_call(words, CONFIGS[0])())


def test_report_has_one_row_per_case_with_as_many_cells_as_the_header():
    recs = _run({m: [("cublas", 16.0, 5, None), ("repro_fma", 10.0, 20, FMA)] for m in (1, 16)})
    text = markdown(INFO, recs)
    speed_table = text.split("\n\n")[2].splitlines()
    header, rows = speed_table[0], speed_table[2:]
    assert len(rows) == 2
    assert all(row.count("|") == header.count("|") for row in rows)
    assert "| 4096×4096 | 1 | 16.0 |" in rows[0] and "1.60x*" in rows[0]  # fma: 1.6x and launch-bound


def test_roofline_limit_is_the_byte_ratio_at_decode_and_one_when_compute_bound():
    decode = roofline_limit(INFO, 4096, 4096, 1)
    assert decode == pytest.approx(2 / 1.125, rel=1e-3)  # activations are ~0.05% of the bytes
    assert roofline_limit(INFO, 4096, 4096, 65536) == pytest.approx(1.0)


@pytest.mark.parametrize("kernel", KERNELS)
def test_sweep_configurations_are_valid_and_splits_keep_two_steps(kernel):
    for m in MS:
        for base in kernel_configs(kernel, m):
            _check_config(base, kernel)
            if kernel == "fma":
                assert base.BM >= m  # one M-tile: the weights are read once
            if kernel == "spmma":  # split-K in the label only; a token block of M (up to 64), or
                # at most four token programs per row tile (the token splits, read again from L2)
                assert 8 * base.T >= min(m, 64) or (m <= 32 and 4 * 8 * base.T >= m)
                assert with_splits(base, 4096, m, 4096) == [base]
                continue
            if kernel == "wgmma":  # a token tile of at most M (8 at the least: the MMA's width; for
                # the sparse form 16, or 32 with two MMA tiles: T >= 8U and >= 8GW), every K split at
                # least two steps long
                least = 8 * base.G * base.W if base.sparse else 8
                assert base.T <= max(m, least, 16 if base.sparse else 8)
                assert 4096 // (32 * base.U) // base.split_k >= 2
                assert with_splits(base, 4096, m, 4096) == [base]
                continue
            for n, k in SHAPES:
                for cfg in with_splits(base, n, m, k):
                    steps = k // 8 // cfg.BP
                    tiles = -(-n // cfg.BN) * -(-m // cfg.BM)
                    assert cfg.split_k == 1 or (steps // cfg.split_k >= 2 and tiles * cfg.split_k <= 16 * 132)


def test_sparse_decoder_layer_gives_the_dense_output():
    torch.manual_seed(0)
    layer = DecoderLayer(hidden=256, inter=512, heads=4).eval()
    with torch.no_grad():
        for lin in [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]:
            lin.weight.mul_(nm_mask(lin.weight.abs(), 2, 4))
    sparse = DecoderLayer(hidden=256, inter=512, heads=4).eval()
    sparse.load_state_dict(layer.state_dict())
    assert to_sparse24(sparse) == 7
    assert all(isinstance(getattr(sparse, name), SparseLinear) for name in ("q_proj", "down_proj"))
    h, kc, vc = torch.randn(2, 1, 256), torch.randn(2, 4, 8, 64), torch.randn(2, 4, 8, 64)
    with torch.no_grad():
        assert torch.allclose(sparse(h, kc, vc), layer(h, kc, vc), atol=1e-5)


def test_programs_per_sm_and_waves_follow_the_sm90_limits():
    from sp24.occupancy import occupancy, programs_per_sm

    assert programs_per_sm(255, 4) == 2  # 256 x 32 x 4 = 32 K registers a program
    assert programs_per_sm(154, 4) == 3  # rounded up to 160 a thread
    assert programs_per_sm(128, 2) == 8 and programs_per_sm(155, 8) == 1
    assert programs_per_sm(32, 1) == 32  # the program limit, not the 64 warps
    assert programs_per_sm(32, 8, shared_bytes=100 * 1024) == 2  # shared memory decides
    occ = occupancy(154, 4, 2048, programs=688, sms=132)  # 11008 rows, one row tile a program
    assert occ.per_sm == 3 and occ.waves == pytest.approx(688 / 396) and occ.full_waves == 2
    with pytest.raises(ValueError, match="warps >= 1"):
        programs_per_sm(64, 0)


def test_wave_model_counts_token_groups_and_k_splits():
    from spmma_inflight import grid_programs, wave_model

    # 4096 rows in 16-row tiles, 16 tokens: one 16-token program per tile, or two 8-token ones
    assert grid_programs(SpmmaConfig.from_label("r1s4u4t2"), 4096, 16) == 256
    assert grid_programs(SpmmaConfig.from_label("r1s2u8t1px"), 4096, 16) == 512
    # 32-row groups, K in four runs: 128 x 4
    cfg = SpmmaConfig.from_label("r1w2s2u2t2pxk4")
    assert grid_programs(cfg, 4096, 16) == 512
    # 128 k-blocks in 4 runs of 32, 16 per warp; 2 row tiles x 16 k-blocks x 512 B = 16 KiB a warp
    # at 2 KiB a trip is 8 trips; 128 registers, 2 warps: 8 programs an SM, 512 fit in one wave
    trips, occ = wave_model(cfg, dict(regs=128, shared=0, kib_per_warp_trip=2.0), 4096, 4096, 16, 132)
    assert trips == 8 and occ.per_sm == 8 and occ.full_waves == 1


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(U=3), r"SpmmaConfig.U must be a power of two in 1..16, got 3"),
        (dict(l2_ahead=9), r"l2_ahead must be 0 \(off\) to 8 steps, got 9"),
        (dict(split_k=0), r"split_k must be 1 \(off\) to 16 programs per tile, got 0"),
        (dict(stages=1), r"stages must be 0 .* or 2..8 .*got stages=1"),
        (dict(stages=3, prefetch=True), r"without prefetch or l2_ahead, got stages=3, R=1, T\*U=4, prefetch=True"),
        (dict(stages=3, R=8, T=2, U=2), r"with R <= T\*U .*got stages=3, R=8, T\*U=4"),
        (dict(stages=3, chain=True), r"chain is for the loops that load into registers; stages already chains"),
    ],
)
def test_invalid_spmma_configurations_name_what_is_allowed(options, message):
    with pytest.raises(ValueError, match=message):
        SpmmaConfig(**options).check()


def test_spmma_grid_counts_row_groups_token_groups_and_k_splits():
    # 70 rows: 5 row tiles, in groups of 2; 13 tokens in 8-token tiles, 2 per program: 1 group
    assert SpmmaConfig(R=1, W=2, T=2, split_k=3).grid(70, 13) == (3, 1, 3)
    assert SpmmaConfig(R=2, W=1, T=1).grid(4096, 16) == (128, 2, 1)


def test_the_gpu_check_spends_no_device_time_on_the_cpu_stand_ins():
    """``bench/gpu_check.sh`` runs the kernel tests on the GPU; those that emulate PTX or compile
    offline run on the CPU there too and would only use up the device call."""
    import fnmatch
    import re

    script = (ROOT / "bench" / "gpu_check.sh").read_text()
    skipped = re.findall(r"--ignore-glob='([^']+)'", script) + re.findall(r"--ignore=(\S+)", script)
    for test in sorted((ROOT / "tests" / "kernels").glob("test_*.py")):
        text = test.read_text()
        if any(word in text for word in ("EmulatedKernel", "offline_compile_report", "ptx_emulator")):
            path = test.relative_to(ROOT).as_posix()
            assert any(fnmatch.fnmatch(path, pattern) for pattern in skipped), path


def test_fastest_correct_times_only_correct_candidates_and_counts_the_rest():
    """The sweep's loop (our kernels' tilings, cuSPARSELt's algorithms): a wrong product, an unwritten
    (NaN) one and one that raises are counted wrong and never timed; a skipped exception type is
    counted apart; the fastest correct one wins, the sweep lists the timed ones fastest first."""

    class Label:
        def __init__(self, name):
            self.name = name

        def label(self):
            return self.name

    class Refused(Exception):
        pass

    ref = torch.ones(2, 3)
    costs = {"slow": 9.0, "fast": 4.0}

    class Clock:
        timed = []

        def median_us(self, fn, reps):
            Clock.timed.append(fn.__name__)
            return costs[fn.__name__]

    def product(name, value):
        def run():
            if isinstance(value, Exception):
                raise value
            return value

        run.__name__ = name
        return run

    candidates = [
        (Label("slow"), product("slow", ref.clone())),
        (Label("off"), product("off", ref * 1.5)),
        (Label("unwritten"), product("unwritten", torch.full((2, 3), float("nan")))),
        (Label("fast"), product("fast", ref + 1e-4)),
        (Label("broken"), product("broken", RuntimeError("compile error"))),
        (Label("refused"), product("refused", Refused())),
    ]
    lines = []
    best, sweep, wrong, skipped = fastest_correct(Clock(), ref, candidates, lines.append, "case", skip=(Refused,))
    assert best[0] == 4.0 and best[1].label() == "fast"
    assert sweep == [("fast", 4.0), ("slow", 9.0)] and Clock.timed == ["slow", "fast"]
    assert (wrong, skipped) == (3, 1)
    assert [line.split(":")[0] for line in lines] == ["WRONG case off", "WRONG case unwritten", "FAILED case broken"]


def test_the_gpu_check_tests_the_cusparselt_route_apart_and_leaves_it_out_if_it_fails():
    """The direct cuSPARSELt route (session 23) first meets the real library on the GPU: its tests run
    in their own process before the benchmark, not again in the main run, and a failure sets the
    variable that switches the route off for the benchmark and the dispatcher."""
    script = (ROOT / "bench" / "gpu_check.sh").read_text()
    own_run = script.index("pytest tests/kernels/test_cusparselt.py")
    assert own_run < script.index("bench/sparse24.py --out")
    assert "--ignore=tests/kernels/test_cusparselt.py" in script
    assert "group_finish cusparselt-tests REPRO_CUSPARSELT" in script[own_run:script.index("bench/sparse24.py --out")]


def test_the_sparse_wgmma_form_can_be_left_out_of_the_sweep(monkeypatch):
    """bench/gpu_check.sh sets REPRO_WGMMA_SPARSE=0 when the sparse form fails its GPU test: the
    dense tilings are still timed."""
    assert any(cfg.sparse for cfg in kernel_configs("wgmma", 64))
    monkeypatch.setenv("REPRO_WGMMA_SPARSE", "0")
    configs = kernel_configs("wgmma", 64)
    assert configs and not any(cfg.sparse for cfg in configs)


def test_the_256_token_tiles_alone_can_be_left_out_of_the_sweep(monkeypatch):
    """bench/gpu_check.sh tests the 256-token tiles apart (new in session 22) and sets
    REPRO_WGMMA_T256=0 when they fail: the other sparse tilings at 512 tokens, shared ones too, stay."""
    assert any(cfg.T == 256 for cfg in kernel_configs("wgmma", 512))
    monkeypatch.setenv("REPRO_WGMMA_T256", "0")
    configs = kernel_configs("wgmma", 512)
    assert configs and not any(cfg.T == 256 for cfg in configs) and any(cfg.share > 1 for cfg in configs)


def test_shared_x_with_the_meet_in_the_cluster_alone_can_be_left_out_of_the_sweep(monkeypatch):
    """REPRO_WGMMA_SHARED_MEET=0 (its isolated GPU tests failed) drops the tilings that both share x
    and meet in the cluster; those that do one of the two stay."""
    both = lambda cfg: cfg.cluster and cfg.share > 1  # noqa: E731
    assert any(both(cfg) for cfg in kernel_configs("wgmma", 128))
    monkeypatch.setenv("REPRO_WGMMA_SHARED_MEET", "0")
    configs = kernel_configs("wgmma", 128)
    assert not any(both(cfg) for cfg in configs)
    assert any(cfg.cluster for cfg in configs) and any(cfg.share > 1 for cfg in configs)


def test_the_ablation_times_no_expansion_variant_of_the_sparse_form():
    """bench/wgmma_ablation.py: the sparse form expands nothing, so it has no ``no_expand``
    variant; every tiling it names is a valid configuration of its kind."""
    import wgmma_ablation

    from repro.kernels.fragments import WgmmaConfig

    sparse = wgmma_ablation.jobs("sparse")
    assert sparse and all(WgmmaConfig.from_label(label).sparse for label, _, _ in sparse)
    assert {variant for _, _, variant in sparse} == {"full", "no_fence", "no_mma", "no_barrier"}
    assert len(wgmma_ablation.jobs("all")) == len(wgmma_ablation.jobs("dense")) + len(sparse)
    for label, _, _ in wgmma_ablation.jobs("all"):
        WgmmaConfig.from_label(label).check()


_PTX = """\
\tbar.sync \t0;
$L__BB0_1:
\tbar.sync \t0;
\tcp.async.wait_group 2;
$L__BB0_2:
\tbar.sync \t0;
\tfence.proxy.async.shared::cta;
\tbarrier.sync.aligned 0;
\t{ wgmma.mma_async.sp.sync.aligned.m64n64k32.f32.f16.f16 {%r1}, {%r2}, %rd1, %r3, 0, 1, 1, 1, 0; }
\t@%p1 bra \t$L__BB0_2;
\tbar.sync \t0;
\t@%p2 bra \t$L__BB0_1;
\t@%p3 bra \t$L__BB0_4;
\tbar.sync \t0;
$L__BB0_4:
\tret;
"""


def test_the_ablation_drops_the_barriers_of_the_innermost_mma_loop_only():
    """``no_barrier``: the loop is found by its branch back (not the forward branch to BB0_4),
    the innermost one with the MMA; barriers before it, in the loop around it and after it stay."""
    import wgmma_ablation

    lo, hi = wgmma_ablation.main_loop_span(_PTX)
    assert _PTX[lo:].startswith("$L__BB0_2:") and _PTX[:hi].endswith("bra \t$L__BB0_2;")
    edited = wgmma_ablation.drop_loop_barriers(_PTX)
    assert edited.count("bar.sync") == _PTX.count("bar.sync") - 1 == 4
    assert "barrier.sync" not in edited and "fence.proxy.async" in edited and "wgmma.mma_async" in edited
    with pytest.raises(ValueError, match="no loop with a wgmma"):
        wgmma_ablation.main_loop_span(_PTX.replace("wgmma.mma_async", "mma.sync"))


def test_a_subset_of_the_cases_is_chosen_by_name_in_the_benchmarks_order():
    import sparse24

    args = sparse24.parse_args(["--shapes", "4096x11008, 4096×4096", "--ms", "128,64"])
    assert args.shapes == [(4096, 4096), (4096, 11008)] and args.ms == [64, 128]
    whole = sparse24.parse_args([])
    assert whole.shapes is None and whole.ms is None  # the whole grid, K sweep and end to end


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--shapes", "4096x4097"], "4096x4097 is not among the benchmark's cases; choose from 4096x4096, 11008x4096"),
        (["--shapes", "big"], "expected a comma-separated list of 4096x4096"),
        (["--ms", "3,64"], "3 is not among the benchmark's cases; choose from 1, 4, 8"),
        (["--ms", ","], "--ms: no case given; choose from 1, 4, 8"),
        (["--quick", "--ms", "1"], "--quick picks its own cases"),
    ],
    ids=["unknown-shape", "not-a-shape", "unknown-m", "empty", "quick-and-subset"],
)
def test_cases_outside_the_grid_are_refused_with_what_may_be_chosen(argv, message, capsys):
    import sparse24

    with pytest.raises(SystemExit):
        sparse24.parse_args(argv)
    assert message in capsys.readouterr().err
