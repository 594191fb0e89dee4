"""The run's tables in Markdown, with the format's ideal speedup for each case."""

from __future__ import annotations

from .common import COPIES, KERNELS, cases
from .targets import e2e_markdown

PEAK_FP16_DENSE = 989e12  # H100/H200 SXM nominal dense fp16 tensor-core rate


def roofline_limit(info, n, k, m) -> float:
    """Ideal speedup of the 2:4 format on dense tensor cores: max(bytes/BW, flops/peak) ratio."""
    act = 2 * m * (n + k)
    bw = info["copy_gbps"] * 1e9
    t_dense = max((2 * n * k + act) / bw, 2 * m * n * k / PEAK_FP16_DENSE)
    t_sp24 = max((1.125 * n * k + act) / bw, 2 * m * n * k / PEAK_FP16_DENSE)
    return t_dense / t_sp24


def markdown(info, recs) -> str:
    lines = [
        f"# 2:4 sparse GEMM benchmark: {info['gpu']} ({info['arch']}, {info['sms']} SMs)",
        "",
        f"torch {info['torch']}, CUDA {info['cuda']}, Triton {info['triton']}, cuSPARSELt "
        f"{info['cusparselt']} (direct route: {info.get('cusparselt_direct', 'not recorded')}); "
        f"measured copy bandwidth {info['copy_gbps']:.0f} GB/s. fp16, "
        "y = x @ W.T, W pruned 2:4 (random); median of single-call CUDA-event times with the "
        "L2 flushed (read) before each call. Speedups vs cuBLAS dense fp16; `*` = host launch "
        "time exceeds the GPU time (launch-bound when called back to back). Limit: ideal speedup "
        "of 1.125 B/weight over 2 B/weight on dense tensor cores, max(bytes / measured copy "
        "bandwidth, FLOPs / 989 TFLOP/s). *Streamed*: per-call time of back-to-back calls cycling "
        f"through {COPIES} weight copies (cold weights, no flush, no idle GPU between calls).",
        "",
        "| N×K | M | cuBLAS µs | torch semi-structured | cuSPARSELt, plans kept | "
        + "".join(f"repro_{kernel} | " for kernel in KERNELS)
        + "repro_dispatch | chosen | cuBLAS µs, streamed | repro_dispatch, streamed | limit (dense TC) |",
        "|---" * (10 + len(KERNELS)) + "|",
    ]

    def cell(r):
        if r is None:
            return "–"
        if not r.get("us"):
            return r["status"]
        return f"{r['speedup_vs_cublas']:.2f}x" + ("*" if r.get("launch_bound") else "")

    for n, k, m in cases(recs):
        rows = {r["method"]: r for r in recs if r["N"] == n and r["K"] == k and r["M"] == m}
        if "cublas" not in rows:
            continue
        limit = roofline_limit(info, n, k, m)
        disp = rows.get("repro_dispatch")
        lines.append(
            f"| {n}×{k} | {m} | {rows['cublas']['us']:.1f} | {cell(rows.get('torch_semi_structured'))} | "
            f"{cell(rows.get('cusparselt'))} | "
            + "".join(f"{cell(rows.get(f'repro_{kernel}'))} | " for kernel in KERNELS)
            + f"{cell(disp)} | "
            f"{disp['cfg'] if disp else ''} | {rows['cublas'].get('us_streamed', 0):.1f} | "
            f"{(disp or {}).get('speedup_streamed') or 0:.2f}x | {limit:.2f}x |"
        )
    lines += [
        "",
        "Weight bytes per format (per layer shape):",
        "",
        "| N×K | dense fp16 | repro 2:4 (values + meta) | ratio | cuSPARSELt (torch's and ours) | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for n, k in dict.fromkeys((n, k) for n, k, _ in cases(recs)):
        rows = {r["method"]: r for r in recs if r["N"] == n and r["K"] == k and r.get("weight_bytes")}
        d = rows["cublas"]["weight_bytes"]
        ours = next(
            (
                r["weight_bytes"]
                for r in recs
                if r["N"] == n and r["K"] == k and r["method"].startswith("repro") and r.get("weight_bytes")
            ),
            None,
        )
        ss = (rows.get("torch_semi_structured") or rows.get("cusparselt") or {}).get("weight_bytes")
        lines.append(
            f"| {n}×{k} | {d} | {ours} | {ours / d:.4f} | {ss} | {(ss / d) if ss else float('nan'):.4f} |"
        )
    lines += [
        "",
        "Host time per call (enqueue only, small layer, best of 3 x 200 calls):",
        "",
        "| call | µs |",
        "|---|---|",
    ]
    lines += [f"| {name} | {us} |" for name, us in info.get("host_us_per_call", {}).items()]
    e2e = [r for r in recs if r["method"].startswith("e2e_")]
    if e2e:
        r0 = e2e[0]
        lines += [
            "",
            f"End to end: decode step of {r0['layers']} LLaMA-7B-shaped decoder layers "
            f"({r0['swapped_linears']} linears swapped), random weights pruned 2:4, fixed {r0['ctx']}-token "
            "KV cache.",
            "",
            e2e_markdown(recs).rstrip("\n"),
        ]
    return "\n".join(lines) + "\n"
