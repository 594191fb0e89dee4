"""One fragment-order kernel call, for a profiler to look inside (a GPU, and Nsight Compute).

    ncu --kernel-name regex:_wgmma --launch-skip 2 --launch-count 1 \\
        python bench/profile_sp24.py wgmma g1t64u2c4x16k4 64 [--shape 11008x4096]

Launches the named tiling three times on a layer pruned 2:4 (4096x4096 unless ``--shape``) with
``m`` tokens (two to compile and warm, the third for the profiler) and checks the last result
against an fp32 reference, so a profile is never of a wrong kernel. ``bench/gpu_check.sh`` runs
it under ``ncu`` for the tilings that stand where a target is open, when the machine has
``ncu``: the profiler's stall reasons and memory throughput say what a time alone cannot.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "bench"))


def _shape(text: str) -> tuple[int, int]:
    try:
        n, k = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shape {text!r}: expected N x K, e.g. 11008x4096") from None
    if n % 16 or k % 64 or min(n, k) <= 0:
        raise argparse.ArgumentTypeError(f"--shape {text!r}: N must be a multiple of 16 and K of 64")
    return n, k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kernel", choices=("wgmma", "spmma"))
    ap.add_argument("label", help="a configuration label, e.g. g1t64u2c4x16k4 or r1w2s8u1t8px")
    ap.add_argument("m", type=int, help="tokens")
    ap.add_argument("--shape", type=_shape, default=(4096, 4096), help="the layer, N x K (default 4096x4096)")
    args = ap.parse_args()
    n, k = args.shape

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
    dense = pruned_weight(n, k, "cuda", seed=0)
    w = compress_24(dense).fragments()
    x = torch.randn(args.m, k, device="cuda", dtype=torch.float16)
    out = torch.empty(args.m, n, device="cuda", dtype=torch.float16)
    for _ in range(3):
        launch(x, w, None, out, cfg)
    torch.cuda.synchronize()
    err = rel_err(out, x.float() @ dense.float().T)
    print(f"{args.kernel} {cfg.label()} {n}x{k} M={args.m}: rel. error {err:.1e}")
    if not err < 2e-2:
        sys.exit(f"wrong result (rel. error {err:.1e}): not a kernel worth profiling")


if __name__ == "__main__":
    main()
