"""What the active Keras backend computes on, the precision it trains in there, and
JAX's on-disk cache of compiled programs.

The backend's own library (JAX or TensorFlow) is imported inside the function that
asks it, so each backend runs where the other one is not installed.
"""

from __future__ import annotations

import os
import platform
from typing import Optional

import keras

from reproduce.config import Config
from reproduce.data.cache import cache_root


def accelerator() -> Optional[str]:
    """'gpu'/'tpu' if the active backend sees one, else None."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        plat = jax.devices()[0].platform
        return None if plat == "cpu" else plat
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_physical_devices("GPU") else None
    return None


def device_description() -> str:
    """E.g. '1 x NVIDIA H200' or 'CPU (AMD EPYC ..., 2 cores)': for env.json and the bench."""
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            devs = jax.devices()
            if devs[0].platform != "cpu":  # on a CPU, JAX says only "cpu": the model name below
                return f"{len(devs)} x {devs[0].device_kind}"
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return f"{len(gpus)} x {details.get('device_name', 'GPU')}"
    except Exception:  # pragma: no cover - description only
        pass
    try:  # the CPU's model, where Linux tells it
        with open("/proc/cpuinfo") as f:
            name = cpu_name(f.read())
    except OSError:
        name = ""
    return f"CPU ({name or platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def cpu_name(cpuinfo: str) -> str:
    """The first CPU of a /proc/cpuinfo text: its model name and, where given, its
    family and model numbers ('AMD EPYC, family 25 model 17'); '' if it has none.
    Cloud VMs often show a bare 'AMD EPYC' or 'Intel Xeon Processor' for CPU
    generations whose speeds differ by 2-3x; the numbers tell them apart."""
    fields = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block ends here
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name", "")
    family, model = fields.get("cpu family"), fields.get("model")
    if name and family and model:
        return f"{name}, family {family} model {model}"
    return name


def resolve_precision(cfg: Config) -> str:
    """`train.precision`, with `auto` as mixed_bfloat16 on an accelerator, else float32."""
    if cfg.train.precision != "auto":
        return cfg.train.precision
    return "mixed_bfloat16" if accelerator() else "float32"


def persistent_compilation_cache() -> None:
    """JAX: keep compiled programs on disk, so the runs of one configuration (its
    seeds, a resumed run) compile once ($REPRODUCE_JAX_CACHE, default
    <data cache root>/jax; empty disables)."""
    if keras.backend.backend() != "jax":
        return
    import jax

    path = os.environ.get("REPRODUCE_JAX_CACHE")
    if path is None:
        path = str(cache_root("") / "jax")
    if path and not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def xla(cfg) -> object:
    """`jit_compile` for `model.compile` (training and the ten-view evaluation).

    Keras' default (`jit_compile="auto"`) leaves XLA off for TensorFlow on a machine
    without a GPU; for these nets XLA:CPU trains about twice as fast there
    (experiments/perf/perf_log.md, "fit vs step"), so it is asked for explicitly on
    one device (`train.xla`, default true). Distributed schemes keep Keras' choice:
    XLA compiles a function for one device, and TensorFlow's mirrored variables on
    several devices fail inside it (`reproduce.distribute.place` also turns it off
    for the towers)."""
    return True if cfg.train.xla and cfg.distribute.scheme == "none" else "auto"
