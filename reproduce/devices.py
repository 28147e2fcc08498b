"""What the active Keras backend computes on, the precision it trains in there, and
JAX's on-disk cache of compiled programs.

The backend's own library (JAX or TensorFlow) is imported inside the function that
asks it, so each backend runs where the other one is not installed.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import warnings

import keras

from reproduce.config import Config
from reproduce.files import cache_root


def accelerator() -> str | None:
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


def resolved_config(cfg: Config) -> Config:
    """`cfg`, with train.precision "auto" replaced by mixed_bfloat16 where it
    resolves to that here (an accelerator); unchanged where it resolves to
    float32, so the identity (and the published runs' fingerprints) of float32
    runs stays what it was, and bf16 runs are another experiment."""
    if cfg.train.precision != "auto":
        return cfg
    precision = resolve_precision(cfg)
    if precision == "float32":
        return cfg
    out = cfg.copy()
    out.train.precision = precision
    return out


def nvidia_gpus(timeout: float = 10.0) -> list:
    """The GPUs `nvidia-smi -L` lists ("GPU 0: NVIDIA H200 (UUID: ...)"), [] where
    it is not installed or fails: what the driver sees, whatever the backend does."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().startswith("GPU ")]


def gpu_unused_message() -> str | None:
    """A message when the driver lists GPUs but the Keras backend computes on the
    CPU (a CPU-only wheel of TensorFlow or JAX, or CUDA libraries it cannot load);
    None otherwise."""
    gpus = nvidia_gpus()
    if not gpus or accelerator() is not None:
        return None
    backend = keras.backend.backend()
    fix, check = {
        "tensorflow": (
            "pip install 'tensorflow[and-cuda]==2.21.*'",
            "python -c \"import tensorflow as tf; print(tf.config.list_physical_devices('GPU'))\"",
        ),
        "jax": ("pip install 'jax[cuda12]'", 'python -c "import jax; print(jax.devices())"'),
    }.get(backend, ("the backend's CUDA build", "the backend's device list"))
    return (
        f"nvidia-smi lists {len(gpus)} GPU(s) ({gpus[0]}) but Keras' {backend} backend "
        f"sees none: this run computes on the CPU. Install the GPU build ({fix}; README, "
        f'"GPU install") and check with {check}; or set CUDA_VISIBLE_DEVICES= to run '
        "on the CPU on purpose."
    )


def warn_if_gpu_unused() -> None:
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return  # the CPU on purpose
    msg = gpu_unused_message()
    if msg:
        warnings.warn(msg, stacklevel=3)


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
    without a GPU; for the AlexNet nets XLA:CPU trains about twice as fast there
    (experiments/perf/perf_log.md, "fit vs step"), so it is asked for explicitly on
    one device (`train.xla`, default true). Not for every net: the cifar10 preset's
    cifar_local net is faster without it (perf log, "cifar_local on the CPU"), and
    that preset turns it off. Distributed schemes on TensorFlow keep
    Keras' choice (off): XLA compiles a function for one device, and Keras jit-
    compiles the whole multi-replica step, so under MirroredStrategy it fails
    ("Trying to access resource .../replica_1 located in device CPU:1 from device
    CPU:0", checked on two logical CPUs, TF 2.21; README, "XLA and several
    devices"); `reproduce.distribute.place` also turns it off for the towers. On
    JAX every scheme is compiled by XLA whatever this says."""
    return True if cfg.train.xla and cfg.distribute.scheme == "none" else "auto"
