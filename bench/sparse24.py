"""Benchmark of the book's 2:4 sparse GEMM (issue 3). A benchmark, not a test; needs a CUDA GPU.

    PYTHONPATH=lib python bench/sparse24.py --out DIR [--quick] [--no-e2e] [--shapes NxK,...] [--ms M,...]
        [--explore] [--precompile-only]

For LLaMA-7B linear shapes (N x K = 4096x4096, 11008x4096, 4096x11008) and M in MS, fp16:
- our kernels (``repro_fma``, ``repro_mma``, ``repro_expand``, ``repro_spmma`` on the sparse
  tensor cores and ``repro_wgmma`` on the warpgroup MMA: the best correct configuration of a
  sweep over tiles and split-K (``sp24/sweep.py``), by default its short list for a GPU with
  committed runs, the three fastest of each case there and whatever was never timed there
  (``sp24/shortlist.py``; ``--explore`` times the whole sweep);
  ``$REPRO_BENCH_KERNELS`` narrows the list), cuBLAS (``F.linear`` on the dense pruned weight), torch's
  semi-structured sparsity (``to_sparse_semi_structured``, cuSPARSELt), and the dispatcher
  (``repro_dispatch``: ``sparse24_matmul`` driven by the table this run measures, written as
  ``dispatch_<arch>.json``);
- every configuration is checked against an fp32 reference (poisoned output, max|err|/max|ref| <
  2e-2) before it is timed; wrong ones are recorded and never timed;
- time = median over calls of CUDA-event time around one call, with the L2 flushed before every
  call by *reading* a 512 MiB buffer (``triton.testing.do_bench``'s flush writes zeros, which
  leaves dirty lines that are written back during the timed call; see the reference notes), and a
  GPU spin after the flush that outlasts the call's host side (``sp24/timing.sleep_cycles``), so the
  events time the GPU's work alone;
- fixed cost against streaming rate: cuBLAS, the table's kernels and a read-only kernel (the
  floor) at N = 4096, M = 1 and 4 with K swept (``sp24/kscan.py``), each fitted to
  time = intercept + bytes / rate;
- end to end: decode tokens/s of a stack of LLaMA-7B-shaped decoder layers with random weights
  pruned 2:4, dense ``nn.Linear`` vs ``SparseLinear`` (planar, and fragment order when spmma or
  wgmma is benchmarked), batch 1 and 8, CUDA-graph replay and eager.

Writes ``sparse24.json`` (records), ``sparse24.md`` (tables) and ``dispatch_<arch>.json`` to --out.
``--shapes`` and ``--ms`` time a subset of the cases (a short device call for the cases a cut-off
run left untimed): the sweep and the dispatcher only, no K sweep or end-to-end part, and the run
marks itself a subset, which ``ingest_sparse24.py`` refuses (its table would cover only those
cases); keep it in ``bench/results/partial/<stem>/`` as ``sweep.json`` and summarize it with
``bench/summarize_partial.py``.
``run`` does the work on ``timer.device``; ``tests/kernels/test_bench_dryrun.py`` runs all of it on
the CPU (Triton's interpreter, the PTX emulator, a stand-in timer), so that no Python error in the
benchmark is first found in a GPU session.
The pieces live in ``bench/sp24/``: ``sweep`` (per-shape measurements), ``dispatcher``, ``kscan``,
``e2e``, ``timing``, ``report``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from sp24.common import MS, QUICK_MS, SHAPES, gpu_info  # noqa: E402
from sp24.dispatcher import bench_dispatch, build_table, host_overhead  # noqa: E402
from sp24.e2e import LLAMA_7B, bench_e2e  # noqa: E402
from sp24.kscan import KS, bench_kscan  # noqa: E402
from sp24.report import markdown  # noqa: E402
from sp24.shortlist import RESULTS, TOP, shortlist  # noqa: E402
from sp24.sweep import bench_shape, precompile  # noqa: E402
from sp24.timing import Timer  # noqa: E402

from repro.kernels import dispatch  # noqa: E402


def _subset(text: str, allowed: list, parse, name: str) -> list:
    """The comma-separated ``text`` as a subset of ``allowed`` (in ``allowed``'s order), or a usage
    error that names what was wrong and what may be chosen."""
    shown = ", ".join(_shown(a) for a in allowed)
    try:
        chosen = {parse(item.strip()) for item in text.split(",") if item.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"--{name} {text!r}: expected a comma-separated list of {shown}") from None
    if not chosen:
        raise argparse.ArgumentTypeError(f"--{name}: no case given; choose from {shown}")
    unknown = chosen - set(allowed)
    if unknown:
        bad = ", ".join(sorted(_shown(u) for u in unknown))
        raise argparse.ArgumentTypeError(f"--{name}: {bad} is not among the benchmark's cases; choose from {shown}")
    return [a for a in allowed if a in chosen]


def _shown(case) -> str:
    return f"{case[0]}x{case[1]}" if isinstance(case, tuple) else str(case)


def _shape(text: str) -> tuple[int, int]:
    n, k = text.lower().replace("×", "x").split("x")
    return int(n), int(k)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/latest"))
    ap.add_argument("--quick", action="store_true", help="one shape, three M values")
    ap.add_argument("--no-e2e", action="store_true")
    ap.add_argument("--e2e-layers", type=int, default=4)
    ap.add_argument("--shapes", type=lambda t: _subset(t, SHAPES, _shape, "shapes"),
                    help="time only these shapes, e.g. 4096x11008 (a subset run: see above)")
    ap.add_argument("--ms", type=lambda t: _subset(t, MS, int, "ms"), help="time only these M, e.g. 64,128")
    ap.add_argument("--explore", action="store_true",
                    help="time the whole sweep, not the short list of this GPU's committed runs (sp24/shortlist.py)")
    ap.add_argument("--precompile-only", action="store_true",
                    help="compile what the run would launch into Triton's cache and stop (see precompile_only)")
    args = ap.parse_args(argv)
    if args.quick and (args.shapes or args.ms):
        ap.error("--quick picks its own cases: give it, or --shapes/--ms, not both")
    return args


def main() -> None:
    args = parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/sparse24.py needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = False
    if args.precompile_only:
        precompile_only(args, gpu_info(), "cuda", lambda msg: print(msg, flush=True))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "sparse24.log", "a") as log_file:

        def log(msg):
            print(msg, flush=True)
            log_file.write(msg + "\n")
            log_file.flush()

        shapes, ms = cases(args)
        subset = bool(args.shapes or args.ms)
        info = gpu_info()
        if subset:
            info["subset"] = f"shapes {', '.join(map(_shown, shapes))}; M {', '.join(map(str, ms))}"
        log(json.dumps(info))
        e2e_layers = 0 if args.no_e2e or subset else args.e2e_layers
        keeps = sweep_choice(info, explore=args.explore)
        log(f"sweep: {info['sweep']}")
        print(run(args.out, info, Timer(), shapes, ms, log, e2e_layers=e2e_layers, kscan=None if subset else KSCAN,
                  keeps=keeps))


def cases(args: argparse.Namespace) -> tuple[list, list]:
    """The layer shapes and token counts the arguments ask for."""
    return (SHAPES[:1], QUICK_MS) if args.quick else (args.shapes or SHAPES, args.ms or MS)


def precompile_only(args: argparse.Namespace, info: dict, device, log) -> None:
    """``--precompile-only``: compile every kernel variant a run with the same arguments would launch
    (``sweep.precompile``) into Triton's cache on disk, and write nothing else. ``gpu_check.sh`` runs
    it beside the GPU tests, whose processes leave most of the CPU idle while they wait on the GPU;
    the benchmark's own precompile then loads each variant from the cache instead of compiling it."""
    shapes, ms = cases(args)
    keeps = sweep_choice(info, explore=args.explore)
    log(f"sweep: {info['sweep']}")
    precompile(shapes, ms, device, log, keeps)


def sweep_choice(info: dict, explore: bool = False, results: Path = RESULTS):
    """Which configurations the run times, recorded in ``info["sweep"]``: ``Shortlist.keeps`` of the
    GPU's committed runs (``sp24/shortlist.py``), or None for the whole sweep (``--explore``, or a
    GPU with no committed run)."""
    short = None if explore else shortlist(dispatch.gpu_key(info["gpu"]), results)
    info["sweep"] = "whole" if short is None else f"short list (top {TOP} of {', '.join(short.runs)})"
    return None if short is None else short.keeps


KSCAN = (4096, (1, 4), KS)  # the K sweep's N, Ms and Ks


def run(out: Path, info: dict, timer, shapes, ms, log, e2e_layers: int = 4, e2e_dims=LLAMA_7B, kscan=KSCAN,
        keeps=None) -> str:
    """Measure everything on ``timer.device`` and write the run's files to ``out``; returns the
    Markdown report. ``e2e_layers=0`` leaves out the end-to-end part; ``kscan`` is the
    ``(N, Ms, Ks)`` of the fixed-cost sweep (``sp24/kscan.py``), None to leave it out; ``keeps``
    narrows the sweep to a short list (``sp24/shortlist.py``), None times all of it."""
    started = time.perf_counter()
    phases = info["phase_seconds"] = {}  # when each part ended, for sizing the next device call

    def done(phase: str) -> None:
        phases[phase] = round(time.perf_counter() - started, 1)
        log(f"{phase}: done at {phases[phase]:.0f} s")

    precompile(shapes, ms, timer.device, log, keeps)
    done("precompile")
    info["host_us_per_call"] = host_overhead(timer, log)  # after the compiles: it runs spmma's M = 1 default
    recs, weights = [], {}
    for n, k in shapes:
        shape_recs, weights[(n, k)] = bench_shape(info, timer, n, k, ms, log, keeps)
        recs += shape_recs
        (out / "sparse24.json").write_text(json.dumps(recs, indent=1) + "\n")  # partial, if cut off
        done(f"sweep {n}x{k}")
    table = build_table(info, recs)
    (out / f"dispatch_{info['arch']}.json").write_text(json.dumps(table, indent=1) + "\n")
    dispatch.use_table(table)
    recs += bench_dispatch(info, timer, recs, weights, log)
    done("dispatcher")
    del weights
    torch.cuda.empty_cache()
    if kscan:
        n, kscan_ms, ks = kscan
        recs += bench_kscan(info, timer, table, log, n, kscan_ms, ks)
        done("K sweep")
    if e2e_layers:
        try:
            recs += bench_e2e(info, timer, e2e_layers, 512, (1, 8), log, dims=e2e_dims)
        except Exception as exc:  # keep the kernel results even if the e2e part fails
            log(f"e2e failed: {type(exc).__name__}: {exc}")
        done("end to end")
    for r in recs:
        r.setdefault("speedup_vs_cublas", None)
    payload = [dict(r, info=info) if i == 0 else r for i, r in enumerate(recs)]
    (out / "sparse24.json").write_text(json.dumps(payload, indent=1) + "\n")
    md = markdown(info, recs)
    (out / "sparse24.md").write_text(md)
    return md


if __name__ == "__main__":
    main()
