"""python -m reports [--runs RUNS_ROOT] [--out OUT_DIR] [--preset P]"""

from __future__ import annotations

import argparse
import shlex
import sys


def main(argv=None) -> int:
    from reproduce.runs import default_root

    ap = argparse.ArgumentParser(
        prog="python -m reports",
        description="Build report.md, report.pdf, figures/*.png, runs.csv and claims.csv from run directories "
        "(no training code is loaded).",
    )
    ap.add_argument("--runs", default=None, help=f"runs root (default: $REPRODUCE_RUNS or {default_root()})")
    ap.add_argument("--out", default=None, help="output folder, replaced as a whole (default: <runs root>/report)")
    ap.add_argument("--preset", default=None, help="only this preset's section")
    args = ap.parse_args(argv)
    from reproduce.config import PRESETS

    if args.preset is not None and args.preset not in PRESETS:
        ap.error(f"unknown preset {args.preset!r}; choose one of: {', '.join(PRESETS)}")
    from reports.report import ReportError, build_report

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
