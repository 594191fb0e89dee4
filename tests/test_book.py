"""Every chapter runs in its smoke profile; the book builds from those outputs; the site is sound."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from repro import run

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.book


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [c["file"] for part in toc["parts"] for c in part["chapters"]]


def test_toc_lists_every_chapter_notebook_and_nothing_missing():
    chapters = sorted(f.split("/")[-1] for f in toc_files() if f.startswith("book/executed/"))
    assert chapters == run.available_chapters()
    for f in toc_files():
        if not f.startswith(("book/executed/", "book/generated/")):
            assert (ROOT / f"{f}.md").is_file(), f


def test_every_chapter_has_a_smoke_and_a_full_profile():
    for slug in run.available_chapters():
        for profile in ("smoke", "full"):
            assert (ROOT / "notebooks" / "profiles" / profile / f"{slug}.yaml").is_file(), (slug, profile)


def exercises(chapter: str) -> list[str]:
    """The numbered items of a chapter's "## Exercises" section, each with its continuation lines."""
    section = re.search(r"^## Exercises\n(.*?)(?=^## )", chapter, re.S | re.M)
    return re.findall(r"^\d+\. .*?(?=^\d+\. |\Z)", section.group(1), re.S | re.M) if section else []


def test_exercises_reader_splits_items_and_keeps_their_continuation_lines():
    text = "## Exercises\n\n1. **A.** First\n   *Hint:* one.\n2. **B.** Second.\n\n## Record of this run\n"
    assert exercises(text) == ["1. **A.** First\n   *Hint:* one.\n", "2. **B.** Second.\n\n"]
    assert exercises("## Other\n1. x\n## Next\n") == []


def test_every_chapter_ends_with_three_to_five_exercises_each_with_a_hint():
    for slug in run.available_chapters():
        items = exercises((ROOT / "notebooks" / f"{slug}.md").read_text())
        assert 3 <= len(items) <= 5, f"{slug}: {len(items)} exercises (DESIGN.md asks for 3 to 5)"
        for item in items:
            assert "*Hint:*" in item, f"{slug}: exercise without a hint: {item.splitlines()[0]}"


def book_sources() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.md")) + sorted((ROOT / "book").glob("*.md")) + [ROOT / "README.md"]


def test_sources_hold_no_control_characters():
    """A tab or backspace in prose comes from an escape slip ("\\text" written as "\\t" + "ext") and breaks
    the rendered math; the sources indent with spaces."""
    for path in book_sources():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            bad = re.search(r"[\x00-\x08\x0b-\x1f]", line)
            assert not bad, f"{path.name}:{number}: control character {bad.group()!r} in {line.strip()[:60]!r}"


def test_figure_text_is_at_least_nine_points():
    """Wide figures are shown at 60-75% of their size in the book's column; 7-8 pt text becomes unreadable."""
    small = re.compile(r"\b(?:fontsize|labelsize|size)=([0-8](?:\.\d+)?)\b")
    for path in sorted((ROOT / "notebooks").glob("*.md")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            found = small.search(line)
            assert not found, f"{path.name}:{number}: figure text of {found.group(1)} pt: {line.strip()[:70]!r}"


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """Every chapter in its smoke profile, with a temp folder of its own to show what the chapters leave there."""
    out = tmp_path_factory.mktemp("smoke")
    scratch = tmp_path_factory.mktemp("chapter_tmp")
    tempfile.gettempdir()  # fixes this process's temp folder first: tempfile reads TMPDIR once per process
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(scratch))  # papermill and the kernels it starts inherit it
        outcomes = run.run([], "smoke", {}, jobs=1, out=out)
    left = sorted(str(p.relative_to(scratch)) for p in scratch.rglob("*"))
    return out, outcomes, left


def test_every_chapter_runs_in_its_smoke_profile(smoke_run):
    out, outcomes, _ = smoke_run
    failed = {o.slug: o.message for o in outcomes if o.status != "ok"}
    assert not failed, failed
    for o in outcomes:
        record = json.loads((out / "results" / f"{o.slug}.json").read_text())
        assert record["profile"] == "smoke" and record["metrics"]
        assert record["headline"] in record["metrics"]
        notebook = json.loads((out / "executed" / f"{o.slug}.ipynb").read_text())
        mimes = {mime for cell in notebook["cells"] for output in cell.get("outputs", [])
                 for mime in output.get("data", {})}
        assert not [m for m in mimes if "widget" in m], f"{o.slug}: progress-bar widgets in a batch run"


def test_chapters_leave_nothing_in_the_temp_folder(smoke_run):
    # A sweep runs a chapter many times: chapter 10 once left its simulated cohort behind on every run
    # (46 MB in the quick profile), and they piled up in /tmp. torch makes its compile-cache folder on
    # import, one for all runs, empty here.
    _, _, left = smoke_run
    assert [p for p in left if not re.fullmatch(r"torchinductor_[^/]+", p)] == []


@pytest.fixture(scope="session")
def site(smoke_run, tmp_path_factory):
    """The book built, strictly, from the smoke outputs in a scratch copy of the book sources."""
    out, outcomes, _ = smoke_run
    assert all(o.status == "ok" for o in outcomes)
    book = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, book / name)
    shutil.copytree(ROOT / "book", book / "book", ignore=shutil.ignore_patterns("executed", "generated"))
    if (ROOT / "bench" / "results").is_dir():
        shutil.copytree(ROOT / "bench" / "results", book / "bench" / "results")
    shutil.copytree(out / "executed", book / "book" / "executed", ignore=shutil.ignore_patterns("failed"))
    subprocess.run([sys.executable, "-m", "repro", "results-page", "--results", str(out / "results"),
                    "--out", str(book / "book" / "generated" / "results.md")], check=True)
    for figures in ("plot_sparse24_format.py", "plot_spmma_loop.py"):  # as `make book` does
        subprocess.run([sys.executable, str(ROOT / "bench" / figures), "--out", str(book / "book" / "generated")],
                       check=True)
    jb = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run([str(jb), "build", str(book), "--warningiserror", "--keep-going"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return book / "_build" / "html"


def test_every_toc_entry_has_a_page(site):
    for f in toc_files():
        assert (site / f"{f}.html").is_file(), f


def test_site_references_no_external_url(site):
    pattern = re.compile(r'(src|href)="https?://')
    offenders = [str(p.relative_to(site)) for p in site.rglob("*")
                 if p.is_file() and p.suffix in {".html", ".js", ".css"}
                 and pattern.search(p.read_text(errors="ignore"))]
    assert not offenders, offenders


def test_math_is_served_locally(site):
    assert (site / "_static" / "mathjax" / "tex-mml-chtml.js").is_file()
    assert "mathjax/tex-mml-chtml.js" in (site / "book" / "executed" / "00_toolbox.html").read_text()


def test_chapter_page_shows_injected_parameters_and_figures(site):
    html = (site / "book" / "executed" / "00_toolbox.html").read_text()
    assert "# Parameters" in html and "n_ppl_tokens" in html
    assert html.count("<img") >= 3
    assert "Traceback" not in html and "An Exception was encountered" not in html


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_chapter_page_screenshot_is_not_blank(site, tmp_path):
    browser = chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: make test installs it as root (apt-get install chromium)")
        pytest.skip("chromium is not installed: sudo apt-get install chromium")
    shot = tmp_path / "page.png"
    page = site / "book" / "executed" / "00_toolbox.html"
    subprocess.run(["timeout", "90", browser, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                    f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file(), "chromium wrote no screenshot"
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    non_white = (pixels < 0.95).any(axis=-1).mean()
    assert pixels.std() > 0.05 and non_white > 0.02, (pixels.std(), non_white)
