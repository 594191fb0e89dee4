"""``bench/sp24/sass.py``: reading SASS lines and counting the memory round trips of a loop.

The loops below are written by hand in the format of ``nvdisasm -hex`` (each instruction followed
by the high word of its encoding, which carries the control bits), each a schedule whose round
trips per iteration are known: a load consumed in its own iteration (1), a load issued only
after another one was waited for (2), two register sets used in turn (1 per two MMAs), and what
registers do not show: two loads on one scoreboard (waiting for the older waits for the newer),
a wait mask with no register behind it, a read barrier, a ``cp.async`` ring n groups ahead.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from sp24.sass import Controls, issue_times, main_loop, parse_instruction, round_trips  # noqa: E402


def op(text: str, wait: tuple[int, ...] = (), wr: int | None = None, rd: int | None = None, stall: int = 1):
    """One instruction and its control bits: the scoreboards it waits for, sets for its result
    (``wr``) and for its sources (``rd``), and the cycles to the next instruction."""
    return text, Controls(stall, sum(1 << sb for sb in wait), wr, rd)


def _lines(address: int, text: str, controls: Controls) -> list[str]:
    """``nvdisasm -hex``'s two lines for one instruction (the low word left zero)."""
    return [f"        /*{address:04x}*/    {text} ;   /* 0x{0:016x} */", f"{'':60}/* 0x{controls.encode():016x} */"]


def _listing(*body) -> str:
    """A kernel listing with ``body`` (``op``s or bare text) as its loop, set-up before it and the
    end-of-kernel trap."""
    plain = Controls(1, 0, None, None)
    lines = _lines(0, "MOV R1, c[0x0][0x28]", plain) + [".L_x_1:"]
    for i, ins in enumerate(body):
        lines += _lines(16 * (i + 1), *(ins if isinstance(ins, tuple) else (ins, plain)))
    lines += _lines(0xF70, "@!P0 BRA `(.L_x_1)", plain) + _lines(0xF80, "EXIT", plain)
    lines += [".L_x_2:", *_lines(0xF90, "BRA `(.L_x_2)", plain)]
    return "\n".join(lines)


HMMA = "HMMA.SP.16832.F32 R40, {a}, R20, R40, R50, 0x0"


def _trips(*body) -> float:
    return round_trips(main_loop(_listing(*body)))


def test_parse_reads_register_widths_of_loads_mma_and_pairs():
    ins = parse_instruction("        /*0950*/               @P4 LDG.E.128 R20, desc[UR10][R30.64] ;")
    assert (ins.op, ins.writes, ins.reads, ins.is_global_load) == ("LDG.E.128", (20, 21, 22, 23), (30, 31), True)
    assert ins.controls is None  # a listing without -hex
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
    copy = parse_instruction("  /*1740*/   LDGSTS.E.BYPASS.128 [R91+0x7000], desc[UR8][R80.64], P0 ;")
    assert not copy.is_global_load  # into shared memory: modelled through its LDGDEPBAR group


# Real lines of ``nvdisasm -hex`` (Triton 3.6, sm_90a; the column padding shortened): the wgmma
# loop g2t128u2a2 and the cp.async ring of spmma r1w2s2u1t8xc3k2
REAL = """
        /*2be0*/               @P5 LDG.E.128 R140, desc[UR10][R192.64] ;   /* 0x0000000ac08c5981 */
                                                                                        /* 0x000e68000c1e1d00 */
        /*2d70*/                   PRMT R191, R142, 0x7610, R142 ;   /* 0x000076108ebf7816 */
                                                                                        /* 0x002fe2000000008e */
        /*1550*/                   DEPBAR.LE SB0, 0x1 ;   /* 0x000080400000791a */
                                                                                        /* 0x000fc80000000000 */
        /*1740*/                   LDGSTS.E.BYPASS.128 [R91+0x7000], desc[UR8][R80.64], P0 ;   /* 0x07000000505b7fae */
                                                                                        /* 0x0003e20008101c48 */
        /*2d10*/                   HGMMA.64x128x16.F32 R24, R88, gdesc[UR16], R24, gsb0 ;   /* 0x01e0001058187df0 */
                                                                                        /* 0x000fe20008000818 */
"""


def test_parse_reads_the_control_bits_of_hex_listings():
    lines = REAL.strip().splitlines()
    load, prmt, depbar, copy, mma = (parse_instruction(a + " " + b.strip()) for a, b in zip(lines[::2], lines[1::2]))
    # high word 0x000e68000c1e1d00: stall 4 (bits 41-44), write barrier 1 (46-48), no read barrier
    assert (load.op, load.writes, load.controls) == ("LDG.E.128", (140, 141, 142, 143), Controls(4, 0, 1, None))
    assert prmt.controls == Controls(1, 0b10, None, None) and prmt.reads == (142, 142)  # waits on SB1
    assert depbar.op == "DEPBAR.LE" and depbar.operands == ("SB0", "0x1") and depbar.controls.stall == 4
    assert copy.controls == Controls(1, 0, None, 1)  # its address registers: read barrier SB1
    assert mma.operands[-1] == "gsb0" and mma.controls == Controls(1, 0, None, None)


def test_the_hex_word_lines_join_their_instructions_in_a_listing():
    body = REAL.strip().splitlines()
    branch = ["        /*2f60*/   @!P0 BRA `(.L_x_1) ;   /* 0xffffffe400d08947 */", f"{'':88}/* 0x000fea000383ffff */"]
    loop = main_loop("\n".join([".L_x_1:", *body, *branch]))
    ops = ["LDG.E.128", "PRMT", "DEPBAR.LE", "LDGSTS.E.BYPASS.128", "HGMMA.64x128x16.F32", "BRA"]
    assert [ins.op for ins in loop] == ops
    assert loop[1].controls.wait == 0b10


def test_a_listing_without_control_bits_is_refused_by_the_model():
    plain = main_loop(_listing("FADD R8, R6, R8").replace("/* 0x", "/* 0y"))
    assert plain[0].controls is None
    with pytest.raises(ValueError, match="-hex"):
        issue_times(plain)


def test_a_load_used_in_its_own_iteration_is_one_round_trip():
    body = [op("LDG.E.128 R20, desc[UR10][R30.64]", wr=0), op(HMMA.format(a="R20"), wait=(0,))]
    assert _trips(*body, "IADD3 R30, R30, 0x200, RZ") == pytest.approx(1.0, abs=0.01)


def test_a_load_issued_after_a_wait_is_a_second_round_trip():
    # the second load reuses the registers the first MMA reads, so it cannot go before it
    body = [op("LDG.E.128 R20, desc[UR10][R30.64]", wr=0), op(HMMA.format(a="R20"), wait=(0,))]
    body += [op("LDG.E.128 R20, desc[UR10][R32.64]", wr=0), op(HMMA.format(a="R20"), wait=(0,))]
    assert _trips(*body) == pytest.approx(2.0, abs=0.01)
    # a load whose address is a loaded value: a pointer chase
    chase = [op("LDG.E R4, desc[UR10][R30.64]", wr=1), op("LDG.E R6, desc[UR10][R4.64]", wait=(1,), wr=2)]
    assert _trips(*chase, op("FADD R8, R6, R8", wait=(2,))) == pytest.approx(2.0, abs=0.01)


def test_prefetched_registers_copied_at_the_loop_end_still_wait_once_per_iteration():
    body = [op("LDG.E.128 R60, desc[UR10][R30.64]", wr=0), HMMA.format(a="R20")]
    body += [op(f"IMAD.MOV.U32 R{20 + i}, RZ, RZ, R{60 + i}", wait=(0,) if i == 0 else ()) for i in range(4)]
    assert _trips(*body) == pytest.approx(1.0, abs=0.01)


def _two_sets(first: int, second: int) -> list:
    """Two register sets in turn: each MMA reads the set loaded half an iteration earlier, each
    load on the given scoreboard."""
    body = [op("LDG.E.128 R60, desc[UR10][R30.64]", wr=first), op(HMMA.format(a="R20"), wait=(second,))]
    return body + [op("LDG.E.128 R20, desc[UR10][R32.64]", wr=second), op(HMMA.format(a="R60"), wait=(first,))]


def test_two_register_sets_in_turn_halve_the_round_trips_per_mma():
    loop = main_loop(_listing(*_two_sets(0, 1)))
    assert sum(ins.op.startswith("HMMA") for ins in loop) == 2
    assert round_trips(loop) == pytest.approx(1.0, abs=0.01)


def test_waiting_for_an_older_load_waits_for_a_newer_one_on_the_same_scoreboard():
    # the registers are those of the test above (1 round trip); with both loads on SB0, each MMA's
    # wait for the set loaded half an iteration ago also waits for the load just issued
    assert _trips(*_two_sets(0, 0)) == pytest.approx(2.0, abs=0.01)


def test_a_wait_mask_waits_without_a_register_dependency():
    load = op("LDG.E.128 R20, desc[UR10][R30.64]", wr=3)
    assert _trips(load, op("FADD R8, R6, R8", wait=(3,))) == pytest.approx(1.0, abs=0.01)
    assert _trips(load, op("FADD R8, R6, R8")) == pytest.approx(0.0, abs=0.01)


def test_a_read_barrier_releases_at_once_unless_a_load_shares_its_scoreboard():
    # the address register is rewritten once the load has read it, not once the data is back
    load = op("LDG.E.128 R20, desc[UR10][R30.64]", wr=0, rd=1)
    step = op("IADD3 R30, R30, 0x200, RZ", wait=(1,))
    assert _trips(load, step) == pytest.approx(0.0, abs=0.01)
    shared = op("LDG.E.128 R24, desc[UR10][R34.64]", wr=1)  # another load's data on SB1
    assert _trips(load, shared, step) == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("ahead", [0, 1, 2])
def test_a_copy_ring_waiting_with_n_groups_pending_runs_n_groups_ahead(ahead):
    body = [
        op(f"DEPBAR.LE SB0, {hex(ahead)}"),  # the oldest group in flight has landed
        op("LDS.128 R20, [R91]", wr=2),
        op(HMMA.format(a="R20"), wait=(2,)),
        op("LDGSTS.E.BYPASS.128 [R91+0x7000], desc[UR8][R80.64], P0", rd=1),
        op("LDGDEPBAR", wr=0),
        op("IADD3 R80, R80, 0x200, RZ", wait=(1,)),
    ]
    assert _trips(*body) == pytest.approx(1 / (ahead + 1), abs=0.01)


def test_wgmma_groups_and_fences_are_short():
    body = [
        "WARPGROUP.ARRIVE",
        "HGMMA.64x64x16.F32 R24, R72, gdesc[UR8], R24, gsb0",
        op("MEMBAR.ALL.CTA", rd=1),
        op("FENCE.VIEW.ASYNC.S", wait=(1,)),
        "WARPGROUP.DEPBAR.LE gsb0, 0x0",
    ]
    loop = main_loop(_listing(*body))
    assert round_trips(loop) == pytest.approx(0.0, abs=0.01)
    times = issue_times(loop, short=30)[-1]
    assert times[3] - times[2] == 30 and times[4] - times[1] >= 30  # the fence and the group wait


def test_stall_counts_are_issue_time_that_hides_the_latency():
    # a load consumed 100 instructions later: 1,500 cycles of issue at 15 cycles each hide it
    def loop(stall: int) -> list:
        work = [op("FFMA R8, R6, R8, R8", stall=stall)] * 100
        return [op("LDG.E.128 R20, desc[UR10][R30.64]", wr=0), *work, op(HMMA.format(a="R20"), wait=(0,))]

    assert _trips(*loop(15)) == pytest.approx(0.0, abs=0.01)
    assert _trips(*loop(1)) == pytest.approx(1.0, abs=0.01)


def test_a_listing_without_exactly_one_loop_is_refused():
    straight = "        /*0000*/                   MOV R1, c[0x0][0x28] ;\n.L_x_2:\n        /*0010*/    BRA `(.L_x_2);"
    with pytest.raises(ValueError, match="found 0"):
        main_loop(straight)
    with pytest.raises(ValueError, match="found 2"):
        second = _listing("FADD R8, R6, R8").replace("L_x_1", "L_x_5").replace("L_x_2", "L_x_6")
        main_loop(_listing("LDG.E R4, desc[UR10][R30.64]") + "\n" + second)


def _nested_listing(inner, outer_before) -> str:
    """A loop of chunks around an inner loop: ``outer_before`` runs once per chunk, then ``inner``
    loops; the outer loop branches back over both."""
    plain = Controls(1, 0, None, None)
    lines = _lines(0, "MOV R1, c[0x0][0x28]", plain) + [".L_x_0:"]
    address = 16
    for text in outer_before:
        lines += _lines(address, text, plain)
        address += 16
    lines += [".L_x_1:"]
    for text in inner:
        lines += _lines(address, text, plain)
        address += 16
    lines += _lines(address, "@!P0 BRA `(.L_x_1)", plain) + _lines(address + 16, "@!P1 BRA `(.L_x_0)", plain)
    lines += _lines(address + 32, "EXIT", plain) + [".L_x_2:", *_lines(address + 48, "BRA `(.L_x_2)", plain)]
    return "\n".join(lines)


def test_main_loop_is_the_innermost_of_nested_loops():
    """The resident-x ``wgmma`` kernel runs its steps in a loop inside a loop of chunks: the main
    loop is the inner one (with its branch), not the chunk loop around it."""
    loop = main_loop(_nested_listing(["IADD3 R2, R2, 0x1, RZ", "HMMA.16816.F32 R4, R8, R12, R4"], ["BAR.SYNC 0x0"]))
    assert [ins.op for ins in loop] == ["IADD3", "HMMA.16816.F32", "BRA"]


def test_loops_one_after_another_are_refused():
    plain = Controls(1, 0, None, None)
    lines = _lines(0, "MOV R1, c[0x0][0x28]", plain)
    for n, start in ((1, 0x10), (2, 0x40)):
        lines += [f".L_x_{n}:", *_lines(start, "IADD3 R2, R2, 0x1, RZ", plain)]
        lines += _lines(start + 0x10, f"@!P0 BRA `(.L_x_{n})", plain)
    with pytest.raises(ValueError, match="nested"):
        main_loop("\n".join(lines + _lines(0x80, "EXIT", plain)))


def test_of_loops_one_after_another_the_main_one_has_the_matrix_instructions():
    """A split-K epilogue that adds its partial sums in a loop leaves two loops one after the
    other: the main one is the loop with the MMAs."""
    plain = Controls(1, 0, None, None)
    lines = _lines(0, "MOV R1, c[0x0][0x28]", plain)
    bodies = {1: "HGMMA.64x64x16.F32 R24, gdesc[UR4], R24", 2: "FADD R8, R6, R8"}
    for n, start in ((1, 0x10), (2, 0x40)):
        lines += [f".L_x_{n}:", *_lines(start, bodies[n], plain)]
        lines += _lines(start + 0x10, f"@!P0 BRA `(.L_x_{n})", plain)
    loop = main_loop("\n".join(lines + _lines(0x80, "EXIT", plain)))
    assert [ins.op for ins in loop] == ["HGMMA.64x64x16.F32", "BRA"]
