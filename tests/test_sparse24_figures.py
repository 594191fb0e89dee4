"""The kernel page's format diagrams (bench/plot_sparse24_format.py) and its worked example: what
they show is what the library produces."""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from plot_sparse24_format import fragment_owner, main, plane_of_each_weight  # noqa: E402

from repro.kernels import compress_24  # noqa: E402


def test_the_pages_worked_example_is_what_compress_24_gives():
    row = torch.tensor([[0, 10, 0, 11, 20, 0, 21, 0]], dtype=torch.float16)
    w = compress_24(row)
    assert w.values.tolist() == [[10, 11, 20, 21]]
    assert w.meta.tolist() == [[0x8D]]
    assert plane_of_each_weight(row.float()).tolist() == [[-1, 0, -1, 1, 2, -1, 3, -1]]


def test_fragment_owners_are_the_ptx_layout_of_the_sparse_a_operand():
    lane, reg = fragment_owner()
    rows, kept = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    group = kept // 2  # v0, v1 of each group of 4
    assert (lane == 4 * (rows % 8) + group % 4).all()  # lane 4g + q
    assert (reg == rows // 8 + 2 * (group // 4)).all()  # register i: row g + 8(i % 2), group q + 4(i // 2)
    counts = np.zeros((32, 4), dtype=int)
    np.add.at(counts, (lane, reg), 1)
    assert (counts == 2).all()  # each 32-bit register holds exactly two fp16 values


def test_both_figures_are_written(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["plot_sparse24_format.py", "--out", str(tmp_path)])
    main()
    for name in ("sparse24-format.png", "sparse24-fragments.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
