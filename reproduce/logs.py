"""Clean start-up for the command-line tools: a checked Keras backend, quiet logs.

`check_backend()` (called by the CLIs before Keras loads) stops with a clear
message when KERAS_BACKEND (make: BACKEND) names a backend this project does not
run on, or one that is not installed; Keras itself would fail with a long import
traceback.

TensorFlow writes start-up lines from C++ before its logging is configured
("All log messages before absl::InitializeLog() ...", "Could not find cuda
drivers ...") and, on a machine without a GPU, an error-level "failed call to
cuInit" line. None of them concerns a user of this project, and in a log file
of a long campaign they read like failures. `quiet_tensorflow()` (called by the
CLIs before Keras loads) hides them: the import runs with the process's stderr
pointed at /dev/null, and TF_CPP_MIN_LOG_LEVEL defaults to 3 (fatal only) where
no NVIDIA device exists, else 2 (errors kept), unless TF_CPP_MIN_LOG_LEVEL is
set already. Set REPRODUCE_TF_LOGS=1 to see everything.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import json
import os
import sys

# Backends the model, the trainer and the tests are written for, and how to get each.
BACKENDS = {
    "tensorflow": "pip install -r requirements.txt (or: pip install tensorflow)",
    "jax": "pip install 'jax[cpu]' (GPU: pip install 'jax[cuda12]')",
}


class BackendError(RuntimeError):
    """The Keras backend asked for cannot be used; the message says what to do."""


def keras_backend() -> str:
    """The backend Keras will load: $KERAS_BACKEND, else keras.json's, else tensorflow."""
    name = os.environ.get("KERAS_BACKEND")
    if name:
        return name
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return str(json.load(f).get("backend") or "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def check_backend() -> str:
    """The backend's name, if this project supports it and it is installed."""
    name = keras_backend()
    how = "; ".join(f"{b}: {cmd}" for b, cmd in BACKENDS.items())
    if name not in BACKENDS:
        raise BackendError(
            f"Keras backend {name!r} (KERAS_BACKEND, or BACKEND= with make) is not supported "
            f"here; use {' or '.join(BACKENDS)}, e.g. KERAS_BACKEND=jax or make ... "
            f"BACKEND=jax. To install one: {how}."
        )
    if importlib.util.find_spec(name) is None:
        raise BackendError(
            f"the Keras backend {name!r} is not installed in {sys.prefix}. Install it "
            f"({BACKENDS[name]}), or use the other supported backend ({how})."
        )
    return name


@contextlib.contextmanager
def stderr_to_devnull():
    """Point file descriptor 2 at /dev/null (C++ writes bypass sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_tensorflow() -> None:
    if os.environ.get("REPRODUCE_TF_LOGS"):
        return
    has_gpu = bool(glob.glob("/dev/nvidia[0-9]*"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if has_gpu else "3")
    # Under JAX too: Keras' set_random_seed and TFDS import TensorFlow when it is
    # installed, so its start-up lines would come later instead.
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    with stderr_to_devnull():
        import tensorflow as tf

        # The device query is where TF initializes CUDA (and complains without it).
        tf.config.list_physical_devices("GPU")
