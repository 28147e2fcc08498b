#!/usr/bin/env bash
# The prepared GPU benchmark (issue 6): one call on the device machine (one H200,
# Python 3.12, JAX with CUDA, no TensorFlow, no package registry).
#
# Here, once:  echo /.whl/ >> .git/info/exclude   (already ignored by .gitignore)
#              python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#                --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#                --platform manylinux_2_17_x86_64 -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0
#              mkdir -p data && cp ../shared/data/imagenette-144-webp.tar.xz data/   (ignored: /data/)
# The device call (tool `run`, carry [".whl", "data/imagenette-144-webp.tar.xz"], timeout_s 600):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH && bash scripts/gpu_bench.sh
# On a CPU, to try it (seconds per row, tiny sizes):
#   OUT=/tmp/out SMALL=1 PYTHON=/work/venv/bin/python bash scripts/gpu_bench.sh
#
# Writes under $OUT: bench.json (every row; the table the report includes),
# bench_xla.json (the XLA-flag and warm-cache rows), log.txt, nvidia-smi.txt. Prints
# the table last. Rows are written as they finish, so a kill keeps what was done.
# BUDGET (seconds, default 480) caps the whole script; the jobs of the plan run in
# priority order and the ones that do not fit are skipped. docs/perf_log.md lists
# what each row tests and its predicted figure.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:?set OUT to a folder for the results}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
BUDGET=${BUDGET:-480}
SMALL=${SMALL:-0}
DATA=${DATA:-data/imagenette-144-webp.tar.xz}
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
export REPRODUCE_CACHE=${REPRODUCE_CACHE:-/tmp/reproduce-cache}
# Persistent compilation cache: the warm-cache row below measures what the ablation
# suite would pay per seed after the first (compile once per variant).
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/jax-cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
T0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }

exec > >(tee -a "$OUT/log.txt") 2>&1
echo "== gpu_bench.sh $(date -u +%FT%TZ) budget ${BUDGET}s small=${SMALL}"
(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv \
  && nvidia-smi) > "$OUT/nvidia-smi.txt" 2>&1 || echo "(no nvidia-smi)"
$PY - <<'EOF' || { echo "!! the environment is not usable (see above)"; exit 1; }
import sys, importlib.util
import jax, keras
print("python", sys.version.split()[0], "jax", jax.__version__, "keras", keras.__version__,
      "backend", keras.backend.backend(), "devices", jax.devices())
print("tensorflow installed:", importlib.util.find_spec("tensorflow") is not None)
EOF

if [ "$SMALL" = 1 ]; then
  FORCE=(--small --batch 8 --steps 2 --warmup 1 --repeats 1)
  SUBSET='"data.max_train=256", "data.max_val=32"'
else
  FORCE=()
  SUBSET=''
fi
if [ -e "$DATA" ]; then DATA=$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA"); else
  echo "(no $DATA: the e2e rows are skipped)"; DATA=""; fi

# The plan, in priority order (bf16 unless said; "project" = the project's net as is).
BF='"precisions": ["mixed_bfloat16"]'
PLAN=$OUT/plan.json
{
echo '['
echo ' {"paths": ["step"], '"$BF"', "batches": [512, 128], "label": "J1"},'
echo ' {"paths": ["fit"], '"$BF"', "batches": [512, 128], "label": "J2"},'
echo ' {"paths": ["step"], '"$BF"', "batches": [512], "label": "J4", "variants": ["lrn=vjp", "conv1=s2d", "towers=blockdiag"]},'
echo ' {"paths": ["step"], '"$BF"', "batches": [512], "label": "J4 no_lrn", "overrides": ["model.lrn=false"]},'
echo ' {"paths": ["resident"], '"$BF"', "batches": [512, 128], "label": "J3"},'
echo ' {"paths": ["fit"], '"$BF"', "batches": [512, 128], "label": "J5", "callbacks": "none", "steps_per_execution": [8]},'
if [ -n "$DATA" ]; then
echo ' {"paths": ["fit", "e2e", "resident", "e2e-resident"], '"$BF"', "batches": [128], "label": "J6",
   "preset": "imagenette", "data": "'"$DATA"'", "overrides": ['"$SUBSET"']},'
fi
echo ' {"paths": ["step"], "precisions": ["float32"], "batches": [512, 128], "label": "J8"},'
echo ' {"paths": ["step"], '"$BF"', "batches": [512], "label": "J7", "variants": ["towers=blockdiag+lrn=vjp+conv1=s2d", "towers=grouped", "towers=grouped+lrn=vjp+conv1=s2d", "no_augment", "scan=8", "lrn=slices", "lrn=matmul", "lrn=bf16", "towers=dense"]},'
echo ' {"paths": ["step"], '"$BF"', "batches": [128], "label": "J7", "variants": ["towers=blockdiag+lrn=vjp+conv1=s2d", "scan=8", "scan=4+unroll=4"]},'
echo ' {"paths": ["resident"], '"$BF"', "batches": [512], "label": "J3", "variants": ["scan=1"]},'
if [ -n "$DATA" ]; then
echo ' {"paths": ["fit", "e2e", "resident", "e2e-resident"], '"$BF"', "batches": [512], "label": "J6",
   "preset": "imagenette", "data": "'"$DATA"'", "overrides": ['"$SUBSET"']},'
fi
echo ' {"paths": ["fit"], "precisions": ["float32"], "batches": [512, 128], "label": "J8"}'
echo ']'
} > "$PLAN"

PLAN_S=$(( $(left) - 130 ))
[ "$PLAN_S" -lt 60 ] && PLAN_S=60
echo "== plan: ${PLAN_S}s"
timeout -k 10 $(( PLAN_S + 90 )) $PY -m reproduce.bench --plan "$PLAN" --out "$OUT/bench.json" \
  --time-budget "$PLAN_S" --measure-peak "${FORCE[@]}" || echo "!! plan exited with $?"

# Each in its own process: XLA flags are read when the backend starts. The first
# reuses the plan's compilation cache (compile_s = a warm start).
extra() {  # label, XLA_FLAGS, seconds
  local s=$(( $(left) )); [ "$s" -gt "$3" ] && s=$3
  if [ "$s" -lt 25 ]; then echo "== skip $1: budget spent"; return; fi
  echo "== $1 (${s}s) XLA_FLAGS='$2'"
  XLA_FLAGS="$2" timeout -k 5 "$s" $PY -m reproduce.bench --paths step --precision mixed_bfloat16 \
    --batch 512 --label "$1" --out "$OUT/bench_xla.json" --append --quiet "${FORCE[@]}" \
    || echo "!! $1 exited with $?"
}
extra "warm-cache" "" 45
extra "xla:no-triton-gemm" "--xla_gpu_enable_triton_gemm=false" 50
extra "xla:no-command-buffer" "--xla_gpu_enable_command_buffer=" 50

echo
echo "== all rows ($(( $(date +%s) - T0 ))s)"
$PY - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
from reproduce.bench import format_table
rows, errors, meta = [], [], {}
for name in ("bench.json", "bench_xla.json"):
    p = Path(sys.argv[1]) / name
    if p.exists():
        d = json.loads(p.read_text())
        rows += d.get("rows", []); errors += d.get("errors", [])
        meta.setdefault("matmul_tflops_bf16", d.get("matmul_tflops_bf16"))
print(f"bf16 matmul (8192^3 on a GPU): {meta.get('matmul_tflops_bf16')} TFLOP/s")
for e in errors:
    print("error:", e)
print(format_table(rows))
EOF
