"""``python -m ablations {list,plan,run,reproduce}``: the paper's claims, measured.

    python -m ablations list [--preset imagenette]
    python -m ablations plan --preset imagenette-cpu --seeds 3     # what would run, and how long
    python -m ablations run no_lrn --preset smoke --seeds 2
    python -m ablations reproduce --preset imagenette --seeds 3

`run` and `reproduce` print the plan (runs to train, runs already finished here or
published in results/, the estimated time on this machine) before training, and a
progress line before each run. Then ``python -m reports`` builds the report.

Several workers share one runs folder (docs/distributed.md):

    python -m ablations reproduce --preset imagenette --workers 4     # one per GPU here
    python -m ablations reproduce --preset imagenette --worker 2/8    # one of 8, anywhere
"""

from __future__ import annotations

import argparse
import sys

from ablations.plan import fill_estimates, print_plan
from ablations.registry import ABLATIONS, for_preset
from ablations.runner import Runner, default_published, parse_worker
from reproduce import runs
from reproduce.config import DEFAULT_PRESET, ConfigError, default_seeds
from reproduce.logs import BackendError, check_backend, quiet_tensorflow
from reproduce.sources import DataError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ablations", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="list ablations with their claims")
    ls.add_argument("--preset", default=None)
    for name, text in (
        ("plan", "print what `run`/`reproduce` would train and its estimated time"),
        ("run", "run named ablations"),
        ("reproduce", "run the baseline and every ablation of the preset"),
    ):
        q = sub.add_parser(name, help=text)
        if name != "reproduce":
            q.add_argument(
                "names",
                nargs="*" if name == "plan" else "+",
                help="ablation names (see `list`)" + ("; none: the whole preset" if name == "plan" else ""),
            )
        q.add_argument("--preset", default=DEFAULT_PRESET)
        q.add_argument(
            "--seeds",
            default=None,
            help="a count (3 = seeds 0,1,2) or a list 0,5,9; default: the preset's "
            "(3; the smoke preset, which checks code paths, 2)",
        )
        q.add_argument("--runs", default=None, help="runs root (default $REPRODUCE_RUNS or ./runs)")
        q.add_argument(
            "--published",
            action="append",
            default=None,
            metavar="DIR",
            help="a store of published runs that count as finished (repeatable; "
            "default $REPRODUCE_PUBLISHED or this checkout's results/)",
        )
        q.add_argument(
            "--set",
            dest="overrides",
            nargs="*",
            default=[],
            metavar="KEY=VALUE",
            help="overrides applied to every arm, e.g. data.source=PATH",
        )
        q.add_argument("--quiet", action="store_true")
        if name != "plan":
            q.add_argument(
                "--worker",
                default=None,
                metavar="I/N",
                help="be worker I of N sharing the runs folder: take the runs "
                "no other process holds (see docs/distributed.md)",
            )
            q.add_argument(
                "--workers",
                type=int,
                default=1,
                metavar="N",
                help="start N workers here, one per visible GPU, and wait for them",
            )
    args = p.parse_args(argv)

    if args.cmd == "list":
        abls = for_preset(args.preset) if args.preset else list(ABLATIONS.values())
        for a in abls:
            c = a.claim(args.preset or "*")
            print(
                f"{a.name:18s} {a.description}\n{'':18s} {c.section}: {c.text}\n"
                f"{'':18s} presets: {', '.join(a.presets)}\n"
            )
        return 0

    try:
        check_backend()
    except BackendError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if getattr(args, "workers", 1) != 1:
        from ablations.workers import launch

        try:
            if args.workers < 1 or args.worker:
                raise ValueError("--workers takes a count of 1 or more, and no --worker")
            return launch(list(sys.argv[1:] if argv is None else argv), args.workers)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    quiet_tensorflow()

    published = args.published if args.published is not None else default_published()
    try:
        worker = parse_worker(args.worker) if getattr(args, "worker", None) else None
        seeds = args.seeds if args.seeds is not None else default_seeds(args.preset)
        runner = Runner(
            args.preset,
            seeds,
            args.runs,
            args.overrides,
            verbose=0 if args.quiet else 1,
            published=published,
            worker=worker,
        )
        if args.cmd == "plan":
            from reproduce import data as data_lib
            from reproduce.train import device_description

            plan = runner.plan(args.names or None)
            device = device_description()
            fill_estimates(plan, [runner.root, *runner.published], args.preset, load_data=data_lib.load, device=device)
            print_plan(plan, args.preset, device)
            return 0
        plan = runner.run(args.names) if args.cmd == "run" else runner.run_all()
    except (ValueError, ConfigError, DataError, runs.RunDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"[ablations] trained {runner.trained} run(s); {len(plan.done)} already finished"
        + (f", {len(plan.published)} published" if plan.published else "")
        + (f"; {len(runner.held)} left to the other processes that hold them" if runner.held else "")
        + f"; {len(runner.failed)} failed"
    )
    for d, msg in runner.failed:
        print(f"  FAILED {d}: {msg}", file=sys.stderr)
    return 1 if runner.failed else 0


if __name__ == "__main__":
    sys.exit(main())
