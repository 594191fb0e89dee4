"""Set each timed ``spmma`` configuration's weight bytes in flight, and its waves, against its time.

    PYTHONPATH=lib python bench/spmma_inflight.py bench/results/<run>.json [--m 1 8]

For every configuration a run's sweep timed (the ``sweep`` list of its ``repro_spmma`` records),
read from the machine code as ``bench/compile_offline.py`` does (installed Triton; the run's own
version is in its JSON): the weight KiB one warp keeps in flight per memory round trip (with
``stages``, the ring's steps ahead, one "trip" per ring), and the
registers, hence how many programs an SM holds at once (``sp24/occupancy.py``). Two models:

- *in flight*: KiB per warp per trip times the warps per SM the grid gives, all assumed resident,
  against the measured weight rate (the round-trip model the kernel page first reported);
- *waves*: round trips per warp (its share of the weight over its KiB per trip) times the waves
  the grid takes (rounded up), a time in units of one round trip, against the measured time.

Prints one line per configuration and case, and per case the correlation of each model with the
measurement across the configurations (of their logarithms).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compile_offline import inspect_config  # noqa: E402
from sp24.occupancy import occupancy  # noqa: E402

from repro.kernels.fragments import SpmmaConfig  # noqa: E402


def grid_programs(cfg: SpmmaConfig, n: int, m: int) -> int:
    """Programs of one call (the launcher's grid)."""
    return math.prod(cfg.grid(n, m))


def wave_model(cfg: SpmmaConfig, compiled: dict, n: int, k: int, m: int, sms: int):
    """(round trips per warp x waves rounded up, the grid's occupancy) for one configuration."""
    occ = occupancy(compiled["regs"], cfg.num_warps, compiled["shared"], grid_programs(cfg, n, m), sms)
    kblocks_per_warp = math.ceil(math.ceil(math.ceil(k / 32) / cfg.split_k) / cfg.S)
    trips = cfg.W * kblocks_per_warp * 512 / (compiled["kib_per_warp_trip"] * 1024)
    return trips * occ.full_waves, occ


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--m", type=int, nargs="*", default=[1, 8])
    args = ap.parse_args()
    recs = json.loads(args.results.read_text())
    sms = recs[0]["info"]["sms"]
    sweeps = [r for r in recs if r["method"] == "repro_spmma" and r.get("sweep") and r["M"] in args.m]
    compiled = {
        label: inspect_config(SpmmaConfig.from_label(label)) for r in sweeps for label, _ in r["sweep"]
    }
    for r in sweeps:
        inflight, rates, modeled, times = [], [], [], []
        for label, us in sorted(r["sweep"], key=lambda item: item[1]):
            cfg = SpmmaConfig.from_label(label)
            warps = grid_programs(cfg, r["N"], r["M"]) * cfg.num_warps
            inflight.append(compiled[label]["kib_per_warp_trip"] * warps / sms)
            rates.append(r["N"] * r["K"] * 2 * 0.5625 / us / 1e3)
            trips, occ = wave_model(cfg, compiled[label], r["N"], r["K"], r["M"], sms)
            modeled.append(trips)
            times.append(us)
            print(
                f"{r['N']}x{r['K']} M={r['M']} {label:16} {us:7.1f} us {rates[-1]:6.0f} GB/s "
                f"{inflight[-1]:6.1f} KiB/SM in flight  {occ.per_sm:2} per SM, {occ.waves:4.2f} waves, "
                f"{trips:5.1f} trips"
            )
        corr = np.corrcoef(np.log(inflight), np.log(rates))[0, 1]
        corr_waves = np.corrcoef(np.log(modeled), np.log(times))[0, 1]
        print(
            f"{r['N']}x{r['K']} M={r['M']}: correlation (logs) of KiB/SM in flight with GB/s {corr:.2f}; "
            f"of trips x waves with time {corr_waves:.2f}"
        )


if __name__ == "__main__":
    main()
