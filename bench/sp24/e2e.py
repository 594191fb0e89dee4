"""End to end: decode steps of a stack of LLaMA-7B-shaped decoder layers, dense vs SparseLinear."""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from repro.kernels import SparseLinear, dispatch, fast_launch
from repro.pruning import nm_mask, to_sparse24

from .common import KERNELS, rel_err

LLAMA_7B = dict(hidden=4096, inter=11008, heads=32)


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        var = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(var + 1e-6)).to(x.dtype) * self.weight


class DecoderLayer(nn.Module):
    """LLaMA-7B-shaped decoder layer for one decode step over a fixed KV cache (no rotary)."""

    def __init__(self, hidden=4096, inter=11008, heads=32):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (
            nn.Linear(hidden, hidden, bias=False) for _ in range(4)
        )
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)
        self.input_norm, self.post_norm = RMSNorm(hidden), RMSNorm(hidden)

    def forward(self, h, k_cache, v_cache):
        b = h.shape[0]
        r = self.input_norm(h)
        q = self.q_proj(r).view(b, 1, self.heads, -1).transpose(1, 2)
        k = self.k_proj(r).view(b, 1, self.heads, -1).transpose(1, 2)
        v = self.v_proj(r).view(b, 1, self.heads, -1).transpose(1, 2)
        keys = torch.cat((k_cache, k), dim=2)
        values = torch.cat((v_cache, v), dim=2)
        a = F.scaled_dot_product_attention(q, keys, values).transpose(1, 2).reshape(b, 1, -1)
        h = h + self.o_proj(a)
        r = self.post_norm(h)
        return h + self.down_proj(F.silu(self.gate_proj(r)) * self.up_proj(r))


@contextmanager
def counting_full_way():
    """While active, counts the products on a GPU that found no launch kept for their key and went
    the dispatcher's full way (``dispatch._chosen_product``: choice, checks, arguments built again).
    In a decode loop only each layer's first call at a batch size should: the count says whether
    an eager decode's host time is the kept launches' or the full way's."""
    calls = [0]
    full_way = dispatch._chosen_product

    def counted(*args):
        calls[0] += 1
        return full_way(*args)

    dispatch._chosen_product = counted
    try:
        yield calls
    finally:
        dispatch._chosen_product = full_way


def eager_timing(timer, step) -> tuple[float, float]:
    """``timer.wall_us`` of ``step`` and the products per step that went the full way."""
    steps = [0]

    def counted_step():
        steps[0] += 1
        return step()

    with counting_full_way() as calls:
        us = timer.wall_us(counted_step)
    return us, calls[0] / max(steps[0], 1)


def bench_e2e(info, timer, layers: int, ctx: int, batches, log, dims=LLAMA_7B) -> list[dict]:
    """Decode steps of ``layers`` decoder layers of size ``dims`` (LLaMA-7B's unless a test asks
    for less), on ``timer.device``: dense vs SparseLinear, eager and CUDA-graph replay."""
    torch.manual_seed(0)
    dense = nn.ModuleList(DecoderLayer(**dims) for _ in range(layers)).half().to(timer.device).eval()
    head_dim = dims["hidden"] // dims["heads"]
    with torch.no_grad():
        for lin in [m for m in dense.modules() if isinstance(m, nn.Linear)]:
            lin.weight.normal_(0, 0.02)
            lin.weight.mul_(nm_mask(lin.weight.abs(), 2, 4))
    sparse = copy.deepcopy(dense)
    swapped = to_sparse24(sparse)
    models = [("dense", dense), ("sparse24", sparse)]
    if {"spmma", "wgmma"} & set(KERNELS):  # also the fragment-order layout: only that copy, no planar one
        fragments = copy.deepcopy(dense)
        to_sparse24(fragments, layout="fragments")
        models.append(("sparse24_fragments", fragments))
    dense_bytes = sum(m.weight.nbytes for m in dense.modules() if isinstance(m, nn.Linear))
    recs = []
    for b in batches:
        caches = [
            (
                torch.randn(b, dims["heads"], ctx, head_dim, device=timer.device, dtype=torch.float16),
                torch.randn(b, dims["heads"], ctx, head_dim, device=timer.device, dtype=torch.float16),
            )
            for _ in range(layers)
        ]
        h0 = torch.randn(b, 1, dims["hidden"], device=timer.device, dtype=torch.float16)

        def step(model):
            h = h0
            for layer, (kc, vc) in zip(model, caches):
                h = layer(h, kc, vc)
            return h

        results = {}
        for name, model in models:
            with torch.no_grad():
                out = step(model)
                eager, full_way = eager_timing(timer, lambda: step(model))
                graphed = timer.graph_us(lambda: step(model))
                triton_launch = None
                if name != "dense":  # eager again through Triton's own launch: what our launch paths save
                    with fast_launch.turned_off():
                        triton_launch = timer.wall_us(lambda: step(model))
            results[name] = (out, eager, graphed, triton_launch, full_way)
        batch = []
        for (name, model), (out, eager, graphed, triton_launch, full_way) in zip(models, results.values()):
            linears = [m for m in model.modules() if isinstance(m, SparseLinear)]
            batch.append(
                dict(
                    gpu=info["gpu"],
                    N=None,
                    K=None,
                    M=b,
                    method=f"e2e_{name}",
                    status="ok",
                    us=graphed,
                    us_eager=eager,
                    tokens_per_s=b / graphed * 1e6,
                    tokens_per_s_eager=b / eager * 1e6,
                    # eager again with every kernel launched through Triton's own path
                    tokens_per_s_eager_triton_launch=None if triton_launch is None else b / triton_launch * 1e6,
                    # products per eager step that found no kept launch (0 where every layer's did)
                    full_way_per_step=full_way,
                    layers=layers,
                    **dims,
                    ctx=ctx,
                    swapped_linears=swapped,
                    weight_bytes=sum(m.weight_nbytes for m in linears) if linears else dense_bytes,
                    # copies the dispatcher derived for the methods it ran (dense for cuBLAS,
                    # fragments for spmma), counted after this batch size ran
                    cached_bytes=sum(m.weight24.cache_nbytes for m in linears),
                    rel_err=rel_err(out, results["dense"][0].float()),
                    note="random weights pruned 2:4 by magnitude; decode step over a fixed random "
                    f"{ctx}-token KV cache; us = CUDA-graph replay, us_eager = plain launches",
                )
            )
        d = batch[0]
        for r in batch:
            r["speedup_vs_dense"] = d["us"] / r["us"]
            r["speedup_vs_dense_eager"] = d["us_eager"] / r["us_eager"]
        recs += batch
        log(
            f"e2e b={b}: dense {d['tokens_per_s']:.0f} tok/s | "
            + " | ".join(
                f"{r['method']} {r['tokens_per_s']:.0f} tok/s (graph {r['speedup_vs_dense']:.2f}x, "
                f"eager {r['speedup_vs_dense_eager']:.2f}x, eager through Triton's launch "
                f"{r['tokens_per_s_eager_triton_launch'] / d['tokens_per_s_eager']:.2f}x, "
                f"{r['full_way_per_step']:.1f} products a step the full way, err {r['rel_err']:.1e})"
                for r in batch[1:]
            )
        )
    del dense, sparse, models
    torch.cuda.empty_cache()
    return recs
