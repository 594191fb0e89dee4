"""The dispatcher: its table from a run's records, its own timing, and the host cost of a call."""

from __future__ import annotations

import datetime as dt

import torch
import torch.nn.functional as F

from repro.kernels import compress_24, dispatch, sparse24_matmul
from repro.pruning import nm_mask

from .common import COPIES, KERNELS, TOL, cases, record, recs_at, rel_err


def _best(rows, cublas, candidates):
    """The fastest eligible row: cuBLAS unless a candidate is >= 3% faster (flushed timing)."""
    eligible = [
        r
        for r in rows
        if r["method"] in candidates
        and r["us"] < 0.97 * cublas["us"]
        and not (r["method"] == "torch_semi_structured" and r.get("launch_bound"))
    ]
    return min(eligible, key=lambda r: r["us"]) if eligible else cublas


def _entry_choice(best) -> dict:
    return dict(
        method=best["method"].removeprefix("repro_"),
        config=best.get("config"),
        us=round(best["us"], 2),
        speedup_vs_cublas=round(best["speedup_vs_cublas"], 3),
    )


def build_table(info, recs) -> dict:
    """Per (N, K, M): cuBLAS unless another method is >= 3% faster (flushed timing). Where that
    method cannot read a weight stored in fragment order, the entry also names the best of those
    that can (``fragments``: the best of spmma, wgmma, cuBLAS and cuSPARSELt either way).

    torch's semi-structured path is only eligible when it is not launch-bound: its eager calls
    cost 0.5-1 ms of host time, so its GPU time alone would promise what an eager call can't keep.
    """
    entries = []
    candidates = tuple(f"repro_{kernel}" for kernel in KERNELS) + ("torch_semi_structured", "cusparselt")
    for_fragments = tuple(r for r in candidates if r.removeprefix("repro_") in dispatch.LAYOUT_METHODS["fragments"])
    for n, k, m in cases(recs):
        rows = [r for r in recs if r["N"] == n and r["K"] == k and r["M"] == m and r.get("us")]
        cublas = next((r for r in rows if r["method"] == "cublas"), None)
        if cublas is None:
            continue
        best = _best(rows, cublas, candidates)
        entry = dict(N=n, K=k, M=m, dtype="float16") | _entry_choice(best)
        if entry["method"] not in dispatch.LAYOUT_METHODS["fragments"]:
            entry["fragments"] = _entry_choice(_best(rows, cublas, for_fragments))
        entries.append(entry)
    return dict(
        arch=info["arch"],
        gpu=info["gpu"],
        measured=dt.date.today().isoformat(),
        note="bench/sparse24.py; per (N, K): the smallest measured M >= m wins; M beyond the "
        "last measured value uses the last entry. Rule: cuBLAS unless another method is "
        ">= 3% faster; torch_semi_structured only when not launch-bound; 'fragments': the same "
        "rule among the methods that read fragment order, where the entry's own method cannot",
        entries=entries,
    )


def bench_dispatch(info, timer, recs, weights, log):
    out = []
    for (n, k), shape in weights.items():
        w, dense = shape["w"], shape["dense"]
        for m in [m for n2, k2, m in cases(recs) if (n2, k2) == (n, k)]:
            x = torch.randn(m, k, device=timer.device, dtype=torch.float16)
            ref = x.float() @ dense.float().T
            fn = lambda: sparse24_matmul(x, w)  # noqa: E731
            err = rel_err(fn(), ref)
            if not err < TOL:
                out.append(record(info, n, k, m, "repro_dispatch", "wrong", err=err))
                continue
            # cuBLAS again, call for call with the dispatcher: the targets divide these two times
            cublas_fn = lambda: F.linear(x, dense)  # noqa: E731
            us, cublas_paired = timer.paired_us([fn, cublas_fn])
            choice = dispatch.choose(w, m)
            cfg = choice.config.label() if choice.config else ""
            # the same choice called directly into a preallocated output, timed right after: any
            # gap to `us` is the dispatcher's own cost on the GPU side (none expected)
            out_direct = torch.empty(m, n, device=timer.device, dtype=torch.float16)
            us_direct = timer.median_us(lambda: dispatch.run_choice(choice, x, w, None, out_direct))
            rec = record(
                info,
                n,
                k,
                m,
                "repro_dispatch",
                "ok",
                us,
                err,
                w.nbytes,
                f"{choice.method} {cfg}",
                host=timer.host_us(fn),
            )
            rec["us_direct"] = us_direct
            if choice.method == "cublas":
                rec["note"] = "uses the cached dense weight (2 B/weight extra)"
            cublas = recs_at(recs, n, k, m, "cublas")
            rec["cublas_us_paired"] = cublas_paired
            rec["speedup_vs_cublas"] = cublas_paired / us
            rec["speedup_vs_cublas_sweep"] = cublas["us"] / us  # against the sweep's earlier cuBLAS time
            copies = [w] + [type(w)(w.values.clone(), w.meta.clone(), w.shape) for _ in range(COPIES - 1)]
            rec["us_streamed"] = timer.streamed_us([lambda c=c: sparse24_matmul(x, c) for c in copies])
            rec["speedup_streamed"] = cublas["us_streamed"] / rec["us_streamed"]
            del copies
            out.append(rec)
            log(
                f"dispatch {n}x{k} M={m}: {choice.method} {cfg} {us:.1f}us (direct {us_direct:.1f}us) "
                f"cublas {cublas_paired:.1f}us {rec['speedup_vs_cublas']:.2f}x (sweep's cublas {cublas['us']:.1f}us) "
                f"streamed {rec['us_streamed']:.1f}us {rec['speedup_streamed']:.2f}x"
            )
    return out


def host_overhead(timer, log) -> dict:
    """Host time per call (enqueue only) on a small layer whose GPU time is a few microseconds.
    With ``spmma`` (what decode layers run), its launch is taken apart: Triton's own launch of
    the kernel on arguments built beforehand, the same through ``fast_launch`` (the compiled
    kernel's launcher straight away), then with our ``launch()`` around it, then the chosen
    method's route without a bound launch (``run_choice``: the arguments built every call),
    then the whole route from ``sparse24_matmul`` (a fragment-order weight: no table entry at
    this shape, so ``spmma_default``; from its second call the launch bound to the weight), also
    with x as a model's [batch, tokens, hidden], last that route again with ``fast_launch`` off
    (no bound launch either)."""
    from repro.kernels import fast_launch, gluon_sp24
    from repro.kernels.triton_sp24 import KernelConfig, launch

    device = timer.device
    dense = torch.randn(1024, 1024, device=device, dtype=torch.float16)
    dense = dense * nm_mask(dense.abs(), 2, 4)
    w = compress_24(dense)
    x1 = torch.randn(1, 1024, device=device, dtype=torch.float16)
    x256 = torch.randn(256, 1024, device=device, dtype=torch.float16)
    out = torch.empty(1, 1024, device=device, dtype=torch.float16)
    cfg = KernelConfig(1, 8, 64, 1, 4)
    calls = {
        "F.linear (cuBLAS), M=1": lambda: F.linear(x1, dense),
        "launch() fma kernel, M=1": lambda: launch("fma", x1, w, None, out, cfg),
        "sparse24_matmul -> fma, M=1": lambda: sparse24_matmul(x1, w),
    }
    if "spmma" in KERNELS:
        frags = w.fragments()
        spmma = dispatch.spmma_default(1).config
        kernel, grid, args, options = gluon_sp24.spmma_call(x1, frags, None, out, spmma)
        x1_tokens = x1.view(1, 1, -1)  # a model's decode step: [batch, tokens, hidden]

        def spmma_through_triton():  # switching it off and back costs ~0.1 µs, inside the figure
            with fast_launch.turned_off():
                sparse24_matmul(x1, frags)

        calls |= {
            "spmma kernel[grid] alone, M=1": lambda: kernel[grid](*args, **options),
            "spmma kernel via fast_launch alone, M=1": lambda: fast_launch.launch(kernel, grid, args, options),
            "launch() spmma kernel, M=1": lambda: launch("spmma", x1, w, None, out, spmma),
            "run_choice -> spmma (fragment order, no bound launch), M=1": lambda: dispatch.run_choice(
                dispatch.spmma_default(1), x1, frags, None
            ),
            "sparse24_matmul -> spmma (fragment order), M=1": lambda: sparse24_matmul(x1, frags),
            "sparse24_matmul -> spmma (fragment order), x as [1, 1, K]": lambda: sparse24_matmul(x1_tokens, frags),
            "sparse24_matmul -> spmma (fragment order), M=1, fast_launch off": spmma_through_triton,
        }
    calls |= {
        "F.linear (cuBLAS), M=256": lambda: F.linear(x256, dense),
        "sparse24_matmul -> cublas, M=256": lambda: sparse24_matmul(x256, w),
    }
    result = {}
    for name, fn in calls.items():
        result[name] = round(timer.best_host_us(fn), 2)
        log(f"host overhead {name}: {result[name]} us/call")
    return result
