"""The book's compressed 2:4 weight format: ``compress_24`` / ``Sparse24Weight.decompress``.

A weight ``W`` of shape ``[N, K]`` is 2:4 sparse along K when every group of four consecutive
elements ``W[n, 4g:4g+4]`` holds at most two non-zeros. Group ``g`` of row ``n`` keeps two positions
``i0 < i1`` (in ``0..3``) and their values ``v0 = W[n, 4g+i0]``, ``v1 = W[n, 4g+i1]``.

Layout (chosen so that a kernel tile needs only plain 2-D loads and elementwise bit operations on
the weight side, no reshapes and no per-row shifts; with ``Q = K/8`` group *pairs* per row, pair
``p`` = groups ``2p`` ("even") and ``2p+1`` ("odd")):

``values``  ``[N, K/2]``, same dtype as the weight (fp16, bf16 or fp32), stored as four *planes*
            of ``Q`` columns each:  ``[ v0 even | v1 even | v0 odd | v1 odd ]``, i.e.
            ``values[n, p]``      = v0 of group 2p,    ``values[n, Q + p]``  = v1 of group 2p,
            ``values[n, 2Q + p]`` = v0 of group 2p+1,  ``values[n, 3Q + p]`` = v1 of group 2p+1.
``meta``    ``[N, K/8]`` uint8: byte ``p`` of row ``n`` = code(group 2p) | code(group 2p+1) << 4,
            with code = ``i0 | i1 << 2`` (bits 0-1 = i0, bits 2-3 = i1, always i0 < i1): the
            4-bit code of NVIDIA's sparse tensor cores, plain row-major.

Bytes per dense weight: values 1 (fp16) + metadata 1/8 = 1.125, i.e. 56.25% of dense fp16.
K must be a multiple of 8 (a metadata byte covers two groups of 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
SUPPORTED_DEVICE_TYPES = ("cpu", "cuda")
GROUP = 4  # a 2:4 group spans 4 consecutive elements along K
K_MULTIPLE = 8  # one metadata byte covers two groups
KEPT = 2


def _check_weight(weight: torch.Tensor) -> None:
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [N, K], got shape {tuple(weight.shape)}")
    if weight.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"weight dtype {weight.dtype} is not supported; allowed: fp16, bf16, fp32")
    if weight.device.type not in SUPPORTED_DEVICE_TYPES:
        raise ValueError(f"weight device {weight.device} is not supported; allowed: cpu, cuda")
    n, k = weight.shape
    if n < 1 or k < 1:
        raise ValueError(f"weight must be non-empty, got shape {tuple(weight.shape)}")
    if k % K_MULTIPLE:
        raise ValueError(
            f"K = {k} must be a multiple of {K_MULTIPLE} "
            "(2:4 groups of 4 along K, two groups per metadata byte)"
        )


def _kept_positions(keep: torch.Tensor) -> torch.Tensor:
    """Two positions per group, increasing: the kept ones first, padded with the lowest free ones.

    ``keep`` is a bool tensor [N, G, 4] with at most two True per group.
    Returns int64 [N, G, 2] with positions[..., 0] < positions[..., 1].
    """
    position = torch.arange(GROUP, device=keep.device)
    # kept positions rank above free ones; among equals, lower positions win (deterministic padding)
    rank = keep.to(torch.int64) * GROUP + (GROUP - 1 - position)
    chosen = rank.topk(KEPT, dim=-1).indices
    return chosen.sort(dim=-1).values


class LaunchCache(dict):
    """The dispatcher's bound launches on one weight (``dispatch.py``): state of this process
    alone, so a copied or pickled weight starts with none (a compiled kernel neither copies
    nor pickles, and a copy's tensors are other tensors)."""

    def __deepcopy__(self, memo) -> LaunchCache:
        return LaunchCache()

    def __reduce__(self):
        return LaunchCache, ()


class CompressedWeight:
    """What both 2:4 layouts share (this planar one and ``fragments.Sparse24Fragments``): the
    footprint, the device, and the dense copy that the dispatcher's cuBLAS route keeps.
    Subclasses are dataclasses with ``values``, ``meta``, ``shape``, ``dtype``, ``_dense_cache`` and
    ``_launches`` (the dispatcher's bound kernel launches on this weight, ``dispatch.py``) that
    return their kept values and codes in natural group order from ``groups()``."""

    layout = ""  # "planar" or "fragments": which of our kernels can read it

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def nbytes(self) -> int:
        """Bytes of the compressed format: values plus metadata (no derived copies)."""
        return self.values.nbytes + self.meta.nbytes

    @property
    def cache_nbytes(self) -> int:
        """Bytes of the derived copies kept for other methods: the dense weight for cuBLAS, and
        cuSPARSELt's own compressed copy where that route ran (``dispatch._cusparselt_weight``)."""
        dense = 0 if self._dense_cache is None else self._dense_cache.nbytes
        cusparselt = getattr(self, "_cusparselt_cache", None)
        return dense + (0 if cusparselt is None else cusparselt.nbytes)

    def decompress(self) -> torch.Tensor:
        """The dense ``[N, K]`` weight, zeros at the pruned positions (exact round trip)."""
        v0, v1, codes = self.groups()
        n, k = self.shape
        dense = torch.zeros(*v0.shape, GROUP, dtype=self.dtype, device=self.device)
        dense.scatter_(2, (codes & 3).unsqueeze(-1), v0.unsqueeze(-1))
        dense.scatter_(2, (codes >> 2).unsqueeze(-1), v1.unsqueeze(-1))
        return dense.reshape(v0.shape[0], -1)[:n, :k]  # the fragment order pads rows and K

    def dense(self, cache: bool = True) -> torch.Tensor:
        """Dense weight for dense-GEMM dispatch; ``cache=True`` keeps it (costs 2 bytes/weight)."""
        if self._dense_cache is not None:
            return self._dense_cache
        dense = self.decompress()
        if cache:
            self._dense_cache = dense
        return dense

    def drop_dense_cache(self) -> None:
        self._dense_cache = None


@dataclass
class Sparse24Weight(CompressedWeight):
    """A 2:4-compressed weight ``[N, K]`` in the book's format (see the module docstring)."""

    values: torch.Tensor  # [N, K/2], planes v0 even | v1 even | v0 odd | v1 odd
    meta: torch.Tensor  # [N, K/8] uint8, codes of groups 2p (low nibble) and 2p+1 (high nibble)
    shape: tuple[int, int]  # dense (N, K)
    _dense_cache: torch.Tensor | None = field(default=None, repr=False, compare=False)
    _fragments_cache: object = field(default=None, repr=False, compare=False)
    _launches: LaunchCache = field(default_factory=LaunchCache, repr=False, compare=False)

    layout = "planar"

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def cache_nbytes(self) -> int:
        fragments = 0 if self._fragments_cache is None else self._fragments_cache.nbytes
        return super().cache_nbytes + fragments

    def groups(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Kept values ``v0, v1`` and int64 codes, each ``[N, K/4]`` in natural group order."""
        n, k = self.shape
        pairs = k // (2 * GROUP)
        planes = self.values.reshape(n, 4, pairs)  # v0e, v1e, v0o, v1o
        v0 = torch.stack((planes[:, 0], planes[:, 2]), dim=-1).reshape(n, 2 * pairs)
        v1 = torch.stack((planes[:, 1], planes[:, 3]), dim=-1).reshape(n, 2 * pairs)
        codes = torch.stack((self.meta & 0xF, self.meta >> 4), dim=-1).reshape(n, 2 * pairs)
        return v0, v1, codes.to(torch.int64)

    def fragments(self):
        """The weight in mma.sp fragment order (``fragments.py``) for the ``spmma`` kernel.

        Built on first use and kept (another 56.25 % of the dense fp16 bytes while both exist;
        ``SparseLinear(..., layout="fragments")`` stores only that order)."""
        if self._fragments_cache is None:
            from .fragments import to_fragments

            self._fragments_cache = to_fragments(self)
        return self._fragments_cache

    def with_tensors(self, values: torch.Tensor, meta: torch.Tensor) -> Sparse24Weight:
        """The same weight over other tensors (e.g. moved by ``Module.to``); no derived copies."""
        return Sparse24Weight(values, meta, self.shape)

    def to(self, device: torch.device | str) -> Sparse24Weight:
        return self.with_tensors(self.values.to(device), self.meta.to(device))


def compress_24(weight: torch.Tensor, mask: torch.Tensor | None = None) -> Sparse24Weight:
    """Compress a 2:4-sparse weight ``[N, K]`` (sparse along K) into a :class:`Sparse24Weight`.

    ``mask`` (bool, same shape, at most 2 True per group of 4 along K) selects the kept weights;
    without it the weight itself must have at most 2 non-zeros per group.
    Raises ``ValueError`` for non-2:4 input, K not a multiple of 4, or unsupported dtype/device.
    """
    _check_weight(weight)
    n, k = weight.shape
    groups = k // GROUP
    if mask is None:
        keep = weight != 0
        what = "weight has"
    else:
        if mask.shape != weight.shape:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} differs from weight shape {tuple(weight.shape)}"
            )
        keep = mask.to(device=weight.device, dtype=torch.bool)
        weight = torch.where(keep, weight, torch.zeros((), dtype=weight.dtype, device=weight.device))
        what = "mask keeps"
    keep = keep.reshape(n, groups, GROUP)
    per_group = keep.sum(-1)
    if bool((per_group > KEPT).any()):
        bad = int((per_group > KEPT).sum())
        raise ValueError(
            f"not 2:4 sparse along K: {what} more than 2 non-zeros in {bad} of {n * groups} groups of 4"
        )
    positions = _kept_positions(keep)  # [N, G, 2]
    kept = weight.reshape(n, groups, GROUP).gather(2, positions)  # [N, G, 2]
    even, odd = kept[:, 0::2], kept[:, 1::2]  # [N, K/8, 2] each
    values = torch.cat((even[..., 0], even[..., 1], odd[..., 0], odd[..., 1]), dim=1).contiguous()
    codes = (positions[..., 0] | (positions[..., 1] << 2)).to(torch.uint8)  # [N, G]
    meta = (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()
    return Sparse24Weight(values=values, meta=meta, shape=(n, k))
