"""A small interpreter for the PTX that Triton generates, so a GPU kernel can be run on a CPU.

Only the instructions our compiled kernels use are implemented (integer and fp32 arithmetic,
predicates, conversions, global/shared loads and stores, ``cp.async``, ``ldmatrix``, ``stmatrix``, atomics,
fences, warp shuffles, barriers, branches); any other instruction raises ``NotImplementedError``
naming it, so the emulator never guesses. Warp-wide matrix instructions (``mma.sp``) are delegated
to a model passed in by the caller.

Execution model: one program (CTA) at a time, to its end (in launch order, or reversed: the
order programs meet in at an atomic counter is the hardware's choice), all its threads in lock
step, each register a numpy array with one entry per thread holding the raw bits. Lock step is
stricter than the hardware, so a race-free kernel computes the same thing, and a shared-memory
race between warps (a missing ``bar.sync``) is detected and refused rather than hidden, as is a
read of shared bytes an unfinished ``cp.async`` targets. Branches must be uniform across the CTA
(Triton's loops are), otherwise the emulator refuses. Every global or shared access
of an active thread is checked against the buffers it was given (bounds and alignment), so an
out-of-bounds read that a GPU would silently allow is an error here; reading a register that was
never written is an error too. Given a :class:`SharedTraffic`, it also counts the passes of the
shared-memory banks each access takes, against the passes its bytes need: bank conflicts cost
time, not correctness, so they are measured rather than refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

U64 = np.uint64
MASKS = {1: 1, 16: 0xFFFF, 32: 0xFFFFFFFF, 64: 0xFFFFFFFFFFFFFFFF}
WIDTHS = {"pred": 1, "b8": 8, "u8": 8, "s8": 8, "b16": 16, "u16": 16, "s16": 16, "f16": 16, "bf16": 16,
          "b32": 32, "u32": 32, "s32": 32, "f32": 32, "b64": 64, "u64": 64, "s64": 64, "f64": 64}


# opcode parts (besides the types) whose meaning the handlers implement; any other modifier (.sat,
# .ftz, .approx, cache or memory-order qualifiers, ...) is refused rather than ignored
MODIFIERS = {"rn", "lo", "wide", "param", "global", "shared", "v2", "v4", "sync", "bfly", "idx", "up", "down",
             "lt", "le", "gt", "ge", "eq", "ne", "ls", "hi", "hs", "L2"}
# memory-order, scope and cache qualifiers of loads, atomics and fences: programs run one at a
# time, each to its end, so every order they ask for holds here; what they guarantee between
# programs running at once on a GPU is not tested by the emulator
MODIFIERS |= {"cg", "relaxed", "acquire", "release", "acq_rel", "gpu"}
MODIFIERS |= {"async", "ca", "commit_group", "wait_group"}  # cp.async (see Cta.op_cp)
MODIFIERS |= {"aligned", "m8n8", "x1", "x2", "x4"}  # ldmatrix, stmatrix (see Cta.op_ldmatrix)
ATOMICS = {"add": lambda old, val: old + val, "exch": lambda old, val: val}


class PtxError(RuntimeError):
    """The kernel did something the emulator treats as a bug: out-of-bounds or misaligned access,
    a read of an unwritten register, a divergent branch, an invalid operand."""


# ---------------------------------------------------------------------------------------- memory


class Memory:
    """Named byte buffers at fake, 256-byte aligned addresses (address 0 is never valid)."""

    def __init__(self, space: str, first: int = 1 << 20):
        self.space = space
        self.bases: list[int] = []
        self.buffers: list[np.ndarray] = []
        self.names: list[str] = []
        self.next = first

    def add(self, data: np.ndarray, name: str) -> int:
        """Map ``data`` (a uint8 array, shared, not copied) and return its address."""
        assert data.dtype == np.uint8 and data.ndim == 1
        base = self.next
        self.bases.append(base)
        self.buffers.append(data)
        self.names.append(name)
        self.next = base + ((data.size + 255) // 256 + 1) * 256  # a gap: no access runs into the next
        return base

    def _locate(self, addr: np.ndarray, nbytes: int) -> tuple[np.ndarray, np.ndarray]:
        addr = addr.astype(np.int64)
        if len(self.bases) == 0:
            raise PtxError(f"{self.space} access but no {self.space} memory was given")
        bases = np.array(self.bases, dtype=np.int64)
        sizes = np.array([b.size for b in self.buffers], dtype=np.int64)
        which = np.searchsorted(bases, addr, side="right") - 1
        ok = which >= 0
        off = addr - bases[np.maximum(which, 0)]
        ok &= off + nbytes <= sizes[np.maximum(which, 0)]
        if not ok.all():
            bad = int(addr[~ok][0])
            near = ", ".join(f"{n} [{b:#x}, {b + s.size:#x})" for n, b, s in zip(self.names, self.bases, self.buffers))
            raise PtxError(f"{self.space} access of {nbytes} bytes at {bad:#x} is outside every buffer ({near})")
        if (addr % nbytes).any():
            raise PtxError(f"misaligned {self.space} access of {nbytes} bytes at {int(addr[addr % nbytes != 0][0]):#x}")
        return which, off

    def load(self, addr: np.ndarray, nbytes: int) -> np.ndarray:
        """Little-endian loads of ``nbytes`` (1, 2, 4 or 8) at each address, as uint64 bits."""
        which, off = self._locate(addr, nbytes)
        out = np.zeros(addr.shape, dtype=U64)
        for b in np.unique(which):
            sel = which == b
            for i in range(nbytes):
                out[sel] |= self.buffers[b][off[sel] + i].astype(U64) << U64(8 * i)
        return out

    def store(self, addr: np.ndarray, nbytes: int, value: np.ndarray) -> None:
        which, off = self._locate(addr, nbytes)
        value = value.astype(U64)
        for b in np.unique(which):
            sel = which == b
            for i in range(nbytes):  # threads in order: the last writer of a byte wins
                self.buffers[b][off[sel] + i] = ((value[sel] >> U64(8 * i)) & U64(0xFF)).astype(np.uint8)


class RaceCheck:
    """Shared-memory accesses between two barriers: a byte one warp wrote may not be read or
    written by another warp, and a byte one warp read may not be written by another. Lock step
    would hide such a missing barrier; here it is an error."""

    def __init__(self, size: int):
        self.writer = np.full(size, -1)  # warp that wrote the byte since the last barrier
        self.reader = np.full(size, -1)  # warp that read it (-2: several)

    def barrier(self) -> None:
        self.writer[:] = -1
        self.reader[:] = -1

    def access(self, offsets: np.ndarray, warps: np.ndarray, write: bool, text: str) -> None:
        """``offsets`` [threads, bytes] of one instruction, ``warps`` [threads]."""
        warps = np.broadcast_to(warps[:, None], offsets.shape)
        clash = (self.writer[offsets] >= 0) & (self.writer[offsets] != warps)
        if write:
            clash |= (self.reader[offsets] == -2) | ((self.reader[offsets] >= 0) & (self.reader[offsets] != warps))
        if clash.any():
            raise PtxError(f"shared-memory race at byte {int(offsets[clash][0])} (no barrier between warps): {text}")
        if write:
            self.writer[offsets] = warps
        else:
            seen = self.reader[offsets]
            self.reader[offsets] = np.where((seen == -1) | (seen == warps), warps, -2)


class SharedTraffic:
    """Shared-memory wavefronts of every access, per instruction: how many 128-byte passes the
    banks needed, and how many the bytes asked for would need without bank conflicts.

    The model (the one Nsight Compute's "wavefronts" count): a warp's access of ``b`` bytes per
    thread is served in phases of ``128 / b`` consecutive lanes (all 32 for 4 bytes, 8 for 16);
    in a phase, each of the 32 banks (4-byte words, ``word % 32``) serves one distinct word per
    pass, threads asking for the same word share it. ``ldmatrix`` serves one 8-row matrix per
    phase. A conflict-free access needs ``ceil(distinct words / 32)`` passes per phase."""

    def __init__(self):
        self.passes: dict[str, list[int]] = {}  # instruction text -> [passes, conflict-free passes]

    def add(self, text: str, addr: np.ndarray, threads: np.ndarray, nbytes: int) -> None:
        """One instruction: byte addresses [n] of the ``threads`` [n] (CTA thread indices) that
        access ``nbytes`` each; all lanes of a phase have equal ``threads // lanes_per_phase``."""
        per_phase = max(1, min(32, 128 // nbytes))
        phase = threads // per_phase
        words = addr[:, None] // 4 + np.arange(max(1, nbytes // 4))
        keys = np.unique(np.stack([np.repeat(phase, words.shape[1]), words.ravel()], 1), axis=0)
        groups, group = np.unique(keys[:, 0], return_inverse=True)
        counts = np.zeros((len(groups), 32), dtype=np.int64)
        np.add.at(counts, (group, keys[:, 1] % 32), 1)
        entry = self.passes.setdefault(text, [0, 0])
        entry[0] += int(counts.max(1).sum())
        entry[1] += int(np.ceil(counts.sum(1) / 32).sum())

    def excess(self, kind: str = "") -> int:
        """Passes beyond the conflict-free ones, over the instructions whose text starts with ``kind``."""
        return sum(p - ideal for text, (p, ideal) in self.passes.items() if text.startswith(kind))


# ---------------------------------------------------------------------------------------- parsing


@dataclass
class Instr:
    guard: str | None  # predicate register or None
    negate: bool  # guard is @!%p
    op: str  # full opcode, e.g. "ld.global.v4.b32"
    args: list[str]
    text: str  # for error messages


@dataclass
class Program:
    params: list[str]
    instrs: list[Instr]
    labels: dict[str, int]


def _split_args(s: str) -> list[str]:
    """Split operands on top-level commas (not inside ``{}`` or ``[]``)."""
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def parse(ptx: str) -> Program:
    """The first ``.entry`` of a PTX module: its parameters, instructions and labels."""
    text = re.sub(r"//[^\n]*", "", ptx)
    text = re.sub(r"^\s*\.(loc|file)\b[^\n]*", "", text, flags=re.MULTILINE)  # debug lines end without ";"
    entry = re.search(r"\.entry\s+(\w+)\s*\(([^)]*)\)", text)
    if not entry:
        raise PtxError("no .entry function in this PTX")
    params = re.findall(r"\.param\s+[^,]*?(\w+)\s*(?:,|$)", entry.group(2))
    start = text.index("{", entry.end())
    depth, end = 0, start
    for end in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            break
    body = text[start + 1 : end]
    instrs: list[Instr] = []
    labels: dict[str, int] = {}
    for chunk in body.split(";"):
        # an inline-asm block's braces only scope its own .reg names; in lock step, with every
        # register written before it is read (checked), one flat namespace computes the same
        chunk = chunk.lstrip("{} \t\n").rstrip()
        while m := re.match(r"([$\w]+):\s*", chunk):
            labels[m.group(1)] = len(instrs)
            chunk = chunk[m.end() :].lstrip("{} \t\n")
        if not chunk or chunk.startswith("."):  # .reg, .loc, .reqntid, ...: no effect here
            if chunk.startswith(".") and not re.match(r"\.(reg|loc|reqntid|maxntid|pragma|file)\b", chunk):
                raise NotImplementedError(f"PTX directive inside the body: {chunk!r}")
            continue
        guard, negate = None, False
        if m := re.match(r"@(!?)(%\w+)\s+", chunk):
            negate, guard = m.group(1) == "!", m.group(2)
            chunk = chunk[m.end() :]
        op, _, rest = chunk.partition(" ")
        instrs.append(Instr(guard, negate, op.strip(), _split_args(rest.strip()), chunk))
    return Program(params, instrs, labels)


# ---------------------------------------------------------------------------------------- values


def _signed(bits: np.ndarray, width: int) -> np.ndarray:
    v = (bits & U64(MASKS[width])).astype(np.int64) if width < 64 else bits.view(np.int64)
    if width < 64:
        v = np.where(v >= 1 << (width - 1), v - (1 << width), v)
    return v


def _bits(v: np.ndarray, width: int) -> np.ndarray:
    """Signed or unsigned integers -> the low ``width`` bits as uint64."""
    bits = v if v.dtype == U64 else v.astype(np.int64).view(U64)
    return bits & U64(MASKS[width])


def _f32(bits: np.ndarray) -> np.ndarray:
    return (bits & U64(0xFFFFFFFF)).astype(np.uint32).view(np.float32)


def _from_f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).view(np.uint32).astype(U64)


def _f16(bits: np.ndarray) -> np.ndarray:
    return (bits & U64(0xFFFF)).astype(np.uint16).view(np.float16)


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return ((bits & U64(0xFFFF)) << U64(16)).astype(np.uint32).view(np.float32)


def _f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round to nearest even (NaN stays NaN), as ``cvt.rn.bf16.f32``."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + U64(0x7FFF) + ((u >> U64(16)) & U64(1))) >> U64(16)
    return np.where(np.isnan(x), U64(0x7FC0), rounded & U64(0xFFFF))


# ---------------------------------------------------------------------------------------- execution

# (opcode, A, B, C registers, metadata register) -> D registers, every warp at once; raw bits, one
# entry per thread. The caller supplies it (the emulator does not model tensor-core instructions).
MmaModel = Callable[[str, list[np.ndarray], list[np.ndarray], list[np.ndarray], np.ndarray], list[np.ndarray]]


class Cta:
    """The state of one program while it runs."""

    def __init__(self, program: Program, nthreads: int, ctaid: tuple[int, int, int], grid: tuple[int, int, int],
                 params: dict[str, int], glob: Memory, shared: Memory, mma: MmaModel | None,
                 traffic: SharedTraffic | None = None):
        self.p, self.n, self.params, self.glob, self.shared, self.mma = program, nthreads, params, glob, shared, mma
        self.traffic = traffic
        tid = np.arange(nthreads, dtype=U64)
        self.special = {"%tid.x": tid, "%tid.y": 0, "%tid.z": 0, "%ntid.x": nthreads, "%ntid.y": 1, "%ntid.z": 1,
                        "%laneid": tid % U64(32), "%warpid": tid // U64(32)}
        for axis, c, g in zip("xyz", ctaid, grid):
            self.special[f"%ctaid.{axis}"] = c
            self.special[f"%nctaid.{axis}"] = g
        self.regs: dict[str, np.ndarray] = {}
        self.races = RaceCheck(shared.buffers[0].size)
        # cp.async: copies issued since the last commit, then committed groups, oldest first; each
        # copy is (shared offsets [threads, bytes], bytes, warps). Until a wait retires its group,
        # the destination bytes are pending: reading them is an error (the data may not be there)
        self.open_group: list = []
        self.groups: list[list] = []
        self.pending = np.zeros(shared.buffers[0].size, dtype=np.int64)

    # operands
    def read(self, operand: str) -> np.ndarray:
        operand = operand.strip()
        if operand.startswith("%"):
            if operand in self.regs:
                return self.regs[operand]
            if operand in self.special:
                return np.broadcast_to(np.asarray(self.special[operand], dtype=U64), (self.n,))
            raise PtxError(f"read of register {operand} before any write")
        if operand == "global_smem":
            return np.full(self.n, self.shared.bases[0], dtype=U64)
        if re.fullmatch(r"0[fF][0-9a-fA-F]{8}", operand):
            return np.full(self.n, int(operand[2:], 16), dtype=U64)
        if re.fullmatch(r"-?(0[xX][0-9a-fA-F]+|\d+)", operand):
            return np.full(self.n, int(operand, 0) & MASKS[64], dtype=U64)
        raise PtxError(f"unsupported operand {operand!r}")

    def write(self, reg: str, value: np.ndarray, active: np.ndarray | None, width: int) -> None:
        value = np.asarray(value, dtype=bool) if width == 1 else _bits(np.asarray(value), width)
        if active is not None and reg in self.regs:
            value = np.where(active, value, self.regs[reg])
        elif active is not None and not active.all():
            value = np.where(active, value, 0 if width > 1 else False)  # undefined on hardware; never read
        self.regs[reg] = np.broadcast_to(value, (self.n,)).copy()

    def address(self, operand: str) -> np.ndarray:
        m = re.fullmatch(r"\[\s*([%$\w]+)\s*(?:\+\s*(-?\d+)\s*)?\]", operand)
        if not m:
            raise PtxError(f"unsupported address {operand!r}")
        return self.read(m.group(1)).astype(np.int64) + int(m.group(2) or 0)

    # the loop
    def run(self, max_steps: int = 10_000_000) -> None:
        pc, steps, instrs = 0, 0, self.p.instrs
        while pc < len(instrs):
            ins = instrs[pc]
            steps += 1
            if steps > max_steps:
                raise PtxError("the kernel ran more than max_steps instructions (an endless loop?)")
            active = None
            if ins.guard is not None:
                active = self.read(ins.guard).astype(bool) ^ ins.negate
            base = ins.op.split(".")[0]
            if base == "bra":
                if active is None or active.all():
                    pc = self.p.labels[ins.args[0]]
                    continue
                if active.any():
                    raise PtxError(f"divergent branch: {ins.text}")
                pc += 1
                continue
            if base == "ret" or base == "exit":
                if active is None or active.all():
                    return
                if active.any():
                    raise PtxError(f"divergent {base}: {ins.text}")
                pc += 1
                continue
            if active is not None and not active.any() and base not in ("mma", "shfl"):
                pc += 1
                continue
            handler = getattr(self, "op_" + base, None)
            unknown = {p for p in ins.op.split(".")[1:] if p not in MODIFIERS | ATOMICS.keys() and p not in WIDTHS}
            if handler is None or (unknown and base != "mma"):  # mma: the model checks its own opcode
                raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
            handler(ins, active)
            pc += 1

    # instruction handlers: each op_<name>(ins, active)
    @staticmethod
    def _type(ins: Instr) -> str:
        for part in reversed(ins.op.split(".")):
            if part in WIDTHS:
                return part
        raise NotImplementedError(f"PTX instruction without a type: {ins.text}")

    def _int(self, operand: str, ty: str) -> np.ndarray:
        width = WIDTHS[ty]
        bits = self.read(operand)
        return _signed(bits, width) if ty[0] == "s" else bits & U64(MASKS[width])

    def _binary(self, ins: Instr, active, fn) -> None:
        ty = self._type(ins)
        d, a, b = ins.args
        if ty == "pred":
            self.write(d, fn(self.read(a).astype(bool), self.read(b).astype(bool)), active, 1)
        elif ty == "f32":
            self.write(d, _from_f32(fn(_f32(self.read(a)), _f32(self.read(b)))), active, 32)
        else:
            self.write(d, fn(self._int(a, ty), self._int(b, ty)), active, WIDTHS[ty])

    def op_mov(self, ins, active):
        ty = self._type(ins)
        d, a = ins.args
        self.write(d, self.read(a) if ty != "pred" else self.read(a) != 0, active, WIDTHS[ty])

    def op_add(self, ins, active):
        self._binary(ins, active, lambda a, b: a + b)

    def op_sub(self, ins, active):
        self._binary(ins, active, lambda a, b: a - b)

    def op_and(self, ins, active):
        self._binary(ins, active, lambda a, b: a & b)

    def op_or(self, ins, active):
        self._binary(ins, active, lambda a, b: a | b)

    def op_xor(self, ins, active):
        self._binary(ins, active, lambda a, b: a ^ b)

    def op_max(self, ins, active):
        self._integer_only(ins)
        self._binary(ins, active, np.maximum)

    def op_min(self, ins, active):
        self._integer_only(ins)
        self._binary(ins, active, np.minimum)

    def _integer_only(self, ins: Instr) -> None:  # float min/max treat NaN in their own way: not modelled
        if self._type(ins)[0] not in "usb":
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")

    def op_not(self, ins, active):
        ty = self._type(ins)
        d, a = ins.args
        if ty == "pred":
            self.write(d, ~self.read(a).astype(bool), active, 1)
        else:
            self.write(d, ~self.read(a), active, WIDTHS[ty])

    def op_mul(self, ins, active):
        ty = self._type(ins)
        d, a, b = ins.args
        if ty == "f32":
            self.write(d, _from_f32(_f32(self.read(a)) * _f32(self.read(b))), active, 32)
        elif ".wide." in ins.op:
            self.write(d, self._int(a, ty).astype(np.int64) * self._int(b, ty).astype(np.int64), active, 64)
        elif ".lo." in ins.op:
            self.write(d, self.read(a) * self.read(b), active, WIDTHS[ty])  # mod 2^64, then truncated
        elif ".hi." in ins.op and WIDTHS[ty] == 32:  # the high half of the 64-bit product
            wide = np.int64 if ty[0] == "s" else U64  # a 32x32-bit product fits either way
            self.write(d, (self._int(a, ty).astype(wide) * self._int(b, ty).astype(wide)) >> wide(32), active, 32)
        else:
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")

    def op_mad(self, ins, active):
        ty = self._type(ins)
        d, a, b, c = ins.args
        if ".wide." in ins.op:
            prod = self._int(a, ty).astype(np.int64) * self._int(b, ty).astype(np.int64)
            self.write(d, prod.view(U64) + self.read(c), active, 64)
        elif ".lo." in ins.op:
            self.write(d, self.read(a) * self.read(b) + self.read(c), active, WIDTHS[ty])
        else:
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")

    def op_fma(self, ins, active):
        if self._type(ins) != "f32" or ".rn" not in ins.op:
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        d, a, b, c = ins.args
        exact = _f32(self.read(a)).astype(np.float64) * _f32(self.read(b)) + _f32(self.read(c))
        self.write(d, _from_f32(exact.astype(np.float32)), active, 32)

    def op_shl(self, ins, active):
        ty = self._type(ins)
        d, a, b = ins.args
        width, amount = WIDTHS[ty], self.read(b) & U64(0xFFFFFFFF)
        out = np.where(amount >= width, U64(0), self.read(a) << np.minimum(amount, U64(63)))
        self.write(d, out, active, width)

    def op_shr(self, ins, active):
        ty = self._type(ins)
        d, a, b = ins.args
        width, amount = WIDTHS[ty], (self.read(b) & U64(0xFFFFFFFF)).astype(np.int64)
        amount = np.minimum(amount, width - 1 if ty[0] == "s" else width)
        value = self._int(a, ty)
        if ty[0] == "s":
            out = value >> amount
        else:
            out = np.where(amount >= width, U64(0), value >> np.minimum(amount, 63).astype(U64))
        self.write(d, out, active, width)

    def op_bfe(self, ins, active):
        ty = self._type(ins)
        d, a, b, c = ins.args
        b, c = self.read(b), self.read(c)
        if ty != "u32" or (b != b[0]).any() or (c != c[0]).any():
            raise NotImplementedError(f"PTX instruction not emulated (only bfe.u32 with uniform fields): {ins.text}")
        pos, length = int(b[0]) & 0xFF, int(c[0]) & 0xFF
        value = (self.read(a) & U64(MASKS[32])) >> U64(min(pos, 32))
        self.write(d, value & U64((1 << min(length, 32)) - 1), active, 32)

    def op_selp(self, ins, active):
        ty = self._type(ins)
        d, a, b, p = ins.args
        self.write(d, np.where(self.read(p).astype(bool), self.read(a), self.read(b)), active, WIDTHS[ty])

    def op_setp(self, ins, active):
        parts = ins.op.split(".")
        if len(parts) != 3:
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        cmp, ty = parts[1], parts[2]
        d, a, b = ins.args
        if ty == "f32":
            x, y = _f32(self.read(a)), _f32(self.read(b))
        else:
            x, y = self._int(a, ty), self._int(b, ty)
        fn = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
              "eq": np.equal, "ne": np.not_equal, "lo": np.less, "ls": np.less_equal, "hi": np.greater,
              "hs": np.greater_equal}[cmp]
        if cmp in ("lo", "ls", "hi", "hs"):
            x, y = self.read(a) & U64(MASKS[WIDTHS[ty]]), self.read(b) & U64(MASKS[WIDTHS[ty]])
        self.write(d, fn(x, y), active, 1)

    def op_cvt(self, ins, active):
        parts = ins.op.split(".")
        dst, src = [p for p in parts if p in WIDTHS]
        d, a = ins.args
        bits = self.read(a)
        if dst in ("f16", "bf16") and src == "f32" and "rn" in parts:
            x = _f32(bits)
            out = x.astype(np.float16).view(np.uint16).astype(U64) if dst == "f16" else _f32_to_bf16(x)
            self.write(d, out, active, 16)
        elif dst == "f32" and src in ("f16", "bf16"):
            x = _f16(bits).astype(np.float32) if src == "f16" else _bf16_to_f32(bits)
            self.write(d, _from_f32(x), active, 32)
        elif src[0] in "us" and dst[0] in "usb":
            self.write(d, self._int(a, src), active, WIDTHS[dst])  # sign- or zero-extended, or truncated
        else:
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")

    # memory
    def _memory_op(self, ins: Instr) -> tuple[Memory, int, int]:
        parts = ins.op.split(".")
        space = {"global": self.glob, "shared": self.shared}.get(parts[1])
        if space is None:
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        vec = next((int(p[1:]) for p in parts if re.fullmatch(r"v[248]", p)), 1)
        return space, vec, WIDTHS[self._type(ins)] // 8

    @staticmethod
    def _vector(operand: str) -> list[str]:
        operand = operand.strip()
        return _split_args(operand[1:-1]) if operand.startswith("{") else [operand]

    def op_ld(self, ins, active):
        if ins.op.startswith("ld.param"):
            d, src = ins.args
            name = src.strip("[] ")
            self.write(d, np.full(self.n, self.params[name] & MASKS[64], dtype=U64), active, WIDTHS[self._type(ins)])
            return
        mem, addr, on, size, dests = self._access(ins, ins.args[1], ins.args[0], write=False, active=active)
        for i, d in enumerate(dests):
            value = np.zeros(self.n, dtype=U64)
            value[on] = mem.load(addr[on] + i * size, size)
            self.write(d, value, active, 8 * size)

    def op_prefetch(self, ins, active):
        """A cache hint: no effect on the result, but its address must lie inside a buffer (the
        hardware would not fault, yet an address outside the weight means the kernel's clamp
        is wrong)."""
        if not ins.op.startswith("prefetch.global"):
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        on = np.ones(self.n, bool) if active is None else active
        self.glob._locate(self.address(ins.args[0])[on], 1)

    def op_st(self, ins, active):
        mem, addr, on, size, srcs = self._access(ins, ins.args[0], ins.args[1], write=True, active=active)
        for i, s in enumerate(srcs):
            mem.store(addr[on] + i * size, size, self.read(s)[on])

    def _access(self, ins: Instr, address: str, registers: str, write: bool, active=None):
        """(memory, addresses, active threads, element bytes, registers) of a load or store, after
        the alignment and race checks."""
        mem, vec, size = self._memory_op(ins)
        addr = self.address(address)
        on = np.ones(self.n, bool) if active is None else active
        if vec > 1 and (addr[on] % (vec * size)).any():  # a vector access needs the whole vector's alignment
            raise PtxError(f"misaligned {vec * size}-byte vector {'store' if write else 'load'}: {ins.text}")
        self._track(mem, addr, on, vec * size, write, ins.text)
        return mem, addr, on, size, self._vector(registers)

    def _track(self, mem: Memory, addr: np.ndarray, on: np.ndarray, nbytes: int, write: bool, text: str,
               count: bool = True) -> None:
        if mem is self.shared:
            if count and self.traffic is not None:
                self.traffic.add(text, addr[on], np.arange(self.n)[on], nbytes)
            offsets = addr[on, None] - mem.bases[0] + np.arange(nbytes)
            if offsets.min() >= 0 and offsets.max() < mem.buffers[0].size:  # else the access itself fails
                if self.pending[offsets].any():
                    raise PtxError(f"shared bytes at {int(offsets[self.pending[offsets] > 0][0])} are the target of a "
                                   f"cp.async not yet waited for: {text}")
                self.races.access(offsets, np.arange(self.n)[on] // 32, write, text)

    def op_ldmatrix(self, ins, active):
        """``ldmatrix.sync.aligned.m8n8.x{1,2,4}.shared.b16``: matrix ``j`` is eight rows of 16
        bytes whose addresses lanes ``8j .. 8j+7`` give; lane ``t`` receives, as its register ``j``,
        the two 16-bit elements ``2(t % 4)``, ``+1`` of row ``t // 4`` of matrix ``j``."""
        for d, addr in self._matrix_rows(ins, active, ins.args[1], ins.args[0], write=False):
            self.write(d, self.shared.load(addr, 4), None, 32)

    def op_stmatrix(self, ins, active):
        """``stmatrix.sync.aligned.m8n8.x{1,2,4}.shared.b16``, ``ldmatrix``'s inverse: lane ``t``'s
        register ``j`` goes to elements ``2(t % 4)``, ``+1`` of row ``t // 4`` of matrix ``j``."""
        for s, addr in self._matrix_rows(ins, active, ins.args[0], ins.args[1], write=True):
            self.shared.store(addr, 4, self.read(s))

    def _matrix_rows(self, ins, active, address: str, registers: str, write: bool):
        """Per matrix ``j`` of an ``ldmatrix``/``stmatrix``: (its register, every lane's word
        address), after the race check; the traffic is one phase per matrix (eight 16-byte rows)."""
        parts = ins.op.split(".")
        count = next((int(p[1:]) for p in parts if p in ("x1", "x2", "x4")), None)
        if active is not None or count is None or "trans" in parts or "shared" not in parts or self.n % 32:
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        rows = self.address(address)
        on = np.ones(self.n, bool)
        lane = np.arange(self.n) % 32
        for j, reg in enumerate(self._vector(registers)[:count]):
            row_owner = np.arange(self.n) - lane + 8 * j + lane // 4  # the lane that named this row
            addr = rows[row_owner] + 4 * (lane % 4)
            if self.traffic is not None:
                namer = (lane >= 8 * j) & (lane < 8 * j + 8)
                self.traffic.add(ins.text, rows[namer], np.arange(self.n)[namer] // 32 * 8 + lane[namer] % 8, 16)
            self._track(self.shared, addr, on, 4, write, ins.text, count=False)
            yield reg, addr

    def op_cp(self, ins, active):
        """``cp.async`` (global to shared, ``size`` bytes of which the first ``src_size`` are read
        and the rest zero-filled), ``cp.async.commit_group`` and ``cp.async.wait_group N`` (all
        but the newest ``N`` committed groups land, in order). The source is read at issue: the
        kernels copy only what no program writes."""
        op = ins.op.split(".")
        if op[:2] != ["cp", "async"]:
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        if op[2] == "commit_group":
            self.groups.append(self.open_group)
            self.open_group = []
            return
        if op[2] == "wait_group":
            keep = int(self.read(ins.args[0])[0])
            while len(self.groups) > keep:
                for offsets, data, warps in self.groups.pop(0):
                    np.subtract.at(self.pending, offsets.ravel(), 1)
                    self.races.access(offsets, warps, True, ins.text)
                    self.shared.buffers[0][offsets] = data
            return
        if op[2:] not in (["ca", "shared", "global"], ["cg", "shared", "global"]) or len(ins.args) != 4:
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        dst, src, size_arg, src_size = ins.args
        size = int(self.read(size_arg)[0])
        on = np.ones(self.n, bool) if active is None else active
        dst_addr, src_addr = self.address(dst)[on], self.address(src)[on]
        keep = self.read(src_size)[on].astype(np.int64)
        if size not in (4, 8, 16) or ((keep != 0) & (keep != size)).any():
            raise NotImplementedError(f"cp.async of {size} bytes with source sizes {sorted(set(keep))}: {ins.text}")
        self.shared._locate(dst_addr, size)  # bounds and alignment of the destination
        if self.traffic is not None:  # the bytes are written into the banks as they land
            self.traffic.add(ins.text, dst_addr, np.arange(self.n)[on], size)
        data = np.zeros((on.sum(), size), dtype=np.uint8)
        read = keep > 0
        if read.any():
            self.glob._locate(src_addr[read], size)  # the whole source: bounds and alignment
            words = [self.glob.load(src_addr[read] + 4 * i, 4).astype(np.uint32) for i in range(size // 4)]
            data[read] = np.stack(words, 1).view(np.uint8).reshape(-1, size)
        offsets = dst_addr[:, None] - self.shared.bases[0] + np.arange(size)
        warps = np.arange(self.n)[on] // 32
        # the copy may write as soon as it is issued: no other warp may have read or written
        # these bytes since the last barrier (it counts as written again when it lands)
        self.races.access(offsets, warps, True, ins.text)
        np.add.at(self.pending, offsets.ravel(), 1)
        self.open_group.append((offsets, data, warps))

    def op_atom(self, ins, active):
        """``atom.global.<op>``: one thread after another (atomics to one address serialize)."""
        parts = ins.op.split(".")
        kinds = [p for p in parts if p in ATOMICS]
        if parts[1] != "global" or len(kinds) != 1 or len(ins.args) != 3:
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        ty = self._type(ins)
        width = WIDTHS[ty]
        d, address, value = ins.args
        addr, val = self.address(address), self.read(value)
        old = np.zeros(self.n, dtype=U64)  # inactive threads keep their register (write below)
        for t in np.flatnonzero(np.ones(self.n, bool) if active is None else active):
            old[t] = self.glob.load(addr[t : t + 1], width // 8)[0]
            new = ATOMICS[kinds[0]](self._int_scalar(old[t], ty), self._int_scalar(val[t], ty))
            self.glob.store(addr[t : t + 1], width // 8, _bits(np.array([new]), width))
        self.write(d, old, active, width)

    @staticmethod
    def _int_scalar(bits, ty: str) -> int:
        return int(_signed(np.array([bits], dtype=U64), WIDTHS[ty])[0]) if ty[0] == "s" else int(bits)

    def op_fence(self, ins, active):
        """Orders this thread's memory accesses for other programs; with one program at a time
        there is nothing to order."""

    def op_bar(self, ins, active):  # lock step: every earlier instruction has finished in every thread
        if active is not None and not active.all():
            raise PtxError(f"barrier under a divergent predicate: {ins.text}")
        self.races.barrier()

    def op_shfl(self, ins, active):
        # shfl.sync.<mode>.b32 d, a, b, c, membermask; only full warps and c = 31 (one segment of 32)
        mode = ins.op.split(".")[2]
        d, a, b, c, mask = ins.args
        if active is not None or int(self.read(c)[0]) != 31 or int(self.read(mask)[0]) & MASKS[32] != MASKS[32]:
            raise NotImplementedError(f"PTX instruction not emulated (only full-warp shuffles): {ins.text}")
        lane = np.arange(self.n) % 32
        b_val = (self.read(b) & U64(31)).astype(np.int64)
        src = {"bfly": lane ^ b_val, "idx": b_val, "up": lane - b_val, "down": lane + b_val}[mode]
        ok = (src >= 0) & (src <= 31) if mode != "up" else src >= 0
        src = np.where(ok, src, lane)
        self.write(d, self.read(a)[np.arange(self.n) - lane + src], None, 32)

    def op_mma(self, ins, active):
        if self.mma is None:
            raise NotImplementedError(f"no model for {ins.op}")
        if active is not None:
            raise PtxError(f"predicated warp-wide MMA: {ins.text}")
        d, a, b, c, e, selector = ins.args
        if int(self.read(selector)[0]) != 0:
            raise NotImplementedError(f"sparsity selector other than 0: {ins.text}")
        regs = [[self.read(r) for r in self._vector(x)] for x in (a, b, c)]
        out = self.mma(ins.op, regs[0], regs[1], regs[2], self.read(e))
        for reg, value in zip(self._vector(d), out):
            self.write(reg, value, None, 32)


def run_grid(ptx: str, grid: tuple[int, ...], nthreads: int, args: list[int], glob: Memory, shared_bytes: int,
             mma: MmaModel | None = None, reverse: bool = False, traffic: SharedTraffic | None = None) -> None:
    """Run every program of ``grid`` on the given memory, in launch order or ``reverse``d.
    ``args`` are the kernel's runtime arguments in parameter order (addresses from ``glob.add``
    for pointers); parameters beyond them (Triton's scratch pointers) are null. ``traffic``, if
    given, counts the shared-memory wavefronts of every access."""
    program = parse(ptx)
    if len(args) > len(program.params):
        raise PtxError(f"{len(args)} arguments for {len(program.params)} parameters")
    params = dict(zip(program.params, list(args) + [0] * (len(program.params) - len(args))))
    grid3 = tuple(grid) + (1,) * (3 - len(grid))
    ctas = [(x, y, z) for z in range(grid3[2]) for y in range(grid3[1]) for x in range(grid3[0])]
    for ctaid in reversed(ctas) if reverse else ctas:
        shared = Memory("shared", first=0x100)
        # poisoned with 0xFF bytes: a read of a never-written byte shows up as NaN or garbage
        shared.add(np.full(max(shared_bytes, 1), 0xFF, dtype=np.uint8), "shared")
        Cta(program, nthreads, ctaid, grid3, params, glob, shared, mma, traffic).run()
