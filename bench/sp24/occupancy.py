"""How many programs of a kernel an SM holds at once, and how many waves a grid takes.

A decode-size ``spmma`` call is a few microseconds of streaming, so whether all of its programs
run at once or the last of them wait for a second wave matters as much as the bytes each keeps in
flight (``bench/NOTES-sparse24.md``, v12). The limits are the SM's (Hopper, sm_90): 64 K 32-bit
registers, allocated per warp in units of 256 (a thread's count rounded up to a multiple of 8);
64 warps; 32 programs; 227 KiB of shared memory per program and 228 KiB per SM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

REGISTERS_PER_SM = 65536
WARPS_PER_SM = 64
PROGRAMS_PER_SM = 32
SHARED_PER_SM = 228 * 1024
REGISTER_UNIT = 8  # per thread: a warp's registers come in blocks of 256


@dataclass(frozen=True)
class Occupancy:
    per_sm: int  # programs one SM holds at once
    programs: int  # in the grid
    sms: int

    @property
    def waves(self) -> float:
        """Programs over the programs all SMs hold at once (1.3: a second, partial wave)."""
        return self.programs / (self.per_sm * self.sms)

    @property
    def full_waves(self) -> int:
        return math.ceil(self.waves)


def programs_per_sm(registers: int, warps: int, shared_bytes: int = 0) -> int:
    """Programs of ``warps`` warps, ``registers`` per thread and ``shared_bytes`` each that fit an SM."""
    if registers < 1 or warps < 1 or shared_bytes < 0:
        raise ValueError(f"need registers >= 1, warps >= 1, shared >= 0; got {registers}, {warps}, {shared_bytes}")
    per_warp = math.ceil(registers / REGISTER_UNIT) * REGISTER_UNIT * 32
    fits = [REGISTERS_PER_SM // (per_warp * warps), WARPS_PER_SM // warps, PROGRAMS_PER_SM]
    if shared_bytes:
        fits.append(SHARED_PER_SM // shared_bytes)
    return min(fits)


def occupancy(registers: int, warps: int, shared_bytes: int, programs: int, sms: int) -> Occupancy:
    return Occupancy(programs_per_sm(registers, warps, shared_bytes), programs, sms)
