"""Hopper's bulk tensor copies (TMA) and mbarriers in the PTX emulator.

Small hand-written kernels with known answers: the tensor map's box with its zero fill and its
swizzle (cross-checked against what ``wgmma`` reads through a swizzled descriptor), a pair of
programs in a cluster that multicast halves of a box into each other, and a pipelined ring of
slots with full and empty mbarriers, whose synchronization bugs (a missing wait, a wrong parity,
an unpublished barrier, an early end) the emulator must refuse. Last, a Gluon kernel taking a
host ``TensorDescriptor``, launched through ``EmulatedKernel`` as Triton's launcher would.
"""

import numpy as np
import pytest
from ptx_emulator import Memory, PtxError, parse, run_grid

# ---------------------------------------------------------------------------------------- parsing

LOOPS = """
.version 8.7
.target sm_90a
.address_size 64
.visible .entry loops(
    .param .u64 .ptr .global .align 1 loops_param_0
)
.reqntid 32
{
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    .reg .pred %p<2>;
    ld.param.b64 %rd1, [loops_param_0];
    mov.u32 %r1, 0;
    mov.u32 %r2, 0;
    { .reg .pred %w; LOOP: add.s32 %r1, %r1, 1; setp.lt.u32 %w, %r1, 3; @%w bra LOOP; }
    { .reg .pred %w; LOOP: add.s32 %r2, %r2, 10; setp.lt.u32 %w, %r2, 50; @%w bra LOOP; }
    mov.u32 %r3, 0;
LOOP:
    add.s32 %r3, %r3, 100;
    setp.lt.u32 %p1, %r3, 200;
    { @%p1 bra LOOP; }
    st.global.b32 [%rd1], %r1;
    st.global.b32 [%rd1+4], %r2;
    st.global.b32 [%rd1+8], %r3;
    ret;
}
"""


def test_labels_are_scoped_to_their_block():
    """The same wait-loop block pasted twice defines its label twice: each branch loops in its own
    copy, and a branch in a block without the label goes to the enclosing block's."""
    memory = Memory("global")
    out = np.full(3, -1, dtype=np.int32)
    run_grid(LOOPS, (1,), 32, [memory.add(out.view(np.uint8), "out")], memory, 0)
    assert out.tolist() == [3, 50, 200]
    program = parse(LOOPS)
    assert list(program.labels) == ["LOOP"]  # the function's own; the blocks' are theirs
    assert [ins.target for ins in program.instrs if ins.op == "bra"] == [3, 6, 10]


@pytest.mark.parametrize("old, new, message", [
    # a second LOOP in the function's own block
    ("{ @%p1 bra LOOP; }", "@%p1 bra LOOP;\nLOOP:\n    mov.u32 %r4, 0;", "defined twice"),
    # the outer label gone: only the blocks' copies remain, invisible from outside them
    ("LOOP:\n    add.s32 %r3", "    add.s32 %r3", "not defined in its block"),
])
def test_label_scoping_errors(old, new, message):
    with pytest.raises(PtxError, match=message):
        parse(LOOPS.replace(old, new))


def test_parameters_declared_as_byte_arrays_have_addresses():
    ptx = LOOPS.replace(".param .u64 .ptr .global .align 1 loops_param_0",
                        ".param .align 64 .b8 loops_param_0[128],\n    .param .u32 loops_param_1,\n"
                        "    .param .u64 .ptr .global .align 1 loops_param_2")
    program = parse(ptx)
    assert program.params == ["loops_param_0", "loops_param_1", "loops_param_2"]
    assert program.param_bytes == {"loops_param_0": 128}
    at = list(program.param_addresses.values())
    assert all(a % 128 == 0 for a in at) and at[1] >= at[0] + 128 and at[2] >= at[1] + 8
    assert program.param_at(at[1]) == "loops_param_1" and program.param_at(at[1] + 4) is None
