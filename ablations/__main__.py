"""``python -m ablations {list,run,reproduce}``: the paper's claims, measured.

    python -m ablations list [--preset imagenette]
    python -m ablations run no_lrn --preset smoke --seeds 2
    python -m ablations reproduce --preset imagenette --seeds 3

Then ``python -m reports`` builds the report from the run directories.
"""

from __future__ import annotations

import argparse
import sys

from ablations.registry import ABLATIONS, for_preset
from ablations.runner import Runner


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ablations", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="list ablations with their claims")
    ls.add_argument("--preset", default=None)
    for name in ("run", "reproduce"):
        q = sub.add_parser(name, help="run named ablations" if name == "run" else
                           "run the baseline and every ablation of the preset")
        if name == "run":
            q.add_argument("names", nargs="+", help="ablation names (see `list`)")
        q.add_argument("--preset", default="imagenette")
        q.add_argument("--seeds", default="3", help="a count (3 = seeds 0,1,2) or a list 0,5,9")
        q.add_argument("--runs", default=None, help="runs root (default $REPRODUCE_RUNS or ./runs)")
        q.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                       help="overrides applied to every arm, e.g. data.source=PATH")
        q.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    if args.cmd == "list":
        abls = for_preset(args.preset) if args.preset else list(ABLATIONS.values())
        for a in abls:
            c = a.claim(args.preset or "*")
            print(f"{a.name:18s} {a.description}\n{'':18s} {c.section}: {c.text}\n"
                  f"{'':18s} presets: {', '.join(a.presets)}\n")
        return 0

    from reproduce.config import ConfigError
    from reproduce.data import DataError

    try:
        runner = Runner(args.preset, args.seeds, args.runs, args.overrides,
                        verbose=0 if args.quiet else 1)
        plan = runner.run(args.names) if args.cmd == "run" else runner.run_all()
    except (ValueError, ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[ablations] trained {runner.trained} run(s); {len(plan.done)} already finished; "
          f"{len(plan.failed)} failed")
    for d, msg in plan.failed:
        print(f"  FAILED {d}: {msg}", file=sys.stderr)
    return 1 if plan.failed else 0


if __name__ == "__main__":
    sys.exit(main())
