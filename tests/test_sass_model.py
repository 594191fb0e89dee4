"""``bench/sp24/sass.py``: reading SASS lines and counting the memory round trips of a loop.

The loops below are written by hand in ``nvdisasm``'s format, each a schedule whose round trips
per iteration are known: a load consumed in its own iteration (1), a load issued only after
another one was waited for (2), a prefetch whose registers are copied at the end of the loop (the
copy waits: still 1), and two register sets used in turn (1 per two MMAs).
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from sp24.sass import main_loop, parse_instruction, round_trips  # noqa: E402


def _listing(*body: str) -> str:
    """A kernel listing with ``body`` as its loop, set-up before it and the end-of-kernel trap."""
    lines = ["        /*0000*/                   MOV R1, c[0x0][0x28] ;", ".L_x_1:"]
    lines += [f"        /*{16 * (i + 1):04x}*/                   {ins} ;" for i, ins in enumerate(body)]
    lines += ["        /*0f70*/              @!P0 BRA `(.L_x_1) ;", "        /*0f80*/                   EXIT ;"]
    lines += [".L_x_2:", "        /*0f90*/                   BRA `(.L_x_2);"]
    return "\n".join(lines)


HMMA = "HMMA.SP.16832.F32 R40, {a}, R20, R40, R50, 0x0"


def _trips(*body: str) -> float:
    return round_trips(main_loop(_listing(*body)))


def test_parse_reads_register_widths_of_loads_mma_and_pairs():
    ins = parse_instruction("        /*0950*/               @P4 LDG.E.128 R20, desc[UR10][R30.64] ;")
    assert (ins.op, ins.writes, ins.reads, ins.is_global_load) == ("LDG.E.128", (20, 21, 22, 23), (30, 31), True)
    ins = parse_instruction("        /*0960*/               @P4 LDG.E R96, desc[UR10][R36.64+0x20] ;")
    assert ins.writes == (96,) and ins.reads == (36, 37)
    ins = parse_instruction("  /*0f00*/   HMMA.SP.16832.F32 R4, R20, R28, R4, R96, 0x0 ;")
    assert ins.writes == (4, 5, 6, 7)
    assert ins.reads == (20, 21, 22, 23, 28, 29, 30, 31, 4, 5, 6, 7, 96)
    assert parse_instruction("  /*08c0*/   IMAD.WIDE R32, R95, 0x4, R60 ;").writes == (32, 33)
    assert parse_instruction("  /*08c0*/   IMAD.WIDE R32, R95, 0x4, R60 ;").reads == (95, 60, 61)
    assert parse_instruction("  /*0870*/   CS2R R22, SRZ ;").writes == (22, 23)
    assert parse_instruction("  /*0880*/   ISETP.GE.U32.AND P0, PT, R21, R94, PT ;").writes == ()
    assert parse_instruction("  /*15e0*/   IMAD.MOV.U32 R97, RZ, RZ, R108 ;").reads == (108,)
    shuffle = parse_instruction("  /*1500*/   SHFL.BFLY PT, R76, R74, 0x1, 0x1f ;")  # result second
    assert (shuffle.writes, shuffle.reads) == ((76,), (74,))
    store = parse_instruction("  /*1c00*/   @!P1 STG.E.U16 desc[UR4][R2.64], R5 ;")
    assert (store.writes, store.reads, store.is_global_load) == ((), (2, 3, 5), False)


def test_a_load_used_in_its_own_iteration_is_one_round_trip():
    assert _trips("LDG.E.128 R20, desc[UR10][R30.64]", HMMA.format(a="R20"), "IADD3 R30, R30, 0x200, RZ") == (
        pytest.approx(1.0, abs=0.01)
    )


def test_a_load_issued_after_a_wait_is_a_second_round_trip():
    # the second load reuses the registers the first MMA reads, so it cannot go before it
    body = ["LDG.E.128 R20, desc[UR10][R30.64]", HMMA.format(a="R20"), "LDG.E.128 R20, desc[UR10][R32.64]"]
    assert _trips(*body, HMMA.format(a="R20")) == pytest.approx(2.0, abs=0.01)
    # a load whose address is a loaded value: a pointer chase
    assert _trips("LDG.E R4, desc[UR10][R30.64]", "LDG.E R6, desc[UR10][R4.64]", "FADD R8, R6, R8") == (
        pytest.approx(2.0, abs=0.01)
    )


def test_prefetched_registers_copied_at_the_loop_end_still_wait_once_per_iteration():
    body = ["LDG.E.128 R60, desc[UR10][R30.64]", HMMA.format(a="R20")]
    body += [f"IMAD.MOV.U32 R{20 + i}, RZ, RZ, R{60 + i}" for i in range(4)]
    assert _trips(*body) == pytest.approx(1.0, abs=0.01)


def test_two_register_sets_in_turn_halve_the_round_trips_per_mma():
    body = ["LDG.E.128 R60, desc[UR10][R30.64]", HMMA.format(a="R20")]
    body += ["LDG.E.128 R20, desc[UR10][R32.64]", HMMA.format(a="R60")]
    loop = main_loop(_listing(*body))
    assert sum(ins.op.startswith("HMMA") for ins in loop) == 2
    assert round_trips(loop) == pytest.approx(1.0, abs=0.01)


def test_a_listing_without_exactly_one_loop_is_refused():
    straight = "        /*0000*/                   MOV R1, c[0x0][0x28] ;\n.L_x_2:\n        /*0010*/    BRA `(.L_x_2);"
    with pytest.raises(ValueError, match="found 0"):
        main_loop(straight)
    with pytest.raises(ValueError, match="found 2"):
        second = _listing("FADD R8, R6, R8").replace("L_x_1", "L_x_5").replace("L_x_2", "L_x_6")
        main_loop(_listing("LDG.E R4, desc[UR10][R30.64]") + "\n" + second)
