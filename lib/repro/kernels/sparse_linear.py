"""``SparseLinear``: a drop-in ``nn.Linear`` whose weight is stored in the book's 2:4 format."""

from __future__ import annotations

import torch
from torch import nn

from .dispatch import sparse24_matmul
from .format import CompressedWeight, compress_24

LAYOUTS = ("planar", "fragments")


class SparseLinear(nn.Module):
    """``y = x @ W.T + b`` with ``W`` kept only as a :class:`Sparse24Weight` (56.25% of dense fp16).

    Inference only: the compressed tensors are buffers, not parameters (no gradients).
    On CUDA it runs the dispatcher (``sparse24_matmul``); elsewhere the torch reference path.
    Where the dispatcher picks cuBLAS (the committed tables: large token counts) it caches a dense
    copy of the weight on first use; ``repro.kernels.dispatch.set_dense_cache(False)`` avoids that.
    Where it picks cuSPARSELt directly, the library's own compressed copy is kept instead (56.25 %).

    ``layout="planar"`` (``Sparse24Weight``) serves every kernel; where the dispatcher picks
    ``spmma`` or ``wgmma`` it derives the fragment order once and keeps it too. ``layout="fragments"``
    (``Sparse24Fragments``) stores only the fragment order: ``spmma``, ``wgmma``, cuBLAS or cuSPARSELt.
    """

    def __init__(self, weight: CompressedWeight, bias: torch.Tensor | None = None):
        super().__init__()
        self.in_features = weight.shape[1]
        self.out_features = weight.shape[0]
        self.register_buffer("values", weight.values)
        self.register_buffer("meta", weight.meta)
        self.register_buffer("bias", None if bias is None else bias.detach().to(weight.dtype))
        self._weight = weight

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, mask: torch.Tensor | None = None, layout: str = "planar"
    ) -> SparseLinear:
        """Build from a 2:4-pruned ``nn.Linear`` (or a dense one plus a 2:4 ``mask``)."""
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        with torch.no_grad():
            weight = compress_24(linear.weight.detach(), mask)
            if layout == "fragments":
                from .fragments import to_fragments

                weight = to_fragments(weight)
        return cls(weight, linear.bias)

    @property
    def weight24(self) -> CompressedWeight:
        """The compressed weight, rebuilt if ``.to()``/``.cuda()`` moved the buffers."""
        w, values, meta = self._weight, self._buffer("values"), self._buffer("meta")
        if w.values is not values or w.meta is not meta:
            w = w.with_tensors(values, meta)
            self._weight = w
        return w

    def _buffer(self, name: str) -> torch.Tensor | None:
        """``self.<name>`` without ``Module.__getattr__`` (about 0.5 µs a read here, three reads
        on every forward of an eager decode); the attribute itself where it is no longer a buffer
        (replaced by a parameter, say)."""
        buffers = self._buffers
        return buffers[name] if name in buffers else getattr(self, name)

    @property
    def weight_nbytes(self) -> int:
        return self.weight24.nbytes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sparse24_matmul(x, self.weight24, self._buffer("bias"))

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, format=2:4 {self._weight.layout}, dtype={self._weight.dtype}"
        )
