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
    # the waits of one iteration: each ends when a load of that iteration arrives (the 4-byte ones
    # ptxas issues last end the second), so the figure's caption can say what each grey band is
    starts = [0] + tl["starts"]
    arrivals = sorted(b for _, b in tl["loads"] + tl["small_loads"])
    out[name + "_detail"] = dict(
        small_loads=len(tl["small_loads"]),
        waits_per_iteration=[sum(a <= w[0] < b for w in tl["waits"]) for a, b in zip(starts, starts[1:] + [1e12])],
        waits_end_on_an_arrival=all(any(abs(w[1] - t) <= 16 for t in arrivals) for w in tl["waits"]),
        last_small_after_last_weight=max(t for t, _ in tl["small_loads"]) > max(t for t, _ in tl["loads"]),
    )
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
    # the caption: nine 4-byte loads per k-block (x's words, four for each of the two 8-token tiles,
    # and the metadata word); two waits per iteration, each for loads of that iteration
    for name, kblocks in (("plain", 4), ("prefetch", 8)):
        detail = summary[name + "_detail"]
        assert detail["small_loads"] == 9 * kblocks * shown
        assert detail["waits_per_iteration"] == [2] * shown
        assert detail["waits_end_on_an_arrival"] and detail["last_small_after_last_weight"]
    assert (tmp_path / "spmma-loop.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


KERNEL_PAGE_FIGURES = ("plot_sparse24.py", "plot_sparse24_format.py", "plot_spmma_loop.py", "l2_traffic.py",
                       "cross_gpu.py")


def test_the_kernel_pages_figure_scripts_write_no_text_below_nine_points():
    """The book's column shows a 9.5-10 inch figure at about 900 pixels: 7-8 pt text becomes unreadable."""
    import re

    small = re.compile(r"\b(?:fontsize|labelsize|title_fontsize)=([0-8](?:\.\d+)?)\b")
    for name in KERNEL_PAGE_FIGURES:
        path = Path(__file__).resolve().parents[1] / "bench" / name
        for number, line in enumerate(path.read_text().splitlines(), 1):
            found = small.search(line)
            assert not found, f"{name}:{number}: text of {found.group(1)} pt: {line.strip()[:70]!r}"


def test_the_format_figures_fit_the_books_column(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["plot_sparse24_format.py", "--out", str(tmp_path)])
    main()
    for name in ("sparse24-format.png", "sparse24-fragments.png", "wgmma-columns.png"):
        width = int.from_bytes((tmp_path / name).read_bytes()[16:20], "big")
        assert width <= 1100, (name, width)
