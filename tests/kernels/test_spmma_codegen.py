"""The ``spmma`` kernel's generated code, compiled for sm_90a on any machine (no GPU needed).

The kernel cannot run without a GPU, but Triton compiles it anywhere, and the PTX shows whether the
design holds: one ``mma.sp`` per row tile, k-block and token tile in the loop, the weights read by
16-byte loads, nothing through shared memory inside the loop, and no register spills. The compile
runs in a child process: the suite sets ``TRITON_INTERPRET=1`` on CPU, under which Gluon cannot
compile.
"""

import json

import pytest
from sp24_helpers import offline_compile_report

pytest.importorskip("triton.experimental.gluon")

PROBE = """
import json, sys
sys.path.insert(0, "bench")
from compile_offline import inspect_config
from repro.kernels.fragments import SpmmaConfig
cfg, dtype, bias = SpmmaConfig(**json.loads(sys.argv[1])), sys.argv[2], sys.argv[3] == "1"
r = inspect_config(cfg, 90, dtype, bias)
r.pop("ptx")
print(json.dumps(r))
"""


def _inspect(cfg: dict, dtype: str, bias: bool) -> dict:
    return offline_compile_report(PROBE, json.dumps(cfg), dtype, "1" if bias else "0")


@pytest.mark.parametrize(
    "cfg, dtype, bias",
    [
        (dict(R=1, S=4, U=4, T=1), "fp16", False),
        (dict(R=1, S=8, U=2, T=2, W=2, prefetch=True), "bf16", True),
        (dict(R=1, S=4, U=8, T=1, prefetch=True, wide_x=True), "fp16", False),
        (dict(R=1, S=4, U=1, T=4, W=2, prefetch=True, wide_x=True), "bf16", True),
    ],
    ids=["decode-fp16", "w2-prefetch-bf16-bias", "wide-x-prefetch-fp16", "wide-x-w2-t4-bf16-bias"],
)
def test_loop_issues_one_mma_sp_per_tile_and_reads_weights_in_16_byte_loads(cfg, dtype, bias):
    r = _inspect(cfg, dtype, bias)
    w, t = cfg.get("W", 1), cfg["T"]
    u = cfg["U"] * (2 if cfg.get("prefetch") else 1)  # k-blocks per iteration: prefetch does two steps
    assert len(r["mma_sp"]) == u * w * t
    assert set(r["mma_sp"]) == {"f16" if dtype == "fp16" else "bf16"}
    # weights: one 16-byte load per lane, row tile and k-block; metadata: one word per k-block and
    # row tile; x per k-block and token tile: four 4-byte pairs, or with wide_x one 16-byte load
    # and the quad transpose's four shuffles
    wide = cfg.get("wide_x", False)
    assert r["loads_v4"] == u * w + (u * t if wide else 0)
    assert r["loads_b32"] == u * w + (0 if wide else 4 * u * t)
    assert r["shuffles"] == (4 * u * t if wide else 0)
    assert r["shared_ops_in_loop"] == 0
    assert r["spills"] == 0 and r["regs"] <= 255


def test_prefetch_doubles_the_weight_loads_per_memory_round_trip_in_the_machine_code():
    """Read from the SASS (``bench/sp24/sass.py``): the plain loop waits once per iteration for its
    ``U`` k-blocks; the prefetching loop alternates two register sets, so each wait covers about
    twice as many. (Loads prefetched into one rotating set do not: ptxas copies the set at the
    end of every iteration, and the copy waits for the loads it was meant to hide.)"""
    cfg = dict(R=1, S=8, U=4, T=2)  # a benchmark configuration for 9-16 tokens
    plain = _inspect(cfg, "fp16", False)
    ahead = _inspect(cfg | {"prefetch": True}, "fp16", False)
    per_trip = {name: r["kblocks_per_iteration"] / r["round_trips"] for name, r in (("plain", plain), ("ahead", ahead))}
    assert per_trip["ahead"] >= 1.8 * per_trip["plain"], per_trip
    assert plain["round_trips"] == pytest.approx(1.0, abs=0.1) and plain["kblocks_per_iteration"] == 4
