"""The 2:4 weight re-ordered for NVIDIA's sparse tensor-core instruction (``mma.sp``, m16n8k32).

``mma.sp.sync.aligned.m16n8k32`` multiplies a 16x32 2:4-sparse tile A, given as its 16x16
compressed values plus 2-bit positions, by a dense 32x8 tile B. Each of the warp's 32 lanes holds a
fixed piece of every operand (PTX ISA, "Matrix fragments for sparse mma.m16n8k32 with .f16/.bf16";
``g = lane // 4``, ``q = lane % 4``):

- A: four 32-bit registers; register ``i`` holds the two kept values (v0 low, v1 high) of row
  ``g + 8*(i % 2)``, group ``q + 4*(i // 2)`` of the tile (groups of 4 along K, 8 per tile);
- metadata: one 32-bit word, read from lanes with ``q`` in {0, 1} (sparsity selector 0): lane
  ``q = h`` describes groups ``4h .. 4h+3``; its low 16 bits are row ``g``, its high 16 bits row
  ``g + 8``, a 4-bit code ``i0 | i1 << 2`` per group (the same code as ``format.py``);
- B: four registers; register ``i`` holds B[k, n] for ``n = g``, ``k = 2q + 8i`` and ``k + 1``;
- C/D: four fp32; ``c[i]`` is the element at row ``g + 8*(i // 2)``, column ``2q + i % 2``.

With the weight as A (rows = output features) and x as B (columns = tokens), the layout below
stores, for every 16-row tile and 32-column k-block, exactly the 512 bytes of A registers in lane
order, so a warp fetches one k-block with one fully coalesced 16-byte load per lane, and the 64
bytes of metadata words next to it. Nothing is re-arranged at run time.

``values``  int32 ``[NT, KB, 32, 4]``: ``NT = ceil(N/16)`` row tiles, ``KB = ceil(K/32)`` k-blocks,
            lane, register; each int32 packs two fp16/bf16 values.
``meta``    int32 ``[NT, KB, 16]``: word ``2g + h`` is the metadata word of lanes ``4g + h``.

Rows and k-blocks beyond N and K are padded with zero values (metadata code ``0b0100``, positions
0 and 1, a valid code) and masked on the x side. Bytes: 16*16*2 values + 16*4 metadata per 16x32
dense tile = 576 of 1024, the same 56.25 % as the planar format.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field

import torch

from .format import CompressedWeight, LaunchCache, Sparse24Weight

ROWS = 16  # rows of an mma.sp A tile
KBLOCK = 32  # dense K of one mma.sp
GROUPS = KBLOCK // 4  # 2:4 groups per k-block
LANES = 32
PAD_CODE = 0b0100  # positions (0, 1): valid metadata for an all-zero group
FRAGMENT_DTYPES = (torch.float16, torch.bfloat16)


def token_tiles(m: int) -> int:
    """Tiles of 8 tokens that one ``spmma`` program covers for ``m`` tokens: the power of two
    >= m/8, at most 8 (beyond 64 tokens the programs repeat along the tokens)."""
    return min(8, 1 << ((m + 7) // 8 - 1).bit_length())


@dataclass(frozen=True)
class SpmmaConfig:
    """Tiling of the ``spmma`` kernel (``gluon_sp24.py``): each program runs ``R*W`` 16-row tiles
    and ``8*T`` tokens with ``R*S`` warps, ``S`` of them splitting K and each running ``W`` row
    tiles; ``U`` k-blocks per step; ``prefetch`` alternates two register sets, so one step's
    loads are in flight while the other's MMAs run (twice the operand registers); ``wide_x``
    reads each lane's x words of a k-block with one 16-byte load and moves them to their MMA
    registers with four shuffles inside each group of four lanes, instead of four 4-byte loads
    that each touch eight tokens' cache lines; ``interleave`` deals K out to the ``S`` warps in
    turns of ``U`` k-blocks instead of one contiguous slice each, so that the warps of a program
    read one contiguous run of ``S*U`` k-blocks per step rather than ``S`` runs a slice apart;
    ``l2_ahead`` > 0 asks L2 for the weight bytes that many steps ahead of their loads
    (``prefetch.global.L2``), more bytes in flight than the registers can hold; ``split_k`` > 1
    gives each program one of that many runs of K (a third grid axis), so a program can own more
    rows, and x is read once per more rows, while the grid still fills the GPU; the splits' fp32
    partial sums meet in a workspace, added by whichever split finishes a tile last; ``stages``
    >= 2 copies the operands with ``cp.async`` into a ring of that many steps in shared memory
    (``stages - 1`` steps in flight without registers to land in) and reads them back one k-block
    at a time, the step's MMAs chained into one accumulator per row and token tile; there the
    ``R`` row warps share one copy of x, each copying a part; ``chain`` chains the MMAs of a step
    the same way in the loops that load into registers (one accumulator per row and token tile
    instead of ``U``: ``4*W*T*(U-1)`` registers fewer), each k-block loaded as its own tensor."""

    R: int = 1
    S: int = 4
    U: int = 4
    T: int = 1
    W: int = 1
    prefetch: bool = False
    wide_x: bool = False
    interleave: bool = False
    l2_ahead: int = 0
    split_k: int = 1
    stages: int = 0
    chain: bool = False

    @property
    def num_warps(self) -> int:
        return self.R * self.S

    def check(self) -> None:
        for name in ("R", "S", "U", "T", "W"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1) or value > 16:
                raise ValueError(f"SpmmaConfig.{name} must be a power of two in 1..16, got {value}")
        if not 0 <= self.l2_ahead <= 8:
            raise ValueError(f"SpmmaConfig.l2_ahead must be 0 (off) to 8 steps, got {self.l2_ahead}")
        if not 1 <= self.split_k <= 16:
            raise ValueError(f"SpmmaConfig.split_k must be 1 (off) to 16 programs per tile, got {self.split_k}")
        # staged x is copied once per program, its token tiles and k-blocks dealt to the R row
        # warps: more warps than pieces would copy some words twice
        if self.stages and (
            self.stages < 2 or self.stages > 8 or self.prefetch or self.l2_ahead or self.R > self.T * self.U
        ):
            raise ValueError(
                "SpmmaConfig.stages must be 0 (loads into registers) or 2..8 with R <= T*U and without prefetch "
                f"or l2_ahead, got stages={self.stages}, R={self.R}, T*U={self.T * self.U}, "
                f"prefetch={self.prefetch}, l2_ahead={self.l2_ahead}"
            )
        if self.chain and self.stages:
            raise ValueError("SpmmaConfig.chain is for the loops that load into registers; stages already chains")
        if self.num_warps > 32:
            raise ValueError(f"R*S = {self.num_warps} warps; at most 32 fit in a program")

    def grid(self, n: int, m: int) -> tuple[int, int, int]:
        """Programs of a call with ``n`` output rows and ``m`` tokens: row groups, token groups
        (several per row tile when ``8*T`` is fewer than ``m``), K splits."""
        return -(-n // (ROWS * self.R * self.W)), -(-m // (8 * self.T)), self.split_k

    def label(self) -> str:
        tiles = f"w{self.W}" if self.W > 1 else ""
        options = "p" * self.prefetch + "x" * self.wide_x + "i" * self.interleave + "h" * self.chain
        options += f"a{self.l2_ahead}" if self.l2_ahead else ""
        options += f"c{self.stages}" if self.stages else ""
        options += f"k{self.split_k}" if self.split_k > 1 else ""
        return f"r{self.R}{tiles}s{self.S}u{self.U}t{self.T}{options}"

    @classmethod
    def from_label(cls, label: str) -> SpmmaConfig:
        """The configuration ``label()`` names."""
        m = re.fullmatch(
            r"r(\d+)(?:w(\d+))?s(\d+)u(\d+)t(\d+)(p?)(x?)(i?)(h?)(?:a(\d+))?(?:c(\d+))?(?:k(\d+))?", label
        )
        if not m:
            expected = "r<R>[w<W>]s<S>u<U>t<T>[p][x][i][h][a<n>][c<n>][k<n>]"
            raise ValueError(f"not an spmma label: {label!r} (expected {expected})")
        r, w, s, u, t = (int(g) if g else 1 for g in m.groups()[:5])
        options = dict(prefetch=bool(m[6]), wide_x=bool(m[7]), interleave=bool(m[8]), chain=bool(m[9]))
        options |= dict(l2_ahead=int(m[10] or 0), stages=int(m[11] or 0), split_k=int(m[12] or 1))
        return cls(R=r, W=w, S=s, U=u, T=t, **options)

    def as_dict(self) -> dict:
        return asdict(self)


def wgmma_columns() -> torch.Tensor:
    """Where each of a k-block's 32 columns goes in the ``wgmma`` kernel's order of K.

    A lane of the fragment order holds whole groups (``q`` and ``q + 4`` of rows ``g``, ``g + 8``);
    the dense ``wgmma`` wants lane ``(g, q)`` to hold columns ``2q, 2q+1, 2q+8, 2q+9`` of each
    16-column half. So group ``q + 4b`` (columns ``16b + 4q .. 16b + 4q + 3``) goes to
    ``16b + 2q, 16b + 2q + 1, 16b + 2q + 8, 16b + 2q + 9``; x is stored in the same order, and a
    permutation of K applied to both factors leaves the product unchanged."""
    c = torch.arange(KBLOCK)
    half, q, pair, j = c // 16, (c % 16) // 4, (c % 4) // 2, c % 2
    return 16 * half + 8 * pair + 2 * q + j


@dataclass(frozen=True)
class WgmmaConfig:
    """Tiling of the ``wgmma`` kernel (``gluon_wgmma.py``): each program runs ``64*G*W`` rows with
    ``G`` warpgroups (``4*G`` warps) and ``T`` tokens (the MMA's N: a power of two, 8 to 256),
    ``U`` k-blocks of 32 columns per step; ``ahead`` steps of operands are loaded into registers
    before their MMA (in flight meanwhile); ``stages`` >= 3 copies every operand (weight words and
    x) with ``cp.async`` into a ring of that many steps in shared memory instead (``stages - 1``
    steps ahead, no registers to land in; ``ahead`` then has no meaning and must be 1);
    ``x_steps`` > 0 (with a ring) keeps x resident in shared memory that many steps at a time,
    staged and permuted once per chunk, and only the weight words go through the ring;
    ``split_k`` > 1 gives each program one of that many runs of K (a third grid axis), whose fp32
    partial sums meet in a workspace as in ``spmma``. ``sparse`` runs the sparse MMA
    (``wgmma.mma_async.sp``, ``gluon_wgmma_sparse.py``) on the compressed words instead of
    expanding them: every operand through a ring (``stages`` >= 3, refilled ``stages - 2`` steps
    ahead; with ``x_steps``, x resident and only the weight words in the ring, ``stages - 1``
    ahead), ``T`` 16 to 256, at least ``8U`` and at least ``8GW``, ``T·W`` at most 256 (a thread's
    accumulators, ``T·W/2`` registers); with it each warpgroup may run
    ``W`` = 2 MMA tiles of 64 rows on the same x (programs of ``64*G*W`` rows). ``cluster`` (sparse,
    ``split_k`` 2, 4 or 8) runs a tile's K splits as one thread-block cluster whose partial sums
    meet in the cluster's shared memory, no workspace (``gluon_cluster.py``). ``share`` = 2 or 4
    (sparse, x streamed, ``U`` 2 or 4, ``T`` >= 8 share) runs the row tiles that many at a time as
    clusters whose programs load x once between them, by TMA multicast (``gluon_shared_x.py``); with
    ``cluster`` too, their K splits are in the same cluster (``share * split_k`` <= 8 programs)."""

    G: int = 1
    W: int = 1
    T: int = 64
    U: int = 2
    split_k: int = 1
    ahead: int = 1
    stages: int = 0
    x_steps: int = 0
    sparse: bool = False
    cluster: bool = False
    share: int = 1

    @property
    def num_warps(self) -> int:
        return 4 * self.G

    @property
    def rows(self) -> int:
        """Output rows per program."""
        return 64 * self.G * self.W

    def check(self) -> None:
        if self.G not in (1, 2):
            raise ValueError(f"WgmmaConfig.G must be 1 or 2 warpgroups, got {self.G}")
        if self.T not in (8, 16, 32, 64, 128, 256):
            raise ValueError(f"WgmmaConfig.T must be 8, 16, 32, 64, 128 or 256 tokens, got {self.T}")
        if self.U not in (1, 2, 4):
            raise ValueError(f"WgmmaConfig.U must be 1, 2 or 4 k-blocks per step, got {self.U}")
        if not 1 <= self.split_k <= 16:
            raise ValueError(f"WgmmaConfig.split_k must be 1 (off) to 16 programs per tile, got {self.split_k}")
        if self.ahead not in (1, 2, 3):
            raise ValueError(f"WgmmaConfig.ahead must be 1, 2 or 3 steps of loads in flight, got {self.ahead}")
        if self.stages and not 3 <= self.stages <= 8:
            raise ValueError(f"WgmmaConfig.stages must be 0 (loads into registers) or 3..8, got {self.stages}")
        if self.stages and self.ahead != 1:
            raise ValueError(
                f"WgmmaConfig.ahead={self.ahead} with stages={self.stages}: with a ring every operand is copied "
                "stages - 1 steps ahead, so ahead must stay 1 (ahead only applies to loads into registers)"
            )
        if self.x_steps and (not self.stages or self.x_steps not in (2, 4, 8, 16, 32, 64)):
            raise ValueError(
                f"WgmmaConfig.x_steps={self.x_steps} with stages={self.stages}: x resident needs a weight ring "
                "(stages >= 3) and 2, 4, 8, 16, 32 or 64 steps at a time (0: x a step at a time)"
            )
        if self.W not in (1, 2) or (self.W > 1 and not self.sparse):
            raise ValueError(f"WgmmaConfig.W must be 1, or 2 MMA tiles per warpgroup in the sparse form, got {self.W}")
        if self.sparse and (not self.stages or self.T < 16 or self.T < 8 * self.U):
            raise ValueError(
                f"WgmmaConfig sparse with stages={self.stages}, T={self.T}, U={self.U}: the sparse form streams the "
                "weight words through a ring (stages >= 3) and needs T in 16..256 with T >= 8U (a thread's T/2 "
                "accumulator registers carry the U k-blocks' operands)"
            )
        if self.sparse and self.T * self.W > 256:
            raise ValueError(
                f"WgmmaConfig sparse with T={self.T}, W={self.W}: T * W must be at most 256 (a thread holds T * W / 2 "
                "fp32 accumulators, and 128 of them leave room for little else in its 255 registers)"
            )
        if self.sparse and self.x_steps and self.x_steps * self.T < 32 * self.stages * self.G * self.W:
            raise ValueError(
                f"WgmmaConfig sparse with x_steps={self.x_steps}, T={self.T}, stages={self.stages}, G={self.G}, "
                f"W={self.W}: x_steps * T must be at least 32 * stages * G * W, so that x's resident buffer is the "
                "largest in shared memory and lies at its start (gluon_wgmma_sparse._ring_offset)"
            )
        if self.sparse and self.T < 8 * self.G * self.W:
            raise ValueError(
                f"WgmmaConfig sparse with T={self.T}, G={self.G}, W={self.W}: T must be at least 8GW, so that x's "
                "ring is laid out before the metadata words' (gluon_wgmma_sparse._ring_offset)"
            )
        if self.cluster:
            self._check_cluster()
        if self.share != 1:
            self._check_share()

    def _check_cluster(self) -> None:
        if not self.sparse or self.split_k not in (2, 4, 8):
            raise ValueError(
                f"WgmmaConfig cluster with sparse={self.sparse}, split_k={self.split_k}: a tile's K splits meet in "
                "a cluster in the sparse form only, and a cluster holds 2, 4 or 8 of them"
            )
        if self.T < 2 * self.split_k:
            raise ValueError(
                f"WgmmaConfig cluster with T={self.T}, split_k={self.split_k}: each program of the cluster adds up "
                "T / split_k of the tile's tokens, which must be at least 2"
            )
        ring = (self.x_steps or self.stages) * 64 * self.T * self.U + self.stages * 2560 * self.G * self.W * self.U
        if self.cluster_partial_bytes > ring:
            raise ValueError(
                f"WgmmaConfig {self.label()}: the partial sum ({self.cluster_partial_bytes} bytes) must fit where "
                f"the rings were ({ring} bytes)"
            )

    def _check_share(self) -> None:
        if self.share not in (2, 4):
            raise ValueError(f"WgmmaConfig.share must be 1 (off), or 2 or 4 row tiles loading x once, got {self.share}")
        if not self.sparse or self.x_steps or self.U not in (2, 4) or self.T < 8 * self.share:
            raise ValueError(
                f"WgmmaConfig share={self.share} with sparse={self.sparse}, x_steps={self.x_steps}, "
                f"U={self.U}, T={self.T}: x shared by row tiles needs the sparse form with x streamed (x_steps 0), "
                "steps of 64 or 128 columns (U 2 or 4: whole 128-byte swizzled rows for the TMA) and T >= 8 * share "
                "(each program's part of the tokens whole 1024-byte swizzle blocks)"
            )
        if self.cluster and self.share * self.split_k > 8:
            raise ValueError(
                f"WgmmaConfig share={self.share} with cluster and split_k={self.split_k}: a cluster then holds "
                f"share * split_k = {self.share * self.split_k} programs, and at most 8 may run as one"
            )

    @property
    def cluster_partial_bytes(self) -> int:
        """Shared memory a program's fp32 partial sum takes in a cluster meet: token-major, each
        token's rows padded by 4 floats (``gluon_cluster``: no bank conflicts as it is stored)."""
        return 4 * self.T * (self.rows + 4)

    def grid(self, n: int, m: int) -> tuple[int, int, int]:
        """Programs of a call with ``n`` output rows and ``m`` tokens: row groups, token groups, K splits
        (with ``cluster`` the launch puts a tile's splits side by side along x instead; with ``share``
        the row groups are rounded up to a multiple of it, the last ones maybe past the weight)."""
        row_groups = -(-n // self.rows // self.share) * self.share
        return row_groups, -(-m // self.T), self.split_k

    def label(self) -> str:
        options = f"a{self.ahead}" * (self.ahead > 1) + f"c{self.stages}" * (self.stages > 0)
        options += f"x{self.x_steps}" * (self.x_steps > 0) + "s" * self.sparse
        tiles = f"w{self.W}" if self.W > 1 else ""
        split = (f"k{self.split_k}" if self.split_k > 1 else "") + "q" * self.cluster
        split += f"m{self.share}" * (self.share > 1)
        return f"g{self.G}{tiles}t{self.T}u{self.U}{options}{split}"

    @classmethod
    def from_label(cls, label: str) -> WgmmaConfig:
        """The configuration ``label()`` names."""
        m = re.fullmatch(
            r"g(\d+)(?:w(\d+))?t(\d+)u(\d+)(?:a(\d+))?(?:c(\d+))?(?:x(\d+))?(s)?(?:k(\d+))?(q)?(?:m(\d+))?", label)
        if not m:
            raise ValueError(
                f"not a wgmma label: {label!r} (expected g<G>[w<W>]t<T>u<U>[a<n>][c<n>][x<n>][s][k<n>][q][m<n>])")
        sparse, cluster = m.group(8) is not None, m.group(10) is not None
        g, w, t, u, ahead, stages, x_steps, _, split, _, share = (
            int(x) if x and x not in "sq" else None for x in m.groups())
        return cls(G=g, W=w or 1, T=t, U=u, ahead=ahead or 1, stages=stages or 0, x_steps=x_steps or 0,
                   split_k=split or 1, sparse=sparse, cluster=cluster, share=share or 1)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Sparse24Fragments(CompressedWeight):
    """A 2:4 weight ``[N, K]`` in mma.sp fragment order (see the module docstring)."""

    values: torch.Tensor  # int32 [NT, KB, 32, 4]
    meta: torch.Tensor  # int32 [NT, KB, 16]
    shape: tuple[int, int]  # dense (N, K)
    dtype: torch.dtype  # element type packed in ``values``
    meta_order: str = "pairs"  # see _meta_words
    _dense_cache: torch.Tensor | None = field(default=None, repr=False, compare=False)
    _launches: LaunchCache = field(default_factory=LaunchCache, repr=False, compare=False)

    layout = "fragments"

    def __post_init__(self) -> None:
        # the kernels index both tensors as dense arrays and read a lane's four value words as
        # one 16-byte access (``spmma``'s loads, the sparse ``wgmma`` form's copies)
        for name, t, tail in (("values", self.values, (32, 4)), ("meta", self.meta, (16,))):
            shape_ok = t.dim() == 2 + len(tail) and tuple(t.shape[2:]) == tail
            if t.dtype != torch.int32 or not shape_ok or not t.is_contiguous():
                layout = "contiguous" if t.is_contiguous() else "not contiguous"
                dims = ", ".join(map(str, tail))
                raise ValueError(
                    f"Sparse24Fragments.{name} must be a contiguous int32 tensor [NT, KB, {dims}], "
                    f"got {t.dtype} {tuple(t.shape)} ({layout})"
                )
        if self.meta.shape[:2] != self.values.shape[:2]:
            raise ValueError(
                f"Sparse24Fragments: meta has {tuple(self.meta.shape[:2])} (row tiles, k-blocks), values "
                f"{tuple(self.values.shape[:2])}; they must match"
            )
        if self.values.data_ptr() % 16:
            raise ValueError(
                "Sparse24Fragments.values must start on a 16-byte boundary (a lane's four words are read as one "
                f"16-byte access); it starts {self.values.data_ptr() % 16} bytes past one: pass a fresh copy (.clone())"
            )

    def fragments(self) -> Sparse24Fragments:
        return self

    def with_tensors(self, values: torch.Tensor, meta: torch.Tensor) -> Sparse24Fragments:
        """The same weight over other tensors (e.g. moved by ``Module.to``); no derived copies."""
        return Sparse24Fragments(values, meta, self.shape, self.dtype, self.meta_order)

    def to(self, device: torch.device | str) -> Sparse24Fragments:
        return self.with_tensors(self.values.to(device), self.meta.to(device))

    def groups(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Kept values ``v0, v1`` and codes, each ``[NT*16, KB*8]`` (padded) in natural order."""
        nt, kb = self.values.shape[:2]
        halves = self.values.view(self.dtype).reshape(nt, kb, 8, 4, 2, 2, 2)  # g, q, i//2, i%2, v
        # -> tile, row half (i%2), g, kblock, group half (i//2), q, v
        v = halves.permute(0, 5, 2, 1, 4, 3, 6).reshape(nt * ROWS, kb * GROUPS, 2)
        words = self.meta.reshape(nt, kb, 8, 2).to(torch.int64) & 0xFFFFFFFF
        shifts = torch.arange(8, device=self.device) * 4
        nibbles = ((words.unsqueeze(-1) >> shifts) & 0xF).reshape(nt, kb, 8, 2, 2, 4)
        if self.meta_order == "pairs":  # tile, kb, g, h, row half, group in half
            codes = nibbles.permute(0, 4, 2, 1, 3, 5)
        else:  # tile, kb, g, row half, h, group in half
            codes = nibbles.permute(0, 3, 2, 1, 4, 5)
        codes = codes.reshape(nt * ROWS, kb * GROUPS)
        return v[..., 0], v[..., 1], codes


def to_fragments(w: Sparse24Weight, meta_order: str | None = None) -> Sparse24Fragments:
    """Re-order a planar :class:`Sparse24Weight` into mma.sp fragment order (fp16/bf16 only).

    ``meta_order`` defaults to ``$REPRO_SPMMA_META_ORDER`` or ``"pairs"`` (see ``_meta_words``);
    the variable exists so that a GPU session can run the benchmark with the other reading if
    ``bench/spmma_probe.py`` finds that the hardware follows it."""
    meta_order = meta_order or os.environ.get("REPRO_SPMMA_META_ORDER", "pairs")
    if w.dtype not in FRAGMENT_DTYPES:
        raise ValueError(f"mma.sp fragments need fp16 or bf16 values, got {w.dtype}")
    n, k = w.shape
    nt, kb = -(-n // ROWS), -(-k // KBLOCK)
    v0, v1, codes = w.groups()
    pad = (0, kb * GROUPS - k // 4, 0, nt * ROWS - n)
    v0, v1 = torch.nn.functional.pad(v0, pad), torch.nn.functional.pad(v1, pad)
    codes = torch.nn.functional.pad(codes, pad, value=PAD_CODE)

    # values: [tile, row half, g, kblock, group half, q, v] -> [tile, kblock, g, q, group half, row half, v]
    v = torch.stack((v0, v1), dim=-1).reshape(nt, 2, 8, kb, 2, 4, 2)
    values = v.permute(0, 3, 2, 5, 4, 1, 6).contiguous().view(torch.int32).reshape(nt, kb, LANES, 4)

    meta = _meta_words(codes.reshape(nt, 2, 8, kb, 2, 4), meta_order)
    return Sparse24Fragments(values.contiguous(), meta, (n, k), w.dtype, meta_order)


def _meta_words(codes: torch.Tensor, meta_order: str) -> torch.Tensor:
    """int32 ``[NT, KB, 16]`` metadata words from codes ``[tile, row half, g, kblock, h, group in half]``.

    ``"pairs"`` (the PTX ISA's figure for m16n8k32 f16/bf16): word ``(g, h)`` holds groups
    ``4h..4h+3`` of row ``g`` (low 16 bits) and of row ``g + 8`` (high 16 bits).
    ``"rows"`` is the other reading of that figure, kept so that a GPU test can tell them apart:
    word ``(g, 0)`` holds all 8 groups of row ``g``, word ``(g, 1)`` those of row ``g + 8``.
    """
    nt, kb = codes.shape[0], codes.shape[3]
    if meta_order == "pairs":
        nibbles = codes.permute(0, 3, 2, 4, 1, 5)  # tile, kblock, g, h, (row half, group in half)
    elif meta_order == "rows":
        nibbles = codes.permute(0, 3, 2, 1, 4, 5)  # tile, kblock, g, row half, (h, group in half)
    else:
        raise ValueError(f"meta_order must be 'pairs' or 'rows', got {meta_order!r}")
    nibbles = nibbles.reshape(nt, kb, 8, 2, 8)
    shifts = torch.arange(8, device=codes.device) * 4
    words = (nibbles << shifts).sum(-1)  # disjoint nibbles: the sum is an OR
    words = torch.where(words >= 2**31, words - 2**32, words)  # as signed int32
    return words.to(torch.int32).reshape(nt, kb, 16).contiguous()
