"""The same kernels and tilings timed on two GPUs, paired: which of them slow with the memory.

An H100 SXM and an H200 share one die (GH100, 132 SMs at the same clocks; 50 and 60 MB of L2
enabled) and differ in their memory (HBM3 against HBM3e, measured copy rates of about 3.0 and
4.2 TB/s). A call bound by reading its weight
from memory takes about 1.4 times as long on the H100; one bound by the SMs or by their traffic
with the L2 takes about as long on both. Pairing every configuration both runs timed, per case,
says which kind each kernel is at each token count, without a profiler.
"""

from __future__ import annotations

import re
import statistics

from repro.kernels.fragments import WgmmaConfig

from .common import table_rows

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


def factors(rows: list[dict]) -> dict[tuple[int, str], tuple[float, float, float]]:
    """Per token count and family, from ``paired`` rows: the median ratio and its range."""
    out = {}
    for m, f in {(r["M"], r["family"]) for r in rows}:
        ratios = sorted(r["ratio"] for r in rows if r["M"] == m and r["family"] == f)
        out[(m, f)] = (statistics.median(ratios), ratios[0], ratios[-1])
    return out


def fastest_timed(times: dict[tuple, float], case: tuple[int, int, int]) -> tuple[str, float] | None:
    """The fastest of our configurations a run timed (``timings``) on ``case``, as ``(label, µs)``."""
    ours = [(us, label) for (n, k, m, method, label), us in times.items() if (n, k, m) == case and method != "cublas"]
    return (min(ours)[1], min(ours)[0]) if ours else None


def predicted(newer: list[dict], scale: dict[tuple[int, str], tuple[float, float, float]],
              fast_runs: list[tuple[str, list[dict]]], needs: dict[int, float]) -> list[dict]:
    """What a newer run on the slow GPU predicts for the fast one, case by case (``needs``: the
    speedup over cuBLAS each token count is judged on).

    Each configuration ``newer`` timed that no run in ``fast_runs`` (``(name, records)``, first
    preferred) timed on that case is given its time there divided by its family's median ratio at
    that token count (``scale``, from ``factors``): the same kernels, slower on the slow GPU by what
    the earlier pairs say. The fast GPU's cuBLAS and its fastest timed configuration come from the
    first of ``fast_runs`` that timed cuBLAS on the case. A model, written down before the fast GPU
    runs those configurations: it assumes a new tiling slows with the memory as its family did."""
    new_times = timings(newer)
    fast_times = [(name, timings(recs)) for name, recs in fast_runs]
    out = []
    for case in sorted({key[:3] for key in new_times}, key=lambda c: (c[2], c[0], c[1])):
        n, k, m = case
        base = next(((name, t) for name, t in fast_times if (*case, "cublas", "") in t), None)
        if m not in needs or base is None:
            continue
        seen = {key[4] for _, t in fast_times for key in t if key[:3] == case}
        best = None
        for (*where, method, label), us in new_times.items():
            f = family(method, label)
            if tuple(where) != case or method == "cublas" or label in seen or (m, f) not in scale:
                continue
            median, lo, hi = scale[(m, f)]
            if best is None or us / median < best["us"]:
                best = dict(label=label, family=f, slow_us=us, ratio=median, us=us / median, lo_us=us / hi,
                            hi_us=us / lo)
        timed = fastest_timed(base[1], case)
        candidates = [t for t in (best and best["us"], timed and timed[1]) if t]
        if not candidates:
            continue
        cublas = base[1][(*case, "cublas", "")]
        out.append(dict(N=n, K=k, M=m, need=needs[m], run=base[0], cublas_us=cublas, timed=timed, new=best,
                        speedup=cublas / min(candidates)))
    return out


def predicted_markdown(rows: list[dict], slow_key: str, fast_key: str) -> str:
    """A line counting the rows predicted to meet their target against those the fast GPU's own
    timings meet, then one row per case."""
    met = sum(r["speedup"] >= r["need"] for r in rows)
    met_timed = sum(bool(r["timed"]) and r["cublas_us"] / r["timed"][1] >= r["need"] for r in rows)
    slow, fast = slow_key.upper(), fast_key.upper()
    lines = [f"Predicted to meet their target: {met} of {len(rows)} cases (the {fast}'s own timings so far: "
             f"{met_timed}).\n",
             f"| N×K | M | target | {fast} cuBLAS µs (run) | fastest timed on the {fast} | "
             f"fastest new tiling: {slow} µs / ratio = predicted µs (range) | predicted best vs cuBLAS |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        timed = f"`{r['timed'][0]}` {r['timed'][1]:.1f} ({r['cublas_us'] / r['timed'][1]:.2f}×)" if r["timed"] else "–"
        new = r["new"]
        cell = (f"`{new['label']}` {new['slow_us']:.1f} / {new['ratio']:.2f} = {new['us']:.1f} "
                f"({new['lo_us']:.1f}–{new['hi_us']:.1f}; {r['cublas_us'] / new['us']:.2f}×)" if new else "–")
        verdict = "met" if r["speedup"] >= r["need"] else "not met"
        lines.append(f"| {r['N']}×{r['K']} | {r['M']} | ≥ {r['need']:.2f}× | {r['cublas_us']:.1f} ({r['run']}) | "
                     f"{timed} | {cell} | {r['speedup']:.2f}×, {verdict} |")
    return "\n".join(lines) + "\n"


_NEW_CELL = re.compile(r"`([^`]+)` ([\d.]+) / ([\d.]+) = ([\d.]+) \(([\d.]+)–([\d.]+); [\d.]+×\)")


def registered(page: str) -> list[dict]:
    """The cases of a committed ``--predict`` page (``predicted_markdown``), as written there: the
    target, the forecast's speedup and verdict, and the new tiling with its predicted time and range
    where the case has one (``label`` None where it has not)."""
    rows = []
    for cells in table_rows(page, 7):
        if not re.fullmatch(r"\d+×\d+", cells[0]):
            continue
        n, k = (int(v) for v in cells[0].split("×"))
        speedup, verdict = cells[6].split("×, ")
        new = _NEW_CELL.fullmatch(cells[5])
        row = dict(N=n, K=k, M=int(cells[1]), need=float(cells[2].strip("≥ ×")), speedup=float(speedup),
                   met=verdict == "met", label=None)
        if new:
            row.update(label=new[1], us=float(new[4]), lo_us=float(new[5]), hi_us=float(new[6]))
        rows.append(row)
    if not rows:
        raise SystemExit("no forecast in it: give a page written by bench/cross_gpu.py --predict")
    return rows


def scored(forecast: list[dict], later: list[dict], measured: dict[tuple[int, int, int], float]) -> list[dict]:
    """Each forecast case beside a later run: the new tiling's measured time (None where the run did
    not time it) and ``measured``, the speedup that run's targets are judged on for the case."""
    times = timings(later)
    out = []
    for row in forecast:
        case = (row["N"], row["K"], row["M"])
        got = next((us for (*where, _, label), us in times.items() if tuple(where) == case and label == row["label"]),
                   None) if row["label"] else None
        out.append(dict(row, measured_us=got, measured_speedup=measured.get(case)))
    return out


def scored_markdown(scores: list[dict], later_name: str) -> str:
    """A line of totals, then one row per forecast case."""
    timed = [s for s in scores if s["measured_us"] is not None]
    judged = [s for s in scores if s["measured_speedup"] is not None]
    head = [f"Forecast tilings timed in run `{later_name}`: {len(timed)} of {sum(bool(s['label']) for s in scores)}"]
    if timed:
        ratios = [s["measured_us"] / s["us"] for s in timed]
        inside = sum(s["lo_us"] <= s["measured_us"] <= s["hi_us"] for s in timed)
        head.append(f"measured / predicted: median {statistics.median(ratios):.2f} (range {min(ratios):.2f}–"
                    f"{max(ratios):.2f}), inside the predicted range: {inside}")
    if judged:
        met = sum(s["measured_speedup"] >= s["need"] for s in judged)
        agreed = sum((s["measured_speedup"] >= s["need"]) == s["met"] for s in judged)
        head.append(f"targets met: forecast {sum(s['met'] for s in judged)}, measured {met} of {len(judged)} cases; "
                    f"the verdicts agree on {agreed}")
    lines = ["; ".join(head) + ".\n",
             "| N×K | M | target | forecast tiling | predicted µs (range) | measured µs | measured / predicted | "
             "forecast | measured |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in scores:
        tiling = f"`{s['label']}`" if s["label"] else "–"
        pred = f"{s['us']:.1f} ({s['lo_us']:.1f}–{s['hi_us']:.1f})" if s["label"] else "–"
        got = f"{s['measured_us']:.1f}" if s["measured_us"] is not None else ("not timed" if s["label"] else "–")
        ratio = f"{s['measured_us'] / s['us']:.2f}" if s["measured_us"] is not None else "–"
        forecast = f"{s['speedup']:.2f}×, {'met' if s['met'] else 'not met'}"
        m = s["measured_speedup"]
        measured = f"{m:.2f}×, {'met' if m >= s['need'] else 'not met'}" if m is not None else "not measured"
        lines.append(f"| {s['N']}×{s['K']} | {s['M']} | ≥ {s['need']:.2f}× | {tiling} | {pred} | {got} | {ratio} | "
                     f"{forecast} | {measured} |")
    return "\n".join(lines) + "\n"
