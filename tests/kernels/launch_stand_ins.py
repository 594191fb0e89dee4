"""Stand-ins for Triton's compiled kernels and the GPU driver, so that launch paths run on a CPU.

``StandInLaunches`` (the fixture ``launches`` in ``conftest.py``) sends every launch
``fast_launch`` makes to them: Triton's own path (``JITFunction.run``) records its call and
"compiles" one ``CompiledStandIn`` per specialization; a compiled kernel's launcher records what
it is handed; the driver reports a current device (settable) and a stream named after it.
"""

from types import SimpleNamespace

import torch
from triton import knobs
from triton.backends.compiler import BaseBackend
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from triton.runtime.jit import JITFunction, native_specialize_impl

from repro.kernels import fast_launch


class CompiledStandIn:
    """Stands in for a ``CompiledKernel``: records what its launcher is called with (in its own
    list, and in ``log`` if given)."""

    function, packed_metadata = "function", (4, 1, 0)  # num_warps, num_ctas, shared bytes

    def __init__(self, log=None, specialization=None):
        self.launches = []
        self.log, self.specialization = log, specialization
        self.loaded = False

    def _init_handles(self):  # loads the kernel onto the device
        self.loaded = True

    def run(self, *launch_args):
        self.launches.append(launch_args)
        if self.log is not None:
            self.log.append(("launcher", (self, launch_args)))

    def launch_metadata(self, grid, stream, *args):
        return ("metadata", grid, stream, args)


class FakeDriver:
    """``driver.active`` as ``fast_launch`` uses it."""

    def __init__(self):
        self.device = 0

    def get_current_device(self):
        return self.device

    def get_current_stream(self, device):
        return f"stream {device}"


class _CompiledFormOfInterpreted(JITFunction):
    """An interpreted kernel's compiled form, hashed by identity: Triton's own hash would walk
    the helpers it calls, which under the interpreter have none."""

    __hash__ = object.__hash__


class StandInLaunches:
    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch
        self.driver = FakeDriver()
        self.through_triton = []  # (fn, args, options) of each call that went Triton's way
        self.compiled = {}  # specialization -> CompiledStandIn
        self.log = []  # every launch in order: ("triton", (grid, args, options)) or ("launcher", its arguments)
        self._jits = {}
        monkeypatch.setattr(fast_launch, "driver", SimpleNamespace(active=self.driver))
        fast_launch._plans.clear()
        fast_launch.set_fast_launch(True)

    def specialization(self, jit, args, options) -> tuple:
        """What Triton compiles apart: the kernel, the device, the options, each argument's
        specialization."""
        return (jit, self.driver.device, tuple(options.items()),
                *(native_specialize_impl(BaseBackend, a, False, True, True) for a in args))

    def jit(self, fn) -> JITFunction:
        """``fn`` as a ``JITFunction`` (the compiled form of an interpreted kernel) whose Triton
        path is the stand-in's."""
        if fn in self._jits:
            return self._jits[fn]
        jit = fn if isinstance(fn, JITFunction) else _CompiledFormOfInterpreted(fn.fn, **fn.kwargs)

        def run(*args, grid, warmup, **options):
            key = self.specialization(jit, args, options)
            self.through_triton.append((jit, args, options))
            self.log.append(("triton", (grid if callable(grid) else tuple(grid), args, options)))
            return self.compiled.setdefault(key, CompiledStandIn(self.log, key))

        self.monkeypatch.setattr(jit, "run", run)
        self._jits[fn] = jit
        return jit



def assert_launched_as_built(world: StandInLaunches, fn, grid, args, options, given, addresses=True) -> None:
    """The last launch, whichever way it went, got what the launch site built for a call with the
    tensors ``given``: Triton's path the same grid, arguments and options; a launcher the grid,
    the current stream, the compiled kernel's handles, the launch hooks and the arguments
    Triton's binder would bind (a pointer as its tensor, or where ``addresses`` also as the
    tensor's address)."""
    way, launch = world.log[-1]
    if way == "triton":
        assert launch[0] == tuple(grid) and same_arguments(launch[1], args, given) and launch[2] == options
        return
    kernel, (g0, g1, g2, stream, function, packed, metadata, enter, leave, *bound) = launch
    jit = world.jit(fn)
    assert kernel.specialization == world.specialization(jit, args, options), "a kernel compiled for other arguments"
    cluster = fast_launch.cluster_size(grid)  # a launcher counts clusters along x
    assert (g0 * cluster, g1, g2) == (*grid, *(1,) * (3 - len(grid)))
    assert stream == f"stream {world.driver.device}" and (function, packed) == ("function", (4, cluster, 0))
    assert_hooks_as_set(metadata, enter, leave, ("metadata", tuple(grid), stream, tuple(bound)))
    assert same_arguments(bound, (*args, *fast_launch._tail(jit, args, options)), given, addresses)


def same_arguments(ours, theirs, given=(), addresses=True) -> bool:
    """Argument lists equal one by one. A tensor must be the same memory seen the same way (the
    very tensor, or a view with its address, shape, strides and dtype), or (``addresses``: what a
    bound launch hands the launcher) its address; except a tensor the launch site made itself
    (not among ``given``, the call's own tensors: x copied to align it, each build making its
    own), which must hold the same values with the same strides and address modulo 16."""
    return len(ours) == len(theirs) and all(_same_argument(a, b, given, addresses) for a, b in zip(ours, theirs))


def _same_argument(a, b, given, addresses) -> bool:
    if isinstance(a, TensorDescriptor) or isinstance(b, TensorDescriptor):
        # the same fields; of the base, the launcher reads the address (a bound launch's may be the
        # caller's x of any shape, around the same rows)
        same_base = a.base.data_ptr() == b.base.data_ptr() and a.base.dtype == b.base.dtype
        return type(a) is type(b) and (same_base or _same_argument(a.base, b.base, given, False)) and all(
            getattr(a, f) == getattr(b, f) for f in ("shape", "strides", "block_shape", "layout", "padding"))
    if not (isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor)):
        return a == b
    if a is b or _same_view(a, b):
        return True
    if addresses and type(a) is int and isinstance(b, torch.Tensor):
        return a == b.data_ptr()
    made_by_the_site = not any(_same_view(b, t) for t in given)
    return (
        made_by_the_site and isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.stride() == b.stride()
        and a.data_ptr() % 16 == b.data_ptr() % 16 and torch.equal(a, b)
    )


def _same_view(a, b) -> bool:
    return (
        isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.data_ptr() == b.data_ptr()
        and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype
    )


def assert_hooks_as_set(metadata, enter, leave, built) -> None:
    """What a launcher got for the launch hooks: Triton's hooks and the metadata the kernel
    built (``built``) where a hook is set; where none is, no hooks and no metadata."""
    hooks = (knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook)
    if fast_launch.hooks_idle(*hooks):
        assert (metadata, enter, leave) == (None, None, None)
    else:
        assert metadata == built and enter is hooks[0] and leave is hooks[1]
