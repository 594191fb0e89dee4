"""Does a fence wait for a global load still in flight? One warp reads the clock, issues a 16-byte
load, a fence, reads the clock, uses the load, reads the clock; printed: the cycles to after the
fence and to after the use, for no fence, ``fence.proxy.async.shared::cta`` (what every ``wgmma``
step issues after storing x: ``MEMBAR.ALL.CTA`` then ``FENCE.VIEW.ASYNC.S``), ``membar.cta`` and
``bar.sync``. The same again with the load a ``cp.async`` into shared memory (``LDGSTS``, what the
kernels' rings have in flight when a step fences), waited for by ``cp.async.wait_group 0``: if the
fence waited for it, a ring would run no step ahead across a fence.

    PYTHONPATH=lib python bench/fence_probe.py           # on a GPU
    PYTHONPATH=lib python bench/fence_probe.py --sass    # anywhere: each variant's SASS (sm_90a)

H200 (Triton 3.6), loads into registers: after the fence 4, 16, 15 and 5 cycles; after the use
570-1660 cycles from DRAM (a fresh line each launch), 277 from cache, with or without a fence. So
these fences do not wait for loads in flight, and ``sp24/sass.py`` models ``MEMBAR`` as short.
Copies into shared memory: not yet run.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

FENCES = {
    "none": "",
    "proxy_async": "fence.proxy.async.shared::cta;",
    "membar_cta": "membar.cta;",
    "bar_sync": "bar.sync 0;",
}


def _asm(fence: str) -> str:
    return (
        "{ .reg .u64 t0, t1, t2; .reg .u32 a, b, c, d;\n"
        "mov.u64 t0, %clock64;\n"
        "ld.global.v4.u32 {a, b, c, d}, [$3];\n"
        f"{fence}\n"
        "mov.u64 t1, %clock64;\n"
        "add.u32 a, a, b; add.u32 a, a, c; add.u32 a, a, d;\n"
        "mov.u64 t2, %clock64;\n"
        "sub.u64 $0, t1, t0; sub.u64 $1, t2, t0; mov.u32 $2, a; }"
    )


def _copy_asm(fence: str) -> str:
    """The same with the load a ``cp.async`` of 16 bytes into the probe's shared buffer (its only
    one, at offset 0 of ``global_smem``), used after ``cp.async.wait_group 0``."""
    return (
        "{ .reg .u64 t0, t1, t2; .reg .u32 s, a;\n"
        "mov.u32 s, global_smem;\n"
        "mov.u64 t0, %clock64;\n"
        "cp.async.cg.shared.global [s], [$3], 16;\n"
        "cp.async.commit_group;\n"
        f"{fence}\n"
        "mov.u64 t1, %clock64;\n"
        "cp.async.wait_group 0;\n"
        "ld.shared.u32 a, [s];\n"
        "mov.u64 t2, %clock64;\n"
        "sub.u64 $0, t1, t0; sub.u64 $1, t2, t0; mov.u32 $2, a; }"
    )


@gluon.jit
def _copy_probe(src, out, ASM: gl.constexpr):
    """One warp; the buffer reserves the shared bytes the copy lands in (zeroed first: a buffer
    nothing uses would be left out, and ``global_smem`` with it)."""
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [1], [0])
    offs = gl.arange(0, 32, layout=layout)
    buffer = gl.allocate_shared_memory(gl.int32, [32], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    buffer.store(offs * 0)
    addr = (src + offs * 4).to(gl.int64, bitcast=True)
    fenced, used, val = gl.inline_asm_elementwise(
        ASM, "=l,=l,=r,l", [addr], dtype=(gl.int64, gl.int64, gl.int32), is_pure=False, pack=1
    )
    gl.store(out + offs, fenced)
    gl.store(out + 32 + offs, used)
    gl.store(out + 64 + offs, val.to(gl.int64))


@triton.jit
def _probe(src, out, ASM: tl.constexpr):
    offs = tl.arange(0, 32)
    addr = (src + offs * 4).to(tl.int64, bitcast=True)
    fenced, used, val = tl.inline_asm_elementwise(
        ASM, "=l,=l,=r,l", [addr], dtype=(tl.int64, tl.int64, tl.int32), is_pure=False, pack=1
    )
    tl.store(out + offs, fenced)
    tl.store(out + 32 + offs, used)
    tl.store(out + 64 + offs, val.to(tl.int64))  # keeps the load


def show_sass() -> None:
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    nvdisasm = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    variants = [(f"load {name}", triton.compiler.ASTSource, _probe, _asm(fence)) for name, fence in FENCES.items()]
    variants += [(f"cp.async {name}", GluonASTSource, _copy_probe, _copy_asm(fence)) for name, fence in FENCES.items()]
    for name, source, probe, asm in variants:
        signature = {"src": "*i32", "out": "*i64", "ASM": "constexpr"}
        src = source(probe, signature, constexprs={"ASM": asm})
        kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 1})
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(kernel.asm["cubin"])
            f.flush()
            listing = subprocess.run([str(nvdisasm), "-hex", "-c", f.name], capture_output=True, text=True).stdout
        print(f"== {name}\n{listing}")


def run() -> None:
    import torch

    buf = torch.zeros(1 << 28, dtype=torch.int32, device="cuda")  # 1 GiB: each launch reads a cold line
    out = torch.zeros(96, dtype=torch.int64, device="cuda")
    print(torch.cuda.get_device_name())
    for kind, kernel, asm, base in (("load", _probe, _asm, 0), ("cp.async", _copy_probe, _copy_asm, 50)):
        for v, (name, fence) in enumerate(FENCES.items()):
            rows = []
            for i in range(12):
                kernel[(1,)](buf[(1000 * i + 100 * v + base) * 4096 :], out, ASM=asm(fence), num_warps=1)
                torch.cuda.synchronize()
                rows.append((int(out[0]), int(out[32])))
            warm = rows[2:]  # the first launches compile and load the module
            fenced, used = sorted(r[0] for r in warm), sorted(r[1] for r in warm)
            print(f"{kind:8} {name:12} after fence {fenced}  after use {used}")
            for _ in range(2):  # the same line again: a cache hit
                kernel[(1,)](buf, out, ASM=asm(fence), num_warps=1)
            torch.cuda.synchronize()
            print(f"{kind:8} {name:12} cache hit: after fence {int(out[0])}, after use {int(out[32])}")


if __name__ == "__main__":
    show_sass() if "--sass" in sys.argv else run()
