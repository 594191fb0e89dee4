"""``bench/host_launch.py``: the host's share of one ``spmma`` launch, measured without a GPU.

It runs as a user runs it (its own process, Triton compiled rather than interpreted) with few
calls: every row there, each having taken the way it names (the script checks that and exits
otherwise), and clear refusals of what it cannot measure. The times themselves are not judged.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from repro.kernels import dispatch
from repro.kernels.fragments import SpmmaConfig, WgmmaConfig

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "host_launch.py"
CONFIGS = {"spmma": SpmmaConfig, "wgmma": WgmmaConfig}
ROWS = (
    "Triton's launch, kernel[grid](...)",
    "fast_launch.launch",
    "route without a bound launch (choice, run_choice)",
    "route after the input checks, launch bound (_product)",
    "the same, x as [M, 1, K] (a model's decode step)",
    "route after the input checks, fast launch off",
    "bound launch alone",
    "output allocation (x.new_empty)",
)


def _run(*args, **env_vars):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "REPRO_FAST_LAUNCH")}
    env.update(env_vars)
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300)


def _committed_choice(monkeypatch, m: int):
    """What the committed sm_90 table gives a 4096x4096 fp16 weight in fragment order at M = m."""
    monkeypatch.setattr(dispatch, "arch_name", lambda device: "sm90")
    monkeypatch.setattr(dispatch, "gpu_name", lambda device: "NVIDIA H200")
    monkeypatch.setattr(dispatch, "_sm_count", lambda device: 132)
    dispatch._cached_choice.cache_clear()
    try:
        return dispatch._cached_choice(4096, 4096, m, torch.float16, 0, "fragments")
    finally:
        dispatch._cached_choice.cache_clear()


def test_every_row_is_measured_on_the_way_it_names(tmp_path, monkeypatch):
    done = _run("--calls", "20", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "cpu-host-launch.json").read_text())
    assert result["calls"] == 20 and result["triton"] and result["torch"]
    assert [(r["M"], r["call"]) for r in result["rows"]] == [(m, row) for m in (1, 16) for row in ROWS]
    assert all(r["us"] > 0 for r in result["rows"])
    for r in result["rows"]:  # the committed table's pick: one of our kernels and its tiling
        if r["call"] != ROWS[-1]:
            method, label = r["cfg"].split()
            assert _committed_choice(monkeypatch, r["M"]) == dispatch.Choice(method, CONFIGS[method].from_label(label))
    report = (tmp_path / "cpu-host-launch.md").read_text()
    assert report.count("\n| 1 |") == len(ROWS) and "bench/host_launch.py" in report


@pytest.mark.parametrize(
    "args, env, says",
    [
        (("--calls", "0"), {}, "--calls must be at least 1, got 0"),
        ((), {"TRITON_INTERPRET": "1"}, "unset TRITON_INTERPRET"),
        ((), {"REPRO_FAST_LAUNCH": "0"}, "unset REPRO_FAST_LAUNCH"),
    ],
    ids=["no calls", "interpreter", "fast launch off"],
)
def test_what_it_cannot_measure_is_refused_with_the_reason(tmp_path, args, env, says):
    done = _run(*args, "--out", str(tmp_path), **env)
    assert done.returncode != 0 and says in done.stderr
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.fixture
def host_launch(monkeypatch):
    """The script as a module (its import-time refusal of the interpreter lifted for the import)."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("REPRO_FAST_LAUNCH", raising=False)
    spec = importlib.util.spec_from_file_location("host_launch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "way, reaches_launcher, says",
    [("triton", True, None), (None, True, "5 of 5 calls went the triton way"),
     ("bound", True, "5 of 5 calls went the triton way"), ("triton", False, "0 launches reached the launcher")],
    ids=["as named", "named none", "named bound", "no launch"],
)
def test_a_row_that_does_not_take_the_way_it_names_stops_the_run(host_launch, way, reaches_launcher, says):
    """The check each row passes before it is timed, on a call that goes Triton's way."""
    kernel = host_launch.StandInKernel()

    class Kernel:  # a kernel whose Triton path launches the compiled stand-in (or, broken, nothing)
        def run(self, *args, **kwargs):
            if reaches_launcher:
                kernel.run(1, 1, 1, 0, kernel.function, kernel.packed_metadata, None, None, None)

    fn = Kernel()
    check = lambda: host_launch.check_way("row", lambda: fn.run(), way, fn, kernel)  # noqa: E731
    if says is None:
        check()
    else:
        with pytest.raises(SystemExit, match=says):
            check()
    assert "run" not in vars(fn)  # the counter is gone


def test_the_stand_in_launcher_calls_the_hooks_as_tritons_does(host_launch):
    """Triton's launcher wrapper around the stand-in's native launch: hooks called with the
    launch metadata, enter then exit; None skipped."""
    kernel, seen = host_launch.StandInKernel(), []
    kernel.run(2, 1, 1, 0, kernel.function, kernel.packed_metadata, "metadata", lambda m: seen.append(("enter", m)),
               lambda m: seen.append(("exit", m)), 7, 8)
    kernel.run(2, 1, 1, 0, kernel.function, kernel.packed_metadata, None, None, None, 7, 8)
    assert seen == [("enter", "metadata"), ("exit", "metadata")] and kernel.launches == 2
