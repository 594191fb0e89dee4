"""One fragment-order kernel call, for a profiler to look inside (a GPU, and Nsight Compute).

    ncu --kernel-name regex:_wgmma_kernel --launch-skip 2 --launch-count 1 \\
        python bench/profile_sp24.py wgmma g1t64u2c4x16k4 64

Launches the named tiling three times on a 4096x4096 layer pruned 2:4 with ``m`` tokens (two
to compile and warm, the third for the profiler) and checks the last result against an fp32
reference, so a profile is never of a wrong kernel. ``bench/gpu_check.sh`` runs it under
``ncu`` for a few tilings when the machine has ``ncu``: the H200 runs of 2026-11-27 found the
``wgmma`` loop spending about 0.5 µs per step on moving its operands, a cost no model here
explains (``bench/wgmma_ablation.py``), and the profiler's stall reasons can.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kernel", choices=("wgmma", "spmma"))
    ap.add_argument("label", help="a configuration label, e.g. g1t64u2c4x16k4 or r1w2s8u1t8px")
    ap.add_argument("m", type=int, help="tokens")
    args = ap.parse_args()

    import torch
    from sp24.common import pruned_weight, rel_err

    from repro.kernels import compress_24
    from repro.kernels.fragments import SpmmaConfig, WgmmaConfig

    if args.kernel == "wgmma":
        from repro.kernels.gluon_wgmma import launch_wgmma as launch

        cfg = WgmmaConfig.from_label(args.label)
    else:
        from repro.kernels.gluon_sp24 import launch_spmma as launch

        cfg = SpmmaConfig.from_label(args.label)
    cfg.check()
    dense = pruned_weight(4096, 4096, "cuda", seed=0)
    w = compress_24(dense).fragments()
    x = torch.randn(args.m, 4096, device="cuda", dtype=torch.float16)
    out = torch.empty(args.m, 4096, device="cuda", dtype=torch.float16)
    for _ in range(3):
        launch(x, w, None, out, cfg)
    torch.cuda.synchronize()
    err = rel_err(out, x.float() @ dense.float().T)
    print(f"{args.kernel} {cfg.label()} M={args.m}: rel. error {err:.1e}")
    if not err < 2e-2:
        sys.exit(f"wrong result (rel. error {err:.1e}): not a kernel worth profiling")


if __name__ == "__main__":
    main()
