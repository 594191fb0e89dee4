"""Launch a Gluon or Triton kernel on the CPU: compile it for sm_90a exactly as its launcher would,
then run the PTX in ``ptx_emulator``.

:class:`EmulatedKernel` stands in for the ``@gluon.jit`` or ``@triton.jit`` function
(``kernel[grid](*args, **opts)``, options ``num_warps`` and ``num_stages``),
so the real Python launcher around it (grids, strides, argument order) is exercised unchanged. The
compile uses the specialization Triton's launcher would pick for these arguments: integers equal
to 1 become constants (unless ``do_not_specialize``), integers and data pointers divisible by 16
are marked so. CPU tensors are mapped into the emulator's memory in place, so what the kernel
stores lands in them. A Gluon host ``TensorDescriptor`` is passed as Triton's launcher passes it
(``make_tensordesc_arg`` of its NVIDIA driver): the tensor map (here a ``ptx_emulator.TensorMap``
of the mapped tensor), then each entry of its shape (i32) and of its strides (i64, elements),
the parameters the compiler gives such an argument.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
from ptx_emulator import Memory, MmaModel, SharedTraffic, TensorMap, run_grid
from triton.backends.compiler import BaseBackend
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from triton.runtime.jit import JITFunction, native_specialize_impl

POINTER_TYPES = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32", torch.int32: "*i32"}


_COMPILER: ProcessPoolExecutor | None = None
_COMPILED: dict[tuple, tuple[str, int]] = {}  # (kernel, specialization) -> (PTX, shared bytes)


def _compile_in_child(module: str, name: str, signature, constexprs, attrs, options: dict, arch: int):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    fn = getattr(importlib.import_module(module), name)
    source = GluonASTSource if fn.is_gluon() else triton.compiler.ASTSource
    src = source(fn, signature, constexprs=constexprs, attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    return kernel.asm["ptx"], kernel.metadata.shared


def _compiler() -> ProcessPoolExecutor:
    """One child process that compiles, started without ``TRITON_INTERPRET``: the suite sets it on
    CPU, and under it Triton's own jitted helpers (``gl.sum``'s combine) cannot be compiled."""
    global _COMPILER
    if _COMPILER is None:
        saved = os.environ.pop("TRITON_INTERPRET", None)
        try:
            _COMPILER = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            _COMPILER.submit(int).result()  # start the worker now, while the variable is unset
        finally:
            if saved is not None:
                os.environ["TRITON_INTERPRET"] = saved
    return _COMPILER


def _storage_bytes(t: torch.Tensor) -> np.ndarray:
    """The tensor's whole storage as a uint8 numpy array sharing its memory."""
    return torch.empty(0, dtype=torch.uint8).set_(t.untyped_storage()).numpy()


def _byte_offset(t: torch.Tensor) -> int:
    return t.data_ptr() - t.untyped_storage().data_ptr()


def tensordesc_signature(desc: TensorDescriptor) -> str:
    """Triton's type of a host tensor descriptor argument, as its launcher specializes it."""
    return f"tensordesc<{POINTER_TYPES[desc.base.dtype][1:]}[{', '.join(map(str, desc.block_shape))}],{desc.layout}>"


def tensor_map(desc: TensorDescriptor, address: int) -> TensorMap:
    """The tensor map Triton's launcher encodes for ``desc`` (whose tensor is at ``address``):
    Triton's dimensions are outermost first, a TensorMap's innermost first. What the emulator does
    not model is refused: NaN padding, fp32 rounded to tf32, fp4 padding, a transposed layout."""
    layout = desc.layout
    if desc.padding != "zero" or getattr(desc, "round_f32_to_tf32", False) or layout.fp4_padded or layout.transposed:
        raise NotImplementedError(f"tensor descriptor not emulated (only zero padding, untransposed): {desc}")
    elem = desc.base.element_size()
    return TensorMap(address, tuple(reversed(desc.shape)), tuple(int(s) * elem for s in reversed(desc.strides[:-1])),
                     tuple(reversed(desc.block_shape)), elem, layout.swizzle_byte_width)


class EmulatedKernel:
    """A drop-in for a Gluon or Triton kernel object that compiles for ``arch`` and emulates each launch."""

    def __init__(self, fn, mma: MmaModel | None = None, arch: int = 90, reverse: bool = False,
                 traffic: SharedTraffic | None = None, cluster: int = 1):
        if not hasattr(fn, "params"):  # a @triton.jit kernel under TRITON_INTERPRET: its compiled form
            fn = JITFunction(fn.fn, **fn.kwargs)
        self.fn, self.mma, self.arch, self.reverse = fn, mma, arch, reverse  # reverse: programs last to first
        self.traffic = traffic  # shared-memory wavefronts of every launch, if given
        # > 1: launched in clusters of that many programs along x (the grid counts programs); a
        # launch on a fast_launch.ClusterGrid takes its own
        self.cluster = cluster
        self.warmups: list[dict] = []  # what each compile-only call compiled
        self.launches: list[dict] = []  # what each launch ran, for tests to inspect

    def __getitem__(self, grid):
        if callable(grid):
            raise NotImplementedError("EmulatedKernel takes a grid tuple, not a function of the meta-parameters")
        return lambda *args, **kwargs: self.launch(grid if hasattr(grid, "cluster") else tuple(grid), args, kwargs)

    def specialize(self, values: dict) -> tuple[dict, dict, dict, list]:
        """(signature, constexprs, attrs, runtime arguments) as Triton's launcher would build them."""
        signature, constexprs, attrs, runtime = {}, {}, {}, []
        for i, p in enumerate(self.fn.params):
            value = values[p.name]
            if p.is_constexpr:
                signature[p.name], constexprs[p.name] = "constexpr", value
                continue
            if isinstance(value, TensorDescriptor):
                signature[p.name] = tensordesc_signature(value)
                runtime.append(value)
                continue
            if isinstance(value, torch.Tensor):
                # BaseBackend.get_tensor_specialization: "D" when the address is 16-byte aligned
                ty, spec = POINTER_TYPES[value.dtype], "D" if _byte_offset(value) % 16 == 0 else ""
            else:
                ty, spec = native_specialize_impl(BaseBackend, value, False, not p.do_not_specialize, True)
            if ty == "constexpr":
                signature[p.name], constexprs[p.name] = "constexpr", spec
                continue
            signature[p.name] = ty
            if spec == "D":
                attrs[(i,)] = [["tt.divisibility", 16]]
            runtime.append(value)
        return signature, constexprs, attrs, runtime

    def compile(self, signature: dict, constexprs: dict, attrs: dict, options: dict) -> tuple[str, int]:
        job = (self.fn.fn.__module__, self.fn.fn.__name__, signature, constexprs, attrs, options, self.arch)
        key = (*job[:2], tuple(signature.items()), tuple(constexprs.items()), tuple(sorted(attrs)),
               tuple(sorted(options.items())), self.arch)
        if key not in _COMPILED:
            _COMPILED[key] = _compiler().submit(_compile_in_child, *job).result()
        return _COMPILED[key]

    def warmup(self, *args, grid, **kwargs) -> None:
        """Compile only, like ``JITFunction.warmup`` (the benchmark precompiles with it)."""
        num_warps, constexprs, attrs = self._compile_for(args, kwargs)[:3]
        self.warmups.append(dict(num_warps=num_warps, constexprs=constexprs, divisible=self._divisible(attrs)))

    def _divisible(self, attrs: dict) -> list[str]:
        """The arguments specialized as multiples of 16 (part of what a compile is keyed on)."""
        return [self.fn.params[i].name for (i,) in attrs]

    def _compile_for(self, args: tuple, kwargs: dict):
        """(num_warps, constexprs, attrs, runtime arguments, PTX, shared bytes) for one call."""
        kwargs = dict(kwargs)
        options = {"num_warps": kwargs.pop("num_warps", 4)}
        if "num_stages" in kwargs:  # software pipelining of Triton's loops
            options["num_stages"] = kwargs.pop("num_stages")
        values = dict(zip((p.name for p in self.fn.params), args)) | kwargs
        signature, constexprs, attrs, runtime = self.specialize(values)
        return options["num_warps"], constexprs, attrs, runtime, *self.compile(signature, constexprs, attrs, options)

    def launch(self, grid: tuple, args: tuple, kwargs: dict) -> None:
        num_warps, constexprs, attrs, runtime, ptx, shared = self._compile_for(args, kwargs)
        memory, mapped, addresses = Memory("global"), {}, []

        def address(tensor: torch.Tensor) -> int:
            if tensor.device.type != "cpu":
                raise ValueError(f"the emulator runs on CPU tensors, got one on {tensor.device}")
            storage = tensor.untyped_storage().data_ptr()
            if storage not in mapped:  # aliases (bias_ptr = out) share one buffer
                mapped[storage] = memory.add(_storage_bytes(tensor), f"arg{len(mapped)}")
            return mapped[storage] + _byte_offset(tensor)

        for value in runtime:
            if isinstance(value, TensorDescriptor):  # make_tensordesc_arg: the map, the shape, the strides
                addresses += [tensor_map(value, address(value.base)), *map(int, value.shape), *map(int, value.strides)]
            elif isinstance(value, torch.Tensor):
                addresses.append(address(value))
            else:
                addresses.append(int(value))
        divisible = self._divisible(attrs)
        self.launches.append(dict(grid=grid, num_warps=num_warps, constexprs=constexprs, divisible=divisible, ptx=ptx))
        run_grid(ptx, grid, 32 * num_warps, addresses, memory, shared, self.mma, self.reverse, self.traffic,
                 getattr(grid, "cluster", self.cluster))
