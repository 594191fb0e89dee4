import json
import math
import subprocess
import sys

import numpy as np
import pytest

from repro import results
from repro.results_page import render


def test_record_writes_every_field(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    path = results.record("99_demo", "smoke", {"seed": 1}, 1, 2.345,
                          {"ppl": np.float32(12.5), "table": {"2:4": {"wanda": 3}}}, {"ppl": 10.0}, "ppl")
    data = json.loads(path.read_text())
    assert set(data) == {"chapter", "profile", "params", "seed", "wall_time_s", "versions", "git_commit",
                         "metrics", "paper", "headline"}
    assert data["metrics"]["ppl"] == 12.5 and data["metrics"]["table"]["2:4"]["wanda"] == 3
    assert data["wall_time_s"] == 2.35 and data["versions"]["python"]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_non_finite_numbers_become_null_and_tuples_lists():
    assert results.to_json({"a": float("nan"), "b": (1, math.inf)}) == {"a": None, "b": [1, None]}


def test_unserialisable_value_is_rejected_by_name():
    with pytest.raises(TypeError, match="object"):
        results.to_json({"bad": object()})


def test_headline_must_be_a_recorded_metric(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    with pytest.raises(KeyError, match="not one of the metrics"):
        results.record("99_demo", "smoke", {}, 0, 1.0, {"ppl": 1.0}, headline="acc")
    assert not list(tmp_path.iterdir())


def test_results_page_tabulates_metrics_against_paper(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    results.record("01_demo", "quick", {}, 0, 60.0, {"ppl": {"2:4": 20.5}}, {"ppl": {"2:4": 11.0}}, None)
    page = render(tmp_path)
    assert "| `ppl.2:4` | 20.5 | 11 |" in page


def test_results_page_refuses_a_results_folder_that_does_not_exist(tmp_path):
    out = tmp_path / "page.md"
    proc = subprocess.run([sys.executable, "-m", "repro", "results-page", "--results", str(tmp_path / "nope"),
                           "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "nope is not a folder" in proc.stderr and not out.exists()
