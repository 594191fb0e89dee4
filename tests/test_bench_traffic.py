"""bench/sp24/traffic.py and bench/l2_traffic.py: the bytes a wgmma tiling moves between the SMs
and the L2, and the committed tables made from a run's records."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "lib"))

import l2_traffic  # noqa: E402
from sp24.traffic import (  # noqa: E402
    predictions,
    predictions_markdown,
    rows_markdown,
    scored,
    scored_markdown,
    timed_tilings,
    twin_of,
    wgmma_traffic,
    x_shared_estimate,
)

from repro.kernels.fragments import WgmmaConfig  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def traffic(label, n=4096, k=4096, m=64):
    return wgmma_traffic(WgmmaConfig.from_label(label), n, k, m)


def test_known_answer_for_a_64_row_tiling_with_two_splits():
    t = traffic("g1t64u2c6sk2")
    assert t.programs == 64 * 1 * 2  # 4096 / 64 row tiles, one token group, two splits
    assert t.weight == 4096 * 4096 * 9 / 8  # 2 bytes for every other value, 2 bits per value of metadata
    assert t.x == 64 * 64 * 4096 * 2  # every row tile reads all 64 tokens of K
    assert t.workspace == 2 * 128 * 64 * 64 * 4  # each program's fp32 tile stored, then read back
    assert t.tail == 2 * 64 * 64 * 4  # the last split reads both partials
    assert t.output == 4096 * 64 * 2
    assert t.total == t.weight + t.x + t.workspace + t.output


def test_split_k_moves_partials_not_weight_or_x():
    one, four = traffic("g1t64u2c6s"), traffic("g1t64u2c6sk4")
    assert (one.weight, one.x) == (four.weight, four.x)
    assert one.workspace == one.tail == 0
    assert four.workspace == 2 * four.programs * 64 * 64 * 4 and four.programs == 4 * one.programs


def test_splits_meeting_in_a_cluster_move_no_partials_through_the_l2():
    apart, together = traffic("g2t128u2c6sk4", m=128), traffic("g2t128u2c6sk4q", m=128)
    assert (apart.weight, apart.x, apart.output, apart.programs) == (together.weight, together.x, together.output,
                                                                     together.programs)
    assert together.workspace == together.tail == 0 < apart.tail


def test_x_is_read_once_per_row_tile_and_the_weight_once_per_token_group():
    assert traffic("g2t64u2c6s").x * 2 == traffic("g1t64u2c6s").x  # 128 rows per program: half the row tiles
    assert traffic("g2w2t64u2c6sk8").x * 4 == traffic("g1t64u2c6s").x
    two_groups = traffic("g2t64u2c6sk2", m=128)  # 128 tokens in two groups of 64
    assert two_groups.weight == 2 * traffic("g2t128u2c6sk2", m=128).weight
    assert two_groups.x == traffic("g2t128u2c6sk2", m=128).x


def test_tokens_and_rows_past_the_call_move_nothing():
    t = traffic("g1t16u2c6sk4", n=11008, m=20)  # 20 tokens: two groups of 16, the second mostly masked
    assert t.x == -(-11008 // 64) * 20 * 4096 * 2
    assert t.weight == 2 * 11008 * 4096 * 9 / 8
    assert t.output == 11008 * 20 * 2


def test_bad_input_is_refused_with_what_was_wrong():
    with pytest.raises(ValueError, match="n, k, m >= 1"):
        traffic("g1t64u2c6s", m=0)
    with pytest.raises(ValueError, match="W must be 1"):
        wgmma_traffic(WgmmaConfig(W=2, stages=4), 4096, 4096, 64)  # two MMA tiles need the sparse form


def _records():
    cublas = dict(N=4096, K=4096, M=64, method="cublas", us=14.0)
    wgmma = dict(N=4096, K=4096, M=64, method="repro_wgmma", us=15.0,
                 sweep=[["g1t64u2c6sk2", 15.0], ["g1t64u2c6", 29.0], ["g2t64u2c6sk4", "wrong"]])
    return [cublas, wgmma, dict(wgmma, M=1, sweep=[["g1t8u4k4", 12.0]])]


def test_timed_tilings_keep_the_sparse_forms_numbers_and_their_rate():
    rows = timed_tilings(_records())
    assert [r["label"] for r in rows] == ["g1t64u2c6sk2"]  # not the dense form, the failure or M = 1
    r = rows[0]
    assert r["rate"] == pytest.approx(r["traffic"].total / 15e-6) and r["cublas_us"] == 14.0
    assert [r["label"] for r in timed_tilings(_records(), sparse=False)] == ["g1t64u2c6sk2", "g1t64u2c6"]


def test_rows_table_gives_rate_tail_and_speedup_per_token_count_and_row_tile():
    row = timed_tilings(_records())[0]
    line = rows_markdown([row]).splitlines()[-1]
    rate = row["traffic"].total / 15e-6 / 1e12
    assert line == f"| 64 | 64 | 1 | {rate:.2f} | 33 | 0.93× |"  # tail: 2 partials of 64 x 64 floats; 14 / 15


def test_x_shared_estimate_removes_the_shared_part_of_x_at_the_same_rate():
    row = timed_tilings(_records())[0]
    assert x_shared_estimate(row, share=1) == pytest.approx(15.0)
    t = row["traffic"]
    assert x_shared_estimate(row, share=2) == pytest.approx(15.0 * (t.total - t.x / 2) / t.total)


def _committed():
    partial = [p / "traffic.md" for p in (RESULTS / "partial").iterdir() if (p / "traffic.md").exists()]
    return partial + sorted(RESULTS.glob("*-traffic.md"))


@pytest.mark.parametrize("md", _committed(), ids=lambda p: p.parent.name + "/" + p.name)
def test_committed_traffic_tables_are_what_their_records_give(md):
    run = md.parent if md.name == "traffic.md" else md.with_name(md.name.replace("-traffic.md", ".json"))
    records, out, figure = l2_traffic.run_paths(run)
    assert out == md and figure.exists()
    recs = l2_traffic.load_records(records)
    generated = l2_traffic.summary(l2_traffic.sparse_tilings(recs, records), recs[0]["gpu"], records)
    assert md.read_text() == generated, f"run: python bench/l2_traffic.py {run}"


def test_committed_tables_exist():
    assert _committed(), "bench/l2_traffic.py's table of run -f is committed"


def test_a_new_tiling_is_predicted_from_its_twin_at_the_rate_the_twin_reached():
    """The twin loads x itself and has 128-token tiles; the prediction is the new tiling's bytes at
    the twin's measured rate, only for cases where the twin was timed and the tiling was not."""
    assert twin_of(WgmmaConfig.from_label("g1t128u2c6sk2qm2")).label() == "g1t128u2c6sk2q"
    assert twin_of(WgmmaConfig.from_label("g2t256u2c4sm4")).label() == "g2t128u2c4s"
    assert twin_of(WgmmaConfig.from_label("g2t128u2c4s")) is None
    recs = [
        dict(method="cublas", N=4096, K=4096, M=128, us=18.0),
        dict(method="repro_wgmma", N=4096, K=4096, M=128, sweep=[["g1t128u2c6sk2", 20.0], ["g2t128u2c6s", 29.0]]),
    ]
    rows = timed_tilings(recs, ms=(128,))
    labels = {128: ["g1t128u2c6sk2m2", "g1t128u2c6sk2", "g2t64u2c6sk2m2"]}  # a timed one, and one without its twin
    (p,) = predictions(rows, labels)
    twin = traffic("g1t128u2c6sk2", m=128)
    assert p["label"] == "g1t128u2c6sk2m2" and p["twin"] == "g1t128u2c6sk2"
    assert p["us"] == pytest.approx(20.0 * traffic("g1t128u2c6sk2m2", m=128).total / twin.total)
    table = predictions_markdown([p])
    assert "`g1t128u2c6sk2m2`" in table and f"{18.0 / p['us']:.2f}×" in table


def test_a_folder_without_records_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no sweep.json"):
        l2_traffic.run_paths(tmp_path)
    (tmp_path / "run.txt").write_text("")
    with pytest.raises(SystemExit, match="not a run's JSON"):
        l2_traffic.run_paths(tmp_path / "run.txt")
    (tmp_path / "run.json").write_text('{"not": "records"}')
    with pytest.raises(SystemExit, match="list of benchmark records"):
        l2_traffic.load_records(tmp_path / "run.json")
    with pytest.raises(SystemExit, match="no timed tilings of the sparse wgmma form"):
        l2_traffic.sparse_tilings([dict(N=1, K=1, M=64, method="cublas", us=1.0)], tmp_path / "run.json")


def _later_run(m2_us=13.0, twin_us=20.0):
    """A later run at 128 tokens: the twin timed again and one of its predicted tilings timed."""
    return [
        dict(method="cublas", N=4096, K=4096, M=128, us=18.0),
        dict(method="repro_wgmma", N=4096, K=4096, M=128,
             sweep=[["g1t128u2c6sk2", twin_us], ["g1t128u2c6sk2m2", m2_us], ["g1t128u2c6sk2m4", "wrong"]]),
    ]


def _prediction(label="g1t128u2c6sk2m2", us=12.5):
    return dict(N=4096, K=4096, M=128, label=label, twin="g1t128u2c6sk2", twin_us=19.3, us=us)


def test_a_score_sets_the_measured_time_beside_the_prediction_and_the_twins_rate_now():
    later = timed_tilings(_later_run(), ms=(128,))
    hit, miss = scored([_prediction(), _prediction("g1t128u2c6sk2m4", 9.1)], later)
    assert hit["measured_us"] == 13.0 and hit["twin_now_us"] == 20.0 and hit["cublas_now_us"] == 18.0
    bytes_ratio = traffic("g1t128u2c6sk2m2", m=128).total / traffic("g1t128u2c6sk2", m=128).total
    assert hit["rate_vs_twin"] == pytest.approx(bytes_ratio * 20.0 / 13.0)  # rates: bytes / time
    assert miss["measured_us"] is None and miss["rate_vs_twin"] is None  # its check failed: never timed
    table = scored_markdown([hit, miss])
    assert table.startswith("1 of 2 predictions measured; measured / predicted: median 1.04")
    assert "| `g1t128u2c6sk2m2` | 12.5 | 13.0 | 1.04 | `g1t128u2c6sk2` 19.3 → 20.0 |" in table
    assert f"| {bytes_ratio * 20 / 13:.2f} | 1.38× |" in table  # 18 / 13
    assert "Not timed in the later run (wrong, refused or left out): `g1t128u2c6sk2m4` (4096×4096, 128)" in table
    assert scored_markdown([miss]) == "None of the 1 predictions was timed in the later run.\n"


def test_a_predictions_page_reads_back_as_written(tmp_path):
    page = tmp_path / "predictions.md"
    page.write_text("intro\n\n" + predictions_markdown([dict(
        _prediction(), twin_traffic=traffic("g1t128u2c6sk2", m=128), traffic=traffic("g1t128u2c6sk2m2", m=128),
        cublas_us=18.0)]))
    assert l2_traffic.registered(page) == [_prediction()]
    page.write_text("no table here\n")
    with pytest.raises(SystemExit, match="no predictions in it"):
        l2_traffic.registered(page)


def _partial_run(folder: Path, recs: list[dict]) -> Path:
    folder.mkdir()
    (folder / "sweep.json").write_text(json.dumps(recs))
    return folder


def test_score_uses_the_page_written_before_the_run_and_says_when_there_was_none(tmp_path):
    earlier = _partial_run(tmp_path / "earlier", [
        dict(method="cublas", N=4096, K=4096, M=128, us=18.0),
        dict(method="repro_wgmma", N=4096, K=4096, M=128, sweep=[["g1t128u2c6sk2", 19.3]])])
    later = _later_run()
    after_the_fact = l2_traffic.scored_table(later, tmp_path / "later.json", earlier)
    assert "made after the fact" in after_the_fact and "1 of 1 predictions measured" in after_the_fact
    predicted = 19.3 * traffic("g1t128u2c6sk2m2", m=128).total / traffic("g1t128u2c6sk2", m=128).total
    assert f"| `g1t128u2c6sk2m2` | {predicted:.1f} | 13.0 |" in after_the_fact
    (earlier / "predictions.md").write_text(predictions_markdown([dict(
        _prediction(us=11.0), twin_traffic=traffic("g1t128u2c6sk2", m=128),
        traffic=traffic("g1t128u2c6sk2m2", m=128), cublas_us=18.0)]))
    before = l2_traffic.scored_table(later, tmp_path / "later.json", earlier)
    assert "written down before this run" in before and "| `g1t128u2c6sk2m2` | 11.0 | 13.0 | 1.18 |" in before


def _committed_predictions():
    return sorted(RESULTS.glob("*-predictions.md")) + sorted(RESULTS.glob("partial/*/predictions.md"))


@pytest.mark.parametrize("page", _committed_predictions(), ids=lambda p: p.parent.name + "/" + p.name)
def test_committed_predictions_are_what_their_runs_records_give(page):
    """A page of predictions is written once, before the run that measures them, and never
    regenerated; this checks that each row is still what the count gives from the committed
    records, so that a later score compares the measurement with the model as it stands."""
    whole_run = page.with_name(page.name.replace("-predictions.md", ".json"))
    run = page.parent if page.name == "predictions.md" else whole_run
    records, _, _ = l2_traffic.run_paths(run)
    rows = l2_traffic.predicted_tilings(l2_traffic.load_records(records))
    written = l2_traffic.registered(page)
    labels = {}
    for w in written:
        labels.setdefault(w["M"], []).append(w["label"])
    given = {(p["N"], p["K"], p["M"], p["label"]): p for p in predictions(rows, labels)}
    for w in written:
        p = given[(w["N"], w["K"], w["M"], w["label"])]
        assert (p["twin"], round(p["twin_us"], 1)) == (w["twin"], w["twin_us"])
        assert p["us"] == pytest.approx(w["us"], abs=0.051), w


def test_committed_predictions_exist():
    assert len(_committed_predictions()) >= 2, "the H100 run -c's and the H200 run -f's pages are committed"


def test_a_score_against_no_run_is_refused_before_anything_is_written(tmp_path):
    run = tmp_path / "later"
    run.mkdir()
    (run / "sweep.json").write_text(json.dumps(_later_run()))
    with pytest.raises(SystemExit, match="not a run's JSON file or a partial run's folder"):
        l2_traffic.main([str(run), "--score", str(tmp_path / "missing.json")])
    assert sorted(p.name for p in run.iterdir()) == ["sweep.json"]


def test_the_figure_has_a_panel_for_every_token_count_the_count_reads_and_names_its_run(tmp_path):
    import inspect

    assert set(l2_traffic.PANELS) == set(inspect.signature(timed_tilings).parameters["ms"].default)
    records = RESULTS / "partial" / "h200-2026-11-27f" / "sweep.json"
    recs = l2_traffic.load_records(records)
    assert l2_traffic.run_title(records, recs).startswith("H200, run 2026-11-27f:")
    whole = RESULTS / "h100-2026-11-28c.json"
    assert l2_traffic.run_title(whole, l2_traffic.load_records(whole)).startswith("H100, run 2026-11-28c:")
    png = tmp_path / "traffic.png"
    l2_traffic.plot(l2_traffic.sparse_tilings(recs, records), png, "t")
    assert int.from_bytes(png.read_bytes()[16:20], "big") <= 1200
