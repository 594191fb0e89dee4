"""How many memory round trips one iteration of a kernel's main loop waits for, read from its SASS.

A decode-size GEMM streams its weights, so its speed is set by the bytes each SM keeps in flight:
how many loads a warp has issued before it must wait for one of them. That is decided by ptxas's
schedule and register allocation, not by the PTX (ptxas may sink a load below an instruction that
waits, reuse a just-loaded register, or copy prefetched registers at the end of the loop, which
waits for them), and it can be read without a GPU: disassemble the compiled loop and follow its
register dependencies.

The model is one warp issuing in order, one instruction per cycle, each global load's (``LDG``)
result ready ``latency`` cycles after issue and every other result the next cycle (loads through
shared memory, ``cp.async`` or TMA are not modeled: this kernel's loop has none). Run for several
iterations, the steady-state iteration time minus its instruction count, divided by the latency,
is the number of round trips to memory one iteration waits for: 1 when every load is consumed in
the iteration that issues it, 2 when one load is issued only after another's result was waited
for, about 1 per two steps for a loop that consumes each load half an iteration after issuing it.
It measures the schedule's memory parallelism per warp, not time: bandwidth, other warps and cache
hits are outside it.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_REG = re.compile(r"\bR(\d+)\b(\.64)?")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):\s*$")
_BRANCH = re.compile(r"BRA\s+`\((\.L_x_\d+)\)")


@dataclass(frozen=True)
class Instr:
    op: str
    writes: tuple[int, ...]
    reads: tuple[int, ...]

    @property
    def is_global_load(self) -> bool:
        return self.op.startswith("LDG")


def _registers(operand: str, width: int = 1) -> list[int]:
    """General registers named by one operand; ``R4.64`` is a pair, ``width`` widens the first."""
    found = []
    for match in _REG.finditer(operand):
        n = 2 if match.group(2) else width
        found += range(int(match.group(1)), int(match.group(1)) + n)
        width = 1
    return found


def parse_instruction(line: str) -> Instr:
    """One line of ``nvdisasm`` output, e.g. ``/*0950*/  @P4 LDG.E.128 R20, desc[UR10][R30.64] ;``.

    The result is the first operand when that is a general register (a predicate, an address or
    no operand means none), the second for ``SHFL``; the rest are read. Enough for the loops here,
    not every instruction."""
    body = line.split("*/", 1)[1].strip().rstrip(";").strip()
    if body.startswith("@"):  # a guard predicate
        body = body.split(None, 1)[1]
    op, _, rest = body.partition(" ")
    operands = [o.strip() for o in rest.split(",")] if rest else []
    if op.startswith("SHFL"):  # SHFL.BFLY Pd, Rd, Ra, b, c: the predicate result comes first
        return Instr(op, tuple(_registers(operands[1])), tuple(r for o in operands[2:] for r in _registers(o)))
    if not operands or not _REG.match(operands[0]):
        return Instr(op, (), tuple(r for o in operands for r in _registers(o)))
    if op.startswith(("LDG", "LDS")):
        width = 4 if ".128" in op else 2 if ".64" in op else 1
        return Instr(op, tuple(_registers(operands[0], width)), tuple(r for o in operands[1:] for r in _registers(o)))
    if op.startswith("HMMA"):  # D, A, B, C: four registers each for m16n8k32 (sparse) / m16n8k16
        reads = [r for o in operands[1:4] for r in _registers(o, 4)]
        reads += [r for o in operands[4:] for r in _registers(o)]  # the sparsity metadata
        return Instr(op, tuple(_registers(operands[0], 4)), tuple(reads))
    wide = ".WIDE" in op or op.startswith("CS2R")  # 64-bit results (and IMAD.WIDE's addend)
    reads = [r for o in operands[1:] for r in _registers(o)]
    if ".WIDE" in op and len(operands) == 4:
        reads += [r + 1 for r in _registers(operands[3])[:1]]
    return Instr(op, tuple(_registers(operands[0], 2 if wide else 1)), tuple(reads))


def main_loop(sass: str) -> list[Instr]:
    """The instructions of the listing's one loop: from the label a backward branch jumps to, up
    to that branch (a branch to the line just above it, the trap at a kernel's end, is no loop)."""
    lines = sass.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := _LABEL.match(line))}
    loops = [
        (labels[m.group(1)], j)
        for j, line in enumerate(lines)
        if (m := _BRANCH.search(line)) and labels.get(m.group(1), j) < j - 1
    ]
    if len(loops) != 1:
        raise ValueError(f"expected one loop (backward branch) in the SASS listing, found {len(loops)}")
    first, branch = loops[0]
    return [parse_instruction(line) for line in lines[first + 1 : branch] if "*/" in line]


def issue_times(loop: list[Instr], latency: int = 1000, iterations: int = 8) -> list[list[int]]:
    """The cycle at which each instruction of each iteration issues, under the module's model."""
    ready: dict[int, int] = {}
    clock = 0
    times = []
    for _ in range(iterations):
        times.append([])
        for ins in loop:
            clock = max([clock, *(ready.get(r, 0) for r in ins.reads)])
            times[-1].append(clock)
            clock += 1
            for r in ins.writes:
                ready[r] = clock + (latency if ins.is_global_load else 0)
    return times


def round_trips(loop: list[Instr], latency: int = 1000, iterations: int = 8) -> float:
    """Memory round trips one iteration waits for, in steady state (see the module docstring)."""
    starts = [t[0] for t in issue_times(loop, latency, iterations)]
    steady = [b - a for a, b in zip(starts[-4:], starts[-3:])]
    return (sum(steady) / len(steady) - len(loop)) / latency


def disassemble(cubin: bytes) -> str:
    """The machine code of a compiled kernel (Triton's ``asm["cubin"]``), listed by the ``nvdisasm``
    that Triton bundles."""
    import triton

    nvdisasm = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        done = subprocess.run([str(nvdisasm), "-c", f.name], capture_output=True, text=True, check=True)
    return done.stdout
