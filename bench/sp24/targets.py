"""Issue 3's targets, judged from a run's records, and the summary the kernel page includes.

The book page (book/sparse24.md) shows these tables by ``{include}``, so the numbers and the
met / not-met verdicts on it come from the committed JSON, never from typing.

A target is judged on the dispatcher (``repro_dispatch``: what ``sparse24_matmul`` gives a user)
with the single-call, L2-flushed times; the streamed (CUDA-graph) figures are shown beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .common import cases
from .kscan import kscan_markdown
from .options import options_markdown

DECODE_MS = (1, 4, 8, 16)  # "decode, M <= 16"
MID_MS = (32, 64, 128)  # "M = 32-128"
LARGE_MIN_M = 512  # "M >= 512"
DECODE_SPEEDUP, MID_SPEEDUP, LARGE_RATIO = 1.5, 1.1, 0.95
MEMORY_RATIO = 0.5625  # 1.125 bytes per weight over 2: values and metadata
BASELINES = ("cublas", "torch_semi_structured")  # what the large-M target compares with


@dataclass(frozen=True)
class Row:
    shape: str  # "N×K"
    m: int | None  # None: the row holds for every M
    value: float
    note: str = ""

    def label(self, digits: int) -> str:
        where = self.shape if self.m is None else f"{self.shape}, M = {self.m}"
        return f"{self.value:.{digits}f} ({where}{', ' + self.note if self.note else ''})"


@dataclass
class Verdict:
    """One target: the measured rows it is judged on, how many meet it, and the worst one."""

    name: str
    requirement: str
    threshold: float
    higher_is_better: bool = True
    digits: int = 2
    rows: list[Row] = field(default_factory=list)

    def passes(self, value: float) -> bool:
        return value >= self.threshold if self.higher_is_better else value <= self.threshold

    @property
    def met_rows(self) -> list[Row]:
        return [row for row in self.rows if self.passes(row.value)]

    @property
    def status(self) -> str:
        if not self.rows:
            return "not measured"
        if len(self.met_rows) == len(self.rows):
            return "met"
        return f"not met ({len(self.met_rows)} of {len(self.rows)} cases)"

    def detail(self) -> str:
        if not self.rows:
            return "–"
        worst = min(self.rows, key=lambda row: row.value if self.higher_is_better else -row.value)
        if len(self.met_rows) == len(self.rows):
            return f"all {len(self.rows)} cases; worst {worst.label(self.digits)}"
        met = "; ".join(row.label(self.digits) for row in self.met_rows)
        return f"met: {met or 'none'}. Worst {worst.label(self.digits)}"


def _shape(n: int, k: int) -> str:
    return f"{n}×{k}"


def _by_case(recs) -> dict[tuple[int, int, int], dict[str, dict]]:
    table: dict[tuple[int, int, int], dict[str, dict]] = {}
    for r in recs:
        if r.get("N") is not None and r.get("us"):
            table.setdefault((r["N"], r["K"], r["M"]), {})[r["method"]] = r
    return table


def evaluate(recs: list[dict]) -> list[Verdict]:
    """The four targets of issue 3, each with the rows it was judged on."""
    decode = Verdict("decode", f"M ≤ 16: dispatcher ≥ {DECODE_SPEEDUP}× cuBLAS", DECODE_SPEEDUP)
    mid = Verdict("mid", f"M = 32–128: dispatcher ≥ {MID_SPEEDUP}× cuBLAS", MID_SPEEDUP)
    large = Verdict(
        "large",
        f"M ≥ {LARGE_MIN_M}: dispatcher ≥ {LARGE_RATIO}× the best of cuBLAS and torch semi-structured",
        LARGE_RATIO,
    )
    memory = Verdict(
        "memory",
        f"weight bytes ≤ {MEMORY_RATIO} of dense fp16, metadata included",
        MEMORY_RATIO,
        higher_is_better=False,
        digits=4,
    )
    seen_shapes = set()
    for (n, k, m), rows in _by_case(recs).items():
        disp, cublas = rows.get("repro_dispatch"), rows.get("cublas")
        if disp is None or cublas is None:
            continue
        shape = _shape(n, k)
        # where the run has it, cuBLAS timed call for call with the dispatcher (Timer.paired_us)
        cublas = {**cublas, "us": disp.get("cublas_us_paired") or cublas["us"]}
        rows = {**rows, "cublas": cublas}
        speedup = cublas["us"] / disp["us"]
        if m in DECODE_MS:
            decode.rows.append(Row(shape, m, speedup))
        elif m in MID_MS:
            mid.rows.append(Row(shape, m, speedup))
        elif m >= LARGE_MIN_M:
            best = min((r for key, r in rows.items() if key in BASELINES), key=lambda r: r["us"])
            note = (
                "" if best is cublas else f"vs {best['method']}" + (", host-bound" if best.get("launch_bound") else "")
            )
            large.rows.append(Row(shape, m, best["us"] / disp["us"], note))
        if shape not in seen_shapes and disp.get("weight_bytes") and cublas.get("weight_bytes"):
            seen_shapes.add(shape)  # the format's bytes do not depend on M
            memory.rows.append(Row(shape, None, disp["weight_bytes"] / cublas["weight_bytes"]))
    return [decode, mid, large, memory]


def targets_markdown(verdicts: list[Verdict]) -> str:
    lines = ["| target | status | detail |", "|---|---|---|"]
    for v in verdicts:
        status = f"**{v.status}**" if v.status == "met" else v.status
        lines.append(f"| {v.requirement} | {status} | {v.detail()} |")
    return "\n".join(lines) + "\n"


def _per_m_table(recs: list[dict], cell) -> str:
    """One row per measured M, one column per shape; ``cell(dispatcher record or None)`` fills it."""
    by_case = _by_case(recs)
    shapes = list(dict.fromkeys((n, k) for n, k, _ in cases(recs)))
    lines = ["| M | " + " | ".join(_shape(n, k) for n, k in shapes) + " |", "|---" * (len(shapes) + 1) + "|"]
    for m in sorted({m for _, _, m in cases(recs)}):
        cells = [cell(by_case.get((n, k, m), {}).get("repro_dispatch")) for n, k in shapes]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def dispatcher_markdown(recs: list[dict]) -> str:
    """Dispatcher speedup over cuBLAS, flushed / streamed (bold where the decode target is reached)."""

    def cell(disp):
        if disp is None or not disp.get("speedup_vs_cublas"):
            return "–"
        text = f"{disp['speedup_vs_cublas']:.2f} / {disp.get('speedup_streamed') or float('nan'):.2f}"
        return f"**{text}**" if disp["speedup_vs_cublas"] >= DECODE_SPEEDUP else text

    return _per_m_table(recs, cell)


def chosen_markdown(recs: list[dict]) -> str:
    """What the dispatcher ran (method and configuration label)."""
    return _per_m_table(recs, lambda disp: f"`{disp['cfg'].strip()}`" if disp and disp.get("cfg") else "–")


def rates_markdown(recs: list[dict]) -> str:
    """The dispatcher's effective bandwidth (the 2:4 format's bytes plus activations, per second)
    and arithmetic rate (dense-equivalent 2·M·N·K FLOPs per second)."""

    def cell(disp):
        if disp is None or not disp.get("gbps"):
            return "–"
        return f"{disp['gbps']:.0f} GB/s · {disp['tflops']:.1f} TFLOP/s"

    return _per_m_table(recs, cell)


def best_kernels_markdown(recs: list[dict]) -> str:
    """The range of each of our kernels' speedups over cuBLAS in the decode, mid and large ranges."""
    by_case = _by_case(recs)
    kernels = [
        r["method"].removeprefix("repro_")
        for r in recs
        if r["method"].startswith("repro_") and r["method"] != "repro_dispatch"
    ]
    ranges = [("M ≤ 16", DECODE_MS), ("M = 32–128", MID_MS), (f"M ≥ {LARGE_MIN_M}", None)]
    lines = ["| kernel | " + " | ".join(name for name, _ in ranges) + " |", "|---" * (len(ranges) + 1) + "|"]
    for kernel in dict.fromkeys(kernels):
        cells = []
        for _, ms in ranges:
            values = [
                rows[f"repro_{kernel}"]["speedup_vs_cublas"]
                for (_, _, m), rows in by_case.items()
                if f"repro_{kernel}" in rows
                and rows[f"repro_{kernel}"].get("speedup_vs_cublas")
                and (m in ms if ms else m >= LARGE_MIN_M)
            ]
            cells.append(f"{min(values):.2f}–{max(values):.2f}×" if values else "–")
        if any(c != "–" for c in cells):
            lines.append(f"| `{kernel}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def e2e_markdown(recs: list[dict]) -> str:
    rows = [r for r in recs if r["method"].startswith("e2e_")]
    if not rows:
        return "No end-to-end measurement in this run.\n"
    # newer runs also time the eager decode with every kernel launched through Triton's own path
    # (fast_launch off): a column only where the run has it
    triton_launch = any(r.get("tokens_per_s_eager_triton_launch") for r in rows)
    lines = [
        "| batch | model | tokens/s, CUDA graph | vs dense | tokens/s, eager | vs dense "
        + ("| eager through Triton's launch " if triton_launch else "")
        + "| weight MiB | + derived copies MiB |",
        "|---|---|---|---|---|---|" + ("---|" if triton_launch else "") + "---|---|",
    ]
    for r in rows:
        cached = r.get("cached_bytes")  # dense / fragment copies the dispatcher keeps (newer runs)
        slow = r.get("tokens_per_s_eager_triton_launch")
        lines.append(
            f"| {r['M']} | {r['method'].removeprefix('e2e_')} | {r['tokens_per_s']:.0f} | "
            f"{r['speedup_vs_dense']:.2f}× | {r['tokens_per_s_eager']:.0f} | "
            f"{r['speedup_vs_dense_eager']:.2f}× | "
            + ((f"{slow:.0f} | " if slow else "– | ") if triton_launch else "")
            + f"{r['weight_bytes'] / 2**20:.0f} | "
            f"{'not recorded' if cached is None else f'{cached / 2**20:.0f}'} |"
        )
    return "\n".join(lines) + "\n"


def _section(intro: str, table: str) -> list[str]:
    """An introduced table, or nothing where the run did not measure it (an empty table)."""
    return [intro, table] if table else []


def _paired(recs: list[dict]) -> bool:
    """Whether the run timed cuBLAS again, call for call with the dispatcher (runs after 2026-11-28c)."""
    return any(r.get("cublas_us_paired") for r in recs if r["method"] == "repro_dispatch")


def summary_markdown(recs: list[dict], source: str) -> str:
    """The page's results section body: generated from ``source`` (a committed JSON)."""
    info = recs[0]["info"]
    host = info.get("host_us_per_call", {})
    host_line = "; ".join(f"{name}: {us:.0f} µs" for name, us in host.items())
    parts = [
        f"<!-- generated by bench/ingest_sparse24.py from {source}; do not edit -->",
        f"**{info['gpu']}** ({info['arch']}, {info['sms']} SMs), torch {info['torch']}, CUDA {info['cuda']}, "
        f"Triton {info['triton']}; measured copy bandwidth {info['copy_gbps']:.0f} GB/s. "
        + (f"Sweep: {info['sweep']}. " if info.get("sweep") else "")
        + f"Source: `{source}`.",
        "Targets of the issue, judged on the dispatcher's single-call (L2-flushed) times"
        + (", each against cuBLAS timed call for call with it (interleaved):" if _paired(recs) else ":"),
        targets_markdown(evaluate(recs)),
        "Dispatcher speedup over cuBLAS, single call with the L2 flushed / streamed (bold: ≥ 1.5×):",
        dispatcher_markdown(recs),
        "What the dispatcher ran. Labels: Triton kernels `tokens×rows×K-columns per step / warps, "
        "pipeline stages / K splits`; `spmma` `r<R>[w<W>]s<S>u<U>t<T>[p][x][i][h][a<n>][c<n>][k<n>]`, `p` prefetch, "
        "`x` wide_x, `i` interleave, `h` chain, `a<n>` l2_ahead, `c<n>` stages, `k<n>` split_k (see `SpmmaConfig`); "
        "`wgmma` `g<G>[w<W>]t<T>u<U>[a<n>][c<n>][x<n>][s][k<n>][q][m]`, G warpgroups, W MMA tiles per "
        "warpgroup, T tokens, U k-blocks per step, `a<n>` loads n steps ahead, `c<n>` a cp.async ring of n "
        "stages, the weight words (and from run 2026-11-27e x too), `x<n>` x resident n steps at a time, `s` the "
        "sparse form (`wgmma.sp`), `k<n>` K splits, `q` the splits meeting in a cluster, `m<n>` x shared by n "
        "row tiles (see `WgmmaConfig`):",
        chosen_markdown(recs),
        f"Rates of the dispatcher: effective bandwidth counts the 2:4 format's bytes (56.25% of dense) "
        f"plus activations, whatever method ran (measured copy bandwidth: {info['copy_gbps']:.0f} GB/s); "
        "TFLOP/s counts the dense-equivalent 2·M·N·K:",
        rates_markdown(recs),
        "Each kernel of ours on its own, range of speedups over cuBLAS (best configuration per case):",
        best_kernels_markdown(recs),
        *_section(
            "What `spmma`'s options buy: time without the option / time with it, for the configurations the "
            "sweep timed in both forms (same tiling), median and range over the three shapes:",
            options_markdown(recs),
        ),
        *_section(
            "What `wgmma`'s options buy, read the same way:",
            options_markdown(recs, "wgmma"),
        ),
        *_section(
            "Fixed cost and streaming rate: one layer width with K swept, single calls with the L2 flushed, and "
            "the line time = intercept + weight bytes / rate fitted per method and M (`sp24/kscan.py`); "
            "*read only* is a kernel that just reads the 2:4 and the dense bytes, the floor of any kernel "
            "(`sp24/readfloor.py`):",
            kscan_markdown(recs),
        ),
        "End to end, decode of a stack of LLaMA-7B-shaped decoder layers (random weights pruned 2:4):",
        e2e_markdown(recs),
        f"Host time per call (enqueue only): {host_line or 'not measured'}.",
    ]
    return "\n\n".join(part.rstrip("\n") for part in parts) + "\n"
