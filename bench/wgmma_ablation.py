"""Where does a step of the ``wgmma`` kernel spend its time? An ablation on a GPU (Hopper).

On the H200 (runs h200-2026-11-27d and -e) every ``wgmma`` tiling took about 0.45-0.85 µs per
step of its loop, whether its operands came through registers or through a ``cp.async`` ring,
whatever the ring's depth and for 8 to 128 tokens: g2t128u2 took 54 µs for its 64 steps at
M = 128, 512 and 2048 alike (one program per SM), so the cost is inside each program, not the
memory system's. This script times one tiling with one part of its loop taken out, each variant
compiled in its own process (the part is swapped in the kernel module's globals before Gluon
compiles, so each variant is its own kernel):

- ``full``: the kernel as it is;
- ``no_fence``: no ``fence.proxy.async`` after x's store to shared memory;
- ``no_expand``: the A operand is zeros instead of the weight expanded by byte permutes (the
  weight's shared-memory reads go with it; its copies stay);
- ``no_mma``: no ``wgmma`` and no waits for it (the expansion, having no user, goes too): what
  is left is the operands' movement and the loop;
- ``no_barrier``: every ``bar.sync`` of the main loop (the innermost loop with the MMAs) deleted
  from the PTX before ptxas (a stage hook, ``drop_loop_barriers``). A dense ring step takes
  three: Triton's after each ``cp.async`` wait and before each read of a ring a ``cp.async`` has
  just written to (it does not tell slots apart), and the kernel's own after the proxy fence.
  The sparse form reads its weight words by inline assembly, which leaves a streamed step the
  kernel's one and a resident step Triton's one before its copies into the word rings. This
  variant compiles into a cache folder of its own (its source is the full kernel's, and
  Triton's cache key does not see the hook).

The sparse form (``s`` tilings, ``gluon_wgmma_sparse.py``) expands nothing, so it has ``full``,
``no_fence`` (no fence per step: a streamed ring's, or a resident x's once per chunk),
``no_mma`` (no ``wgmma.sp`` and no waits) and ``no_barrier`` only.

The variants other than ``full`` compute wrong results by design; their errors are printed to
show which is which. Prints one line per (tiling, variant) and writes ``ablation.json`` to --out.

H200 (Triton 3.6; ``bench/results/experiments/h200-2026-11-27-wgmma-ablation.json``), µs for
full / no_fence / no_expand / no_mma: g2t128u2 52.5 / 49.5 / 42.8 / 32.5, g2t128u2c4 54.8 / 49.5 / 52.3 / 33.6,
g1t64u2c4 29.6 / 26.2 / 25.8 / 19.8, g1t8u4c4k2 14.4 / 14.1 / 12.8 / 12.0. The operands' movement
and the loop cost more than the MMA, and the MMA's time adds to theirs.

    PYTHONPATH=lib python bench/wgmma_ablation.py --out DIR [--cases dense|sparse|all]
    PYTHONPATH=lib python bench/wgmma_ablation.py --compile-only   # sm_90a, any machine
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from triton.experimental import gluon
from triton.experimental.gluon import language as gl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from compile_offline import BARRIER, loop_barriers, main_loop_span  # noqa: E402

# (tiling, tokens): register-fed and ring tilings, one program per SM or two, 8 to 128 tokens;
# the sparse form streamed and with x resident, 256-row programs, and 128 rows at 128 tokens
CASES = {
    "dense": [("g2t128u2", 128), ("g2t128u2c4", 128), ("g1t64u2c4", 64), ("g1t8u4c4k2", 1)],
    "sparse": [("g2w2t64u2c6sk8", 64), ("g2w2t64u2c4x8sk8", 64), ("g2t128u2c4sk4", 128)],
}
VARIANTS = {"dense": ("full", "no_fence", "no_expand", "no_mma", "no_barrier"),
            "sparse": ("full", "no_fence", "no_mma", "no_barrier")}
N = K = 4096


@gluon.jit
def _no_fence():
    pass


@gluon.jit
def _zero_operand(v, e, DTYPE: gl.constexpr, A_LAYOUT: gl.constexpr, META_ROWS: gl.constexpr):
    G: gl.constexpr = v.shape[0] // 4
    U: gl.constexpr = v.shape[1]
    return gl.zeros([64 * G, 32 * U], DTYPE, A_LAYOUT)


@gluon.jit
def _no_mma(a, b, acc, use_acc, is_async: gl.constexpr):
    return acc


@gluon.jit
def _no_wait(num_outstanding: gl.constexpr, deps):
    return deps[0]


@gluon.jit
def _no_sparse_mma(acc, v, e, x_stage, X_RING: gl.constexpr, USE_ACC: gl.constexpr, BF16: gl.constexpr):
    return acc


def drop_loop_barriers(ptx: str) -> str:
    """The PTX without the ``bar.sync 0`` of its main loop (``main_loop_span``)."""
    lo, hi = main_loop_span(ptx)
    return ptx[:lo] + BARRIER.sub("", ptx[lo:hi]) + ptx[hi:]


def _hook_ptx_stage(backend, stages, options, language, capability) -> None:
    """A Triton stage hook: the PTX stage's output passes through ``drop_loop_barriers``."""
    make_ptx = stages["ptx"]
    stages["ptx"] = lambda src, metadata: drop_loop_barriers(make_ptx(src, metadata))


def _ablate(variant: str) -> None:
    """Swap the named part of the loops of ``gluon_wgmma`` and ``gluon_wgmma_sparse`` for a
    stand-in (before anything compiles)."""
    from repro.kernels import gluon_wgmma, gluon_wgmma_sparse

    if variant == "no_fence":
        gluon_wgmma.fence_async_shared = gluon_wgmma_sparse.fence_async_shared = _no_fence
    elif variant == "no_expand":
        gluon_wgmma._expand = _zero_operand
    elif variant == "no_mma":
        gluon_wgmma.warpgroup_mma = _no_mma
        gluon_wgmma.warpgroup_mma_wait = gluon_wgmma_sparse.warpgroup_mma_wait = _no_wait
        gluon_wgmma_sparse._wgmma_sp = _no_sparse_mma
    elif variant == "no_barrier":
        from triton import knobs

        knobs.runtime.add_stages_inspection_hook = _hook_ptx_stage
    elif variant != "full":
        raise ValueError(f"unknown variant {variant!r}; allowed: {', '.join(VARIANTS['dense'])}")


def _compile_only(label: str, variant: str) -> dict:
    from compile_offline import compile_wgmma

    from repro.kernels.fragments import WgmmaConfig

    kernel = compile_wgmma(WgmmaConfig.from_label(label), 90, "fp16", False)
    ptx = kernel.asm["ptx"]
    report = dict(wgmma=ptx.count("wgmma.mma_async"), fences=ptx.count("fence.proxy.async"), prmt=ptx.count("prmt.b32"))
    if report["wgmma"]:  # (no_mma has no main loop to find)
        report["loop_barriers"] = loop_barriers(ptx)
    return report


def jobs(cases: str) -> list[tuple[str, int, str]]:
    """(tiling, tokens, variant) for the chosen cases: "dense", "sparse" or "all"."""
    kinds = ("dense", "sparse") if cases == "all" else (cases,)
    return [(label, m, variant) for kind in kinds for label, m in CASES[kind] for variant in VARIANTS[kind]]


def _time(label: str, m: int) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from sp24.common import pruned_weight, rel_err
    from sp24.timing import Timer

    from repro.kernels import compress_24
    from repro.kernels.fragments import WgmmaConfig
    from repro.kernels.gluon_wgmma import launch_wgmma

    dense = pruned_weight(N, K, "cuda", seed=0)
    w = compress_24(dense).fragments()
    x = torch.randn(m, K, device="cuda", dtype=torch.float16)
    out = torch.empty(m, N, device="cuda", dtype=torch.float16)
    cfg = WgmmaConfig.from_label(label)
    fn = lambda: launch_wgmma(x, w, None, out, cfg)  # noqa: E731
    fn()
    err = rel_err(out, x.float() @ dense.float().T)
    return dict(us=Timer().median_us(fn), rel_err=err)


def _child(args) -> None:
    _ablate(args.variant)
    result = _compile_only(args.label, args.variant) if args.compile_only else _time(args.label, args.m)
    print(json.dumps(result))


def _run_child(label: str, m: int, variant: str, compile_only: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", "--label", label, "--m", str(m), "--variant", variant]
    env = dict(os.environ)
    if variant == "no_barrier":  # the same source as "full": keep its binaries apart
        cache = Path(env.get("TRITON_CACHE_DIR", Path.home() / ".triton" / "cache"))
        env["TRITON_CACHE_DIR"] = str(cache / "ablation-no-barrier")
    done = subprocess.run(cmd + ["--compile-only"] * compile_only, capture_output=True, text=True, timeout=300,
                          env=env)
    if done.returncode:
        return dict(error=(done.stderr.strip().splitlines() or ["?"])[-1][:300])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--compile-only", action="store_true", help="compile the variants for sm_90a, no GPU")
    ap.add_argument("--cases", choices=("dense", "sparse", "all"), default="all")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--label", help=argparse.SUPPRESS)
    ap.add_argument("--m", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="full", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args)
    todo = jobs(args.cases)
    # compile every variant in parallel first (Triton's disk cache then serves the timed runs)
    with ThreadPoolExecutor(8) as pool:
        compiled = list(pool.map(lambda job: _run_child(*job, compile_only=True), todo))
    results = []
    for (label, m, variant), report in zip(todo, compiled):
        row = dict(label=label, m=m, n=N, k=K, variant=variant, compile=report)
        if not args.compile_only and "error" not in report:
            row |= _run_child(label, m, variant, compile_only=False)
        results.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "ablation.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
