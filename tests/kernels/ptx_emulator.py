"""A small interpreter for the PTX that Triton generates, so a GPU kernel can be run on a CPU.

Only the instructions our compiled kernels use are implemented (integer and fp32 arithmetic,
predicates, conversions, global/shared loads and stores, ``cp.async``, ``ldmatrix``, ``stmatrix``,
atomics, fences, warp shuffles, barriers, branches, mbarriers, TMA tensor loads); any other
instruction raises ``NotImplementedError`` naming it, so the emulator never guesses. Warp-wide
matrix instructions (``mma.sp``) are delegated to a model passed in by the caller; Hopper's
warpgroup MMA (``wgmma``, fp16/bf16 inputs, fp32 accumulators) is emulated here, see
:meth:`Cta.op_wgmma`. Its sparse form (``wgmma.mma_async.sp``, 2:4-sparse A in registers,
m64nNk32) is computed through that same ``mma.sp`` model, one ``mma.sp.m16n8k32`` per warp and
8-column block of B (sparsity selector 0, unscaled, K-major B only; A from shared memory is not
emulated).

Execution model: one program (CTA) at a time, to its end (in launch order, or reversed: the
order programs meet in at an atomic counter is the hardware's choice), except the programs of a
cluster (``run_grid(..., cluster=n)``), which run together, each until it waits at
``barrier.cluster.wait`` or ``mbarrier.try_wait`` for the others (see :class:`Cluster`); all of a
program's threads in lock step, each register a numpy array with one entry per thread holding
the raw bits. Lock step is stricter than the hardware, so a race-free kernel computes the same
thing, and a shared-memory race between warps (a missing ``bar.sync``) is detected and refused
rather than hidden, as is a read of shared bytes an unfinished ``cp.async`` targets. Branches
must be uniform across the CTA (Triton's loops are), otherwise the emulator refuses. Every global
or shared access of an active thread is checked against the buffers it was given (bounds and
alignment), so an out-of-bounds read that a GPU would silently allow is an error here; reading a
register that was never written is an error too. Given a :class:`SharedTraffic`, it also counts the passes of the
shared-memory banks each access takes, against the passes its bytes need: bank conflicts cost
time, not correctness, so they are measured rather than refused.

``wgmma.mma_async`` is computed when it is issued, which is what the hardware computes as long
as nothing touches its operands or accumulator before the ``wgmma.wait_group`` that retires it:
so touching them is refused (reading or writing the accumulator, writing the A registers, the
sparse form's metadata register or the shared bytes it reads), as are a register access since
the last ``wgmma.fence`` and shared bytes written by ordinary stores or ``cp.async`` with no
``fence.proxy.async`` before the wgmma reads them. These are the pipelining bugs a GPU would
hide or turn into rare wrong results.

Hopper's bulk tensor copies (TMA, ``cp.async.bulk.tensor``, one program's or multicast to several
of its cluster) and the mbarriers they complete are emulated in the same spirit (see
:class:`TensorMap`, :meth:`Cta.op_mbarrier`, :meth:`Cta._tma_load`). A copy is written when it is
issued (one legal schedule), and its bytes stay pending in each destination until that program
observes, by ``mbarrier.try_wait``, the phase the copy completed into: reading them before, a
second copy into them, or a copy into bytes a warp may still read (a wgmma in flight, or accesses
that no release of the destination's, acquired by the issuer, orders before the copy) is refused.
``try_wait`` does not spin: while its phase has not completed the program waits there and its
cluster partners run, and a wait nobody can end is a deadlock, as for ``barrier.cluster.wait``.
A partner's mbarrier may be used remotely (an arrive, a multicast's complete_tx) only once its
init is published by ``fence.mbarrier_init`` and a cluster barrier after it (whose arrive may be
``.relaxed``: the fence is the release). What a program owes its partners when it ends is in
:class:`Cluster`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

U64 = np.uint64
MASKS = {1: 1, 16: 0xFFFF, 32: 0xFFFFFFFF, 64: 0xFFFFFFFFFFFFFFFF}
WIDTHS = {"pred": 1, "b8": 8, "u8": 8, "s8": 8, "b16": 16, "u16": 16, "s16": 16, "f16": 16, "bf16": 16,
          "b32": 32, "u32": 32, "s32": 32, "f32": 32, "f16x2": 32, "b64": 64, "u64": 64, "s64": 64, "f64": 64}


# opcode parts (besides the types) whose meaning the handlers implement; any other modifier (.sat,
# .ftz, .approx, cache or memory-order qualifiers, ...) is refused rather than ignored
MODIFIERS = {"rn", "lo", "wide", "param", "global", "shared", "v2", "v4", "sync", "bfly", "idx", "up", "down",
             "lt", "le", "gt", "ge", "eq", "ne", "ls", "hi", "hs", "L2"}
# memory-order, scope and cache qualifiers of loads, atomics and fences: programs run one at a
# time, each to its end (a cluster's between its barriers), so every order they ask for holds
# here; what they guarantee between programs running at once on a GPU is not tested by the
# emulator, except distributed shared memory against the cluster barriers (see Cluster)
MODIFIERS |= {"cg", "relaxed", "acquire", "release", "acq_rel", "gpu"}
MODIFIERS |= {"async", "ca", "commit_group", "wait_group"}  # cp.async (see Cta.op_cp)
MODIFIERS |= {"aligned", "m8n8", "x1", "x2", "x4"}  # ldmatrix, stmatrix (see Cta.op_ldmatrix)
MODIFIERS |= {"cluster", "shared::cluster", "arrive", "wait"}  # clusters (see Cluster, Cta.op_mapa)
WGMMA_SHAPES = {f"m64n{n}k16" for n in range(8, 257, 8)}  # the fp16/bf16 shapes (see Cta.op_wgmma)
WGMMA_SP_SHAPES = {f"m64n{n}k32" for n in range(8, 257, 8)}  # their sparse (.sp) forms
# wgmma (dense and sparse) and fence.proxy.async
MODIFIERS |= {"fence", "mma_async", "proxy", "shared::cta", "sp"} | WGMMA_SHAPES | WGMMA_SP_SHAPES
# mbarriers (see Cta.op_mbarrier), fence.mbarrier_init, TMA loads (see Cta._tma_load)
MODIFIERS |= {"init", "expect_tx", "try_wait", "parity", "mbarrier_init"}
MODIFIERS |= {"bulk", "tensor", "1d", "2d", "3d", "4d", "5d", "mbarrier::complete_tx::bytes", "multicast::cluster"}
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


def wgmma_groups(reader: np.ndarray) -> np.ndarray:
    """The mask of warpgroups whose wgmmas read each byte (``RaceCheck.reader``; 0: none)."""
    return np.where(reader <= -3, -2 - reader, 0)


class RaceCheck:
    """Shared-memory accesses between two barriers: a byte one warp wrote may not be read or
    written by another warp, and a byte one warp read may not be written by another. Lock step
    would hide such a missing barrier; here it is an error. A warpgroup's ``wgmma`` reads its
    operands for all four warps at once, and finishes reading them at the wait that retires it; the
    warpgroups of a CTA may read the same bytes (a shared B operand), so a byte read by wgmmas
    holds the mask of their warpgroups."""

    def __init__(self, size: int):
        self.writer = np.full(size, -1)  # warp that wrote the byte since the last barrier
        self.reader = np.full(size, -1)  # warp that read it (-2: several, -2 - m: wgmmas of the warpgroups in mask m)

    def barrier(self) -> None:
        self.writer[:] = -1
        self.reader[:] = -1

    def access(self, offsets: np.ndarray, warps: np.ndarray, write: bool, text: str) -> None:
        """``offsets`` [threads, bytes] of one instruction, ``warps`` [threads]."""
        warps = np.broadcast_to(warps[:, None], offsets.shape)
        clash = (self.writer[offsets] >= 0) & (self.writer[offsets] != warps)
        if write:
            reader = self.reader[offsets]
            clash |= (reader == -2) | ((reader >= 0) & (reader != warps))
            clash |= (wgmma_groups(reader) & ~(1 << (warps // 4))) != 0  # a wgmma of another warpgroup read it
        if clash.any():
            raise PtxError(f"shared-memory race at byte {int(offsets[clash][0])} (no barrier between warps): {text}")
        if write:
            self.writer[offsets] = warps
        else:
            seen = self.reader[offsets]
            self.reader[offsets] = np.where((seen == -1) | (seen == warps), warps, -2)

    def async_read(self, offsets: np.ndarray, text: str) -> None:
        """A ``wgmma`` issued by a warpgroup reads ``offsets`` (bytes) for all its warps: a byte any
        warp wrote since the last barrier, even one of its own, may not have reached the others."""
        written = self.writer[offsets] >= 0
        if written.any():
            byte = int(offsets[written][0])
            raise PtxError(f"shared-memory race at byte {byte} (written by warp {self.writer[byte]} with no barrier "
                           f"before the wgmma that reads it): {text}")

    def async_read_done(self, offsets: np.ndarray, group: int) -> None:
        """The wgmma of warpgroup ``group`` finished reading ``offsets``: its own warps waited for
        that and may overwrite them; any other warp needs a barrier first."""
        seen, bit = self.reader[offsets], 1 << group
        self.reader[offsets] = np.where((seen == -1) | (seen <= -3), -2 - (wgmma_groups(seen) | bit), -2)


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
    target: int | None = None  # a branch's label, resolved in the label's scope (see parse)


# the fake address of the entry's first parameter (mov.b64 %rd, <param name>); far above global
# memory, the shared windows and the cluster window, so no access through one lands in a buffer
_PARAMS = 1 << 44


@dataclass
class Program:
    params: list[str]
    instrs: list[Instr]
    labels: dict[str, int]  # the labels of the function's own block (those of inner { } blocks are scoped)
    param_bytes: dict[str, int]  # the parameters declared as byte arrays (.b8 name[N]): N
    param_addresses: dict[str, int]  # every parameter's fake address, 128-byte aligned, none overlapping
    bare_registers: frozenset[str] = frozenset()  # registers declared without "%" (Triton's "complete")

    def param_at(self, address: int) -> str | None:
        """The parameter whose address this is, if any."""
        return next((name for name, at in self.param_addresses.items() if at == address), None)


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


_LABEL = re.compile(r"([$\w]+):(?!:)")


def parse(ptx: str) -> Program:
    """The first ``.entry`` of a PTX module: its parameters, instructions and labels.

    A label is scoped to its innermost enclosing ``{ }`` block, as in PTX: inline assembly that
    the compiler pastes several times into one function (a wait loop ``{ .reg .pred %w; L: ...;
    @!%w bra L; }``) defines the same label once per copy, and each branch goes to the copy in its
    own block (or, failing that, the nearest enclosing block's)."""
    text = re.sub(r"//[^\n]*", "", ptx)
    text = re.sub(r"^\s*\.(loc|file)\b[^\n]*", "", text, flags=re.MULTILINE)  # debug lines end without ";"
    entry = re.search(r"\.entry\s+(\w+)\s*\(([^)]*)\)", text)
    if not entry:
        raise PtxError("no .entry function in this PTX")
    declared = re.findall(r"\.param\s+[^,]*?(\w+)\s*(?:\[\s*(\d+)\s*\])?\s*(?:,|$)", entry.group(2))
    params = [name for name, _ in declared]
    param_bytes = {name: int(size) for name, size in declared if size}
    addresses, at = {}, _PARAMS
    for name in params:
        addresses[name] = at
        at += (param_bytes.get(name, 8) + 127) // 128 * 128
    start = text.index("{", entry.end())
    depth, end = 0, start
    for end in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            break
    body = text[start + 1 : end]
    instrs: list[Instr] = []
    scopes: list[int] = []  # the block of each instruction
    parent: list[int | None] = [None]  # block -> its enclosing block (0: the function body)
    labels: dict[tuple[int, str], int] = {}
    bare: set[str] = set()
    stack, pos = [0], 0
    # a block's braces stand where a statement starts; braces inside a statement are vector
    # operands. The blocks also scope their own .reg names: in lock step, with every register
    # written before it is read (checked), one flat namespace computes the same
    while (pos := re.compile(r"\s*").match(body, pos).end()) < len(body):
        if body[pos] == "{":
            parent.append(stack[-1])
            stack.append(len(parent) - 1)
            pos += 1
            continue
        if body[pos] == "}":
            if len(stack) == 1:
                raise PtxError("unbalanced '}' in the function body")
            stack.pop()
            pos += 1
            continue
        if m := _LABEL.match(body, pos):
            if (stack[-1], m.group(1)) in labels:
                raise PtxError(f"label {m.group(1)} defined twice in one block")
            labels[(stack[-1], m.group(1))] = len(instrs)
            pos = m.end()
            continue
        stop = body.find(";", pos)
        if stop < 0:
            raise PtxError(f"statement without ';': {body[pos:].strip()!r}")
        chunk, pos = body[pos:stop].strip(), stop + 1
        if chunk.startswith("."):  # .reg, .loc, .reqntid, ...: no effect here
            if not re.match(r"\.(reg|loc|reqntid|maxntid|pragma|file)\b", chunk):
                raise NotImplementedError(f"PTX directive inside the body: {chunk!r}")
            if m := re.match(r"\.reg\s+(?:\.v\d\s+)?\.\w+\s+(.*)", chunk, re.DOTALL):
                bare |= {name for name in _split_args(m.group(1)) if re.fullmatch(r"[A-Za-z_$][\w$]*", name)}
            continue
        guard, negate = None, False
        if m := re.match(r"@(!?)(%?[\w$]+)\s+", chunk):
            negate, guard = m.group(1) == "!", m.group(2)
            chunk = chunk[m.end() :]
        op, rest = re.match(r"(\S+)\s*(.*)", chunk, re.DOTALL).groups()  # the opcode ends at any white space
        instrs.append(Instr(guard, negate, op, _split_args(rest.strip()), chunk))
        scopes.append(stack[-1])
    if len(stack) != 1:
        raise PtxError("unbalanced '{' in the function body")
    for ins, scope in zip(instrs, scopes):
        if ins.op.split(".")[0] == "bra":
            while scope is not None and (scope, ins.args[0]) not in labels:
                scope = parent[scope]
            if scope is None:
                raise PtxError(f"branch to a label not defined in its block or an enclosing one: {ins.text}")
            ins.target = labels[(scope, ins.args[0])]
    return Program(params, instrs, {name: i for (scope, name), i in labels.items() if scope == 0}, param_bytes,
                   addresses, frozenset(bare))


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


def _pairs(words: np.ndarray, ty: str) -> np.ndarray:
    """The two 16-bit fp16 or bf16 values of each 32-bit word, low half first, as float64 [..., 2]."""
    halves = np.asarray(words).astype(U64)[..., None] >> (U64(16) * np.arange(2, dtype=U64))
    return (_f16(halves) if ty == "f16" else _bf16_to_f32(halves)).astype(np.float64)


def _f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round to nearest even (NaN stays NaN), as ``cvt.rn.bf16.f32``."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + U64(0x7FFF) + ((u >> U64(16)) & U64(1))) >> U64(16)
    return np.where(np.isnan(x), U64(0x7FC0), rounded & U64(0xFFFF))


# ---------------------------------------------------------------------------------------- wgmma

SWIZZLE_BYTES = {0: 0, 1: 128, 2: 64, 3: 32}  # descriptor bits 62-63 -> bytes per row of the swizzle atom
DESCRIPTOR_RESERVED = sum(1 << bit for bit in (14, 15, 30, 31, 46, 47, 48, *range(52, 62)))


def wgmma_addresses(desc: int, rows: int, mn_major: bool, elem: int = 2, depth: int = 16) -> np.ndarray:
    """Shared-window byte address [rows, depth] of each element (i, k) of a ``wgmma`` operand in
    shared memory, as its 64-bit matrix descriptor places it: ``i`` is A's row (M) or B's column
    (N), ``k`` runs along K; ``mn_major`` is the instruction's imm-trans flag. ``depth``: the
    instruction's K, 32 bytes of it for the dense shapes (16 fp16/bf16 values), 64 bytes for the
    B of the sparse m64nNk32 (32 values, K-major).

    The PTX ISA's canonical layouts, in bytes (T = 16 bytes, one row of an 8-row core matrix):
    without swizzle, K-major core matrices are 8 rows of 16 bytes along i, SBO apart every 8
    rows of i and LBO apart every 16 bytes of k; MN-major ones are 16 bytes of i by 8 rows of k,
    SBO apart along i and LBO apart along k. With a swizzle of W bytes, an atom is 8 rows of W
    bytes: K-major rows are i (8-row groups SBO apart, the values of k of one instruction inside
    a row: :meth:`Cta._wgmma_operand` refuses an instruction whose K is wider than W); MN-major
    rows are k (8-row groups SBO apart) and W-byte blocks of i are LBO apart. The swizzle then
    XORs the 16-byte chunk (address bits 4-6, 4-5, 4 for 128/64/32 bytes) with the row in the
    repeating pattern (bits 7-9, 7-8, 7) of the address itself."""
    start, lbo, sbo = (((desc >> shift) & 0x3FFF) << 4 for shift in (0, 16, 32))
    if (desc >> 49) & 7:
        raise NotImplementedError(f"wgmma matrix descriptor {desc:#x} with a base offset (bits 49-51)")
    if desc & DESCRIPTOR_RESERVED:
        raise NotImplementedError(f"wgmma matrix descriptor {desc:#x} with reserved bits set")
    width = SWIZZLE_BYTES[desc >> 62]
    i, k = np.arange(rows)[:, None], np.arange(depth)[None, :]
    if width == 0 and mn_major:
        offset = (i % (16 // elem)) * elem + (i // (16 // elem)) * sbo + (k % 8) * 16 + (k // 8) * lbo
    elif width == 0:
        offset = (i % 8) * 16 + (i // 8) * sbo + (k % (16 // elem)) * elem + (k // (16 // elem)) * lbo
    elif mn_major:
        offset = (i % (width // elem)) * elem + (i // (width // elem)) * lbo + (k % 8) * width + (k // 8) * sbo
    else:
        offset = (i % 8) * width + (i // 8) * sbo + k * elem
    addr = start + offset
    if width:
        addr ^= ((addr >> 7) & (width // 16 - 1)) << 4
    return addr


def _wgmma_a_fragment() -> tuple[np.ndarray, np.ndarray]:
    """(row, k) [128 threads, 4 registers, 2 halves] of a register A operand (m64k16): warp w of
    the warpgroup holds rows 16w..16w+15; lane 4g+q holds rows g (registers 0, 2) and g+8 (1, 3),
    k = 2q, 2q+1 (registers 0, 1) and 2q+8, 2q+9 (2, 3), the lower k in the low half."""
    t, reg, half = np.arange(128)[:, None, None], np.arange(4)[None, :, None], np.arange(2)[None, None, :]
    lane = t % 32
    return 16 * (t // 32) + lane // 4 + 8 * (reg % 2), 2 * (lane % 4) + 8 * (reg // 2) + half


def _wgmma_d_fragment(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) [128 threads, n / 2 registers] of an fp32 accumulator (m64nN): warp w holds
    rows 16w..16w+15; lane 4g+q's registers 4j..4j+3 are columns 8j+2q, 8j+2q+1 of row g, then of row g+8."""
    t, reg = np.arange(128)[:, None], np.arange(n // 2)[None, :]
    lane = t % 32
    return 16 * (t // 32) + lane // 4 + 8 * (reg % 4 // 2), 8 * (reg // 4) + 2 * (lane % 4) + reg % 2


def _mma_sp_b_fragment() -> tuple[np.ndarray, np.ndarray]:
    """(k, column) [32 lanes, 4 registers, 2 halves] of the B operand [32, 8] of one
    ``mma.sp.m16n8k32`` with fp16/bf16 inputs: lane 4g+q holds column g, register r the rows
    k = 8r + 2q (low half) and 8r + 2q + 1 (high half)."""
    lane, reg, half = np.arange(32)[:, None, None], np.arange(4)[None, :, None], np.arange(2)[None, None, :]
    k, column = np.broadcast_arrays(8 * reg + 2 * (lane % 4) + half, lane // 4)
    return k, column


def _halves_to_f64(bits: np.ndarray, ty: str) -> np.ndarray:
    """16-bit fp16 or bf16 values (any integer array) as float64."""
    bits = np.asarray(bits).astype(np.uint64)
    return (_f16(bits) if ty == "f16" else _bf16_to_f32(bits)).astype(np.float64)


@dataclass
class WgmmaOp:
    """An issued ``wgmma.mma_async`` until the wait that retires it."""

    accumulator: tuple[str, ...]
    a_registers: tuple[str, ...]
    reads: list[np.ndarray]  # per warpgroup, the shared offsets its descriptors read
    metadata: tuple[str, ...] = ()  # the sparse form's metadata register

    @property
    def inputs(self) -> tuple[str, ...]:
        """The registers it reads until retired (besides the accumulator)."""
        return self.a_registers + self.metadata

    def roles(self) -> dict[str, str]:
        """Each register it owns until retired, with the role an error message names."""
        return (dict.fromkeys(self.a_registers, "A operand") | dict.fromkeys(self.metadata, "sparsity metadata")
                | dict.fromkeys(self.accumulator, "accumulator"))


# ---------------------------------------------------------------------------------------- TMA and mbarriers


@dataclass(frozen=True)
class TensorMap:
    """A tiled tensor map (what ``cuTensorMapEncodeTiled`` encodes), as the emulator's value of a
    kernel's 128-byte ``.param``: the tensor at global address ``base`` with ``dims`` elements per
    dimension, innermost first, ``strides_bytes`` between the elements of dimensions 1.. (the
    innermost stride is ``elem_bytes``), copied in boxes of ``box`` elements (innermost first) and
    laid into shared memory with a ``swizzle`` of 0, 32, 64 or 128 bytes. Checked as the driver
    checks it: a map the driver would refuse raises ``ValueError`` here."""

    base: int
    dims: tuple[int, ...]
    strides_bytes: tuple[int, ...]
    box: tuple[int, ...]
    elem_bytes: int
    swizzle: int = 0

    def __post_init__(self):
        for name in ("dims", "strides_bytes", "box"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        rank = len(self.dims)
        if not 1 <= rank <= 5 or len(self.box) != rank or len(self.strides_bytes) != rank - 1:
            raise ValueError(f"a tensor map has 1 to 5 dimensions, a box of as many and a stride for each but the "
                             f"innermost: dims {self.dims}, box {self.box}, strides {self.strides_bytes}")
        if self.elem_bytes not in (1, 2, 4, 8):
            raise ValueError(f"elements of {self.elem_bytes} bytes (1, 2, 4 or 8)")
        if self.swizzle not in (0, 32, 64, 128):
            raise ValueError(f"swizzle of {self.swizzle} bytes (0, 32, 64 or 128)")
        if self.base % 16:
            raise ValueError(f"the tensor's base {self.base:#x} is not 16-byte aligned")
        if any(not 1 <= d <= 1 << 32 for d in self.dims):
            raise ValueError(f"dimensions {self.dims} (1 to 2^32 elements each)")
        if any(s % 16 or not 0 < s < 1 << 40 for s in self.strides_bytes):
            raise ValueError(f"strides {self.strides_bytes} bytes (positive multiples of 16, below 2^40)")
        if any(not 1 <= b <= 256 for b in self.box):
            raise ValueError(f"box {self.box} (1 to 256 elements per dimension)")
        row = self.box[0] * self.elem_bytes
        if row % 16:
            raise ValueError(f"the box's inner extent is {row} bytes, not a multiple of 16")
        if self.swizzle and row > self.swizzle:
            raise ValueError(f"the box's inner extent of {row} bytes is wider than its {self.swizzle}-byte swizzle")

    @property
    def box_bytes(self) -> int:
        """What a copy of one box signals to its mbarrier, zero-filled elements included."""
        return int(np.prod(self.box)) * self.elem_bytes

    def read_box(self, glob: Memory, coords: list[int]) -> np.ndarray:
        """The box at element ``coords`` (innermost first, may be negative), as bytes in shared
        memory's order before the swizzle (row-major, innermost fastest): elements outside the
        tensor read as zero, the others are checked against ``glob``'s buffers."""
        grid = np.indices(self.box[::-1]).reshape(len(self.box), -1)[::-1]  # [dimension, element], innermost first
        pos = grid + np.array(coords, dtype=np.int64)[:, None]
        inside = ((pos >= 0) & (pos < np.array(self.dims, dtype=np.int64)[:, None])).all(0)
        strides = np.array((self.elem_bytes, *self.strides_bytes), dtype=np.int64)
        values = np.zeros(pos.shape[1], dtype=U64)
        if inside.any():
            values[inside] = glob.load(self.base + (pos[:, inside] * strides[:, None]).sum(0), self.elem_bytes)
        return values.astype("<u8").view(np.uint8).reshape(-1, 8)[:, : self.elem_bytes].ravel()

    def shared_addresses(self, dst: int) -> np.ndarray:
        """The shared address of each byte of a box written at ``dst``: row-major, then the
        swizzle by address (the 16-byte chunk within a row of the pattern XORed with the row:
        bits 4-6, 4-5 or 4 with bits 7-9, 7-8 or 7, for 128, 64 or 32 bytes), as ``wgmma`` reads it."""
        addr = dst + np.arange(self.box_bytes, dtype=np.int64)
        if self.swizzle:
            addr ^= ((addr >> 7) & (self.swizzle // 16 - 1)) << 4
        return addr


_NEVER = np.iinfo(np.int64).max  # a byte touched since the last release that covers it
_TMA_COPIES = itertools.count(1)  # the idents of TMA copies


@dataclass
class MBarrier:
    """The state of one initialized mbarrier (the emulator keeps it beside the 8 shared bytes,
    which ordinary loads and stores may then not touch)."""

    count: int  # arrivals each phase expects
    pending: int  # arrivals still missing in the current phase
    init_thread: int  # the thread that initialized it (a fence.mbarrier_init of that thread publishes it)
    init_warps: int  # the warps that initialized it (bit mask): others need a bar.sync after the init
    init_syncs: int  # the CTA's barriers (bar.sync, cluster waits) completed before the init
    clock: np.ndarray  # the releases of the current phase's arrivals, per cluster rank
    tx: int = 0  # transaction count of the current phase (complete_tx may precede expect_tx: negative)
    phase: int = 0  # phases completed
    done_clock: np.ndarray | None = None  # the releases of every completed phase's arrivals (a wait acquires)
    fenced: int | None = None  # the CTA's cluster arrivals before the fence.mbarrier_init that published it


@dataclass
class TmaCopy:
    """The bytes one TMA wrote into one CTA (eagerly, at issue), pending until that CTA observes
    the mbarrier phase its complete_tx belonged to."""

    ident: int  # > 0, the mark of its bytes in the destination's ``tma_pending``
    issuer: int  # cluster rank
    dest: int
    barrier: int  # shared offset of the mbarrier
    phase: int  # the phase of that mbarrier it completes into
    offsets: np.ndarray
    observers: int = 0  # warps (bit mask) of the destination that observed the phase
    observed_release: int | None = None  # the destination's first release after it observed the phase


# ---------------------------------------------------------------------------------------- execution

# (opcode, A, B, C registers, metadata register) -> D registers, every warp at once; raw bits, one
# entry per thread. The caller supplies it (the emulator does not model tensor-core instructions).
MmaModel = Callable[[str, list[np.ndarray], list[np.ndarray], list[np.ndarray], np.ndarray], list[np.ndarray]]


# a program's shared::cta addresses lie below this; in the shared::cluster window, rank r's buffer
# starts at (r + 1) * _WINDOW (what mapa.shared::cluster returns: the offset is kept)
_WINDOW = 1 << 24


class Cluster:
    """The programs of one thread-block cluster (along x), run together: each runs until it waits at
    ``barrier.cluster.wait`` for an arrival the others have not made, then the next one runs. A wait
    that no program can satisfy (they all wait, or those not waiting have ended) is a deadlock and
    is refused, as is a program that ends owing the cluster an arrival others wait for.

    Distributed shared memory (``mapa``, ``ld``/``st.shared::cluster``) is checked against the
    barriers: a program may touch bytes a partner stored only after a wait that the partner's
    store preceded an arrival for, and a partner may store into, or read, bytes a program touched
    (or wrote) only once it has completed a wait the program arrived at after that access.

    mbarriers and TMA copies are checked with a vector clock per program: an mbarrier arrive or a
    cluster arrive (not ``.relaxed``) releases, observing an mbarrier phase complete or completing
    a cluster wait acquires what the arrivals released. A release by some warps orders the
    program's shared accesses before its last CTA barrier and those warps' since (so one thread's
    arrive after a ``bar.sync`` speaks for the whole CTA). A TMA copy into a partner's bytes needs
    every warp access to them ordered before it by such a release of the partner's that the issuer
    acquired (the consumer's arrive on the producer's "empty" barrier, which the producer waits for).

    A program may end (``ret``) only when
    (1) every TMA copy into its shared memory has been observed (a ``try_wait`` saw its phase complete);
    (2) for every multicast it issued into a partner, the partner has observed it and afterwards
    released something this program acquired (a final cluster barrier, or a producer tail that waits
    on its "empty" barriers for the partner's last arrivals), so that no copy of its may still be
    writing into a partner;
    (3) every remote mbarrier arrive a partner made on it is ordered before its end by a release of
    that partner's it acquired (the arrive itself counts once a wait observed its phase).
    A remote operation on a program that has ended (remote arrive, multicast, ``shared::cluster``
    access) is refused, whenever it comes."""

    def __init__(self, size: int):
        self.size = size
        self.ctas: list[Cta] = []

    def join(self, cta: "Cta") -> int:
        if len(self.ctas) == self.size:
            raise ValueError(f"a cluster of {self.size} programs has no room for another")
        self.ctas.append(cta)
        return len(self.ctas) - 1

    def passed(self, phase: int) -> bool:
        """Have all programs arrived ``phase`` times?"""
        return all(c.arrived >= phase for c in self.ctas)

    def member(self, rank: int, text: str) -> "Cta":
        if not 0 <= rank < len(self.ctas):
            raise PtxError(f"shared::cluster address of rank {rank} in a cluster of {self.size}: {text}")
        return self.ctas[rank]

    def run(self, max_steps: int = 10_000_000) -> None:
        if len(self.ctas) != self.size:
            raise ValueError(f"{len(self.ctas)} programs for a cluster of {self.size}")
        running = {c.rank: c.steps(max_steps) for c in self.ctas}
        while running:
            progressed = False
            for rank, steps in list(running.items()):
                before = self.ctas[rank].executed  # a program that resumes and waits again at once made none
                try:
                    next(steps)
                except StopIteration:
                    del running[rank]
                    progressed = True
                    continue
                progressed |= self.ctas[rank].executed != before
            if running and not progressed:
                stuck = "; ".join(self.ctas[r].waiting_for for r in running)
                raise PtxError(f"{'cluster ' if self.size > 1 else ''}deadlock: {stuck}")


class Cta:
    """The state of one program while it runs."""

    def __init__(self, program: Program, nthreads: int, ctaid: tuple[int, int, int], grid: tuple[int, int, int],
                 params: dict[str, int], glob: Memory, shared: Memory, mma: MmaModel | None,
                 traffic: SharedTraffic | None = None, cluster: Cluster | None = None):
        self.p, self.n, self.params, self.glob, self.shared, self.mma = program, nthreads, params, glob, shared, mma
        self.traffic = traffic
        tid = np.arange(nthreads, dtype=U64)
        self.special = {"%tid.x": tid, "%tid.y": 0, "%tid.z": 0, "%ntid.x": nthreads, "%ntid.y": 1, "%ntid.z": 1,
                        "%laneid": tid % U64(32), "%warpid": tid // U64(32)}
        for axis, c, g in zip("xyz", ctaid, grid):
            self.special[f"%ctaid.{axis}"] = c
            self.special[f"%nctaid.{axis}"] = g
        # clusters along x (a launch without one is a cluster of one, as on the GPU)
        self.cluster = cluster or Cluster(1)
        self.rank = self.cluster.join(self)
        size = self.cluster.size
        self.special |= {"%cluster_ctarank": self.rank, "%cluster_nctarank": size, "%cluster_ctaid.x": self.rank,
                         "%cluster_nctaid.x": size, "%clusterid.x": ctaid[0] // size, "%nclusterid.x": grid[0] // size}
        for axis, c, g in zip("yz", ctaid[1:], grid[1:]):
            self.special |= {f"%cluster_ctaid.{axis}": 0, f"%cluster_nctaid.{axis}": 1, f"%clusterid.{axis}": c,
                             f"%nclusterid.{axis}": g}
        self.arrived = self.waited = 0  # barrier.cluster arrivals and completed waits
        # the wait this program must complete before it ends: partners' accesses to its shared memory
        # are ordered before its end only by an arrival of theirs after them that it waited for
        self.remote_needed, self.ended = 0, False
        # distributed shared memory, per byte of this program's buffer: the completed waits this
        # program needs before it may touch a byte a partner stored (0: none stored), and the
        # arrivals it had made when it last touched, or wrote, each byte (-1: never)
        size_bytes = shared.buffers[0].size
        self.remote_visible_after = np.zeros(size_bytes, dtype=np.int64)
        self.local_phase = np.full(size_bytes, -1, dtype=np.int64)
        self.local_write_phase = np.full(size_bytes, -1, dtype=np.int64)
        self.regs: dict[str, np.ndarray] = {}
        self.races = RaceCheck(shared.buffers[0].size)
        # cp.async: copies issued since the last commit, then committed groups, oldest first; each
        # copy is (shared offsets [threads, bytes], bytes, warps). Until a wait retires its group,
        # the destination bytes are pending: reading them is an error (the data may not be there)
        self.open_group: list = []
        self.groups: list[list] = []
        self.pending = np.zeros(shared.buffers[0].size, dtype=np.int64)
        # wgmma: issued operations not yet committed, then committed groups, oldest first; the
        # registers they own until retired (name -> "accumulator", "A operand" or "sparsity
        # metadata") and the shared bytes they read; registers read or written since the last
        # wgmma.fence; shared bytes written by the generic proxy (stores, cp.async) since the last
        # fence.proxy.async
        self.wgmma_open: list[WgmmaOp] = []
        self.wgmma_groups: list[list[WgmmaOp]] = []
        self.wgmma_owned: dict[str, str] = {}
        self.wgmma_reading = np.zeros(shared.buffers[0].size, dtype=np.int64)
        self.touched: set[str] | None = None  # None: no wgmma.fence yet
        self.generic = np.zeros(shared.buffers[0].size, dtype=bool)
        self.ins: Instr | None = None  # the instruction running, for error messages
        self.nwarps = (nthreads + 31) // 32
        self.all_warps = (1 << self.nwarps) - 1
        # mbarriers (see op_mbarrier) by shared offset; their bytes, which nothing else may touch
        self.mbarriers: dict[int, MBarrier] = {}
        self.barrier_bytes = np.zeros(size_bytes, dtype=bool)
        # TMA copies into this program's shared memory that not all its warps have observed (by
        # ident), the ident on each byte they wrote (0: none), and the copies it multicast into
        # partners, until it ends (see _may_end)
        self.tma_copies: dict[int, TmaCopy] = {}
        self.tma_pending = np.zeros(size_bytes, dtype=np.int64)
        self.tma_issued: list[TmaCopy] = []
        # releases and acquires between the programs of the cluster, a vector clock: entry r counts
        # the releases of rank r this program has acquired (its own entry, its own releases). Per
        # shared byte, the first own release that orders the warp accesses to it since the last
        # one before whatever acquires it (_NEVER: none yet; 0: never touched); the highest own
        # release acquired back (through an mbarrier); per partner, the release that ordered its
        # latest remote arrival on an mbarrier here; the clock each cluster arrival released
        self.clock = np.zeros(size, dtype=np.int64)
        self.touch_release = np.zeros(size_bytes, dtype=np.int64)
        self.wgmma_released = np.zeros(size_bytes, dtype=np.int64)  # warpgroups that released since a wgmma read
        self.acquired_own = 0
        self.remote_arrivals = np.zeros(size, dtype=np.int64)
        self.arrival_clocks: list[np.ndarray] = []
        self.syncs = 0  # CTA barriers completed (bar.sync, barrier.cluster.wait)
        self.executed = 0  # instructions started: a program that waits and starts none made no progress
        self.waiting_for = ""  # what the program waits for, for a deadlock's message

    # operands
    def read(self, operand: str) -> np.ndarray:
        operand = operand.strip()
        if operand.startswith("%") or operand in self.p.bare_registers:
            if operand in self.regs:
                if self.wgmma_owned.get(operand) == "accumulator":
                    raise PtxError(f"read of {operand}, the accumulator of a wgmma.mma_async not yet waited for "
                                   f"(wgmma.wait_group): {self.ins.text}")
                if self.touched is not None:
                    self.touched.add(operand)
                return self.regs[operand]
            if operand in self.special:
                return np.broadcast_to(np.asarray(self.special[operand], dtype=U64), (self.n,))
            raise PtxError(f"read of register {operand} before any write")
        if operand == "global_smem":
            return np.full(self.n, self.shared.bases[0], dtype=U64)
        if operand in self.p.param_addresses:  # mov.b64 %rd, <param>: its (fake) address, see Program
            return np.full(self.n, self.p.param_addresses[operand], dtype=U64)
        if re.fullmatch(r"0[fF][0-9a-fA-F]{8}", operand):
            return np.full(self.n, int(operand[2:], 16), dtype=U64)
        if re.fullmatch(r"-?(0[xX][0-9a-fA-F]+|\d+)", operand):
            return np.full(self.n, int(operand, 0) & MASKS[64], dtype=U64)
        raise PtxError(f"unsupported operand {operand!r}")

    def write(self, reg: str, value: np.ndarray, active: np.ndarray | None, width: int) -> None:
        if reg in self.wgmma_owned:
            raise PtxError(f"write of {reg}, the {self.wgmma_owned[reg]} of a wgmma.mma_async not yet waited for "
                           f"(wgmma.wait_group): {self.ins.text}")
        if self.touched is not None:
            self.touched.add(reg)
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
        """Run a program alone (a cluster of one): its cluster barriers never wait, and an
        mbarrier wait that is not over at once never will be (nobody else can arrive)."""
        for _ in self.steps(max_steps):
            raise PtxError(f"deadlock: {self.waiting_for}")  # nobody else can arrive

    def steps(self, max_steps: int = 10_000_000):
        """Run the program, yielding while it waits at ``barrier.cluster.wait`` for the other
        programs of its cluster, or at ``mbarrier.try_wait`` for a phase to complete
        (``Cluster.run`` interleaves them)."""
        pc, steps, instrs = 0, 0, self.p.instrs
        while pc < len(instrs):
            ins = self.ins = instrs[pc]
            steps += 1
            self.executed += 1
            if steps > max_steps:
                raise PtxError("the kernel ran more than max_steps instructions (an endless loop?)")
            active = None
            if ins.guard is not None:
                active = self.read(ins.guard).astype(bool) ^ ins.negate
            base = ins.op.split(".")[0]
            if base == "bra":
                if active is None or active.all():
                    pc = ins.target
                    continue
                if active.any():
                    raise PtxError(f"divergent branch: {ins.text}")
                pc += 1
                continue
            if base == "ret" or base == "exit":
                if active is None or active.all():
                    self._may_end(ins)
                    self.ended = True
                    return
                if active.any():
                    raise PtxError(f"divergent {base}: {ins.text}")
                pc += 1
                continue
            if active is not None and not active.any() and base not in ("mma", "shfl", "wgmma"):
                pc += 1
                continue
            if base == "barrier" and ins.op.startswith("barrier.cluster.wait"):
                self._check_cluster_op(ins, active)
                while not self.cluster.passed(self.arrived):
                    self.waiting_for = (f"rank {self.rank} waits at barrier.cluster.wait for every program's arrival "
                                        f"{self.arrived} (they arrived {[c.arrived for c in self.cluster.ctas]} "
                                        f"times): {ins.text}")
                    yield ins
                self.waited = self.arrived
                for cta in self.cluster.ctas:  # what each released at that arrival
                    self._acquire(cta.arrival_clocks[self.waited - 1])
                self.races.barrier()  # every thread of the cluster arrived: this program's warps too (bar.sync's order)
                self._synced()
                pc += 1
                continue
            handler = getattr(self, "op_" + base, None)
            unknown = {p for p in ins.op.split(".")[1:] if p not in MODIFIERS | ATOMICS.keys() and p not in WIDTHS}
            if base == "mbarrier" and ins.op.split(".")[1] == "try_wait" and not unknown:
                while not self._mbarrier_try_wait(ins, active):  # never spins: waits for the others to complete it
                    yield ins
                pc += 1
                continue
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
        elif ty == "f16x2":  # two fp16 values per register: exact in fp64, then rounded to fp16 once
            out = fn(_pairs(self.read(a), "f16"), _pairs(self.read(b), "f16")).astype(np.float16)
            out = out.view(np.uint16).astype(U64)
            self.write(d, out[:, 0] | (out[:, 1] << U64(16)), active, 32)
        else:
            self.write(d, fn(self._int(a, ty), self._int(b, ty)), active, WIDTHS[ty])

    def op_mov(self, ins, active):
        ty = self._type(ins)
        d, a = ins.args
        if a.startswith("{") or d.startswith("{"):  # packs equal parts, lowest first, or unpacks them
            parts = self._vector(a if a.startswith("{") else d)
            width = WIDTHS[ty] // len(parts)
            if a.startswith("{"):
                packed = sum((self.read(x) & U64(MASKS[width])) << U64(width * i) for i, x in enumerate(parts))
                self.write(d, packed, active, WIDTHS[ty])
            else:
                for i, x in enumerate(parts):
                    self.write(x, self.read(a) >> U64(width * i), active, width)
            return
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
        """``bfe.{u32,s32}`` with fields uniform across threads: ``length`` bits from bit ``pos``,
        the bits above them zeros, or for ``s32`` copies of the field's top bit (bit 31 if the
        field runs past it)."""
        ty = self._type(ins)
        d, a, b, c = ins.args
        b, c = self.read(b), self.read(c)
        if ty not in ("u32", "s32") or (b != b[0]).any() or (c != c[0]).any():
            raise NotImplementedError(f"PTX instruction not emulated (only uniform bfe.u32/s32): {ins.text}")
        pos, length = int(b[0]) & 0xFF, int(c[0]) & 0xFF
        bits = self.read(a) & U64(MASKS[32])
        kept = min(length, max(32 - pos, 0))  # field bits inside the source
        field = (bits >> U64(min(pos, 32))) & U64((1 << kept) - 1)
        if ty == "s32" and length:
            top = (bits >> U64(min(pos + length - 1, 31))) & U64(1)
            field = np.where(top == 1, field | U64(MASKS[32] ^ ((1 << kept) - 1)), field)
        self.write(d, field, active, 32)

    def op_prmt(self, ins, active):
        """``prmt.b32 d, a, b, c`` (the default mode): byte i of d is byte ``c[4i+2:4i]`` of the
        eight bytes b:a (a the low four), or, if bit ``4i+3`` of c is set, that byte's top bit
        copied into all eight."""
        if ins.op != "prmt.b32":
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        d, a, b, c = ins.args
        pool = (self.read(a) & U64(MASKS[32])) | (self.read(b) << U64(32))
        select, out = self.read(c), np.zeros(self.n, dtype=U64)
        for i in range(4):
            nibble = (select >> U64(4 * i)) & U64(0xF)
            byte = (pool >> (U64(8) * (nibble & U64(7)))) & U64(0xFF)
            byte = np.where(nibble & U64(8), np.where(byte & U64(0x80), U64(0xFF), U64(0)), byte)
            out |= byte << U64(8 * i)
        self.write(d, out, active, 32)

    def op_neg(self, ins, active):
        ty = self._type(ins)
        d, a = ins.args
        if ty not in ("s32", "s64"):
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        self.write(d, -self._int(a, ty), active, WIDTHS[ty])

    def op_selp(self, ins, active):
        ty = self._type(ins)
        d, a, b, p = ins.args
        self.write(d, np.where(self.read(p).astype(bool), self.read(a), self.read(b)), active, WIDTHS[ty])

    def op_setp(self, ins, active):
        parts = ins.op.split(".")
        if len(parts) != 3:
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        cmp, ty = parts[1], parts[2]
        if ty != "f32" and ty.lstrip("b")[0] == "f":  # f16, bf16, f64: not modelled
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
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
        space = {"global": self.glob, "shared": self.shared, "shared::cta": self.shared}.get(ins.op.split(".")[1])
        if space is None:
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        return space, *self._vector_shape(ins)

    def _vector_shape(self, ins: Instr) -> tuple[int, int]:
        """(elements, bytes per element) of a load or store."""
        vec = next((int(p[1:]) for p in ins.op.split(".") if re.fullmatch(r"v[248]", p)), 1)
        return vec, WIDTHS[self._type(ins)] // 8

    @staticmethod
    def _vector(operand: str) -> list[str]:
        operand = operand.strip()
        return _split_args(operand[1:-1]) if operand.startswith("{") else [operand]

    def op_ld(self, ins, active):
        if ins.op.startswith("ld.param"):
            d, src = ins.args
            name = src.strip("[] ")
            if isinstance(self.params[name], TensorMap):
                raise NotImplementedError(f"ld.param of a tensor-map parameter (only its address is used): {ins.text}")
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
        on = np.ones(self.n, bool) if active is None else active
        if ins.op.split(".")[1] == "shared::cluster":
            return self._cluster_access(ins, self.address(address), on, registers, write)
        mem, vec, size = self._memory_op(ins)
        addr = self.address(address)
        if vec > 1 and (addr[on] % (vec * size)).any():  # a vector access needs the whole vector's alignment
            raise PtxError(f"misaligned {vec * size}-byte vector {'store' if write else 'load'}: {ins.text}")
        self._track(mem, addr, on, vec * size, write, ins.text)
        return mem, addr, on, size, self._vector(registers)

    def _cluster_access(self, ins: Instr, addr: np.ndarray, on: np.ndarray, registers: str, write: bool):
        """A load or store in the cluster window: one partner's buffer per instruction (what the
        kernels here do), checked against the cluster barriers (see ``Cluster``)."""
        vec, size = self._vector_shape(ins)
        ranks = np.unique(addr[on] // _WINDOW - 1)
        if len(ranks) != 1:
            raise NotImplementedError(f"shared::cluster access of several programs' buffers at once: {ins.text}")
        target = self.cluster.member(int(ranks[0]), ins.text) if ranks[0] >= 0 else self
        local = np.where(on, addr % _WINDOW if ranks[0] >= 0 else addr - self.shared.bases[0], 0)
        local = local + target.shared.bases[0]
        if (local[on] % (vec * size)).any():
            raise PtxError(f"misaligned {vec * size}-byte shared::cluster access: {ins.text}")
        if target is self:
            self._track(self.shared, local, on, vec * size, write, ins.text)
        else:
            offsets = (local[on, None] - target.shared.bases[0] + np.arange(vec * size)).ravel()
            target.shared._locate(local[on], vec * size)  # bounds, with the buffer's own message
            if target.barrier_bytes[offsets].any():
                raise PtxError(f"shared::cluster access to the bytes of a partner's mbarrier: {ins.text}")
            if target.tma_pending[offsets].any():
                raise PtxError(f"shared::cluster access to a partner's bytes that a TMA copy writes, before the "
                               f"partner observed its completion and passed a CTA barrier: {ins.text}")
            touched = target.local_write_phase[offsets] if not write else target.local_phase[offsets]
            if (touched >= self.waited).any():
                raise PtxError(f"{'store into' if write else 'load of'} a partner's shared bytes it "
                               f"{'wrote' if not write else 'touched'} with no cluster barrier between: {ins.text}")
            if target.ended:
                raise PtxError(f"access to the shared memory of a cluster partner that has ended: {ins.text}")
            target.remote_needed = max(target.remote_needed, self.arrived + 1)
            if write:
                target.remote_visible_after[offsets] = self.arrived + 1
        return target.shared, local, on, size, self._vector(registers)

    def _track(self, mem: Memory, addr: np.ndarray, on: np.ndarray, nbytes: int, write: bool, text: str,
               count: bool = True) -> None:
        if mem is self.shared:
            if count and self.traffic is not None:
                self.traffic.add(text, addr[on], np.arange(self.n)[on], nbytes)
            offsets = addr[on, None] - mem.bases[0] + np.arange(nbytes)
            if offsets.min() >= 0 and offsets.max() < mem.buffers[0].size:  # else the access itself fails
                if (self.remote_visible_after[offsets] > self.waited).any():
                    raise PtxError(f"shared bytes a cluster partner stored are touched before a cluster barrier "
                                   f"orders that store first: {text}")
                self.local_phase[offsets] = self.arrived
                if write:
                    self.local_write_phase[offsets] = self.arrived
                if self.pending[offsets].any():
                    raise PtxError(f"shared bytes at {int(offsets[self.pending[offsets] > 0][0])} are the target of a "
                                   f"cp.async not yet waited for: {text}")
                if self.mbarriers and self.barrier_bytes[offsets].any():
                    raise PtxError(f"ordinary access to the bytes of an mbarrier at shared byte "
                                   f"{int(offsets[self.barrier_bytes[offsets]][0])}: {text}")
                if self.tma_copies:
                    self._tma_landed(offsets, (np.arange(self.n)[on] // 32)[:, None], text)
                self.touch_release[offsets] = _NEVER
                if write:
                    self._unread_by_wgmma(offsets, text)
                    self.generic[offsets] = True
                self.races.access(offsets, np.arange(self.n)[on] // 32, write, text)

    def _unread_by_wgmma(self, offsets: np.ndarray, text: str) -> None:
        """A write to shared memory: none of the bytes may be an operand of a wgmma in flight."""
        busy = self.wgmma_reading[offsets] > 0
        if busy.any():
            raise PtxError(f"shared bytes at {int(offsets[busy][0])} are read by a wgmma.mma_async not yet waited for "
                           f"(wgmma.wait_group): {text}")

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
        if op[2] == "bulk":
            self._tma_load(ins, active)
            return
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
                    self.touch_release[offsets] = _NEVER
                    self.shared.buffers[0][offsets] = data
                    self.generic[offsets] = True  # cp.async writes through the generic proxy
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
        self._unread_by_wgmma(offsets, ins.text)
        if self.barrier_bytes[offsets].any() or self.tma_pending[offsets].any():
            raise PtxError(f"cp.async into the bytes of an mbarrier or of a TMA copy not yet observed: {ins.text}")
        self.touch_release[offsets] = _NEVER
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
        there is nothing to order. ``fence.proxy.async`` (all state spaces or ``.shared::cta``)
        makes the shared-memory writes of the generic proxy visible to the async proxy, which
        ``wgmma`` reads through; run by the whole CTA, in lock step after every earlier write."""
        parts = ins.op.split(".")
        if parts[1] == "mbarrier_init":
            self._fence_mbarrier_init(ins, active)
            return
        if parts[1] != "proxy":
            return
        if parts[2:] not in (["async"], ["async", "shared::cta"], ["async", "global"]):
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        if active is not None and not active.all():
            raise NotImplementedError(f"proxy fence of part of the CTA: {ins.text}")
        if parts[2:] != ["async", "global"]:
            self.generic[:] = False

    def _check_cluster_op(self, ins, active) -> None:
        if active is not None and not active.all():
            raise PtxError(f"cluster barrier under a divergent predicate: {ins.text}")
        parts = ins.op.split(".")
        if parts[:2] != ["barrier", "cluster"] or "aligned" not in parts:
            raise NotImplementedError(f"PTX instruction not emulated (only barrier.cluster.*.aligned): {ins.text}")
        if parts[2] == "wait" and self.waited == self.arrived:
            raise PtxError(f"barrier.cluster.wait without an arrival since the last wait: {ins.text}")
        if parts[2] == "arrive" and self.arrived > self.waited:
            raise PtxError(f"barrier.cluster.arrive twice without a wait between: {ins.text}")

    def op_barrier(self, ins, active):
        """``barrier.cluster.arrive`` (``.release`` or ``.relaxed``); the wait is in ``steps``."""
        self._check_cluster_op(ins, active)
        if ins.op.split(".")[2] != "arrive":
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        self.arrived += 1
        if "relaxed" in ins.op.split("."):
            self.arrival_clocks.append(self.clock.copy())
        else:  # every thread arrives (aligned): all the program's accesses so far
            self.arrival_clocks.append(self._release(np.ones(self.nwarps, bool)))

    def op_mapa(self, ins, active):
        """``mapa.shared::cluster.u32 d, a, rank``: the address of this program's shared byte ``a``
        in rank's buffer, in the cluster window."""
        if ins.op not in ("mapa.shared::cluster.u32", "mapa.shared::cluster.u64"):
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        d, a, rank = ins.args
        offset = self.read(a).astype(np.int64) - self.shared.bases[0]
        ranks = self.read(rank).astype(np.int64)
        on = np.ones(self.n, bool) if active is None else active
        if (ranks[on] >= self.cluster.size).any() or (offset[on] < 0).any() or (offset[on] >= _WINDOW).any():
            raise PtxError(f"mapa of a rank outside the cluster of {self.cluster.size}, or not of a shared "
                           f"address: {ins.text}")
        self.write(d, np.where(on, (ranks + 1) * _WINDOW + offset, 0).astype(U64), active, WIDTHS[ins.op[-3:]])

    def op_elect(self, ins, active):
        """``elect.sync d|p, membermask``: in each warp, the lowest active lane of the (uniform)
        mask leads: ``p`` is true for it alone, ``d`` (or the sink ``_``) gets its lane."""
        d, p = (ins.args[0].split("|") + [""])[:2]
        if ins.op != "elect.sync" or not p or len(ins.args) != 2:
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        mask = self.read(ins.args[1]) & U64(MASKS[32])
        if (mask != mask[0]).any():
            raise PtxError(f"elect.sync with a membermask that differs between threads: {ins.text}")
        on = np.ones(self.n, bool) if active is None else active
        lane = np.arange(self.n) % 32
        member = on & ((int(mask[0]) >> lane) & 1).astype(bool)
        leader, lead_lane = np.zeros(self.n, bool), np.zeros(self.n, dtype=U64)
        for w in range(self.nwarps):
            lanes = np.flatnonzero(member[32 * w : 32 * w + 32])
            if len(lanes):
                leader[32 * w + lanes[0]] = True
                lead_lane[32 * w : 32 * w + 32] = lanes[0]
        if d.strip() != "_":
            self.write(d.strip(), lead_lane, active, 32)
        self.write(p.strip(), leader, active, 1)

    def op_cvta(self, ins, active):
        """``cvta.param.u64``: a parameter's address as a generic address (the same fake number)."""
        if ins.op != "cvta.param.u64":
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        d, a = ins.args
        self.write(d, self.read(a), active, 64)

    # releases and acquires between programs (see Cluster and op_mbarrier)
    def _warps(self, on: np.ndarray) -> np.ndarray:
        """Which warps (bool per warp) have an active thread."""
        return np.bincount(np.flatnonzero(on) // 32, minlength=self.nwarps) > 0

    def _release(self, warps: np.ndarray) -> np.ndarray:
        """A release by threads of ``warps`` (an mbarrier arrive, a cluster arrive): it orders before
        whatever acquires it every shared access of this program before its last CTA barrier, and
        those of these warps since (a wgmma's reads, once retired, count as its warpgroup's); the
        clock the arrival carries."""
        self.clock[self.rank] += 1
        open_ = np.flatnonzero(self.touch_release == _NEVER)
        if len(open_):
            arriving = sum(1 << (g // 4) for g in range(0, self.nwarps, 4) if warps[g : g + 4].any())
            writer, reader = self.races.writer[open_], self.races.reader[open_]
            # a byte several warpgroups' wgmmas read is released once each of them has released
            self.wgmma_released[open_] |= arriving
            read_by = wgmma_groups(reader)
            covered = (writer == -1) | ((writer >= 0) & warps[np.maximum(writer, 0)])
            covered &= ((reader == -1) | ((reader >= 0) & warps[np.maximum(reader, 0)]) | ((reader == -2) & warps.all())
                        | ((read_by > 0) & (read_by & ~self.wgmma_released[open_] == 0)))
            self.touch_release[open_[covered]] = self.clock[self.rank]
        return self.clock.copy()

    def _acquire(self, clock: np.ndarray) -> None:
        """An acquire of the releases ``clock`` counts (an mbarrier phase observed, a cluster wait)."""
        self.acquired_own = max(self.acquired_own, int(clock[self.rank]))
        np.maximum(self.clock, clock, out=self.clock)

    def _synced(self) -> None:
        """A CTA barrier: the TMA bytes that any warp had observed are now visible to every warp."""
        self.syncs += 1
        for copy in [c for c in self.tma_copies.values() if c.observers]:
            self._retire(copy)

    def _retire(self, copy: TmaCopy) -> None:
        mine = copy.offsets[self.tma_pending[copy.offsets] == copy.ident]
        self.tma_pending[mine] = 0
        del self.tma_copies[copy.ident]

    def _tma_landed(self, offsets: np.ndarray, warps: np.ndarray, text: str) -> None:
        """Shared bytes a TMA copy wrote may be touched by a warp only once it observed the mbarrier
        phase the copy completed into, or another warp did before a CTA barrier since. ``offsets``
        and ``warps`` (the warp touching each) broadcast together."""
        marks = self.tma_pending[offsets]
        if not marks.any():
            return
        idents, inverse = np.unique(marks, return_inverse=True)
        seen = np.array([-1 if i == 0 else self.tma_copies[i].observers for i in idents], dtype=np.int64)
        visible = (seen[inverse].reshape(marks.shape) >> warps) & 1
        if not visible.all():
            at = np.broadcast_to(offsets, visible.shape)[visible == 0][0]
            copy = self.tma_copies[int(self.tma_pending[at])]
            raise PtxError(f"shared byte {int(at)} is written by a TMA copy (issued by rank {copy.issuer}) whose "
                           f"mbarrier phase this warp has not observed (mbarrier.try_wait): {text}")

    def _may_end(self, ins: Instr) -> None:
        """What must hold when a program ends (``ret``/``exit``, see :class:`Cluster`)."""
        if self.wgmma_open or self.wgmma_groups:
            raise PtxError(f"the program ends with a wgmma.mma_async not yet waited for: {ins.text}")
        if self.waited < self.remote_needed:
            raise PtxError("the program ends while a cluster partner may still access its shared "
                           f"memory (no cluster barrier after that access): {ins.text}")
        for copy in self.tma_copies.values():
            if not copy.observers:
                raise PtxError(f"the program ends while a TMA copy (issued by rank {copy.issuer}) into its shared "
                               f"memory is in flight: it never observed the mbarrier phase the copy completes into "
                               f"(mbarrier.try_wait): {ins.text}")
        for copy in self.tma_issued:
            if copy.observed_release is None:
                raise PtxError(f"the program ends while its TMA multicast into rank {copy.dest} may still be in "
                               f"flight: rank {copy.dest} has not observed its mbarrier phase complete: {ins.text}")
            if self.clock[copy.dest] < copy.observed_release:
                raise PtxError(f"the program ends while its TMA multicast into rank {copy.dest} may still be in "
                               f"flight: nothing rank {copy.dest} released after it observed the copy's mbarrier "
                               f"phase was acquired here (no cluster barrier after it): {ins.text}")
        late = np.flatnonzero(self.clock < self.remote_arrivals)
        if len(late):
            raise PtxError(f"the program ends while a remote mbarrier arrival of rank {late[0]} on its shared memory "
                           f"is not ordered before its end (no cluster barrier, or wait, after it): {ins.text}")

    # mbarriers
    def _barrier_target(self, addr: int, window: bool, ins: Instr) -> tuple["Cta", int]:
        """(program, shared offset) of an mbarrier address: a shared::cta address of this program,
        or, for ``window``, also a shared::cluster address from ``mapa`` (any rank, this one too)."""
        target, offset = self, addr - self.shared.bases[0]
        if window and addr >= _WINDOW:
            target, offset = self.cluster.member(addr // _WINDOW - 1, ins.text), addr % _WINDOW
        if offset % 8 or not 0 <= offset <= target.shared.buffers[0].size - 8:
            raise PtxError(f"mbarrier address {addr:#x} is not an 8-byte aligned shared address inside the "
                           f"{target.shared.buffers[0].size} bytes of shared memory: {ins.text}")
        return target, offset

    def _barrier(self, target: "Cta", offset: int, warps: int, ins: Instr) -> MBarrier:
        """The mbarrier at ``offset`` of ``target``, for threads of ``warps`` (bit mask) of this
        program: initialized, its init ordered before this use (by a CTA barrier, here; by
        fence.mbarrier_init and a cluster barrier, from a partner), the program not ended."""
        if target.ended:
            raise PtxError(f"use of an mbarrier of rank {target.rank}, a cluster partner that has ended: {ins.text}")
        bar = target.mbarriers.get(offset)
        if bar is None:
            raise PtxError(f"no mbarrier initialized at shared offset {offset} of rank {target.rank}: {ins.text}")
        if target is self and warps & ~bar.init_warps and self.syncs == bar.init_syncs:
            raise PtxError(f"mbarrier at shared offset {offset} used by a warp that did not initialize it, with no "
                           f"CTA barrier (bar.sync) since its init: {ins.text}")
        if target is not self:
            if bar.fenced is None:
                raise PtxError(f"remote use of rank {target.rank}'s mbarrier at shared offset {offset}, whose init no "
                               f"fence.mbarrier_init.release.cluster of the initializing thread follows: {ins.text}")
            # the fence releases the init; any cluster arrive after it (.relaxed too: Gluon's
            # sync_cluster_init and CUTLASS arrive relaxed) carries it to a wait here
            if self.waited <= bar.fenced:
                raise PtxError(f"remote use of rank {target.rank}'s mbarrier at shared offset {offset} with no cluster "
                               f"barrier (an arrive there after its fence.mbarrier_init, a wait here) ordering its "
                               f"init before: {ins.text}")
        return bar

    @staticmethod
    def _complete(bar: MBarrier) -> None:
        """Complete the current phase if every arrival is in and every expected byte has come."""
        if bar.pending == 0 and bar.tx == 0:
            bar.done_clock = bar.clock if bar.done_clock is None else np.maximum(bar.done_clock, bar.clock)
            bar.clock = np.zeros_like(bar.clock)
            bar.phase += 1
            bar.pending = bar.count

    def op_mbarrier(self, ins, active):
        """``mbarrier.init.shared::cta.b64 [a], count``; ``mbarrier.arrive[.expect_tx].shared::cta.b64 _,
        [a][, tx]`` (each active thread arrives once, after adding ``tx`` to the tx-count) and
        ``mbarrier.arrive.shared::cta.b64 _, [a], n`` (``n`` arrivals at once, as Gluon's ``arrive``
        with a count writes it); the remote
        ``mbarrier.arrive[.expect_tx].release.cluster.shared::cluster.b64 _, [a][, tx]`` on the
        barrier of the rank ``a`` (from ``mapa``) names. ``.shared`` stands for ``.shared::cta``, as
        Triton writes it. ``try_wait`` waits in :meth:`steps` (see :meth:`_mbarrier_try_wait`)."""
        parts = ins.op.split(".")
        on = np.ones(self.n, bool) if active is None else active
        if parts[1] == "init":
            if parts[2:] not in (["shared::cta", "b64"], ["shared", "b64"]) or len(ins.args) != 2:
                raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
            addr, count = self.address(ins.args[0]), self.read(ins.args[1])
            for t in np.flatnonzero(on):
                self._mbarrier_init(int(addr[t]), int(count[t] & U64(MASKS[32])), int(t), ins)
            return
        rest = parts[2:]
        expect = rest[:1] == ["expect_tx"]
        rest = rest[expect:]
        rest = rest[rest[:1] == ["release"]:]
        cluster_scope = rest[:1] == ["cluster"]
        rest = rest[cluster_scope:]
        if parts[1] != "arrive" or rest not in (["shared::cta", "b64"], ["shared", "b64"], ["shared::cluster", "b64"]) \
                or ins.args[:1] != ["_"] or len(ins.args) not in (2, 3):
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        addr = self.address(ins.args[1])
        if expect and len(ins.args) != 3:
            raise PtxError(f"mbarrier.arrive.expect_tx without its transaction count: {ins.text}")
        tx = self.read(ins.args[2]) & U64(MASKS[32]) if expect else None
        counts = self.read(ins.args[2]) & U64(MASKS[32]) if len(ins.args) == 3 and not expect else None
        clock = self._release(self._warps(on))
        for t in np.flatnonzero(on):
            target, offset = self._barrier_target(int(addr[t]), rest[0] == "shared::cluster", ins)
            bar = self._barrier(target, offset, 1 << (t // 32), ins)
            if target is not self:
                if not cluster_scope:
                    raise PtxError(f"remote mbarrier arrive without .release.cluster (a release at CTA scope does "
                                   f"not order anything for a partner): {ins.text}")
                target.remote_arrivals[self.rank] = max(target.remote_arrivals[self.rank], self.clock[self.rank])
            if expect:
                if tx[t] >= 1 << 20:
                    raise PtxError(f"expect_tx of {int(tx[t])} bytes (the tx-count holds up to 2^20 - 1): {ins.text}")
                bar.tx += int(tx[t])
            n = 1 if counts is None else int(counts[t])
            if not 1 <= n < 1 << 20:
                raise PtxError(f"mbarrier.arrive with a count of {n} (1 to 2^20 - 1): {ins.text}")
            if bar.pending < n:
                raise PtxError(f"arrival on the mbarrier at shared offset {offset} of rank {target.rank} beyond the "
                               f"{bar.count} its phase expects ({bar.pending} missing, the phase waits for {bar.tx} "
                               f"bytes): {ins.text}")
            bar.pending -= n
            np.maximum(bar.clock, clock, out=bar.clock)
            self._complete(bar)

    def _mbarrier_init(self, addr: int, count: int, thread: int, ins: Instr) -> None:
        """One thread's ``mbarrier.init``: phase 0, expecting ``count`` arrivals."""
        _, offset = self._barrier_target(addr, False, ins)
        if not 1 <= count < 1 << 20:
            raise PtxError(f"mbarrier.init with a count of {count} (1 to 2^20 - 1): {ins.text}")
        old = self.mbarriers.get(offset)
        if old is None and self.barrier_bytes[offset : offset + 8].any():
            raise PtxError(f"mbarrier.init at shared offset {offset} overlaps another mbarrier: {ins.text}")
        if old is not None and (old.pending != old.count or old.tx or any(
                c.barrier == offset and not c.observers for c in self.tma_copies.values())):
            raise PtxError(f"mbarrier.init at shared offset {offset} while its current phase has arrivals, or TMA "
                           f"bytes, in flight: {ins.text}")
        at = np.arange(offset, offset + 8)
        if self.pending[at].any() or self.tma_pending[at].any() or self.wgmma_reading[at].any():
            raise PtxError(f"mbarrier.init over shared bytes a copy or a wgmma in flight uses: {ins.text}")
        self.mbarriers[offset] = MBarrier(count, count, thread, 1 << (thread // 32), self.syncs,
                                          np.zeros(self.cluster.size, dtype=np.int64))
        self.barrier_bytes[at] = True

    def _fence_mbarrier_init(self, ins: Instr, active) -> None:
        """``fence.mbarrier_init.release.cluster``: the mbarrier inits of the fencing threads before
        it become visible to a partner once it waits for this program's next cluster arrive, even a
        ``.relaxed`` one (the fence is the release; see :meth:`_barrier`)."""
        if ins.op != "fence.mbarrier_init.release.cluster":
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        on = np.ones(self.n, bool) if active is None else active
        for bar in self.mbarriers.values():
            if bar.fenced is None and on[bar.init_thread]:
                bar.fenced = self.arrived

    def _mbarrier_try_wait(self, ins: Instr, active) -> bool:
        """``mbarrier.try_wait.parity[.acquire.cluster].shared::cta.b64 p, [a], parity[, hint]``
        (the emulator's acquire is at cluster scope either way): true once the phase of that
        parity has completed (the barrier's completed phases ``% 2 != parity``); the same barrier
        and parity in every active thread, so the same answer. When false, the program waits here
        (``steps`` yields) until a partner completes the phase, instead of spinning; true makes the
        observed phase's TMA bytes visible to the waiting warps and acquires its arrivals' releases."""
        parts = [p for p in ins.op.split(".") if p not in ("acquire", "cluster")]  # .acquire.cluster: as default
        if parts[2:] not in (["parity", "shared::cta", "b64"], ["parity", "shared", "b64"]) \
                or len(ins.args) not in (3, 4):
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        d, address, parity = ins.args[:3]  # a fourth, the suspend-time hint, changes nothing: it never times out
        on = np.ones(self.n, bool) if active is None else active
        addr, par = self.address(address)[on], self.read(parity)[on] & U64(MASKS[32])
        if (addr != addr[0]).any() or (par != par[0]).any():
            raise PtxError(f"mbarrier.try_wait on different barriers or parities across the threads: {ins.text}")
        if par[0] > 1:
            raise PtxError(f"mbarrier.try_wait.parity with parity {int(par[0])} (0 or 1): {ins.text}")
        _, offset = self._barrier_target(int(addr[0]), False, ins)
        warps = sum(1 << int(w) for w in np.flatnonzero(self._warps(on)))
        bar = self._barrier(self, offset, warps, ins)
        if bar.phase % 2 == par[0]:
            self.waiting_for = (f"rank {self.rank} waits for phase {bar.phase} (parity {int(par[0])}) of the mbarrier "
                                f"at shared offset {offset} to complete ({bar.pending} of {bar.count} arrivals and "
                                f"a tx-count of {bar.tx} bytes missing): {ins.text}")
            return False
        if bar.phase:  # parity 1 before any phase completed: the phase "before" the first, nothing to observe
            self._acquire(bar.done_clock)
            for copy in list(self.tma_copies.values()):
                if copy.barrier == offset and copy.phase < bar.phase:
                    if copy.observed_release is None:
                        copy.observed_release = int(self.clock[self.rank]) + 1  # this program's next release
                    copy.observers |= warps
                    if copy.observers == self.all_warps:
                        self._retire(copy)
        self.write(d, np.ones(self.n, bool), active, 1)
        return True

    # TMA
    def _tma_load(self, ins: Instr, active) -> None:
        """``cp.async.bulk.tensor.Nd.shared::cluster.global.mbarrier::complete_tx::bytes[.multicast::cluster]
        [dst], [map, {c0, ..}], [mbar][, cta-mask]`` (or ``.shared::cta`` without multicast, as Triton
        writes it), each active thread's own: the box of the tensor
        map (a kernel parameter's address) at element coordinates ``c`` (innermost first, signed),
        written at shared offset ``dst`` of this program, or of every rank in ``cta-mask``, then
        complete_tx of the box's bytes on the mbarrier at offset ``mbar`` there.

        Written at issue (one legal schedule), checked first: every destination exists and has not
        ended; its mbarrier is initialized and, in a partner, published (see :meth:`_barrier`); the
        bytes hold no mbarrier, no copy in flight (cp.async, or a TMA copy nobody observed yet), no
        operand of a wgmma not yet waited for, and no warp access that the destination has not
        released to this program (in a partner: an mbarrier arrive or cluster barrier of theirs
        after it that this program acquired; here: one this program acquired back, unless only the
        issuing warp touched them since the last CTA barrier). The bytes then stay pending in each
        destination until it observes the phase (:meth:`_mbarrier_try_wait`)."""
        parts = ins.op.split(".")
        dims = re.fullmatch(r"([1-5])d", parts[4]) if len(parts) > 4 else None
        multicast = parts[8:] == ["multicast::cluster"]
        space = parts[5] if len(parts) > 5 else ""  # .shared::cta (what Triton writes) only for its own
        if parts[2:4] != ["bulk", "tensor"] or not dims or parts[6:8] != ["global", "mbarrier::complete_tx::bytes"] \
                or space not in ("shared::cluster", "shared::cta") or (multicast and space == "shared::cta") \
                or parts[8:] not in ([], ["multicast::cluster"]) or len(ins.args) != 3 + multicast:
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")
        source = re.fullmatch(r"\[\s*([%\w]+)\s*,\s*\{(.*)\}\s*\]", ins.args[1])
        rank = int(dims.group(1))
        if not source or len(_split_args(source.group(2))) != rank:
            raise PtxError(f"a {rank}d tensor copy takes [map, {{{rank} coordinates}}]: {ins.text}")
        coords = [self._int(c, "s32") for c in _split_args(source.group(2))]
        maps, dst, bars = self.read(source.group(1)), self.address(ins.args[0]), self.address(ins.args[2])
        masks = self.read(ins.args[3]) & U64(0xFFFF) if multicast else None
        base, size = self.shared.bases[0], self.shared.buffers[0].size
        for t in np.flatnonzero(np.ones(self.n, bool) if active is None else active):
            name = self.p.param_at(int(maps[t]))
            tmap = self.params.get(name) if name else None
            if not isinstance(tmap, TensorMap):
                raise PtxError(f"the tensor map operand {int(maps[t]):#x} is not the address of a tensor-map "
                               f"parameter: {ins.text}")
            if len(tmap.dims) != rank:
                raise PtxError(f"a {rank}d copy of a {len(tmap.dims)}-dimensional tensor map: {ins.text}")
            offset = [self._own_shared(int(a[t]), ins) for a in (dst, bars)]
            align = 1024 if tmap.swizzle == 128 else 128
            if (base + offset[0]) % align:
                raise PtxError(f"TMA destination {base + offset[0]:#x} is not {align}-byte aligned: {ins.text}")
            targets = [self]
            if multicast:
                mask = int(masks[t])
                if not mask or mask >> self.cluster.size:
                    raise PtxError(f"multicast cta-mask {mask:#x} is empty or names a rank outside the cluster of "
                                   f"{self.cluster.size}: {ins.text}")
                targets = [self.cluster.ctas[r] for r in range(self.cluster.size) if mask >> r & 1]
            offsets = tmap.shared_addresses(base + offset[0]) - base
            if offsets.min() < 0 or offsets.max() >= size:
                raise PtxError(f"a TMA box of {tmap.box_bytes} bytes at shared offset {offset[0]} reaches outside the "
                               f"{size} bytes of shared memory: {ins.text}")
            data = tmap.read_box(self.glob, [int(c[t]) for c in coords])
            for target in targets:  # every destination checked before any is written
                self._tma_may_write(target, offsets, offset[1], int(t) // 32, ins)
            for target in targets:
                self._tma_write(target, offsets, data, offset[1], tmap.box_bytes)

    def _own_shared(self, addr: int, ins: Instr) -> int:
        """The offset of a shared::cluster address that must be this program's own (shared::cta)."""
        if addr >= _WINDOW:
            if addr // _WINDOW - 1 != self.rank:
                raise NotImplementedError(f"TMA copy into another program's shared memory other than by multicast: "
                                          f"{ins.text}")
            return addr % _WINDOW
        return addr - self.shared.bases[0]

    def _tma_may_write(self, target: "Cta", offsets: np.ndarray, barrier: int, warp: int, ins: Instr) -> None:
        """Refuse a TMA copy into ``target`` that could race with what it holds (see :meth:`_tma_load`)."""
        where = "" if target is self else f" of rank {target.rank}"
        self._barrier(target, barrier, 1 << warp, ins)
        for busy, what in ((target.barrier_bytes[offsets], "hold an mbarrier"),
                           (target.pending[offsets] > 0, "are the target of a cp.async not yet waited for"),
                           (target.wgmma_reading[offsets] > 0, "are read by a wgmma.mma_async not yet waited for")):
            if busy.any():
                raise PtxError(f"TMA copy into shared bytes{where} that {what} (byte {int(offsets[busy][0])}): "
                               f"{ins.text}")
        marks = target.tma_pending[offsets]
        for ident in np.unique(marks[marks > 0]):
            copy = target.tma_copies[int(ident)]
            if not copy.observers:
                raise PtxError(f"TMA copy into shared bytes{where} that an earlier TMA copy (issued by rank "
                               f"{copy.issuer}) writes, whose mbarrier phase nobody has waited for: {ins.text}")
        if target is self:  # another warp's accesses since the last CTA barrier need a release acquired back
            writer, reader = self.races.writer[offsets], self.races.reader[offsets]
            other = ((writer >= 0) & (writer != warp)) | ((reader >= 0) & (reader != warp)) | (reader == -2)
            other |= (wgmma_groups(reader) & ~(1 << (warp // 4))) != 0
            unordered = other & (self.touch_release[offsets] > self.acquired_own)
        else:
            unordered = target.touch_release[offsets] > self.clock[target.rank]
        if unordered.any():
            raise PtxError(f"TMA copy into shared bytes{where} (byte {int(offsets[unordered][0])}) that rank "
                           f"{target.rank}'s warps touched with no release of theirs acquired here since (no "
                           f"mbarrier wait for the slot to be consumed?): {ins.text}")

    def _tma_write(self, target: "Cta", offsets: np.ndarray, data: np.ndarray, barrier: int, nbytes: int) -> None:
        """Write a TMA copy's bytes into ``target`` and signal complete_tx on its mbarrier."""
        target.shared.buffers[0][offsets] = data
        target.generic[offsets] = False  # written through the async proxy: a wgmma reads them with no proxy fence
        bar = target.mbarriers[barrier]
        copy = TmaCopy(next(_TMA_COPIES), self.rank, target.rank, barrier, bar.phase, offsets)
        target.tma_copies[copy.ident] = copy
        target.tma_pending[offsets] = copy.ident
        if target is not self:
            self.tma_issued.append(copy)
        bar.tx -= nbytes
        self._complete(bar)

    def op_bar(self, ins, active):  # lock step: every earlier instruction has finished in every thread
        if active is not None and not active.all():
            raise PtxError(f"barrier under a divergent predicate: {ins.text}")
        self.races.barrier()
        self._synced()

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

    def op_wgmma(self, ins, active):
        """Hopper's warpgroup MMA, by every warpgroup (128 consecutive threads) of the CTA at once.

        ``wgmma.fence`` orders earlier register accesses before the wgmmas that follow; an A,
        metadata or accumulator register accessed since the last one is refused at the wgmma (its
        chained accumulator, by the wgmmas before it, excepted). ``wgmma.mma_async`` (see
        :meth:`_wgmma_mma_async`) joins the open group, ``wgmma.commit_group`` closes it, and
        ``wgmma.wait_group N`` retires all but the newest ``N`` committed groups: until then their
        registers and shared bytes may not be touched.

        The dense form (m64nNk16) is computed here; the sparse ``wgmma.mma_async.sp`` (m64nNk32,
        A 2:4-sparse in four registers plus a metadata register) through the caller's ``mma.sp``
        model, one ``mma.sp.m16n8k32`` per warp and 8-column block of B (see
        :meth:`_wgmma_sparse`), under the same rules for its A and metadata registers, its
        accumulator and the shared bytes of B. Not emulated (``NotImplementedError``): the sparse
        form with A from a descriptor, sparsity selector other than 0, imm-scale other than 1,
        an MN-major B, or no model."""
        if active is not None and not active.all():
            raise PtxError(f"predicated wgmma (every thread of a warpgroup must run it): {ins.text}")
        if self.n % 128:
            raise PtxError(f"wgmma in a CTA of {self.n} threads (not whole warpgroups): {ins.text}")
        kind = ins.op.split(".")[1]
        if kind == "fence":
            self.touched = set()
        elif kind == "commit_group":
            self.wgmma_groups.append(self.wgmma_open)
            self.wgmma_open = []
        elif kind == "wait_group":
            keep = int(self.read(ins.args[0])[0])
            while len(self.wgmma_groups) > keep:
                for op in self.wgmma_groups.pop(0):
                    for group, offsets in enumerate(op.reads):
                        np.subtract.at(self.wgmma_reading, offsets, 1)
                        self.races.async_read_done(offsets, group)
                        self.touch_release[offsets] = _NEVER
                        self.wgmma_released[offsets] = 0
            self.wgmma_owned = {}
            for op in self.wgmma_open + [op for group in self.wgmma_groups for op in group]:
                self.wgmma_owned |= op.roles()
        elif kind == "mma_async":
            self._wgmma_mma_async(ins)
        else:
            raise NotImplementedError(f"PTX instruction not emulated: {ins.text}")

    def _wgmma_mma_async(self, ins: Instr) -> None:
        """``wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16}.{f16,bf16} d, a, b-desc,
        scale-d, imm-scale-a, imm-scale-b, [imm-trans-a,] imm-trans-b``: D = A B + (D if scale-d),
        A [64, 16] from four registers per thread or a descriptor, B [16, N] from a descriptor,
        imm-scale ±1 negating A or B, imm-trans 1 for an MN-major operand in shared memory.
        Computed now: products exact in fp64, summed with the old D in fp64, rounded to fp32 once
        (as the ``mma.sp`` model does); the hardware's order of fp32 additions is not modelled.

        The sparse form ``wgmma.mma_async.sp.sync.aligned.m64nNk32.f32.{f16,bf16}.{f16,bf16} d,
        {a0, a1, a2, a3}, b-desc, e, sp-sel, scale-d, imm-scale-a, imm-scale-b, imm-trans-b``
        (A 2:4-sparse [64, 32] in registers, B [32, N] K-major) is computed by the caller's
        ``mma.sp`` model, see :meth:`_wgmma_sparse`; only sp-sel 0, imm-scale 1 and imm-trans-b 0
        are emulated, not A from a descriptor. Both forms share the descriptors, the shared-memory
        reads and their checks, the register rules and the bookkeeping until the wait; the
        sparse form's metadata register ``e`` is held like its A registers."""
        parts = ins.op.split(".")
        sparse = parts[2:3] == ["sp"]
        if sparse:
            del parts[2]
        if len(parts) != 8 or parts[4] not in (WGMMA_SP_SHAPES if sparse else WGMMA_SHAPES) or parts[5] != "f32" \
                or parts[6] != parts[7] or parts[6] not in ("f16", "bf16"):
            raise NotImplementedError(f"PTX instruction not emulated (fp16/bf16 wgmma into fp32 only): {ins.text}")
        n, ty, depth = int(parts[4][4:-3]), parts[6], 32 if sparse else 16
        if len(ins.args) < (6 if sparse else 4):
            raise PtxError(f"wgmma with {len(ins.args)} operands: {ins.text}")
        if sparse:
            d, a, b, e, selector, scale_d, *flags = ins.args
        else:
            d, a, b, scale_d, *flags = ins.args
        register_a = a.startswith("{")
        if sparse and not register_a:
            raise NotImplementedError(f"sparse wgmma with A from a shared-memory descriptor (the SS form) is not "
                                      f"emulated, only A in registers: {ins.text}")
        if len(flags) != (3 if register_a else 4) or any(f not in ("0", "1", "-1") for f in flags):
            raise PtxError(f"wgmma immediates must be imm-scale-a, imm-scale-b (1 or -1) and the transpose flags "
                           f"(0 or 1): {ins.text}")
        scale_a, scale_b, trans = int(flags[0]), int(flags[1]), [int(f) for f in flags[2:]]
        accumulator, a_registers = tuple(self._vector(d)), tuple(self._vector(a)) if register_a else ()
        if len(accumulator) != n // 2 or len(a_registers) not in (0, 4) or {scale_a, scale_b} - {1, -1} \
                or set(trans) - {0, 1}:
            raise PtxError(f"wgmma with {len(accumulator)} accumulator registers (m64n{n} takes {n // 2}), "
                           f"{len(a_registers)} A registers (4) or invalid immediates: {ins.text}")
        metadata = ()
        if sparse:
            metadata = self._wgmma_sparse_operands(ins, e, selector, scale_a, scale_b, trans[-1])
        self._wgmma_registers_free(ins, accumulator, a_registers + metadata)
        use_d, b_desc = self.read(scale_d).astype(bool), self.read(b)
        a_desc = None if register_a else self.read(a)
        out = np.zeros((self.n, n // 2), dtype=U64)
        d_row, d_col = _wgmma_d_fragment(n)
        reads = []
        for group in range(self.n // 128):
            threads = slice(128 * group, 128 * group + 128)
            b_offsets = self._wgmma_operand(ins, b_desc[threads], n, bool(trans[-1]), depth)
            b_halves = self._shared_halves(b_offsets)  # [n, depth]
            if register_a:
                words = np.stack([self._register(r, ins)[threads] for r in a_registers], 1)  # [128, 4]
                offsets = b_offsets.ravel()
            else:
                a_offsets = self._wgmma_operand(ins, a_desc[threads], 64, bool(trans[0]), depth)
                a_values = _halves_to_f64(self._shared_halves(a_offsets), ty)  # [64, 16]
                offsets = np.concatenate([a_offsets.ravel(), b_offsets.ravel()])
            offsets = np.unique(offsets[:, None] + np.arange(2))
            self._wgmma_reads_settled(ins, offsets, group)
            reads.append(offsets)
            old = None
            if self._uniform(use_d[threads], ins, "scale-d"):
                old = np.stack([self._register(r, ins)[threads] for r in accumulator], 1)  # [128, n / 2]
            if sparse:
                e_word = self._register(metadata[0], ins)[threads]
                out[threads] = self._wgmma_sparse(ty, words, e_word, b_halves, old)
                continue
            if register_a:
                a_values = np.zeros((64, 16))
                row, k = _wgmma_a_fragment()
                a_values[row, k] = _pairs(words, ty)
            b_values = _halves_to_f64(b_halves, ty).T  # [16, n]
            product = (scale_a * a_values) @ (scale_b * b_values)  # [64, n], exact products in fp64
            acc = product[d_row, d_col]
            if old is not None:
                acc += _f32(old).astype(np.float64)
            out[threads] = _from_f32(acc.astype(np.float32))
        for offsets in reads:
            np.add.at(self.wgmma_reading, offsets, 1)
            self.touch_release[offsets] = _NEVER
        for i, reg in enumerate(accumulator):
            self.regs[reg] = out[:, i].copy()
        op = WgmmaOp(accumulator, a_registers, reads, metadata)
        self.wgmma_open.append(op)
        self.wgmma_owned |= op.roles()

    def _wgmma_sparse_operands(self, ins: Instr, e: str, selector: str, scale_a: int, scale_b: int,
                               trans_b: int) -> tuple[str]:
        """The sparse form's metadata register, after refusing what is not emulated."""
        if self.mma is None:
            raise NotImplementedError(f"no model for {ins.op} (computed through the mma.sp model)")
        if not re.fullmatch(r"0[xX][0-9a-fA-F]+|\d+", selector):
            raise PtxError(f"wgmma sparsity selector (sp-sel) must be an immediate: {ins.text}")
        if int(selector, 0) != 0:
            raise NotImplementedError(f"sparse wgmma with sparsity selector (sp-sel) {selector}: only 0 is emulated: "
                                      f"{ins.text}")
        if (scale_a, scale_b) != (1, 1):
            raise NotImplementedError(f"sparse wgmma with imm-scale-a {scale_a}, imm-scale-b {scale_b}: only 1 is "
                                      f"emulated: {ins.text}")
        if trans_b:
            raise NotImplementedError(f"sparse wgmma with an MN-major B (imm-trans-b 1): only K-major is emulated: "
                                      f"{ins.text}")
        if not re.fullmatch(r"%[\w$]+", e):
            raise PtxError(f"wgmma sparsity metadata must be a register, got {e!r}: {ins.text}")
        return (e,)

    def _wgmma_sparse(self, ty: str, a_words: np.ndarray, e_word: np.ndarray, b_halves: np.ndarray,
                      old: np.ndarray | None) -> np.ndarray:
        """One warpgroup's sparse wgmma through the ``mma.sp`` model: D [128 threads, N / 2] bits.

        Warp w's A registers and metadata word are those of one m16n8k32 ``mma.sp`` (opcode
        ``mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.T.T.f32``, sparsity selector
        0) for rows 16w..16w+15: what they mean is the model's reading, not re-derived here. For
        each 8-column block j, the warp's B registers are B[0:32, 8j:8j+8] in that instruction's
        fragment (:func:`_mma_sp_b_fragment`) and its C registers are the accumulator registers
        4j..4j+3 (zero without scale-d): wgmma's D registers 4j..4j+3 of lane 4g+q are rows g, g,
        g+8, g+8 and columns 8j+2q, 8j+2q+1, 8j+2q, 8j+2q+1, which is the m16n8 C/D fragment. The
        model's four D registers become D registers 4j..4j+3. The model is called once: the
        (block, warp) pairs go to it as that many warps, block-major."""
        blocks = b_halves.shape[0] // 8
        k, col = _mma_sp_b_fragment()
        frag = b_halves[8 * np.arange(blocks)[:, None, None, None] + col, k].astype(U64)  # [blocks, 32, 4, 2]
        b_words = np.tile(frag[..., 0] | frag[..., 1] << U64(16), (1, 4, 1)).reshape(-1, 4)  # 4 warps alike
        a = np.broadcast_to(a_words, (blocks, 128, 4)).reshape(-1, 4)
        e = np.broadcast_to(e_word, (blocks, 128)).reshape(-1)
        if old is None:
            c = np.zeros((blocks * 128, 4), dtype=U64)
        else:
            c = old.reshape(128, blocks, 4).transpose(1, 0, 2).reshape(-1, 4)
        op = f"mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.{ty}.{ty}.f32"
        d = self.mma(op, [a[:, i] for i in range(4)], [b_words[:, i] for i in range(4)], [c[:, i] for i in range(4)],
                     e)
        d = np.stack([np.asarray(x, dtype=U64) for x in d], -1).reshape(blocks, 128, 4)
        return d.transpose(1, 0, 2).reshape(128, 4 * blocks)

    def _wgmma_registers_free(self, ins: Instr, accumulator: tuple, inputs: tuple) -> None:
        """A wgmma's registers (accumulator; A and metadata ``inputs``): fenced since their last
        access, and not those of a wgmma in flight, except the same accumulator again (wgmmas
        chained on one accumulator run in order) and inputs shared with another (both only read)."""
        if self.touched is None:
            raise PtxError(f"wgmma.mma_async with no wgmma.fence before it: {ins.text}")
        for reg in accumulator + inputs:
            if reg in self.touched:
                raise PtxError(f"{reg} was accessed since the last wgmma.fence (the wgmma may not see that "
                               f"access in order): {ins.text}")
        for op in self.wgmma_open + [op for group in self.wgmma_groups for op in group]:
            clash = set(op.inputs) & set(accumulator) | set(op.accumulator) & set(inputs)
            if op.accumulator != accumulator:
                clash |= set(op.accumulator) & set(accumulator)
            if clash:
                reg = sorted(clash)[0]
                raise PtxError(f"{reg} is the {self.wgmma_owned[reg]} of a wgmma.mma_async not yet waited for: "
                               f"{ins.text}")

    def _register(self, reg: str, ins: Instr) -> np.ndarray:
        """A register a wgmma reads (not an ordinary access: the fence rules apply instead)."""
        if reg not in self.regs:
            raise PtxError(f"read of register {reg} before any write: {ins.text}")
        return self.regs[reg]

    @staticmethod
    def _uniform(values: np.ndarray, ins: Instr, what: str):
        if (values != values[0]).any():
            raise PtxError(f"wgmma {what} differs between the threads of a warpgroup: {ins.text}")
        return values[0]

    def _wgmma_operand(self, ins: Instr, desc: np.ndarray, rows: int, mn_major: bool, depth: int) -> np.ndarray:
        """Shared offsets [rows, depth] of an operand's elements, after the bounds check. A K-major
        operand's K must lie in one row of its swizzle atom (the sparse form's 64 bytes of B do
        not fit a 32-byte swizzle; where the hardware would read the rest is not emulated), and
        only the dense depth is emulated for an MN-major one."""
        desc = int(self._uniform(desc, ins, "matrix descriptor"))
        width = SWIZZLE_BYTES[desc >> 62]
        if mn_major and depth != 16:
            raise NotImplementedError(f"MN-major wgmma operand {depth} values deep: {ins.text}")
        if not mn_major and width and 2 * depth > width:
            raise NotImplementedError(f"K-major wgmma operand {2 * depth} bytes deep in a {width}-byte swizzle (one "
                                      f"instruction's K must lie in one row of the swizzle atom): {ins.text}")
        offsets = wgmma_addresses(desc, rows, mn_major, depth=depth) - self.shared.bases[0]
        size = self.shared.buffers[0].size
        if offsets.min() < 0 or offsets.max() + 2 > size:
            raise PtxError(f"wgmma operand (descriptor {desc:#x}) reaches outside the {size} bytes of shared memory "
                           f"(offsets {offsets.min()} to {offsets.max() + 1}): {ins.text}")
        return offsets

    def _shared_halves(self, offsets: np.ndarray) -> np.ndarray:
        buf = self.shared.buffers[0]
        return buf[offsets].astype(np.uint16) | (buf[offsets + 1].astype(np.uint16) << 8)

    def _wgmma_reads_settled(self, ins: Instr, offsets: np.ndarray, group: int) -> None:
        """The shared bytes a wgmma of warpgroup ``group`` reads: landed (no cp.async pending, no
        TMA copy that one of its warps has not observed), fenced for the async proxy since the last
        generic write (TMA copies write through the async proxy), and not written by a warp since
        the last barrier."""
        if self.pending[offsets].any():
            raise PtxError(f"shared bytes at {int(offsets[self.pending[offsets] > 0][0])} are the target of a "
                           f"cp.async not yet waited for: {ins.text}")
        if self.barrier_bytes[offsets].any():
            raise PtxError(f"wgmma operand over the bytes of an mbarrier: {ins.text}")
        self._tma_landed(offsets[:, None], np.arange(4 * group, min(4 * group + 4, self.nwarps))[None, :], ins.text)
        if self.generic[offsets].any():
            raise PtxError(f"shared bytes at {int(offsets[self.generic[offsets]][0])} were written (st.shared, "
                           f"stmatrix or cp.async) with no fence.proxy.async before the wgmma that reads them: "
                           f"{ins.text}")
        self.races.async_read(offsets, ins.text)


def run_grid(ptx: str, grid: tuple[int, ...], nthreads: int, args: list, glob: Memory, shared_bytes: int,
             mma: MmaModel | None = None, reverse: bool = False, traffic: SharedTraffic | None = None,
             cluster: int = 1) -> None:
    """Run every program of ``grid`` on the given memory, in launch order or ``reverse``d.
    ``args`` are the kernel's runtime arguments in parameter order (addresses from ``glob.add``
    for pointers, a :class:`TensorMap` for a 128-byte ``.b8`` parameter); parameters beyond them
    (Triton's scratch pointers) are null. ``traffic``, if
    given, counts the shared-memory wavefronts of every access. ``cluster`` > 1: the programs of
    each run of ``cluster`` along x run together (``Cluster``), as a launch in clusters would."""
    if cluster < 1 or grid[0] % cluster:
        raise ValueError(f"clusters of {cluster} programs along x need a grid whose x is a multiple of it, got {grid}")
    program = parse(ptx)
    if len(args) > len(program.params):
        raise PtxError(f"{len(args)} arguments for {len(program.params)} parameters")
    params = {}
    for name, value in zip(program.params, list(args) + [0] * (len(program.params) - len(args))):
        if (program.param_bytes.get(name) == 128) != isinstance(value, TensorMap):
            size = program.param_bytes.get(name)
            raise PtxError(f"parameter {name} ({f'.b8 [{size}]' if size else 'a scalar'}) given {value!r}: a "
                           f"TensorMap goes with a 128-byte parameter, and only there")
        params[name] = value
    grid3 = tuple(grid) + (1,) * (3 - len(grid))
    ctas = [(x, y, z) for z in range(grid3[2]) for y in range(grid3[1]) for x in range(grid3[0])]
    groups = [ctas[i : i + cluster] for i in range(0, len(ctas), cluster)]
    for group in reversed(groups) if reverse else groups:
        together = Cluster(cluster)
        for ctaid in group:
            # 1024-byte aligned, as a GPU places it: wgmma's 128-byte swizzle is a function of address bits 4-9
            shared = Memory("shared", first=0x400)
            # poisoned with 0xFF bytes: a read of a never-written byte shows up as NaN or garbage
            shared.add(np.full(max(shared_bytes, 1), 0xFF, dtype=np.uint8), "shared")
            Cta(program, nthreads, ctaid, grid3, params, glob, shared, mma, traffic, together)
        together.run()
