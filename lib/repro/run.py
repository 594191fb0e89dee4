"""Execute chapters: MyST notebook --jupytext--> .ipynb --papermill (profile + overrides)--> executed.

Every chapter's parameters are checked before any kernel starts. Chapters run in separate papermill
processes (``jobs`` at a time); a failing chapter is reported and the others still run.

Where outputs go: the ``quick`` profile is what the published book shows, so its notebooks land in
``book/executed/`` and its records in ``results/``; any other profile writes under
``_build/runs/<profile>/`` so that a smoke or full run never overwrites the book's outputs.

An interrupted run (Ctrl-C, or SIGTERM or SIGHUP through the command line) stops its papermill processes the way
Ctrl-C stops one at a terminal, so each shuts its kernel down and saves its notebook as far as it got (in
``failed/``); chapters not yet started are not started. Papermill runs in a session of its own, so the
interrupt reaches it once, from here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import params as params_mod
from .results import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"
PROFILES = ("smoke", "quick", "full")
CELL_TIMEOUT_S = {"smoke": 300, "quick": 900, "full": 86400}
STOP_GRACE_S = 60  # how long an interrupted papermill gets to shut its kernel down before it is killed
NOT_STARTED = "not started: the run was interrupted"


@dataclass(frozen=True)
class Plan:
    slug: str
    notebook: Path
    values: dict


@dataclass
class Outcome:
    slug: str
    status: str  # "ok" or "failed"
    wall_s: float
    headline: str = ""
    message: str = ""


def available_chapters() -> list[str]:
    return sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.md"))


def output_dirs(profile: str, out: Path | None = None) -> tuple[Path, Path]:
    """(executed notebooks folder, results folder) for a profile."""
    if out is not None:
        return out / "executed", out / "results"
    if profile == "quick":
        return REPO_ROOT / "book" / "executed", REPO_ROOT / "results"
    base = REPO_ROOT / "_build" / "runs" / profile
    return base / "executed", base / "results"


def plan_chapter(slug: str, profile: str, overrides: dict) -> Plan:
    chapters = available_chapters()
    if slug not in chapters:
        raise params_mod.ParameterError(f"unknown chapter {slug!r}; available: {', '.join(chapters)}")
    notebook = NOTEBOOKS / f"{slug}.md"
    declared = params_mod.notebook_parameters(notebook)
    profile_file = NOTEBOOKS / "profiles" / profile / f"{slug}.yaml"
    if profile != "quick" and not profile_file.is_file():
        raise params_mod.ParameterError(f"{slug}: no {profile} profile ({profile_file} is missing)")
    values = {**params_mod.load_profile(profile_file), **overrides}
    if "profile" in declared:
        values["profile"] = profile
    return Plan(slug, notebook, params_mod.resolve(declared, values, slug))


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal other than Ctrl-C (the command line turns SIGTERM and SIGHUP into this)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Papermills:
    """The papermill processes of a run, so that an interrupted run can stop them and start no more."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self.stopping = False

    def start(self, cmd: list[str], env: dict) -> subprocess.Popen | None:
        """Start one (None once the run is stopping)."""
        with self._lock:
            if self.stopping:
                return None
            proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
            self._running.add(proc)
            return proc

    def finished(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._running.discard(proc)

    def stop(self, grace_s: float = STOP_GRACE_S) -> int:
        """Interrupt every running papermill, wait for them to exit, kill any still there after grace_s.

        Returns how many were running. A second interrupt while waiting kills them at once.
        """
        with self._lock:
            self.stopping = True
            procs = list(self._running)
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace_s
        try:
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        return len(procs)


def kernel_name() -> str:
    from jupyter_client.kernelspec import find_kernel_specs

    return "repro" if "repro" in find_kernel_specs() else "python3"


def execute(plan: Plan, executed: Path, results: Path, cell_timeout: int, progress: bool,
            papermills: Papermills) -> Outcome:
    import jupytext

    start = time.perf_counter()
    record = results / f"{plan.slug}.json"
    before = record.stat().st_mtime_ns if record.exists() else None
    with tempfile.TemporaryDirectory(prefix=f"repro-{plan.slug}-") as tmp:
        source, output, values = Path(tmp) / "in.ipynb", Path(tmp) / "out.ipynb", Path(tmp) / "p.yaml"
        jupytext.write(jupytext.read(plan.notebook), source, fmt="ipynb")
        values.write_text(yaml.safe_dump(plan.values))
        ipython_dir = batch_ipython_dir(Path(tmp))
        cmd = [sys.executable, "-m", "papermill", str(source), str(output), "-f", str(values),
               "--cwd", str(NOTEBOOKS), "-k", kernel_name(), "--execution-timeout", str(cell_timeout),
               "--log-level", "ERROR", "--progress-bar" if progress else "--no-progress-bar"]
        env = {**os.environ, "REPRO_RESULTS_DIR": str(results), "PYTHONHASHSEED": "0",
               "IPYTHONDIR": str(ipython_dir),
               "PYDEVD_DISABLE_FILE_VALIDATION": "1", "TQDM_DISABLE": "1",
               "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
        proc = papermills.start(cmd, env)
        if proc is None:
            return Outcome(plan.slug, "failed", 0.0, message=NOT_STARTED)
        try:
            _, stderr = proc.communicate()
        finally:
            papermills.finished(proc)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            if output.exists():
                failed = executed / "failed"
                failed.mkdir(exist_ok=True)
                os.replace(output, failed / f"{plan.slug}.ipynb")
            message = "interrupted" if papermills.stopping else error_summary(stderr)
            return Outcome(plan.slug, "failed", wall, message=message)
        os.replace(output, executed / f"{plan.slug}.ipynb")
    if not record.exists() or record.stat().st_mtime_ns == before:
        return Outcome(plan.slug, "failed", wall, message="the chapter ran but recorded no results")
    data = json.loads(record.read_text())
    key = data.get("headline") or ""
    value = data.get("metrics", {}).get(key) if key else None
    return Outcome(plan.slug, "ok", wall, headline=f"{key} = {format_value(value)}" if key else "")


BATCH_STARTUP = """\
# Written by repro.run for batch runs. Progress bars are for people at a keyboard: in the book they would
# be half-drawn widgets (which also pull require.js from a CDN). tqdm.auto becomes the plain tqdm, which
# TQDM_DISABLE=1 switches off.
import tqdm.auto
import tqdm.std

tqdm.auto.tqdm = tqdm.std.tqdm
tqdm.auto.trange = tqdm.std.trange
"""


def batch_ipython_dir(folder: Path) -> Path:
    """An IPython directory whose start-up script turns off progress bars in the kernel."""
    startup = folder / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-repro-batch.py").write_text(BATCH_STARTUP)
    return folder / "ipython"


def error_summary(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    interesting = [ln for ln in lines if "Error" in ln or "Exception" in ln]
    return (interesting or lines or ["(no output)"])[-1][:300]


def format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run(slugs: list[str], profile: str, overrides: dict, jobs: int = 1, out: Path | None = None,
        cell_timeout: int | None = None) -> list[Outcome]:
    if profile not in PROFILES:
        raise params_mod.ParameterError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if jobs < 1:
        raise params_mod.ParameterError(f"jobs must be at least 1, got {jobs}")
    if cell_timeout is not None and cell_timeout <= 0:
        raise params_mod.ParameterError(f"cell_timeout must be a positive number of seconds, got {cell_timeout}")
    plans = [plan_chapter(s, profile, overrides) for s in (slugs or available_chapters())]
    executed, results = output_dirs(profile, out)
    for folder in (executed, results):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # e.g. --out names a file, or a folder we may not write to
            raise params_mod.ParameterError(f"cannot create the output folder {folder}: {err.strerror}") from err
    timeout = cell_timeout or CELL_TIMEOUT_S[profile]
    progress = jobs == 1 and sys.stderr.isatty()
    papermills = Papermills()

    def one(item):
        i, plan = item
        if papermills.stopping:
            return Outcome(plan.slug, "failed", 0.0, message=NOT_STARTED)
        print(f"[{i}/{len(plans)}] {plan.slug}: running ({profile})", file=sys.stderr, flush=True)
        outcome = execute(plan, executed, results, timeout, progress, papermills)
        print(f"[{i}/{len(plans)}] {plan.slug}: {outcome.status} in {outcome.wall_s:.1f} s"
              + (f" - {outcome.message}" if outcome.message else ""), file=sys.stderr, flush=True)
        return outcome

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        return list(pool.map(one, enumerate(plans, 1)))
    except BaseException:  # Ctrl-C or Interrupted: stop the chapters running now, start no others
        pool.shutdown(wait=False, cancel_futures=True)
        n = papermills.stop()
        print(f"interrupted: stopped {n} running chapter(s); their notebooks, as far as they got, are in "
              f"{executed / 'failed'}", file=sys.stderr, flush=True)
        raise
    finally:
        pool.shutdown(wait=True)


def summary_table(outcomes: list[Outcome]) -> str:
    rows = [("chapter", "status", "wall time", "headline metric")]
    rows += [(o.slug, o.status, f"{o.wall_s:.1f} s", o.headline or o.message) for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    lines.insert(1, "-" * max(len(ln) for ln in lines))
    return "\n".join(lines)
