"""The floor of a single call: the time a kernel that does nothing but read ``nbytes`` takes.

Any product of a decode-size layer pays a launch, a first memory round trip and a last wave
before it pays for bytes; a kernel that only reads the bytes (linearly, in large coalesced
blocks, and XORs them into one word per program so the loads are not optimised away) pays the
same and nothing else. Timed like every other method (one call, L2 flushed), its line
``time = intercept + bytes / rate`` over the K sweep (``kscan.py``) is the best intercept and
rate a kernel streaming that many bytes could have on this GPU, the yardstick for both cuBLAS and
ours.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# (words per block, blocks per program, warps): small and large programs, the fastest is kept
CONFIGS = ((2048, 4, 4), (4096, 4, 8), (8192, 2, 8), (1024, 8, 4))


@triton.jit
def _read_kernel(words_ptr, folded_ptr, n_words, BLOCK: tl.constexpr, BLOCKS: tl.constexpr):
    start = tl.program_id(0).to(tl.int64) * BLOCK * BLOCKS
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    for i in tl.static_range(BLOCKS):
        offs = start + i * BLOCK + tl.arange(0, BLOCK)
        acc ^= tl.load(words_ptr + offs, mask=offs < n_words, other=0)
    tl.store(folded_ptr + tl.program_id(0), tl.xor_sum(acc, axis=0))


def read_call(words: torch.Tensor, config):
    """A callable that reads all of ``words`` (int32, 1-D) once, and its output buffer."""
    block, blocks, warps = config
    grid = triton.cdiv(words.numel(), block * blocks)
    folded = torch.empty(grid, dtype=torch.int32, device=words.device)

    def call():
        _read_kernel[(grid,)](words, folded, words.numel(), BLOCK=block, BLOCKS=blocks, num_warps=warps)
        return folded

    return call


def _xor_all(t: torch.Tensor) -> int:
    """XOR of all elements, by halving (torch has no XOR reduction)."""
    t = t.flatten()
    while t.numel() > 1:
        if t.numel() % 2:
            t = torch.cat([t, t.new_zeros(1)])
        t = t[0::2] ^ t[1::2]
    return int(t[0]) if t.numel() else 0


def check(words: torch.Tensor, folded: torch.Tensor) -> bool:
    """Whether the programs' folded words XOR to the XOR of all words: every word was read once."""
    return _xor_all(folded) == _xor_all(words)


def time_read(timer, nbytes: int) -> tuple[float, tuple]:
    """The fastest of ``CONFIGS`` reading ``nbytes`` (a multiple of 4): (us, config)."""
    words = torch.randint(-(2**31), 2**31 - 1, (nbytes // 4,), dtype=torch.int32, device=timer.device)
    best = None
    for config in CONFIGS:
        call = read_call(words, config)
        if not check(words, call()):
            raise RuntimeError(f"read kernel {config} missed words of a {nbytes}-byte buffer")
        us = timer.median_us(call)
        if best is None or us < best[0]:
            best = (us, config)
    return best
