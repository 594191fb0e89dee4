"""What each option of the fragment-order kernels buys, read from a run's sweeps: every
configuration is timed, so a configuration with an option and the same tiling without it form a
measured pair."""

from __future__ import annotations

import statistics
from dataclasses import replace

from repro.kernels.fragments import SpmmaConfig, WgmmaConfig

# each kernel's options (off: the default) and its configuration class
OPTIONS = ("wide_x", "prefetch", "interleave", "chain", "l2_ahead", "stages", "split_k")
KERNEL_OPTIONS = {
    "spmma": (SpmmaConfig, OPTIONS),
    # cluster: a tile's splits meeting in a cluster, against the workspace; share: x shared by row tiles
    "wgmma": (WgmmaConfig, ("ahead", "stages", "x_steps", "sparse", "split_k", "cluster", "share")),
}


def option_pairs(sweep: list, option: str, kernel: str = "spmma") -> list[tuple[str, str, float]]:
    """``(without, with, time without / time with)`` for each measured pair of ``sweep``
    (``[[label, us], ...]``, as a ``repro_<kernel>`` record stores it): two configurations that
    differ in ``option`` alone, except that ``spmma``'s ``stages`` is set against the register
    double buffer it replaces (the same tiling with ``prefetch``)."""
    config = KERNEL_OPTIONS[kernel][0]
    times = {config.from_label(label): us for label, us in sweep}
    off = config.__dataclass_fields__[option].default
    pairs = []
    for cfg, us in times.items():
        base = replace(cfg, **{option: off})
        if option == "stages" and kernel == "spmma":  # against the register double buffer it replaces
            base = replace(base, prefetch=True)
        if getattr(cfg, option) != off and base in times:
            pairs.append((base.label(), cfg.label(), times[base] / us))
    return pairs


def options_markdown(recs: list[dict], kernel: str = "spmma") -> str:
    """Per M: the median and range, over the pairs of all shapes, of the time without each option
    divided by the time with it (> 1: the option is faster); only the options the run measured
    in some pair; empty for a run without the kernel."""
    options = KERNEL_OPTIONS[kernel][1]
    sweeps = [r for r in recs if r["method"] == f"repro_{kernel}" and r.get("sweep")]
    ms = sorted({r["M"] for r in sweeps})
    ratios = {
        (option, m): [p[2] for r in sweeps if r["M"] == m for p in option_pairs(r["sweep"], option, kernel)]
        for option in options
        for m in ms
    }
    measured = [option for option in options if any(ratios[option, m] for m in ms)]
    if not measured:
        return ""
    lines = ["| M | " + " | ".join(f"`{name}`" for name in measured) + " |", "|---" * (len(measured) + 1) + "|"]
    for m in ms:
        cells = [_cell(ratios[option, m]) for option in measured]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(ratios: list[float]) -> str:
    if not ratios:
        return "–"
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}, {len(ratios)} pairs)"
