"""A stand-in for libcusparseLt that runs on the CPU, for tests/kernels/test_cusparselt.py.

Each function is a real C function pointer (``ctypes.CFUNCTYPE``) with the signature the route
declares, so every call goes through ctypes' conversions as it would into the library. Behind them,
the stand-in keeps what each descriptor, algorithm and plan was told, checks it as the library's
documentation states (dimensions, leading dimensions, orders, operations, the 16-bit dense
operand's multiples of 8), and computes a product from the raw memory the pointers address, with
the matrices laid out as their descriptors say. So a wrong order, leading dimension or operand
gives a wrong number or an error status, not a silent pass.
"""

from __future__ import annotations

import ctypes

import torch

from repro.kernels import cusparselt as lt

OK, NOT_INITIALIZED, INVALID_VALUE, NOT_SUPPORTED = 0, 1, 3, 10
MAX_ALG_ID = 3
WORKSPACE = 4096
DTYPES = {2: torch.float16, 14: torch.bfloat16}
MESSAGES = {NOT_INITIALIZED: b"initialization error", INVALID_VALUE: b"invalid value", NOT_SUPPORTED: b"not supported"}


def _address(p) -> int:
    return p if isinstance(p, int) else (p or 0)


def matrix(ptr: int, rows: int, cols: int, ld: int, order: int, dtype: torch.dtype) -> torch.Tensor:
    """A [rows, cols] view of raw memory laid out as a descriptor says (row- or column-major)."""
    size = torch.tensor([], dtype=dtype).element_size()
    span = (rows - 1) * ld + cols if order == lt.ORDER_ROW else (cols - 1) * ld + rows
    raw = torch.frombuffer((ctypes.c_uint8 * (span * size)).from_address(ptr), dtype=torch.uint8).view(dtype)
    strides = (ld, 1) if order == lt.ORDER_ROW else (1, ld)
    return raw.as_strided((rows, cols), strides)


class StandIn:
    """The library's state and functions; ``fail[name] = status`` makes one function fail."""

    def __init__(self, stream: int):
        self.stream = stream
        self.handles, self.descriptors, self.matmuls, self.algs, self.plans = set(), {}, {}, {}, {}
        self.compressed: dict[int, torch.Tensor] = {}
        self.calls: dict[str, int] = {}
        self.destroyed: list[str] = []
        self.fail: dict[str, int] = {}
        self._messages = {k: ctypes.create_string_buffer(v) for k, v in MESSAGES.items()}
        for name, argtypes in lt._SIGNATURES.items():
            setattr(self, name, self._wrap(name, argtypes))
        self._error_string = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_int)(self._message)
        self.cusparseLtGetErrorString = ctypes.cast(self._error_string, ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_int))

    def _message(self, status):
        buffer = self._messages.get(status)
        return ctypes.addressof(buffer) if buffer is not None else None

    def _wrap(self, name, argtypes):
        body = getattr(self, "_" + name.removeprefix("cusparseLt"))

        def entry(*args):
            self.calls[name] = self.calls.get(name, 0) + 1
            if name in self.fail:
                return self.fail[name]
            try:
                return body(*[_address(a) if isinstance(a, (int, type(None))) else a for a in args])
            except Exception as exc:  # a bug in the stand-in must not pass silently through C
                self.error = exc
                return NOT_SUPPORTED

        fn = ctypes.CFUNCTYPE(ctypes.c_int, *argtypes)(entry)
        setattr(self, "_keep_" + name, fn)
        return fn

    # -- handles and descriptors
    def _Init(self, h):
        self.handles.add(h)
        return OK

    def _GetVersion(self, h, version):
        version[0] = 800
        return OK

    def _StructuredDescriptorInit(self, h, d, rows, cols, ld, alignment, dtype, order, sparsity):
        if h not in self.handles:
            return NOT_INITIALIZED
        if rows % 16 or cols % 16 or ld < cols or alignment != 16 or dtype not in DTYPES:
            return INVALID_VALUE
        if order not in (lt.ORDER_ROW, lt.ORDER_COL) or sparsity != lt.SPARSITY_50_PERCENT:
            return INVALID_VALUE
        self.descriptors[d] = dict(kind="structured", rows=rows, cols=cols, ld=ld, dtype=DTYPES[dtype], order=order)
        return OK

    def _DenseDescriptorInit(self, h, d, rows, cols, ld, alignment, dtype, order):
        if h not in self.handles:
            return NOT_INITIALIZED
        if rows % 8 or cols % 8 or alignment != 16 or dtype not in DTYPES:
            return INVALID_VALUE  # 16-bit dense operands: both dimensions multiples of 8
        if ld < (cols if order == lt.ORDER_ROW else rows):
            return INVALID_VALUE
        self.descriptors[d] = dict(kind="dense", rows=rows, cols=cols, ld=ld, dtype=DTYPES[dtype], order=order)
        return OK

    def _MatDescriptorDestroy(self, d):
        self.descriptors.pop(d)
        self.destroyed.append("descriptor")
        return OK

    # -- the product's description
    def _MatmulDescriptorInit(self, h, md, op_a, op_b, a, b, c, d, compute):
        A, B, C, D = (self.descriptors.get(p) for p in (a, b, c, d))
        if None in (A, B, C, D) or A["kind"] != "structured" or compute != lt.COMPUTE_32F:
            return INVALID_VALUE
        a_rows, a_cols = (A["rows"], A["cols"]) if op_a == lt.OP_NON_TRANSPOSE else (A["cols"], A["rows"])
        b_rows, b_cols = (B["rows"], B["cols"]) if op_b == lt.OP_NON_TRANSPOSE else (B["cols"], B["rows"])
        if a_cols != b_rows or (D["rows"], D["cols"]) != (a_rows, b_cols) or C != D:
            return INVALID_VALUE
        self.matmuls[md] = dict(op_a=op_a, op_b=op_b, A=dict(A), B=dict(B), D=dict(D), bias=0)
        return OK

    def _MatmulDescSetAttribute(self, h, md, attribute, data, size):
        if attribute != lt.MATMUL_BIAS_POINTER or size != ctypes.sizeof(ctypes.c_void_p):
            return INVALID_VALUE
        self.matmuls[md]["bias"] = ctypes.c_void_p.from_address(data).value
        return OK

    def _MatmulAlgSelectionInit(self, h, alg, md, kind):
        if md not in self.matmuls or kind != lt.ALG_DEFAULT:
            return INVALID_VALUE
        self.algs[alg] = dict(matmul=dict(self.matmuls[md]), alg_id=0)
        return OK

    def _MatmulAlgSetAttribute(self, h, alg, attribute, data, size):
        value = ctypes.c_int.from_address(data).value
        if attribute != lt.ALG_CONFIG_ID or size != 4 or not 0 <= value < MAX_ALG_ID:
            return INVALID_VALUE
        self.algs[alg]["alg_id"] = value
        return OK

    def _MatmulAlgGetAttribute(self, h, alg, attribute, data, size):
        if attribute != lt.ALG_CONFIG_MAX_ID or size != 4:
            return INVALID_VALUE
        ctypes.c_int.from_address(data).value = MAX_ALG_ID
        return OK

    def _MatmulAlgSelectionDestroy(self, alg):
        self.algs.pop(alg)
        self.destroyed.append("algorithm")
        return OK

    def _MatmulPlanInit(self, h, plan, md, alg):
        if md not in self.matmuls or alg not in self.algs:
            return INVALID_VALUE
        self.plans[plan] = dict(self.algs[alg])
        return OK

    def _MatmulGetWorkspace(self, h, plan, size):
        size[0] = WORKSPACE
        return OK

    def _MatmulPlanDestroy(self, plan):
        self.plans.pop(plan)
        self.destroyed.append("plan")
        return OK

    # -- the structured operand
    def _SpMMACompressedSize2(self, h, d, size, buffer_size):
        A = self.descriptors[d]
        size[0] = A["rows"] * A["cols"] * 2 * 9 // 16  # values and metadata, as 16-bit types take
        buffer_size[0] = 128
        return OK

    def _SpMMACompress2(self, h, d, is_sparse_a, op, dense, compressed, buffer, stream):
        A = self.descriptors[d]
        if not is_sparse_a or op != lt.OP_NON_TRANSPOSE or stream != self.stream or not buffer:
            return INVALID_VALUE
        self.compressed[compressed] = matrix(dense, A["rows"], A["cols"], A["ld"], A["order"], A["dtype"]).clone()
        return OK

    # -- the product
    def _Matmul(self, h, plan, alpha, a, b, beta, c, d, workspace, streams, n_streams):
        p = self.plans.get(plan)
        if p is None or a not in self.compressed or not workspace or n_streams != 1 or c != d:
            return INVALID_VALUE
        if ctypes.c_void_p.from_address(streams).value != self.stream:
            return INVALID_VALUE
        scale, shift = ctypes.c_float.from_address(alpha).value, ctypes.c_float.from_address(beta).value
        mm = p["matmul"]
        B, D = mm["B"], mm["D"]
        w = self.compressed[a].float()
        w = w if mm["op_a"] == lt.OP_NON_TRANSPOSE else w.T
        x = matrix(b, B["rows"], B["cols"], B["ld"], B["order"], B["dtype"]).float()
        x = x if mm["op_b"] == lt.OP_NON_TRANSPOSE else x.T
        y = scale * (w @ x)
        if mm["bias"]:
            y += matrix(mm["bias"], D["rows"], 1, 1, lt.ORDER_COL, D["dtype"]).float()
        out = matrix(d, D["rows"], D["cols"], D["ld"], D["order"], D["dtype"])
        if shift:  # beta = 0: C is not read (it may hold anything)
            y += shift * out.float()
        out.copy_(y.to(D["dtype"]))
        return OK
