# Sourced by the GPU scripts (gpu_bench.sh, gpu_suite.sh): the results folder, the
# Python to use, JAX as the backend, and the caches both scripts share.
OUT=${OUT:?set OUT to a folder for the results}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SMALL=${SMALL:-0}
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
export REPRODUCE_CACHE=${REPRODUCE_CACHE:-/tmp/reproduce-cache}
# Persistent compilation cache: a configuration compiles once, its later runs (and
# the bench's warm-cache row) load the compiled programs.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/jax-cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
export PYTHONPATH=$(pwd)${PYTHONPATH:+:$PYTHONPATH}
