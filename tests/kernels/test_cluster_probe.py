"""bench/cluster_probe.py: what a Gluon kernel needs to share shared memory within a cluster,
checked without a GPU (the probe itself runs in bench/gpu_check.sh)."""

import sys
from pathlib import Path

import pytest
from sp24_helpers import offline_compile_report

pytest.importorskip("triton.experimental.gluon")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import cluster_probe  # noqa: E402

PROBE = """
import json, re, sys
sys.path.insert(0, "bench")
import cluster_probe
from compile_offline import ptxas_stderr
kernel = cluster_probe.compile_for_sm90()
ptx = kernel.asm["ptx"]
err = ptxas_stderr(ptx, 90)
print(json.dumps(dict(
    num_ctas=kernel.metadata.num_ctas,
    mapa=len(re.findall(r"mapa\\.shared::cluster", ptx)),
    remote_stores=len(re.findall(r"st\\.shared::cluster", ptx)),
    arrive=len(re.findall(r"barrier\\.cluster\\.arrive\\.release", ptx)),
    wait=len(re.findall(r"barrier\\.cluster\\.wait\\.acquire", ptx)),
    errors=[line for line in err.splitlines() if "error" in line],
    regs=int(re.search(r"Used (\\d+) registers", err).group(1)),
)))
"""


def test_the_cluster_instructions_compile_into_a_kernel_built_for_one_cta():
    """Inline assembly carries them past Gluon, which has no cluster API in 3.6, and ptxas takes
    them for sm_90a in a kernel compiled with num_ctas=1 (so the launch alone makes the cluster)."""
    r = offline_compile_report(PROBE)
    assert r["num_ctas"] == 1 and r["errors"] == []
    assert (r["mapa"], r["remote_stores"]) == (1, 1)
    # one barrier before the remote store (the partner's buffer is zeroed), one after (it is written)
    assert r["arrive"] == r["wait"] == 2
    assert r["regs"] < 64


def test_cluster_launch_metadata_sets_num_ctas_only():
    assert cluster_probe.cluster_metadata((4, 1, 512), 2) == (4, 2, 512)
    assert cluster_probe.cluster_metadata((8, 1, 0), 1) == (8, 1, 0)


@pytest.mark.parametrize(
    "packed, cluster, message",
    [((4, 2, 512), 2, "compiled for num_ctas=2"), ((4, 1, 512), 3, "portable sizes are 1, 2, 4 and 8")],
)
def test_cluster_launch_metadata_refuses_what_the_launcher_cannot_take(packed, cluster, message):
    with pytest.raises(ValueError, match=message):
        cluster_probe.cluster_metadata(packed, cluster)
