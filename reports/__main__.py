"""python -m reports [--runs RUNS_ROOT] [--out OUT_DIR] [--preset P] [--readme README.md]"""

from __future__ import annotations

import argparse
import shlex
import sys

from reports.readme import update_readme
from reports.report import ReportError, build_report
from reproduce.config import PRESETS
from reproduce.runs import default_root


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m reports",
        description="Build report.md, report.pdf, figures/*.png, runs.csv and claims.csv from run directories "
        "(no training code is loaded).",
    )
    ap.add_argument("--runs", default=None, help=f"runs root (default: $REPRODUCE_RUNS or {default_root()})")
    ap.add_argument("--out", default=None, help="output folder, replaced as a whole (default: <runs root>/report)")
    ap.add_argument("--preset", default=None, help="only this preset's section")
    ap.add_argument(
        "--readme",
        default=None,
        metavar="README.md",
        help="also write the summary table into this file's results block",
    )
    args = ap.parse_args(argv)
    if args.preset is not None and args.preset not in PRESETS:
        ap.error(f"unknown preset {args.preset!r}; choose one of: {', '.join(PRESETS)}")
    argv = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "-m", "reports", *argv])
    try:
        rep = build_report(args.runs, args.out, args.preset, command=command)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for e in rep.damaged:
        print(f"skipped a damaged run: {e.path}: {e.problem}", file=sys.stderr)
    for path in (rep.markdown, rep.pdf, rep.runs_csv, rep.claims_csv, *(f.path for f in rep.figures)):
        print(f"wrote {path}")
    if args.readme:
        import os
        from pathlib import Path

        link = os.path.relpath(rep.out_dir, Path(args.readme).resolve().parent)
        if not update_readme(Path(args.readme), rep, link):
            print(f"error: {args.readme} has no results block to write into", file=sys.stderr)
            return 2
        print(f"wrote the results block of {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
