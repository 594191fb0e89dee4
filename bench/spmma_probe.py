"""Which metadata order does this GPU's ``mma.sp`` follow? One tiny product per order.

    PYTHONPATH=lib python bench/spmma_probe.py

Prints one line per order with the relative error against an fp64 reference, then the order to
use (or ``none``), and exits 0 when one works. Run in its own process by ``bench/gpu_check.sh``
before anything else, so that a kernel fault (which poisons the CUDA context) costs only this probe.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from repro.kernels import compress_24  # noqa: E402
from repro.kernels.fragments import SpmmaConfig, to_fragments  # noqa: E402
from repro.pruning import nm_mask  # noqa: E402


def main() -> int:
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0):
        print("use: none (needs an sm_80+ CUDA GPU)")
        return 1
    from repro.kernels.gluon_sp24 import launch_spmma

    torch.manual_seed(0)
    dense = torch.randn(64, 256, device="cuda")
    w = (dense * nm_mask(dense.abs(), 2, 4)).half()
    x = torch.randn(8, 256, device="cuda").half()
    ref = x.double() @ w.double().T
    working = []
    for order in ("pairs", "rows"):
        out = torch.full((8, 64), float("nan"), device="cuda", dtype=torch.float16)
        launch_spmma(x, to_fragments(compress_24(w), order), None, out, SpmmaConfig(R=1, S=2, U=2, T=1))
        err = float((out.double() - ref).abs().max() / ref.abs().max())
        print(f"meta_order={order}: rel_err={err:.2e}")
        if err < 5e-3:
            working.append(order)
    print(f"use: {working[0] if working else 'none'}")
    return 0 if working else 1


if __name__ == "__main__":
    sys.exit(main())
