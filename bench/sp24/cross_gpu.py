"""The same kernels and tilings timed on two GPUs, paired: which of them slow with the memory.

An H100 SXM and an H200 share one die (GH100, 132 SMs at the same clocks; 50 and 60 MB of L2
enabled) and differ in their memory (HBM3 against HBM3e, measured copy rates of about 3.0 and
4.2 TB/s). A call bound by reading its weight
from memory takes about 1.4 times as long on the H100; one bound by the SMs or by their traffic
with the L2 takes about as long on both. Pairing every configuration both runs timed, per case,
says which kind each kernel is at each token count, without a profiler.
"""

from __future__ import annotations

import statistics

from repro.kernels.fragments import WgmmaConfig

# the methods compared; torch's semi-structured path is left out (its single calls are bound by
# the host, whose CPU differs between machines too), and so are the dispatcher's own records
# (they repeat one of these) and the K sweep's
COMPARED = ("cublas", "repro_spmma", "repro_wgmma", "repro_fma", "repro_mma", "repro_expand")
FAMILIES = ("cuBLAS", "spmma", "wgmma, sparse", "wgmma, dense", "Triton fma/mma/expand")  # table order


def family(method: str, label: str) -> str:
    """The family of a compared method's configuration (``wgmma`` by its form)."""
    if method == "cublas":
        return "cuBLAS"
    if method == "repro_spmma":
        return "spmma"
    if method == "repro_wgmma":
        return "wgmma, sparse" if WgmmaConfig.from_label(label).sparse else "wgmma, dense"
    return "Triton fma/mma/expand"


def timings(recs: list[dict]) -> dict[tuple, float]:
    """Every configuration a run timed, ``(N, K, M, method, label) -> µs``: each entry of a
    record's sweep, or the record itself where it has none (cuBLAS)."""
    out = {}
    for r in recs:
        if r.get("status") != "ok" or r["method"] not in COMPARED:
            continue
        timed = r.get("sweep") or [(r.get("cfg") or "", r.get("us"))]
        for label, us in timed:
            if isinstance(us, (int, float)) and us > 0:
                out[(r["N"], r["K"], r["M"], r["method"], label)] = float(us)
    return out


def paired(slow: list[dict], fast: list[dict]) -> list[dict]:
    """The configurations both runs timed, with ``ratio`` = time in ``slow`` / time in ``fast``."""
    a, b = timings(slow), timings(fast)
    rows = []
    for key in sorted(a.keys() & b.keys()):
        n, k, m, method, label = key
        rows.append(dict(N=n, K=k, M=m, family=family(method, label), label=label, us_slow=a[key], us_fast=b[key],
                         ratio=a[key] / b[key]))
    return rows


def ratio_markdown(rows: list[dict]) -> str:
    """Per token count and family: the median ratio, its range and the number of pairs."""
    families = [f for f in FAMILIES if any(r["family"] == f for r in rows)]
    lines = ["| M | " + " | ".join(families) + " |", "|---|" + "---|" * len(families)]
    for m in sorted({r["M"] for r in rows}):
        cells = []
        for f in families:
            ratios = sorted(r["ratio"] for r in rows if r["M"] == m and r["family"] == f)
            cells.append(
                f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}–{ratios[-1]:.2f}, {len(ratios)})" if ratios else "–"
            )
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def fastest_markdown(rows: list[dict]) -> str:
    """Per case and family, the fastest of the paired configurations in each run (not necessarily
    the same one), as the ratio of the two times: what a dispatcher measuring each would see."""
    families = [f for f in FAMILIES if any(r["family"] == f for r in rows)]
    cases = sorted({(r["M"], r["N"], r["K"]) for r in rows})
    lines = ["| M | N×K | " + " | ".join(families) + " |", "|---|---|" + "---|" * len(families)]
    for m, n, k in cases:
        cells = []
        for f in families:
            here = [r for r in rows if (r["M"], r["N"], r["K"]) == (m, n, k) and r["family"] == f]
            cells.append(f"{min(r['us_slow'] for r in here) / min(r['us_fast'] for r in here):.2f}" if here else "–")
        lines.append(f"| {m} | {n}×{k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
