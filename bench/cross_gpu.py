"""Pair every configuration two GPU runs both timed: how much slower each is on one than the other.

    python bench/cross_gpu.py SLOW FAST
    python bench/cross_gpu.py bench/results/h100-2026-11-28.json bench/results/partial/h200-2026-11-27f

SLOW and FAST are runs (a whole run's JSON, or a partial run's folder with sweep.json), named so
because the ratios are SLOW's time over FAST's. Writes ``<slow>-vs-<fast>.{md,png}`` into
bench/results/compare (``--out``): per token count and kernel family, the median ratio, its range and the number of
pairs (``bench/sp24/cross_gpu.py``), and a figure of every ratio. Needs no GPU.

A forecast, and its score once the fast GPU has run:

    python bench/cross_gpu.py SLOW FAST --predict NEWER [--also RUN ...]
    python bench/cross_gpu.py --score bench/results/compare/<gpu>-predicted-from-<newer>.md LATER

``--predict`` divides the time of each tiling a later run on SLOW's GPU (NEWER) timed, and no run on
FAST's GPU did, by its family's median ratio at that token count, and judges the decode and
mid-range targets on the result (``<gpu>-predicted-from-<newer>.md``); ``--also`` adds older runs
on FAST's GPU for the cases FAST lacks. ``--score`` sets such a committed page beside a later run
on the GPU it forecasts (``...-scored-by-<later>.md``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "lib"))

import torch  # noqa: E402
from l2_traffic import load_records, run_paths  # noqa: E402
from plot_sparse24 import DPI, FONT, KERNEL_COLORS, SMALL, gpu_short, page_order, run_name, shape_marker  # noqa: E402
from sp24.common import shown_path  # noqa: E402
from sp24.cross_gpu import (  # noqa: E402
    FAMILIES,
    factors,
    fastest_markdown,
    fastest_timed,
    paired,
    predicted,
    predicted_markdown,
    ratio_markdown,
    registered,
    scored,
    scored_markdown,
    timings,
)
from sp24.targets import DECODE_MS, DECODE_SPEEDUP, MID_MS, MID_SPEEDUP, evaluate  # noqa: E402

from repro.kernels import dispatch  # noqa: E402
from repro.kernels.dispatch import gpu_key  # noqa: E402

# the page's one kernel palette (bench/plot_sparse24.py): spmma orange, wgmma brown (its dense form lighter)
COLORS = dict(zip(FAMILIES, (KERNEL_COLORS["cublas"], KERNEL_COLORS["spmma"], KERNEL_COLORS["wgmma"],
                             KERNEL_COLORS["wgmma, dense"], KERNEL_COLORS["triton"])))


class Run(NamedTuple):
    name: str  # h100-2026-11-28: a whole run's JSON's stem, or a partial run's folder
    records: Path
    recs: list[dict]
    gpu: str
    table: list[dict]  # a partial run's dispatch table as records, for the cases its records lack
    copy_gbps: float | None = None  # the copy rate the run measured (its description), where it kept it


def run_info(path: Path, recs: list[dict]) -> dict:
    """The run's description: on a whole run's first record, or the first line of a partial run's log."""
    if recs and isinstance(recs[0].get("info"), dict):
        return recs[0]["info"]
    log = path / "sweep.log" if path.is_dir() else None
    if log is not None and log.is_file():
        first = log.read_text().split("\n", 1)[0]
        if first.startswith("{"):
            return json.loads(first)
    return {}


def load_run(path: Path) -> Run:
    records = run_paths(path)[0]
    recs = load_records(records)
    gpu = next((r["gpu"] for r in recs if r.get("gpu")), "an unnamed GPU")
    table = []
    if path.is_dir():  # a partial run: its dispatch table may keep cases whose records were lost
        swept = {(r["N"], r["K"], r["M"]) for r in recs}
        for found in sorted(path.glob("dispatch_*.json")):
            table += [r for r in table_records(json.loads(found.read_text())) if (r["N"], r["K"], r["M"]) not in swept]
    copy = run_info(path, recs).get("copy_gbps")
    return Run(path.name if path.is_dir() else path.stem, records, recs, gpu, table, copy)


def copy_ratio(slow: Run, fast: Run) -> float | None:
    """What a call bound by reading its weight from memory should show: the fast run's copy rate over
    the slow one's (None where a run did not record it, or both ran on one GPU model)."""
    if gpu_key(slow.gpu) == gpu_key(fast.gpu) or not (slow.copy_gbps and fast.copy_gbps):
        return None
    return fast.copy_gbps / slow.copy_gbps


def table_records(table: dict) -> list[dict]:
    """A dispatch table's fp16 entries as records: what each case runs, with its time, and cuBLAS
    at the time its speedup implies (the table keeps the ratio to the same run's cuBLAS)."""
    out = []
    for e in table["entries"]:
        if e.get("dtype", "float16") != "float16":
            continue
        choice = dispatch._table_choice(table, e["N"], e["K"], e["M"], torch.float16)
        case = dict(gpu=table.get("gpu", ""), N=e["N"], K=e["K"], M=e["M"], status="ok")
        out.append(case | dict(method="cublas", cfg="", us=e["us"] * e["speedup_vs_cublas"]))
        if e["method"] != "cublas":
            label = choice.config.label() if choice.config else ""
            method = e["method"] if e["method"] in dispatch.LIBRARY_METHODS else f"repro_{e['method']}"
            out.append(case | dict(method=method, cfg=label, us=e["us"]))
    return out


def reading(slow_gpu: str, fast_gpu: str, rates: tuple[float, float] | None = None) -> str:
    """What the ratios of two GPUs' runs measure; ``rates``: the copy rates (GB/s) the slow and the
    fast run measured, where both did."""
    pair = {gpu_key(slow_gpu), gpu_key(fast_gpu)}
    if len(pair) == 1:
        return "The same GPU model in two runs: the spread is what a repeat of the benchmark moves by."
    if pair == {"h100", "h200"}:
        if rates:
            slow_rate, fast_rate = rates
            expected = (f"{fast_rate / slow_rate:.2f} is what a call bound by the memory should show (the ratio of "
                        f"the copy rates the two runs measured, {fast_rate:.0f} / {slow_rate:.0f} GB/s)")
        else:
            expected = ("about 1.4 is what a call bound by the memory should show (the ratio of the copy rates "
                        "measured on the two)")
        return f"One die, two memories: {expected}, about 1.0 a call bound inside the die."
    return ""


def _rates(slow: Run, fast: Run) -> tuple[float, float] | None:
    return (slow.copy_gbps, fast.copy_gbps) if copy_ratio(slow, fast) else None


def summary(rows: list[dict], slow: Run, fast: Run) -> str:
    shapes = ", ".join(sorted({f"{r['N']}×{r['K']}" for r in rows}))
    return (
        f"<!-- generated by bench/cross_gpu.py from {shown_path(slow.records)} and {shown_path(fast.records)}; "
        "do not edit -->\n"
        f"Time on the {slow.gpu} in run `{slow.name}` over time on the {fast.gpu} in run `{fast.name}`, for "
        f"every configuration both timed on the same case ({shapes}): median (range, pairs). "
        f"{reading(slow.gpu, fast.gpu, _rates(slow, fast))}\n\n"
        + ratio_markdown(rows)
        + "\nThe fastest of those configurations, per family and case, in each run (not always the same one in both), "
        "as the ratio of the two times:\n\n"
        + fastest_markdown(rows)
    )


def prediction(rows: list[dict], slow: Run, fast: Run, newer: Run, also: list[Run]) -> str:
    """``--predict``'s page: what ``newer`` (a later run on the slow GPU) predicts for the fast GPU
    at the token counts of the decode and mid-range targets (``sp24.cross_gpu.predicted``)."""
    needs = {m: DECODE_SPEEDUP for m in DECODE_MS} | {m: MID_SPEEDUP for m in MID_MS}
    rows_out = predicted(newer.recs, factors(rows), [(r.name, r.recs + r.table) for r in (fast, *also)], needs)
    again = paired(newer.recs, slow.recs)  # the same GPU model twice: how far a repeat moves
    repeat = (f"Run `{newer.name}` against run `{slow.name}` (the same GPU model), on the {len(again)} "
              f"configurations both timed: median ratio {statistics.median(r['ratio'] for r in again):.2f}."
              if again else "")
    sources = ", ".join(f"`{r.name}`" for r in (fast, *also))
    lost = [f"`{r.name}`" for r in (fast, *also) if r.table]
    tables = (f" Where a partial run's records of a case were lost ({', '.join(lost)}), its dispatch table gives the "
              "time of what it chose and the cuBLAS time that choice's speedup implies." if lost else "")
    return (f"<!-- generated by bench/cross_gpu.py --predict from {shown_path(newer.records)}, with the ratios of "
            f"{shown_path(slow.records)} over {shown_path(fast.records)}; do not edit -->\n\n"
            f"What run `{newer.name}` on the {slow.gpu} predicts for the {fast.gpu}, for the configurations it "
            f"timed and no {gpu_key(fast.gpu).upper()} run ({sources}) did: each one's time divided by the median "
            f"ratio of its kernel family at that token count ({gpu_key(slow.gpu).upper()} run `{slow.name}` over "
            f"{gpu_key(fast.gpu).upper()} run `{fast.name}`, as in `{slow.name}-vs-{fast.name}.md`; the range from the "
            "smallest and largest ratio). A prediction written down before the fast GPU runs them, for the decode (≥ "
            f"{DECODE_SPEEDUP}×) and mid-range (≥ {MID_SPEEDUP}×) targets, judged here on the fastest kernel "
            "(the dispatcher picks it, at a little host cost). It assumes a new tiling slows with the memory as "
            f"the rest of its family did.{tables} {repeat}\n\n"
            + predicted_markdown(rows_out, gpu_key(slow.gpu), gpu_key(fast.gpu)))


def judged_speedups(recs: list[dict]) -> dict[tuple[int, int, int], float]:
    """Per decode and mid-range case, the speedup a run's targets are judged on: the dispatcher's
    over cuBLAS (``sp24.targets.evaluate``); for a run that kept no dispatcher records (a partial
    one), its fastest kernel over its cuBLAS."""
    if any(r["method"] == "repro_dispatch" for r in recs):
        out = {}
        for verdict in evaluate(recs)[:2]:  # decode, mid
            for row in verdict.rows:
                n, k = (int(v) for v in row.shape.split("×"))
                out[(n, k, row.m)] = row.value
        return out
    times = timings(recs)
    out = {}
    for (n, k, m, method, _), cublas in times.items():
        fastest = fastest_timed(times, (n, k, m)) if method == "cublas" and m in DECODE_MS + MID_MS else None
        if fastest:
            out[(n, k, m)] = cublas / fastest[1]
    return out


def score(forecast: Path, later: Run) -> str:
    """``--score``'s page: a committed forecast (``--predict``) beside a later run on the fast GPU."""
    rows = scored(registered(forecast.read_text()), later.recs, judged_speedups(later.recs))
    return (f"<!-- generated by bench/cross_gpu.py --score from {shown_path(forecast)} and "
            f"{shown_path(later.records)}; do not edit -->\n\n"
            f"The forecast of `{forecast.name}`, written down before run `{later.name}` on the {later.gpu}, beside "
            "what that run measured: each forecast tiling's time, and each case's speedup as the run's targets "
            "judge it (the dispatcher's over cuBLAS, or the fastest kernel's where the run kept no dispatcher "
            "records).\n\n"
            + scored_markdown(rows, later.name))


def plot(rows: list[dict], path: Path, slow: Run, fast: Run) -> None:
    """Every pair's ratio against M (log scale): one colour per family (the page's kernel palette),
    one marker per layer shape, families and shapes side by side; dashed, where the two GPUs differ,
    the ratio a call bound by the memory should show (the copy rates'), and 1.0 for one bound inside
    the die. The title names both GPUs and runs."""
    ms = sorted({r["M"] for r in rows})
    families = [f for f in FAMILIES if any(r["family"] == f for r in rows)]
    shapes = page_order((r["N"], r["K"]) for r in rows)
    fig, ax = plt.subplots(figsize=(9.6, 4.8))
    slots = len(families) * len(shapes)
    for i, f in enumerate(families):
        for j, shape in enumerate(shapes):
            slot = i * len(shapes) + j
            offset = 1.055 ** (slot - (slots - 1) / 2)  # side by side on the log axis
            pts = [r for r in rows if r["family"] == f and (r["N"], r["K"]) == shape]
            ax.scatter([r["M"] * offset for r in pts], [r["ratio"] for r in pts], s=22, alpha=0.55, lw=0.4,
                       marker=shape_marker(shape), color=COLORS[f], edgecolors=COLORS[f])
    ax.axhline(1.0, color="0.5", lw=1.0)
    ratio = copy_ratio(slow, fast)
    if ratio:
        ax.axhline(ratio, color="0.2", lw=1.2, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ms, [str(m) for m in ms])
    ax.tick_params(labelsize=SMALL)
    ax.set_xlabel("M, tokens per call (log₂ scale)", fontsize=FONT)
    ax.set_ylabel(f"time on {gpu_key(slow.gpu).upper()} / on {gpu_key(fast.gpu).upper()}", fontsize=FONT)
    ax.set_title(f"{gpu_short(slow.gpu)} {run_name(slow.name)} over {gpu_short(fast.gpu)} {run_name(fast.name)}: "
                 "every configuration both timed on the same case", fontsize=FONT)
    handles = [plt.Line2D([], [], ls="", marker="o", ms=7, color=COLORS[f], label=f) for f in families]
    handles += [plt.Line2D([], [], ls="", marker=shape_marker(s), ms=7, color="black", mfc="white",
                           label=f"{s[0]}×{s[1]}") for s in shapes]
    if ratio:
        handles.append(plt.Line2D([], [], color="0.2", lw=1.2, ls="--",
                                  label=f"bound by memory: {ratio:.2f} ({fast.copy_gbps:.0f} / {slow.copy_gbps:.0f}"
                                        " GB/s copy rates)"))
        handles.append(plt.Line2D([], [], color="0.5", lw=1.0, label="bound inside the die: 1.0"))
    ax.legend(handles=handles, fontsize=SMALL, frameon=False, ncol=3, loc="upper center",
              bbox_to_anchor=(0.5, -0.16))
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("slow", type=Path, nargs="?", help="a whole run's JSON or a partial run's folder")
    ap.add_argument("fast", type=Path, nargs="?", help="the same, for the run the ratios divide by")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "compare", help="folder for the table and figure")
    ap.add_argument("--no-figure", action="store_true", help="write the table only")
    ap.add_argument("--predict", type=Path, metavar="NEWER",
                    help="a later run on SLOW's GPU: predict the fast GPU's times of what it timed and FAST did not")
    ap.add_argument("--also", type=Path, action="append", default=[], metavar="RUN",
                    help="with --predict: another run on FAST's GPU, read where FAST lacks a case (repeatable)")
    ap.add_argument("--score", type=Path, nargs=2, metavar=("FORECAST", "LATER"),
                    help="instead: score a committed --predict page against a later run on the fast GPU")
    args = ap.parse_args(argv)
    if args.score:
        forecast, later = args.score[0], load_run(args.score[1])
        if not forecast.is_file() or "-predicted-from-" not in forecast.name:
            raise SystemExit(f"{forecast}: not a forecast page (bench/cross_gpu.py --predict writes "
                             "<gpu>-predicted-from-<run>.md)")
        target = forecast.name.split("-predicted-from-")[0]
        if gpu_key(later.gpu) != target:
            raise SystemExit(
                f"{forecast.name} forecasts the {target.upper()}; run `{later.name}` is on the {later.gpu}"
            )
        text = score(forecast, later)
        out = args.out / f"{forecast.stem}-scored-by-{later.name}.md"
        out.write_text(text)
        print(f"wrote {shown_path(out)}")
        return
    if args.slow is None or args.fast is None:
        ap.error("give SLOW and FAST (or --score FORECAST LATER)")
    slow, fast = load_run(args.slow), load_run(args.fast)
    newer = load_run(args.predict) if args.predict else None  # refused before anything is written
    also = [load_run(path) for path in args.also]
    rows = paired(slow.recs, fast.recs)
    if not rows:
        raise SystemExit(f"{args.slow} and {args.fast} have no configuration timed on the same case in both")
    for run in ([newer] if newer else []) + also:
        expected = slow if run is newer else fast
        if gpu_key(run.gpu) != gpu_key(expected.gpu):
            raise SystemExit(f"{run.records}: a run on the {run.gpu}, where one on the {expected.gpu} is needed")
    md, png = args.out / f"{slow.name}-vs-{fast.name}.md", args.out / f"{slow.name}-vs-{fast.name}.png"
    md.write_text(summary(rows, slow, fast))
    if not args.no_figure:
        plot(rows, png, slow, fast)
    print(f"wrote {shown_path(md)}" + ("" if args.no_figure else f" and {shown_path(png)}"))
    if newer:
        out = args.out / f"{gpu_key(fast.gpu)}-predicted-from-{newer.name}.md"
        out.write_text(prediction(rows, slow, fast, newer, also))
        print(f"wrote {shown_path(out)}")


if __name__ == "__main__":
    main()
