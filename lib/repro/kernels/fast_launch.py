"""Launching a Triton or Gluon kernel again without Triton binding its arguments on every call.

A decode step launches each layer's kernel once per token, with the same shapes every time, and
a decode-size product takes about 10 µs on the GPU, so the host's time per launch decides eager
decode. Triton's ``fn[grid](*args, **options)`` spends most of its share re-deriving what it
derived on the previous call: it binds every argument against the signature, computes each one's
specialization (a pointer's 16-byte alignment, an integer's divisibility by 16, an integer 1
compiled as a constant), hashes those with the options into a cache key and looks the compiled
kernel up. ``launch`` does that once per distinct specialization and afterwards calls the compiled
kernel's launcher directly, with the arguments Triton's own path passes; only where no launch hook
is set (a profiler sets one) it hands over no hooks and no metadata for them, which Triton builds
on every launch and its launcher hands to its empty chains of hooks.

Its key has to separate every two calls that Triton would compile apart, or a kernel compiled for
aligned pointers would run on unaligned ones. It keeps, per argument, at least what Triton
specializes on: a tensor's dtype and 16-byte alignment; an integer's type, whether it is 1,
whether 16 divides it, and whether it fits 32 and 64 bits; any other value itself
(``tests/kernels/test_fast_launch.py`` checks it against Triton's own binder). It falls back to
Triton's path wherever Triton would do more than launch: an interpreted or emulated kernel (no
``JITFunction``), a grid given as a function, pre-run hooks, a stage-inspection hook (the ablation
rewrites the compiled code), debug mode or instrumentation. ``set_fast_launch(False)``, or
``REPRO_FAST_LAUNCH=0`` in the environment, turns it off.

``bind`` goes one step further for a caller that launches the same kernel on the same weight
again and again (the dispatcher, per layer): from one launch it keeps the whole argument list
with the input and output left open (``BoundLaunch``), so that the next call skips the key too.
The caller keys it; the switch above turns it off as well.

A grid may be a ``ClusterGrid``: its programs run in thread-block clusters along x (the sparse
``wgmma`` form's K splits of a tile meet in the cluster's shared memory). Triton 3.6 launches a
kernel compiled for one CTA (``num_ctas=1``) in clusters when its launcher is handed the packed
metadata with ``num_ctas`` set to the cluster size: it multiplies the grid's x by it and sets the
cluster dimension, and ``program_id(0)`` then counts CTAs (``bench/cluster_probe.py`` checked this
on an H100). Triton's own launch cannot do that, so a cluster launch always goes through the
compiled kernel's launcher, whatever the switch says.

An argument may be a Gluon ``TensorDescriptor`` (the shared-x form's x, ``gluon_shared_x.py``): Triton
compiles for its element type, box and layout, and its launcher encodes the TMA tensor map from
it on every call, so the key keeps those and a bound launch makes it again around each call's x.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from triton import knobs
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from triton.knobs import HookChain
from triton.runtime.driver import driver
from triton.runtime.jit import JITFunction

_state = {"enabled": os.environ.get("REPRO_FAST_LAUNCH", "1") != "0"}
_plans: dict[tuple, _Plan] = {}


class ClusterGrid(tuple):
    """A launch grid ``(x, y, z)`` in programs whose runs of ``cluster`` along x are one thread-block
    cluster each."""

    def __new__(cls, grid: tuple, cluster: int):
        if cluster not in (2, 4, 8):
            raise ValueError(f"clusters of {cluster} programs: use 2, 4 or 8 (the portable sizes above one)")
        if len(grid) != 3 or grid[0] % cluster:
            raise ValueError(f"grid {tuple(grid)} for clusters of {cluster}: three axes, x a multiple of the cluster")
        self = super().__new__(cls, grid)
        self.cluster = cluster
        return self

    def __repr__(self) -> str:
        return f"ClusterGrid({tuple(self)}, cluster={self.cluster})"


def cluster_size(grid) -> int:
    """Programs per cluster of a launch on ``grid`` (1: no clusters)."""
    return getattr(grid, "cluster", 1)


def cluster_metadata(packed: tuple, cluster: int) -> tuple:
    """Triton's packed launch metadata ``(num_warps, num_ctas, shared)`` of a kernel compiled for
    one CTA, with ``num_ctas`` set to the cluster size (see the module docstring)."""
    num_warps, num_ctas, shared = packed
    if num_ctas != 1:
        raise ValueError(f"the kernel was compiled for num_ctas={num_ctas}; launches in clusters need 1")
    if cluster not in (1, 2, 4, 8):
        raise ValueError(f"cluster of {cluster} programs: the portable sizes are 1, 2, 4 and 8")
    return (num_warps, cluster, shared)


def set_fast_launch(enabled: bool) -> None:
    """Whether ``launch`` reuses compiled kernels (on) or always goes through Triton's path."""
    _state["enabled"] = bool(enabled)


@contextmanager
def turned_off():
    """Every launch inside the block through Triton's own path; afterwards the setting before it
    (which ``REPRO_FAST_LAUNCH=0`` may have made off already)."""
    before = _state["enabled"]
    _state["enabled"] = False
    try:
        yield
    finally:
        _state["enabled"] = before


@dataclass(frozen=True)
class _Plan:
    fn: JITFunction
    kernel: object  # triton.compiler.CompiledKernel
    tail: tuple  # the values Triton binds to the parameters after the positional arguments


def arg_key(value) -> tuple:
    """What of one runtime argument the compiled kernel depends on (at least what Triton's
    specialization keeps of it)."""
    kind = type(value)
    if kind is int:  # 1 is compiled in as a constant; others as i32, i64 or u64, divisible by 16 or not
        return 1 if value == 1 else (value % 16 == 0, -_I32 <= value < _I32, -_I64 <= value < _I64)
    if kind is torch.Tensor or isinstance(value, torch.Tensor):
        return (value.dtype, value.data_ptr() % 16 == 0)
    if kind is TensorDescriptor:  # compiled for its element type, box and shared layout; encoded per call
        return (kind, value.base.dtype, tuple(value.block_shape), str(value.layout), value.padding)
    return (kind, value)  # bool, float, None, ...: the value itself


_I32, _I64 = 2**31, 2**63


def active() -> bool:
    """Whether a kept compiled kernel may be launched now: on, and nothing set that makes Triton
    compile or launch otherwise (debug mode, a stage-inspection hook, instrumentation)."""
    if not _state["enabled"]:
        return False
    runtime = knobs.runtime
    return not (
        runtime.debug or runtime.add_stages_inspection_hook is not None or knobs.compilation.instrumentation_mode
    )


def _eligible(fn, grid) -> bool:
    if callable(grid) or not isinstance(fn, JITFunction) or fn.pre_run_hooks:
        return False
    return active()


def _tail(fn, args: tuple, options: dict) -> tuple | None:
    """The values Triton's binder gives the parameters past ``args``: from ``options``, else the
    parameter's default (None where one has neither: then Triton's path raises, not ours)."""
    tail = []
    for param in fn.params[len(args) :]:
        if param.name in options:
            tail.append(options[param.name])
        elif param.has_default:
            tail.append(param.default)
        else:
            return None
    return tuple(tail)


def _device_and_stream():
    device = driver.active.get_current_device()
    return device, driver.active.get_current_stream(device)


def launch(fn, grid: tuple, args: tuple, options: dict, warmup: bool = False) -> _Plan | None:
    """``fn[grid](*args, **options)``; after the first call with a given specialization, the
    compiled kernel's launcher straight away (see the module docstring). Returns the plan it
    launched or kept (for ``bind``), None where the call went Triton's way only. ``warmup=True``
    only compiles (``fn.warmup``, usable under ``triton.AsyncCompileMode``)."""
    if warmup:
        fn.warmup(*args, grid=grid, **options)
        return None
    if cluster_size(grid) > 1 and isinstance(fn, JITFunction):
        return _launch_in_clusters(fn, grid, args, options)
    if not _eligible(fn, grid):
        fn[grid](*args, **options)
        return None
    device, stream = _device_and_stream()
    key = (fn, device, tuple(options.items()), *map(arg_key, args))
    plan = _plans.get(key)
    if plan is None:
        kernel = fn.run(*args, grid=grid, warmup=False, **options)  # compiles if needed, launches
        if hasattr(kernel, "result"):  # a kernel that was compiled asynchronously
            kernel = kernel.result()
        tail = _tail(fn, args, options)
        if kernel is not None and tail is not None:
            plan = _plans[key] = _Plan(fn, kernel, tail)
        return plan
    _run(plan.kernel, grid, stream, (*args, *plan.tail))
    return plan


def _launch_in_clusters(fn, grid: ClusterGrid, args: tuple, options: dict) -> _Plan | None:
    """``launch`` on a ``ClusterGrid``: compiled once (``warmup``), then always through the
    launcher with the cluster in its metadata."""
    device, stream = _device_and_stream()
    key = (fn, device, grid.cluster, tuple(options.items()), *map(arg_key, args))
    plan = _plans.get(key)
    if plan is None:
        kernel = fn.warmup(*args, grid=grid, **options)
        if hasattr(kernel, "result"):  # a kernel that was compiled asynchronously
            kernel = kernel.result()
        kernel._init_handles()  # loaded onto the device (Triton's own launch does it on its first run)
        tail = _tail(fn, args, options)
        if tail is None:
            raise TypeError(f"{fn.__name__}: a parameter has neither a value in the options nor a default")
        plan = _plans[key] = _Plan(fn, kernel, tail)
    _run(plan.kernel, grid, stream, (*args, *plan.tail))
    return plan


def _run(kernel, grid: tuple, stream, full) -> None:
    """The compiled kernel's launcher, handed what ``JITFunction.run`` hands it; where no launch
    hook is set, no hooks and no metadata for them (Triton builds the metadata and has its
    launcher call its empty chains of hooks on every launch). A ``ClusterGrid`` goes to the
    launcher as clusters (whose grid counts them along x) and the cluster in the metadata."""
    size, cluster = len(grid), cluster_size(grid)
    enter, leave = knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook
    if hooks_idle(enter, leave):
        metadata = enter = leave = None
    else:
        metadata = kernel.launch_metadata(grid, stream, *full)  # for the hooks (profilers), as Triton does
    packed = kernel.packed_metadata if cluster == 1 else cluster_metadata(kernel.packed_metadata, cluster)
    kernel.run(
        grid[0] // cluster,
        grid[1] if size > 1 else 1,
        grid[2] if size > 2 else 1,
        stream,
        kernel.function,
        packed,
        metadata,
        enter,
        leave,
        *full,
    )


def hooks_idle(*hooks) -> bool:
    """Whether none of ``hooks`` would call anything: each None, or Triton's chain of hooks with
    none in it."""
    return all(hook is None or (type(hook) is HookChain and not hook.calls) for hook in hooks)


class BoundLaunch:
    """One launch with every argument fixed but the input and the output, which come per call.

    A layer in a decode loop launches the same kernel on the same weight, with the same shapes,
    token after token; only the activations and the freshly allocated output differ. ``bind``
    records, from one launch, where those two stand in the argument list; calling the result
    with a new input and output hands the launcher that list with them put in, skipping even
    ``launch``'s key. The caller must key it on everything else the arguments depend on (the
    number of tokens, the input's row stride and alignment, the bias), so that the new input
    has the old one's specialization; the launch uses the current stream, as ``launch`` does.

    A TMA descriptor of x goes with the new x as its base (the launcher reads the base's address
    and the descriptor's own shape and strides, which the key fixes).

    Pointers go to the launcher as addresses. Handed a tensor, Triton's launcher asks it for its
    address and has the driver check that address (``cuPointerGetAttribute``) on every launch,
    seven times for our fragment-order kernels; handed an int, it takes it as the address. The
    fixed tensors are resolved once here and kept alive, so a weight or workspace cannot be
    freed under the launch; x and the output once per call, by a caller that has checked they
    are on the weight's device. A launch hook (a profiler) is handed tensors as Triton hands
    them, so while one is set ``ready`` says no.
    """

    __slots__ = ("fn", "kernel", "grid", "device", "_args", "_kept", "_x_at", "_out_at", "_desc_at",
                 "_current_device", "_current_stream")

    def __init__(self, plan: _Plan, grid: tuple, args: list, x_at: tuple, out_at: tuple, desc_at: tuple = ()):
        self.fn, self.kernel, self.grid, self._x_at, self._out_at = plan.fn, plan.kernel, grid, x_at, out_at
        self._desc_at = desc_at  # TMA descriptors of x: made again around each call's x
        per_call = set(x_at) | set(out_at)
        self._kept = tuple(a for i, a in enumerate(args) if i not in per_call and isinstance(a, torch.Tensor))
        self._args = [None if i in per_call else _address(a) for i, a in enumerate(args)]
        active_driver = driver.active
        self._current_device, self._current_stream = active_driver.get_current_device, active_driver.get_current_stream
        self.device = self._current_device()

    def ready(self) -> bool:
        """Whether it may launch now: fast launch on (``active``), no pre-run hook added to the
        kernel since, no launch hook set, and the device it was bound on current (the compiled
        kernel is loaded there)."""
        runtime = knobs.runtime
        return (
            active()
            and not self.fn.pre_run_hooks
            and hooks_idle(runtime.launch_enter_hook, runtime.launch_exit_hook)
            and self._current_device() == self.device
        )

    def __call__(self, x: torch.Tensor, out: torch.Tensor) -> None:
        args = self._args.copy()
        x_address, out_address = x.data_ptr(), out.data_ptr()
        for i in self._x_at:
            args[i] = x_address
        for i in self._out_at:
            args[i] = out_address
        for i in self._desc_at:
            args[i] = replace(args[i], base=x)
        _run(self.kernel, self.grid, self._current_stream(self.device), args)


def _address(value):
    return value.data_ptr() if isinstance(value, torch.Tensor) else value


def bind(plan: _Plan | None, grid: tuple, args: tuple, x: torch.Tensor, out: torch.Tensor) -> BoundLaunch | None:
    """The launch ``launch(fn, grid, args, ...)`` just made (``plan`` is what it returned), with
    the positions holding ``x`` and ``out`` left open; None where there is no plan, or where
    ``x`` or ``out`` is not among the arguments (the launch site copied it first)."""
    if plan is None:  # (``launch`` keeps no plan for a grid given as a function)
        return None
    x_at = tuple(i for i, a in enumerate(args) if a is x)
    out_at = tuple(i for i, a in enumerate(args) if a is out)
    desc_at = tuple(i for i, a in enumerate(args) if isinstance(a, TensorDescriptor) and a.base is x)
    if not x_at or not out_at:
        return None
    grid = grid if isinstance(grid, ClusterGrid) else tuple(grid)
    return BoundLaunch(plan, grid, [*args, *plan.tail], x_at, out_at, desc_at)
