"""python -m reports [--runs RUNS_ROOT] [--out OUT_DIR] [--preset P]"""

from __future__ import annotations

import argparse
import shlex
import sys


def main(argv=None) -> int:
    from reproduce.runs import default_root

    ap = argparse.ArgumentParser(
        prog="python -m reports",
        description="Build report.md, report.pdf and figures/*.png from run directories "
        "(no training code is loaded).",
    )
    ap.add_argument("--runs", default=None, help=f"runs root (default: $REPRODUCE_RUNS or {default_root()})")
    ap.add_argument("--out", default=None, help="output folder (default: <runs root>/report)")
    ap.add_argument("--preset", default=None, help="only this preset's section")
    args = ap.parse_args(argv)
    from reproduce.config import PRESETS

    if args.preset is not None and args.preset not in PRESETS:
        ap.error(f"unknown preset {args.preset!r}; choose one of: {', '.join(PRESETS)}")
    from reports.report import build_report

    argv = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "-m", "reports", *argv])
    rep = build_report(args.runs, args.out, args.preset, command=command)
    print(f"wrote {rep.markdown}")
    print(f"wrote {rep.pdf}")
    for f in rep.figures:
        print(f"wrote {f.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
