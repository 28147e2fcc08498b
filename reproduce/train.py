"""Training: the paper's optimizer and schedule through `model.fit`, resumable.

`train(cfg, run_dir)` runs one experiment into one run directory (format owned by
`reproduce.runs`). Starting it again in the same directory resumes from the last
completed epoch (`reproduce.checkpoint`: a kill -9 at any moment loses at most the
epoch in flight) and does nothing if the run has already finished.

The update rule is the paper's (§5)::

    v <- 0.9 v - 0.0005 * eps * w - eps * dL/dw
    w <- w + v

Keras' SGD with momentum is exactly ``v <- m v - eps g; w <- w + v``; the weight
decay enters `g` through an L2 term of coefficient 0.0005 / 2 = 0.00025 on every
kernel (see `reproduce.model`), so it goes through the momentum term like the
paper's, not decoupled. Biases are not decayed: cuda-convnet, the code the paper
ran, sets the weight-decay coefficient on weights only.

The parts: `reproduce.callbacks` (schedule, divergence check, per-epoch record),
`reproduce.evaluate` (error rates, centre crop and ten views),
`reproduce.checkpoint` (the state file), `reproduce.devices` (device, precision).
"""

from __future__ import annotations

import gc
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from reproduce import data as data_lib
from reproduce import distribute, runs
from reproduce.augment import Augment
from reproduce.callbacks import training_callbacks
from reproduce.checkpoint import load_state, save_state
from reproduce.config import PRESETS, Config, ConfigError, experiment_identity, fingerprint_of, get_config, validate
from reproduce.devices import (
    accelerator,
    device_description,
    persistent_compilation_cache,
    resolve_precision,
    resolved_config,
    warn_if_gpu_unused,
    xla,
)
from reproduce.evaluate import error_metrics, evaluate, fc7_dead_fraction, training_sample, validation_errors
from reproduce.model import build_model, inference_model
from reproduce.runs import RunConflict

# What other code calls through this module (some of it lives in the parts above).
__all__ = [
    "train",
    "prepare_run_dir",
    "build_training_model",
    "compile_model",
    "TrainingDiverged",
    "RunConflict",
    "save_state",
    "load_state",
    "accelerator",
    "device_description",
    "resolve_precision",
]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


def build_training_model(cfg: Config, stats, num_classes: int, build_net=build_model):
    """uint8 SxS images -> Augment (crops, flips, PCA colour, mean; §2, §4.1) -> net.

    Returns (model, net): `net` is the network on CxC float input, `model` the one
    that is trained. `build_net(model_cfg, image_size, num_classes, weight_decay,
    seed)` makes the net (default `reproduce.model.build_model`; the performance
    experiments pass their variants of it).
    """
    d = cfg.data
    net = build_net(cfg.model, d.crop_size, num_classes, cfg.train.weight_decay, cfg.train.seed)
    augment = Augment(
        crop_size=d.crop_size,
        crop_flip=d.crop_flip,
        pca_color=d.pca_color,
        pca_std=d.pca_std,
        mean_subtract=d.mean_subtract,
        mean_image=stats.mean_image,
        pca_eigvals=stats.pca_eigvals,
        pca_eigvecs=stats.pca_eigvecs,
        seed=cfg.train.seed,
        name="augment",
    )
    inputs = keras.Input((d.image_size, d.image_size, 3), dtype="uint8", name="image")
    model = keras.Model(inputs, net(augment(inputs)), name=f"{net.name}_train")
    return model, net


def compile_model(model, cfg: Config, steps_per_execution: int | None = None):
    """The paper's optimizer (§5; decay is the kernels' L2 term), loss and metrics,
    compiled with XLA.

    See `reproduce.devices.xla` for when XLA is asked for; `train.run_eagerly`
    (TensorFlow, one device) traces and compiles nothing."""
    eager = bool(cfg.train.run_eagerly) and keras.backend.backend() == "tensorflow" and cfg.distribute.scheme == "none"
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=cfg.train.learning_rate, momentum=cfg.train.momentum),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=error_metrics(),
        steps_per_execution=steps_per_execution or cfg.train.steps_per_execution,
        jit_compile=False if eager else xla(cfg),
        run_eagerly=eager,
    )
    return model


# --------------------------------------------------------------------------------------
# The run directory
# --------------------------------------------------------------------------------------


def _check_same_run(cfg: Config, run_dir: Path, data_id: str, unresolved: bool = False) -> None:
    """A run directory holds one experiment (`config.experiment_identity`) and seed.

    unresolved: `cfg` still has train.precision "auto" (the check before the
    devices are known); it then also matches a stored run whose "auto" was
    resolved to mixed_bfloat16 (`reproduce.devices.resolved_config`), and the
    check after resolving decides."""
    existing = Path(run_dir) / runs.CONFIG
    if not existing.exists():
        return
    try:
        stored = runs.read_json(existing)
        if not isinstance(stored, dict):
            raise ValueError(f"a JSON {type(stored).__name__}, not the configuration tree")
    except (OSError, ValueError) as e:
        raise RunConflict(
            f"{existing} is damaged ({e}); it records which experiment the run in "
            f"{run_dir} is. If this is the command that started that run, delete just "
            f"{existing}: the same command then rewrites it and resumes from the saved "
            f"state (if any). Otherwise delete the folder {run_dir} to start the run again."
        ) from None
    old_meta = stored.get("meta", {})
    if unresolved and cfg.train.precision == "auto":
        section = stored.get("train")
        if isinstance(section, dict) and section.get("precision") == "mixed_bfloat16":
            cfg = cfg.copy()  # what "auto" resolves to on an accelerator
            cfg.train.precision = "mixed_bfloat16"
    mine = experiment_identity(cfg, data_id)
    try:
        theirs = experiment_identity(stored, old_meta.get("data_id", data_id))
    except ConfigError as e:
        raise RunConflict(f"{existing}: {e}") from None
    if theirs != mine:
        keys = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise RunConflict(
            f"{run_dir} holds a run of another configuration (fingerprint "
            f"{fingerprint_of(theirs)}, this one is {fingerprint_of(mine)}; they differ in "
            f"{', '.join(keys)}). Use another run directory, or delete that one to replace it."
        )
    if old_meta.get("seed", cfg.train.seed) != cfg.train.seed:
        raise RunConflict(f"{run_dir} holds seed {old_meta.get('seed')}, not {cfg.train.seed}")


def prepare_run_dir(cfg: Config, run_dir: Path, meta: dict, data_id: str) -> None:
    _check_same_run(cfg, run_dir, data_id)
    runs.write_config(
        run_dir,
        cfg.to_dict(),
        {**meta, "fingerprint": cfg.fingerprint(data_id), "data_id": data_id, "seed": cfg.train.seed},
    )


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


def train(
    cfg: Config,
    run_dir,
    meta: dict | None = None,
    verbose: int = 1,
    epoch_limit: int | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict:
    """Train one run into `run_dir` (resuming or skipping as needed); returns the result.

    epoch_limit: stop after this many epochs in all, even if `train.epochs` is more
    (the Figure 1 grid stops a rate once it can no longer be the fastest). Such a
    run is finished with ``censored: true`` in result.json; a later call with a
    higher limit (or none) trains it on from its state. The limit is not part of
    the configuration: it decides how long to look, not what is computed.
    callbacks: more Keras callbacks for `model.fit`, after the trainer's own.
    """
    validate(cfg)
    run_dir = Path(run_dir)
    data_id = cfg.data_id()
    _check_same_run(cfg, run_dir, data_id, unresolved=True)
    done = _finished_result(run_dir, epoch_limit, verbose)
    if done is not None:
        return done
    meta = dict(meta or {})
    meta.setdefault("command", " ".join(sys.argv))
    persistent_compilation_cache()
    # distribute.scheme (§3.2 towers, mirrored, multiworker): entered before anything
    # touches a device, since a cluster must be set up before TF/JAX initialize.
    with distribute.scope(cfg) as plan:
        warn_if_gpu_unused()
        # "auto" precision as resolved on this machine, when it is not float32, is
        # part of the run's identity: bf16 seeds on a GPU are another experiment
        # than float32 seeds on a CPU (config.json stores the resolved value).
        cfg = resolved_config(cfg)
        _check_same_run(cfg, run_dir, data_id)
        small = distribute.replica_batch_warning(cfg.train.batch_size, plan.num_replicas, plan.scheme)
        if small:
            warnings.warn(small, stacklevel=2)
        # Data first: a missing dataset stops here, before a run directory exists.
        data = data_lib.load(cfg.data)
        data_lib.check_batches(data, cfg.train.batch_size)
        with runs.lock(run_dir):  # one process per run: another one gets RunLocked
            # Another process may have finished it while this one loaded the data.
            done = _finished_result(run_dir, epoch_limit, verbose)
            if done is not None:
                return done
            prepare_run_dir(cfg, run_dir, meta, data_id)
            keras.utils.set_random_seed(cfg.train.seed)
            precision = resolve_precision(cfg)
            keras.mixed_precision.set_global_policy(precision)
            try:
                return _train(cfg, run_dir, data, precision, verbose, epoch_limit, list(callbacks))
            finally:
                keras.mixed_precision.set_global_policy("float32")


def _finished_result(run_dir: Path, epoch_limit, verbose) -> dict | None:
    if runs.is_finished(run_dir) and not runs.can_extend(run_dir, epoch_limit):
        if verbose:
            print(f"[reproduce] {run_dir} already finished; nothing to do.")
        return runs.read_json(run_dir / runs.RESULT)
    return None


def tf_data_feed() -> bool:
    """Whether training batches reach `fit` through tf.data (`data.batches.tf_dataset`,
    and a stream's own pipelines, `data.batches.stream_tf_dataset`): on
    TensorFlow, where Keras would otherwise hand them over from one Python
    thread. JAX reads them through a PyDataset (`data.batches.step_feed`,
    `StreamBatches`): it needs no TensorFlow (the GPU machine runs JAX alone).
    Both give the same batches, step for step, `train.steps_per_epoch` included
    (tests/test_gpu_path.py compares them)."""
    return keras.backend.backend() == "tensorflow"


def training_feed(cfg: Config, train, initial_epoch: int, last_epoch: int | None = None):
    """(what `fit` reads, the callbacks that feed needs, fit's steps_per_epoch).

    last_epoch: the epoch `fit` stops at (default `train.epochs`)."""
    # Shuffling is the batches' own, from (seed, epoch), so a resumed run sees the
    # same order; fit(shuffle=False) keeps Keras from re-permuting batches.
    # drop_remainder: every training step has the same shape, so the train step
    # compiles once (a last partial batch compiles a second program: tens of
    # seconds on a GPU, per run). Each epoch leaves out < batch_size images.
    # train.steps_per_epoch is the batches' own epoch length (ArrayBatches,
    # StreamBatches), so fit gets none and starts every epoch afresh.
    order = {
        "shuffle": True,
        "seed": cfg.train.seed,
        "epoch": initial_epoch,
        "drop_remainder": True,
        "steps_per_epoch": cfg.train.steps_per_epoch,
    }
    if not isinstance(train, data_lib.ImageArrays):  # a stream: ImageNet through tf.data
        plan = distribute.active()
        if tf_data_feed() and (plan is None or plan.scheme != "multiworker"):
            # fit reads the stream's tf.data pipelines, not Keras' one-thread
            # adapter of StreamBatches; the same batches (stream_tf_dataset).
            # Several TensorFlow workers keep the adapter (each reads every batch
            # and keeps its part): tf.distribute's auto-sharding of these
            # pipelines is not tested here.
            ds, feed_epoch, _ = data_lib.stream_tf_dataset(
                train,
                cfg.train.batch_size,
                cfg.train.seed,
                initial_epoch,
                last_epoch or cfg.train.epochs,
                cfg.train.steps_per_epoch,
            )
            return ds, [feed_epoch], None
        batches = train.batches(cfg.train.batch_size, **order)
        # JAX with several processes: each reads its share of every global batch.
        return distribute.shard_batches(batches), [], None
    batches = data_lib.ArrayBatches(train.images, train.labels, cfg.train.batch_size, **order)
    if tf_data_feed():
        ds, feed_epoch = data_lib.tf_dataset(batches)
        return ds, [feed_epoch], None
    # Not Keras' own PyDataset feed: its read-ahead carries batches over from one
    # epoch to the next, a number that depends on thread timing (see StepFeed).
    feed, feed_epoch = data_lib.step_feed(distribute.shard_batches(batches), initial_epoch)
    return feed, [feed_epoch], None


def _train(cfg, run_dir, data, precision, verbose, epoch_limit, extra_callbacks) -> dict:
    runs.write_env(
        run_dir,
        runs.environment(
            {
                "backend": keras.backend.backend(),
                "device": device_description(),
                "precision": precision,
                "num_classes": data.num_classes,
                "n_train": len(data.train),
                "n_val": len(data.val),
            }
        ),
    )
    model, net = build_training_model(cfg, data.stats, data.num_classes)
    compile_model(model, cfg)
    distribute.place(model)
    state = load_state(run_dir, model) or {}
    initial_epoch = int(state.get("completed_epochs", 0))
    # Rows of an epoch whose state was not saved (killed in between) are dropped: the
    # epoch runs again, so metrics.csv ends with every epoch exactly once.
    runs.truncate_metrics(run_dir, initial_epoch)
    if initial_epoch and verbose:
        print(f"[reproduce] resuming {run_dir} after epoch {initial_epoch}")

    cbs = training_callbacks(cfg, run_dir, state, len(data.train))
    last_epoch = min(cfg.train.epochs, epoch_limit) if epoch_limit else cfg.train.epochs
    train_batches, feed_callbacks, steps_per_epoch = training_feed(cfg, data.train, initial_epoch, last_epoch)
    val_batches = data_lib.ArrayBatches(data.val.images, data.val.labels, cfg.eval.batch_size, shuffle=False)
    if initial_epoch < last_epoch and not state.get("stopped", False):
        try:
            model.fit(
                train_batches,
                validation_data=val_batches,
                epochs=last_epoch,
                initial_epoch=initial_epoch,
                steps_per_epoch=steps_per_epoch,
                callbacks=cbs.all + feed_callbacks + extra_callbacks,
                shuffle=False,
                # To a file or pipe (nohup, CI): one line per epoch, not bar redraws.
                verbose=verbose if (verbose != 1 or sys.stdout.isatty()) else 2,
            )
        finally:
            if hasattr(train_batches, "close"):  # the feed's read-ahead threads
                train_batches.close()
    if cbs.divergence.where is not None:
        # The input pipeline stopped mid-epoch; freed now, not at interpreter exit
        # (where TensorFlow logs an error about finalizing its iterator).
        del train_batches, val_batches
        gc.collect()
        _diverged(cfg, run_dir, model, precision, cbs.divergence.where)

    # Evaluation of the final weights (§6): centre crop and ten views on validation,
    # and the centre crop on (a sample of) the training images for the overfitting gap.
    t0 = time.perf_counter()
    val = evaluate(cfg, model, net, data.stats, data.val, cfg.eval.ten_view)
    sample = training_sample(cfg, data.train)
    tr = evaluate(cfg, model, net, data.stats, sample, ten_view=False)
    dead = fc7_dead_fraction(cfg, model, net, sample)
    eval_time = time.perf_counter() - t0
    runs.write_val_correct(run_dir, **val)
    _save_conv1(run_dir, net)

    rows = runs.read_metrics_rows(run_dir)
    last = rows[-1] if rows else {}
    # Throughput without the first epoch (it compiles), when there is more than one.
    ips = [r["images_per_s"] for r in rows[1:] if r.get("images_per_s")] or [
        r["images_per_s"] for r in rows if r.get("images_per_s")
    ]
    rec = cbs.recorder
    result = {
        "status": "ok",
        "epochs": len(rows),
        **validation_errors(val),
        "train_top1_err": last.get("top1_err"),
        "train_top5_err": last.get("top5_err"),
        "train_top1_err_clean": float(1 - tr["top1_center"].mean()),
        "wall_time_s": round(rec.wall + eval_time, 2),
        "images_per_s": round(float(np.mean(ips)), 1) if ips else None,
        "epochs_to_target": rec.epochs_to_target,
        # Stopped by epoch_limit: neither the target reached nor the epochs run.
        "censored": bool(rec.epochs_to_target is None and len(rows) < cfg.train.epochs),
        "n_val": int(len(val["labels"])),
        "precision": precision,
    }
    if dead is not None:  # a sign of a collapsed run (the report's collapse rows)
        result["fc7_dead_fraction"] = round(dead, 4)
    # The inference model (model.keras, classes.json) comes before result.json, so
    # every finished run has one.
    runs.write_model(run_dir, inference_model(cfg, net, data.stats), data.class_names)
    runs.write_result(run_dir, result)  # last, atomically: the run is finished
    if verbose:
        tv = result["val_top1_err_10view"]
        print(
            f"[reproduce] done: val top-1 {100 * result['val_top1_err']:.2f}% "
            f"top-5 {100 * result['val_top5_err']:.2f}%"
            + (f", ten views {100 * tv:.2f}%" if tv is not None else "")
            + f" -> {run_dir / runs.RESULT}"
        )
    return result


def _diverged(cfg, run_dir, model, precision, where: dict) -> None:
    """Record the failure and raise TrainingDiverged with what to try instead."""
    lr = float(np.asarray(model.optimizer.learning_rate))
    msg = _divergence_message(cfg, run_dir, where, lr, precision)
    runs.write_failure(run_dir, "diverged", {**where, "learning_rate": lr, "message": msg})
    raise TrainingDiverged(msg)


def _divergence_message(cfg: Config, run_dir: Path, w: dict, lr: float, precision: str) -> str:
    """What diverged, a rate that can help, and exactly what is kept."""
    used = cfg.train.learning_rate
    preset = (runs.read_json(run_dir / runs.CONFIG).get("meta") or {}).get("preset")
    known = get_config(preset) if preset in PRESETS else Config()
    where = f"the {preset} preset's" if preset in PRESETS else "the paper's"
    if known.train.learning_rate < used:
        advice = f"{where} learning rate (--set train.learning_rate={known.train.learning_rate:g})"
    else:
        advice = f"a 10x smaller learning rate (--set train.learning_rate={used / 10:g})"
    if cfg.model.init == "paper":
        advice += " or the caffe bias init (--set model.init=caffe)"
    done = len(runs.read_metrics_rows(run_dir))
    if done == 0:
        kept = (
            f"No epoch completed, so no weights were saved: {run_dir} holds the run's description and {runs.FAILURE}."
        )
    else:
        epochs = f"Epochs 1-{done} completed" if done > 1 else "Epoch 1 completed"
        kept = (
            f"{epochs}: the weights after epoch {done} are kept in {run_dir / runs.STATE} "
            f"and each epoch's row in {run_dir / runs.METRICS}; the same command "
            f"resumes after epoch {done} at the same rate."
        )
    return (
        f"training diverged: the loss became {w['loss']} at epoch {w['epoch'] + 1}, "
        f"batch {w['batch']} (learning rate {lr:g}, init {cfg.model.init!r}, "
        f"precision {precision}). Try {advice}; a changed setting is a new experiment "
        f"and starts from scratch in its own run folder. {kept}"
    )


def _save_conv1(run_dir, net) -> None:
    """conv1's kernels per tower, for the report's figure of them (§6.1, Fig. 3)."""
    kernels = {}
    for name, key in (("conv1_a", "a"), ("conv1_b", "b"), ("conv1", "single")):
        try:
            layer = net.get_layer(name)
        except ValueError:
            continue
        kernels[key] = np.asarray(layer.kernel.numpy(), np.float32)
    if kernels:
        runs.write_conv1(run_dir, **kernels)
