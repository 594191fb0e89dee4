"""Which metadata order does this GPU's ``mma.sp`` follow, and where does each fragment slot land?

    PYTHONPATH=lib python bench/spmma_probe.py [--map spmma-map.json]

First one tiny product per metadata order: one line each with the relative error against an fp64
reference, then ``use: <order>`` (or ``use: none``). Then the fragment map (``sp24/fragment_map.py``):
how many A-register slots and metadata codes land where ``repro.kernels.fragments`` says, the first
that do not, and, with ``--map``, every record as JSON, so that a wrong layout can be corrected
without another GPU run. Exits 0 when an order works. Run in its own process by
``bench/gpu_check.sh`` before anything else, so that a kernel fault (which poisons the CUDA context)
costs only this probe.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from sp24 import fragment_map  # noqa: E402

from repro.kernels import compress_24  # noqa: E402
from repro.kernels.fragments import SpmmaConfig, to_fragments  # noqa: E402
from repro.pruning import nm_mask  # noqa: E402


def working_orders(launch_spmma, device="cuda") -> list[str]:
    torch.manual_seed(0)
    dense = torch.randn(64, 256, device=device)
    w = (dense * nm_mask(dense.abs(), 2, 4)).half()
    x = torch.randn(8, 256, device=device).half()
    ref = x.double() @ w.double().T
    working = []
    for order in ("pairs", "rows"):
        out = torch.full((8, 64), float("nan"), device=device, dtype=torch.float16)
        launch_spmma(x, to_fragments(compress_24(w), order), None, out, SpmmaConfig(R=1, S=2, U=2, T=1))
        err = float((out.double() - ref).abs().max() / ref.abs().max())
        print(f"meta_order={order}: rel_err={err:.2e}", flush=True)
        if err < 5e-3:
            working.append(order)
    return working


def map_launcher(launch_spmma):
    """The fragment map's launcher: one warp, one k-block per step, so a slot lands in one place."""

    def launch(x, frags, out):
        launch_spmma(x, frags, None, out, SpmmaConfig(R=1, S=1, U=1, T=1))

    return launch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--map", type=Path, help="write the fragment map's records here (JSON)")
    args = parser.parse_args()
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0):
        print("use: none (needs an sm_80+ CUDA GPU)")
        return 1
    from repro.kernels.gluon_sp24 import launch_spmma

    working = working_orders(launch_spmma)
    print(f"use: {working[0] if working else 'none'}", flush=True)

    launch = map_launcher(launch_spmma)
    values, meta = fragment_map.value_map(launch, "cuda"), fragment_map.meta_map(launch, "cuda")
    print("\n".join(fragment_map.describe(values, meta)))
    if args.map:
        args.map.write_text(json.dumps({"values": values, "meta": meta}, indent=0))
    return 0 if working else 1


if __name__ == "__main__":
    sys.exit(main())
