"""Launching a Triton or Gluon kernel again without Triton binding its arguments on every call.

A decode step launches each layer's kernel once per token, with the same shapes every time, and
a decode-size product takes about 10 µs on the GPU, so the host's time per launch decides eager
decode. Triton's ``fn[grid](*args, **options)`` spends most of its share re-deriving what it
derived on the previous call: it binds every argument against the signature, computes each one's
specialization (a pointer's 16-byte alignment, an integer's divisibility by 16, an integer 1
compiled as a constant), hashes those with the options into a cache key and looks the compiled
kernel up. ``launch`` does that once per distinct specialization and afterwards calls the compiled
kernel's launcher directly, with exactly the arguments Triton's own path passes.

Its key has to separate every two calls that Triton would compile apart, or a kernel compiled for
aligned pointers would run on unaligned ones. It keeps, per argument, at least what Triton
specializes on: a tensor's dtype and 16-byte alignment; an integer's type, whether it is 1,
whether 16 divides it, and whether it fits 32 and 64 bits; any other value itself
(``tests/kernels/test_fast_launch.py`` checks it against Triton's own binder). It falls back to
Triton's path wherever Triton would do more than launch: an interpreted or emulated kernel (no
``JITFunction``), a grid given as a function, pre-run hooks, a stage-inspection hook (the ablation
rewrites the compiled code), debug mode or instrumentation. ``set_fast_launch(False)``, or
``REPRO_FAST_LAUNCH=0`` in the environment, turns it off.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from triton import knobs
from triton.runtime.driver import driver
from triton.runtime.jit import JITFunction

_state = {"enabled": os.environ.get("REPRO_FAST_LAUNCH", "1") != "0"}
_plans: dict[tuple, _Plan] = {}


def set_fast_launch(enabled: bool) -> None:
    """Whether ``launch`` reuses compiled kernels (on) or always goes through Triton's path."""
    _state["enabled"] = bool(enabled)


@contextmanager
def turned_off():
    """Every launch inside the block through Triton's own path; afterwards the setting before it
    (which ``REPRO_FAST_LAUNCH=0`` may have made off already)."""
    before = _state["enabled"]
    _state["enabled"] = False
    try:
        yield
    finally:
        _state["enabled"] = before


@dataclass(frozen=True)
class _Plan:
    kernel: object  # triton.compiler.CompiledKernel
    tail: tuple  # the values Triton binds to the parameters after the positional arguments


def arg_key(value) -> tuple:
    """What of one runtime argument the compiled kernel depends on (at least what Triton's
    specialization keeps of it)."""
    kind = type(value)
    if kind is int:  # 1 is compiled in as a constant; others as i32, i64 or u64, divisible by 16 or not
        return 1 if value == 1 else (value % 16 == 0, -_I32 <= value < _I32, -_I64 <= value < _I64)
    if kind is torch.Tensor or isinstance(value, torch.Tensor):
        return (value.dtype, value.data_ptr() % 16 == 0)
    return (kind, value)  # bool, float, None, ...: the value itself


_I32, _I64 = 2**31, 2**63


def _eligible(fn, grid) -> bool:
    if not _state["enabled"] or callable(grid):
        return False
    if not isinstance(fn, JITFunction) or fn.pre_run_hooks:
        return False
    runtime = knobs.runtime
    return not (
        runtime.debug or runtime.add_stages_inspection_hook is not None or knobs.compilation.instrumentation_mode
    )


def _tail(fn, args: tuple, options: dict) -> tuple | None:
    """The values Triton's binder gives the parameters past ``args``: from ``options``, else the
    parameter's default (None where one has neither: then Triton's path raises, not ours)."""
    tail = []
    for param in fn.params[len(args) :]:
        if param.name in options:
            tail.append(options[param.name])
        elif param.has_default:
            tail.append(param.default)
        else:
            return None
    return tuple(tail)


def _device_and_stream():
    device = driver.active.get_current_device()
    return device, driver.active.get_current_stream(device)


def launch(fn, grid: tuple, args: tuple, options: dict, warmup: bool = False) -> None:
    """``fn[grid](*args, **options)``; after the first call with a given specialization, the
    compiled kernel's launcher straight away (see the module docstring). ``warmup=True`` only
    compiles (``fn.warmup``, usable under ``triton.AsyncCompileMode``)."""
    if warmup:
        fn.warmup(*args, grid=grid, **options)
        return
    if not _eligible(fn, grid):
        fn[grid](*args, **options)
        return
    device, stream = _device_and_stream()
    key = (fn, device, tuple(options.items()), *map(arg_key, args))
    plan = _plans.get(key)
    if plan is None:
        kernel = fn.run(*args, grid=grid, warmup=False, **options)  # compiles if needed, launches
        if hasattr(kernel, "result"):  # a kernel that was compiled asynchronously
            kernel = kernel.result()
        tail = _tail(fn, args, options)
        if kernel is not None and tail is not None:
            _plans[key] = _Plan(kernel, tail)
        return
    kernel, full = plan.kernel, (*args, *plan.tail)
    size = len(grid)
    kernel.run(
        grid[0],
        grid[1] if size > 1 else 1,
        grid[2] if size > 2 else 1,
        stream,
        kernel.function,
        kernel.packed_metadata,
        kernel.launch_metadata(grid, stream, *full),  # for launch hooks (profilers), as Triton does
        knobs.runtime.launch_enter_hook,
        knobs.runtime.launch_exit_hook,
        *full,
    )
