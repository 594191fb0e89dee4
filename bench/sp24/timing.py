"""Timing on the GPU: single calls with the L2 flushed, back-to-back calls in a CUDA graph, host time.

The benchmark asks a timer both *where* to run (``device``) and *how long* a call took, so that
``tests/kernels/test_bench_dryrun.py`` can run the whole benchmark on the CPU with a timer of its own.
"""

from __future__ import annotations

import statistics
import time

import torch

FLUSH_BYTES = 512 << 20
SLEEP_CYCLES = 400_000  # ~200 us of GPU spin before each timed call
CYCLES_PER_US = 2_000  # the spin counts SM clock cycles: ~2 GHz on the H100 and H200 under load
MAX_SLEEP_CYCLES = 40_000_000  # ~20 ms: a first call that compiled must not stretch every rep


def sleep_cycles(host_us: float) -> int:
    """GPU spin before a timed call whose enqueue takes ``host_us`` of host time: long enough that
    the host has enqueued the call before the GPU reaches the start event, so the event pair times
    the GPU's work alone. 200 us covers our launches (15-45 us); torch's semi-structured call plans
    its cuSPARSELt product on the host each time (560-670 us in the H100 runs), which a fixed spin
    let into the timed window in some runs and not in others (213 and 329 us for one case)."""
    if host_us < 0:
        raise ValueError(f"host_us must be >= 0, got {host_us}")
    return int(min(MAX_SLEEP_CYCLES, max(SLEEP_CYCLES, (1.5 * host_us + 50) * CYCLES_PER_US)))


class Timer:
    """Median CUDA-event time of single calls, the L2 flushed (read) before each call."""

    device = "cuda"

    def __init__(self):
        self.flush_buf = torch.ones(FLUSH_BYTES // 4, dtype=torch.float32, device="cuda")
        self.sink = torch.empty((), dtype=torch.float32, device="cuda")

    def flush(self):
        torch.sum(self.flush_buf, dim=0, out=self.sink)

    def median_us(self, fn, reps: int = 30) -> float:
        return self.paired_us([fn], reps)[0]

    def paired_us(self, fns, reps: int = 30) -> list[float]:
        """``median_us`` of each of ``fns``, their calls interleaved (one of each per round): a
        comparison of two methods then sees the GPU in the same state for both, where timing one
        after the other lets a drift of clocks or memory between the two enter the ratio."""
        cycles = [self._spin_for(fn) for fn in fns]
        events = [[(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in fns]
                  for _ in range(reps)]
        for pairs in events:
            for fn, spin, (s, e) in zip(fns, cycles, pairs):
                self.flush()
                # GPU spin (no memory traffic) so that the host has enqueued fn before the start
                # event is reached, however long fn's host side takes (sleep_cycles)
                torch.cuda._sleep(spin)
                s.record()
                fn()
                e.record()
        torch.cuda.synchronize()
        return [statistics.median(pairs[i][0].elapsed_time(pairs[i][1]) * 1e3 for pairs in events)
                for i in range(len(fns))]

    @staticmethod
    def _spin_for(fn) -> int:
        """Warm ``fn`` up; its enqueue time then sets the spin before each of its timed calls."""
        for _ in range(2):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        return sleep_cycles((time.perf_counter() - t0) * 1e6)

    @staticmethod
    def streamed_us(fns, rounds: int = 4) -> float:
        """Per-call time of back-to-back calls cycling through several weight copies, no flush.

        Layer-by-layer inference: each call finds its weights cold (the copies together exceed
        the L2) but the GPU is never idle between calls. The calls are captured in one CUDA graph
        and replayed, so host launch overhead is excluded (as in graph-captured decoding).
        """
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for fn in fns:
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(rounds):
                for fn in fns:
                    fn()
        graph.replay()
        times = []
        for _ in range(5):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) * 1e3 / (rounds * len(fns)))
        del graph
        return statistics.median(times)

    @staticmethod
    def host_us(fn, calls: int = 30) -> float:
        """Host time to enqueue one call (launch overhead; the GPU is not waited for)."""
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        return (t1 - t0) / calls * 1e6

    def best_host_us(self, fn) -> float:
        """The host time of a warmed-up call, best of 3 x 200 calls."""
        for _ in range(20):
            fn()
        return min(self.host_us(fn, 200) for _ in range(3))

    @staticmethod
    def wall_us(fn, reps=30) -> float:
        """Median CUDA-event time of plain back-to-back calls (host launch time included)."""
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for _ in range(3):
            fn()
        for s, e in zip(starts, ends):
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends))

    def graph_us(self, fn) -> float:
        """``wall_us`` of ``fn`` captured once in a CUDA graph and replayed (no launch overhead)."""
        graph = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the capture, as CUDA graphs require
            fn()
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(graph):
            fn()
        return self.wall_us(graph.replay)
