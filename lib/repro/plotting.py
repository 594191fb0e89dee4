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


def log_scale(ax, axis: str = "y") -> None:
    """Put ``ax``'s ``axis`` ("x" or "y") on a log scale ticked at 1, 2 and 5 times the powers of ten,
    labelled as plain numbers (0.02, 5, 300). Matplotlib's own labels for a range of less than a
    decade are minor ticks written as 3×10⁰, 4×10⁰, ..., which run into each other."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    getattr(ax, f"set_{axis}scale")("log")
    ticks = getattr(ax, f"{axis}axis")
    ticks.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ticks.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ticks.set_minor_formatter(NullFormatter())


def extend_to_tick(ax, axis: str = "y") -> None:
    """Stretch a log axis ticked by :func:`log_scale` up to the first tick (1, 2 or 5 times a power of
    ten) at or above its largest data value, so that the highest points sit under a labelled tick."""
    import math

    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    top = ax.dataLim.x1 if axis == "x" else ax.dataLim.y1
    if not top > 0:
        raise ValueError(f"a log axis needs positive data; the largest {axis} value is {top}")
    decade = math.floor(math.log10(top))
    tick = min(m * 10.0 ** e for e in (decade, decade + 1) for m in (1, 2, 5) if m * 10.0 ** e >= top * (1 - 1e-12))
    low, high = getattr(ax, f"get_{axis}lim")()
    getattr(ax, f"set_{axis}lim")(low, max(high, tick))


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
