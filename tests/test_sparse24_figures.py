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


LOOP_PROBE = """
import json, sys
sys.argv = ["plot_spmma_loop.py", "--out", sys.argv[1]]
import plot_spmma_loop as p
out = {"shown": p.SHOWN}
for name, tl in zip(("plain", "prefetch"), p.main().values()):
    long_waits = [w for w in tl["waits"] if w[1] - w[0] > p.LATENCY / 2]
    out[name] = dict(loads=len(tl["loads"]), kblocks=tl["kblocks"], long_waits=len(long_waits))
print(json.dumps(out))
"""


def test_loop_figure_shows_one_long_wait_per_iteration_for_twice_the_loads_with_prefetch(tmp_path):
    """bench/plot_spmma_loop.py compiles the kernel (no GPU): in its own process, where it turns the
    interpreter off before Triton is imported."""
    import json
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = os.environ | {"PYTHONPATH": f"{root / 'lib'}:{root / 'bench'}"}
    done = subprocess.run(
        [sys.executable, "-c", LOOP_PROBE, str(tmp_path)], cwd=root, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.splitlines()[-1])
    shown = summary["shown"]  # iterations in the figure; U = 4 k-blocks per step, one 16-byte load each
    assert summary["plain"] == dict(loads=4 * shown, kblocks=4, long_waits=shown)
    assert summary["prefetch"] == dict(loads=8 * shown, kblocks=8, long_waits=shown)
    assert (tmp_path / "spmma-loop.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
