"""The ``wgmma`` kernel's generated code, compiled for sm_90a on any machine (no GPU needed).

What the design needs and the PTX and ptxas show: the weight expanded inside each lane (two byte
permutes per 2:4 group, no shuffles and no shared-memory reads in the loop), four ``wgmma`` per
k-block pair of each step, no register spills, and the MMAs left asynchronous: ptxas serializes
every ``wgmma`` (its C7515 notice) when something other than an MMA writes the accumulator while
one is in flight, which an earlier form of this loop did.
"""


import pytest
from sp24_helpers import offline_compile_report

from repro.kernels.fragments import WgmmaConfig
from repro.kernels.gluon_shared_x import _barriers_at

pytest.importorskip("triton.experimental.gluon")

PROBE = """
import json, sys
sys.path.insert(0, "bench")
from compile_offline import inspect_wgmma
from repro.kernels.fragments import WgmmaConfig
cfg, dtype, bias = WgmmaConfig.from_label(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
r = inspect_wgmma(cfg, 90, dtype, bias)
r.pop("ptx")
print(json.dumps(r))
"""


def _inspect(label: str, dtype: str, bias: bool) -> dict:
    return offline_compile_report(PROBE, label, dtype, "1" if bias else "0")


@pytest.mark.parametrize(
    "label, dtype, bias", [("g1t64u2", "fp16", False), ("g2t32u4k4", "bf16", True), ("g1t16u1", "fp16", False)]
)
def test_loop_expands_in_lane_and_keeps_the_mmas_in_flight(label, dtype, bias):
    r = _inspect(label, dtype, bias)
    u = int(label.split("u")[1][0])
    steps = 2  # the loop runs two steps per iteration (two sets of A registers)
    assert r["wgmma"] == steps * 2 * u  # one per 16 columns: two per 32-column k-block
    assert r["prmt"] == steps * u * 4 * 2  # per k-block a lane expands 4 groups, 2 permutes each
    assert r["shared_loads"] == 0 and r["shuffles"] == 0
    assert not r["serialized"], "ptxas serialized the wgmma pipeline (C7515)"
    assert r["spills"] == 0 and r["regs"] <= 255


def test_loads_one_step_ahead_wait_for_memory_once_per_step():
    """Read from the machine code (``bench/sp24/sass.py``, which follows the scoreboards): with
    loads one step ahead, each step of a 64-token tiling waits for its own round trip (its loads
    were issued one short step earlier): two per loop iteration of two steps. (Loads two steps
    ahead, ``a2``, wait once per iteration with Triton 3.6 and twice with 3.7.1, where a later
    load shares a scoreboard with the one waited for; on the H200 they bought 0-12%.)"""
    one = _inspect("g1t64u2", "fp16", False)
    assert one["round_trips"] == pytest.approx(2.0, abs=0.3)  # per loop iteration: two steps


def test_the_ring_takes_every_load_of_the_loop_off_the_registers():
    """With ``stages`` every operand (weight words and x) is copied by ``cp.async`` into shared
    memory: the loop loads nothing from global memory into registers, so no scoreboard ties a
    step to copies in flight. A 32-token tiling with four k-blocks per step then fits three or
    four programs per SM instead of two (65,536 registers over 128 threads each), and ptxas
    still keeps the MMAs in flight."""
    ring, twin = _inspect("g1t32u4c4k4", "bf16", True), _inspect("g1t32u4a2k4", "bf16", True)
    assert ring["global_loads"] == 0 and twin["global_loads"] > 0
    assert ring["shared_loads"] > 0  # the step's operands, read back from the ring
    assert not ring["serialized"] and ring["spills"] == 0
    assert 65536 // (128 * ring["regs"]) >= 3 and 65536 // (128 * twin["regs"]) == 2


def test_resident_x_leaves_the_loop_nothing_to_move_but_weight_words():
    """With ``x_steps`` x is staged once per chunk of steps: a step of the loop stores nothing to
    shared memory, fences nothing and loads nothing from global memory into registers (the
    weight words come through their ring), where the same ring tiling with x streamed stores x
    and fences every step; and ptxas still keeps the MMAs in flight."""
    resident, streamed = _inspect("g1t64u2c4x16k4", "fp16", False), _inspect("g1t64u2c4k4", "fp16", False)
    assert resident["shared_stores"] == resident["fences"] == resident["global_loads"] == 0
    assert streamed["shared_stores"] > 0 and streamed["fences"] == 2  # one per step, two steps
    assert resident["wgmma"] == streamed["wgmma"] and resident["shared_loads"] < streamed["shared_loads"]
    assert not resident["serialized"] and resident["spills"] == 0


@pytest.mark.parametrize(
    "label, dtype, bias",
    [("g1t64u2c6sk2", "fp16", False), ("g2t128u4c4s", "bf16", True), ("g2w2t64u2c6sk8", "fp16", False)],
)
def test_sparse_form_multiplies_the_compressed_words_where_they_land(label, dtype, bias):
    """The sparse form (``wgmma.mma_async.sp``): one MMA per 32-column k-block and MMA tile, no
    expansion (no byte permutes), x never in registers (nothing stored to shared memory, nothing
    loaded from global memory: every operand comes through the ring), one proxy fence and one CTA
    barrier per step (the kernel's own, after the fence: the weight words are copied and read back
    by inline assembly, so Triton adds none), the MMAs kept in flight, no spills (a two-tile split-K
    epilogue adds its partial sums one at a time, in a loop of its own after the main one)."""
    r = _inspect(label, dtype, bias)
    u = int(label.split("u")[1][0])
    tiles = 2 if "w2" in label else 1
    assert r["wgmma"] == 2 * u * tiles  # two steps per loop iteration
    assert r["prmt"] == r["shared_stores"] == r["global_loads"] == 0
    assert r["fences"] == 2 == r["barriers"] and r["shared_loads"] > 0
    assert not r["serialized"], "ptxas serialized the wgmma pipeline (C7515)"
    assert r["spills"] == 0 and r["regs"] <= 255


def test_sparse_form_with_x_resident_fences_nothing_per_step():
    """With ``x_steps`` the sparse form stages x once per chunk: its loop fences nothing (the
    weight words reach the MMA through registers), where the streamed ring fences every step. Nor
    does it wait at a barrier: each thread copies and reads back its own words by inline
    assembly, so Triton adds none, where a streamed step needs one for x."""
    resident, streamed = _inspect("g2w2t64u2c4x8sk8", "fp16", False), _inspect("g2w2t64u2c6sk8", "fp16", False)
    assert resident["fences"] == resident["shared_stores"] == resident["global_loads"] == 0
    assert streamed["fences"] == 2 and resident["wgmma"] == streamed["wgmma"] == 8
    assert resident["barriers"] == 0 and streamed["barriers"] == 2
    assert not resident["serialized"] and resident["spills"] == 0


@pytest.mark.parametrize(
    "label, dtype, bias",
    [("g1t64u2c6sm2", "fp16", False), ("g1t128u4c4sk2m2", "bf16", True), ("g2t64u2c4sm4", "fp16", False),
     ("g2t128u4c4sm4", "fp16", False), ("g1t128u2c6sk2qm2", "fp16", False)],
)
def test_shared_x_loads_x_by_tma_with_no_fence_and_no_barrier_per_step(label, dtype, bias):
    """x shared by the row tiles of a cluster (``gluon_shared_x.py``): each step's x comes by one TMA
    multicast per 64 columns from each program, so the loop neither fences (the TMA and the MMA both
    work in the async proxy) nor waits at a CTA barrier (the mbarriers say when x has landed and
    when a slot is free), where the streamed twin does both every step; the MMAs stay in flight."""
    shared, twin = _inspect(label, dtype, bias), _inspect(label[:-2], dtype, bias)
    u = int(label.split("u")[1][0])
    assert shared["tma_loads"] == 2 * u // 2 and twin["tma_loads"] == 0  # per iteration: two steps
    assert shared["fences"] == shared["barriers"] == shared["global_loads"] == shared["shared_stores"] == 0
    assert twin["fences"] == 2 == twin["barriers"] and shared["wgmma"] == twin["wgmma"] == 2 * u
    assert not shared["serialized"] and shared["spills"] == 0 and shared["regs"] <= twin["regs"]
    # the barriers are the last bytes Triton allocates, where gluon_shared_x's assembly looks for them
    # (the emulator refuses any other write to an mbarrier's bytes, so an offset inside a ring fails there)
    cfg = WgmmaConfig.from_label(label)
    assert shared["shared"] == _barriers_at(cfg.G, cfg.W, cfg.T, cfg.U, cfg.stages) + 16 * cfg.stages
