"""Training throughput: images/s and model FLOP utilization (MFU) of the training step.

``python -m reproduce bench`` (``make bench``; ``python -m reproduce.bench`` takes
the same options) or, from Python, ``reproduce.bench.run(...)``, which returns the
result rows. Paths, each on the active Keras backend, with and without
``mixed_bfloat16``:

``step``
    A jitted training step (forward, backward, the paper's SGD update) on one
    synthetic batch already on the device: uint8 SxS images -> Augment (crops,
    flips, PCA colour, mean; inside the step, as in training) -> net. JAX: a
    stateless step, ``jax.jit`` with donated state; TensorFlow: a
    ``tf.function(jit_compile=True)``. The ceiling of what training can reach.
``fit``
    ``model.fit`` exactly as ``reproduce.train`` runs it: the same model and
    ``compile`` arguments, the trainer's own callbacks (``--callbacks none``
    leaves them out), batches from ``reproduce.data.ArrayBatches`` over a uint8
    NumPy array of synthetic images.
``e2e``
    The same as ``fit`` on real cached data (``--data DIR``: an ImageFolder folder
    or archive, loaded through ``reproduce.data.load`` with
    ``data.source=DIR``), so the input pipeline is measured too; the row carries
    the ratio to the synthetic ``fit`` row of the same settings.

Model FLOPs are counted from the model's layer shapes (``reproduce.flops``); MFU
is FLOP/s over the device's peak (``reproduce.flops.PEAKS``, or ``--peak-tflops``).

On a machine without an accelerator the default is a small configuration (67-px
crops of 76-px images, width 0.125, batch 8, a few steps) so it runs in seconds;
``--full`` runs the paper's net (227 crops of 256 images, batches 128 and 512).
Output: a table on screen and the results file (``--out``, default
``runs/bench.json``; format: ``reproduce.benchfile``), written after every row.

Hooks, for measuring changes before they are made (experiments/perf/): `run`
takes the net builder (``build_net``, as ``reproduce.train.build_training_model``
does) and more paths (``measures``: name -> a function of a `Job` returning a
`Timing`); `jax_train_step` and `time_jax` are the step path's parts.

TensorFlow is imported only on the TensorFlow backend, so the bench runs where
it is not installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable

import keras
import numpy as np

from reproduce import benchfile
from reproduce import data as data_lib
from reproduce.callbacks import per_batch_hooks, training_callbacks
from reproduce.config import PAPER_PRESET, Config, apply_overrides, get_config, validate
from reproduce.data.batches import ArrayBatches, CycledBatches, tf_dataset
from reproduce.data.pixelstats import compute_stats
from reproduce.devices import accelerator, device_description, warn_if_gpu_unused
from reproduce.flops import peak_tflops, training_flops
from reproduce.model import build_model
from reproduce.train import build_training_model, compile_model

PATHS = ("step", "fit", "e2e", "feed")
PRECISIONS = ("float32", "mixed_bfloat16")

# The small CPU configuration: the smoke preset's sizes (67 = the smallest input the
# paper's layer stack accepts), 1/8 width.
SMALL = {"data.image_size": 76, "data.crop_size": 67, "model.width": 0.125}


# --------------------------------------------------------------------------------------
# Configuration and data
# --------------------------------------------------------------------------------------


def bench_config(preset: str = PAPER_PRESET, overrides=None, small: bool = False, data: str = "") -> Config:
    """The configuration measured: a preset (default the paper's), synthetic data
    unless `data`, the small CPU sizes if `small`, then `overrides`."""
    cfg = get_config(preset)
    cfg.data.source = data or "synthetic"
    if small:
        apply_overrides(cfg, SMALL)
    apply_overrides(cfg, overrides or [])
    cfg.train.steps_per_epoch = 0
    return validate(cfg)


def _default_preset(data: str) -> str:
    name = os.path.basename(str(data)).lower()
    if "imagenette" in name:
        return "imagenette"
    if "cifar" in name:
        return "cifar10"
    return PAPER_PRESET


_SYNTH: dict = {}


def synthetic_data(n: int, size: int, num_classes: int, seed: int = 0):
    """(images uint8 (n, size, size, 3), labels int32 (n,), stats) of random pixels.

    One set per process, grown when more is asked for (views of it otherwise).
    Stats come from reproduce.data.pixelstats, like real data's.
    """
    key = (size, num_classes, seed)
    have = _SYNTH.get(key)
    if have is None or len(have[1]) < n:
        _SYNTH.clear()  # keep one set: they can be large
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
        labels = rng.integers(0, num_classes, size=(n,)).astype(np.int32)
        _SYNTH[key] = have = (images, labels, compute_stats(images[: min(n, 64)]))
    images, labels, stats = have
    return images[:n], labels[:n], stats


# --------------------------------------------------------------------------------------
# One measurement
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Job:
    """What a path measures: `model` (uint8 -> Augment -> `net`, compiled as the
    trainer compiles it, under the row's precision), the training images, and
    how long to measure (timed windows of `steps` steps after `warmup` steps)."""

    path: str
    cfg: Config  # train.batch_size is `batch`
    model: keras.Model
    net: keras.Model
    images: np.ndarray
    labels: np.ndarray
    batch: int
    steps: int
    warmup: int
    repeats: int
    steps_per_execution: int = 1
    callbacks: str = "trainer"


@dataclasses.dataclass
class Timing:
    windows_s: list  # seconds of each timed window
    steps: int  # training steps per window
    compile_s: float  # the first step (compilation included)
    loss_finite: bool = True
    extra: dict = dataclasses.field(default_factory=dict)  # more keys for the row


def time_windows(run_window: Callable[[int], object], steps: int, repeats: int) -> list:
    """Seconds of each of `repeats` calls of run_window(steps)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_window(steps)
        times.append(time.perf_counter() - t0)
    return times


# --------------------------------------------------------------------------------------
# Path "step": a jitted training step on device-resident data
# --------------------------------------------------------------------------------------


def jax_train_step(model: keras.Model):
    """(step, state) for a compiled model on JAX: ``step(state, x, y) -> (state,
    loss)`` is one stateless training step (forward, backward, the compiled
    optimizer's update, the compiled loss plus the model's own losses: the weight
    decay), for ``jax.jit``; state = (trainable, non-trainable, optimizer
    variables)."""
    import jax

    optimizer, loss_fn = model.optimizer, model.loss

    def step(state, x, y):
        tv, ntv, ov = state

        def loss_of(tv, ntv):
            y_pred, ntv2, losses = model.stateless_call(tv, ntv, x, training=True, return_losses=True)
            loss = loss_fn(y, y_pred)
            for extra in losses:
                loss = loss + extra
            return loss, ntv2

        (loss, ntv), grads = jax.value_and_grad(loss_of, has_aux=True)(tv, ntv)
        tv, ov = optimizer.stateless_apply(ov, grads, tv)
        return (tv, ntv, ov), loss

    optimizer.build(model.trainable_variables)
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )
    return step, state


def time_jax(fn, state, job: Job, args=(), per_call: int = 1, next_args=None) -> Timing:
    """Timing of a jitted ``fn(state, *args) -> (state, loss)`` called over and over,
    `per_call` training steps a call: the first call (it compiles), the warm-up,
    then `job.repeats` windows of about `job.steps` steps. `next_args()`, if
    given, makes each call's `args`."""
    import jax

    held = {"state": state, "loss": None}

    def run_window(calls):
        s, loss = held["state"], None
        for _ in range(calls):
            s, loss = fn(s, *(next_args() if next_args else args))
        jax.block_until_ready((s, loss))
        held.update(state=s, loss=loss)

    t0 = time.perf_counter()
    run_window(1)
    compile_s = time.perf_counter() - t0
    if (job.warmup - 1) // per_call > 0:
        run_window((job.warmup - 1) // per_call)
    calls = max(1, job.steps // per_call)
    times = time_windows(run_window, calls, job.repeats)
    return Timing(times, calls * per_call, compile_s, bool(np.isfinite(np.asarray(held["loss"])).all()))


def _step_jax(model, x, y, job: Job) -> Timing:
    import jax

    step, state = jax_train_step(model)
    return time_jax(jax.jit(step, donate_argnums=0), state, job, (jax.device_put(x), jax.device_put(y)))


def _step_tf(model, x, y, job: Job) -> Timing:
    import tensorflow as tf

    optimizer, loss_fn = model.optimizer, model.loss
    optimizer.build(model.trainable_variables)

    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
            if model.losses:
                loss = loss + tf.add_n(model.losses)
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    xd, yd = tf.constant(x), tf.constant(y)
    fn = tf.function(step, jit_compile=True)
    t0 = time.perf_counter()
    try:
        loss = fn(xd, yd).numpy()
    except Exception:  # an op without an XLA kernel: measure the graph without XLA
        fn = tf.function(step, jit_compile=False)
        loss = fn(xd, yd).numpy()
    compile_s = time.perf_counter() - t0

    def run_window(n):
        out = None
        for _ in range(n):
            out = fn(xd, yd)
        return out.numpy()

    if job.warmup > 1:
        run_window(job.warmup - 1)
    times = time_windows(run_window, job.steps, job.repeats)
    return Timing(times, job.steps, compile_s, bool(np.isfinite(loss).all()))


def measure_step(job: Job) -> Timing:
    """The step path: `job.model`'s training step on its first batch of images."""
    x, y = np.asarray(job.images[: job.batch]), np.asarray(job.labels[: job.batch])
    backend = keras.backend.backend()
    if backend == "jax":
        return _step_jax(job.model, x, y, job)
    if backend == "tensorflow":
        return _step_tf(job.model, x, y, job)
    raise ValueError(f"the step path supports jax and tensorflow, not {backend}")


# --------------------------------------------------------------------------------------
# Paths "fit" and "e2e": model.fit as the trainer runs it
# --------------------------------------------------------------------------------------


class EpochTimer(keras.callbacks.Callback):
    """Epoch wall time, first in the list: starts before the first step and stops
    at the first on_epoch_end (after the state sync), so the other callbacks'
    epoch-end work (the trainer's checkpoint) is not in it. No batch hooks, so
    Keras' asynchronous callback dispatch is not disabled."""

    def __init__(self):
        super().__init__()
        self.t0 = self.t1 = None

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.t1 = time.perf_counter()


class EpochEnd(keras.callbacks.Callback):
    """Last in the list: when every other callback's epoch-end work is done."""

    def __init__(self):
        super().__init__()
        self.t = None

    def on_epoch_end(self, epoch, logs=None):
        self.t = time.perf_counter()


def measure_fit(job: Job) -> Timing:
    """The fit and e2e paths: a warm-up epoch (it compiles), then `repeats` timed
    epochs of `steps` steps; also the epoch-end work of the other callbacks."""
    spe = job.steps_per_execution
    steps = job.steps
    if job.path.startswith("e2e"):  # at most one epoch of the real data
        steps = min(steps, max(1, len(job.labels) // job.batch))
    steps = max(spe, math.ceil(steps / spe) * spe)
    warmup = max(spe, math.ceil(job.warmup / spe) * spe)
    base = ArrayBatches(job.images, job.labels, job.batch, shuffle=True, seed=job.cfg.train.seed)
    with tempfile.TemporaryDirectory(prefix="bench-fit-") as run_dir:
        trainer = training_callbacks(job.cfg, run_dir, {}, len(job.labels)).all if job.callbacks == "trainer" else []
        timer, end = EpochTimer(), EpochEnd()
        cbs = [timer, *trainer, end]
        t0 = time.perf_counter()
        # shuffle=False: ArrayBatches shuffles itself (reproduce.data.batches).
        job.model.fit(CycledBatches(base, warmup), epochs=1, callbacks=cbs, verbose=0, shuffle=False)
        compile_s = time.perf_counter() - t0
        times = []
        for _ in range(job.repeats):
            job.model.fit(CycledBatches(base, steps), epochs=1, callbacks=cbs, verbose=0, shuffle=False)
            times.append(timer.t1 - timer.t0)
    epoch_end_s = None if end.t is None else round(end.t - timer.t1, 3)
    return Timing(
        times,
        steps,
        compile_s,
        extra=dict(callbacks=job.callbacks, epoch_end_s=epoch_end_s, batch_hook_callbacks=per_batch_hooks(cbs)),
    )


def measure_feed(job: Job) -> Timing:
    """The feed path: batches only, no model. `job.steps` batches of ArrayBatches
    through the Keras data adapter `fit` uses for a PyDataset (on TensorFlow a
    `from_generator` dataset, one Python thread), consumed on the backend; on
    TensorFlow the row also has the trainer's tf.data feed
    (`reproduce.data.batches.tf_dataset`) as `tf_data_images_per_s`, and both
    have the bare reads (`__getitem__`) as `reads_images_per_s`."""
    # Keras' own adapter, as fit makes it (an internal module: no public API).
    from keras.src.trainers.data_adapters import get_data_adapter

    backend = keras.backend.backend()
    base = ArrayBatches(job.images, job.labels, job.batch, shuffle=True, seed=job.cfg.train.seed)
    steps = job.steps

    def adapter(n):
        # A new adapter per window: each one is a whole epoch of n batches, as in fit.
        ad = get_data_adapter(CycledBatches(base, n), shuffle=False)
        if backend == "tensorflow":
            import tensorflow as tf

            return int(ad.get_tf_dataset().reduce(np.int32(0), lambda a, e: a + tf.shape(e[0])[0]))
        return sum(len(x) for x, _ in ad.get_jax_iterator())

    t0 = time.perf_counter()
    adapter(job.warmup)
    compile_s = time.perf_counter() - t0
    times = time_windows(adapter, steps, job.repeats)
    reads = time_windows(lambda n: [base[i % len(base)] for i in range(n)], steps, job.repeats)
    extra = {"reads_images_per_s": round(job.batch * steps / float(np.median(reads)), 1), "feed": "keras adapter"}
    if backend == "tensorflow":
        import tensorflow as tf

        def tf_run(n):
            ds, _ = tf_dataset(CycledBatches(base, n))
            return int(ds.reduce(np.int32(0), lambda a, e: a + tf.shape(e[0])[0]))

        tf_run(job.warmup)
        tf_times = time_windows(tf_run, steps, job.repeats)
        extra["tf_data_images_per_s"] = round(job.batch * steps / float(np.median(tf_times)), 1)
    return Timing(times, steps, compile_s, extra=extra)


#: The paths, {name: measure}; a name starting with "e2e" measures on real data.
#: `feed` (not run by default) measures the input feed alone.
MEASURES = {"step": measure_step, "fit": measure_fit, "e2e": measure_fit, "feed": measure_feed}


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------


def _release() -> None:
    keras.backend.clear_session()
    gc.collect()


def _measure(
    cfg, path, measure, precision, batch, spe, steps, warmup, repeats, callbacks, real, build_net, variant
) -> dict:
    keras.mixed_precision.set_global_policy(precision)
    try:
        if path.startswith("e2e"):
            images, labels = real.train.images, real.train.labels
            stats, num_classes = real.stats, real.num_classes
        else:
            # The real data's classes when there are any (so fit and e2e rows compare
            # the same net), else the paper's 1000.
            num_classes = real.num_classes if real is not None else (1000 if cfg.model.arch == "alexnet" else 10)
            # One batch for the step path; the others cycle over eight.
            n = batch * (1 if path == "step" else 8)
            images, labels, stats = synthetic_data(n, cfg.data.image_size, num_classes)
        keras.utils.set_random_seed(cfg.train.seed)
        model, net = build_training_model(cfg, stats, num_classes, build_net)
        compile_model(model, cfg, spe)
        t = measure(Job(path, cfg, model, net, images, labels, batch, steps, warmup, repeats, spe, callbacks))
        seconds = float(np.median(t.windows_s))
        ips = batch * t.steps / seconds
        return dict(
            path=path,
            variant=variant,
            precision=precision,
            batch=batch,
            images_per_s=round(ips, 1),
            step_ms=round(1000 * seconds / t.steps, 3),
            steps=t.steps,
            steps_per_execution=spe,
            compile_s=round(t.compile_s, 2),
            flops_per_image=training_flops(net),
            image_size=cfg.data.image_size,
            crop_size=cfg.data.crop_size,
            width=cfg.model.width,
            arch=cfg.model.arch,
            loss_finite=t.loss_finite,
            data=(cfg.data.source if path.startswith("e2e") else "synthetic"),
            windows_s=[round(w, 4) for w in t.windows_s],
            # The best window: on a shared machine the least disturbed one.
            images_per_s_best=round(batch * t.steps / min(t.windows_s), 1),
            **t.extra,
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")


def run(
    *,
    full: bool | None = None,
    preset: str | None = None,
    overrides=None,
    data: str = "",
    paths=None,
    precisions=None,
    batches=None,
    steps: int | None = None,
    warmup: int | None = None,
    repeats: int | None = None,
    steps_per_execution=(1,),
    callbacks: str = "trainer",
    peak: float | None = None,
    out: str | None = "",
    append: bool = False,
    label: str = "",
    time_budget: float | None = None,
    keep_going: bool = False,
    verbose: bool = True,
    build_net=build_model,
    variant: str = "project",
    measures: dict | None = None,
) -> list[dict]:
    """Measure and return the rows (also written to `out` after each row).

    full: the paper's sizes (None: on an accelerator yes, on a CPU no).
    preset/overrides: the configuration (default `imagenet`, i.e. the paper; with
        `data`, the preset its name suggests: imagenette, cifar10).
    data: a folder or archive for the `e2e` path (added to `paths` by default).
    paths: names of `measures`; default step and fit (and e2e with data).
    precisions: subset of PRECISIONS; default both.
    batches: default 128 and 512 (full) or 8 (small).
    steps/warmup/repeats: timed steps per window, warm-up steps (the first one
        compiles), windows (the median is reported); defaults 30/3/3 full, 10/2/2 small.
    steps_per_execution: values tried on the fit paths.
    callbacks: "trainer" (the trainer's callbacks in fit/e2e) or "none".
    peak: peak TFLOP/s for MFU (default: from reproduce.flops.PEAKS by device name).
    out: the results file ("" = benchfile.default_path(); None = none).
    append: add to the rows and errors already in `out`.
    time_budget: seconds after which no new measurement starts.
    keep_going: a failing measurement is recorded in the file's "errors" and the
        others go ahead (else it raises).
    build_net, variant: the net builder (as reproduce.model.build_model) and the
        name the rows give it.
    measures: more paths, {name: function(Job) -> Timing}, or other measures for
        the standard ones.
    """
    t_start = time.perf_counter()
    if out == "":
        out = str(benchfile.default_path())
    measures = {**MEASURES, **(measures or {})}
    backend = keras.backend.backend()
    # A CPU build of the backend on a GPU machine times the CPU: said before the
    # minutes of measuring, not found in the table after them.
    warn_if_gpu_unused()
    if full is None:
        full = accelerator() is not None
    preset = preset or (_default_preset(data) if data else PAPER_PRESET)
    paths = list(paths or (["step", "fit"] + (["e2e"] if data else [])))
    for p in paths:
        if p not in measures:
            raise ValueError(f"unknown path {p!r}; choose from {', '.join(measures)}")
    if any(p.startswith("e2e") for p in paths) and not data:
        raise ValueError("the e2e paths need --data DIR (a cached dataset folder or archive)")
    precisions = list(precisions or PRECISIONS)
    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
    batches = [int(b) for b in (batches or ([128, 512] if full else [8]))]
    steps = int(steps or (30 if full else 10))
    warmup = int(warmup or (3 if full else 2))
    repeats = int(repeats or (3 if full else 2))
    device = device_description()
    date = datetime.date.today().isoformat()
    meta = {
        "tool": "reproduce.bench",
        "backend": backend,
        "device": device,
        "date": date,
        "full": bool(full),
        "preset": preset,
        "overrides": list(overrides or []),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "python": sys.version.split()[0],
        "keras": keras.__version__,
    }
    if backend == "jax":
        import jax

        meta["jax"] = jax.__version__
    bench = benchfile.BenchFile(meta)
    if append and out and os.path.exists(out):
        old = benchfile.read(out)
        bench = benchfile.BenchFile({**old.meta, **meta}, old.rows, old.errors)
    n_before = len(bench.rows)

    real = None
    if data:
        real = data_lib.load(bench_config(preset, overrides, small=not full, data=data).data)
        if not hasattr(real.train, "images"):
            raise ValueError(f"{data} is not an in-memory/cached dataset (got {type(real.train).__name__})")

    def save():
        if out:
            benchfile.write(out, bench)

    fit_ref: dict = {}
    for precision in precisions:
        for batch in batches:
            for path in paths:
                for spe in steps_per_execution if path in ("fit", "e2e") else (1,):
                    if time_budget and time.perf_counter() - t_start > time_budget:
                        if verbose:
                            print(f"[bench] time budget {time_budget:.0f}s spent; stopping", flush=True)
                        return bench.rows[n_before:]
                    cfg = bench_config(preset, overrides, small=not full, data=data if path.startswith("e2e") else "")
                    cfg.train.batch_size = batch
                    try:
                        row = _measure(
                            cfg,
                            path,
                            measures[path],
                            precision,
                            batch,
                            spe,
                            steps,
                            warmup,
                            repeats,
                            callbacks,
                            real,
                            build_net,
                            variant,
                        )
                    except Exception as e:
                        if not keep_going:
                            raise
                        traceback.print_exc()
                        bench.errors.append(
                            dict(
                                path=path,
                                variant=variant,
                                precision=precision,
                                batch=batch,
                                label=label,
                                error=f"{type(e).__name__}: {e}"[:2000],
                            )
                        )
                        save()
                        _release()
                        continue
                    ips = row["images_per_s"]
                    pk, pk_kind = (peak, "given") if peak else peak_tflops(device, precision)
                    row.update(
                        backend=backend,
                        device=device,
                        date=date,
                        label=label,
                        overrides=list(overrides or []),
                        preset=preset,
                        mfu=(round(row["flops_per_image"] * ips / (pk * 1e12), 4) if pk else None),
                        peak_tflops=pk,
                        peak_kind=pk_kind,
                        tflops=round(row["flops_per_image"] * ips / 1e12, 2),
                        xla_flags=os.environ.get("XLA_FLAGS", ""),
                    )
                    same = (precision, batch, spe, cfg.data.image_size, cfg.data.crop_size)
                    if path == "fit":
                        fit_ref[same] = ips
                    if path == "e2e":
                        row["vs_synthetic_fit"] = round(ips / fit_ref[same], 3) if same in fit_ref else None
                    bench.rows.append(row)
                    save()
                    if verbose:
                        print(_line(row), flush=True)
                    _release()
    if verbose:
        print()
        print(format_table(bench.rows[n_before:]))
        if out:
            print(f"\n[bench] {len(bench.rows) - n_before} rows -> {out}")
    return bench.rows[n_before:]


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


def _fmt_int(v) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _name(r: dict) -> str:
    return r["variant"] + (f" [{r['label']}]" if r.get("label") else "")


def _line(r: dict) -> str:
    mfu = "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%"
    return (
        f"[bench] {r['path']:<12} {_name(r):<28} {r['precision']:<15} b={r['batch']:<4} "
        f"spe={r.get('steps_per_execution', 1):<2} {_fmt_int(r['images_per_s']):>9} img/s "
        f"{r['step_ms']:8.2f} ms/step  MFU {mfu:>6}  compile {r['compile_s']:.1f}s"
    )


def format_table(rows: list[dict]) -> str:
    """A short Markdown table of rows, with a line saying what was measured where."""
    if not rows:
        return "(no rows)"
    head = ["path", "variant", "precision", "batch", "spe", "img/s", "ms/step", "MFU", "compile s"]
    mixed = len({(r.get("crop_size"), r.get("width"), r.get("flops_per_image")) for r in rows}) > 1
    if mixed:
        head.insert(1, "crop")
    vs_fit = any(r.get("vs_synthetic_fit") for r in rows)
    if vs_fit:
        head.append("vs fit")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r["path"],
            _name(r),
            "bf16" if r["precision"] == "mixed_bfloat16" else "fp32",
            str(r["batch"]),
            str(r.get("steps_per_execution", 1)),
            _fmt_int(r["images_per_s"]),
            f"{r['step_ms']:.2f}",
            "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%",
            f"{r['compile_s']:.1f}",
        ]
        if mixed:
            cells.insert(1, f"{r.get('crop_size')}" + (f" w{r.get('width')}" if r.get("width") != 1.0 else ""))
        if vs_fit:
            v = r.get("vs_synthetic_fit")
            cells.append("-" if v is None else f"{v:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    r0 = rows[0]
    flops = "; ".join(
        sorted(
            {f"{r['flops_per_image'] / 1e9:.3g} GFLOP/image at crop {r['crop_size']}, width {r['width']}" for r in rows}
        )
    )
    peak = (
        f"; MFU vs {r0['peak_tflops']} TFLOP/s ({r0['peak_kind']})"
        if r0.get("peak_tflops")
        else "; MFU: peak unknown (--peak-tflops)"
    )
    lines.append(f"\n{r0['backend']} on {r0['device']}, {r0['date']}; model FLOPs {flops}{peak}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def csv_arg(text, conv=str) -> list | None:
    """A comma-separated option (or a list of them) as a list; None stays None."""
    if text is None:
        return None
    out = []
    for t in text if isinstance(text, list) else [text]:
        out += [conv(s) for s in str(t).split(",") if s.strip()]
    return out


def out_arg(value) -> str | None:
    """--out: absent -> "" (the default file), '' -> None (no file), else the path."""
    if value is None:
        return ""
    return value or None


def parser(prog: str = "python -m reproduce bench") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Training throughput (images/s) and model FLOP utilization; see reproduce/bench.py.",
    )
    p.add_argument(
        "--full",
        action="store_true",
        default=None,
        help="the paper's sizes (227 crops, batches 128 and 512); default on accelerators",
    )
    p.add_argument(
        "--small",
        dest="full",
        action="store_false",
        help="the small CPU configuration (67 crops, width 0.125, batch 8)",
    )
    p.add_argument("--data", default="", help="cached dataset (folder or archive) for the e2e path")
    p.add_argument("--preset", default=None, help=f"configuration preset (default {PAPER_PRESET}: the paper)")
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="configuration overrides, as for train",
    )
    p.add_argument("--paths", default=None, help=f"comma-separated, of {', '.join(PATHS)}")
    p.add_argument("--precision", default=None, help="comma-separated: float32,mixed_bfloat16 (default both)")
    p.add_argument("--batch", default=None, help="comma-separated batch sizes")
    p.add_argument("--steps", type=int, default=None, help="timed steps per window")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (the first compiles)")
    p.add_argument("--repeats", type=int, default=None, help="timed windows (median reported)")
    p.add_argument("--steps-per-execution", default="1", help="comma-separated, for fit/e2e")
    p.add_argument(
        "--callbacks",
        choices=("trainer", "none"),
        default="trainer",
        help="fit/e2e with the trainer's callbacks (default) or none",
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="peak TFLOP/s for MFU")
    p.add_argument(
        "--out",
        default=None,
        help="results file (default $REPRODUCE_RUNS/bench.json, i.e. runs/bench.json; '' for none)",
    )
    p.add_argument("--append", action="store_true", help="add rows to an existing --out")
    p.add_argument("--label", default="", help="a label stored in every row")
    p.add_argument("--time-budget", type=float, default=None, help="stop starting rows after this many seconds")
    p.add_argument("--quiet", action="store_true")
    return p


def run_args(a: argparse.Namespace) -> dict:
    """`run`'s keyword arguments from the parsed options."""
    return dict(
        full=a.full,
        preset=a.preset,
        overrides=a.overrides,
        data=a.data,
        paths=csv_arg(a.paths),
        precisions=csv_arg(a.precision),
        batches=csv_arg(a.batch, int),
        steps=a.steps,
        warmup=a.warmup,
        repeats=a.repeats,
        steps_per_execution=csv_arg(a.steps_per_execution, int) or [1],
        callbacks=a.callbacks,
        peak=a.peak_tflops,
        out=out_arg(a.out),
        append=a.append,
        label=a.label,
        time_budget=a.time_budget,
        verbose=not a.quiet,
    )


def main(argv=None) -> int:
    a = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        rows = run(**run_args(a))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.quiet:
        print(format_table(rows))
    return 0 if rows else 1


if __name__ == "__main__":  # python -m reproduce.bench ARGS
    sys.exit(main())
