"""cuSPARSELt called directly, its plans kept: the library behind torch's semi-structured sparsity,
without the set-up torch repeats on every call.

``torch._cslt_sparse_mm`` describes the three matrices, selects an algorithm, initializes a plan,
allocates a workspace, multiplies and destroys it all again on each call: 0.5-2 ms of host time
per product in our runs (``bench/results``, the host column), more than the GPU work it sets up at
every shape measured. The library separates the two itself. The 2:4 operand is compressed once,
a plan is made once per product shape, and a product is then a single ``cusparseLtMatmul`` call.
This module does exactly that through ``ctypes``: the library ships with torch's CUDA wheels
(``nvidia-cusparselt-*``), so nothing is compiled. The dispatcher offers it as the method
``cusparselt`` next to torch's own path (``torch_semi_structured``), which stays the benchmark's
baseline.

Layout. ``y[M, N] = x[M, K] · W[N, K]ᵀ`` is computed as ``D = A · op(B)`` with

* ``A = W``: structured (2:4 along K), ``N × K`` row-major, compressed once;
* ``B = x``: stored ``M × K`` row-major, used transposed (``K × M``);
* ``D``: ``N × M`` column-major with leading dimension ``N``, which are exactly the bytes of
  ``y`` in row-major ``[M, N]``, so no transpose is ever copied.

cuSPARSELt wants every dimension of a 16-bit dense operand to be a multiple of 8 (torch pads to the
same); a token count that is not is padded with zero rows in a copy of x, and the output is the
first M rows of the padded product (a view, contiguous). N and K must be multiples of 16.

The opaque structures are 512 bytes in cuSPARSELt 0.8-0.10 (torch 2.11's wheels carry 0.8.0) and
were 1024 before; every one is given 1024 bytes on a 16-byte boundary. Status codes, enum values and
signatures follow ``cusparseLt.h`` of those versions.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

OPAQUE_BYTES = 1024  # cusparseLt*_t: 512 bytes from 0.7 on, 1024 before; the larger fits both
MAX_PLANS = 64  # per weight: a decode loop's batch sizes plus a prefill's lengths
DENSE_MULTIPLE = 8  # rows and columns of a 16-bit dense operand (cuSPARSELt's rule, torch pads the same)
SPARSE_MULTIPLE = 16  # rows and columns of the structured operand

# cusparseLt.h and cusparse.h (the values are part of the ABI)
ORDER_COL, ORDER_ROW = 1, 2
OP_NON_TRANSPOSE, OP_TRANSPOSE = 0, 1
SPARSITY_50_PERCENT = 0
COMPUTE_32F = 2  # cusparseComputeType: 32I, 16F, 32F
ALG_DEFAULT = 0
ALG_CONFIG_ID, ALG_CONFIG_MAX_ID = 0, 1  # cusparseLtMatmulAlgAttribute_t
MATMUL_BIAS_POINTER = 8  # cusparseLtMatmulDescAttribute_t
CUDA_TYPES = {torch.float16: 2, torch.bfloat16: 14}  # cudaDataType: CUDA_R_16F, CUDA_R_16BF

_P = ctypes.c_void_p
_SIGNATURES = {  # name: argument types (every function returns a cusparseStatus_t)
    "cusparseLtInit": [_P],
    "cusparseLtGetVersion": [_P, ctypes.POINTER(ctypes.c_int)],
    "cusparseLtStructuredDescriptorInit": [
        _P, _P, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint32, ctypes.c_int, ctypes.c_int,
        ctypes.c_int,
    ],
    "cusparseLtDenseDescriptorInit": [
        _P, _P, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint32, ctypes.c_int, ctypes.c_int,
    ],
    "cusparseLtMatDescriptorDestroy": [_P],
    "cusparseLtMatmulDescriptorInit": [_P, _P, ctypes.c_int, ctypes.c_int, _P, _P, _P, _P, ctypes.c_int],
    "cusparseLtMatmulDescSetAttribute": [_P, _P, ctypes.c_int, _P, ctypes.c_size_t],
    "cusparseLtMatmulAlgSelectionInit": [_P, _P, _P, ctypes.c_int],
    "cusparseLtMatmulAlgSetAttribute": [_P, _P, ctypes.c_int, _P, ctypes.c_size_t],
    "cusparseLtMatmulAlgGetAttribute": [_P, _P, ctypes.c_int, _P, ctypes.c_size_t],
    "cusparseLtMatmulAlgSelectionDestroy": [_P],
    "cusparseLtMatmulPlanInit": [_P, _P, _P, _P],
    "cusparseLtMatmulGetWorkspace": [_P, _P, ctypes.POINTER(ctypes.c_size_t)],
    "cusparseLtMatmulPlanDestroy": [_P],
    "cusparseLtSpMMACompressedSize2": [_P, _P, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)],
    "cusparseLtSpMMACompress2": [_P, _P, ctypes.c_int, ctypes.c_int, _P, _P, _P, _P],
    "cusparseLtMatmul": [_P, _P, _P, _P, _P, _P, _P, _P, _P, _P, ctypes.c_int32],
}


class CusparseLtError(RuntimeError):
    """A cuSPARSELt call returned an error status (the message names the call and the status)."""


class AlgorithmRefused(CusparseLtError):
    """The library refused an algorithm id for a product (it offers fewer for this shape)."""


@dataclass(frozen=True)
class CusparseLtConfig:
    """Which of cuSPARSELt's kernels a plan runs (``CUSPARSELT_MATMUL_ALG_CONFIG_ID``)."""

    alg_id: int = 0

    def label(self) -> str:
        return f"alg{self.alg_id}"

    def as_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- the library


def mapped_library(maps: str) -> str | None:
    """The path of the cuSPARSELt this process has already loaded (torch links it), from the text
    of ``/proc/self/maps``; None where none is mapped."""
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)  # address, perms, offset, device, inode[, path]
        if len(fields) == 6 and "libcusparseLt.so" in Path(fields[5]).name:
            return fields[5]
    return None


def library_candidates() -> list[str]:
    """Where to look, in order: ``$REPRO_CUSPARSELT_LIB``, the copy torch already mapped, the
    ``nvidia`` wheels' folders on ``sys.path``, then the loader's own search."""
    found = [os.environ["REPRO_CUSPARSELT_LIB"]] if os.environ.get("REPRO_CUSPARSELT_LIB") else []
    try:
        mapped = mapped_library(Path("/proc/self/maps").read_text())
    except OSError:
        mapped = None
    if mapped:
        found.append(mapped)
    for root in sys.path:
        found += sorted(glob.glob(os.path.join(root, "nvidia", "*", "lib", "libcusparseLt.so*")))
    return [*dict.fromkeys(found), "libcusparseLt.so.0"]


class Library:
    """The loaded library, each function given its signature; ``call`` raises on an error status."""

    def __init__(self, lib, path: str = ""):
        self._lib = lib
        self.path = path  # where it was loaded from (the run's info records it)
        for name, argtypes in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes = argtypes
            fn.restype = ctypes.c_int
        lib.cusparseLtGetErrorString.argtypes = [ctypes.c_int]
        lib.cusparseLtGetErrorString.restype = ctypes.c_char_p

    def call(self, name: str, *args) -> None:
        status = getattr(self._lib, name)(*args)
        if status != 0:
            text = self._lib.cusparseLtGetErrorString(status)
            text = text.decode() if isinstance(text, bytes) else str(text)
            raise CusparseLtError(f"{name} returned status {status} ({text})")


_state: dict = {"library": None, "handles": {}, "lock": threading.Lock()}


def load_library() -> Library:
    """The process's cuSPARSELt (``library_candidates``); raises ``CusparseLtError`` naming every
    place tried when none loads."""
    if _state["library"] is None:
        tried = []
        for path in library_candidates():
            try:
                _state["library"] = Library(ctypes.CDLL(path), path)
                break
            except (OSError, AttributeError) as exc:
                tried.append(f"{path}: {exc}")
        else:
            raise CusparseLtError("cuSPARSELt could not be loaded; tried " + "; ".join(tried))
    return _state["library"]


def use_library(library: Library | None) -> None:
    """Replace the library for this process (tests hand in a stand-in); None loads it again."""
    _state["library"] = library
    _state["handles"] = {}


class Opaque:
    """One of cuSPARSELt's opaque structures: ``OPAQUE_BYTES`` on a 16-byte boundary, kept alive
    as long as this object."""

    def __init__(self):
        self._buffer = (ctypes.c_uint8 * (OPAQUE_BYTES + 16))()
        address = ctypes.addressof(self._buffer)
        self.ptr = ctypes.c_void_p((address + 15) & ~15)


# The three places the route meets CUDA itself, apart so that the tests can run it on the CPU
# against a stand-in library (tests/kernels/test_cusparselt.py)


def _device_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _stream(device: torch.device) -> int:
    """The address of the current CUDA stream of ``device`` (what cuSPARSELt queues on)."""
    return torch.cuda.current_stream(device).cuda_stream


def _check_device(t: torch.Tensor, what: str) -> None:
    if not t.is_cuda:
        raise ValueError(f"cuSPARSELt runs on CUDA tensors; the {what} is on {t.device}")


def handle(device: torch.device) -> Opaque:
    """The process's cuSPARSELt handle for one GPU (made on first use, with that GPU current)."""
    index = _device_index(device)
    with _state["lock"]:
        if index not in _state["handles"]:
            h = Opaque()
            with torch.cuda.device(index) if torch.cuda.is_available() else contextlib.nullcontext():
                load_library().call("cusparseLtInit", h.ptr)
            _state["handles"][index] = h
    return _state["handles"][index]


def library_version(device: torch.device) -> int:
    """cuSPARSELt's version number as the library reports it (e.g. 800 for 0.8.0)."""
    version = ctypes.c_int()
    load_library().call("cusparseLtGetVersion", handle(device).ptr, ctypes.byref(version))
    return version.value


# ----------------------------------------------------------------------------- weights and plans


def check_weight(dense: torch.Tensor) -> None:
    """What cuSPARSELt's structured operand needs, each with a clear error."""
    _check_device(dense, "weight")
    if dense.dtype not in CUDA_TYPES:
        allowed = ", ".join(str(t) for t in CUDA_TYPES)
        raise ValueError(f"cuSPARSELt route: weight dtype {dense.dtype} is not supported (allowed: {allowed})")
    if dense.dim() != 2 or any(d % SPARSE_MULTIPLE for d in dense.shape):
        raise ValueError(
            f"cuSPARSELt route: the weight must be [N, K] with N and K multiples of {SPARSE_MULTIPLE}, "
            f"got {tuple(dense.shape)}"
        )


class _Plan:
    """Everything one product shape needs: descriptors, algorithm, plan and workspace. Whatever a
    failed set-up made is destroyed before the error goes on (nothing half-made is kept)."""

    def __init__(self, weight: CusparseLtWeight, m: int, bias: torch.Tensor | None, config: CusparseLtConfig):
        self.bias = bias  # its address is in the plan: keep it alive
        self.x_desc, self.y_desc, self.matmul, self.alg, self.plan = (Opaque() for _ in range(5))
        self._lib, self._live = load_library(), []
        try:
            self._build(weight, m, config)
        except Exception:
            self.destroy()
            raise

    def _build(self, weight: CusparseLtWeight, m: int, config: CusparseLtConfig) -> None:
        lib, h = self._lib, weight.handle.ptr
        n, k = weight.shape
        dtype = CUDA_TYPES[weight.dtype]
        lib.call("cusparseLtDenseDescriptorInit", h, self.x_desc.ptr, m, k, k, 16, dtype, ORDER_ROW)
        self._live.append(("cusparseLtMatDescriptorDestroy", self.x_desc))
        lib.call("cusparseLtDenseDescriptorInit", h, self.y_desc.ptr, n, m, n, 16, dtype, ORDER_COL)
        self._live.append(("cusparseLtMatDescriptorDestroy", self.y_desc))
        lib.call(
            "cusparseLtMatmulDescriptorInit", h, self.matmul.ptr, OP_NON_TRANSPOSE, OP_TRANSPOSE,
            weight.descriptor.ptr, self.x_desc.ptr, self.y_desc.ptr, self.y_desc.ptr, COMPUTE_32F,
        )  # fmt: skip
        if self.bias is not None:
            address = ctypes.c_void_p(self.bias.data_ptr())
            lib.call(
                "cusparseLtMatmulDescSetAttribute", h, self.matmul.ptr, MATMUL_BIAS_POINTER,
                ctypes.byref(address), ctypes.sizeof(address),
            )  # fmt: skip
        lib.call("cusparseLtMatmulAlgSelectionInit", h, self.alg.ptr, self.matmul.ptr, ALG_DEFAULT)
        self._live.append(("cusparseLtMatmulAlgSelectionDestroy", self.alg))
        alg_id = ctypes.c_int(config.alg_id)
        try:
            lib.call(
                "cusparseLtMatmulAlgSetAttribute", h, self.alg.ptr, ALG_CONFIG_ID, ctypes.byref(alg_id),
                ctypes.sizeof(alg_id),
            )  # fmt: skip
        except CusparseLtError as exc:
            raise AlgorithmRefused(f"algorithm {config.alg_id} refused: {exc}") from None
        lib.call("cusparseLtMatmulPlanInit", h, self.plan.ptr, self.matmul.ptr, self.alg.ptr)
        self._live.append(("cusparseLtMatmulPlanDestroy", self.plan))
        size = ctypes.c_size_t()
        lib.call("cusparseLtMatmulGetWorkspace", h, self.plan.ptr, ctypes.byref(size))
        self.workspace = torch.empty(max(size.value, 1), dtype=torch.uint8, device=weight.device)

    def destroy(self) -> None:
        while self._live:
            name, obj = self._live.pop()
            self._lib.call(name, obj.ptr)


class CusparseLtWeight:
    """A 2:4 weight ``[N, K]`` compressed by cuSPARSELt, with one plan per token count (and bias
    and algorithm), made on first use and kept (at most ``MAX_PLANS``, the oldest destroyed first).

    ``dense``: the 2:4 weight itself (zeros at the pruned positions), fp16 or bf16, on a GPU. The
    caller checks the 2:4 pattern (``repro.kernels.compress_24`` does); cuSPARSELt compresses
    whatever it is given."""

    def __init__(self, dense: torch.Tensor):
        check_weight(dense)
        lib = load_library()
        self.shape = tuple(dense.shape)
        self.dtype = dense.dtype
        self.device = dense.device
        self.handle = handle(dense.device)
        n, k = self.shape
        self.descriptor = Opaque()
        lib.call(
            "cusparseLtStructuredDescriptorInit", self.handle.ptr, self.descriptor.ptr, n, k, k, 16,
            CUDA_TYPES[self.dtype], ORDER_ROW, SPARSITY_50_PERCENT,
        )  # fmt: skip
        size, buffer_size = ctypes.c_size_t(), ctypes.c_size_t()
        lib.call(
            "cusparseLtSpMMACompressedSize2", self.handle.ptr, self.descriptor.ptr, ctypes.byref(size),
            ctypes.byref(buffer_size),
        )  # fmt: skip
        self.compressed = torch.empty(size.value, dtype=torch.uint8, device=self.device)
        scratch = torch.empty(max(buffer_size.value, 1), dtype=torch.uint8, device=self.device)
        dense = dense.contiguous()
        stream = _stream(self.device)
        # dense and scratch may be freed when this returns: the caching allocator reuses their
        # memory only for work queued after the compression on the same stream
        lib.call(
            "cusparseLtSpMMACompress2", self.handle.ptr, self.descriptor.ptr, 1, OP_NON_TRANSPOSE,
            dense.data_ptr(), self.compressed.data_ptr(), scratch.data_ptr(), stream,
        )  # fmt: skip
        self._plans: dict[tuple, _Plan] = {}

    @property
    def nbytes(self) -> int:
        """Bytes of cuSPARSELt's compressed weight (values and its own metadata)."""
        return self.compressed.nbytes

    def plan_count(self) -> int:
        return len(self._plans)

    def _plan(self, m: int, bias: torch.Tensor | None, config: CusparseLtConfig) -> _Plan:
        key = (m, None if bias is None else bias.data_ptr(), config.alg_id)
        plan = self._plans.get(key)
        if plan is None or (bias is not None and plan.bias is not bias):
            if plan is not None:  # another tensor now at that address: plan again
                self._plans.pop(key).destroy()
            if len(self._plans) >= MAX_PLANS:
                self._plans.pop(next(iter(self._plans))).destroy()
            plan = self._plans[key] = _Plan(self, m, bias, config)
        return plan

    def max_alg_id(self, m: int = 64) -> int:
        """``CUSPARSELT_MATMUL_ALG_CONFIG_MAX_ID`` for a product of ``m`` tokens: the largest algorithm
        id, or by some readings the number of ids; ``algorithm_ids`` tries both ways."""
        plan = self._plan(_padded(m), None, CusparseLtConfig())
        count = ctypes.c_int()
        load_library().call(
            "cusparseLtMatmulAlgGetAttribute", self.handle.ptr, plan.alg.ptr, ALG_CONFIG_MAX_ID,
            ctypes.byref(count), ctypes.sizeof(count),
        )  # fmt: skip
        return count.value

    def algorithm_ids(self, m: int, limit: int) -> range:
        """The first ``limit`` algorithm ids to try for ``m`` tokens, up to and including the library's
        ``max_alg_id`` (where that value is a count, the last id is refused by ``matmul``:
        ``AlgorithmRefused``)."""
        return range(min(self.max_alg_id(m) + 1, limit))

    def matmul(
        self, x2d: torch.Tensor, bias: torch.Tensor | None = None, config: CusparseLtConfig = CusparseLtConfig()
    ) -> torch.Tensor:
        """``x2d @ W.T (+ bias)`` for ``x2d`` ``[M, K]`` of the weight's dtype and GPU -> ``[M, N]``."""
        n, k = self.shape
        if x2d.dim() != 2 or x2d.shape[1] != k or x2d.dtype != self.dtype or x2d.device != self.device:
            raise ValueError(
                f"cuSPARSELt route: x must be [M, {k}] {self.dtype} on {self.device}, "
                f"got {tuple(x2d.shape)} {x2d.dtype} on {x2d.device}"
            )
        if bias is not None and (bias.shape != (n,) or bias.dtype != self.dtype or bias.device != self.device):
            raise ValueError(
                f"cuSPARSELt route: bias must be [{n}] {self.dtype} on {self.device}, "
                f"got {tuple(bias.shape)} {bias.dtype} on {bias.device}"
            )
        m = x2d.shape[0]
        rows = _padded(m)
        if rows != m or not x2d.is_contiguous() or x2d.data_ptr() % 16:
            padded = x2d.new_zeros((rows, k))
            padded[:m] = x2d
            x2d = padded
        # a bias off a 16-byte boundary is added afterwards (a plan per call for a fresh aligned
        # copy would cost more)
        fused = bias if bias is None or bias.data_ptr() % 16 == 0 else None
        out = x2d.new_empty((rows, n))
        plan = self._plan(rows, fused, config)
        stream = ctypes.c_void_p(_stream(self.device))
        load_library().call(
            "cusparseLtMatmul", self.handle.ptr, plan.plan.ptr, ctypes.byref(_ONE), self.compressed.data_ptr(),
            x2d.data_ptr(), ctypes.byref(_ZERO), out.data_ptr(), out.data_ptr(), plan.workspace.data_ptr(),
            ctypes.byref(stream), 1,
        )  # fmt: skip
        if fused is not bias:
            out.add_(bias)
        return out if rows == m else out[:m]

    def close(self) -> None:
        """Destroy every plan (the weight's own descriptor lives as long as this object)."""
        while self._plans:
            self._plans.popitem()[1].destroy()


_ONE, _ZERO = ctypes.c_float(1.0), ctypes.c_float(0.0)  # alpha and beta, fp32 as the compute type


def _padded(m: int) -> int:
    return max(DENSE_MULTIPLE, -(-m // DENSE_MULTIPLE) * DENSE_MULTIPLE)


def available(device: torch.device | None = None) -> bool:
    """Whether this process can use the route: a CUDA device, the library loaded, a handle made,
    and not switched off (``REPRO_CUSPARSELT=0``, which the GPU check sets when its tests fail)."""
    if os.environ.get("REPRO_CUSPARSELT", "1") == "0" or not torch.cuda.is_available():
        return False
    try:
        handle(device or torch.device("cuda", torch.cuda.current_device()))
    except CusparseLtError:
        return False
    return True
