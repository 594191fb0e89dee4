"""The book's 2:4 sparse-GEMM kernels (issue 3).

- :func:`compress_24` / :class:`Sparse24Weight`: the compressed format (``format.py``).
- :func:`sparse24_matmul`: ``x @ W.T`` through the per-architecture dispatcher (``dispatch.py``),
  which picks our Triton kernels (``triton_sp24.py``), the Gluon kernels that read the weight in
  ``fragments.py`` order (``gluon_sp24.py`` on the sparse tensor cores, ``gluon_wgmma.py`` on
  Hopper's warpgroup MMA), cuBLAS or cuSPARSELt from measurements.
- :class:`SparseLinear`: drop-in ``nn.Linear`` (``sparse_linear.py``).
- ``fast_launch.py``: a compiled kernel launched again without Triton binding its arguments on
  every call, and launches bound to a layer's weight, only x and the output given per call (the
  host's share of an eager decode step).

Importing this package needs only torch: Triton is imported when a kernel first runs on CUDA.
"""

from .dispatch import sparse24_matmul
from .format import Sparse24Weight, compress_24
from .sparse_linear import SparseLinear

__all__ = ["compress_24", "Sparse24Weight", "sparse24_matmul", "SparseLinear"]
