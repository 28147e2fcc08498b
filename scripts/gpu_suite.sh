#!/usr/bin/env bash
# The Imagenette ablation suite (baseline + every trained ablation x SEEDS seeds) on
# a machine with one GPU, timed: how much of the whole suite fits in BUDGET seconds
# (default 9 minutes), and the run directories for the report.
#
# What it does: decodes the data once; then WORKERS processes share the one GPU
# (each gets 0.9/WORKERS of its memory), each training its share of the runs through
# reproduce.train.train (the trainer as it is), seed-major so every configuration
# compiles first in the first wave and its later seeds load the compiled programs
# from the shared persistent JAX compilation cache. Runs land where
# `python -m ablations reproduce` expects them (same labels and fingerprints), so
# that command (and the report) picks them up; an unfinished run resumes later.
#
# Setup as for scripts/gpu_bench.sh (JAX with CUDA, the Imagenette archive in data/).
# Run:   OUT=/tmp/out bash scripts/gpu_suite.sh
# Options (environment): BUDGET seconds (default 540; no run starts after it, and
# the workers are stopped 40 s later), WORKERS (4), SEEDS (3), PRESET (imagenette),
# EPOCHS (override train.epochs: a quick calibration, other run directories),
# ONLY (space-separated ablation names), DATA (the archive), RUNS (run root).
# On a CPU, to try it: OUT=/tmp/out SMALL=1 PYTHON=.venv/bin/python bash scripts/gpu_suite.sh
# Writes $OUT/suite.json (per run: label, seed, seconds, status, images/s) and
# $OUT/suite_log.txt; prints the summary last, with an estimate of the full suite.
set -uo pipefail
cd "$(dirname "$0")/.."

source scripts/gpu_env.sh
if [ "$SMALL" = 1 ]; then
  : "${PRESET:=smoke}" "${SEEDS:=1}" "${WORKERS:=2}" "${ONLY:=no_lrn}" "${BUDGET:=600}"
  DATA=${DATA:-none}
fi
BUDGET=${BUDGET:-540}
WORKERS=${WORKERS:-4}
SEEDS=${SEEDS:-3}
PRESET=${PRESET:-imagenette}
EPOCHS=${EPOCHS:-}
ONLY=${ONLY:-}
DATA=${DATA:-data/imagenette-144-webp.tar.xz}
export REPRODUCE_RUNS=${RUNS:-/tmp/runs}
export XLA_PYTHON_CLIENT_MEM_FRACTION=$(awk "BEGIN {printf \"%.3f\", 0.9 / $WORKERS}")
if [ "$DATA" != none ] && [ -e "$DATA" ]; then DATA=$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA"); else DATA=""; fi

export BUDGET WORKERS SEEDS PRESET EPOCHS ONLY DATA

exec > >(tee -a "$OUT/suite_log.txt") 2>&1
echo "== gpu_suite.sh $(date -u +%FT%TZ) preset=$PRESET seeds=$SEEDS workers=$WORKERS budget=${BUDGET}s data=${DATA:-preset default}"
# The driver is a file: the spawned workers import it.
cat > "$OUT/suite_driver.py" <<'EOF'
import json, multiprocessing as mp, os, sys, time
from pathlib import Path

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
T0 = time.time()
BUDGET = float(os.environ.get("BUDGET", "540"))
preset = os.environ.get("PRESET", "imagenette")
extra = []
if os.environ.get("DATA"):
    extra.append(f"data.source={os.environ['DATA']}")
if os.environ.get("EPOCHS"):
    extra.append(f"train.epochs={int(os.environ['EPOCHS'])}")

from ablations.registry import for_preset
from ablations.runner import Runner
from reproduce import runs


def make_jobs():
    runner = Runner(preset, os.environ.get("SEEDS", "3"), overrides=extra, verbose=0,
                    command="scripts/gpu_suite.sh")
    only = set(os.environ.get("ONLY", "").split())
    arms = [("baseline", runner.baseline_config())]
    for ab in for_preset(preset):
        if ab.kind != "paired" or (only and ab.name not in only):
            continue
        arms.append((ab.base_label, runner.baseline_config(ab)))
        arms.append((ab.name, runner.variant_config(ab)))
    jobs, seen = [], set()
    for seed in runner.seeds:  # seed-major: each configuration compiles in the first wave
        for label, cfg in arms:
            c = cfg.copy()
            c.train.seed = seed
            d = runs.run_dir(runner.root, preset, label, c.fingerprint(), seed)
            if str(d) not in seen:
                seen.add(str(d))
                jobs.append((label, seed, c.to_dict(), str(d)))
    print(f"[suite] {len(jobs)} runs ({len(arms)} arms incl. duplicates of the baseline), "
          f"{sum(runs.is_finished(j[3]) for j in jobs)} already finished", flush=True)

    # Decode the data once, before the workers (they would race on the cache).
    t = time.time()
    from reproduce.data import load
    data = load(arms[0][1].data)
    n_train = len(data.train)
    print(f"[suite] data ready in {time.time() - t:.1f}s: {n_train} train, {len(data.val)} val images", flush=True)
    return jobs


def work(job):
    label, seed, cfg_dict, run_dir = job
    import keras
    from reproduce import train as train_lib
    from reproduce.config import Config

    cfg = Config.from_dict(cfg_dict)
    t0 = time.time()
    status, result = "ok", {}
    try:
        if runs.is_finished(run_dir):
            status = "skipped"
        else:
            keras.backend.clear_session()
            result = train_lib.train(cfg, run_dir, verbose=0, meta={
                "preset": preset, "label": label, "overrides": extra,
                "command": "scripts/gpu_suite.sh"})
    except Exception as e:  # recorded; the other runs go ahead
        status = f"{type(e).__name__}: {e}"[:500]
    rows = runs.read_metrics_rows(run_dir) if Path(run_dir, runs.METRICS).exists() else []
    return {"label": label, "seed": seed, "run_dir": run_dir, "status": status,
            "seconds": round(time.time() - t0, 1), "pid": os.getpid(),
            "epochs": len(rows), "epochs_planned": cfg.train.epochs,
            "first_epoch_s": rows[0].get("epoch_time_s") if rows else None,
            "later_epoch_s": (sum(r.get("epoch_time_s") or 0 for r in rows[1:]) / (len(rows) - 1)
                              if len(rows) > 1 else None),
            "images_per_s": result.get("images_per_s"), "wall_time_s": result.get("wall_time_s")}


def main():
    jobs = make_jobs()
    workers = int(os.environ.get("WORKERS", "4"))
    done = []

    def save():
        (OUT / "suite.json").write_text(json.dumps(
            {"preset": preset, "overrides": extra, "workers": workers,
             "elapsed_s": round(time.time() - T0, 1), "n_jobs": len(jobs), "runs": done}, indent=1))

    pool = mp.get_context("spawn").Pool(workers)
    # Everything is queued; a worker takes the next run when it is free. Past the
    # budget, stop waiting and terminate (unfinished runs resume next time).
    pending = [pool.apply_async(work, (j,)) for j in jobs]
    for p in pending:
        left = BUDGET + 40 - (time.time() - T0)
        if left <= 0:
            break
        try:
            r = p.get(timeout=left)
        except mp.TimeoutError:
            break
        done.append(r)
        save()
        later = r["later_epoch_s"]
        print(f"[suite] {r['label']:<24} seed {r['seed']}  {r['status'][:40]:<8} {r['seconds']:7.1f}s "
              f"epochs {r['epochs']}/{r['epochs_planned']}  first epoch {r['first_epoch_s']}s  "
              f"later {later and round(later, 2)}s", flush=True)
    pool.terminate()
    save()
    elapsed = time.time() - T0
    ok = [r for r in done if r["status"] == "ok"]
    print(f"\n[suite] {len(ok)} of {len(jobs)} runs trained in {elapsed:.0f}s with {workers} "
          f"workers ({len(done) - len(ok)} skipped or failed)")
    if ok:
        per_run = sum(r["seconds"] for r in ok) / len(ok)
        print(f"[suite] mean {per_run:.0f}s per run on one worker; the whole suite at this "
              f"rate: ~{per_run * len(jobs) / workers:.0f}s with {workers} workers")


if __name__ == "__main__":
    main()
EOF
timeout -k 10 $(( BUDGET + 60 )) $PY "$OUT/suite_driver.py" "$OUT" || echo "!! the driver exited with $?"
echo "== gpu_suite.sh done ($(date -u +%FT%TZ))"
