"""Where does each register slot of the ``spmma`` kernel land? A map read off its outputs.

``bench/spmma_probe.py`` checks whole products. When a product is wrong, that says nothing about
*which* part of the fragment layout (``repro.kernels.fragments``) the hardware reads differently,
and a GPU session is too short to find out by trial. This map finds out in one pass: it runs a
tiny product (two 16-row tiles, two 32-column k-blocks, 8 tokens) once per experiment, each with a
single distinguishable input, and reads back from the output where it went.

- **A values** (256 experiments): one fp16 slot ``(lane, register, half)`` of the first tile holds
  1.0, everything else 0; every metadata code is ``(1, 3)``. With ``x[t, k] = k + 1 + 64 t`` the
  output is non-zero in one row ``n`` only, with value ``x[t, k]``: that gives the row and the k the
  slot was multiplied with, and which token fed which output column.
- **Metadata** (128 experiments): all values of the first tile are 1.0 and every code is
  ``(0, 1)`` except one 4-bit code, set to ``(0, 3)``. With ``x[t, k] = k // 4 + 1 + 64 t`` on
  positions ``k % 4 == 3`` (0 elsewhere) only the row whose group that code describes picks up
  ``x``: that gives the row and the group each (word, nibble) describes.

Both are compared with the layout documented in ``fragments.py``; the metadata map also with the
other reading of the PTX figure (``"rows"``). The launcher is a parameter, so the same code runs
against the CPU warp model in the tests.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from repro.kernels.fragments import Sparse24Fragments

N, K, M = 32, 64, 8  # two row tiles, two k-blocks, one block of 8 tokens
TILES, KBLOCKS = N // 16, K // 32
TOKEN_STRIDE = 64  # x[t, k] = (index + 1) + 64 t: exact in fp16 up to t = 7 (max 512)
CODE_VALUES = 0b1101  # positions (1, 3): v0 at k = 4 group + 1, v1 at 4 group + 3
CODE_BASE = 0b0100  # positions (0, 1)
CODE_PROBE = 0b1100  # positions (0, 3)

# a launcher: (x [M, K] fp16, weight in fragment order, out [M, N] fp16) -> fills out
Launch = Callable[[torch.Tensor, Sparse24Fragments, torch.Tensor], object]


def _signed(word: int) -> int:
    """A 32-bit word as the int32 that stores it."""
    return word - (1 << 32) if word >= 1 << 31 else word


def _words(code: int) -> torch.Tensor:
    """Metadata words [TILES, KBLOCKS, 16], every nibble ``code``, as signed int32."""
    return torch.full((TILES, KBLOCKS, 16), _signed(sum(code << (4 * j) for j in range(8))), dtype=torch.int32)


def _x(on_positions: Callable[[torch.Tensor], torch.Tensor], index: Callable[[torch.Tensor], torch.Tensor]):
    k = torch.arange(K)
    t = torch.arange(M).unsqueeze(1)
    return torch.where(on_positions(k), index(k) + 1 + TOKEN_STRIDE * t, 0).half()


def read_output(out: torch.Tensor) -> dict | None:
    """``{"row", "index", "tokens"}`` if ``out`` [M, N] is non-zero in exactly one column ``row``
    and every token's value decodes as ``index + 1 + 64 t'`` with one ``index``; ``tokens[t] = t'``
    (the identity when the tokens are wired right). None otherwise (see :func:`raw_hits`)."""
    out = out.detach().double().cpu()
    if not bool(torch.isfinite(out).all()):
        return None
    rows = torch.nonzero(out.abs().sum(0)).flatten().tolist()
    if len(rows) != 1:
        return None
    values = out[:, rows[0]]
    if not bool((values == values.round()).all()) or not bool((values >= 1).all()):
        return None
    index = {int(v - 1) % TOKEN_STRIDE for v in values}
    if len(index) != 1:
        return None
    tokens = [int(v - 1) // TOKEN_STRIDE for v in values]
    return {"row": rows[0], "index": index.pop(), "tokens": tokens}


def raw_hits(out: torch.Tensor, limit: int = 8) -> list:
    """The first non-zero or non-finite entries of ``out`` as ``[token, row, value]``."""
    out = out.detach().float().cpu()
    bad = torch.nonzero((out != 0) | ~torch.isfinite(out))[:limit]
    return [[int(t), int(n), float(out[t, n])] for t, n in bad]


def _run(launch: Launch, x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor, device) -> dict:
    frags = Sparse24Fragments(values.to(device), meta.to(device), (N, K), torch.float16)
    out = torch.full((M, N), float("nan"), dtype=torch.float16, device=device)  # poisoned
    launch(x.to(device), frags, out)
    read = read_output(out)
    return read if read is not None else {"raw": raw_hits(out)}


def value_map(launch: Launch, device="cpu") -> list[dict]:
    """One record per A-register slot ``(lane, reg, half)`` of tile 0, k-block 0."""
    x = _x(lambda k: torch.ones_like(k, dtype=torch.bool), lambda k: k)
    meta = _words(CODE_VALUES)
    records = []
    for lane in range(32):
        for reg in range(4):
            for half in range(2):
                values = torch.zeros(TILES, KBLOCKS, 32, 4, 2, dtype=torch.float16)
                values[0, 0, lane, reg, half] = 1.0
                got = _run(launch, x, values.view(torch.int32).squeeze(-1), meta, device)
                records.append({"lane": lane, "reg": reg, "half": half, **got})
    return records


def meta_map(launch: Launch, device="cpu") -> list[dict]:
    """One record per 4-bit code ``(word, nibble)`` of tile 0, k-block 0; ``index`` is the group."""
    x = _x(lambda k: k % 4 == 3, lambda k: k // 4)
    values = torch.zeros(TILES, KBLOCKS, 32, 4, 2, dtype=torch.float16)
    values[0, 0] = 1.0
    values = values.view(torch.int32).squeeze(-1)
    records = []
    for word in range(16):
        for nibble in range(8):
            meta = _words(CODE_BASE)
            bits = (int(meta[0, 0, word]) & 0xFFFFFFFF) & ~(0xF << 4 * nibble) | CODE_PROBE << 4 * nibble
            meta[0, 0, word] = _signed(bits)
            got = _run(launch, x, values, meta, device)
            records.append({"word": word, "nibble": nibble, **got})
    return records


def expected_value(lane: int, reg: int, half: int) -> tuple[int, int]:
    """(row, k) of an A slot as ``fragments.py`` lays it out, with every code ``(1, 3)``."""
    g, q = divmod(lane, 4)
    group = q + 4 * (reg // 2)
    return g + 8 * (reg % 2), 4 * group + (1 if half == 0 else 3)


def expected_meta(word: int, nibble: int, order: str) -> tuple[int, int]:
    """(row, group) that nibble ``nibble`` of metadata word ``word`` (lane ``4g + h``) describes."""
    g, h = divmod(word, 2)
    if order == "pairs":
        return g + 8 * (nibble // 4), 4 * h + nibble % 4
    return g + 8 * h, nibble


def _position(record: dict):
    if "row" not in record or record["tokens"] != list(range(M)):
        return None
    return record["row"], record["index"]


def value_mismatches(records: list[dict]) -> list[dict]:
    return [r for r in records if _position(r) != expected_value(r["lane"], r["reg"], r["half"])]


def meta_mismatches(records: list[dict], order: str) -> list[dict]:
    return [r for r in records if _position(r) != expected_meta(r["word"], r["nibble"], order)]


def _example(record: dict, expected: tuple[int, int], what: str) -> str:
    got = (
        f"row {record['row']} {what} {record['index']} tokens {record['tokens']}"
        if "row" in record
        else f"raw output {record['raw']}"
    )
    return f"expected row {expected[0]} {what} {expected[1]}, got {got}"


def describe(values: list[dict], meta: list[dict], examples: int = 4) -> list[str]:
    """Lines for a person: how many slots follow the documented layout, and the first that do not."""
    lines = []
    wrong = value_mismatches(values)
    lines.append(f"A values: {len(values) - len(wrong)}/{len(values)} slots as documented")
    for r in wrong[:examples]:
        where = f"  lane {r['lane']} reg {r['reg']} half {r['half']}: "
        lines.append(where + _example(r, expected_value(r["lane"], r["reg"], r["half"]), "k"))
    fits = {order: len(meta) - len(meta_mismatches(meta, order)) for order in ("pairs", "rows")}
    best = max(fits, key=fits.get)
    lines.append(f"metadata: {fits['pairs']}/{len(meta)} codes as 'pairs', {fits['rows']}/{len(meta)} as 'rows'")
    for r in meta_mismatches(meta, best)[:examples]:
        where = f"  word {r['word']} nibble {r['nibble']}: "
        lines.append(where + _example(r, expected_meta(r["word"], r["nibble"], best), "group"))
    return lines
