"""The book's house style for figures: one look across chapters, readable in the HTML book."""

from __future__ import annotations

from pathlib import Path

PALETTE = ["#1f5fa8", "#d1495b", "#2e933c", "#edae49", "#6b4c9a", "#00798c", "#8c564b", "#7f7f7f"]


def use_house_style() -> None:
    import matplotlib as mpl
    from cycler import cycler

    mpl.rcParams.update({
        "figure.figsize": (6.4, 3.8),
        "figure.dpi": 110,
        "savefig.dpi": 110,
        "savefig.bbox": "tight",
        "axes.prop_cycle": cycler(color=PALETTE),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "legend.frameon": False,
        "font.size": 10,
    })


def figure_script_out(description: str, default: str = "book/generated") -> Path:
    """The ``--out DIR`` of a script that draws figures for the book (``default`` if not given),
    created, with the house style switched on."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", type=Path, default=Path(default))
    out = ap.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    use_house_style()
    return out
