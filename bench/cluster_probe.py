"""Can a Gluon kernel compiled by Triton 3.6 share shared memory between the programs of a cluster?

The count of bytes (``bench/sp24/traffic.py``) says the sparse ``wgmma`` at 64-128 tokens moves x
through the L2 once per row tile, and that x read once per two row tiles would bring those cases
to about 1.3-1.5x of cuBLAS. On Hopper, two programs of a thread-block cluster can write into each
other's shared memory (distributed shared memory): one reads half of x and stores it in both.
Gluon 3.6 has no cluster API, so this probe checks the pieces a kernel would need, in the way it
would use them:

- compiled as usual (``num_ctas=1``), the cluster instructions go in by inline assembly:
  ``mapa.shared::cluster`` (the partner's address of a shared word), ``st.shared::cluster`` and
  ``barrier.cluster.arrive.release`` / ``wait.acquire`` (ptxas accepts them: ``--ptx`` shows it
  on any machine);
- the launch makes clusters of two by handing Triton's launcher the kernel's metadata with
  ``num_ctas`` = 2: the launcher then launches twice the grid along x with a cluster dimension of
  2 (``CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION``), and ``program_id(0)`` counts CTAs.

On a GPU each program stores its 128 words into its partner's buffer, and the probe checks that
every program read back its partner's words and that ``%cluster_ctarank`` is ``program_id(0) % 2``.
Then it times a cluster barrier (16 in a row, ``%clock64`` around them): a ring that shares x
through a cluster barrier per step (``bench/NOTES-sparse24.md``, way (b)) pays it 32 times in a
64-token program on 4096x4096, against the about 4 us of L2 traffic that sharing would save.

    PYTHONPATH=lib python bench/cluster_probe.py          # on a Hopper GPU
    PYTHONPATH=lib python bench/cluster_probe.py --ptx    # anywhere: the PTX and what ptxas says
"""

from __future__ import annotations

import sys
from pathlib import Path

import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from repro.kernels.fast_launch import cluster_metadata  # noqa: E402

WARPS = gl.constexpr(4)
WORDS = 32 * WARPS.value  # one word per thread

# Each thread: wait until the partner has zeroed its buffer (the first cluster barrier orders
# those stores before ours), store the word into the partner's copy of this thread's slot, wait
# until the partner has stored into ours (release/acquire at cluster scope), read it back.
# Operands: $0 the word read, $1 the cluster rank; $2 the word to send, $3 the slot's byte offset
# in the program's only shared buffer (which starts at global_smem).
SWAP = (
    "{ .reg .b32 %slot, %remote, %peer; "
    "mov.u32 %slot, global_smem; add.u32 %slot, %slot, $3; "
    "barrier.cluster.arrive.release.aligned; barrier.cluster.wait.acquire.aligned; "
    "mov.u32 $1, %cluster_ctarank; xor.b32 %peer, $1, 1; "
    "mapa.shared::cluster.u32 %remote, %slot, %peer; "
    "st.shared::cluster.b32 [%remote], $2; "
    "barrier.cluster.arrive.release.aligned; barrier.cluster.wait.acquire.aligned; "
    "ld.shared.b32 $0, [%slot]; }"
)


BARRIERS = 16
# the same kernel timing BARRIERS cluster barriers in a row: $0 the cycles they took, $1 the rank
TIMING = (
    "{ .reg .u64 %t0, %t1; mov.u64 %t0, %clock64; "
    + "barrier.cluster.arrive.release.aligned; barrier.cluster.wait.acquire.aligned; " * BARRIERS
    + "mov.u64 %t1, %clock64; sub.u64 %t1, %t1, %t0; cvt.u32.u64 $0, %t1; mov.u32 $1, %cluster_ctarank; }"
)


@gluon.jit
def _swap_kernel(x_ptr, y_ptr, rank_ptr, ASM: gl.constexpr):
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [WARPS], [0])
    offs = gl.arange(0, 32 * WARPS, layout=layout)
    pid = gl.program_id(0)
    sent = gl.load(x_ptr + pid * 32 * WARPS + offs)
    buffer = gl.allocate_shared_memory(gl.int32, [32 * WARPS], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    buffer.store(sent * 0)  # zeroed, so a missing store shows; a buffer nothing used would be left out
    got, rank = gl.inline_asm_elementwise(
        ASM, "=r,=r,r,r", [sent, offs * 4], dtype=(gl.int32, gl.int32), is_pure=False, pack=1
    )
    gl.store(y_ptr + pid * 32 * WARPS + offs, got)
    gl.store(rank_ptr + pid * 32 * WARPS + offs, rank)


def launch_in_clusters(fn, clusters: int, cluster: int, args: tuple, num_warps: int) -> None:
    """Launch ``clusters * cluster`` programs of ``fn`` in clusters of ``cluster`` (grid along x only)."""
    import torch

    kernel = fn.warmup(*args, grid=(clusters * cluster,), num_warps=num_warps)  # compiles, launches nothing
    kernel._init_handles()
    stream = torch.cuda.current_stream().cuda_stream
    meta = cluster_metadata(kernel.packed_metadata, cluster)  # what fast_launch hands a ClusterGrid's launch
    kernel.run(clusters, 1, 1, stream, kernel.function, meta, None, None, None, *args)


def compile_for_sm90(asm: str = SWAP):
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    signature = {"x_ptr": "*i32", "y_ptr": "*i32", "rank_ptr": "*i32", "ASM": "constexpr"}
    src = GluonASTSource(_swap_kernel, signature, constexprs={"ASM": asm})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": WARPS.value})


def show_ptx() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from compile_offline import ptxas_stderr

    kernel = compile_for_sm90()
    ptx = kernel.asm["ptx"]
    print("\n".join(line.strip() for line in ptx.splitlines() if "mapa" in line))
    print(f"num_ctas {kernel.metadata.num_ctas}, shared {kernel.metadata.shared} bytes")
    print(ptxas_stderr(ptx, 90).strip())


def run(clusters: int = 264) -> bool:
    import torch

    print(torch.cuda.get_device_name())
    programs = clusters * 2
    x = torch.arange(programs * WORDS, dtype=torch.int32, device="cuda") + 1
    y = torch.full_like(x, -1)
    rank = torch.full_like(x, -1)
    launch_in_clusters(_swap_kernel, clusters, 2, (x, y, rank, SWAP), WARPS.value)
    torch.cuda.synchronize()
    pid = torch.arange(programs, device="cuda").repeat_interleave(WORDS)
    partner = x.view(programs, WORDS)[torch.arange(programs, device="cuda") ^ 1].reshape(-1)
    swapped = int((y == partner).sum())
    ranked = int((rank == pid % 2).sum())
    print(f"words read back from the partner: {swapped} of {y.numel()}")
    print(f"cluster rank = program_id(0) % 2: {ranked} of {rank.numel()}")
    ok = swapped == ranked == y.numel()
    if ok:
        launch_in_clusters(_swap_kernel, clusters, 2, (x, y, rank, TIMING), WARPS.value)
        torch.cuda.synchronize()
        cycles = y.view(programs, WORDS)[:, 0].double() / BARRIERS  # thread 0 of each program
        print(f"cluster barrier: {cycles.median().item():.0f} cycles (median over {programs} programs, "
              f"{BARRIERS} in a row; range {cycles.min().item():.0f}-{cycles.max().item():.0f})")
    print(f"use: {'clusters' if ok else 'none'}")
    return ok


if __name__ == "__main__":
    if "--ptx" in sys.argv:
        show_ptx()
    else:
        sys.exit(0 if run() else 1)
