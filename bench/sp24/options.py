"""What each ``spmma`` option buys, read from a run's sweeps: every configuration is timed, so a
configuration with an option and the same tiling without it form a measured pair."""

from __future__ import annotations

import statistics
from dataclasses import replace

from repro.kernels.fragments import SpmmaConfig

OPTIONS = ("wide_x", "prefetch", "interleave", "l2_ahead")  # SpmmaConfig's options (off: the default)


def option_pairs(sweep: list, option: str) -> list[tuple[str, str, float]]:
    """``(without, with, time without / time with)`` for each measured pair of ``sweep``
    (``[[label, us], ...]``, as a ``repro_spmma`` record stores it): two configurations that
    differ in ``option`` alone."""
    times = {SpmmaConfig.from_label(label): us for label, us in sweep}
    pairs = []
    for cfg, us in times.items():
        base = replace(cfg, **{option: SpmmaConfig.__dataclass_fields__[option].default})
        if getattr(cfg, option) and base in times:
            pairs.append((base.label(), cfg.label(), times[base] / us))
    return pairs


def options_markdown(recs: list[dict]) -> str:
    """Per M: the median and range, over the pairs of all shapes, of the time without each option
    divided by the time with it (> 1: the option is faster); empty for a run without spmma."""
    sweeps = [r for r in recs if r["method"] == "repro_spmma" and r.get("sweep")]
    if not sweeps:
        return ""
    lines = ["| M | " + " | ".join(f"`{name}`" for name in OPTIONS) + " |", "|---" * (len(OPTIONS) + 1) + "|"]
    for m in sorted({r["M"] for r in sweeps}):
        cells = []
        for option in OPTIONS:
            ratios = [p[2] for r in sweeps if r["M"] == m for p in option_pairs(r["sweep"], option)]
            if ratios:
                cells.append(
                    f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}, {len(ratios)} pairs)"
                )
            else:
                cells.append("–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
