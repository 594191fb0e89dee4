"""The fragment map of ``bench/sp24/fragment_map.py``, run against the CPU warp model.

On a GPU the map runs the real kernel (``bench/spmma_probe.py``); here the launcher is the warp
model of ``sp24_helpers``, once as the PTX ISA describes the hardware and once with a deliberate
fault, to show that the map finds the documented layout and names what differs from it.
"""

import sys
from pathlib import Path

import torch
from sp24_helpers import emulate_spmma

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from sp24 import fragment_map as fm  # noqa: E402


def _model(meta_reading="pairs", registers=(0, 1, 2, 3)):
    """A launcher running the warp model, optionally reading metadata or A registers differently."""

    def launch(x, frags, out):
        moved = frags.with_tensors(frags.values[..., list(registers)], frags.meta)
        out.copy_(emulate_spmma(x, moved, meta_reading))

    return launch


def test_map_of_the_documented_hardware_matches_the_layout():
    values, meta = fm.value_map(_model()), fm.meta_map(_model())
    assert len(values) == 256 and len(meta) == 128
    assert fm.value_mismatches(values) == [] and fm.meta_mismatches(meta, "pairs") == []
    # the readings agree on half the codes (groups 0-3 of row g in word 2g, groups 4-7 of row g + 8
    # in word 2g + 1) and differ on the other half, which the map tells apart
    assert len(fm.meta_mismatches(meta, "rows")) == 64
    assert fm.describe(values, meta) == [
        "A values: 256/256 slots as documented",
        "metadata: 128/128 codes as 'pairs', 64/128 as 'rows'",
    ]


def test_map_names_the_other_metadata_reading():
    meta = fm.meta_map(_model(meta_reading="rows"))
    assert fm.meta_mismatches(meta, "rows") == []
    assert len(fm.meta_mismatches(meta, "pairs")) == 64


def test_map_finds_swapped_registers_and_where_their_values_went():
    values = fm.value_map(_model(registers=(0, 2, 1, 3)))
    wrong = fm.value_mismatches(values)
    assert {r["reg"] for r in wrong} == {1, 2} and len(wrong) == 128
    swap = {0: 0, 1: 2, 2: 1, 3: 3}
    for r in wrong:  # the kernel read register 1 where 2 was stored: the value lands there
        assert (r["row"], r["index"]) == fm.expected_value(r["lane"], swap[r["reg"]], r["half"])
    lines = fm.describe(values, [])
    assert lines[0] == "A values: 128/256 slots as documented"
    assert lines[1] == "  lane 0 reg 1 half 0: expected row 8 k 1, got row 0 k 17 tokens [0, 1, 2, 3, 4, 5, 6, 7]"


def test_output_reading_recovers_rows_indices_and_token_wiring():
    x_row = torch.arange(fm.M) * fm.TOKEN_STRIDE + 5 + 1  # index 5, tokens in order
    out = torch.zeros(fm.M, fm.N)
    out[:, 3] = x_row.flip(0)  # tokens wired backwards
    assert fm.read_output(out) == {"row": 3, "index": 5, "tokens": list(range(fm.M))[::-1]}
    out[0, 7] = 2.0  # a second row
    assert fm.read_output(out) is None and fm.raw_hits(out)[:2] == [[0, 3, 454.0], [0, 7, 2.0]]
    out = torch.full((fm.M, fm.N), float("nan"))  # the poisoned buffer, never written
    assert fm.read_output(out) is None and len(fm.raw_hits(out)) == 8
    assert fm.read_output(torch.zeros(fm.M, fm.N)) is None
