"""Summarize a GPU run that came back incomplete, into summary.md beside its files.

    python bench/summarize_partial.py bench/results/partial/<stem> [--compare bench/results/<run>.json]

A partial run lacks what bench/ingest_sparse24.py requires of a run (the dispatcher's rows, the
run description on the first record), so it is kept apart from the full runs, in
``bench/results/partial/<stem>/``, its files unchanged, and this script writes what can honestly be
read from them:

- ``sweep.json`` (required): bench/sparse24.py's records, as it writes them after each shape;
- ``sweep.log``: its log; the first line describes the GPU, the "host overhead" lines time the
  host's share of a call;
- ``dispatch_<arch>.json``: the dispatch table the run measured (it holds the chosen entry's time);
- ``gpu-check-output.txt``: what bench/gpu_check.sh printed (its end-to-end lines).

The issue's targets are judged on the kernel the table's rule picks from the sweep's records (the
dispatcher runs that kernel, but its own timing is not among the records), and say so.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "lib"))

from sp24.common import cases, shown_path  # noqa: E402
from sp24.dispatcher import build_table  # noqa: E402
from sp24.options import options_markdown  # noqa: E402
from sp24.targets import _section, _shape, best_kernels_markdown, evaluate, targets_markdown  # noqa: E402

from repro.kernels import dispatch  # noqa: E402

HOST_LINE = re.compile(r"^host overhead (.+): ([\d.]+) us/call$", re.M)
E2E_LINE = re.compile(r"^e2e b=(\d+): dense (\d+) tok/s \| (.+)$", re.M)
E2E_MODEL = re.compile(
    r"e2e_(\w+) (\d+) tok/s \(graph ([\d.]+)x, eager ([\d.]+)x, "
    r"eager through Triton's launch ([\d.]+)x, err ([\d.e+-]+)\)"
)


def table_choice_records(recs: list[dict]) -> list[dict]:
    """For each case, the record of what the dispatch table's rule picks (``build_table``),
    relabelled ``repro_dispatch`` so that the targets can be judged on it. The bytes are the
    2:4 format's whatever runs: the dispatcher stores the compressed weight."""
    table = build_table({"arch": "", "gpu": ""}, recs)
    out = [r for r in recs if r["method"] in ("cublas", "torch_semi_structured")]
    for e in table["entries"]:
        rows = {r["method"]: r for r in recs if (r["N"], r["K"], r["M"]) == (e["N"], e["K"], e["M"])}
        library = e["method"] in dispatch.LIBRARY_METHODS  # recorded under its own name, not as repro_*
        chosen = rows[e["method"] if library else f"repro_{e['method']}"]
        sparse_bytes = next(r["weight_bytes"] for r in rows.values() if r["method"].startswith("repro_"))
        out.append(chosen | {"method": "repro_dispatch", "cfg": chosen.get("cfg", ""), "weight_bytes": sparse_bytes})
    return out


def judged(recs: list[dict]) -> list[str]:
    """The targets' sentence and table: on the dispatcher's own records where the run kept them (a
    run of a subset of the cases, ``bench/sparse24.py --shapes/--ms``), else on the table's pick."""
    if any(r["method"] == "repro_dispatch" for r in recs):
        return [
            "Targets of the issue, judged on the dispatcher's own single-call (L2-flushed) times, driven by the "
            "table this run measured on these cases:",
            targets_markdown(evaluate(recs)),
        ]
    return [
        "Targets of the issue, judged on the kernel the dispatch table's rule picks for each case from these "
        "records (cuBLAS unless another method is ≥ 3% faster), single call, L2 flushed. *Not* the "
        "dispatcher's own timing, which this run did not keep:",
        targets_markdown(evaluate(table_choice_records(recs))),
    ]


def kernels_markdown(recs: list[dict], earlier: list[dict]) -> str:
    """Per case: cuBLAS, our two sparse-MMA kernels, and ``wgmma`` in an earlier run beside it."""
    before = {(r["N"], r["K"], r["M"]): r for r in earlier if r["method"] == "repro_wgmma"}
    lines = [
        "| N×K | M | cuBLAS µs | `spmma` | `wgmma` | its tiling | `wgmma`, earlier run | its tiling |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, k, m in cases(recs):
        rows = {r["method"]: r for r in recs if (r["N"], r["K"], r["M"]) == (n, k, m)}
        if "cublas" not in rows:
            continue
        spmma, wgmma, old = rows.get("repro_spmma"), rows.get("repro_wgmma"), before.get((n, k, m))

        def x(r):
            return f"{r['speedup_vs_cublas']:.2f}×" if r and r.get("speedup_vs_cublas") else "–"

        lines.append(
            f"| {_shape(n, k)} | {m} | {rows['cublas']['us']:.1f} | {x(spmma)} | {x(wgmma)} | "
            f"`{(wgmma or {}).get('cfg', '')}` | {x(old)} | `{(old or {}).get('cfg', '')}` |"
        )
    return "\n".join(lines) + "\n"


def installed_markdown(table: dict) -> str:
    """The dispatch table, per shape and M: the method and tiling it runs, with its measured speedup."""
    shapes = list(dict.fromkeys((e["N"], e["K"]) for e in table["entries"]))
    ms = sorted({e["M"] for e in table["entries"]})
    lines = ["| M | " + " | ".join(_shape(n, k) for n, k in shapes) + " |", "|---" * (len(shapes) + 1) + "|"]
    for m in ms:
        cells = []
        for n, k in shapes:
            entry = next((e for e in table["entries"] if (e["N"], e["K"], e["M"]) == (n, k, m)), None)
            if entry is None:
                cells.append("–")
                continue
            choice = dispatch._table_choice(table, n, k, m, torch.float16)
            label = choice.config.label() if choice.config else choice.method
            cells.append(f"`{label}` {entry['speedup_vs_cublas']:.2f}×")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def host_markdown(log: str) -> str:
    rows = HOST_LINE.findall(log)
    if not rows:
        return ""
    return "\n".join(["| call | µs |", "|---|---|", *(f"| {name} | {float(us):.1f} |" for name, us in rows)]) + "\n"


def e2e_markdown_from_output(output: str) -> str:
    """The end-to-end lines bench/sparse24.py printed, as a table (tokens/s and ratios to dense)."""
    lines = [
        "| batch | model | tokens/s, CUDA graph | vs dense | eager vs dense | eager through Triton's launch "
        "| max err |",
        "|---|---|---|---|---|---|---|",
    ]
    for batch, dense, rest in E2E_LINE.findall(output):
        lines.append(f"| {batch} | dense | {dense} | 1.00× | 1.00× | – | – |")
        for model, tokens, graph, eager, triton_launch, err in E2E_MODEL.findall(rest):
            lines.append(
                f"| {batch} | {model} | {tokens} | {float(graph):.2f}× | {float(eager):.2f}× | "
                f"{float(triton_launch):.2f}× | {err} |"
            )
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def summary(folder: Path, earlier: Path | None) -> str:
    recs = json.loads((folder / "sweep.json").read_text())
    log_path, output_path = folder / "sweep.log", folder / "gpu-check-output.txt"
    log = log_path.read_text() if log_path.exists() else ""
    output = output_path.read_text() if output_path.exists() else ""
    info = json.loads(log.splitlines()[0]) if log.startswith("{") else {}
    tables = sorted(folder.glob("dispatch_*.json"))
    shapes = ", ".join(_shape(n, k) for n, k in dict.fromkeys((n, k) for n, k, _ in cases(recs)))
    source = shown_path(folder)
    parts = [
        f"<!-- generated by bench/summarize_partial.py from {source}; do not edit -->",
        (
            f"**{info['gpu']}** ({info['arch']}, {info['sms']} SMs), torch {info['torch']}, CUDA {info['cuda']}, "
            f"Triton {info['triton']}; measured copy bandwidth {info['copy_gbps']:.0f} GB/s. "
            if info
            else ""
        )
        + f"Shapes in the sweep's records: {shapes}. Source: `{source}/`.",
        *judged(recs),
        "Our two sparse-MMA kernels against cuBLAS, best tiling each, single call with the L2 flushed; "
        + (f"`wgmma` in `{shown_path(earlier)}` beside it:" if earlier else "")
        + " tilings with `s` use the sparse form of the warpgroup MMA:",
        kernels_markdown(recs, json.loads(earlier.read_text()) if earlier else []),
        "Each kernel of ours, range of speedups over cuBLAS (best configuration per case):",
        best_kernels_markdown(recs),
        *_section("What `wgmma`'s options buy (time without / with, same tiling):", options_markdown(recs, "wgmma")),
        *[
            part
            for t in tables
            for part in _section(
                f"The dispatch table this run measured (`{t.name}`, all shapes): what runs, and its speedup:",
                installed_markdown(json.loads(t.read_text())),
            )
        ],
        *_section("Host time per call (enqueue only, from the sweep's log):", host_markdown(log)),
        *_section(
            "End to end (from the run's printed output), decode of 4 LLaMA-7B-shaped decoder layers, "
            "random weights pruned 2:4:",
            e2e_markdown_from_output(output),
        ),
    ]
    return "\n\n".join(part.rstrip("\n") for part in parts) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--compare", type=Path, help="an earlier full run's JSON, for the wgmma column")
    args = ap.parse_args()
    if not (args.folder / "sweep.json").exists():
        sys.exit(f"summarize_partial: {args.folder}/sweep.json is missing (bench/sparse24.py's records)")
    if args.compare and not (args.compare.is_file() and args.compare.suffix == ".json"):
        sys.exit(f"summarize_partial: --compare {args.compare} is not a JSON file; give bench/results/<run>.json")
    text = summary(args.folder, args.compare.resolve() if args.compare else None)
    (args.folder / "summary.md").write_text(text)
    print(f"wrote {args.folder / 'summary.md'}")


if __name__ == "__main__":
    main()
