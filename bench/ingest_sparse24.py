"""Turn one GPU run of bench/gpu_check.sh into committed results, the dispatch table and the page.

    python bench/ingest_sparse24.py RUN [--date YYYY-MM-DD[a-z]] [--force]
    python bench/ingest_sparse24.py --regenerate bench/results/<stem>.json

RUN is what the device call brought back from $OUT: the archive gpu-check.tar.gz that
bench/gpu_check.sh packs (bench/device_out.sh), the folder holding it, or a folder of the files
themselves (sparse24.json, sparse24.md, sparse24.log, dispatch_<arch>.json; gpu-check.log,
pytest.log, fast-launch.log, cluster-tests.log, shared-x-tests.log, shared-x-meet-tests.log,
wide-tiles-tests.log, cusparselt-tests.log, precompile.log, spmma-probe.txt, spmma-map.json, wgmma-sparse-probe.txt,
wgmma-sparse-map.json, fence-probe.txt, cluster-probe.txt, nvidia-smi.txt, ablation.{json,log} and
ncu*.txt when present).
Everything is checked before anything is written: the records, and every entry of the dispatch
table through the dispatcher's own lookup. Then:

- bench/results/<gpu>-<date>.{json,md,log} and
  <gpu>-<date>-{gpu-check.log,pytest.log,fast-launch.log,cluster-tests.log,shared-x-tests.log,
  shared-x-meet-tests.log,wide-tiles-tests.log,cusparselt-tests.log,precompile.log,
  spmma-probe.txt,spmma-map.json,wgmma-sparse-probe.txt,wgmma-sparse-map.json,
  fence-probe.txt,cluster-probe.txt,nvidia-smi.txt,wgmma-ablation.{json,log},ncu*.txt};
- lib/repro/kernels/dispatch_<arch>_<gpu>.json (the table sparse24_matmul reads on that GPU);
- <stem>-speedup.png, <stem>-e2e.png (bench/plot_sparse24.py) and <stem>-summary.md (targets,
  dispatcher and end-to-end tables: bench/sp24/targets.py), which book/sparse24.md includes;
- book/sparse24.md's result paths now name <stem>. Its prose about the run is for a person to review.

Existing results are never overwritten without --force; a second run of the same day takes a
letter after its date (``--date 2026-11-27b``). ``--regenerate`` rebuilds the figures and
the summary of an already committed result (after a change to the report code).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "lib"))

from plot_sparse24 import plot_e2e, plot_speedup  # noqa: E402
from sp24.targets import summary_markdown  # noqa: E402

from repro.kernels import dispatch  # noqa: E402

REQUIRED = ("gpu", "N", "K", "M", "method", "status", "us", "speedup_vs_cublas")
ARCHIVE = "gpu-check.tar.gz"  # bench/device_out.sh's ARCHIVE_NAME
EXTRAS = {
    "gpu-check.log": "-gpu-check.log",
    "pytest.log": "-pytest.log",
    "fast-launch.log": "-fast-launch.log",
    "cluster-tests.log": "-cluster-tests.log",
    "shared-x-tests.log": "-shared-x-tests.log",
    "shared-x-meet-tests.log": "-shared-x-meet-tests.log",
    "wide-tiles-tests.log": "-wide-tiles-tests.log",
    "cusparselt-tests.log": "-cusparselt-tests.log",
    "precompile.log": "-precompile.log",
    "spmma-probe.txt": "-spmma-probe.txt",
    "spmma-map.json": "-spmma-map.json",
    "wgmma-sparse-probe.txt": "-wgmma-sparse-probe.txt",
    "wgmma-sparse-map.json": "-wgmma-sparse-map.json",
    "fence-probe.txt": "-fence-probe.txt",
    "cluster-probe.txt": "-cluster-probe.txt",
    "nvidia-smi.txt": "-nvidia-smi.txt",
    "ablation.json": "-wgmma-ablation.json",
    "ablation.log": "-wgmma-ablation.log",
}
PAGE = ROOT / "book" / "sparse24.md"
RESULT_PATH = re.compile(r"bench/results/([a-z0-9.]+(?:-[a-z0-9.]+)*-\d{4}-\d{2}-\d{2}[a-z]?)(?=[-.])")


class IngestError(ValueError):
    pass


def load_records(path: Path) -> list[dict]:
    """The run's records, checked: a non-empty list, run info on the first, the issue's keys on all."""
    try:
        recs = json.loads(path.read_text())
    except FileNotFoundError:
        raise IngestError(f"{path} is missing: RUN_DIR must hold bench/sparse24.py's output") from None
    except json.JSONDecodeError as exc:
        raise IngestError(f"{path} is not valid JSON ({exc}); was the run cut off?") from None
    if not isinstance(recs, list) or not recs or "info" not in recs[0]:
        raise IngestError(f"{path}: expected a list of records whose first holds 'info' (a finished run)")
    for i, rec in enumerate(recs):
        missing = [key for key in REQUIRED if key not in rec]
        if missing:
            raise IngestError(f"{path}: record {i} ({rec.get('method')}) lacks {missing}; required: {REQUIRED}")
    if not any(r["method"] == "repro_dispatch" for r in recs):
        raise IngestError(f"{path}: no repro_dispatch records; the run stopped before the dispatcher part")
    return recs


@contextmanager
def unpacked(run: Path):
    """The run's files as a folder: ``run`` itself, or gpu_check.sh's archive (``run``, or
    ``run/gpu-check.tar.gz``) unpacked into a temporary folder that is removed afterwards."""
    archive = run / ARCHIVE if run.is_dir() else run
    if run.is_dir() and not archive.exists():
        yield run
        return
    if not archive.is_file():
        raise IngestError(f"{run} is neither a run's folder nor its archive ({ARCHIVE})")
    with tempfile.TemporaryDirectory(prefix="ingest-") as tmp:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                # "data": plain files and folders inside the destination only (no links, devices,
                # absolute paths or '..'), so an odd archive cannot write outside the folder
                tar.extractall(tmp, filter="data")
        except tarfile.FilterError as exc:
            raise IngestError(f"{archive}: refused to unpack {exc}; a run's archive holds plain files only") from None
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise IngestError(
                f"{archive} is not a whole gzip tar archive ({exc}); was the run cut off mid-pack?"
            ) from None
        yield Path(tmp)


def check_table(table: dict, arch: str, recs: list[dict]) -> None:
    """Every entry resolves through the dispatcher's lookup, and every measured shape has entries."""
    if table.get("arch") != arch or not isinstance(table.get("entries"), list):
        raise IngestError(
            f"dispatch table: expected arch {arch!r} and a list of entries, got arch {table.get('arch')!r}"
        )
    for entry in table["entries"]:
        if entry.get("method") not in dispatch.METHODS:
            raise IngestError(f"dispatch table entry {entry}: method must be one of {dispatch.METHODS}")
        dtype = getattr(torch, entry.get("dtype", "float16"))
        try:
            choice = dispatch._table_choice(table, entry["N"], entry["K"], entry["M"], dtype)
            fragments = dispatch._table_choice(table, entry["N"], entry["K"], entry["M"], dtype, "fragments")
        except (TypeError, KeyError) as exc:
            raise IngestError(f"dispatch table entry {entry}: {exc}") from None
        if choice is None or choice.method != entry["method"]:
            raise IngestError(f"dispatch table entry {entry} does not resolve to itself (got {choice})")
        if "fragments" in entry and fragments.method not in dispatch.LAYOUT_METHODS["fragments"]:
            raise IngestError(f"dispatch table entry {entry}: its fragments choice cannot read fragment order")
    shapes = {(r["N"], r["K"]) for r in recs if r["method"] == "cublas"}
    covered = {(e["N"], e["K"]) for e in table["entries"]}
    if shapes - covered:
        raise IngestError(f"dispatch table has no entries for measured shapes {sorted(shapes - covered)}")


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def regenerate(json_path: Path) -> list[Path]:
    """Figures and summary of one committed result, next to its JSON."""
    recs = json.loads(json_path.read_text())
    info = recs[0]["info"]
    stem = json_path.with_suffix("")
    outputs = [Path(f"{stem}-speedup.png"), Path(f"{stem}-e2e.png"), Path(f"{stem}-summary.md")]
    plot_speedup(recs, info, outputs[0])
    plot_e2e(recs, info, outputs[1])
    try:
        source = json_path.resolve().relative_to(ROOT).as_posix()
    except ValueError:  # a result outside the repository
        source = json_path.as_posix()
    write_atomic(outputs[2], summary_markdown(recs, source).encode())
    return [p for p in outputs if p.exists()]


def point_page_at(stem: str, page: Path = PAGE) -> int:
    """Make the page's result paths (figures, include, mentions) of the same GPU as ``stem`` name it;
    another GPU's stay (the page shows the newest run of each). Returns how many changed."""
    text = page.read_text()
    gpu = stem.split("-", 1)[0]

    def same_gpu(match: re.Match) -> bool:
        return match.group(1).split("-", 1)[0] == gpu

    new = RESULT_PATH.sub(lambda m: f"bench/results/{stem}" if same_gpu(m) else m.group(0), text)
    count = sum(map(same_gpu, RESULT_PATH.finditer(text)))
    if new != text:
        write_atomic(page, new.encode())
    return count


def ingest(
    run_dir: Path, date: str, force: bool, results: Path = BENCH / "results", kernels: Path = ROOT / "lib/repro/kernels"
) -> str:
    recs = load_records(run_dir / "sparse24.json")
    info = recs[0]["info"]
    if info.get("subset"):
        raise IngestError(
            f"{run_dir / 'sparse24.json'} times a subset of the cases ({info['subset']}): its dispatch table "
            "would replace the GPU's whole table with those entries. Keep it as "
            "bench/results/partial/<gpu>-<date>/sweep.json and run bench/summarize_partial.py on that folder"
        )
    table_path = run_dir / f"dispatch_{info['arch']}.json"
    if not table_path.exists():
        raise IngestError(f"{table_path} is missing: the run writes dispatch_<arch>.json next to sparse24.json")
    table = json.loads(table_path.read_text())
    check_table(table, info["arch"], recs)
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}[a-z]?", date):
        raise IngestError(f"--date must be YYYY-MM-DD, or that and a letter for a day's next run; got {date!r}")
    gpu = dispatch.gpu_key(info["gpu"])
    stem = f"{gpu}-{date}"
    if (results / f"{stem}.json").exists() and not force:
        raise IngestError(
            f"{results / stem}.json exists; pass --force to replace it, or name this run --date {date}b"
        )
    for name in ("sparse24.md", "sparse24.log"):
        if not (run_dir / name).exists():
            raise IngestError(f"{run_dir / name} is missing")

    results.mkdir(parents=True, exist_ok=True)
    for name, suffix in [("sparse24.md", ".md"), ("sparse24.log", ".log"), *EXTRAS.items()]:
        if (run_dir / name).exists():
            shutil.copyfile(run_dir / name, results / f"{stem}{suffix}")
    for profile in sorted(run_dir.glob("ncu*.txt")):  # Nsight Compute's reports, or why there are none
        shutil.copyfile(profile, results / f"{stem}-{profile.name}")
    write_atomic(results / f"{stem}.json", (run_dir / "sparse24.json").read_bytes())
    # one table per GPU: an H100 run must not replace what an H200 measured (dispatch.table_path)
    write_atomic(kernels / f"dispatch_{info['arch']}_{gpu}.json", table_path.read_bytes())
    return stem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, nargs="?", help="the device call's $OUT, or gpu-check.tar.gz in it")
    ap.add_argument("--date", default=dt.datetime.now(dt.timezone.utc).date().isoformat(),
                    help="YYYY-MM-DD (today, UTC, by default), with a letter for a day's next run: 2026-11-28d")
    ap.add_argument("--force", action="store_true", help="replace a result of the same GPU and date")
    ap.add_argument("--regenerate", type=Path, metavar="JSON", help="rebuild figures and summary of a committed result")
    args = ap.parse_args()
    try:
        if args.regenerate:
            json_path = args.regenerate.resolve()
        elif args.run_dir:
            with unpacked(args.run_dir) as run_dir:
                stem = ingest(run_dir, args.date, args.force)
            json_path = BENCH / "results" / f"{stem}.json"
            print(f"results: bench/results/{stem}.*; dispatch table: lib/repro/kernels/")
        else:
            ap.error("give RUN_DIR or --regenerate JSON")
        for path in regenerate(json_path):
            print(f"wrote {path.relative_to(ROOT)}")
        if not args.regenerate:
            count = point_page_at(json_path.stem)
            print(f"book/sparse24.md: {count} result paths now name {json_path.stem}; review its prose about the run")
    except IngestError as exc:
        sys.exit(f"ingest_sparse24: {exc}")


if __name__ == "__main__":
    main()
