"""The kernel page's two format diagrams, drawn from what the library actually produces.

    python bench/plot_sparse24_format.py [--out book/generated]

- ``sparse24-format.png``: a small 2:4 weight, its ``values`` planes and its ``meta`` bytes, from
  ``compress_24`` (every kept weight coloured by the plane it lands in);
- ``sparse24-fragments.png``: which lane and register of the warp holds each kept value of one
  16×32 tile in ``spmma``'s fragment order, from ``to_fragments`` (labels read back from a tile of
  numbered values, not from the formula in its docstring);
- ``wgmma-columns.png``: the order of K the ``wgmma`` kernel multiplies in (``wgmma_columns``),
  each column coloured by the lane that holds its group in fragment order.

``make book`` runs it; the figures are build outputs (book/generated/ is not committed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from repro.kernels import compress_24  # noqa: E402
from repro.kernels.fragments import GROUPS, KBLOCK, LANES, ROWS, to_fragments, wgmma_columns  # noqa: E402
from repro.plotting import PALETTE, figure_script_out  # noqa: E402

PLANES = ("v0, even groups", "v1, even groups", "v0, odd groups", "v1, odd groups")
PRUNED = "#e6e6e6"


def format_example(n: int = 4, k: int = 16, seed: int = 3) -> torch.Tensor:
    """A small [n, k] 2:4 weight of distinct integers (so every value can be followed by eye)."""
    g = torch.Generator().manual_seed(seed)
    dense = torch.randperm(89, generator=g)[: n * k].reshape(n, k).float() + 10
    keep = torch.zeros(n, k // 4, 4, dtype=torch.bool)
    for row in range(n):
        for group in range(k // 4):
            keep[row, group, torch.randperm(4, generator=g)[:2]] = True
    return dense * keep.reshape(n, k)


def plane_of_each_weight(w: torch.Tensor) -> np.ndarray:
    """For each weight of ``w`` [N, K], the plane of ``values`` that stores it (-1: pruned),
    found by looking each kept value up in the compressed tensor (values are distinct)."""
    values = compress_24(w).values
    q = w.shape[1] // 8
    plane = np.full(tuple(w.shape), -1)
    for row, col in zip(*torch.nonzero(w, as_tuple=True)):
        (where,) = torch.nonzero(values[row] == w[row, col], as_tuple=True)
        plane[row, col] = int(where[0]) // q
    return plane


def fragment_owner(dtype: torch.dtype = torch.float16) -> tuple[np.ndarray, np.ndarray]:
    """Lane and register holding each kept value of one 16×32 tile, as [16 rows, 16 kept] arrays.

    The tile's kept values are numbered 1..256 (exact in fp16); after ``to_fragments`` each
    register of each lane is read back and its two numbers say which cells it holds."""
    kept = torch.arange(1, ROWS * 16 + 1, dtype=torch.float32).reshape(ROWS, 16)
    dense = torch.zeros(ROWS, KBLOCK)
    dense[:, 0::2] = kept  # positions 0 and 2 of every group of 4: a valid 2:4 pattern
    frags = to_fragments(compress_24(dense.to(dtype)))
    numbers = frags.values[0, 0].view(dtype).float().reshape(LANES, 4, 2)  # lane, register, half
    lane, reg = np.full((ROWS, 16), -1), np.full((ROWS, 16), -1)
    for ln in range(LANES):
        for r in range(4):
            for number in numbers[ln, r]:
                cell = int(number) - 1
                lane[cell // 16, cell % 16], reg[cell // 16, cell % 16] = ln, r
    return lane, reg


def _grid(ax, shape, group: int | None = None):
    rows, cols = shape
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks(range(rows))
    ax.grid(False)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    if group:
        for x in range(0, cols + 1, group):
            ax.axvline(x - 0.5, color="black", lw=1.4)


def plot_format(path: Path) -> None:
    w = format_example()
    sw = compress_24(w)
    plane = plane_of_each_weight(w)
    n, k = w.shape
    # stacked: W across the top, values and meta below, so the figure is 9.5 inches wide (the book's
    # column shows it at about 900 pixels) and its text 9 pt or more
    fig, axes = plt.subplot_mosaic(
        [["W", "W"], ["values", "meta"]], figsize=(9.5, 4.6), width_ratios=[k // 2, 4.2], layout="constrained"
    )
    axes = [axes["W"], axes["values"], axes["meta"]]
    ax = axes[0]
    _grid(ax, (n, k), group=4)
    for (row, col), value in np.ndenumerate(w.numpy()):
        color = PRUNED if plane[row, col] < 0 else PALETTE[plane[row, col]]
        ax.add_patch(plt.Rectangle((col - 0.45, row - 0.45), 0.9, 0.9, color=color))
        ax.text(col, row, "·" if value == 0 else f"{value:.0f}", ha="center", va="center", fontsize=9,
                color="black" if plane[row, col] < 0 else "white")
    ax.set_xticks([4 * g + 1.5 for g in range(k // 4)], [f"group {g}" for g in range(k // 4)], fontsize=9)
    ax.xaxis.set_ticks_position("top")
    ax.tick_params(axis="x", length=0)
    ax.set_ylabel("row n")
    ax.set_title(f"W [{n}, {k}]: 2 of every 4 kept along K")

    ax = axes[1]
    q = k // 8
    _grid(ax, (n, k // 2), group=q)
    for (row, col), value in np.ndenumerate(sw.values.numpy()):
        ax.add_patch(plt.Rectangle((col - 0.45, row - 0.45), 0.9, 0.9, color=PALETTE[col // q]))
        ax.text(col, row, f"{value:.0f}", ha="center", va="center", fontsize=9, color="white")
    ax.set_title(f"values [{n}, {k // 2}]: four planes of K/8 = {q} columns")
    handles = [plt.Rectangle((0, 0), 1, 1, color=PALETTE[i]) for i in range(4)]
    fig.legend(handles, PLANES, loc="outside lower center", ncol=4, fontsize=9)

    ax = axes[2]
    meta = sw.meta.numpy()
    _grid(ax, meta.shape)
    for (row, col), byte in np.ndenumerate(meta):
        ax.text(col, row, f"0x{byte:02X}\n{byte >> 4:04b} {byte & 15:04b}", ha="center", va="center",
                fontsize=9, family="monospace")
    ax.set_xlim(-0.6, meta.shape[1] - 0.4)
    ax.set_xticks(range(meta.shape[1]), [f"pair {p}" for p in range(meta.shape[1])], fontsize=9)
    ax.xaxis.set_ticks_position("top")
    ax.tick_params(length=0)
    ax.set_title("meta [N, K/8]: one byte per group pair\n(high nibble: odd group)", fontsize=9)
    fig.savefig(path)
    plt.close(fig)


def plot_fragments(path: Path) -> None:
    lane, reg = fragment_owner()
    fig, ax = plt.subplots(figsize=(9.5, 5.4), layout="constrained")
    _grid(ax, lane.shape, group=2)
    for (row, col), ln in np.ndenumerate(lane):
        ax.add_patch(plt.Rectangle((col - 0.46, row - 0.46), 0.92, 0.92, color=PALETTE[reg[row, col]]))
        ax.text(col, row, str(ln), ha="center", va="center", fontsize=9, color="white")
    ax.set_xticks(range(0, 16, 2), [f"group {g}" for g in range(GROUPS)], fontsize=9)
    ax.xaxis.set_ticks_position("top")
    ax.set_ylabel("row of the 16-row tile")
    ax.set_xlabel("the 16 kept values of a 32-column k-block (v0, v1 of each group of 4)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=PALETTE[i]) for i in range(4)]
    ax.legend(handles, [f"register {i}" for i in range(4)], loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title("spmma fragment order: the lane (number) and register (colour) holding each kept value", fontsize=10)
    fig.savefig(path)
    plt.close(fig)


def plot_wgmma_columns(path: Path) -> None:
    lane, _ = fragment_owner()
    holder = lane[0, ::2] % 4  # q of the lane holding each group (its v0), read back from to_fragments
    perm = wgmma_columns().numpy()
    fig, ax = plt.subplots(figsize=(9.5, 2.9), layout="constrained")
    for c in range(KBLOCK):
        q = holder[c // 4]
        for x, y in ((c, 1), (perm[c], 0)):
            ax.add_patch(plt.Rectangle((x - 0.45, y - 0.3), 0.9, 0.6, color=PALETTE[q]))
            ax.text(x, y, str(c), ha="center", va="center", fontsize=9, color="white")
        ax.plot([c, perm[c]], [0.7, 0.3], color=PALETTE[q], lw=0.8)
    ax.set_xlim(-0.8, KBLOCK - 0.2)
    ax.set_ylim(-0.5, 1.5)
    ax.set_yticks([0, 1], ["order of K in the MMA\n(x stored so)", "column of W and x"], fontsize=9)
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    handles = [plt.Rectangle((0, 0), 1, 1, color=PALETTE[q]) for q in range(4)]
    ax.legend(handles, [f"lanes q = {q}" for q in range(4)], loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=4,
              fontsize=9)
    ax.set_title(
        "wgmma: each lane's two 2:4 groups move to the columns its dense A registers hold", fontsize=10
    )
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    out = figure_script_out(__doc__.splitlines()[0])
    plot_format(out / "sparse24-format.png")
    plot_fragments(out / "sparse24-fragments.png")
    plot_wgmma_columns(out / "wgmma-columns.png")
    print(f"wrote sparse24-format.png, sparse24-fragments.png and wgmma-columns.png in {out}")


if __name__ == "__main__":
    main()
