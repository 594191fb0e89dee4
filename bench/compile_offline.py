"""Compile the Gluon kernels for a GPU architecture without a GPU, and report what ptxas says.

    PYTHONPATH=lib python bench/compile_offline.py [--arch 90] [--dtype fp16|bf16] [--bias]
        [--kernel spmma|wgmma|both] [--out DIR]

For every configuration of the benchmark's sweep (``bench/sp24/sweep.py``): registers, spills,
shared memory, and per loop iteration the ``mma.sp`` count, the 16-byte and 4-byte global loads,
and any shared-memory traffic (there should be none inside the loop); and from the machine code
(``sp24/sass.py``) the weight bytes a warp fetches per memory round trip its loop waits for, the
memory parallelism a decode-size product lives on. With ``--out`` it also writes each kernel's PTX.
For ``wgmma``: registers, spills, shared memory, per loop iteration the ``wgmma``s, the byte
permutes of the expansion (``prmt``) and the shared-memory accesses, whether ptxas had to
serialize the asynchronous MMAs (its C7515 notice), which would leave nothing in flight, the
CTA barriers of the main loop (``bar.sync``, whoever put them there), and the weight bytes a
warp fetches per memory round trip, as for ``spmma``.
This is how the kernels were checked before any GPU time was spent on them; it needs only the
installed Triton (its bundled ``ptxas`` and ``nvdisasm``).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton  # noqa: E402
from sp24.common import MS  # noqa: E402
from sp24.sass import disassemble, main_loop, round_trips  # noqa: E402
from sp24.sweep import spmma_configs, wgmma_configs  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.experimental.gluon._runtime import GluonASTSource  # noqa: E402

from repro.kernels import gluon_shared_x, gluon_sp24, gluon_wgmma  # noqa: E402

# pointers and the usual LLaMA-shape integers are 16-aligned: the launcher would specialize them so
ALIGNED = ("x_ptr", "v_ptr", "e_ptr", "bias_ptr", "y_ptr", "ws_ptr", "flag_ptr", "N", "K", "stride_xm", "stride_ym")


def _compile_gluon(kernel, constants: dict, num_warps: int, arch: int, dtype: str, x_box: tuple | None = None):
    """Compile a fragment-order kernel (all take the same runtime arguments, the shared-x form a TMA
    descriptor of x, boxes ``x_box``, before them) with the launcher's specialization for the LLaMA shapes."""
    scalars = ("M", "N", "K", "NT", "KB", "stride_xm", "stride_ym")
    signature = {}
    if x_box:
        signature["x_desc"] = f"tensordesc<{dtype}[{x_box[0]}, {x_box[1]}],{gluon_shared_x.X_BOX_LAYOUT}>"
    signature |= {"x_ptr": f"*{dtype}", "v_ptr": "*i32", "e_ptr": "*i32", "bias_ptr": f"*{dtype}", "y_ptr": f"*{dtype}"}
    signature |= {"ws_ptr": "*fp32", "flag_ptr": "*i32"}
    signature |= {name: "i32" for name in scalars}
    signature |= {name: "constexpr" for name in constants}
    names = list(signature)
    attrs = {(names.index(name),): [["tt.divisibility", 16]] for name in ALIGNED}
    src = GluonASTSource(kernel, signature, constexprs=constants, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})


def compile_config(cfg, arch: int, dtype: str, bias: bool):
    constants = dict(HAS_BIAS=bias, BF16=dtype == "bf16", R=cfg.R, S=cfg.S, W=cfg.W, U=cfg.U, T=cfg.T)
    constants |= dict(PREFETCH=cfg.prefetch, WIDE_X=cfg.wide_x, INTERLEAVE=cfg.interleave, L2_AHEAD=cfg.l2_ahead)
    constants |= dict(SPLIT_K=cfg.split_k, STAGES=cfg.stages, CHAIN=cfg.chain)
    return _compile_gluon(gluon_sp24._spmma_kernel, constants, cfg.num_warps, arch, dtype)


def compile_wgmma(cfg, arch: int, dtype: str, bias: bool, meta_rows: bool = False):
    if cfg.share > 1:  # its own kernel: x's TMA descriptor first, fewer constants
        constants = dict(HAS_BIAS=bias, G=cfg.G, W=cfg.W, T=cfg.T, U=cfg.U, SPLIT_K=cfg.split_k, STAGES=cfg.stages,
                         SHARE=cfg.share, CLUSTER=cfg.cluster)
        return _compile_gluon(gluon_wgmma._wgmma_shared_x_kernel, constants, cfg.num_warps, arch, dtype,
                              (cfg.T // cfg.share, gluon_wgmma.BOX_COLUMNS))
    constants = dict(HAS_BIAS=bias, G=cfg.G, W=cfg.W, T=cfg.T, U=cfg.U, SPLIT_K=cfg.split_k, AHEAD=cfg.ahead)
    constants["STAGES"] = cfg.stages
    constants["X_STEPS"] = cfg.x_steps
    constants["META_ROWS"] = meta_rows
    constants["SPARSE"] = cfg.sparse
    constants["CLUSTER"] = cfg.cluster
    return _compile_gluon(gluon_wgmma._wgmma_kernel, constants, cfg.num_warps, arch, dtype)


def in_flight(per_iteration: float, trips: float, ring: float | None) -> float:
    """Weight a warp has in flight (steps or k-blocks): what one iteration fetches per memory round
    trip it waits for (``sp24/sass.py``), and with a cp.async ring no more than the ring runs
    ahead (all of that when the loop waits for no round trip)."""
    per_trip = per_iteration / trips if trips else float("inf")
    return min(per_trip, ring) if ring else per_trip


def inspect_wgmma(cfg, arch: int = 90, dtype: str = "fp16", bias: bool = False) -> dict:
    """Compile one ``wgmma`` configuration and count what its loop does (see the module docstring)."""
    kernel = compile_wgmma(cfg, arch, dtype, bias)
    ptx = kernel.asm["ptx"]
    start = ptx.find("Inner Loop Header")
    body = ptx[start : ptx.find("wgmma.wait_group.sync.aligned 0", start)]  # the loop, up to the last wait
    err = ptxas_stderr(ptx, arch)
    # per iteration (two steps); the shared-x form's barrier waits are loops of their own in the machine
    # code, and its loop loads nothing from global memory into registers (global_loads says so)
    trips = 0.0 if cfg.share > 1 else round_trips(main_loop(disassemble(kernel.asm["cubin"])))
    # a warp's weight bytes (576 per k-block) per round trip its loop waits for
    steps = in_flight(2, trips, cfg.stages - 1 if cfg.stages else None)
    return dict(
        round_trips=trips,
        kib_per_warp_trip=steps * cfg.U * 576 / 1024,
        regs=int(re.search(r"Used (\d+) registers", err).group(1)),
        spills=int(re.search(r"(\d+) bytes spill stores", err).group(1)),
        shared=kernel.metadata.shared,
        wgmma=len(re.findall(r"wgmma\.mma_async", body)),
        prmt=len(re.findall(r"prmt\.b32", body)),
        shared_loads=len(re.findall(r"ld\.shared|ldmatrix", body)),
        global_loads=len(re.findall(r"ld\.global", body)),
        fences=len(re.findall(r"fence\.proxy\.async", body)),
        tma_loads=len(re.findall(r"cp\.async\.bulk\.tensor", body)),
        shared_stores=len(re.findall(r"st\.shared", body)),
        shuffles=len(re.findall(r"shfl\.sync", body)),
        barriers=loop_barriers(ptx),
        serialized="C7515" in err,
        ptx=ptx,
    )


_LABEL = re.compile(r"^(\$L__BB\d+_\d+):", re.M)
_BRANCH = re.compile(r"\bbra(?:\.uni)?\s+(\$L__BB\d+_\d+);")
BARRIER = re.compile(r"^\s*(?:bar\.sync|barrier\.sync(?:\.aligned)?)\s+0;\n", re.M)


def main_loop_span(ptx: str) -> tuple[int, int]:
    """Where the main loop lies in the PTX text: of the loops (a label, then a branch back to it),
    the shortest that issues an MMA."""
    labels = {m.group(1): m.start() for m in _LABEL.finditer(ptx)}
    loops = [(labels[b.group(1)], b.end()) for b in _BRANCH.finditer(ptx)
             if labels.get(b.group(1), len(ptx)) < b.start()]
    with_mma = [(lo, hi) for lo, hi in loops if "wgmma.mma_async" in ptx[lo:hi]]
    if not with_mma:
        raise ValueError("no loop with a wgmma.mma_async in this PTX")
    return min(with_mma, key=lambda span: span[1] - span[0])


def loop_barriers(ptx: str) -> int:
    """The CTA barriers (``bar.sync 0``) of the main loop, per iteration."""
    lo, hi = main_loop_span(ptx)
    return len(BARRIER.findall(ptx[lo:hi]))


def loop_body(ptx: str) -> str:
    start = ptx.find("Inner Loop Header")
    end = ptx.find(" bra ", start)
    return ptx[start:end] if start >= 0 else ""


def ptxas_stderr(ptx: str, arch: int) -> str:
    """What ``ptxas -v`` says about the kernel (registers, spills, performance notices)."""
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(ptx)
        f.flush()
        return subprocess.run(
            [str(ptxas), f"-arch=sm_{arch}a", "-v", f.name, "-o", "/dev/null"], capture_output=True, text=True
        ).stderr


def ptxas_report(ptx: str, arch: int) -> str:
    """'<registers> <spill bytes>' as ptxas -v reports them."""
    err = ptxas_stderr(ptx, arch)
    regs = re.search(r"Used (\d+) registers", err)
    spills = re.search(r"(\d+) bytes spill stores", err)
    return f"{regs.group(1) if regs else '?':>4} {spills.group(1) if spills else '?':>6}"


def inspect_config(cfg, arch: int = 90, dtype: str = "fp16", bias: bool = False) -> dict:
    """Compile one configuration and count what its loop does (see the module docstring)."""
    kernel = compile_config(cfg, arch, dtype, bias)
    ptx = kernel.asm["ptx"]
    body = loop_body(ptx)
    loads = re.findall(r"ld\.global\.(v4\.)?b32", body)
    regs, spills = ptxas_report(ptx, arch).split()
    loop = main_loop(disassemble(kernel.asm["cubin"]))  # the machine code Triton built
    mma_per_kblock = cfg.W * cfg.T  # one per row tile and token tile
    kblocks = sum(ins.op.startswith("HMMA.SP") for ins in loop) // mma_per_kblock
    trips = round_trips(loop)
    return dict(
        regs=int(regs),
        spills=int(spills),
        shared=kernel.metadata.shared,
        mma_sp=re.findall(r"mma\.sp::ordered_metadata\.sync\.aligned\.m16n8k32\.row\.col\.f32\.(\w+)\.", body),
        loads_v4=sum(1 for x in loads if x),
        loads_b32=sum(1 for x in loads if not x),
        shared_ops_in_loop=len(re.findall(r"(ld|st)\.shared|bar\.sync", body)),
        shuffles=len(re.findall(r"shfl\.sync", body)),
        kblocks_per_iteration=kblocks,
        round_trips=trips,
        # weight values a warp has in flight: per round trip its loop waits for
        kib_per_warp_trip=in_flight(kblocks, trips, (cfg.stages - 1) * cfg.U if cfg.stages else None)
        * cfg.W * 512 / 1024,
        ptx=ptx,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--dtype", choices=("fp16", "bf16"), default="fp16")
    ap.add_argument("--bias", action="store_true")
    ap.add_argument("--kernel", choices=("spmma", "wgmma", "both"), default="both")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    print(f"triton {triton.__version__}, sm_{args.arch}a, {args.dtype}")
    if args.kernel in ("spmma", "both"):
        report_spmma(args)
    if args.kernel in ("wgmma", "both"):
        report_wgmma(args)


def _save_ptx(args, kernel: str, cfg, ptx: str) -> None:
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{kernel}_{cfg.label()}_{args.dtype}.ptx").write_text(ptx)


def report_wgmma(args) -> None:
    print("config        regs spills shared  wgmma prmt shared-loads shuffles barriers  serialized  KiB/warp/trip")
    for cfg in dict.fromkeys(cfg for m in MS for cfg in wgmma_configs(m)):
        r = inspect_wgmma(cfg, args.arch, args.dtype, args.bias)
        print(
            f"{cfg.label():12} {r['regs']:5} {r['spills']:6} {r['shared']:6} {r['wgmma']:6} {r['prmt']:4}"
            f" {r['shared_loads']:12} {r['shuffles']:8} {r['barriers']:8}"
            f"  {'yes (C7515)' if r['serialized'] else 'no ':11}"
            f" {r['kib_per_warp_trip']:5.1f}"
        )
        _save_ptx(args, "wgmma", cfg, r["ptx"])


def report_spmma(args) -> None:
    configs = list(dict.fromkeys(cfg for m in MS for cfg in spmma_configs(m)))
    print("config             regs spills shared  mma.sp ld.v4 ld.b32 shared-ops  KiB/warp/trip")
    for cfg in configs:
        r = inspect_config(cfg, args.arch, args.dtype, args.bias)
        print(
            f"{cfg.label():18} {r['regs']:4} {r['spills']:6} {r['shared']:6} {len(r['mma_sp']):7} "
            f"{r['loads_v4']:5} {r['loads_b32']:6} {r['shared_ops_in_loop']:10}"
            f"  {r['kib_per_warp_trip']:5.1f}"
        )
        _save_ptx(args, "spmma", cfg, r["ptx"])


if __name__ == "__main__":
    main()
