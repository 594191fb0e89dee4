"""Which metadata order does this GPU's ``mma.sp`` follow, and where does each fragment slot land?

    PYTHONPATH=lib python bench/spmma_probe.py [--map spmma-map.json]
    PYTHONPATH=lib python bench/spmma_probe.py --kernel wgmma-sparse [--map wgmma-sparse-map.json]

The second asks the same of the sparse form of the ``wgmma`` kernel (``wgmma.mma_async.sp``, Hopper
only), whose warps should read their A registers and metadata words as ``mma.sp`` does.

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
from repro.kernels.fragments import SpmmaConfig, WgmmaConfig, to_fragments  # noqa: E402
from repro.pruning import nm_mask  # noqa: E402


def working_orders(launch, device="cuda") -> list[str]:
    """The metadata orders under which ``launch(x, frags, out)`` computes a tiny product right."""
    torch.manual_seed(0)
    dense = torch.randn(64, 256, device=device)
    w = (dense * nm_mask(dense.abs(), 2, 4)).half()
    x = torch.randn(8, 256, device=device).half()
    ref = x.double() @ w.double().T
    working = []
    for order in ("pairs", "rows"):
        out = torch.full((8, 64), float("nan"), device=device, dtype=torch.float16)
        launch(x, to_fragments(compress_24(w), order), out)
        err = float((out.double() - ref).abs().max() / ref.abs().max())
        print(f"meta_order={order}: rel_err={err:.2e}", flush=True)
        if err < 5e-3:
            working.append(order)
    return working


def launchers(kernel: str):
    """``(launch for the product check, launch for the fragment map)``, each ``(x, frags, out)``.
    The map's: one k-block per step, so that a slot lands in one place."""
    if kernel == "spmma":
        from repro.kernels.gluon_sp24 import launch_spmma

        def product(x, frags, out):
            launch_spmma(x, frags, None, out, SpmmaConfig(R=1, S=2, U=2, T=1))

        def mapped(x, frags, out):
            launch_spmma(x, frags, None, out, SpmmaConfig(R=1, S=1, U=1, T=1))

        return product, mapped
    from repro.kernels import gluon_wgmma

    def sparse(cfg):
        def launch(x, frags, out):  # the weight's own order is the one tried
            gluon_wgmma.SPARSE_META_ORDER = frags.meta_order
            try:
                gluon_wgmma.launch_wgmma(x, frags, None, out, cfg)
            finally:
                gluon_wgmma.SPARSE_META_ORDER = "pairs"

        return launch

    product = WgmmaConfig(G=1, T=16, U=2, stages=3, sparse=True)
    return sparse(product), sparse(WgmmaConfig(G=1, T=16, U=1, stages=3, sparse=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", choices=("spmma", "wgmma-sparse"), default="spmma")
    parser.add_argument("--map", type=Path, help="write the fragment map's records here (JSON)")
    args = parser.parse_args()
    need = (9, 0) if args.kernel == "wgmma-sparse" else (8, 0)
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < need:
        print(f"use: none (needs an sm_{need[0]}{need[1]}+ CUDA GPU)")
        return 1
    product, mapped = launchers(args.kernel)
    working = working_orders(product)
    print(f"use: {working[0] if working else 'none'}", flush=True)

    values, meta = fragment_map.value_map(mapped, "cuda"), fragment_map.meta_map(mapped, "cuda")
    print("\n".join(fragment_map.describe(values, meta)))
    if args.map:
        args.map.write_text(json.dumps({"values": values, "meta": meta}, indent=0))
    return 0 if working else 1


if __name__ == "__main__":
    sys.exit(main())
