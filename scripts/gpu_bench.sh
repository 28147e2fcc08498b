#!/usr/bin/env bash
# The prepared GPU benchmark, for a machine with one GPU and JAX with CUDA (written
# for an H200; TensorFlow not needed): the project's bench and the prototypes of
# experiments/perf/ (python -m experiments.perf).
#
# Setup: the project's environment with the JAX GPU build (README, "GPU install"),
# and the Imagenette archive at data/imagenette-144-webp.tar.xz (or DATA=path/to/it).
# A machine without internet access can install wheels downloaded elsewhere:
#   pip download --no-deps --only-binary=:all: -d wheels keras==3.15.1 namex==0.1.0 optree==0.20.0
#   pip install --no-index --no-deps wheels/*.whl        (on the GPU machine)
# Run:   OUT=/tmp/out bash scripts/gpu_bench.sh
# On a CPU, to try it (seconds per row, tiny sizes):
#   OUT=/tmp/out SMALL=1 PYTHON=.venv/bin/python bash scripts/gpu_bench.sh
#
# Writes under $OUT: bench.json (every row; the table the report includes),
# bench_xla.json (the XLA-flag and warm-cache rows), log.txt, nvidia-smi.txt. Prints
# the table last. Rows are written as they finish, so a kill keeps what was done.
# BUDGET (seconds, default 480) caps the whole script; the jobs of the plan run in
# priority order and the ones that do not fit are skipped.
# experiments/perf/perf_log.md lists what each row tests and its predicted figure.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_env.sh
BUDGET=${BUDGET:-480}
DATA=${DATA:-data/imagenette-144-webp.tar.xz}
T0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }

exec > >(tee -a "$OUT/log.txt") 2>&1
echo "== gpu_bench.sh $(date -u +%FT%TZ) budget ${BUDGET}s small=${SMALL}"
(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv \
  && nvidia-smi) > "$OUT/nvidia-smi.txt" 2>&1 || echo "(no nvidia-smi)"
$PY - <<'PY' || { echo "!! the environment is not usable (see above)"; exit 1; }
import sys, importlib.util
import jax, keras
print("python", sys.version.split()[0], "jax", jax.__version__, "keras", keras.__version__,
      "backend", keras.backend.backend(), "devices", jax.devices())
print("tensorflow installed:", importlib.util.find_spec("tensorflow") is not None)
PY

FORCE=()
[ "$SMALL" = 1 ] && FORCE=(--small --batch 8 --steps 2 --warmup 1 --repeats 1)
if [ -e "$DATA" ]; then DATA=$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA"); else
  echo "(no $DATA: the e2e rows are skipped)"; DATA=""; fi

# The plan, in priority order (bf16 unless said; "project" = the project's net as is;
# the J labels are perf_log.md's).
PLAN=$OUT/plan.json
$PY - "$PLAN" "$DATA" "$SMALL" <<'PY'
import json, sys

plan, data, small = sys.argv[1], sys.argv[2], sys.argv[3] == "1"


def job(label, paths, batches, precision="mixed_bfloat16", **kw):
    return {"label": label, "paths": paths, "batches": batches, "precisions": [precision], **kw}


def imagenette(batch):  # J6: real data end to end
    subset = ["data.max_train=256", "data.max_val=32"] if small else []
    return [job("J6", ["fit", "e2e", "resident", "e2e-resident"], [batch], preset="imagenette",
                data=data, overrides=subset)] if data else []


combos = ["towers=blockdiag+lrn=vjp+conv1=s2d", "towers=grouped", "towers=grouped+lrn=vjp+conv1=s2d"]
jobs = [
    job("J1", ["step"], [512, 128]),
    job("J2", ["fit"], [512, 128]),
    job("J4", ["step"], [512], variants=["lrn=vjp", "conv1=s2d", "towers=blockdiag"]),
    job("J4 no_lrn", ["step"], [512], overrides=["model.lrn=false"]),
    job("J3", ["resident"], [512, 128]),
    job("J5", ["fit"], [512, 128], callbacks="none", steps_per_execution=[8]),
    *imagenette(128),
    job("J8", ["step"], [512, 128], precision="float32"),
    job("J7", ["step"], [512], variants=combos + ["no_augment", "scan=8", "lrn=bf16", "towers=dense"]),
    job("J7", ["step"], [128], variants=[combos[0], "scan=8", "scan=4+unroll=4"]),
    job("J3", ["resident"], [512], variants=["scan=1"]),
    *imagenette(512),
    job("J8", ["fit"], [512, 128], precision="float32"),
]
json.dump(jobs, open(plan, "w"), indent=1)
PY

PLAN_S=$(( $(left) - 130 ))
[ "$PLAN_S" -lt 60 ] && PLAN_S=60
echo "== plan: ${PLAN_S}s"
timeout -k 10 $(( PLAN_S + 90 )) $PY -m experiments.perf --plan "$PLAN" --out "$OUT/bench.json" \
  --time-budget "$PLAN_S" --measure-peak "${FORCE[@]}" || echo "!! plan exited with $?"

# Each in its own process: XLA flags are read when the backend starts. The first
# reuses the plan's compilation cache (compile_s = a warm start).
extra() {  # label, XLA_FLAGS, seconds
  local s=$(( $(left) )); [ "$s" -gt "$3" ] && s=$3
  if [ "$s" -lt 25 ]; then echo "== skip $1: budget spent"; return; fi
  echo "== $1 (${s}s) XLA_FLAGS='$2'"
  XLA_FLAGS="$2" timeout -k 5 "$s" $PY -m reproduce bench --paths step --precision mixed_bfloat16 \
    --batch 512 --label "$1" --out "$OUT/bench_xla.json" --append --quiet "${FORCE[@]}" \
    || echo "!! $1 exited with $?"
}
extra "warm-cache" "" 45
extra "xla:no-triton-gemm" "--xla_gpu_enable_triton_gemm=false" 50
extra "xla:no-command-buffer" "--xla_gpu_enable_command_buffer=" 50

echo
echo "== all rows ($(( $(date +%s) - T0 ))s)"
$PY - "$OUT" <<'PY'
import sys
from pathlib import Path

from reproduce import benchfile
from reproduce.bench import format_table

rows, errors, meta = [], [], {}
for name in ("bench.json", "bench_xla.json"):
    p = Path(sys.argv[1]) / name
    if p.exists():
        f = benchfile.read(p)
        rows += f.rows
        errors += f.errors
        meta.setdefault("matmul_tflops_bf16", f.meta.get("matmul_tflops_bf16"))
print(f"bf16 matmul (8192^3 on a GPU): {meta.get('matmul_tflops_bf16')} TFLOP/s")
for e in errors:
    print("error:", e)
print(format_table(rows))
PY
