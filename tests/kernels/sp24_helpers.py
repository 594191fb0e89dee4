"""Shared helpers of the kernel tests: random 2:4 weights, the error measure, and a model of one
warp-wide ``mma.sp.m16n8k32`` with the ``spmma`` kernel's addressing around it (no GPU needed)."""

import torch

from repro.pruning import nm_mask

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def random_24(n: int, k: int, dtype=torch.float16, device=DEVICE, seed: int = 0) -> torch.Tensor:
    """A random weight pruned 2:4 along K by magnitude (uniformly random patterns)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    return (w * nm_mask(w.abs(), 2, 4)).to(dtype=dtype, device=device)


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    """max |y - ref| / max |ref| (NaN-propagating)."""
    y, ref = y.detach().double(), ref.detach().double()
    return float((y - ref).abs().max() / ref.abs().max())


def _lanes():
    lane = torch.arange(32)
    return lane, lane // 4, lane % 4


def metadata_bits(row: int, group: int, reading: str = "pairs") -> tuple[int, int]:
    """(lane, bit shift) of the 4-bit code of one (row, group) of an m16n8k32 A tile.

    ``"pairs"`` is the PTX ISA's figure: lane ``4g + h`` (g = row % 8) holds groups ``4h..4h+3`` of
    rows g (low half-word) and g + 8 (high). ``"rows"`` models hardware that read the figure the
    other way (lane ``4g`` all of row g, lane ``4g + 1`` all of row g + 8), so that tests can check
    that a wrong reading is noticed and named."""
    if reading == "pairs":
        return 4 * (row % 8) + group // 4, 16 * (row // 8) + 4 * (group % 4)
    return 4 * (row % 8) + row // 8, 4 * group


def ptx_mma_sp(a_regs, b_regs, e_words, c, meta_reading="pairs"):
    """One ``mma.sp.m16n8k32`` (selector 0) from per-lane registers, as the PTX ISA defines it.

    a_regs [32, 4, 2] and b_regs [32, 4, 2] hold two 16-bit elements per register, e_words [32]
    the metadata words, c [32, 4] the accumulators. Returns d [32, 4] = A @ B + C per lane.
    """
    lane, g, q = _lanes()
    a = torch.zeros(16, 32, dtype=torch.float64)
    for row in range(16):
        for group in range(8):
            src = 4 * (row % 8) + group % 4  # the lane holding these two values
            reg = row // 8 + 2 * (group // 4)
            meta_lane, shift = metadata_bits(row, group, meta_reading)  # lanes q = 0, 1 give metadata
            code = (int(e_words[meta_lane]) & 0xFFFFFFFF) >> shift & 0xF
            a[row, 4 * group + (code & 3)] = a_regs[src, reg, 0]
            a[row, 4 * group + (code >> 2)] = a_regs[src, reg, 1]
    b = torch.zeros(32, 8, dtype=torch.float64)
    for k in range(32):
        for n in range(8):
            b[k, n] = b_regs[4 * n + (k % 8) // 2, k // 8, k % 2]
    d = a @ b
    out = c.clone()
    for reg in range(4):
        out[:, reg] += d[g + 8 * (reg // 2), 2 * q + reg % 2]
    return out


def emulate_spmma(x: torch.Tensor, frags, meta_reading: str = "pairs") -> torch.Tensor:
    """The ``spmma`` kernel's loads, MMAs and stores for one warp per (tile, 8-token block)."""
    m, k = x.shape
    n = frags.shape[0]
    nt, kb_count = frags.values.shape[:2]
    values = frags.values.view(x.dtype).reshape(nt, kb_count, 32, 4, 2).double()
    x_pairs = torch.nn.functional.pad(x.double(), (0, kb_count * 32 - k)).reshape(m, -1, 2)
    lane, g, q = _lanes()
    y = torch.zeros(m, n, dtype=torch.float64)
    for tile in range(nt):
        for m0 in range(0, m, 8):
            acc = torch.zeros(32, 4, dtype=torch.float64)
            token = m0 + g
            for kb in range(kb_count):
                a = values[tile, kb]  # lane, register, half: the kernel's a_base + kb * 128
                e = frags.meta[tile, kb, 2 * g + lane % 2]  # the kernel's e_base + kb * 16
                b = torch.zeros(32, 4, 2, dtype=torch.float64)
                for reg in range(4):
                    pair = kb * 16 + q + 4 * reg  # the kernel's x_base + kb * 16
                    ok = token < m
                    b[ok, reg] = x_pairs[token[ok], pair[ok]]
                acc = ptx_mma_sp(a, b, e, acc, meta_reading)
            for reg in range(4):  # the kernel's store: row g + 8 (reg // 2), token 2q + reg % 2
                rows = tile * 16 + g + 8 * (reg // 2)
                tokens = m0 + 2 * q + reg % 2
                ok = (rows < n) & (tokens < m)
                y[tokens[ok], rows[ok]] = acc[ok, reg]
    return y
