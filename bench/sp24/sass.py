"""How many memory round trips one iteration of a kernel's main loop waits for, read from its SASS.

A decode-size GEMM streams its weights, so its speed is set by the bytes each SM keeps in flight:
how many loads a warp has issued before it must wait for one of them. That is decided by ptxas's
schedule, register allocation and scoreboard assignment, not by the PTX (ptxas may sink a load
below an instruction that waits, copy prefetched registers at the end of the loop, or make an
instruction wait for a scoreboard a fresh load shares), and it can be read without a GPU: list
the compiled loop with its control bits (``nvdisasm -hex``) and follow its scoreboards.

Why scoreboards, not registers. From Volta to Hopper the hardware does not track readiness per
register. An instruction of variable latency (global and shared loads, ``LDC``, ``S2R``, ``SHFL``,
``LDGSTS``, ``MEMBAR``, ...) names one of six scoreboards SB0-SB5 in its control bits: its write
barrier is released when its result is written, its read barrier when its source registers may be
overwritten. A later instruction's wait mask names the scoreboards it waits for, and a scoreboard
counts every instruction pending on it: waiting on it waits for all of them. With six for every
load in flight, ptxas puts loads of different ages on one, so waiting for an old load, or for a
read barrier, also waits for the newest load on the same scoreboard. An earlier version of this
module followed registers. An H200 run timed the wgmma loops slower than it implied (g2t128u2a2:
53 us at M = 128 on 4096 x 4096, about 0.8 us per 64-column step, where it counted one round trip
per two steps), and the control bits show waits the registers do not: in g1t64u2a2c4 (Triton
3.6) ``LDG.E.128 R104`` sets SB4 and 18 instructions later ``IMAD.SHL.U32 R80`` waits on SB4, for
the read barrier of an ``LDGSTS`` whose address was R80, and with it for the whole round trip of
the load. (That is not the whole H200 gap: in g2t128u2a2 itself both models find one round trip
per iteration, for x loads whose halves ptxas moves into place at the end of the loop.) The
scoreboards already encode every dependency on a variable-latency result and ptxas's stall counts
the fixed-latency ones, so the model does not follow registers; ``Instr.writes`` and ``reads``
remain for reading listings.

The model is one warp issuing in order. An instruction issues ``stall`` cycles after the previous
one (its control bits: the spacing ptxas chose for one warp; other warps on the scheduler would
stretch it, which is not modelled), once every scoreboard in its wait mask has drained, and for
``DEPBAR.LE SBx, n`` (``WARPGROUP.DEPBAR.LE gsb0, n``) once at most n entries (wgmma groups) are
pending. A global load's (``LDG``) write barrier is released ``latency`` cycles after issue; an
``LDGDEPBAR``'s, which counts as one entry for the group of ``LDGSTS`` issued since the previous
one, ``latency`` after the group's last copy; every other barrier (read barriers, shared loads,
constants, shuffles, ``MEMBAR``) and a committed wgmma group (``HGMMA ..., gsb0``) after
``short`` cycles. ``MEMBAR.ALL.CTA`` (from ``fence.proxy.async``, in every wgmma step) is short
by measurement: on an H200 the fence took 16 cycles with a global load in flight
(``bench/fence_probe.py``). Loops that wait on mbarriers (TMA) are not modelled.

Run for several iterations, the number of round trips to memory one iteration waits for is how
many latencies its steady-state time grows by: the change of the iteration time with ``latency``
(over +-5 %). 1 when every load is consumed in the iteration that issues it, 2 when one load is
issued only after another's result was waited for, 1/(n+1) for a ``cp.async`` ring that waits
with n groups still in flight, 0 when the warp's issue alone outlasts the latency. A wait partly
hidden behind the issue of the loop still counts one: under load the latency grows, the issue
does not. It measures the schedule's memory parallelism per warp, not time: bandwidth, the other
warps, tensor-core time and cache hits are outside it.
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
_HEX = re.compile(r"/\*\s*0x([0-9a-f]{16})\s*\*/")
_DEPBAR = re.compile(r"(?:SB(\d)|gsb0)\s*,\s*(0x[0-9a-f]+|\d+)")
_NONE = 7  # a barrier field naming no scoreboard
GROUPS = 6  # the counter of committed wgmma groups, next to SB0-SB5


@dataclass(frozen=True)
class Controls:
    """The scheduling bits ptxas sets in an instruction's high word (Volta to Hopper)."""

    stall: int  # cycles before the warp's next instruction may issue
    wait: int  # bit i: wait for scoreboard SBi to drain before issuing
    write: int | None  # scoreboard released when the result is written
    read: int | None  # scoreboard released when the source registers may be overwritten

    @classmethod
    def decode(cls, high: int) -> Controls:
        write, read = (high >> 46) & 7, (high >> 49) & 7
        return cls(
            stall=(high >> 41) & 0xF,
            wait=(high >> 52) & 0x3F,
            write=None if write == _NONE else write,
            read=None if read == _NONE else read,
        )

    def encode(self) -> int:
        """The high word with these bits (and nothing else): for listings written by hand."""
        write = _NONE if self.write is None else self.write
        read = _NONE if self.read is None else self.read
        return self.stall << 41 | write << 46 | read << 49 | self.wait << 52


@dataclass(frozen=True)
class Instr:
    op: str
    writes: tuple[int, ...]
    reads: tuple[int, ...]
    operands: tuple[str, ...] = ()
    controls: Controls | None = None  # None: a listing without ``-hex``

    @property
    def is_global_load(self) -> bool:
        """A load from global memory into registers (not ``LDGSTS``, which writes shared memory)."""
        return self.op == "LDG" or self.op.startswith("LDG.")


def _registers(operand: str, width: int = 1) -> list[int]:
    """General registers named by one operand; ``R4.64`` is a pair, ``width`` widens the first."""
    found = []
    for match in _REG.finditer(operand):
        n = 2 if match.group(2) else width
        found += range(int(match.group(1)), int(match.group(1)) + n)
        width = 1
    return found


def parse_instruction(line: str) -> Instr:
    """One instruction of ``nvdisasm`` output, e.g. ``/*0950*/  @P4 LDG.E.128 R20, desc[UR10][R30.64] ;``,
    with its control bits when the line carries ``-hex``'s two words (``/* 0x<low> */ /* 0x<high> */``).

    The result is the first operand when that is a general register (a predicate, an address or
    no operand means none), the second for ``SHFL``; the rest are read. Enough for the loops here,
    not every instruction."""
    words = _HEX.findall(line)
    controls = Controls.decode(int(words[1], 16)) if len(words) == 2 else None
    body = line.split("*/", 1)[1].split(";", 1)[0].strip()
    if body.startswith("@"):  # a guard predicate
        body = body.split(None, 1)[1]
    op, _, rest = body.partition(" ")
    operands = tuple(o.strip() for o in rest.split(",")) if rest else ()
    writes, reads = _register_operands(op, operands)
    return Instr(op, tuple(writes), tuple(reads), operands, controls)


def _register_operands(op: str, operands: tuple[str, ...]) -> tuple[list[int], list[int]]:
    """(registers written, registers read) of one instruction."""
    if op.startswith("SHFL"):  # SHFL.BFLY Pd, Rd, Ra, b, c: the predicate result comes first
        return _registers(operands[1]), [r for o in operands[2:] for r in _registers(o)]
    if not operands or not _REG.match(operands[0]):
        return [], [r for o in operands for r in _registers(o)]
    if op.startswith(("LDG", "LDS")):
        width = 4 if ".128" in op else 2 if ".64" in op else 1
        return _registers(operands[0], width), [r for o in operands[1:] for r in _registers(o)]
    if op.startswith("HMMA"):  # D, A, B, C: four registers each for m16n8k32 (sparse) / m16n8k16
        reads = [r for o in operands[1:4] for r in _registers(o, 4)]
        reads += [r for o in operands[4:] for r in _registers(o)]  # the sparsity metadata
        return _registers(operands[0], 4), reads
    wide = ".WIDE" in op or op.startswith("CS2R")  # 64-bit results (and IMAD.WIDE's addend)
    reads = [r for o in operands[1:] for r in _registers(o)]
    if ".WIDE" in op and len(operands) == 4:
        reads += [r + 1 for r in _registers(operands[3])[:1]]
    return _registers(operands[0], 2 if wide else 1), reads


def _instruction_lines(sass: str) -> list[str]:
    """The listing's lines with ``-hex``'s second line (the high word alone) joined to its instruction."""
    lines: list[str] = []
    for line in sass.splitlines():
        if lines and line.strip().startswith("/* 0x") and _HEX.search(lines[-1]):
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    return lines


def main_loop(sass: str) -> list[Instr]:
    """The instructions of the listing's innermost loop: from the label a backward branch jumps
    to, up to and including that branch (a branch to the line just above it, the trap at a
    kernel's end, is no loop). Loops must nest (one loop, or a loop of chunks around it); of
    loops one after the other, the main one is the only one with matrix instructions (a
    split-K epilogue may add its partial sums in a loop of its own), else there is none."""
    lines = _instruction_lines(sass)
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := _LABEL.match(line))}
    loops = [
        (labels[m.group(1)], j)
        for j, line in enumerate(lines)
        if (m := _BRANCH.search(line)) and labels.get(m.group(1), j) < j - 1
    ]
    loops.sort(key=lambda loop: loop[1] - loop[0])
    found = len(loops)
    if not _nested(loops):
        loops = [loop for loop in loops if any(_MMA.search(line) for line in lines[loop[0] : loop[1]])]
    if not loops or not _nested(loops):
        raise ValueError(f"expected one loop, or loops nested in it, in the SASS listing; found {found} loops")
    first, branch = loops[0]
    return [parse_instruction(line) for line in lines[first + 1 : branch + 1] if "*/" in line]


_MMA = re.compile(r"\b(HMMA|HGMMA)\.")


def _nested(loops: list[tuple[int, int]]) -> bool:
    """Each loop (sorted by length) inside the next."""
    return all(b[0] <= a[0] and a[1] <= b[1] for a, b in zip(loops, loops[1:]))


def _depbar(ins: Instr) -> tuple[int, int] | None:
    """(counter, n) of ``DEPBAR.LE SBx, n`` or ``WARPGROUP.DEPBAR.LE gsb0, n``: wait until at most
    n entries are pending on it."""
    if ins.op not in ("DEPBAR.LE", "WARPGROUP.DEPBAR.LE"):
        return None
    m = _DEPBAR.search(", ".join(ins.operands))
    return (GROUPS if m.group(1) is None else int(m.group(1))), int(m.group(2), 0)


def issue_times(loop: list[Instr], latency: int = 1000, iterations: int = 8, short: int = 30) -> list[list[int]]:
    """The cycle at which each instruction of each iteration issues, under the module's model."""
    if any(ins.controls is None for ins in loop):
        raise ValueError("the loop has no control bits: list it with nvdisasm -hex (disassemble does)")
    pending: list[list[int]] = [[] for _ in range(GROUPS + 1)]  # release cycles, per scoreboard
    copies: list[int] = []  # completions of the LDGSTS since the last LDGDEPBAR
    clock = 0
    times = []
    for _ in range(iterations):
        times.append([])
        for ins in loop:
            c = ins.controls
            for sb in range(GROUPS):
                if c.wait >> sb & 1 and pending[sb]:
                    clock = max(clock, *pending[sb])
            if bar := _depbar(ins):
                sb, n = bar
                if len(pending[sb]) > n:
                    clock = max(clock, sorted(pending[sb])[-n - 1])
            pending = [[t for t in p if t > clock] for p in pending]
            times[-1].append(clock)
            if ins.op.startswith("LDGSTS"):
                copies.append(clock + latency)
            done = clock + short
            if ins.is_global_load:
                done = clock + latency
            elif ins.op == "LDGDEPBAR":  # the group of copies issued since the last one
                done, copies = max([done, *copies]), []
            if c.write is not None:
                pending[c.write].append(done)
            if c.read is not None:
                pending[c.read].append(clock + short)
            if ins.op.startswith("HGMMA") and "gsb0" in ins.operands:  # commits a wgmma group
                pending[GROUPS].append(clock + short)
            clock += max(c.stall, 1)
    return times


def _iteration(loop: list[Instr], latency: int, iterations: int, short: int) -> float:
    """Cycles per iteration in steady state: the mean of the last twelve (a schedule may settle
    into a pattern of two, three or four iterations, e.g. a ring with groups in flight)."""
    starts = [t[0] for t in issue_times(loop, latency, iterations, short)]
    return (starts[-1] - starts[-13]) / 12


def round_trips(loop: list[Instr], latency: int = 1000, iterations: int = 24, short: int = 30) -> float:
    """Memory round trips one iteration waits for, in steady state: latencies per iteration
    (see the module docstring)."""
    step = latency // 20
    slower, faster = (_iteration(loop, latency + d, iterations, short) for d in (step, -step))
    return (slower - faster) / (2 * step)


def disassemble(cubin: bytes) -> str:
    """The machine code of a compiled kernel (Triton's ``asm["cubin"]``) with each instruction's
    control bits, listed by the ``nvdisasm -hex`` that Triton bundles."""
    import triton

    nvdisasm = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        done = subprocess.run([str(nvdisasm), "-hex", "-c", f.name], capture_output=True, text=True, check=True)
    return done.stdout
