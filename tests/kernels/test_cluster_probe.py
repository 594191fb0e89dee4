"""bench/cluster_probe.py: what a Gluon kernel needs to share shared memory within a cluster,
checked without a GPU (the probe itself runs in bench/gpu_check.sh)."""

import sys
from pathlib import Path

import pytest
from sp24_helpers import offline_compile_report

pytest.importorskip("triton.experimental.gluon")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import cluster_probe  # noqa: E402

from repro.kernels.fast_launch import ClusterGrid, cluster_metadata, cluster_size  # noqa: E402

PROBE = """
import json, re, sys
sys.path.insert(0, "bench")
import cluster_probe
from compile_offline import ptxas_stderr
kernel = cluster_probe.compile_for_sm90(getattr(cluster_probe, sys.argv[1]))
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
    r = offline_compile_report(PROBE, "SWAP")
    assert r["num_ctas"] == 1 and r["errors"] == []
    assert (r["mapa"], r["remote_stores"]) == (1, 1)
    # one barrier before the remote store (the partner's buffer is zeroed), one after (it is written)
    assert r["arrive"] == r["wait"] == 2
    assert r["regs"] < 64


def test_the_barrier_timing_compiles_with_its_barriers_in_a_row():
    r = offline_compile_report(PROBE, "TIMING")
    assert r["num_ctas"] == 1 and r["errors"] == []
    assert r["arrive"] == r["wait"] == cluster_probe.BARRIERS and r["mapa"] == 0


def test_a_cluster_grid_counts_programs_and_keeps_its_cluster():
    grid = ClusterGrid((8, 3, 1), 4)
    assert grid == (8, 3, 1) and grid.cluster == 4 and cluster_size(grid) == 4 and cluster_size((8, 3, 1)) == 1


@pytest.mark.parametrize("grid, cluster, message", [((6, 1, 1), 4, "multiple of the cluster"),
                                                    ((8, 1), 2, "three axes"), ((8, 1, 1), 3, "2, 4 or 8")])
def test_a_cluster_grid_refuses_what_cannot_be_launched(grid, cluster, message):
    with pytest.raises(ValueError, match=message):
        ClusterGrid(grid, cluster)


def test_cluster_launch_metadata_sets_num_ctas_only():
    assert cluster_metadata((4, 1, 512), 2) == (4, 2, 512)
    assert cluster_metadata((8, 1, 0), 1) == (8, 1, 0)


@pytest.mark.parametrize(
    "packed, cluster, message",
    [((4, 2, 512), 2, "compiled for num_ctas=2"), ((4, 1, 512), 3, "portable sizes are 1, 2, 4 and 8")],
)
def test_cluster_launch_metadata_refuses_what_the_launcher_cannot_take(packed, cluster, message):
    with pytest.raises(ValueError, match=message):
        cluster_metadata(packed, cluster)


# --------------------------------------------------------------------- the probe, emulated
import torch  # noqa: E402
from ptx_emulator import PtxError  # noqa: E402
from ptx_launch import EmulatedKernel  # noqa: E402

CLUSTERS = 3
FIRST_BARRIER = "barrier.cluster.arrive.release.aligned; barrier.cluster.wait.acquire.aligned; "


def _emulate(asm: str, clusters: int = CLUSTERS, cluster: int = 2):
    programs = clusters * cluster
    x = torch.arange(programs * cluster_probe.WORDS, dtype=torch.int32) + 1
    y, rank = torch.full_like(x, -1), torch.full_like(x, -1)
    EmulatedKernel(cluster_probe._swap_kernel, cluster=cluster)[(programs,)](x, y, rank, asm, num_warps=4)
    return x.view(programs, -1), y.view(programs, -1), rank.view(programs, -1)


@pytest.mark.parametrize("cluster", [2, 4])
def test_each_program_reads_back_its_cluster_partners_words(cluster):
    """What the probe checks on a GPU, on the emulator's model of a cluster: the programs run
    together, each stores into its partner's buffer (rank ^ 1) through mapa's address, and the
    two cluster barriers order the zeroing, the stores and the reads."""
    x, y, rank = _emulate(cluster_probe.SWAP, cluster=cluster)
    pids = torch.arange(cluster * CLUSTERS)
    assert torch.equal(y, x[pids ^ 1])
    assert torch.equal(rank, (pids % cluster)[:, None].expand_as(rank).int())


def test_a_store_into_the_partner_before_it_has_zeroed_its_buffer_is_a_race():
    """Without the first barrier, the partner's zeroing and this program's store race for the same bytes."""
    with pytest.raises(PtxError, match="cluster"):
        _emulate(cluster_probe.SWAP.replace(FIRST_BARRIER, "", 1))


def test_reading_the_buffer_before_the_partner_has_stored_is_a_race():
    """Without the second barrier, a program reads its buffer while the partner may still store into it."""
    second = cluster_probe.SWAP.rindex(FIRST_BARRIER)
    asm = cluster_probe.SWAP[:second] + cluster_probe.SWAP[second + len(FIRST_BARRIER) :]
    with pytest.raises(PtxError, match="no cluster barrier between"):
        _emulate(asm)


def test_a_barrier_only_one_program_of_the_cluster_reaches_is_a_deadlock():
    only_rank_0 = (
        "{ .reg .pred %p; mov.u32 $1, %cluster_ctarank; setp.ne.u32 %p, $1, 0; "
        "@!%p barrier.cluster.arrive.aligned; @!%p barrier.cluster.wait.aligned; mov.u32 $0, $2; }"
    )
    with pytest.raises(PtxError, match="cluster deadlock"):
        _emulate(only_rank_0)


def test_a_launch_without_clusters_is_a_cluster_of_one():
    """Every program alone: its barriers pass at once and mapa of the partner's rank is refused."""
    with pytest.raises(PtxError, match="mapa of a rank outside the cluster of 1"):
        _emulate(cluster_probe.SWAP, clusters=2, cluster=1)


def test_clusters_must_tile_the_grid():
    with pytest.raises(ValueError, match="multiple of it"):
        EmulatedKernel(cluster_probe._swap_kernel, cluster=2)[(3,)](
            torch.zeros(3 * 128, dtype=torch.int32), torch.zeros(3 * 128, dtype=torch.int32),
            torch.zeros(3 * 128, dtype=torch.int32), cluster_probe.SWAP, num_warps=4)
