"""Command line: ``python -m reproduce {train,show,keys,presets,publish,bench,evaluate,predict,export}``.

Examples::

    python -m reproduce train --preset smoke
    python -m reproduce train --preset imagenette --set data.source=~/data/imagenette-144-webp.tar.xz
    python -m reproduce train --preset imagenette --set model.lrn=false train.epochs=3 --seed 1
    python -m reproduce show --preset cifar10 --set model.lrn=false
    python -m reproduce keys
    python -m reproduce evaluate runs/smoke/baseline-<fingerprint>/seed0
    python -m reproduce predict runs/smoke/baseline-<fingerprint>/seed0 photo.jpg
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from reproduce import config as config_lib
from reproduce import runs
from reproduce.logs import BackendError, check_backend, quiet_tensorflow
from reproduce.sources import DataError

EPILOG = textwrap.dedent(
    """\
    Presets are named diffs of the paper's configuration (see `presets`). Overrides
    are dotted keys checked against the configuration tree, e.g.
        --set model.lrn=false train.epochs=3 data.source=path/to/imagenette.tar.xz
    An unknown key fails and names the closest valid keys (`keys` lists them all).

    Results go to a run directory, by default
        $REPRODUCE_RUNS (or ./runs)/<preset>/<label>-<config fingerprint>/seed<seed>/
    holding config.json, env.json, metrics.csv, checkpoints (state/), TensorBoard
    logs and, once finished, result.json. Running the same command again resumes an
    interrupted run and skips a finished one.
    """
)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=config_lib.DEFAULT_PRESET, help="one of: " + ", ".join(config_lib.PRESETS))
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="dotted overrides, e.g. model.lrn=false train.epochs=3",
    )
    p.add_argument("--seed", type=int, default=None, help="shorthand for train.seed")


def resolve(args) -> config_lib.Config:
    overrides = list(args.overrides or [])
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    return config_lib.get_config(args.preset, overrides)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["train"], ["bench"]) and "-h" not in argv and "--help" not in argv:
        try:
            check_backend()
        except BackendError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        quiet_tensorflow()
    parser = argparse.ArgumentParser(
        prog="python -m reproduce",
        description="AlexNet (Krizhevsky, Sutskever & Hinton 2012) in Keras 3: train, resume, inspect.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser(
        "train",
        help="train one run (resumes or skips as needed)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_args(p)
    p.add_argument("--runs", default=None, help="runs root (default $REPRODUCE_RUNS or ./runs)")
    p.add_argument("--label", default="baseline", help="run label (baseline or an ablation name)")
    p.add_argument("--run-dir", default=None, help="explicit run directory (overrides --runs/--label)")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("show", help="print the resolved configuration")
    _add_config_args(p)
    p.add_argument("--diff", action="store_true", help="only keys that differ from the paper")

    p = sub.add_parser("publish", help="copy finished runs' small files into a results store")
    p.add_argument("--runs", default=None, help="runs root (default $REPRODUCE_RUNS or ./runs)")
    p.add_argument("--to", default="results", help="the store (default: results)")

    sub.add_parser("keys", help="list every configuration key with its default")
    sub.add_parser("presets", help="describe the presets")

    # The bench parses its own options (`bench --help` lists them): they are what
    # this parser leaves over.
    sub.add_parser("bench", add_help=False, help="training throughput benchmark (see reproduce.bench)")

    # A finished run's model.keras (see reproduce.inference).
    p = sub.add_parser(
        "evaluate", help="a finished run's validation error (centre crop, ten views) again, from its model.keras"
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    p.add_argument(
        "--data",
        default=None,
        metavar="SOURCE",
        help="another data.source with the run's classes (default: the run's own)",
    )
    p = sub.add_parser("predict", help="the most probable classes of image files, from a finished run's model.keras")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG, PNG or WebP files, any size")
    p.add_argument("--top", type=int, default=5, help="classes per image (default 5)")
    p = sub.add_parser(
        "export",
        help="write a finished run's model.keras from its training state if it has none; --savedmodel: a TF SavedModel",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    p.add_argument(
        "--savedmodel",
        default=None,
        metavar="DIR",
        help="also export a TensorFlow SavedModel (Keras' model.export) into DIR",
    )
    p.add_argument("--force", action="store_true", help="replace a SavedModel (any files) already in DIR")

    args, rest = parser.parse_known_args(argv)
    if args.cmd == "bench":
        from reproduce import bench

        return bench.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return _dispatch(args)
    except config_lib.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    if args.cmd == "keys":
        for k, v in config_lib.flatten(config_lib.Config().to_dict()).items():
            allowed = config_lib.ALLOWED.get(k)
            print(f"{k} = {v!r}" + (f"   # one of {allowed}" if allowed else ""))
        return 0
    if args.cmd == "presets":
        for name, p in config_lib.PRESETS.items():
            print(f"== {name}\n{p.doc}\n  diff: {json.dumps(p.overrides)}\n")
        return 0
    if args.cmd == "publish":
        src = Path(args.runs) if args.runs else runs.default_root()
        if not src.is_dir():
            print(f"error: no runs folder {src} (set RUNS= to where the runs are)", file=sys.stderr)
            return 2
        try:
            res = runs.publish(src, args.to)
        except runs.RunDirError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for d in res.removed:
            print(f"  removed {d}: left half-copied by a publish that was stopped")
        print(
            f"published {len(res.copied)} run(s) from {src} into {args.to}; "
            f"{len(res.unchanged)} already there; {len(res.skipped)} not publishable"
        )
        for d, why in res.kept:
            print(f"  kept {d}: {why}")
        for d, why in res.skipped:
            print(f"  skipped {d}: {why}")
        return 0
    if args.cmd in ("evaluate", "predict", "export"):
        quiet_tensorflow()
        from reproduce import inference

        return inference.command(args)
    cfg = resolve(args)
    if args.cmd == "show":
        if args.diff:
            for k, (a, b) in config_lib.diff(config_lib.Config(), cfg).items():
                print(f"{k} = {b!r}   (paper: {a!r})")
        else:
            print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    if args.cmd == "train":
        from reproduce import train as train_lib
        from reproduce.devices import resolved_config

        root = args.runs or runs.default_root()
        meta = {
            "preset": args.preset,
            "label": args.label,
            "overrides": list(args.overrides or []),
            "command": "python -m reproduce " + " ".join(sys.argv[1:]),
        }
        try:
            # The fingerprint lists a local dataset's files: a DataError names a bad one.
            # "auto" precision as it resolves here, as the trainer records it.
            run_dir = args.run_dir or runs.run_dir(
                root, args.preset, args.label, resolved_config(cfg).fingerprint(), cfg.train.seed
            )
            train_lib.train(cfg, run_dir, meta=meta, verbose=0 if args.quiet else 1)
        except (train_lib.TrainingDiverged, runs.RunDirError, DataError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(run_dir)
        return 0
    raise AssertionError(args.cmd)


if __name__ == "__main__":
    sys.exit(main())
