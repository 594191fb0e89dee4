"""The runner: validation before any kernel, failures reported while other chapters still run, clean stops."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from repro import run
from repro.params import ParameterError

HEADER = textwrap.dedent("""\
    ---
    jupytext:
      text_representation: {extension: .md, format_name: myst, format_version: 0.13}
    kernelspec: {display_name: Python (repro), language: python, name: repro}
    ---
    """)


def chapter(body: str) -> str:
    cell = ('```{code-cell} ipython3\n:tags: [parameters, remove-cell]\n\n'
            'profile: str = "quick"  # profile\nseed: int = 0  # seed\nfail: bool = False  # raise on purpose\n'
            '```\n\n')
    return HEADER + "\n# Demo\n\n" + cell + "```{code-cell} ipython3\n" + body + "\n```\n"


RECORDING = ("from repro import notebook\nch = notebook.setup(SLUG, globals())\n"
             "assert not fail, 'failing on purpose'\nch.record({'answer': 42 + seed}, headline='answer')")


@pytest.fixture
def demo_notebooks(tmp_path, monkeypatch):
    folder = tmp_path / "notebooks"
    (folder / "profiles" / "smoke").mkdir(parents=True)
    for slug, fail in (("97_first", False), ("98_broken", True), ("99_last", False)):
        (folder / f"{slug}.md").write_text(chapter(RECORDING.replace("SLUG", repr(slug))))
        (folder / "profiles" / "smoke" / f"{slug}.yaml").write_text(f"fail: {str(fail).lower()}\n")
    monkeypatch.setattr(run, "NOTEBOOKS", folder)
    return folder


def test_unknown_parameter_fails_before_any_kernel_naming_it(demo_notebooks, tmp_path, monkeypatch):
    monkeypatch.setattr(run, "execute", lambda *a, **k: pytest.fail("a kernel was started"))
    with pytest.raises(ParameterError, match="no_such_param.*profile \\(str\\), seed \\(int\\)"):
        run.run([], "smoke", {"no_such_param": 1}, out=tmp_path / "out")


def test_wrong_type_fails_before_any_kernel(demo_notebooks, tmp_path, monkeypatch):
    monkeypatch.setattr(run, "execute", lambda *a, **k: pytest.fail("a kernel was started"))
    with pytest.raises(ParameterError, match="'seed' must be of type int"):
        run.run(["97_first"], "smoke", {"seed": "abc"}, out=tmp_path / "out")


def test_unknown_chapter_and_profile_are_rejected(demo_notebooks):
    with pytest.raises(ParameterError, match="unknown chapter 'nope'; available: 97_first"):
        run.plan_chapter("nope", "smoke", {})
    with pytest.raises(ParameterError, match="choose one of smoke, quick, full"):
        run.run(["97_first"], "fast", {})
    with pytest.raises(ParameterError, match="jobs must be at least 1, got 0"):
        run.run(["97_first"], "smoke", {}, jobs=0)
    with pytest.raises(ParameterError, match="cell_timeout must be a positive number of seconds, got -5"):
        run.run(["97_first"], "smoke", {}, cell_timeout=-5)


def test_an_output_folder_that_cannot_be_made_fails_before_any_kernel(demo_notebooks, tmp_path, monkeypatch):
    monkeypatch.setattr(run, "execute", lambda *a, **k: pytest.fail("a kernel was started"))
    a_file = tmp_path / "results.txt"
    a_file.write_text("earlier results\n")
    with pytest.raises(ParameterError, match="cannot create the output folder .*results.txt/executed: Not a directory"):
        run.run(["97_first"], "smoke", {}, out=a_file)
    assert a_file.read_text() == "earlier results\n"


@pytest.mark.slow
def test_failing_chapter_is_reported_and_the_others_still_run(demo_notebooks, tmp_path):
    out = tmp_path / "out"
    outcomes = run.run([], "smoke", {"seed": 1}, jobs=2, out=out)
    status = {o.slug: o.status for o in outcomes}
    assert status == {"97_first": "ok", "98_broken": "failed", "99_last": "ok"}
    broken = next(o for o in outcomes if o.slug == "98_broken")
    assert "failing on purpose" in broken.message
    record = json.loads((out / "results" / "99_last.json").read_text())
    assert record["profile"] == "smoke" and record["params"]["seed"] == 1 and record["metrics"]["answer"] == 43
    assert (out / "executed" / "97_first.ipynb").is_file()
    assert (out / "executed" / "failed" / "98_broken.ipynb").is_file()
    assert not (out / "results" / "98_broken.json").exists()
    table = run.summary_table(outcomes)
    assert "answer = 43" in table and "failed" in table


SLEEPER = HEADER + textwrap.dedent("""
    # Sleeper

    ```{code-cell} ipython3
    :tags: [parameters]

    seed: int = 0  # seed
    ```

    ```{code-cell} ipython3
    import json, os, pathlib, time

    # The runner starts kernels in the notebooks folder: say there that this one is running.
    pathlib.Path("sleeper.json").write_text(json.dumps({"kernel": os.getpid(), "papermill": os.getppid()}))
    time.sleep(600)
    ```
    """)

# The command line with the runner's notebooks folder pointed at the test's.
CLI_ON_FOLDER = ("import sys; from pathlib import Path; from repro import run, __main__; "
                 "run.NOTEBOOKS = Path(sys.argv[1]); sys.exit(__main__.main(sys.argv[2:]))")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=["SIGTERM", "Ctrl-C", "closed-terminal"])
def test_a_stopped_run_stops_its_chapter_and_kernel_and_starts_no_other(demo_notebooks, tmp_path, signum):
    (demo_notebooks / "96_sleeper.md").write_text(SLEEPER)
    (demo_notebooks / "profiles" / "smoke" / "96_sleeper.yaml").write_text("{}\n")
    marker, out, temp = demo_notebooks / "sleeper.json", tmp_path / "out", tmp_path / "temp"
    temp.mkdir()
    cli = subprocess.Popen(
        [sys.executable, "-c", CLI_ON_FOLDER, str(demo_notebooks), "run", "96_sleeper", "97_first",
         "--profile", "smoke", "--out", str(out)],
        env={**os.environ, "TMPDIR": str(temp)}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not marker.exists():
        assert cli.poll() is None and time.monotonic() < deadline, "the sleeper chapter never started"
        time.sleep(0.2)
    pids = json.loads(marker.read_text())
    cli.send_signal(signum)
    try:
        _, stderr = cli.communicate(timeout=120)
        left = [name for name, pid in pids.items() if alive(pid)]
    finally:  # a failing run must not leave its sleeper behind
        for pid in pids.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    assert cli.returncode == 128 + signum, stderr
    assert left == [], f"still running after the run ended: {left}"
    assert "96_sleeper: failed" in stderr and "interrupted" in stderr
    assert "97_first: running" not in stderr
    assert (out / "executed" / "failed" / "96_sleeper.ipynb").is_file()
    assert not (out / "results" / "97_first.json").exists()
    assert list(temp.iterdir()) == []  # the runner's folder and the kernel's connection file are gone


def test_cli_rejects_unknown_parameter_quickly_with_nonzero_exit():
    proc = subprocess.run([sys.executable, "-m", "repro", "run", "00_toolbox", "-p", "no_such_param=1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "no_such_param" in proc.stderr and "n_ppl_tokens (int)" in proc.stderr


def test_cli_lists_parameters_with_types_defaults_and_help():
    proc = subprocess.run([sys.executable, "-m", "repro", "params", "00_toolbox"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("n_ppl_tokens"))
    assert "int" in line and "1024" in line and "perplexity" in line
