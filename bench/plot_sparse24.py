"""Figures for book/sparse24.md from a committed benchmark result (bench/sparse24.py output).

    python bench/plot_sparse24.py [bench/results/h200-2026-11-26.json]

Writes <stem>-speedup.png (speedup vs cuBLAS against M, one panel per layer shape) and
<stem>-e2e.png (decode tokens/s of the LLaMA-7B-shaped layer stack) next to the JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(BENCH.parent / "lib"))
sys.path.insert(0, str(BENCH))

from sp24.report import roofline_limit  # noqa: E402

METHODS = {  # method -> (label, style)
    "repro_dispatch": ("repro dispatcher", dict(color="black", lw=2.2, marker="o")),
    "repro_fma": ("repro fma (select-X, CUDA cores)", dict(color="tab:green", marker="s", ls="--")),
    "repro_mma": ("repro mma (4-phase dots, tensor cores)", dict(color="tab:blue", marker="^", ls="--")),
    "repro_expand": ("repro expand (expanded tile, tensor cores)", dict(color="tab:purple", marker="v", ls="--")),
    "repro_spmma": ("repro spmma (mma.sp, sparse tensor cores)", dict(color="tab:orange", marker="D", ls="--")),
    "repro_wgmma": (
        "repro wgmma (warpgroup MMA, sparse or on the expanded weight)",
        dict(color="tab:brown", marker="P", ls="--"),
    ),
    "torch_semi_structured": (
        "torch semi-structured (cuSPARSELt)",
        dict(color="tab:red", marker="x", ls=":"),
    ),
    "cusparselt": ("cuSPARSELt, plans kept", dict(color="tab:pink", marker="+", ls=":")),
}


def speedup_panels(recs: list[dict]) -> dict[tuple[int, int], list[dict]]:
    """The layer shapes of the sweep (those cuBLAS was timed on, not the K sweep's or the end-to-end
    model's) and, per shape, the records of the methods the speedup figure draws."""
    shapes = sorted({(r["N"], r["K"]) for r in recs if r["method"] == "cublas"}, key=lambda s: (s[1], s[0]))
    drawn = set(METHODS) | {"cublas"}
    return {(n, k): [r for r in recs if r["N"] == n and r["K"] == k and r["method"] in drawn] for n, k in shapes}


def plot_speedup(recs: list[dict], info: dict, path: Path) -> None:
    panels = speedup_panels(recs)
    # squeeze=False: a --quick run has one shape, and still a list of axes
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.8), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, ((n, k), rows) in zip(axes, panels.items()):
        ms = sorted({r["M"] for r in rows})
        for method, (label, style) in METHODS.items():
            pts = sorted(
                (r["M"], r["speedup_vs_cublas"])
                for r in rows
                if r["method"] == method and r.get("speedup_vs_cublas")
            )
            if pts:
                ax.plot(*zip(*pts), label=label, **style)
        pts = sorted(
            (r["M"], r["speedup_streamed"])
            for r in rows
            if r["method"] == "repro_dispatch" and r.get("speedup_streamed")
        )
        if pts:
            ax.plot(
                *zip(*pts),
                color="black",
                lw=1,
                ls=":",
                marker=".",
                label="repro dispatcher, streamed (CUDA graph, no flush)",
            )
        ax.plot(
            ms,
            [roofline_limit(info, n, k, m) for m in ms],
            color="gray",
            ls="-.",
            label="format limit (1.125 vs 2 B/weight, dense TC)",
        )
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ms, [str(m) for m in ms])
        ax.set_title(f"N×K = {n}×{k}")
        ax.set_xlabel("M (tokens per call)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("speedup vs cuBLAS dense fp16 (×), L2 flushed")
    axes[0].set_ylim(0, 2.0)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=4)
    fig.suptitle(f"2:4 sparse GEMM, fp16, {info['gpu']}: median single-call time, L2 flushed")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_e2e(recs: list[dict], info: dict, path: Path) -> None:
    rows = [r for r in recs if r["method"].startswith("e2e_")]
    if not rows:
        return
    batches = sorted({r["M"] for r in rows})
    names = [n for n in ("dense", "sparse24", "sparse24_fragments") if any(r["method"] == f"e2e_{n}" for r in rows)]
    colors = {"dense": "tab:gray", "sparse24": "tab:green", "sparse24_fragments": "tab:orange"}
    fig, ax = plt.subplots(figsize=(6.5, 4))
    width = 0.8 / (2 * len(names))
    for i, (key, mode) in enumerate([("tokens_per_s", "CUDA graph"), ("tokens_per_s_eager", "eager")]):
        for j, name in enumerate(names):
            vals = [
                next(r[key] for r in rows if r["M"] == b and r["method"] == f"e2e_{name}") for b in batches
            ]
            xs = [b_i + (len(names) * i + j - (len(names) - 0.5)) * width for b_i in range(len(batches))]
            bars = ax.bar(
                xs,
                vals,
                width,
                label=f"{name}, {mode}",
                color=colors[name],
                alpha=1.0 if i == 0 else 0.45,
            )
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
    ax.set_ylabel("decode tokens/s (higher is better)")
    ax.set_yscale("log")
    r0 = rows[0]
    ax.set_title(
        f"{r0['layers']} LLaMA-7B-shaped decoder layers, random weights pruned 2:4\n"
        f"{info['gpu']}, fixed {r0['ctx']}-token KV cache",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
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
