"""The kernel page's loop figure: one warp of ``spmma`` in its main loop, as ptxas scheduled it,
without and with ``prefetch``.

    PYTHONPATH=lib python bench/plot_spmma_loop.py [--out book/generated]

Both configurations are compiled for sm_90a (``compile_offline.py``; no GPU needed), and their
loops read from the machine code (with its control bits) and run through ``sp24/sass.py``'s model:
one warp issuing in order at ptxas's stall counts, waiting on its scoreboards, a global load's data
arriving 1,000 cycles after issue. The figure shows three
steady-state iterations: every 16-byte weight load as a bar from issue to arrival, every
``mma.sp``, and the stretches in which the warp waits for memory. ``make book`` runs it (a build output,
like the format diagrams).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # it compiles for sm_90a, which the interpreter cannot

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compile_offline import compile_config  # noqa: E402
from sp24.sass import disassemble, issue_times, main_loop, round_trips  # noqa: E402

from repro.kernels.fragments import SpmmaConfig  # noqa: E402
from repro.plotting import PALETTE, figure_script_out  # noqa: E402

CONFIG = dict(R=1, S=8, U=4, T=2)  # a configuration the benchmark times for 9-16 tokens
LATENCY = 1000
SHOWN = 3  # iterations drawn, after as many to reach the steady state
MEMORY_WAIT = 100  # cycles: longer waits are drawn


def timeline(cfg: SpmmaConfig) -> dict:
    """Weight loads (issue, arrival), ``mma.sp`` issue cycles, waits (start, end) and iteration
    starts of ``SHOWN`` steady-state iterations, in cycles from the first one's start; plus round
    trips per iteration and k-blocks per iteration."""
    loop = main_loop(disassemble(compile_config(cfg, 90, "fp16", False).asm["cubin"]))
    times = issue_times(loop, LATENCY, 2 * SHOWN + 1)[SHOWN:]
    origin = times[0][0]
    flat = [(t - origin, ins) for its in times for t, ins in zip(its, loop)]
    end = flat[len(loop) * SHOWN][0]  # the first instruction after the shown iterations
    shown = [(t, ins) for t, ins in flat if t < end]
    # a wait: the warp issues later than the previous instruction's stall count allows; the ones
    # for memory, not the few tens of cycles of a read barrier or a shared or constant load
    ready = [(t + max(ins.controls.stall, 1), next_t) for (t, ins), (next_t, _) in zip(shown, shown[1:])]
    waits = [(a, b) for a, b in ready if b > a + MEMORY_WAIT]
    mmas = [t for t, ins in shown if ins.op.startswith("HMMA.SP")]
    return dict(
        loads=[(t, t + LATENCY) for t, ins in shown if ins.op.startswith("LDG.E.128")],
        # the 4-byte loads: x's words for the B registers (four per k-block and 8-token tile) and the
        # metadata word (one per k-block)
        small_loads=[(t, t + LATENCY) for t, ins in shown if ins.op.startswith("LDG") and not ins.op.startswith(
            "LDG.E.128")],
        mmas=mmas,
        waits=waits,
        starts=[its[0] - origin for its in times[1:SHOWN]],  # of the second and later iterations
        trips=round_trips(loop, LATENCY),
        kblocks=len(mmas) // (SHOWN * cfg.W * cfg.T),
    )


SMALL_LOADS = "#8fb3d9"  # a lighter blue than the weight loads


def plot(panels: dict[str, dict], path: Path) -> None:
    fig, axes = plt.subplots(len(panels), 1, figsize=(9.5, 3.0 * len(panels)), sharex=True, layout="constrained")
    for ax, (title, tl) in zip(axes, panels.items()):
        for a, b in tl["waits"]:
            ax.axvspan(a / LATENCY, b / LATENCY, color="#e6e6e6", lw=0)
        for i, (a, b) in enumerate(tl["loads"]):
            ax.plot([a / LATENCY, b / LATENCY], [i, i], color=PALETTE[0], lw=2.2, solid_capstyle="butt")
        # the 4-byte loads, one thin line each, stacked in a band of the same height above the weight loads
        base, band = len(tl["loads"]) + 1, len(tl["loads"])
        step = band / max(len(tl["small_loads"]), 1)
        for i, (a, b) in enumerate(tl["small_loads"]):
            ax.plot([a / LATENCY, b / LATENCY], [base + i * step] * 2, color=SMALL_LOADS, lw=0.7,
                    solid_capstyle="butt")
        y = -1.5
        ax.plot([t / LATENCY for t in tl["mmas"]], [y] * len(tl["mmas"]), "|", color=PALETTE[1], ms=9, mew=1.6)
        for start in tl["starts"]:
            ax.axvline(start / LATENCY, color="#555555", lw=0.8, ls=":")
        ax.set_yticks([y, len(tl["loads"]) / 2, base + band / 2],
                      ["mma.sp", "weight\n(16 B loads)", "x and metadata\n(4 B loads)"], fontsize=9)
        ax.set_ylim(-3, base + band + 0.5)
        per_trip = tl["kblocks"] / tl["trips"]
        ax.set_title(
            f"{title}: {tl['kblocks']} k-blocks per iteration, {tl['trips']:.2f} round trips"
            f" ({per_trip:.1f} k-blocks per round trip)",
            fontsize=10,
            loc="left",
        )
    axes[-1].set_xlabel(
        "time (units of the 1,000-cycle load latency); grey: the warp waits (over 100 cycles); dotted: iterations"
    )
    fig.savefig(path)
    plt.close(fig)


def main() -> dict[str, dict]:
    """Draw the figure; returns its panels (the timelines drawn)."""
    out = figure_script_out(__doc__.splitlines()[0])
    label = SpmmaConfig(**CONFIG).label()
    panels = {
        f"{label}, plain": timeline(SpmmaConfig(**CONFIG)),
        f"{label}p, prefetch (two register sets)": timeline(SpmmaConfig(**CONFIG, prefetch=True)),
    }
    plot(panels, out / "spmma-loop.png")
    print(f"wrote spmma-loop.png in {out}")
    return panels


if __name__ == "__main__":
    main()
