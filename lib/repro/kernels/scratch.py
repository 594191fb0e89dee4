"""Buffers that split-K launches keep between calls, one set per device.

``split_flags``: int32 counters, one per output tile, zeroed once; every launch leaves them at 0
(the split that finishes a tile resets its counter), so no memset is launched per call.
``split_workspace``: fp32 room for the splits' partial sums; grown, never shrunk, never cleared
(each launch writes what it reads).

Both are shared by every split-K launch on a device: such launches on concurrent streams of one
device are not supported, and the first one (which allocates) must come before any CUDA-graph
capture. A buffer outgrown by a later launch is kept, not freed, because a graph captured
earlier still points at it.
"""

from __future__ import annotations

import torch

_flags: dict[torch.device, torch.Tensor] = {}
_workspaces: dict[torch.device, torch.Tensor] = {}
_outgrown: list[torch.Tensor] = []


def split_flags(device: torch.device, tiles: int) -> torch.Tensor:
    """At least ``tiles`` zeroed int32 counters on ``device``."""
    return _at_least(_flags, device, max(tiles, 1 << 14), lambda n: torch.zeros(n, dtype=torch.int32, device=device))


def split_workspace(device: torch.device, numel: int) -> torch.Tensor:
    """At least ``numel`` fp32 elements on ``device`` (contents undefined)."""
    return _at_least(_workspaces, device, max(numel, 1 << 16), lambda n: torch.empty(n, device=device))


def _at_least(cache: dict, device: torch.device, numel: int, make) -> torch.Tensor:
    """``cache[device]``, replaced by ``make(numel)`` when smaller; the old buffer is kept alive."""
    buffer = cache.get(device)
    if buffer is None or buffer.numel() < numel:
        if buffer is not None:
            _outgrown.append(buffer)
        buffer = cache[device] = make(numel)
    return buffer
