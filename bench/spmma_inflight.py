"""Set each timed ``spmma`` configuration's weight bytes in flight against its measured rate.

    PYTHONPATH=lib python bench/spmma_inflight.py bench/results/<run>.json [--m 1 8]

For every configuration a run's sweep timed (the ``sweep`` list of its ``repro_spmma`` records):
the weight KiB one warp keeps in flight per memory round trip, read from the machine code as
``bench/compile_offline.py`` does (installed Triton; the run's own version is in its JSON), times
the warps per SM the grid gives, against the measured weight rate in GB/s. Prints one line per
configuration and case, and per case the correlation of the two (of their logarithms) across
the configurations. This is the check of the round-trip model that the kernel page reports.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compile_offline import inspect_config  # noqa: E402

from repro.kernels.fragments import SpmmaConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--m", type=int, nargs="*", default=[1, 8])
    args = ap.parse_args()
    recs = json.loads(args.results.read_text())
    sms = recs[0]["info"]["sms"]
    sweeps = [r for r in recs if r["method"] == "repro_spmma" and r.get("sweep") and r["M"] in args.m]
    per_trip = {
        label: inspect_config(SpmmaConfig.from_label(label))["kib_per_warp_trip"]
        for r in sweeps
        for label, _ in r["sweep"]
    }
    for r in sweeps:
        inflight, rates = [], []
        for label, us in sorted(r["sweep"], key=lambda item: item[1]):
            cfg = SpmmaConfig.from_label(label)
            warps = -(-r["N"] // (16 * cfg.R * cfg.W)) * cfg.num_warps
            inflight.append(per_trip[label] * warps / sms)
            rates.append(r["N"] * r["K"] * 2 * 0.5625 / us / 1e3)
            print(
                f"{r['N']}x{r['K']} M={r['M']} {label:14} {us:7.1f} us {rates[-1]:6.0f} GB/s "
                f"{inflight[-1]:6.1f} KiB/SM in flight"
            )
        corr = np.corrcoef(np.log(inflight), np.log(rates))[0, 1]
        print(f"{r['N']}x{r['K']} M={r['M']}: correlation of log KiB/SM in flight and log GB/s: {corr:.2f}")


if __name__ == "__main__":
    main()
