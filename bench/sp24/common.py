"""Shared pieces of the 2:4 GEMM benchmark: the cases, the GPU description, the record format."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import torch

from repro.kernels import dispatch

ROOT = Path(__file__).resolve().parents[2]  # the repository


def shown_path(path: Path) -> str:
    """A path as generated tables name it: from the repository's root where it lies inside."""
    path = path.resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def table_rows(text: str, width: int) -> list[list[str]]:
    """The stripped cells of each Markdown table row in ``text`` that has ``width`` cells (the
    header and the rule among them: callers tell rows apart by their content)."""
    rows = (line.strip() for line in text.splitlines())
    cells = ([c.strip() for c in line.strip("|").split("|")] for line in rows if line.startswith("|"))
    return [row for row in cells if len(row) == width]


SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008)]  # LLaMA-7B linears: q/k/v/o, gate/up, down
# our kernels; $REPRO_BENCH_KERNELS (comma-separated) narrows the list, e.g. when gpu_check.sh's
# probe finds that spmma does not work on the GPU at hand
KERNELS = tuple(os.environ.get("REPRO_BENCH_KERNELS", "fma,mma,expand,spmma,wgmma").split(","))
MS = [1, 4, 8, 16, 32, 64, 128, 512, 2048]
QUICK_MS = [1, 16, 128]
COPIES = 8  # weight copies cycled through by the streamed timing (> 2x the L2 in bytes)
TOL = 2e-2  # max|err| / max|ref| against the fp32 reference


def gpu_info() -> dict:
    import triton

    props = torch.cuda.get_device_properties(0)
    info = dict(
        gpu=torch.cuda.get_device_name(0),
        arch=dispatch.arch_name(torch.device("cuda", 0)),
        sms=props.multi_processor_count,
        l2_mb=getattr(props, "L2_cache_size", 0) / 2**20,
        torch=torch.__version__,
        cuda=torch.version.cuda,
        triton=triton.__version__,
    )
    try:
        info["cusparselt"] = torch.backends.cusparselt.version()
    except Exception as exc:  # not every build has it
        info["cusparselt"] = f"unavailable: {exc}"
    info["cusparselt_direct"] = cusparselt_direct(torch.device("cuda", 0))
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        dst.copy_(src)
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    info["copy_gbps"] = 2 * src.numel() / statistics.median(times) / 1e9  # read + write
    del src, dst
    return info


def cusparselt_direct(device) -> str:
    """What the direct cuSPARSELt route loaded (version and file), or why it is not used: the same
    library as torch's, or another copy, is worth knowing when its times differ from torch's."""
    from repro.kernels import cusparselt

    if not cusparselt.available(device):
        return "not used (REPRO_CUSPARSELT=0, or the library did not load)"
    return f"{cusparselt.library_version(device)} from {cusparselt.load_library().path}"


def pruned_weight(n: int, k: int, device, seed: int) -> torch.Tensor:
    """A random fp16 weight ``[n, k]`` (LLaMA-like scale) pruned 2:4 by magnitude, the same for a
    seed on every run."""
    from repro.pruning import nm_mask

    torch.manual_seed(seed)
    dense = torch.randn(n, k, device=device, dtype=torch.float16) * 0.02
    return dense * nm_mask(dense.abs(), 2, 4)


def rel_err(y, ref) -> float:
    return float((y.float() - ref).abs().max() / ref.abs().max())


def record(info, n, k, m, method, status, us=None, err=None, wbytes=None, cfg="", host=None, note=""):
    rec = dict(
        gpu=info["gpu"],
        N=n,
        K=k,
        M=m,
        method=method,
        status=status,
        us=us,
        rel_err=err,
        weight_bytes=wbytes,
        cfg=cfg,
        host_us=host,
        note=note,
    )
    if us:
        rec["tflops"] = 2 * m * n * k / us / 1e6
        act_bytes = 2 * m * (n + k)
        rec["gbps"] = ((wbytes or 0) + act_bytes) / us / 1e3
        rec["launch_bound"] = bool(host is not None and host > us)
    return rec


def recs_at(recs, n, k, m, method):
    return next(r for r in recs if r["N"] == n and r["K"] == k and r["M"] == m and r["method"] == method)


def cases(recs) -> list[tuple[int, int, int]]:
    """The (N, K, M) triples a run measured, in the order it measured them."""
    return list(dict.fromkeys((r["N"], r["K"], r["M"]) for r in recs if r["method"] == "cublas"))
