"""The host's time to launch one decode-size product of ours, measured on a machine without a GPU.

    PYTHONPATH=lib python bench/host_launch.py [--calls 20000] [--out bench/results]

Without CUDA graphs a decode step launches every layer's kernel one after the other, and a
decode-size product takes about 10 µs on the GPU, so the host's time per launch sets the pace.
This takes that time apart for a 4096×4096 weight in fragment order, with the kernel and tiling
the committed H200 table (``dispatch_sm90_h200.json``) picks at 1 and at 16 tokens (``spmma`` in the
table committed with this script). Everything runs for real, Triton's own Python included (its
launch path, the compiled kernel's ``launch_metadata``, the launcher's Python wrapper), except
two things: the launcher's native part, a stand-in that calls the launch hooks as the native one
does and launches nothing, and the GPU driver, a stand-in that reports device 0 and its stream.
So each figure is Python's share of the path, the part ``fast_launch`` and the bound launches
change. The native launcher (reading each argument, a driver check per tensor pointer,
``cuLaunchKernel``) and the GPU come on top; the GPU run's host probe (``bench/sp24/dispatcher.py``)
measures the whole.

Rows, from the kernel outwards:

- Triton's launch, ``kernel[grid](...)``, on arguments built beforehand;
- ``fast_launch.launch`` on the same arguments;
- the chosen method's route without a bound launch (``run_choice``: the arguments built, then
  ``fast_launch``), the choice looked up first;
- the whole route after ``sparse24_matmul``'s input checks (``dispatch._product``), which from
  the second call launches the layer's bound launch, with x as [M, K] and as [M, 1, K];
- the same route with fast launch off: every call through Triton's path;
- the bound launch alone, and the output allocation every route makes.

Each row is first checked to take the way it names, in a few calls with counters wrapped around
Triton's path and the bound launch, and the native launch counting its calls; the timed passes
run without the wrappers.
The result is the best of three passes of ``--calls`` calls each, written to
``cpu-host-launch.json`` and ``.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("host_launch.py measures Triton's compiled-kernel path: unset TRITON_INTERPRET")
if os.environ.get("REPRO_FAST_LAUNCH") == "0":
    sys.exit("host_launch.py compares the launch paths, fast launch among them: unset REPRO_FAST_LAUNCH")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.backends.nvidia.driver import CudaLauncher  # noqa: E402
from triton.compiler.compiler import CompiledKernel  # noqa: E402
from triton.runtime.driver import driver  # noqa: E402

from repro.kernels import compress_24, dispatch, fast_launch, triton_sp24  # noqa: E402

N = K = 4096
TOKENS = (1, 16)


class StandInDriver:
    """The GPU driver as Triton's launch path and ``fast_launch`` use it: device 0, stream 0, an
    sm_90 target."""

    def get_current_device(self):
        return 0

    def get_current_stream(self, device):
        return 0

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)


class StandInKernel:
    """A compiled kernel as Triton's launch paths use it, with Triton's own Python parts (its
    ``launch_metadata``, its launcher's Python wrapper) and only the native launch replaced: by
    a stand-in that calls the launch hooks as the native one does, and counts."""

    function, packed_metadata, name, src = 0, (), "stand_in", None  # no source: no metadata function
    module = object()  # "loaded": Triton's _init_handles returns at once
    launch_metadata = CompiledKernel.launch_metadata
    _init_handles = CompiledKernel._init_handles

    def __init__(self):
        self.launches = 0
        launcher = object.__new__(CudaLauncher)  # its Python wrapper, around the native launch below
        launcher.__dict__.update(
            num_ctas=1, global_scratch_size=0, global_scratch_align=1, profile_scratch_size=0,
            profile_scratch_align=1, launch_cooperative_grid=False, launch_pdl=False, arg_annotations=None,
            kernel_signature=None, launch=self._native_launch,
        )
        self.run = launcher

    def _native_launch(self, *launch_args):
        metadata, enter, leave = (launch_args[i] for i in _HOOK_ARGUMENTS)
        for hook in (enter, leave):
            if hook is not None:
                hook(metadata)
        self.launches += 1


# where the native launch finds the launch metadata and the enter and exit hooks: Triton 3.7
# hands them over named, before the scratch buffers; 3.6 after them, among the kernel's arguments
_NAMED_HOOKS = "launch_enter_hook" in inspect.signature(CudaLauncher.__call__).parameters
_HOOK_ARGUMENTS = (8, 9, 10) if _NAMED_HOOKS else (10, 11, 12)


def stand_in_compiler(fn, kernel: StandInKernel) -> None:
    """Triton's path for ``fn`` as it is, except that a compile puts ``kernel`` in Triton's cache
    under the key Triton computed. It hashes the kernel's source as a real compile does: that
    records the globals the kernel reads, which Triton's path then checks on every launch (about
    2.5 µs a call here; leaving it out would understate that path)."""

    def do_compile(key, signature, device, constexprs, options, attrs, warmup):
        fn.cache_key  # noqa: B018 (the source hash, for what it records)
        fn.device_caches[device][0][key] = kernel
        return kernel

    fn._do_compile = do_compile


@contextmanager
def counting_ways(fn):
    """Counts, while inside, the calls through Triton's path for ``fn`` and those of a bound
    launch (wrappers the timed passes run without)."""
    counts = {"triton": 0, "bound": 0}
    run, bound_call = fn.run, fast_launch.BoundLaunch.__call__

    def counted(way, call):
        def counted_call(*args, **kwargs):
            counts[way] += 1
            return call(*args, **kwargs)

        return counted_call

    fn.run = counted("triton", run)
    fast_launch.BoundLaunch.__call__ = counted("bound", bound_call)
    try:
        yield counts
    finally:
        del fn.run  # the class's own again
        fast_launch.BoundLaunch.__call__ = bound_call


def check_way(name: str, call, way: str | None, fn, kernel: StandInKernel, calls: int = 5) -> None:
    """Each of ``calls`` calls reaches the native launch once and takes the way the row names
    (Triton's path, the bound launch) every time, or neither of those ever."""
    launches = kernel.launches
    with counting_ways(fn) as counts:
        for _ in range(calls):
            call()
    if kernel.launches - launches != calls:
        raise SystemExit(f"{name}: {kernel.launches - launches} launches reached the launcher in {calls} calls")
    for path in ("triton", "bound"):
        if counts[path] != (calls if way == path else 0):
            raise SystemExit(f"{name}: {counts[path]} of {calls} calls went the {path} way")


def best_us(call, calls: int) -> float:
    for _ in range(min(calls, 500)):
        call()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


def measure(calls: int) -> list[dict]:
    driver.set_active(StandInDriver())
    dispatch.arch_name = lambda device: "sm90"  # the committed H200 table, as on that GPU
    dispatch.gpu_name = lambda device: "NVIDIA H200"
    dispatch._sm_count = lambda device: 132
    kernel = StandInKernel()
    dense = torch.zeros(N, K, dtype=torch.float16)
    dense[:, ::2] = 1  # 2:4 along K
    weight = compress_24(dense).fragments()
    rows = []
    for m in TOKENS:
        x = torch.randn(m, K, dtype=torch.float16)
        out = torch.empty(m, N, dtype=torch.float16)
        choice = dispatch.choose(weight, m)
        if choice.method in dispatch.LIBRARY_METHODS:
            raise SystemExit(f"the committed table picks {choice.method} at M = {m}, no kernel of ours: update TOKENS")
        fn, grid, args, options = triton_sp24.kernel_call(choice.method, x, weight, None, out, choice.config)
        stand_in_compiler(fn, kernel)
        x_tokens = x.view(m, 1, K)
        for first in (x, x_tokens):  # the layer's first calls: bind their launches
            dispatch._product(first, weight, None, 0)
        bound = weight._launches[dispatch._launch_key(x, weight, None)].launch
        paths = {
            "Triton's launch, kernel[grid](...)": (lambda: fn[grid](*args, **options), "triton"),
            "fast_launch.launch": (lambda: fast_launch.launch(fn, grid, args, options), None),
            "route without a bound launch (choice, run_choice)": (
                lambda: dispatch.run_choice(dispatch.choose(weight, m), x, weight, None),
                None,
            ),
            "route after the input checks, launch bound (_product)": (
                lambda: dispatch._product(x, weight, None, 0),
                "bound",
            ),
            "the same, x as [M, 1, K] (a model's decode step)": (
                lambda: dispatch._product(x_tokens, weight, None, 0),
                "bound",
            ),
            "route after the input checks, fast launch off": (_turned_off(dispatch._product, x, weight), "triton"),
            "bound launch alone": (lambda: bound(x, out), "bound"),
        }
        for name, (call, way) in paths.items():
            check_way(name, call, way, fn, kernel)
            label = f"{choice.method} {choice.config.label()}"
            rows.append(dict(M=m, call=name, cfg=label, us=round(best_us(call, calls), 2)))
        allocation = best_us(lambda: x.new_empty((m, N)), calls)
        rows.append(dict(M=m, call="output allocation (x.new_empty)", cfg="", us=round(allocation, 2)))
    return rows


def _turned_off(product, x, weight):
    def call():
        with fast_launch.turned_off():
            product(x, weight, None, 0)

    return call


def machine() -> dict:
    return dict(
        date=datetime.date.today().isoformat(),
        cpu=platform.processor() or platform.machine(),
        cpus=os.cpu_count(),
        python=platform.python_version(),
        torch=torch.__version__,
        triton=triton.__version__,
    )


def markdown(rows: list[dict], info: dict, calls: int) -> str:
    lines = [
        "# Host time of one decode-size launch, Python's share (no GPU: the driver and the native launch stubbed)",
        "",
        f"{info['date']}; {info['cpu']}, {info['cpus']} CPUs; Python {info['python']}, torch {info['torch']}, "
        f"Triton {info['triton']}. 4096×4096 fp16 weight in fragment order, the kernel and tiling the "
        f"committed sm_90 table picks; best of 3 passes of {calls} calls. `bench/host_launch.py`.",
        "",
        "| M | kernel, tiling | call | µs |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['M']} | {r['cfg']} | {r['call']} | {r['us']:.2f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="calls per pass (3 passes, the best kept)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.calls < 1:
        parser.error(f"--calls must be at least 1, got {args.calls}")
    rows = measure(args.calls)
    info = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu-host-launch.json").write_text(json.dumps(dict(info, calls=args.calls, rows=rows), indent=1))
    report = markdown(rows, info, args.calls)
    (args.out / "cpu-host-launch.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
