"""``fast_launch``: a compiled kernel launched again without Triton's per-call binding.

On the CPU: its key against Triton's own specialization, the arguments it hands the launcher
against those Triton's binder builds at every launch site of ours, and which calls go which way.
On a CUDA GPU: the same products with it on and off, bit for bit, across specializations that
must not share a compiled kernel, and inside a captured CUDA graph.
"""

import contextlib

import pytest
import torch
import triton
import triton.language as tl
from launch_stand_ins import assert_hooks_as_set
from sp24_helpers import DEVICE, random_24
from triton import knobs
from triton.backends.compiler import BaseBackend, GPUTarget
from triton.compiler import make_backend
from triton.knobs import HookChain
from triton.runtime.jit import JITFunction, create_function_from_signature, native_specialize_impl

from repro.kernels import compress_24, fast_launch, gluon_sp24, gluon_wgmma, sparse24_matmul, triton_sp24
from repro.kernels.fragments import SpmmaConfig, WgmmaConfig
from repro.kernels.triton_sp24 import KernelConfig


@pytest.fixture(autouse=True)
def fresh_plans():
    """No plans kept from elsewhere, and the fast path on whatever REPRO_FAST_LAUNCH says."""
    fast_launch._plans.clear()
    fast_launch.set_fast_launch(True)
    yield
    fast_launch._plans.clear()
    fast_launch.set_fast_launch(True)


def _values():
    ints = [0, 1, 2, 15, 16, 17, 32, 48, -1, -16, 2**31 - 16, 2**31 - 1, 2**31, 2**31 + 16, 2**32, 2**63 - 16,
            2**63, 2**64 - 16]
    storage = {dtype: torch.zeros(64, dtype=dtype) for dtype in (torch.float16, torch.bfloat16, torch.float32)}
    tensors = [t[offset:] for t in storage.values() for offset in range(9)]
    return ints + tensors + [True, False, None, 1.0]


def test_arg_key_separates_every_specialization_triton_compiles_apart():
    """Two arguments with one key must have one specialization, or a kernel compiled for aligned
    pointers (or for the constant 1) would run on others."""
    seen = {}
    for value in _values():
        spec = native_specialize_impl(BaseBackend, value, False, True, True)
        key = fast_launch.arg_key(value)
        assert seen.setdefault(key, spec) == spec, f"{value!r}: key {key} also holds {seen[key]}, not {spec}"
    # and it does not split what Triton keeps together more than it must: aligned fp16 pointers
    # share a key whatever their address, as do i32 values not divisible by 16
    storage = torch.zeros(64, dtype=torch.float16)
    assert fast_launch.arg_key(storage[8:]) == fast_launch.arg_key(storage[16:])
    assert fast_launch.arg_key(17) == fast_launch.arg_key(4097)


def _captured_launch(monkeypatch, run):
    """What one launch site hands ``fast_launch.launch``: (fn, grid, args, options)."""
    calls = []
    monkeypatch.setattr(fast_launch, "launch", lambda *call, warmup=False: calls.append(call))
    run()
    (call,) = calls
    return call


def _launch_sites():
    w = compress_24(random_24(64, 256, device="cpu"))
    frags = w.fragments()
    bias = torch.randn(64, dtype=torch.float16)
    sites = {}
    for m, cfg in [(1, SpmmaConfig(R=1, S=2, U=2, T=1)), (16, SpmmaConfig.from_label("r1w2s2u2t2pxk2"))]:
        x, out = torch.randn(m, 256, dtype=torch.float16), torch.empty(m, 64, dtype=torch.float16)
        sites[f"spmma M={m}"] = lambda x=x, out=out, cfg=cfg: gluon_sp24.launch_spmma(x, frags, bias, out, cfg)
    for label in ("g1t16u2c4k2", "g2t16u2c4sk2"):
        x, out = torch.randn(16, 256, dtype=torch.float16), torch.empty(16, 64, dtype=torch.float16)
        cfg = WgmmaConfig.from_label(label)
        sites[f"wgmma {label}"] = lambda x=x, out=out, cfg=cfg: gluon_wgmma.launch_wgmma(x, frags, None, out, cfg)
    for kernel in ("fma", "mma"):
        x, out = torch.randn(4, 256, dtype=torch.float16), torch.empty(4, 64, dtype=torch.float16)
        cfg = KernelConfig(BM=16, BN=16, BP=16, num_warps=1, num_stages=2, split_k=2)
        sites[kernel] = lambda kernel=kernel, x=x, out=out, cfg=cfg: triton_sp24.launch(kernel, x, w, bias, out, cfg)
    return sites


@pytest.mark.parametrize("site", list(_launch_sites()))
def test_launcher_gets_the_arguments_triton_would_bind(site, monkeypatch):
    """The positional arguments plus the tail are, one by one, what Triton's binder binds to the
    kernel's parameters for the same call (what ``JITFunction.run`` hands the launcher)."""
    fn, grid, args, options = _captured_launch(monkeypatch, _launch_sites()[site])
    if not isinstance(fn, JITFunction):  # a @triton.jit kernel under the interpreter: its compiled form
        fn = JITFunction(fn.fn, **fn.kwargs)
    binder = create_function_from_signature(fn.signature, fn.params, make_backend(GPUTarget("cuda", 90, 32)))
    bound = tuple(binder(*args, **options)[0].values())
    ours = (*args, *fast_launch._tail(fn, args, options))
    assert len(ours) == len(bound) == len(fn.params)
    for param, mine, theirs in zip(fn.params, ours, bound):
        assert mine is theirs or mine == theirs, f"{site}: parameter {param.name}: {mine!r} != {theirs!r}"


@triton.jit
def _toy_kernel(x_ptr, n, BLOCK: tl.constexpr, EXTRA: tl.constexpr = 3):
    pass


@pytest.fixture
def toy(launches):
    """The toy kernel on the stand-ins: (fn, its compiled stand-ins, the calls through Triton)."""
    return launches.jit(_toy_kernel), launches.compiled, launches.through_triton


@pytest.mark.parametrize("hook", [False, True], ids=["no launch hook", "a launch hook"])
def test_second_call_launches_the_compiled_kernel_directly(toy, monkeypatch, hook):
    """With the arguments Triton binds; the launch hooks and their metadata only where a hook
    is set (Triton's chains of hooks are there, empty, unless a profiler adds one)."""
    if hook:
        chain = HookChain()
        chain.add(lambda metadata: None)
        monkeypatch.setattr(knobs.runtime, "launch_enter_hook", chain)
    fn, compiled, through_triton = toy
    x = torch.zeros(32, dtype=torch.float16)
    fast_launch.launch(fn, (4,), (x, 8), {"BLOCK": 16})
    assert len(through_triton) == 1
    fast_launch.launch(fn, (5, 2), (x[8:], 24), {"BLOCK": 16})  # the same specialization
    assert len(through_triton) == 1
    (kernel,) = compiled.values()
    ((*launch, metadata, enter, leave, x_arg, n, block, extra),) = kernel.launches
    assert launch == [5, 2, 1, "stream 0", "function", (4, 1, 0)]
    assert_hooks_as_set(metadata, enter, leave, ("metadata", (5, 2), "stream 0", (x_arg, 24, 16, 3)))
    assert (metadata is None) is not hook
    assert x_arg is not x and x_arg.data_ptr() == x[8:].data_ptr() and (n, block, extra) == (24, 16, 3)


@pytest.mark.parametrize("enabled", [True, False], ids=["fast launch on", "turned off"])
def test_a_cluster_grid_always_goes_to_the_launcher_in_clusters(toy, enabled):
    """Triton's own launch would run each program alone, so a ``ClusterGrid`` is compiled once
    (warmup) and launched by the launcher with clusters along x and the cluster in the metadata,
    even where fast launch is turned off."""
    fn, compiled, through_triton = toy
    x = torch.zeros(32, dtype=torch.float16)
    with contextlib.nullcontext() if enabled else fast_launch.turned_off():
        for _ in range(2):
            fast_launch.launch(fn, fast_launch.ClusterGrid((8, 3, 1), 4), (x, 8), {"BLOCK": 16})
    assert len(through_triton) == 1  # the compile
    (kernel,) = compiled.values()
    assert kernel.loaded and len(kernel.launches) == 2
    assert all(launch[:6] == (2, 3, 1, "stream 0", "function", (4, 4, 0)) for launch in kernel.launches)


@pytest.mark.parametrize(
    "args, options",
    [((1, 8), {"BLOCK": 16}), ((0, 1), {"BLOCK": 16}), ((0, 16), {"BLOCK": 16}), ((0, 8), {"BLOCK": 32}),
     ((0, 8), {"BLOCK": 16, "EXTRA": 4}), ((0, 2**31), {"BLOCK": 16})],
    ids=["x unaligned", "n is 1", "n divisible by 16", "another constexpr", "a default overridden", "n is i64"],
)
def test_a_new_specialization_goes_through_triton(toy, args, options):
    fn, compiled, through_triton = toy
    x = torch.zeros(32, dtype=torch.float16)
    fast_launch.launch(fn, (4,), (x, 8), {"BLOCK": 16})
    fast_launch.launch(fn, (4,), (x[args[0]:], args[1]), options)
    assert len(through_triton) == 2 and all(not k.launches for k in compiled.values())


@pytest.mark.parametrize("why", ["turned off", "grid function", "stage hook", "debug"])
def test_triton_path_wherever_triton_would_do_more_than_launch(toy, monkeypatch, why):
    fn, compiled, through_triton = toy
    x = torch.zeros(32, dtype=torch.float16)
    grid = (4,)
    if why == "turned off":
        fast_launch.set_fast_launch(False)
    elif why == "grid function":
        grid = lambda meta: (4,)  # noqa: E731
    elif why == "stage hook":
        monkeypatch.setattr(knobs.runtime, "add_stages_inspection_hook", lambda: ("key", "hash"))
    else:
        monkeypatch.setattr(knobs.runtime, "debug", True)
    for _ in range(3):
        fast_launch.launch(fn, grid, (x, 8), {"BLOCK": 16})
    assert len(through_triton) == 3 and not fast_launch._plans


@pytest.mark.parametrize("before", [True, False])
def test_turned_off_restores_the_setting_it_found(toy, before):
    """The benchmark times Triton's path inside the block; a run that had it off (REPRO_FAST_LAUNCH=0
    after a failed GPU test) must stay off afterwards."""
    fn, _, through_triton = toy
    x = torch.zeros(32, dtype=torch.float16)
    fast_launch.set_fast_launch(before)
    with fast_launch.turned_off():
        fast_launch.launch(fn, (4,), (x, 8), {"BLOCK": 16})
        assert not fast_launch._plans
    assert fast_launch._state["enabled"] is before
    fast_launch.launch(fn, (4,), (x, 8), {"BLOCK": 16})
    assert bool(fast_launch._plans) is before and len(through_triton) == 2


def test_warmup_only_compiles_and_keeps_no_plan(toy, monkeypatch):
    fn, _, through_triton = toy
    compiled = []
    monkeypatch.setattr(fn, "warmup", lambda *args, grid, **options: compiled.append((grid, args, options)))
    x = torch.zeros(32, dtype=torch.float16)
    fast_launch.launch(fn, (4,), (x, 8), {"BLOCK": 16}, warmup=True)
    assert compiled == [((4,), (x, 8), {"BLOCK": 16})] and not through_triton and not fast_launch._plans


def test_interpreted_or_emulated_kernels_go_through_their_own_path():
    class Stand_in:
        def __init__(self):
            self.calls = []

        def __getitem__(self, grid):
            return lambda *args, **options: self.calls.append((grid, args, options))

    kernel = Stand_in()
    fast_launch.launch(kernel, (2,), (1, 2), {"A": 3})
    fast_launch.launch(kernel, (2,), (1, 2), {"A": 3})
    assert kernel.calls == [((2,), (1, 2), {"A": 3})] * 2 and not fast_launch._plans


def test_arguments_it_cannot_bind_leave_no_plan(toy):
    """A constexpr with neither a value nor a default has no tail: the call is Triton's (which
    raises on a real kernel) and nothing is kept for the next."""
    fn, _, through_triton = toy
    x = torch.zeros(32, dtype=torch.float16)
    assert fast_launch._tail(fn, (x, 8), {}) is None
    fast_launch.launch(fn, (4,), (x, 8), {})
    assert len(through_triton) == 1 and not fast_launch._plans


# ----------------------------------------------------------------------------- on a CUDA GPU

gpu = pytest.mark.skipif(
    DEVICE != "cuda" or torch.cuda.get_device_capability() < (8, 0), reason="launches compiled kernels: sm_80+ GPU"
)


def _products(fn):
    """The same calls with fast launch on and off: the specializations that must not share a
    kernel follow each other (aligned x, then x 4 bytes off; M = 1, then 3, then 16)."""
    torch.manual_seed(0)
    w = compress_24(random_24(256, 512))
    base = torch.randn(16 * 512 + 2, device=DEVICE, dtype=torch.float16)
    xs = [base[:512].view(1, 512), base[2 : 2 + 512].view(1, 512), base[: 3 * 512].view(3, 512),
          base[2 : 2 + 3 * 512].view(3, 512), base[: 16 * 512].view(16, 512)]
    fast = [fn(x, w) for x in xs for _ in range(2)]
    with fast_launch.turned_off():
        fast_launch._plans.clear()
        slow = [fn(x, w) for x in xs for _ in range(2)]
    return fast, slow, xs, w


@gpu
@pytest.mark.parametrize("kernel", ["spmma", "fma"])
def test_fast_launch_gives_the_same_bits(kernel):
    from repro.kernels.triton_sp24 import launch

    cfg = {"spmma": SpmmaConfig(R=1, S=2, U=2, T=1), "fma": KernelConfig(BM=16, BN=16, BP=16, num_warps=2)}[kernel]

    def product(x, w):
        out = torch.full((x.shape[0], w.shape[0]), float("nan"), device=DEVICE, dtype=torch.float16)
        return launch(kernel, x, w, None, out, cfg)

    fast, slow, xs, w = _products(product)
    assert fast_launch._plans == {}  # the last pass ran with it off
    for y_fast, y_slow in zip(fast, slow):
        assert torch.equal(y_fast, y_slow)
    for x, y in zip((x for x in xs for _ in range(2)), fast):
        assert (y.double() - x.double() @ w.decompress().double().T).abs().max() < 5e-3 * y.abs().max()


@gpu
def test_fast_launch_inside_a_cuda_graph():
    w = compress_24(random_24(256, 512)).fragments()
    x = torch.randn(1, 512, device=DEVICE, dtype=torch.float16)
    sparse24_matmul(x, w)  # compile and keep a plan
    sparse24_matmul(x, w)
    assert fast_launch._plans
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = sparse24_matmul(x, w)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    ref = x.double() @ w.decompress().double().T
    assert (y.double() - ref).abs().max() < 5e-3 * ref.abs().max()

