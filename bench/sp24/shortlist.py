"""Which configurations a run times: the sweep's short list on a GPU that has been measured before.

The sweep (``sweep.py``) lists every tiling worth trying, about 2,450 (kernel, shape, token count,
configuration) timings and 350 compiles in all; most of them lost clearly in every committed run
of the same GPU. The issue asks for a small autotune space, since compiling costs device time.
So by default a run times, for each kernel and token count, the configurations that were among
the ``TOP`` fastest of their kernel on some shape in a committed run of this GPU (the twins the
options tables pair are among them), and every configuration never timed there at that token
count: a tiling new since the last run is timed once, whatever it is. A GPU with no committed run
gets the whole sweep, and so does ``bench/sparse24.py --explore``.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

TOP = 3  # the fastest configurations of each case that stay on the list
RESULTS = Path(__file__).resolve().parents[1] / "results"


@dataclass(frozen=True)
class Shortlist:
    """Per ``(kernel, M)``: the labels that placed among the fastest, and every label ever timed."""

    fastest: dict[tuple[str, int], frozenset[str]]
    timed: dict[tuple[str, int], frozenset[str]]
    runs: tuple[str, ...]  # the committed runs it was read from

    def keeps(self, kernel: str, m: int, label: str) -> bool:
        key = (kernel, m)
        return label in self.fastest.get(key, ()) or label not in self.timed.get(key, ())


def committed_runs(gpu: str, results: Path = RESULTS) -> list[Path]:
    """The committed records of ``gpu`` (its short name, ``dispatch.gpu_key``): whole runs
    (``<gpu>-<date>[letter].json``) and runs that came back in part (``partial/<gpu>-*/sweep.json``)."""
    whole = re.compile(rf"{re.escape(gpu)}-\d{{4}}-\d{{2}}-\d{{2}}[a-z]?\.json")
    runs = [p for p in sorted(results.glob(f"{gpu}-*.json")) if whole.fullmatch(p.name)]
    return runs + sorted(results.glob(f"partial/{gpu}-*/sweep.json"))


def shortlist(gpu: str, results: Path = RESULTS, top: int = TOP) -> Shortlist | None:
    """The short list from ``gpu``'s committed runs, or None where there is none (the whole sweep)."""
    if top < 1:
        raise ValueError(f"top must be at least 1 configuration per case, got {top}")
    runs = committed_runs(gpu, results)
    if not runs:
        return None
    fastest, timed = defaultdict(set), defaultdict(set)
    for path in runs:
        for rec in json.loads(path.read_text()):
            method = rec.get("method", "")
            if not method.startswith("repro_") or method == "repro_dispatch" or not rec.get("sweep"):
                continue
            key = (method.removeprefix("repro_"), rec["M"])
            ranked = sorted(rec["sweep"], key=lambda entry: entry[1])
            timed[key].update(label for label, _ in ranked)
            fastest[key].update(label for label, _ in ranked[:top])
    freeze = lambda d: {key: frozenset(labels) for key, labels in d.items()}  # noqa: E731
    return Shortlist(freeze(fastest), freeze(timed), tuple(str(p.relative_to(results)) for p in runs))


def sweep_size(keeps=None) -> tuple[int, int]:
    """The timings and the compile jobs of a run over all the benchmark's cases, narrowed by
    ``keeps`` (``Shortlist.keeps``; None: the whole sweep). The docs quote them."""
    from .common import KERNELS, MS, SHAPES
    from .sweep import case_configs, precompile_jobs

    timings = sum(len(case_configs(kernel, n, m, k, keeps)) for n, k in SHAPES for m in MS for kernel in KERNELS)
    return timings, len(precompile_jobs(SHAPES, MS, keeps))
