"""Pilot for the CPU-sized Imagenette tier: a few budgets of the `imagenette` preset,
one seed each, measured on this machine; prints a table to choose from.

    python experiments/imagenette_cpu_pilot.py --data ../shared/data/imagenette-144-webp.tar.xz \
        --runs pilot_runs [--only w050_e16 ...] [--backends]

Every candidate keeps the paper's layer structure, both towers, LRN, 128-px crops
of the 144-px images; it changes only width, epochs, schedule and batch size. The
projected suite cost is the run's wall time times the runs a suite trains (the
baseline and every trained ablation of the preset, 3 seeds each). `--backends`
also times the training step of each candidate's net under TensorFlow and JAX
(subprocesses, the same calibration the suite plan uses).

Uses only public APIs: reproduce.config, reproduce.train.train, reproduce.runs,
ablations.registry, ablations.plan.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ablations.registry import for_preset  # noqa: E402
from reproduce import runs  # noqa: E402
from reproduce.config import CPU_EXECUTION, get_config  # noqa: E402

CANDIDATES = {
    # name: overrides of the imagenette preset. Sized from step rates measured on
    # this 2-core CPU (TensorFlow, batch 128: width 0.5 ~95 img/s, 0.375 ~140,
    # 0.25 ~175), so that a run, with its per-epoch validation and final ten-view
    # evaluation, costs about 10 minutes: the budget of a 30-run suite in 5 hours.
    # Batch 64 doubles the updates of a short budget (the N(0, 0.01) start sits on
    # a plateau for the first few hundred steps).
    "w025_e8": {"model.width": 0.25, "train.epochs": 8, "train.step_epochs": [6, 7]},
    "w025_e8_b64": {"model.width": 0.25, "train.epochs": 8, "train.batch_size": 64, "train.step_epochs": [6, 7]},
    "w0375_e6_b64": {"model.width": 0.375, "train.epochs": 6, "train.batch_size": 64, "train.step_epochs": [4, 5]},
    "w050_e4_b64": {"model.width": 0.5, "train.epochs": 4, "train.batch_size": 64, "train.step_epochs": [3]},
    # The four above were measured before the trainer compiled with XLA on a CPU
    # (it now trains ~1.9x faster there); the best of them, half width, with the
    # time that XLA saves spent on two more epochs (chosen: experiments/README.md):
    "w050_e6_b64": {"model.width": 0.5, "train.epochs": 6, "train.batch_size": 64, "train.step_epochs": [5]},
    # A longer tier, for the claims about overfitting (dropout, crops and flips,
    # PCA colour): the baseline must reach <= 40% validation error with a clean
    # train/validation gap of >= 5 points. Half width at batch 64 as above, with
    # lr / 10 at about 70% and 90% of the budget.
    "w050_e16_b64": {"model.width": 0.5, "train.epochs": 16, "train.batch_size": 64, "train.step_epochs": [11, 14]},
    "w050_e20_b64": {"model.width": 0.5, "train.epochs": 20, "train.batch_size": 64, "train.step_epochs": [14, 18]},
    "w050_e24_b64": {"model.width": 0.5, "train.epochs": 24, "train.batch_size": 64, "train.step_epochs": [17, 21]},
}


def suite_runs(preset: str = "imagenette", seeds: int = 3) -> int:
    trained = [a for a in for_preset(preset) if a.kind == "paired"]
    return (1 + len(trained)) * seeds


def candidate_config(name: str, data: str):
    # How a CPU tier runs (the imagenette preset's settings are a GPU's), so the
    # chosen candidate stays the imagenette-cpu-long baseline's configuration.
    over = {**CPU_EXECUTION, **CANDIDATES[name]}
    over["data.source"] = os.path.abspath(data)
    return get_config("imagenette", over)


def train_candidate(name: str, data: str, root: Path) -> dict:
    from reproduce.train import train

    cfg = candidate_config(name, data)
    d = runs.run_dir(root, "imagenette", f"pilot-{name}", cfg.fingerprint(), cfg.train.seed)
    res = train(
        cfg, d, meta={"preset": "imagenette", "label": f"pilot-{name}", "command": " ".join(sys.argv)}, verbose=1
    )
    return {"name": name, "dir": str(d), **res}


def time_backends(name: str, data: str) -> dict:
    root = str(Path(__file__).resolve().parent.parent)
    code = (
        f"import json,sys; sys.path.insert(0, {root!r})\n"
        "from experiments.imagenette_cpu_pilot import candidate_config\n"
        "from ablations.plan import calibrate\n"
        "from reproduce import data as D\n"
        f"cfg = candidate_config({name!r}, {data!r})\n"
        "ips, fixed, per_epoch, save = calibrate(cfg, D.load(cfg.data), steps=8)\n"
        "print(json.dumps({'ips': ips, 'fixed_s': fixed, 'per_epoch_s': per_epoch, 'save_s': save}))\n"
    )
    out = {}
    for backend in ("tensorflow", "jax"):
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        line = (p.stdout.strip().splitlines() or ["{}"])[-1]
        out[backend] = json.loads(line) if p.returncode == 0 else {"error": p.stderr[-500:]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", default="pilot_runs")
    ap.add_argument("--only", nargs="*", default=None, choices=sorted(CANDIDATES))
    ap.add_argument("--backends", action="store_true", help="time TF vs JAX steps too")
    ap.add_argument("--no-train", action="store_true", help="only the backend timing")
    args = ap.parse_args(argv)
    names = args.only or list(CANDIDATES)
    rows = []
    for name in names:
        row = {"name": name}
        if not args.no_train:
            row.update(train_candidate(name, args.data, Path(args.runs)))
        if args.backends:
            row["backends"] = time_backends(name, args.data)
        rows.append(row)
        print(json.dumps(row, default=str), flush=True)
    n = suite_runs()
    print(f"\nsuite = {n} trained runs (baseline + trained ablations, 3 seeds)")
    print(
        f"{'candidate':14s} {'wall s':>7s} {'img/s':>6s} {'val top1':>8s} {'10-view':>7s} "
        f"{'train clean':>11s} {'gap':>5s} {'suite h':>7s}  TF/JAX step img/s"
    )
    for r in rows:
        b = r.get("backends", {})
        tfj = " / ".join(f"{b[k].get('ips', float('nan')):.0f}" for k in ("tensorflow", "jax") if k in b)
        if "wall_time_s" in r:
            gap = r["val_top1_err"] - r["train_top1_err_clean"]
            print(
                f"{r['name']:14s} {r['wall_time_s']:7.0f} {r['images_per_s']:6.0f} "
                f"{100 * r['val_top1_err']:7.1f}% {100 * (r['val_top1_err_10view'] or 0):6.1f}% "
                f"{100 * r['train_top1_err_clean']:10.1f}% {100 * gap:4.1f} "
                f"{r['wall_time_s'] * n / 3600:7.2f}  {tfj}"
            )
        else:
            print(f"{r['name']:14s} {'':>58s}  {tfj}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
