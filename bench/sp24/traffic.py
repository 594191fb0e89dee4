"""The bytes a ``wgmma`` tiling moves between the SMs and the L2, and the rate a run reached.

A ``wgmma`` program computes ``64·G·W`` output rows for ``T`` tokens over its run of K. Every
byte it reads comes through the L2, and much of it more than once:

- **weight**: the 2:4 words (1.125 bytes per weight, metadata included), read once per token
  group;
- **x**: all ``M`` tokens of K, read again by *every* row tile (``N / rows`` times: only one of
  those reads comes from DRAM, the rest hit the L2), or with ``share`` once per that many row tiles
  (one TMA multicast feeds them all, ``gluon_shared_x.py``);
- **workspace**: with split-K, every program stores an fp32 partial tile and the split that
  arrives last reads all of its tile's partials back (``_meet_splits``), so each partial crosses
  twice; **tail** is what that last split reads before it can store, which no other program
  shares;
- **output**: ``N · M`` fp16 values, once.

Dividing the sum by a measured time gives the rate at which the call moved bytes between the SMs
and the L2. Comparing that rate across tilings, and against the highest rate any tiling reached,
says whether a tiling is limited by the bytes it moves or by something else (latency, a serial
tail). A model of traffic, not of time: it counts bytes and nothing about when they move.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace

from repro.kernels.fragments import WgmmaConfig

from .targets import _shape

WEIGHT_BYTES_PER_ELEMENT = 1.125  # 2:4 values (half of K, fp16) and 2-bit positions
X_BYTES = 2  # fp16 or bf16
PARTIAL_BYTES = 4  # fp32 partial sums of split-K


@dataclass(frozen=True)
class Traffic:
    """Bytes between the SMs and the L2 in one call, by what they carry."""

    weight: float
    x: float
    workspace: float
    output: float
    tail: float  # bytes the last split of a tile reads before it can store (0 without split-K)
    programs: int

    @property
    def total(self) -> float:
        return self.weight + self.x + self.workspace + self.output


def wgmma_traffic(cfg: WgmmaConfig, n: int, k: int, m: int) -> Traffic:
    """What ``cfg`` moves for ``y[m, n] = x[m, k] · W[n, k]ᵀ`` (see the module docstring).
    Rows past ``n`` and tokens past ``m`` are masked and move nothing."""
    if min(n, k, m) < 1:
        raise ValueError(f"wgmma_traffic needs n, k, m >= 1, got n={n}, k={k}, m={m}")
    cfg.check()
    row_tiles, token_groups, splits = cfg.grid(n, m)
    partial = cfg.rows * cfg.T * PARTIAL_BYTES  # one program's fp32 tile, stored whole
    # splits in a cluster meet in its shared memory (gluon_cluster.py), each adding a slice alone
    through_l2 = splits > 1 and not cfg.cluster
    workspace = 2 * row_tiles * token_groups * splits * partial if through_l2 else 0
    return Traffic(
        weight=token_groups * n * k * WEIGHT_BYTES_PER_ELEMENT,
        x=row_tiles // cfg.share * m * k * X_BYTES,
        workspace=workspace,
        output=n * m * X_BYTES,
        tail=splits * partial if through_l2 else 0,
        programs=row_tiles * token_groups * splits,
    )


def timed_tilings(recs: list[dict], ms: tuple[int, ...] = (16, 32, 64, 128, 512), sparse: bool = True) -> list[dict]:
    """Every ``wgmma`` tiling a run timed at the token counts ``ms`` (the sweep of each
    ``repro_wgmma`` record), with its traffic, its rate (bytes per second) and cuBLAS's time for
    the same case. With ``sparse``, only the sparse form's tilings: the dense form spends its steps
    expanding the weight on CUDA cores (``bench/NOTES-sparse24.md``, v17), so its rate says
    little about the bytes."""
    cublas = {(r["N"], r["K"], r["M"]): r["us"] for r in recs if r["method"] == "cublas" and r.get("us")}
    rows = []
    for r in recs:
        if r["method"] != "repro_wgmma" or r["M"] not in ms or not r.get("sweep"):
            continue
        n, k, m = r["N"], r["K"], r["M"]
        for label, us in r["sweep"]:
            if not isinstance(us, (int, float)) or us <= 0:
                continue
            cfg = WgmmaConfig.from_label(label)
            if sparse and not cfg.sparse:
                continue
            t = wgmma_traffic(cfg, n, k, m)
            rows.append(dict(N=n, K=k, M=m, label=label, cfg=cfg, us=us, traffic=t, rate=t.total / (us * 1e-6),
                             cublas_us=cublas.get((n, k, m))))
    return rows


def _mb(b: float) -> str:
    return f"{b / 1e6:.1f}"


def _tbs(rate: float) -> str:
    return f"{rate / 1e12:.2f}"


def best_per_case(rows: list[dict]) -> list[dict]:
    """The fastest tiling of each (N, K, M), in the order N, K, M."""
    best: dict[tuple, dict] = {}
    for row in rows:
        key = (row["N"], row["K"], row["M"])
        if key not in best or row["us"] < best[key]["us"]:
            best[key] = row
    return [best[key] for key in sorted(best, key=lambda c: (c[2], c[0], c[1]))]


def cases_markdown(rows: list[dict]) -> str:
    """Per case: the fastest tiling, what it moves (weight / x / workspace), the rate it reached,
    and the highest rate any tiling reached in that case."""
    lines = [
        "| N×K | M | cuBLAS µs | fastest tiling | µs | rows | split | MB: weight / x / workspace | "
        "x / weight | TB/s | highest TB/s (tiling) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in best_per_case(rows):
        same = [r for r in rows if (r["N"], r["K"], r["M"]) == (b["N"], b["K"], b["M"])]
        top = max(same, key=lambda r: r["rate"])
        t = b["traffic"]
        cublas = f"{b['cublas_us']:.1f}" if b["cublas_us"] else "–"
        lines.append(
            f"| {_shape(b['N'], b['K'])} | {b['M']} | {cublas} | `{b['label']}` | {b['us']:.1f} | {b['cfg'].rows} | "
            f"{b['cfg'].split_k} | {_mb(t.weight)} / {_mb(t.x)} / {_mb(t.workspace)} | {t.x / t.weight:.1f} | "
            f"{_tbs(b['rate'])} | {_tbs(top['rate'])} (`{top['label']}`) |"
        )
    return "\n".join(lines) + "\n"


def rows_markdown(rows: list[dict]) -> str:
    """Per M and rows per program: how many tilings were timed, the median rate they reached, the
    median bytes the last split of a tile reads alone (the split-K tail) and the median speedup
    over cuBLAS."""
    groups: dict[tuple[int, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["M"], row["cfg"].rows), []).append(row)
    lines = ["| M | rows per program | tilings × shapes | median TB/s | median tail KB | median speedup over cuBLAS |",
             "|---|---|---|---|---|---|"]
    for (m, rows_per), group in sorted(groups.items()):
        speedups = [r["cublas_us"] / r["us"] for r in group if r["cublas_us"]]
        against_cublas = f"{statistics.median(speedups):.2f}×" if speedups else "–"
        lines.append(
            f"| {m} | {rows_per} | {len(group)} | {_tbs(statistics.median(r['rate'] for r in group))} | "
            f"{statistics.median(r['traffic'].tail for r in group) / 1e3:.0f} | {against_cublas} |"
        )
    return "\n".join(lines) + "\n"


def x_shared_estimate(row: dict, share: int = 2) -> float:
    """The time, in µs, that ``row``'s tiling would take if x were read once per ``share`` row
    tiles and the call moved its bytes at the rate it reached: an extrapolation of the traffic
    model, not a measurement (the shared-x form, ``gluon_shared_x.py``, shares x between row tiles:
    its timed rows say whether the rate held)."""
    t = row["traffic"]
    return (t.total - t.x * (1 - 1 / share)) / row["rate"] * 1e6


def twin_of(cfg: WgmmaConfig) -> WgmmaConfig | None:
    """The tiling a new one is predicted from: the same with each program loading x itself, and
    with 128-token tiles where it has 256; None where ``cfg`` is already such a tiling."""
    base = replace(cfg, share=1)
    if base.T == 256:
        base = replace(base, T=128)
    return None if base == cfg else base


def predictions(rows: list[dict], labels_by_m: dict[int, list[str]]) -> list[dict]:
    """For each case of ``rows`` (a run's timed tilings, ``timed_tilings``) and each tiling of
    ``labels_by_m`` at its token count that the run did not time but whose twin (``twin_of``) it
    did: the time the traffic count gives it, its bytes moved at the rate the twin reached. A
    prediction written down before the measurement, not one."""
    timed = {(r["N"], r["K"], r["M"], r["label"]): r for r in rows}
    out = []
    for n, k, m in sorted({(r["N"], r["K"], r["M"]) for r in rows}, key=lambda c: (c[2], c[0], c[1])):
        for label in labels_by_m.get(m, ()):
            cfg = WgmmaConfig.from_label(label)
            twin = twin_of(cfg)
            base = timed.get((n, k, m, twin.label())) if twin else None
            if (n, k, m, label) in timed or base is None:
                continue
            t = wgmma_traffic(cfg, n, k, m)
            out.append(dict(N=n, K=k, M=m, label=label, twin=base["label"], twin_us=base["us"],
                            twin_traffic=base["traffic"], us=t.total / base["rate"] * 1e6, traffic=t,
                            cublas_us=base["cublas_us"]))
    return out


def predictions_markdown(preds: list[dict]) -> str:
    """One row per predicted tiling and case: the twin's measured time and rate, the bytes of both,
    and the predicted time against cuBLAS."""
    lines = ["| N×K | M | tiling | from (measured µs) | MB: twin → tiling | predicted µs | vs cuBLAS |",
             "|---|---|---|---|---|---|---|"]
    for p in preds:
        vs = f"{p['cublas_us'] / p['us']:.2f}×" if p["cublas_us"] else "–"
        lines.append(f"| {_shape(p['N'], p['K'])} | {p['M']} | `{p['label']}` | `{p['twin']}` ({p['twin_us']:.1f}) | "
                     f"{_mb(p['twin_traffic'].total)} → {_mb(p['traffic'].total)} | {p['us']:.1f} | {vs} |")
    return "\n".join(lines) + "\n"


def scored(preds: list[dict], later: list[dict]) -> list[dict]:
    """Each prediction (``predictions``) beside what a later run measured (its ``timed_tilings``):
    the tiling's time, its twin's time again and cuBLAS's. The twin timed again separates the
    two ways a prediction can miss: the GPU or the run moved (the twin's time moved with it), or
    the count was wrong (the tiling moved its bytes at another rate than its twin did now).
    Predictions whose tiling the later run did not time (wrong, refused, or left out) are kept
    with ``measured_us`` None."""
    timed = {(r["N"], r["K"], r["M"], r["label"]): r for r in later}
    out = []
    for p in preds:
        case = (p["N"], p["K"], p["M"])
        got, twin = timed.get((*case, p["label"])), timed.get((*case, p["twin"]))
        # the tiling's rate over the rate its twin reached in the same run: 1 where the count held
        rate_vs_twin = got["rate"] / twin["rate"] if got and twin else None
        out.append(dict(p, measured_us=got["us"] if got else None, twin_now_us=twin["us"] if twin else None,
                        cublas_now_us=got["cublas_us"] if got else None, rate_vs_twin=rate_vs_twin))
    return out


def scored_markdown(scores: list[dict]) -> str:
    """A line of totals, then one row per prediction the later run measured (see ``scored``)."""
    measured = [s for s in scores if s["measured_us"] is not None]
    if not measured:
        return f"None of the {len(scores)} predictions was timed in the later run.\n"
    ratios = [s["measured_us"] / s["us"] for s in measured]
    close = sum(abs(r - 1) <= 0.1 for r in ratios)
    held = [s["rate_vs_twin"] for s in measured if s["rate_vs_twin"] is not None]
    head = (f"{len(measured)} of {len(scores)} predictions measured; measured / predicted: median "
            f"{statistics.median(ratios):.2f} (range {min(ratios):.2f}–{max(ratios):.2f}), within ±10%: {close}")
    if held:
        head += (f"; the tiling's rate over its twin's in the same run: median {statistics.median(held):.2f} "
                 f"(range {min(held):.2f}–{max(held):.2f})")
    lines = [head + ".\n",
             "| N×K | M | tiling | predicted µs | measured µs | measured / predicted | twin µs: then → now | "
             "rate vs twin now | vs cuBLAS, measured |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in measured:
        now = f"{s['twin_now_us']:.1f}" if s["twin_now_us"] is not None else "not timed"
        held = f"{s['rate_vs_twin']:.2f}" if s["rate_vs_twin"] is not None else "–"
        vs = f"{s['cublas_now_us'] / s['measured_us']:.2f}×" if s["cublas_now_us"] else "–"
        lines.append(f"| {_shape(s['N'], s['K'])} | {s['M']} | `{s['label']}` | {s['us']:.1f} | "
                     f"{s['measured_us']:.1f} | {s['measured_us'] / s['us']:.2f} | "
                     f"`{s['twin']}` {s['twin_us']:.1f} → {now} | {held} | {vs} |")
    missing = [f"`{s['label']}` ({_shape(s['N'], s['K'])}, {s['M']})" for s in scores if s["measured_us"] is None]
    if missing:
        lines.append(f"\nNot timed in the later run (wrong, refused or left out): {', '.join(missing)}.")
    return "\n".join(lines) + "\n"
