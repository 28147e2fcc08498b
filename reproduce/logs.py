"""Clean logs for the command-line tools.

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
import os
import sys


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
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    with stderr_to_devnull():
        import tensorflow as tf

        # The device query is where TF initializes CUDA (and complains without it).
        tf.config.list_physical_devices("GPU")
