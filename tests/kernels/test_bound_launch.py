"""The dispatcher's bound launches: after a layer's first call with a given key, its kernel is
launched with every argument kept but x and the output.

On the CPU, on stand-ins for the compiled kernels and the driver (``launch_stand_ins.py``): what a
bound launch hands the launcher is, argument by argument, what the launch site builds for that
call; every change the key must see sends the call the full way; what turns fast launch off
turns bound launches off; a weight's bound launches are not copied or pickled with it.
On a CUDA GPU: ``sparse24_matmul`` gives the same bits with them and without.
"""

import copy
import dataclasses
import functools
import pickle

import pytest
import torch
from launch_stand_ins import assert_launched_as_built
from sp24_helpers import DEVICE, random_24
from triton import knobs
from triton.knobs import HookChain

from repro.kernels import compress_24, dispatch, fast_launch, sparse24_matmul, triton_sp24
from repro.kernels.fragments import SpmmaConfig, WgmmaConfig
from repro.kernels.sparse_linear import SparseLinear
from repro.kernels.triton_sp24 import KernelConfig

N, K = 64, 256
SITE_ARGUMENTS = triton_sp24.kernel_call  # what each launch site builds: (kernel, grid, arguments, options)
SITES = {
    "spmma M=1": ("spmma", SpmmaConfig(R=1, S=2, U=2, T=1), 1, False, "fragments"),
    "spmma split-K M=16 bias, planar": ("spmma", SpmmaConfig.from_label("r1w2s2u2t2pxk2"), 16, True, "planar"),
    "wgmma M=16": ("wgmma", WgmmaConfig.from_label("g1t16u2c4k2"), 16, False, "fragments"),
    # x shared by a cluster's row tiles: a TMA descriptor of x made again around each call's x
    "wgmma shared x M=16 bias": ("wgmma", WgmmaConfig.from_label("g1t16u2c4sm2"), 16, True, "fragments"),
    "fma M=1 bias": ("fma", KernelConfig(BM=1, BN=16, BP=16, num_warps=1, num_stages=2), 1, True, "planar"),
    "mma split-K M=4 bias": ("mma", KernelConfig(BM=16, BN=16, BP=16, num_warps=1, num_stages=2, split_k=2), 4,
                             True, "planar"),
}


class Layer:
    """One layer on the stand-ins: a weight, a bias, a fixed choice, and x in one storage (so
    that a test can pick its address modulo 16)."""

    def __init__(self, launches, monkeypatch, site):
        method, cfg, self.m, with_bias, layout = SITES[site]
        self.in_clusters = getattr(cfg, "share", 1) > 1 or getattr(cfg, "cluster", False)
        self.choice = dispatch.Choice(method, cfg)
        weight = compress_24(random_24(N, K, device="cpu"))
        self.w = weight.fragments() if layout == "fragments" else weight
        self.bias = torch.randn(N, dtype=torch.float16) if with_bias else None
        self.storage = torch.randn(6 * 16 * (K + 16) + 64, dtype=torch.float16)
        self.launches = launches

        def kernel_call(*call):  # the launch site's own arguments, the kernel as a stand-in
            fn, grid, args, options = SITE_ARGUMENTS(*call)
            return launches.jit(fn), grid, args, options

        monkeypatch.setattr(dispatch, "_cached_choice", functools.lru_cache(lambda *key: self.choice))
        monkeypatch.setattr(triton_sp24, "kernel_call", kernel_call)
        self.bound_calls = []
        real_bound = fast_launch.BoundLaunch.__call__
        monkeypatch.setattr(fast_launch.BoundLaunch, "__call__",
                            lambda bound, x, out: (self.bound_calls.append(x), real_bound(bound, x, out)))

    def x(self, slot: int, byte_offset: int = 0, m: int | None = None, row_stride: int = K) -> torch.Tensor:
        m = self.m if m is None else m
        start = slot * 16 * K + byte_offset // 2
        return self.storage[start : start + m * row_stride].view(m, row_stride)[:, :K]

    def product(self, x, bias="layer's"):
        return dispatch._product(x, self.w, self.bias if bias == "layer's" else bias, 0)

    def assert_last_launch_is_the_sites(self, x, y, bias="layer's", addresses=True, x_given=True):
        """The last launch got, one by one, the arguments the launch site builds for this call
        (pointers as tensors, or where ``addresses`` as their addresses; x by value unless
        ``x_given``)."""
        bias = self.bias if bias == "layer's" else bias
        fn, grid, args, options = SITE_ARGUMENTS(self.choice.method, x, self.w, bias, y, self.choice.config)
        frags = self.w.fragments()
        given = (*((x,) if x_given else ()), y, bias, self.w.values, self.w.meta, frags.values, frags.meta)
        assert_launched_as_built(self.launches, fn, grid, args, options, given, addresses)


@pytest.fixture(params=list(SITES))
def layer(request, launches, monkeypatch):
    return Layer(launches, monkeypatch, request.param)


def test_a_bound_launch_hands_the_launcher_what_the_site_builds(layer):
    """The first call goes Triton's way and binds; the next ones, on other x with the same key,
    launch the bound kernel with their own x and a fresh output."""
    outputs = [layer.product(layer.x(0))]  # all kept: a freed output's address could come back
    assert len(layer.launches.through_triton) == 1 and not layer.bound_calls
    for slot in (1, 2):
        x = layer.x(slot)
        outputs.append(layer.product(x))
        layer.assert_last_launch_is_the_sites(x, outputs[-1])
    assert len(layer.launches.through_triton) == 1 and len(layer.bound_calls) == 2
    kept = layer.w._launches[dispatch._launch_key(x, layer.w, layer.bias)].launch._kept
    assert not any(t is x or t is outputs[0] for t in kept)  # the first call's x and output are not held


CHANGES = ["x 8 bytes off", "x rows further apart", "another M", "another bias object", "another table",
           "weight values replaced"]


@pytest.mark.parametrize("change", CHANGES)
def test_what_the_key_holds_takes_the_call_the_full_way(layer, change):
    """Each change the bound arguments depend on: the call does not use the kept launch, and the
    launcher still gets what the site builds for the changed call."""
    layer.product(layer.x(0))
    layer.product(layer.x(1))  # bound
    bias, x = "layer's", layer.x(2)
    if change == "x 8 bytes off":
        x = layer.x(2, byte_offset=8)
    elif change == "x rows further apart":
        x = layer.x(2, row_stride=K + 16)
    elif change == "another M":
        x = layer.x(2, m=layer.m + 1)
    elif change == "another bias object":
        bias = torch.randn(N, dtype=torch.float16)
    elif change == "another table":
        dispatch.use_table(None)
    else:
        layer.w.values = layer.w.values.clone()
    y = layer.product(x, bias)
    assert len(layer.bound_calls) == 1
    layer.assert_last_launch_is_the_sites(x, y, bias)


def test_a_launch_hook_sees_tensors_as_triton_hands_them(layer, monkeypatch):
    """A profiler's launch hook gets the launch's metadata as from Triton: while one is set, the
    call goes the full way, fast launch handing the launcher the tensors themselves."""
    layer.product(layer.x(0))
    chain = HookChain()
    chain.add(lambda metadata: None)
    monkeypatch.setattr(knobs.runtime, "launch_enter_hook", chain)
    x = layer.x(1)
    y = layer.product(x)
    assert not layer.bound_calls
    layer.assert_last_launch_is_the_sites(x, y, addresses=False)


@pytest.mark.parametrize("why", ["turned off", "debug", "a pre-run hook", "another device"])
def test_no_bound_launch_where_fast_launch_would_not_launch_directly(layer, monkeypatch, why):
    layer.product(layer.x(0))
    if why == "turned off":
        fast_launch.set_fast_launch(False)
    elif why == "debug":
        monkeypatch.setattr(knobs.runtime, "debug", True)
    elif why == "a pre-run hook":
        fn = next(iter(layer.w._launches.values())).launch.fn
        monkeypatch.setattr(fn, "pre_run_hooks", [lambda *args, **kwargs: None])
    else:
        layer.launches.driver.device = 1
    through = len(layer.launches.through_triton)
    x = layer.x(1)
    y = layer.product(x)
    assert not layer.bound_calls
    # a launch in clusters has no way through Triton: it goes to the launcher unbound, compiled
    # (warmed up) where it has no plan for the device yet
    assert len(layer.launches.through_triton) == through + (not layer.in_clusters or why == "another device")
    layer.assert_last_launch_is_the_sites(x, y)
    if why == "another device":  # bound again there, on that device's stream
        x = layer.x(2)
        y = layer.product(x)
        assert len(layer.bound_calls) == 1
        layer.assert_last_launch_is_the_sites(x, y)


def _shaped_inputs(layer, copied: bool) -> list[torch.Tensor]:
    """Three x of M tokens as [batch, tokens, K], from one storage; ``copied``: every other
    element along K, so that the kernel, which reads rows of unit stride, gets a copy."""
    m = layer.m
    batch, tokens = (2, m // 2) if m > 1 else (1, 1)
    step = 2 if copied else 1
    size = batch * tokens * step * K
    return [layer.storage[i * size : (i + 1) * size].view(batch, tokens, step * K)[..., ::step] for i in range(3)]


@pytest.mark.parametrize("copied", [False, True], ids=["rows read in place", "rows copied"])
def test_x_of_any_shape_is_bound_only_where_the_kernel_reads_it_in_place(layer, copied):
    """x as [batch, tokens, K]: the output comes in its final shape, every launch gets what the
    site builds for x as [M, K] rows of unit stride, and the launch is kept only where those
    rows are x itself (a bound launch hands over x's own address)."""
    outputs = []
    for x in _shaped_inputs(layer, copied):
        y = layer.product(x)
        outputs.append(y)  # all kept: a freed output's address could come back
        assert y.shape == (*x.shape[:-1], N) and y.is_contiguous()
        rows = x.reshape(-1, K)
        if copied:  # what the kernel read is a copy the dispatcher made: compared by value
            layer.assert_last_launch_is_the_sites(rows.contiguous(), y.view(-1, N), x_given=False)
        else:
            layer.assert_last_launch_is_the_sites(rows, y.view(-1, N))
    assert len(layer.bound_calls) == (0 if copied else 2) and bool(layer.w._launches) is not copied


def test_x_the_site_copies_is_never_bound(launches, monkeypatch):
    """spmma copies x whose rows are not aligned 4-byte pairs: that launch has no x to replace,
    so each such call builds its arguments (and its copy) again."""
    layer = Layer(launches, monkeypatch, "spmma M=1")
    for slot in range(3):
        layer.product(layer.x(slot, byte_offset=2))
    assert not layer.bound_calls and not layer.w._launches
    fn, args, _ = launches.through_triton[0]
    assert args[0].data_ptr() % 4 == 0  # the copy


def test_a_weight_keeps_a_bounded_number_of_launches(launches, monkeypatch):
    """A caller passing a new bias tensor each call makes a new key each time: the oldest launch
    goes, and with it the bias it kept alive."""
    layer = Layer(launches, monkeypatch, "fma M=1 bias")
    first = torch.randn(N, dtype=torch.float16)
    layer.product(layer.x(0), first)
    kept = [torch.randn(N, dtype=torch.float16) for _ in range(dispatch.MAX_BOUND_LAUNCHES + 5)]
    for bias in kept:
        layer.product(layer.x(0), bias)
    assert len(layer.w._launches) == dispatch.MAX_BOUND_LAUNCHES
    held = [a for kept in layer.w._launches.values() for a in kept.launch._kept]
    assert not any(a is first for a in held) and any(a is kept[-1] for a in held)


def test_the_cublas_route_binds_nothing(monkeypatch):
    w = compress_24(random_24(N, K, device="cpu"))
    monkeypatch.setattr(dispatch, "_cached_choice", lambda *key: dispatch.Choice("cublas"))
    x = torch.randn(3, K, dtype=torch.float16)
    y = dispatch._product(x, w, None, 0)
    assert not w._launches
    assert torch.equal(y, torch.nn.functional.linear(x, w.decompress()))


def test_bound_launches_are_not_copied_or_pickled_with_the_weight(layer):
    layer.product(layer.x(0))
    assert layer.w._launches
    for copied in (copy.deepcopy(layer.w), pickle.loads(pickle.dumps(layer.w))):
        assert type(copied._launches) is type(layer.w._launches) and not copied._launches
        assert torch.equal(copied.values, layer.w.values)
    module = copy.deepcopy(SparseLinear(layer.w))
    assert not module.weight24._launches


# ----------------------------------------------------------------------------- on a CUDA GPU


@pytest.mark.skipif(
    DEVICE != "cuda" or torch.cuda.get_device_capability() < (8, 0), reason="launches compiled kernels: sm_80+ GPU"
)
@pytest.mark.parametrize("layout", ["planar", "fragments"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_bound_launches_give_the_same_bits(layout, with_bias):
    """sparse24_matmul with bound launches and with every launch through Triton's path: the same
    bits, over keys that must not share a launch (x aligned and 4 bytes off; M = 1, 16; x as
    [8, 1, K], and with every other element along K, which the dispatcher copies)."""
    torch.manual_seed(0)
    w = compress_24(random_24(256, 512))
    w = w.fragments() if layout == "fragments" else w
    bias = torch.randn(256, device=DEVICE, dtype=torch.float16) if with_bias else None
    base = torch.randn(16 * 512 + 2, device=DEVICE, dtype=torch.float16)
    # few compiles (each costs seconds of the GPU call): M = 1 is compiled in as a constant, 8 and
    # 16 differ in divisibility by 16, and x 4 bytes off in alignment
    xs = [base[:512].view(1, 512), base[2 : 2 + 512].view(1, 512), base[: 16 * 512].view(16, 512)]
    xs += [base[: 8 * 512].view(8, 1, 512), base[: 16 * 512].view(2, 4, 1024)[..., ::2]]  # in place; rows copied
    bound = [sparse24_matmul(x, w, bias) for x in xs for _ in range(3)]
    assert w._launches, "no launch was bound"
    with fast_launch.turned_off():
        slow = [sparse24_matmul(x, w, bias) for x in xs for _ in range(3)]
    for x, y_bound, y_slow in zip((x for x in xs for _ in range(3)), bound, slow):
        assert y_bound.shape == (*x.shape[:-1], 256) and torch.equal(y_bound, y_slow)
    dense = w.decompress().double()
    for x, y in zip((x for x in xs for _ in range(3)), bound):
        ref = x.double() @ dense.T + (0 if bias is None else bias.double())  # [..., 256]
        assert (y.double() - ref).abs().max() < 5e-3 * ref.abs().max()


def _table_wgmma_labels() -> list[str]:
    """The sparse ``wgmma`` tilings the committed tables run (H200: run 2026-11-27f's; H100: 2026-11-28's)."""
    entries = [e for gpu in ("h100", "h200") for e in dispatch._committed_table("sm90", gpu).get("entries", [])]
    return sorted({WgmmaConfig(**e["config"]).label() for e in entries if e["method"] == "wgmma"})


def _small_layer_table(cfg: WgmmaConfig) -> tuple[dict, int, int, int]:
    """A table sending a small layer (two row groups, eight steps per split) at ``cfg.T`` tokens to
    the ``wgmma`` tiling ``cfg``; returns it with the layer's N, K and M."""
    n, k, m = 128 * cfg.G * cfg.W, 32 * cfg.U * cfg.split_k * 8, cfg.T
    entry = dict(N=n, K=k, M=m, dtype="float16", method="wgmma", config=dataclasses.asdict(cfg))
    return {"arch": "sm90", "entries": [entry | dict(us=1.0, speedup_vs_cublas=2.0)]}, n, k, m


@pytest.mark.parametrize("label", _table_wgmma_labels())
def test_the_small_layer_tables_send_each_wgmma_tiling_of_the_committed_table_its_way(label):
    """The GPU test below relies on this: its table resolves, in both layouts, to that tiling."""
    cfg = WgmmaConfig.from_label(label)
    cfg.check()
    table, n, k, m = _small_layer_table(cfg)
    for layout in ("planar", "fragments"):
        assert dispatch._table_choice(table, n, k, m, torch.float16, layout) == dispatch.Choice("wgmma", cfg)
    assert k % (32 * cfg.U * cfg.split_k) == 0 and n % (64 * cfg.G * cfg.W) == 0


@pytest.mark.skipif(
    DEVICE != "cuda" or torch.cuda.get_device_capability()[0] != 9, reason="wgmma needs an sm_90 (Hopper) CUDA GPU"
)
@pytest.mark.parametrize("layout", ["planar", "fragments"])
@pytest.mark.parametrize("label", _table_wgmma_labels())
def test_bound_launches_of_the_tables_wgmma_tilings_give_the_same_bits(label, layout):
    """The committed table sends 16-64 tokens to the sparse ``wgmma`` on some shapes: each of its
    tilings through a bound launch gives the bits of Triton's own launch, and the right product,
    on a small layer with a table that names that tiling (x aligned, and 4 bytes off)."""
    cfg = WgmmaConfig.from_label(label)
    table, n, k, m = _small_layer_table(cfg)
    w = compress_24(random_24(n, k))
    w = w.fragments() if layout == "fragments" else w
    dispatch.use_table(table)
    try:
        assert dispatch.choose(w, m) == dispatch.Choice("wgmma", cfg)
        base = torch.randn(m * k + 2, device=DEVICE, dtype=torch.float16)
        xs = [base[: m * k].view(m, k), base[2 : 2 + m * k].view(m, k)]
        bound = [sparse24_matmul(x, w) for x in xs for _ in range(3)]
        assert w._launches, "no launch was bound"
        with fast_launch.turned_off():
            slow = [sparse24_matmul(x, w) for x in xs for _ in range(3)]
    finally:
        dispatch.use_table(None)
    dense = w.decompress().double()
    for x, y_bound, y_slow in zip((x for x in xs for _ in range(3)), bound, slow):
        assert torch.equal(y_bound, y_slow)
        ref = x.double() @ dense.T
        assert (y_bound.double() - ref).abs().max() < 5e-3 * ref.abs().max()


def test_the_benchmark_counts_the_products_that_found_no_kept_launch(layer):
    """``bench/sp24/e2e.py`` reports, per eager decode step, the products that went the dispatcher's
    full way: here the first call of a layer, and a call with another bias; nothing after the
    count ends, and the dispatcher's own path is back in place."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from sp24.e2e import counting_full_way

    full_way = dispatch._chosen_product
    with counting_full_way() as calls:
        for slot in range(3):
            layer.product(layer.x(slot))
        assert calls[0] == 1 and len(layer.bound_calls) == 2
        layer.product(layer.x(0), bias=torch.randn(N, dtype=torch.float16))
        assert calls[0] == 2
    layer.product(layer.x(1), bias=torch.randn(N, dtype=torch.float16))
    assert calls[0] == 2 and dispatch._chosen_product is full_way
