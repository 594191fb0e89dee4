"""Figures for book/sparse24.md from a committed benchmark result (bench/sparse24.py output).

    python bench/plot_sparse24.py [bench/results/h200-2026-11-26.json]

Writes <stem>-speedup.png (speedup vs cuBLAS against M, one panel per layer shape, the issue's
targets drawn) and <stem>-e2e.png (decode tokens/s of the LLaMA-7B-shaped layer stack) next to the
JSON. ``plot_glance`` draws the page's "Results at a glance" figure (bench/ingest_sparse24.py
--glance gives it its data).

The colours of the kernels (``KERNEL_COLORS``) and the markers of the layer shapes
(``SHAPE_MARKERS``) are the ones every figure of the kernel page uses (bench/cross_gpu.py and
bench/l2_traffic.py import them), so that a kernel has one colour and a shape one marker on the page.
Text is 9 pt or more, and figures are at most 10 inches wide at 120 dpi: the book's column shows
them at about 900 pixels.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(BENCH.parent / "lib"))
sys.path.insert(0, str(BENCH))

from sp24.report import roofline_limit  # noqa: E402
from sp24.targets import DECODE_MS, DECODE_SPEEDUP, LARGE_RATIO, MID_MS, MID_SPEEDUP, evaluate  # noqa: E402

DPI = 120
FONT = 10  # pt; nothing on these figures is smaller than SMALL
SMALL = 9

# one colour per kernel (and per library baseline) on every figure of the page
KERNEL_COLORS = {
    "dispatcher": "black",
    "cublas": "#555555",
    "spmma": "tab:orange",
    "wgmma": "tab:brown",  # the sparse form (wgmma.sp), and the kernel as a whole where forms are not told apart
    "wgmma, dense": "#c49c94",  # the dense form, on a weight expanded in registers (a lighter brown)
    "fma": "tab:green",
    "mma": "tab:blue",
    "expand": "tab:purple",
    "triton": "tab:blue",  # the three planar Triton kernels as one family
    "torch_semi_structured": "tab:red",
    "cusparselt": "tab:pink",
}
# one marker (and, where colour does not stand for a kernel, one colour) per LLaMA-7B layer shape
SHAPE_MARKERS = {(4096, 4096): "o", (11008, 4096): "s", (4096, 11008): "^"}
SHAPE_COLORS = {(4096, 4096): "#1b9e77", (11008, 4096): "#7570b3", (4096, 11008): "#d95f02"}
OTHER_MARKERS = ("D", "v", "P", "X")
TARGET_COLOR = "#2a7ab0"
LIMIT_COLOR = "0.6"


def shape_marker(shape: tuple[int, int]) -> str:
    return SHAPE_MARKERS.get(tuple(shape), OTHER_MARKERS[hash(tuple(shape)) % len(OTHER_MARKERS)])


def page_order(shapes) -> list[tuple[int, int]]:
    """The layer shapes in the page's order (that of SHAPE_MARKERS), any others after them."""
    order = list(SHAPE_MARKERS)
    return sorted({tuple(s) for s in shapes}, key=lambda s: (order.index(s) if s in order else len(order), s))


def shape_color(shape: tuple[int, int]) -> str:
    return SHAPE_COLORS.get(tuple(shape), "0.3")


# the kernels the speedup figure draws, beside the dispatcher. The planar Triton kernels (fma, mma,
# expand) are left out: no committed dispatch table picks them any more (their ranges are in the
# summary's table of kernels)
METHODS = {  # method -> (name, style)
    "repro_spmma": ("spmma (mma.sp)", dict(color=KERNEL_COLORS["spmma"], marker="D", ls="--", ms=5)),
    "repro_wgmma": ("wgmma (warpgroup MMA, either form)", dict(color=KERNEL_COLORS["wgmma"], marker="P", ls="--",
                                                                ms=6)),
    "torch_semi_structured": ("torch semi-structured (cuSPARSELt)",
                              dict(color=KERNEL_COLORS["torch_semi_structured"], marker="x", ls=":")),
    "cusparselt": ("cuSPARSELt, plans kept", dict(color=KERNEL_COLORS["cusparselt"], marker="+", ls=":")),
}
SUPERSEDED = ("repro_fma", "repro_mma", "repro_expand")
# a run's name, <gpu>-<date>[letter] (match: also the start of a file name such as <run>-speedup.png)
RUN = re.compile(r"^(?P<gpu>[a-z0-9.]+)-(?P<date>\d{4}-\d{2}-\d{2}[a-z]?)")


def run_name(path: Path) -> str:
    """``run 2026-11-28c`` for ``h100-2026-11-28c-speedup.png`` (or its JSON); the file's stem otherwise."""
    found = RUN.match(Path(path).name)
    return f"run {found['date']}" if found else Path(path).stem


def gpu_short(gpu: str) -> str:
    """``H100`` for ``NVIDIA H100 80GB HBM3``."""
    found = re.search(r"\b([A-Z]+\d{2,4}[A-Z]?)\b", gpu)
    return found.group(1) if found else gpu


def speedup_panels(recs: list[dict]) -> dict[tuple[int, int], list[dict]]:
    """The layer shapes of the sweep (those cuBLAS was timed on, not the K sweep's or the end-to-end
    model's) and, per shape, the records of the methods the speedup figure draws."""
    shapes = sorted({(r["N"], r["K"]) for r in recs if r["method"] == "cublas"}, key=lambda s: (s[1], s[0]))
    drawn = set(METHODS) | {"cublas", "repro_dispatch"}
    return {(n, k): [r for r in recs if r["N"] == n and r["K"] == k and r["method"] in drawn] for n, k in shapes}


def judged_points(recs: list[dict]) -> dict[tuple[int, int, int], dict]:
    """Per case the issue's targets judge (``sp24.targets.evaluate``): the dispatcher's speedup over
    cuBLAS as the figure draws it (``y``), the target in the same units (``target``) and whether the
    case meets it. At M >= 512 the target is 0.95 times the best baseline (cuBLAS or torch's
    semi-structured path), so in units of cuBLAS it is 0.95 * cuBLAS / best."""
    disp = {(r["N"], r["K"], r["M"]): r for r in recs if r["method"] == "repro_dispatch"}
    out = {}
    for verdict in evaluate(recs)[:3]:  # decode, mid, large; memory does not depend on M
        for row in verdict.rows:
            n, k = (int(v) for v in row.shape.split("×"))
            rec = disp[(n, k, row.m)]
            y = rec.get("speedup_vs_cublas") or row.value
            target = verdict.threshold * (y / row.value if verdict.name == "large" else 1.0)
            out[(n, k, row.m)] = dict(y=y, target=target, met=verdict.passes(row.value), name=verdict.name)
    return out


def target_of(m: int) -> float | None:
    """The target of a token count in units of cuBLAS, where it does not depend on the case."""
    if m in DECODE_MS:
        return DECODE_SPEEDUP
    if m in MID_MS:
        return MID_SPEEDUP
    return LARGE_RATIO if m >= 512 else None


def _steps(ax, ms: list[int], values: list[float], **style) -> None:
    """A stepped line through (m, value), the steps half-way between token counts on the log axis."""
    edges = [ms[0] / 1.25] + [math.sqrt(a * b) for a, b in zip(ms, ms[1:])] + [ms[-1] * 1.25]
    xs, ys = [], []
    for i, v in enumerate(values):
        xs += [edges[i], edges[i + 1]]
        ys += [v, v]
    ax.plot(xs, ys, **style)


def _kernel_label(name: str, rows: list[dict], method: str) -> str:
    counts = [len(r["sweep"]) for r in rows if r["method"] == method and r.get("sweep")]
    if not counts:
        return name
    lo, hi = min(counts), max(counts)
    return f"{name}: fastest of {lo}–{hi} tilings" if lo != hi else f"{name}: fastest of {lo} tilings"


def plot_speedup(recs: list[dict], info: dict, path: Path) -> None:
    """One panel per layer shape, the legend in a panel of its own; the title names GPU and run."""
    panels = speedup_panels(recs)
    judged = judged_points(recs)
    cells = len(panels) + 1  # the last cell holds the legend
    cols = 2
    rows_ = math.ceil(cells / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(9.6, 3.5 * rows_ + 0.5), sharey=True, squeeze=False)
    flat = [ax for row in axes for ax in row]
    every = [r for rows in panels.values() for r in rows]
    for ax, ((n, k), rows) in zip(flat, panels.items()):
        ms = sorted({r["M"] for r in rows if r["method"] == "cublas"})
        ax.plot(ms, [roofline_limit(info, n, k, m) for m in ms], color=LIMIT_COLOR, ls="-.", lw=1.2)
        ax.axhline(1.0, color=KERNEL_COLORS["cublas"], lw=1.0)
        for method, (_, style) in METHODS.items():
            pts = sorted(
                (r["M"], r["speedup_vs_cublas"]) for r in rows if r["method"] == method and r.get("speedup_vs_cublas")
            )
            if pts:
                ax.plot(*zip(*pts), lw=1.2, **style)
        streamed = sorted(
            (r["M"], r["speedup_streamed"])
            for r in rows
            if r["method"] == "repro_dispatch" and r.get("speedup_streamed")
        )
        if streamed:
            ax.plot(*zip(*streamed), color="black", lw=1, ls=":", marker=".", ms=5)
        here = sorted((m, p) for (n_, k_, m), p in judged.items() if (n_, k_) == (n, k))
        if here:
            _steps(ax, [m for m, _ in here], [p["target"] for _, p in here], color=TARGET_COLOR, ls="--", lw=1.6)
            ax.plot([m for m, _ in here], [p["y"] for _, p in here], color="black", lw=2.0, zorder=4)
            for m, p in here:
                ax.plot(m, p["y"], marker="o", ms=7, mew=1.6, color="black", zorder=5,
                        mfc="black" if p["met"] else "white")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ms, [str(m) for m in ms])
        ax.tick_params(labelsize=SMALL)
        ax.set_title(f"N×K = {n}×{k}", fontsize=FONT)
        ax.set_xlabel("M, tokens per call (log₂ scale)", fontsize=FONT)
        ax.grid(alpha=0.3)
        ax.yaxis.set_tick_params(labelleft=True)
    for ax in flat[: len(panels)]:
        if ax in (row[0] for row in axes):
            ax.set_ylabel("speedup over cuBLAS dense fp16 (×)", fontsize=FONT)
    ax_top = max([r.get("speedup_streamed") or 0 for r in every] + [r.get("speedup_vs_cublas") or 0 for r in every])
    flat[0].set_ylim(0, max(2.0, min(ax_top * 1.05, 3.0)))
    legend_ax = flat[len(panels)]
    legend_ax.axis("off")
    for ax in flat[len(panels) + 1:]:
        ax.axis("off")
    handles = [
        Line2D([], [], color="black", lw=2.0, marker="o", ms=7, label="dispatcher, single call, L2 flushed"),
        Line2D([], [], ls="", marker="o", ms=7, mew=1.6, color="black", mfc="white",
               label="hollow: the case misses its target"),
        Line2D([], [], color="black", lw=1, ls=":", marker=".", ms=5,
               label="dispatcher, streamed (CUDA graph, L2 not flushed)"),
        Line2D([], [], color=TARGET_COLOR, ls="--", lw=1.6,
               label="target: 1.5× (M ≤ 16), 1.1× (32–128), 0.95× best baseline (≥ 512)"),
    ]
    for method, (name, style) in METHODS.items():
        if any(r["method"] == method and r.get("speedup_vs_cublas") for r in every):
            handles.append(Line2D([], [], lw=1.2, label=_kernel_label(name, every, method) + ", L2 flushed", **style))
    handles += [
        Line2D([], [], color=KERNEL_COLORS["cublas"], lw=1.0, label="cuBLAS dense fp16 (= 1)"),
        Line2D([], [], color=LIMIT_COLOR, ls="-.", lw=1.2,
               label="format limit: 1.125 vs 2 B/weight at equal\nbandwidth, MMAs at the dense peak"),
    ]
    legend_ax.legend(handles=handles, loc="center", fontsize=SMALL, frameon=False)
    shown = [m for m in SUPERSEDED if any(r["method"] == m for r in recs)]
    note = (" (planar Triton kernels not drawn)" if shown else "")
    fig.suptitle(f"{info['gpu']}, {run_name(path)}: 2:4 sparse GEMM, fp16{note}", fontsize=FONT + 1)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


E2E_NAMES = {"dense": "dense nn.Linear", "sparse24": "SparseLinear, planar", "sparse24_fragments":
             "SparseLinear, fragment order"}
E2E_COLORS = {"dense": KERNEL_COLORS["cublas"], "sparse24": "tab:green", "sparse24_fragments": KERNEL_COLORS["spmma"]}


def e2e_memory(rows: list[dict], name: str) -> str:
    """The weight memory of one model, as the legend gives it: the stored weights, and the copies
    the dispatcher derives and keeps (a planar layer's fragment order) where the run recorded them."""
    r = next(r for r in rows if r["method"] == f"e2e_{name}")
    mib = r["weight_bytes"] / 2**20
    derived = r.get("cached_bytes")
    if derived:
        return f"{mib:.0f} MiB stored + {derived / 2**20:.0f} MiB derived and kept by the dispatcher"
    return f"{mib:.0f} MiB"


def plot_e2e(recs: list[dict], info: dict, path: Path) -> None:
    """Decode tokens/s, one panel per batch on a linear axis; each bar names its ratio to dense."""
    rows = [r for r in recs if r["method"].startswith("e2e_")]
    if not rows:
        return
    batches = sorted({r["M"] for r in rows})
    names = [n for n in E2E_NAMES if any(r["method"] == f"e2e_{n}" for r in rows)]
    modes = [("tokens_per_s", "speedup_vs_dense", "CUDA graph"), ("tokens_per_s_eager", "speedup_vs_dense_eager",
                                                                  "eager")]
    fig, axes = plt.subplots(1, len(batches), figsize=(9.6, 4.4), squeeze=False)
    width = 0.8 / len(names)
    for ax, b in zip(axes[0], batches):
        top = 0.0
        for i, (key, ratio, _) in enumerate(modes):
            for j, name in enumerate(names):
                r = next(r for r in rows if r["M"] == b and r["method"] == f"e2e_{name}")
                x = i + (j - (len(names) - 1) / 2) * width
                ax.bar(x, r[key], width, color=E2E_COLORS[name], alpha=1.0 if i == 0 else 0.5,
                       edgecolor=E2E_COLORS[name])
                ax.annotate(f"{r[ratio]:.2f}×", (x, r[key]), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=SMALL)
                top = max(top, r[key])
        ax.set_ylim(0, top * 1.15)
        ax.set_xticks(range(len(modes)), [f"{mode}" for *_, mode in modes], fontsize=FONT)
        ax.tick_params(axis="y", labelsize=SMALL)
        ax.set_title(f"batch {b}", fontsize=FONT)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("decode tokens/s", fontsize=FONT)
    handles = [plt.Rectangle((0, 0), 1, 1, color=E2E_COLORS[n], label=f"{E2E_NAMES[n]}: {e2e_memory(rows, n)}")
               for n in names]
    fig.legend(handles=handles, loc="lower center", ncol=1, fontsize=SMALL, frameon=False,
               title="weight memory of the stack", title_fontsize=SMALL)
    r0 = rows[0]
    fig.suptitle(
        f"{info['gpu']}, {run_name(path)}: {r0['layers']} LLaMA-7B-shaped decoder layers, 2:4-pruned random "
        f"weights,\nfixed {r0['ctx']}-token KV cache; over each bar its ratio to dense; light bars: eager",
        fontsize=FONT,
    )
    fig.tight_layout(rect=(0, 0.05 + 0.055 * len(names), 1, 1))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_glance(columns: list[dict], path: Path) -> None:
    """The page's "Results at a glance" figure: the dispatcher's speedup over cuBLAS against M, one
    panel per GPU, one marker per shape, filled where the case meets its target, the target steps
    dashed. ``columns``: per GPU, ``title`` and ``points`` (``shape``, ``m``, ``y``, ``target``, ``met``),
    as bench/ingest_sparse24.py's ``glance_columns`` gives them."""
    fig, axes = plt.subplots(1, len(columns), figsize=(9.6, 4.1), sharey=True, squeeze=False)
    shapes = page_order(p["shape"] for col in columns for p in col["points"])
    for ax, col in zip(axes[0], columns):
        pts = col["points"]
        ms = sorted({p["m"] for p in pts})
        steps = [target_of(m) for m in ms]
        _steps(ax, ms, steps, color=TARGET_COLOR, ls="--", lw=1.6, zorder=1)
        ax.axhline(1.0, color=KERNEL_COLORS["cublas"], lw=1.0)
        for i, shape in enumerate(shapes):
            here = sorted((p for p in pts if p["shape"] == shape), key=lambda p: p["m"])
            color, marker = shape_color(shape), shape_marker(shape)
            nudge = 1.07 ** (i - (len(shapes) - 1) / 2)  # side by side: the shapes often sit on one value
            ax.plot([p["m"] * nudge for p in here], [p["y"] for p in here], color=color, lw=1.2, zorder=2)
            for p in here:
                ax.plot(p["m"] * nudge, p["y"], marker=marker, ms=7, mew=1.5, color=color, zorder=3,
                        mfc=color if p["met"] else "white")
                if abs(p["target"] - (target_of(p["m"]) or p["target"])) > 0.005:
                    ax.plot(p["m"] * nudge, p["target"], marker="_", ms=16, mew=2.2, color=color, zorder=3)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ms, [str(m) for m in ms])
        ax.tick_params(labelsize=SMALL)
        ax.set_xlabel("M, tokens per call (log₂ scale)", fontsize=FONT)
        ax.set_title(col["title"], fontsize=FONT)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("dispatcher speedup over cuBLAS (×)", fontsize=FONT)
    top = max(p["y"] for col in columns for p in col["points"])
    axes[0][0].set_ylim(0.6, max(2.0, top * 1.08))
    handles = [Line2D([], [], color=shape_color(s), marker=shape_marker(s), ms=7, lw=1.2, label=f"{s[0]}×{s[1]}")
               for s in shapes]
    handles += [
        Line2D([], [], ls="", marker="o", ms=7, mew=1.5, color="0.3", mfc="white", label="hollow: misses its target"),
        Line2D([], [], color=TARGET_COLOR, ls="--", lw=1.6, label="target (from 512 tokens: 0.95 of cuBLAS)"),
        Line2D([], [], ls="", marker="_", ms=16, mew=2.2, color="0.3",
               label="from 512 tokens where torch's cuSPARSELt\ncall beats cuBLAS: 0.95 of that call"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=SMALL, frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else sorted(RESULTS.glob("*-20*.json"))[-1]
    recs = json.loads(src.read_text())
    info = recs[0]["info"]
    plot_speedup(recs, info, src.with_name(src.stem + "-speedup.png"))
    plot_e2e(recs, info, src.with_name(src.stem + "-e2e.png"))
    print(f"wrote {src.stem}-speedup.png and {src.stem}-e2e.png in {src.parent}")


if __name__ == "__main__":
    main()
