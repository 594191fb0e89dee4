"""The generated book page "Results at a glance": every chapter's headline metrics beside the paper's."""

from __future__ import annotations

import json
from pathlib import Path

from .results import load_all

HEADER = """# Results at a glance

Generated from `results/*.json`, the records that each chapter writes when it runs (here: the run that
built this book). Every number below is produced by the code of its chapter. The reference column holds
the paper's numbers, or the closest published figures where the paper's own are not available (each
chapter names its source). Small-scale runs on 2 CPU cores are not
expected to match paper-scale numbers: each chapter explains the differences.

"""


def flatten(prefix: str, value) -> list[tuple[str, object]]:
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            out += flatten(f"{prefix}.{k}" if prefix else str(k), v)
        return out
    return [(prefix, value)]


def fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def chapter_section(result: dict) -> str:
    paper = dict(flatten("", result.get("paper", {})))
    lines = [f"## {result['chapter']}", "",
             f"Profile `{result['profile']}`, seed {result.get('seed')}, wall time "
             f"{result['wall_time_s']:.0f} s, commit `{result.get('git_commit') or 'uncommitted'}`.", "",
             "| metric | this book | paper |", "|---|---|---|"]
    for key, value in flatten("", result.get("metrics", {})):
        mark = " (headline)" if key == result.get("headline") else ""
        lines.append(f"| `{key}`{mark} | {fmt(value)} | {fmt(paper.get(key))} |")
    return "\n".join(lines) + "\n"


def render(results_dir: Path | None = None) -> str:
    results = load_all(results_dir)
    if not results:
        return HEADER + "No chapter has been run yet: `make book` runs them all.\n"
    return HEADER + "\n".join(chapter_section(r) for r in results)


def render_assets() -> str:
    """The table of bundled assets, from the manifest (included by the reproducibility page)."""
    from .assets import load_manifest

    lines = ["| asset | what | from (registry package) | download | licence | cite |",
             "|---|---|---|---|---|---|"]
    for name, a in load_manifest().items():
        size = sum(s.size for s in a.sources) / 1e6
        sources = ", ".join(f"`{s.requirement}`" for s in a.sources)
        lines.append(f"| `{name}` | {a.description} | {sources} | {size:.0f} MB | {a.licence} | {a.citation} |")
    return "\n".join(lines) + "\n"


def write(path: Path, results_dir: Path | None = None) -> Path:
    """Write the results page, and the assets table beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(results_dir))
    (path.parent / "assets.md").write_text(render_assets())
    return path
