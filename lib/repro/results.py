"""Each executed chapter's record: ``results/<slug>.json`` for the published (quick) run.

Fields: chapter, profile, params, seed, wall_time_s, versions, git_commit, metrics, paper, headline.
``metrics`` holds the run's headline numbers under the keys its issue names; ``paper`` the paper's
numbers they are compared with.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
TRACKED_PACKAGES = ("torch", "transformers", "triton", "numpy", "pandas", "scikit-learn", "lifelines",
                    "scikit-survival", "papermill", "jupyter-book")


def results_dir() -> Path:
    """Where records go: $REPRO_RESULTS_DIR (set by the runner for non-book profiles) or results/."""
    return Path(os.environ.get("REPRO_RESULTS_DIR", REPO_ROOT / "results"))


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def to_json(value: Any) -> Any:
    """Plain JSON: numpy/torch scalars to Python numbers, NaN/inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot record a value of type {type(value).__name__} in results JSON: {value!r}")


def record(chapter: str, profile: str, params: dict, seed: int | None, wall_time_s: float,
           metrics: dict, paper: dict | None = None, headline: str | None = None) -> Path:
    """Write the chapter's results JSON atomically and return its path."""
    if headline is not None and headline not in metrics:
        raise KeyError(f"headline {headline!r} is not one of the metrics {sorted(metrics)}")
    payload = {
        "chapter": chapter,
        "profile": profile,
        "params": to_json(params),
        "seed": seed,
        "wall_time_s": round(float(wall_time_s), 2),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "metrics": to_json(metrics),
        "paper": to_json(paper or {}),
        "headline": headline,
    }
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{chapter}.json"
    with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as f:
        json.dump(payload, f, indent=2)
    os.replace(f.name, path)
    return path


def load_all(folder: Path | None = None) -> list[dict]:
    folder = folder or results_dir()
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]


def headline_value(result: dict) -> tuple[str, Any]:
    key = result.get("headline")
    if not key:
        return "", None
    return key, result.get("metrics", {}).get(key)
