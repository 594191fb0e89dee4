"""bench/test_groups.sh: the GPU check's test groups, each in its own process, all started at once;
a group that fails switches off its own form for the benchmark and nothing else."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ROOT / "bench" / "test_groups.sh"
GPU_CHECK = ROOT / "bench" / "gpu_check.sh"


def _bash(script: str, run: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "RUN": str(run)}
    return subprocess.run(["bash", "-c", f"source {GROUPS}\n{script}"], env=env, capture_output=True, text=True,
                          timeout=60, cwd=run)


def test_a_failed_or_timed_out_group_switches_off_its_own_variable_and_no_other(tmp_path):
    run = _bash(
        """group_start fine 20 sh -c 'echo 3 passed'
        group_start broken 20 sh -c 'echo 1 failed, 2 passed; exit 1'
        group_start stuck 1 sleep 30
        group_finish fine VAR_FINE
        group_finish broken VAR_BROKEN "the broken form"
        echo "returned $?"
        group_finish stuck VAR_STUCK
        echo "VAR_FINE=${VAR_FINE-unset} VAR_BROKEN=$VAR_BROKEN VAR_STUCK=$VAR_STUCK"
        """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "fine exit 0: 3 passed",
        "broken exit 1: 1 failed, 2 passed",
        "the broken form failed its GPU tests: benchmarking without it (VAR_BROKEN=0)",
        "returned 1",
        "stuck exit 124: ",  # timeout's status; nothing printed
        "the stuck group failed its GPU tests: benchmarking without it (VAR_STUCK=0)",
        "VAR_FINE=unset VAR_BROKEN=0 VAR_STUCK=0",
    ]
    assert (tmp_path / "broken.log").read_text() == "1 failed, 2 passed\n"


def test_groups_run_at_the_same_time(tmp_path):
    """The first group waits for a file only the second one writes: it passes only if the second
    started before the first ended."""
    run = _bash(
        """group_start waiter 20 sh -c 'for i in $(seq 100); do [ -f flag ] && exit 0; sleep 0.1; done; exit 1'
        group_start writer 20 touch flag
        group_finish waiter
        group_finish writer
        """,
        tmp_path,
    )
    assert run.stdout.splitlines() == ["waiter exit 0: ", "writer exit 0: "], run.stderr


def test_finishing_a_group_never_started_is_refused_by_name(tmp_path):
    run = _bash("group_start one 5 true\ngroup_finish two VAR\necho \"returned $? VAR=${VAR-unset}\"", tmp_path)
    assert "group_finish: no group 'two' was started (started: one)" in run.stderr
    assert run.stdout.strip() == "returned 2 VAR=unset"


def test_the_gpu_check_starts_every_group_before_it_waits_for_any():
    script = GPU_CHECK.read_text()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    assert 'source "$(dirname "$0")/test_groups.sh"' in code
    started = re.findall(r"^\s*(?:wgmma_group|group_start) (\S+)", code, re.M)
    finished = re.findall(r"^\s*group_finish (\S+)", code, re.M)
    assert set(started) == set(finished) and len(started) == 7  # five forms, the main tests, the compiles
    assert max(code.index(f"group_start {n}") if f"group_start {n}" in code else code.index(f"wgmma_group {n}")
               for n in started) < min(code.index(f"group_finish {n}") for n in finished)
    assert code.index("group_finish precompile") < code.index("bench/sparse24.py --out")
    assert 'group_start precompile 300 python3 bench/sparse24.py --precompile-only "$@"' in code  # the run's own args


def test_every_group_log_is_one_ingest_keeps():
    sys.path.insert(0, str(ROOT / "bench"))
    from ingest_sparse24 import EXTRAS

    code = GPU_CHECK.read_text()
    for name in re.findall(r"^\s*(?:wgmma_group|group_start) (\S+)", code, re.M):
        assert f"{name}.log" in EXTRAS, name


def test_every_profiled_case_is_a_tiling_the_sweep_times_at_that_token_count():
    """The profiles gpu_check.sh takes with ncu name a kernel, a tiling, M and a shape: each must be
    one the benchmark sweeps, or the profile would be of a tiling nobody measured (or fail to parse)."""
    sys.path.insert(0, str(ROOT / "bench"))
    sys.path.insert(0, str(ROOT / "lib"))
    from sp24.common import SHAPES
    from sp24.sweep import kernel_configs

    cases = re.findall(r'"(spmma|wgmma) (\S+) (\d+) (\d+)x(\d+)"', GPU_CHECK.read_text())
    assert len(cases) >= 6
    for kernel, label, m, n, k in cases:
        assert (int(n), int(k)) in SHAPES
        assert label in {cfg.label() for cfg in kernel_configs(kernel, int(m))}, (kernel, label, m)
