"""Live GPU timing of a 2:4 layer against its dense twin, for chapters that run on a CUDA machine."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .dispatch import sparse24_matmul
from .format import compress_24
from .sparse_linear import SparseLinear


def cuda_event_us(fn, reps: int = 50) -> float:
    """Mean time of ``fn()`` in microseconds over ``reps`` back-to-back calls, after one warm-up call."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps * 1000


def decode_latency(layer: SparseLinear, tokens: int = 1, reps: int = 50) -> dict:
    """fp16 latency of one layer at ``tokens`` rows of input: dense cuBLAS vs the 2:4 dispatcher."""
    if not torch.cuda.is_available():
        raise RuntimeError("decode_latency needs a CUDA GPU")
    dense = layer.weight24.decompress().to("cuda", torch.float16)
    sparse = compress_24(dense)
    x = torch.randn(tokens, layer.in_features, device="cuda", dtype=torch.float16)
    dense_us = cuda_event_us(lambda: F.linear(x, dense), reps)
    sparse_us = cuda_event_us(lambda: sparse24_matmul(x, sparse), reps)
    return {"shape": f"{layer.out_features}x{layer.in_features}", "tokens": tokens,
            "dense_us": dense_us, "sparse24_us": sparse_us, "speedup": dense_us / sparse_us}
