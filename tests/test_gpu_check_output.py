"""bench/gpu_check.sh's output fits what a device call returns: at most 8 files from $OUT, so the
run's ~20 files travel as one archive (bench/device_out.sh), packed while the run goes on."""

import re
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICE_OUT = ROOT / "bench" / "device_out.sh"
RETURNED_FILES = 8  # the device README's limit on files back from $OUT


def _bash(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out"), "TMPDIR": str(tmp_path), "PACK_EVERY": "1"}
    return subprocess.run(
        ["bash", "-c", f"source {DEVICE_OUT}\n{script}"], env=env, capture_output=True, text=True, timeout=60
    )


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name.removeprefix("./"): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_twenty_files_come_back_as_one_archive_holding_them_all(tmp_path):
    run = _bash(
        'device_out_start\nfor i in $(seq 1 20); do echo "file $i" > "$RUN/f$i.txt"; done\n'
        "device_out_finish\necho $RUN",
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    returned = list((tmp_path / "out").iterdir())
    assert [p.name for p in returned] == ["gpu-check.tar.gz"] and len(returned) <= RETURNED_FILES
    members = _members(returned[0])
    assert members == {f"f{i}.txt": f"file {i}\n".encode() for i in range(1, 21)}
    assert not Path(run.stdout.strip()).exists()  # the working folder is removed once packed


def test_a_run_killed_midway_has_already_packed_what_it_wrote(tmp_path):
    """The packer runs in the background: with no device_out_finish (the call's time limit killed
    the script), the archive still holds what was written a pack interval before."""
    run = _bash(
        'device_out_start\necho early > "$RUN/early.txt"\nsleep 3\n'
        '[ -f "$OUT/gpu-check.tar.gz" ] && echo packed\nkill $PACKER',
        tmp_path,
    )
    assert run.returncode == 0 and run.stdout.strip() == "packed", run.stderr
    assert _members(tmp_path / "out" / "gpu-check.tar.gz") == {"early.txt": b"early\n"}
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["gpu-check.tar.gz"]


def test_the_gpu_check_writes_nothing_into_out_but_the_archive():
    """Every file of the run goes to $RUN; $OUT is named only where the script sets it, and the
    run is packed once more after it ends, with its printed output (gpu-check.log) inside."""
    script = (ROOT / "bench" / "gpu_check.sh").read_text()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    assert re.findall(r"\$\{?OUT\b[^}]*\}?", code) == ["${OUT:-bench/results/latest}"]
    assert 'source "$(dirname "$0")/device_out.sh"' in code
    body = code[code.index("device_out_start") :]
    assert body.index('tee "$RUN/gpu-check.log"') < body.index("device_out_finish")
    assert '--out "$RUN"' in code
