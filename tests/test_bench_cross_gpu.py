"""bench/sp24/cross_gpu.py and bench/cross_gpu.py: configurations timed on two GPUs, paired."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "lib"))

import cross_gpu  # noqa: E402
from sp24.cross_gpu import family, fastest_markdown, paired, ratio_markdown, timings  # noqa: E402

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


def test_runs_without_a_common_case_are_refused(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps([rec("cublas", 20.0, gpu="A")]))
    b.write_text(json.dumps([rec("cublas", 20.0, n=11008, gpu="B")]))
    with pytest.raises(SystemExit, match="no configuration timed on the same case"):
        cross_gpu.main([str(a), str(b), "--out", str(tmp_path), "--no-figure"])
    assert not list(tmp_path.glob("*-vs-*"))
