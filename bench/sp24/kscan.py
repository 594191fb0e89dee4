"""Fixed cost against streaming rate: one layer width at one M, K swept, and per method the line
``time = intercept + bytes / rate`` fitted through the single-call times.

A decode-size product is a 10-30 us kernel; how much of that is a fixed cost (launch, the first
round trip, the reduction at the end, the last wave) and how much is streaming decides what a
kernel change can buy. cuBLAS on the dense weight is measured the same way, so the lines can be
compared (the 1.5x target needs both a small intercept and a rate close to cuBLAS's), and so is a
kernel that only reads the bytes (``readfloor.py``), the floor of both.
"""

from __future__ import annotations

import numpy as np
import torch

from repro.kernels import compress_24, dispatch, triton_sp24
from repro.pruning import nm_mask

from .common import TOL, record, rel_err
from .readfloor import time_read

# powers of two and others between them: a stride effect (DRAM channels) would show as the
# powers of two leaving the line; 11008 is the LLaMA-7B down projection's K
KS = (512, 1024, 1536, 2048, 3072, 4096, 5120, 6144, 8192, 11008)


def _weight(n: int, k: int, device) -> torch.Tensor:
    w = torch.randn(n, k, device=device, dtype=torch.float16)
    return w * nm_mask(w.abs(), 2, 4)


def _methods(table, n: int, m: int) -> dict:
    """cuBLAS and the table's choices at ``m`` for both layouts (for the smallest measured K of
    width ``n``), by name."""
    measured = sorted(e["K"] for e in table.get("entries", []) if e["N"] == n)
    methods = {"cublas": dispatch.Choice("cublas")}
    if measured:
        for layout in ("planar", "fragments"):
            choice = dispatch._table_choice(table, n, measured[0], m, torch.float16, layout)
            if choice.method in triton_sp24.KERNELS:  # ours (not cuBLAS or cuSPARSELt)
                methods.setdefault(choice.method, choice)
    return methods


def bench_kscan(info, timer, table, log, n: int = 4096, ms=(1, 4), ks=KS) -> list[dict]:
    """Per K: ``kscan_read``, the floor (``readfloor.py``) for the 2:4 and the dense bytes
    (``M`` = 0), then per M in ``ms`` cuBLAS and the table's kernels (``kscan_<method>``), each
    checked before it is timed."""
    recs = []
    for k in ks:
        dense = _weight(n, k, timer.device)
        w = compress_24(dense)
        for nbytes in (w.nbytes, dense.nbytes):
            us, config = time_read(timer, nbytes)
            recs.append(record(info, n, k, 0, "kscan_read", "ok", us, 0.0, nbytes, "x".join(map(str, config))))
            log(f"kscan read {nbytes} B: {us:.1f}us")
        for m in ms:
            x = torch.randn(m, k, device=timer.device, dtype=torch.float16)
            ref = x.float() @ dense.float().T
            for name, method in _methods(table, n, m).items():
                out = torch.empty(m, n, device=timer.device, dtype=torch.float16)
                fn = lambda: dispatch.run_choice(method, x, w, None, out)  # noqa: B023, E731
                err = rel_err(fn(), ref)
                wbytes = dense.nbytes if name == "cublas" else w.nbytes
                cfg = method.config.label() if method.config else ""
                if not err < TOL:
                    recs.append(record(info, n, k, m, f"kscan_{name}", "wrong", err=err, cfg=cfg))
                    continue
                us = timer.median_us(fn)
                recs.append(record(info, n, k, m, f"kscan_{name}", "ok", us, err, wbytes, cfg))
                log(f"kscan {name} {cfg} {n}x{k} M={m}: {us:.1f}us")
    return recs


def fit_line(recs: list[dict], method: str, m: int | None = None) -> dict | None:
    """Least-squares ``us = intercept + weight_bytes / rate`` over the ``method`` records (at
    ``m`` tokens, if given): intercept (us), rate (GB/s, None if the times do not grow with the
    bytes) and the largest residual (us); None with fewer than two points."""
    rows = [r for r in recs if r["method"] == method and r.get("us") and m in (None, r["M"])]
    if len(rows) < 2:
        return None
    nbytes = np.array([r["weight_bytes"] for r in rows], dtype=float)
    us = np.array([r["us"] for r in rows], dtype=float)
    slope, intercept = np.polyfit(nbytes, us, 1)
    residual = float(np.abs(us - (intercept + slope * nbytes)).max())
    grows = slope * np.ptp(nbytes) > 1e-6 * us.max()  # not just rounding in the fit
    rate = 1e-3 / slope if grows else None  # bytes per us -> GB/s
    return dict(intercept_us=float(intercept), gbps=rate, max_residual_us=residual, points=len(rows))


def kscan_markdown(recs: list[dict]) -> str:
    """The fitted line of each method and M; empty for a run without a K sweep."""
    scans = [r for r in recs if r["method"].startswith("kscan_") and r.get("us")]
    if not scans:
        return ""
    lines = [
        "| method | M | intercept | streaming rate | largest residual | points |",
        "|---|---|---|---|---|---|",
    ]
    for method, m in dict.fromkeys((r["method"], r["M"]) for r in scans):
        fit = fit_line(recs, method, m)
        if fit is None:
            continue
        name = method.removeprefix("kscan_")
        cfg = next(r["cfg"] for r in scans if r["method"] == method and r["M"] == m)
        label = "read only (the floor)" if name == "read" else f"{name} {f'`{cfg}`' if cfg else ''}"
        rate = f"{fit['gbps']:.0f} GB/s" if fit["gbps"] else "– (no growth with K)"
        lines.append(
            f"| {label} | {m or '–'} | {fit['intercept_us']:.1f} µs | "
            f"{rate} | {fit['max_residual_us']:.1f} µs | {fit['points']} |"
        )
    return "\n".join(lines) + "\n"
