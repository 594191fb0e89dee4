"""bench/sp24/cross_gpu.py and bench/cross_gpu.py: configurations timed on two GPUs, paired."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "lib"))

import cross_gpu  # noqa: E402
from sp24.cross_gpu import (  # noqa: E402
    factors,
    family,
    fastest_markdown,
    paired,
    predicted,
    predicted_markdown,
    ratio_markdown,
    registered,
    scored,
    scored_markdown,
    timings,
)

RESULTS = ROOT / "bench" / "results"


def rec(method, us, m=64, cfg="", sweep=None, n=4096, k=4096, status="ok", gpu="G"):
    r = dict(gpu=gpu, N=n, K=k, M=m, method=method, status=status, us=us, cfg=cfg)
    if sweep is not None:
        r["sweep"] = sweep
    return r


def test_families_by_method_and_wgmma_form():
    assert family("cublas", "") == "cuBLAS"
    assert family("repro_spmma", "r1s4u8t1pxi") == "spmma"
    assert family("repro_wgmma", "g1t64u2c6k2") == "wgmma, dense"
    assert family("repro_wgmma", "g1t64u2c6sk2") == "wgmma, sparse"
    assert family("repro_mma", "x") == "Triton fma/mma/expand"


def test_every_sweep_entry_is_a_timing_and_the_rest_is_left_out():
    recs = [
        rec("cublas", 20.0),
        rec("repro_wgmma", 15.0, cfg="g1t64u2c6s",
            sweep=[["g1t64u2c6s", 15.0], ["g2t64u2c6sk4", 16.5], ["g1t64u2c8s", "x"]]),
        rec("repro_dispatch", 15.0, cfg="wgmma g1t64u2c6s"),  # repeats a kernel's own record
        rec("torch_semi_structured", 900.0),  # host-bound
        rec("repro_spmma", None, cfg="r1s4u8t1", status="wrong"),
    ]
    assert timings(recs) == {
        (4096, 4096, 64, "cublas", ""): 20.0,
        (4096, 4096, 64, "repro_wgmma", "g1t64u2c6s"): 15.0,
        (4096, 4096, 64, "repro_wgmma", "g2t64u2c6sk4"): 16.5,
    }


def test_pairs_are_the_configurations_both_runs_timed_on_the_same_case():
    slow = [rec("cublas", 28.0), rec("repro_wgmma", 15.0, sweep=[["g1t64u2c6s", 15.0], ["g1t64u2c8s", 18.0]]),
            rec("cublas", 50.0, n=11008)]
    fast = [rec("cublas", 20.0), rec("repro_wgmma", 15.0, sweep=[["g1t64u2c6s", 14.0], ["g2t64u2c6sk4", 12.0]])]
    rows = paired(slow, fast)
    assert [(r["family"], r["label"], round(r["ratio"], 3)) for r in rows] == [
        ("cuBLAS", "", 1.4), ("wgmma, sparse", "g1t64u2c6s", round(15 / 14, 3))
    ]
    table = ratio_markdown(rows).splitlines()
    assert table[0] == "| M | cuBLAS | wgmma, sparse |"
    assert table[2] == "| 64 | 1.40 (1.40–1.40, 1) | 1.07 (1.07–1.07, 1) |"
    # each GPU's fastest of the pairs: 15 (g1t64u2c6s) over 12 (g1t64u2c8s), not 15 / 14
    again = rec("repro_wgmma", 12.0, sweep=[["g1t64u2c6s", 14.0], ["g1t64u2c8s", 12.0]])
    fastest = paired(slow, [rec("cublas", 20.0), again])
    assert "| 64 | 4096×4096 | 1.40 | 1.25 |" in fastest_markdown(fastest)


def test_a_median_of_several_pairs_and_its_range():
    slow = [rec("repro_spmma", 1.0, sweep=[[f"r1s4u{u}t1", u * 1.2] for u in (2, 4, 8)])]
    fast = [rec("repro_spmma", 1.0, sweep=[[f"r1s4u{u}t1", u * 1.0] for u in (2, 4, 8)] + [["r1s2u4t1", 3.0]])]
    slow[0]["sweep"][0][1] = 2 * 1.5  # r1s4u2t1: 1.5
    line = ratio_markdown(paired(slow, fast)).splitlines()[2]
    assert line == "| 64 | 1.20 (1.20–1.50, 3) |"


COMPARISONS = [  # (slow, fast) as committed: two GPUs of one die, and one GPU model twice
    ("h100-2026-11-28.json", "partial/h200-2026-11-27f"),
    ("h100-2026-11-28.json", "partial/h100-2026-11-28b"),
]


@pytest.mark.parametrize("slow, fast", COMPARISONS, ids=lambda p: Path(p).stem)
def test_committed_comparisons_are_what_their_runs_give(tmp_path, slow, fast):
    committed = RESULTS / "compare" / f"{Path(slow).stem}-vs-{Path(fast).name}.md"
    cross_gpu.main([str(RESULTS / slow), str(RESULTS / fast), "--out", str(tmp_path), "--no-figure"])
    assert (tmp_path / committed.name).read_text() == committed.read_text(), (
        f"run: python bench/cross_gpu.py bench/results/{slow} bench/results/{fast}"
    )
    assert committed.with_suffix(".png").exists()


def test_what_the_ratios_measure_depends_on_the_pair():
    assert "memory" in cross_gpu.reading("NVIDIA H100 80GB HBM3", "NVIDIA H200")
    assert "repeat" in cross_gpu.reading("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3")
    assert cross_gpu.reading("NVIDIA A100-SXM4-80GB", "NVIDIA H200") == ""
    exact = cross_gpu.reading("NVIDIA H100 80GB HBM3", "NVIDIA H200", (3000.0, 4200.0))
    assert "1.40 is what a call bound by the memory should show" in exact and "4200 / 3000 GB/s" in exact


def test_the_memory_bound_ratio_is_the_two_runs_copy_rates():
    """A whole run keeps its copy rate in its first record's description, a partial run in its log's
    first line; the figure's dashed line and the table's sentence are their ratio."""
    slow = cross_gpu.load_run(RESULTS / "h100-2026-11-28.json")
    fast = cross_gpu.load_run(RESULTS / "partial" / "h200-2026-11-27f")
    assert slow.copy_gbps == pytest.approx(2981.03, abs=0.01)
    assert fast.copy_gbps == pytest.approx(4157.41, abs=0.01)
    assert cross_gpu.copy_ratio(slow, fast) == pytest.approx(1.3946, abs=1e-4)
    committed = (RESULTS / "compare" / "h100-2026-11-28-vs-h200-2026-11-27f.md").read_text()
    assert "1.39 is what a call bound by the memory should show" in committed
    same = cross_gpu.load_run(RESULTS / "partial" / "h100-2026-11-28b")
    assert cross_gpu.copy_ratio(slow, same) is None  # one GPU model: no memory to tell apart


def test_the_figure_names_both_runs_and_uses_the_pages_kernel_colours(tmp_path, monkeypatch):
    from plot_sparse24 import DPI, KERNEL_COLORS

    assert cross_gpu.COLORS["spmma"] == KERNEL_COLORS["spmma"]  # orange, as in the speedup figures
    assert cross_gpu.COLORS["wgmma, sparse"] == KERNEL_COLORS["wgmma"]
    slow = cross_gpu.load_run(RESULTS / "h100-2026-11-28.json")
    fast = cross_gpu.load_run(RESULTS / "partial" / "h200-2026-11-27f")
    titles, hlines, markers = [], [], set()
    monkeypatch.setattr(cross_gpu.plt.Axes, "set_title", lambda ax, text, **kw: titles.append(text))
    real_axhline = cross_gpu.plt.Axes.axhline
    monkeypatch.setattr(cross_gpu.plt.Axes, "axhline",
                        lambda ax, y=0, **kw: hlines.append(y) or real_axhline(ax, y, **kw))
    real_scatter = cross_gpu.plt.Axes.scatter
    monkeypatch.setattr(cross_gpu.plt.Axes, "scatter", lambda ax, *a, marker=None, **kw: markers.add(marker)
                        or real_scatter(ax, *a, marker=marker, **kw))
    png = tmp_path / "pair.png"
    cross_gpu.plot(paired(slow.recs, fast.recs), png, slow, fast)
    assert titles == ["H100 run 2026-11-28 over H200 run 2026-11-27f: every configuration both timed on the same case"]
    assert sorted(round(y, 4) for y in hlines) == [1.0, 1.3946]
    assert markers == {"o", "s"}  # one per shape: 4096x4096, 11008x4096
    width = int.from_bytes(png.read_bytes()[16:20], "big")
    assert width <= 10 * DPI


def test_runs_without_a_common_case_are_refused(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps([rec("cublas", 20.0, gpu="A")]))
    b.write_text(json.dumps([rec("cublas", 20.0, n=11008, gpu="B")]))
    with pytest.raises(SystemExit, match="no configuration timed on the same case"):
        cross_gpu.main([str(a), str(b), "--out", str(tmp_path), "--no-figure"])
    assert not list(tmp_path.glob("*-vs-*"))


def test_factors_are_the_median_and_range_per_token_count_and_family():
    rows = [dict(M=64, family="spmma", ratio=r) for r in (1.3, 1.0, 1.1)] + [dict(M=1, family="spmma", ratio=1.4)]
    assert factors(rows) == {(64, "spmma"): (1.1, 1.0, 1.3), (1, "spmma"): (1.4, 1.4, 1.4)}


def wgmma(m, *timed, n=4096):
    return rec("repro_wgmma", timed[0][1], m=m, n=n, cfg=timed[0][0], sweep=[list(t) for t in timed])


def test_a_new_tiling_is_predicted_from_its_familys_ratio_and_judged_on_the_fast_gpus_cublas():
    scale = {(64, "wgmma, sparse"): (1.2, 1.1, 1.25), (16, "spmma"): (1.1, 1.0, 1.2)}
    newer = [rec("cublas", 18.0), wgmma(64, ("g1t64u2c6s", 16.0), ("g1t64u2c6sk2q", 12.0)),
             rec("repro_spmma", 13.0, m=16, cfg="r1s4u8t1", sweep=[["r1s4u8t1", 13.0]]),  # no fast run has M = 16
             wgmma(64, ("g1t64u2c6sk2q", 30.0), n=11008)]
    fast_f = [rec("cublas", 12.0), wgmma(64, ("g1t64u2c6s", 13.0))]
    fast_e = [rec("cublas", 30.0, n=11008), wgmma(64, ("g1t64u2c6sk2q", 29.0), n=11008)]
    rows = predicted(newer, scale, [("f", fast_f), ("e", fast_e)], {64: 1.1, 16: 1.5})
    first, second = rows
    # 4096x4096: the new tiling at 12 / 1.2 = 10 us (range 12 / 1.25 - 12 / 1.1); g1t64u2c6s was timed there
    assert (first["N"], first["run"], first["cublas_us"], first["timed"]) == (4096, "f", 12.0, ("g1t64u2c6s", 13.0))
    assert first["new"]["label"] == "g1t64u2c6sk2q"
    assert first["new"]["us"] == pytest.approx(10.0)
    assert (first["new"]["lo_us"], first["new"]["hi_us"]) == pytest.approx((12 / 1.25, 12 / 1.1))
    assert first["speedup"] == pytest.approx(1.2)
    # 11008x4096: only the second fast run has it, and it timed the tiling already: nothing to predict
    assert (second["N"], second["run"], second["new"], second["speedup"]) == (11008, "e", None, 30 / 29)
    table = predicted_markdown(rows, "h100", "h200")
    assert table.startswith("Predicted to meet their target: 1 of 2 cases (the H200's own timings so far: 0).")
    assert "| 4096×4096 | 64 | ≥ 1.10× | 12.0 (f) | `g1t64u2c6s` 13.0 (0.92×) | `g1t64u2c6sk2q` 12.0 / 1.20 = " \
           "10.0 (9.6–10.9; 1.20×) | 1.20×, met |" in table
    assert "| 11008×4096 | 64 | ≥ 1.10× | 30.0 (e) | `g1t64u2c6sk2q` 29.0 (1.03×) | – | 1.03×, not met |" in table


def test_a_slower_new_tiling_does_not_hide_a_faster_timed_one():
    scale = {(64, "wgmma, sparse"): (1.0, 1.0, 1.0)}
    [row] = predicted([wgmma(64, ("g1t64u2c6sk2q", 20.0))], scale,
                      [("f", [rec("cublas", 20.0), wgmma(64, ("g1t64u2c6s", 16.0))])], {64: 1.1})
    assert row["speedup"] == pytest.approx(1.25) and row["new"]["us"] == pytest.approx(20.0)


def test_a_dispatch_tables_entries_become_records_with_the_cublas_time_their_speedup_implies():
    spmma = dict(R=2, S=4, U=8, T=1, W=1, prefetch=True, wide_x=True, interleave=True)
    table = {"gpu": "G", "entries": [
        dict(N=4096, K=11008, M=1, dtype="float16", method="spmma", config=spmma, us=18.0, speedup_vs_cublas=1.7),
        dict(N=4096, K=11008, M=128, dtype="float16", method="cublas", config=None, us=31.5, speedup_vs_cublas=1.0),
        dict(N=4096, K=11008, M=1, dtype="bfloat16", method="cublas", config=None, us=30.0, speedup_vs_cublas=1.0),
    ]}
    got = {(r["M"], r["method"], r["cfg"]): r["us"] for r in cross_gpu.table_records(table)}
    assert got == pytest.approx({(1, "cublas", ""): 30.6, (1, "repro_spmma", "r2s4u8t1pxi"): 18.0,
                                 (128, "cublas", ""): 31.5})


def test_a_partial_runs_table_fills_only_the_cases_its_records_lack(tmp_path):
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "sweep.json").write_text(json.dumps([rec("cublas", 15.0, m=1)]))
    entries = [dict(N=4096, K=k, M=1, method="cublas", config=None, us=us, speedup_vs_cublas=1.0)
               for k, us in ((4096, 99.0), (11008, 31.0))]
    (folder / "dispatch_sm90.json").write_text(json.dumps({"entries": entries}))
    run = cross_gpu.load_run(folder)
    assert [(r["K"], r["us"]) for r in run.recs + run.table] == [(4096, 15.0), (11008, 31.0)]


PREDICTIONS = [  # (slow, fast, newer on slow's GPU, other runs on fast's) as committed
    ("h100-2026-11-28.json", "partial/h200-2026-11-27f", "h100-2026-11-28c.json", ["h200-2026-11-27e.json"]),
]


@pytest.mark.parametrize("slow, fast, newer, also", PREDICTIONS, ids=lambda p: Path(str(p)).stem)
def test_committed_predictions_are_what_their_runs_give(tmp_path, slow, fast, newer, also):
    extra = [arg for run in also for arg in ("--also", str(RESULTS / run))]
    cross_gpu.main([str(RESULTS / slow), str(RESULTS / fast), "--predict", str(RESULTS / newer), *extra,
                    "--out", str(tmp_path), "--no-figure"])
    [page] = tmp_path.glob("*-predicted-from-*.md")
    assert page.read_text() == (RESULTS / "compare" / page.name).read_text(), (
        f"run: python bench/cross_gpu.py bench/results/{slow} bench/results/{fast} --predict bench/results/{newer} "
        + " ".join(f"--also bench/results/{run}" for run in also)
    )


def test_a_newer_run_on_another_gpu_is_refused_before_anything_is_written(tmp_path):
    slow, fast, newer = (tmp_path / f"{name}.json" for name in ("slow", "fast", "newer"))
    slow.write_text(json.dumps([rec("cublas", 28.0, gpu="NVIDIA H100 80GB HBM3")]))
    fast.write_text(json.dumps([rec("cublas", 20.0, gpu="NVIDIA H200")]))
    newer.write_text(json.dumps([rec("cublas", 20.0, gpu="NVIDIA H200")]))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SystemExit, match="where one on the NVIDIA H100 80GB HBM3 is needed"):
        cross_gpu.main([str(slow), str(fast), "--predict", str(newer), "--out", str(out), "--no-figure"])
    assert not list(out.iterdir())


def forecast_rows():
    scale = {(64, "wgmma, sparse"): (1.2, 1.1, 1.25)}
    newer = [wgmma(64, ("g1t64u2c6sk2q", 12.0)), wgmma(64, ("g1t64u2c6sk2q", 30.0), n=11008)]
    fast = [rec("cublas", 12.0), wgmma(64, ("g1t64u2c6s", 13.0)),
            rec("cublas", 30.0, n=11008), wgmma(64, ("g1t64u2c6sk2q", 29.0), n=11008)]
    return predicted(newer, scale, [("f", fast)], {64: 1.1})


def test_a_forecast_page_reads_back_as_written():
    back = registered(predicted_markdown(forecast_rows(), "h100", "h200"))
    assert back == [
        dict(N=4096, K=4096, M=64, need=1.1, speedup=1.2, met=True, label="g1t64u2c6sk2q", us=10.0, lo_us=9.6,
             hi_us=10.9),
        dict(N=11008, K=4096, M=64, need=1.1, speedup=1.03, met=False, label=None),
    ]
    with pytest.raises(SystemExit, match="no forecast in it"):
        registered("| a | b |\n")


def test_a_score_sets_each_forecast_tiling_and_verdict_beside_the_later_run():
    forecast = registered(predicted_markdown(forecast_rows(), "h100", "h200"))
    later = [wgmma(64, ("g1t64u2c6sk2q", 11.5), ("g1t64u2c6s", 13.0))]
    rows = scored(forecast, later, {(4096, 4096, 64): 12.0 / 11.5, (11008, 4096, 64): 1.12})
    assert [(r["measured_us"], round(r["measured_speedup"], 3)) for r in rows] == [(11.5, 1.043), (None, 1.12)]
    table = scored_markdown(rows, "g")
    # 11.5 / 10.0 = 1.15, outside 9.6-10.9; the forecast said met / not met, the run the reverse
    assert table.startswith("Forecast tilings timed in run `g`: 1 of 1; measured / predicted: median 1.15 (range "
                            "1.15–1.15), inside the predicted range: 0; targets met: forecast 1, measured 1 of 2 "
                            "cases; the verdicts agree on 0.")
    assert ("| 4096×4096 | 64 | ≥ 1.10× | `g1t64u2c6sk2q` | 10.0 (9.6–10.9) | 11.5 | 1.15 | 1.20×, met | "
            "1.04×, not met |") in table
    assert "| 11008×4096 | 64 | ≥ 1.10× | – | – | – | – | 1.03×, not met | 1.12×, met |" in table


def test_the_score_judges_on_the_dispatcher_where_the_run_kept_it():
    recs = [rec("cublas", 20.0, m=16), rec("repro_spmma", 12.0, m=16, cfg="r1s4u8t1", sweep=[["r1s4u8t1", 12.0]]),
            dict(rec("repro_dispatch", 12.5, m=16, cfg="spmma r1s4u8t1"), cublas_us_paired=19.0)]
    assert cross_gpu.judged_speedups(recs) == {(4096, 4096, 16): pytest.approx(19.0 / 12.5)}
    partial = recs[:2] + [rec("cublas", 60.0, m=512)]  # no dispatcher: the fastest kernel; 512 is no such case
    assert cross_gpu.judged_speedups(partial) == {(4096, 4096, 16): pytest.approx(20.0 / 12.0)}


def test_a_score_is_refused_for_a_run_on_another_gpu_and_for_a_page_that_is_no_forecast(tmp_path):
    page = tmp_path / "h200-predicted-from-x.md"
    page.write_text(predicted_markdown(forecast_rows(), "h100", "h200"))
    h100 = tmp_path / "h100-run.json"
    h100.write_text(json.dumps([rec("cublas", 12.0, gpu="NVIDIA H100 80GB HBM3")]))
    with pytest.raises(SystemExit, match="forecasts the H200; run `h100-run` is on the NVIDIA H100"):
        cross_gpu.main(["--score", str(page), str(h100), "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="not a forecast page"):
        cross_gpu.main(["--score", str(h100), str(h100), "--out", str(tmp_path)])
    assert not list(tmp_path.glob("*scored*"))
    h200 = tmp_path / "h200-run.json"
    h200.write_text(json.dumps([rec("cublas", 12.0, gpu="NVIDIA H200"),
                                wgmma(64, ("g1t64u2c6sk2q", 10.5)) | dict(gpu="NVIDIA H200")]))
    cross_gpu.main(["--score", str(page), str(h200), "--out", str(tmp_path)])
    assert "| 10.0 (9.6–10.9) | 10.5 | 1.05 |" in (tmp_path / "h200-predicted-from-x-scored-by-h200-run.md").read_text()
