"""Training: the paper's optimizer and schedule through `model.fit`, resumable.

`train(cfg, run_dir)` runs one experiment into one run directory (format owned by
`reproduce.runs`). Starting it again in the same directory resumes from the last
completed epoch (the state file is replaced atomically once per epoch, so a kill -9
at any moment loses at most the epoch in flight) and does nothing if the run has
already finished.

The update rule is the paper's (§5)::

    v <- 0.9 v - 0.0005 * eps * w - eps * dL/dw
    w <- w + v

Keras' SGD with momentum is exactly ``v <- m v - eps g; w <- w + v``; the weight
decay enters `g` through an L2 term of coefficient 0.0005 / 2 = 0.00025 on every
kernel (see `reproduce.model`), so it goes through the momentum term like the
paper's, not decoupled. Biases are not decayed: cuda-convnet, the code the paper
ran, sets the weight-decay coefficient on weights only.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import numpy as np

from reproduce import distribute, runs
from reproduce.config import Config, validate


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class RunConflict(runs.RunDirError):
    """The run directory holds a run of a different configuration, or a damaged one."""


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


def _metrics():
    import keras

    @keras.saving.register_keras_serializable(package="reproduce")
    class TopKError(keras.metrics.SparseTopKCategoricalAccuracy):
        """1 - top-k accuracy: the paper reports error rates (§6)."""

        def result(self):
            return 1.0 - super().result()

    return [TopKError(k=1, name="top1_err"), TopKError(k=5, name="top5_err")]


# --------------------------------------------------------------------------------------
# Precision and devices
# --------------------------------------------------------------------------------------


def accelerator() -> Optional[str]:
    """'gpu'/'tpu' if the active backend sees one, else None."""
    import keras

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
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            devs = jax.devices()
            return f"{len(devs)} x {devs[0].device_kind}"
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return f"{len(gpus)} x {details.get('device_name', 'GPU')}"
    except Exception:  # pragma: no cover - description only
        pass
    import platform

    name = ""
    try:  # the CPU's model name, where Linux tells it
        with open("/proc/cpuinfo") as f:
            name = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    return f"CPU ({name or platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def resolve_precision(cfg: Config) -> str:
    if cfg.train.precision != "auto":
        return cfg.train.precision
    return "mixed_bfloat16" if accelerator() else "float32"


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


def build_training_model(cfg: Config, stats, num_classes: int):
    """uint8 SxS images -> Augment (crops, flips, PCA colour, mean; §2, §4.1) -> net.

    Returns (model, net): `net` is the paper's network on CxC float input, `model`
    the one that is trained and saved.
    """
    import keras

    from reproduce.augment import Augment
    from reproduce.model import build_model

    d = cfg.data
    net = build_model(
        cfg.model,
        image_size=d.crop_size,
        num_classes=num_classes,
        weight_decay=cfg.train.weight_decay,
        seed=cfg.train.seed,
    )
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


def compile_model(model, cfg: Config, steps_per_execution: Optional[int] = None):
    """The paper's optimizer (§5; decay is the kernels' L2 term), loss and metrics."""
    import keras

    model.compile(
        optimizer=keras.optimizers.SGD(
            learning_rate=cfg.train.learning_rate, momentum=cfg.train.momentum
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=_metrics(),
        steps_per_execution=steps_per_execution or cfg.train.steps_per_execution,
    )
    return model


def build_ten_view_model(cfg: Config, net, stats):
    """uint8 SxS -> ten CxC views (§4.1) -> net -> softmax averaged over views."""
    import keras

    from reproduce.augment import ten_views

    d = cfg.data
    mean = np.asarray(stats.mean_image, np.float32) if d.mean_subtract else None

    class TenViews(keras.layers.Layer):
        def call(self, x):
            v = ten_views(x, d.crop_size, mean)  # (10, B, C, C, 3)
            return keras.ops.reshape(v, (-1, d.crop_size, d.crop_size, 3))

        def compute_output_shape(self, shape):
            return (None, d.crop_size, d.crop_size, 3)

    class AverageSoftmax(keras.layers.Layer):
        def call(self, logits):
            p = keras.ops.softmax(keras.ops.cast(logits, "float32"), axis=-1)
            p = keras.ops.reshape(p, (10, -1, keras.ops.shape(p)[-1]))
            return keras.ops.mean(p, axis=0)

        def compute_output_shape(self, shape):
            return (None, shape[-1])

    inputs = keras.Input((d.image_size, d.image_size, 3), dtype="uint8")
    model = keras.Model(inputs, AverageSoftmax(dtype="float32")(net(TenViews()(inputs))))
    return distribute.place(model)


# --------------------------------------------------------------------------------------
# Resumable state
# --------------------------------------------------------------------------------------

STATE_FILE = "state.npz"


def _variables(model):
    return list(model.trainable_variables) + list(model.non_trainable_variables)


def save_state(run_dir: Path, model, info: dict) -> None:
    """Weights, optimizer slots and `info` in one file, replaced atomically."""
    arrays = {}
    for i, v in enumerate(_variables(model)):
        arrays[f"m{i:04d}"] = np.asarray(v.numpy() if hasattr(v, "numpy") else v)
    for i, v in enumerate(model.optimizer.variables):
        arrays[f"o{i:04d}"] = np.asarray(v.numpy() if hasattr(v, "numpy") else v)
    arrays["info"] = np.frombuffer(json.dumps(info).encode(), dtype=np.uint8)
    d = Path(run_dir) / runs.STATE
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{STATE_FILE}.{os.getpid()}.tmp.npz"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, d / STATE_FILE)


def load_state(run_dir: Path, model) -> Optional[dict]:
    """Restore weights and optimizer from the state file; returns its info or None."""
    p = Path(run_dir) / runs.STATE / STATE_FILE
    if not p.exists():
        return None
    try:
        z = np.load(p)
        info = json.loads(bytes(z["info"]).decode())
    except Exception as e:  # a state file is written atomically; this is disk damage
        raise RunConflict(
            f"the training state {p} cannot be read ({e}). Delete it to restart the run "
            f"from scratch; metrics.csv will be rewritten."
        ) from None
    mvars = _variables(model)
    opt = model.optimizer
    if not opt.built:
        opt.build(model.trainable_variables)
    ovars = list(opt.variables)
    mkeys = sorted(k for k in z.files if k.startswith("m"))
    okeys = sorted(k for k in z.files if k.startswith("o"))
    if len(mkeys) != len(mvars) or len(okeys) != len(ovars):
        raise RunConflict(
            f"the saved state in {p} does not match this model ({len(mkeys)} saved "
            f"variables, {len(mvars)} expected). Was the code changed? Delete {p.parent} "
            "to start over."
        )
    for k, v in zip(mkeys, mvars):
        v.assign(z[k].astype(v.dtype) if hasattr(v, "dtype") else z[k])
    for k, v in zip(okeys, ovars):
        v.assign(z[k])
    return info


# --------------------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------------------


def _callbacks(cfg, run_dir, model, state, n_train):
    import keras

    class LearningRate(keras.callbacks.Callback):
        """The paper's schedule (§5): lr / 10 when the validation error stops
        improving, at most `max_drops` times; or fixed steps for budgeted runs."""

        def __init__(self):
            super().__init__()
            t = cfg.train
            self.lr0 = t.learning_rate
            self.best = state.get("best", math.inf)
            self.wait = state.get("wait", 0)
            self.drops = state.get("drops", 0)

        def lr_for(self, epoch):
            t = cfg.train
            if t.schedule == "step":
                return self.lr0 * 0.1 ** sum(1 for e in t.step_epochs if epoch >= e)
            if t.schedule == "plateau":
                return self.lr0 * 0.1**self.drops
            return self.lr0

        def on_epoch_begin(self, epoch, logs=None):
            self.model.optimizer.learning_rate.assign(self.lr_for(epoch))

        def on_epoch_end(self, epoch, logs=None):
            t = cfg.train
            if t.schedule != "plateau":
                return
            err = (logs or {}).get("val_top1_err")
            if err is None:
                return
            if err < self.best - 1e-4:
                self.best, self.wait = float(err), 0
            else:
                self.wait += 1
                if self.wait >= t.plateau_patience and self.drops < t.max_drops:
                    self.drops += 1
                    self.wait = 0

    class Divergence(keras.callbacks.Callback):
        """TerminateOnNaN's stop, remembering where, so the message can say what
        diverged (TerminateOnNaN itself also prints a line of its own).

        async_safe: on JAX, Keras then runs the per-batch check in its callback
        thread instead of making the training loop wait for every step's loss
        (float(loss) is a device sync; without this the GPU idles while the host
        stages each next batch: docs/perf_log.md). The stop comes a few steps
        later; a diverged state is never checkpointed either way.
        """

        async_safe = True

        def __init__(self):
            super().__init__()
            self.where = None
            self.epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not np.isfinite(float(loss)):
                if self.where is None:
                    self.where = {"epoch": self.epoch, "batch": batch, "loss": float(loss)}
                self.model.stop_training = True

    class EpochRecorder(keras.callbacks.Callback):
        """metrics.csv row, then the resumable state, after every completed epoch."""

        def __init__(self, lr_cb, nan_cb):
            super().__init__()
            self.lr_cb, self.nan_cb = lr_cb, nan_cb
            self.wall = state.get("wall_time_s", 0.0)
            self.epochs_to_target = state.get("epochs_to_target")

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            dt = time.perf_counter() - self.t0
            self.wall += dt
            if self.nan_cb.where is not None or not np.isfinite(logs.get("loss", 0.0)):
                if self.nan_cb.where is None:
                    self.nan_cb.where = {"epoch": epoch, "batch": "end of epoch",
                                         "loss": float(logs.get("loss", float("nan")))}
                self.model.stop_training = True
                return  # never checkpoint a diverged state
            steps = cfg.train.steps_per_epoch
            full = (n_train // cfg.train.batch_size) * cfg.train.batch_size or n_train  # drop_remainder
            n = min(full, steps * cfg.train.batch_size) if steps else full
            row = {
                "epoch": epoch,
                "loss": logs.get("loss"),
                "top1_err": logs.get("top1_err"),
                "top5_err": logs.get("top5_err"),
                "val_loss": logs.get("val_loss"),
                "val_top1_err": logs.get("val_top1_err"),
                "val_top5_err": logs.get("val_top5_err"),
                "lr": float(np.asarray(self.model.optimizer.learning_rate)),
                "epoch_time_s": round(dt, 3),
                "images_per_s": round(n / dt, 1) if dt > 0 else None,
            }
            target = cfg.train.stop_at_train_error
            if target and self.epochs_to_target is None and logs.get("top1_err", 1.0) <= target:
                self.epochs_to_target = epoch + 1
                self.model.stop_training = True
            runs.append_metrics_row(run_dir, row)
            save_state(
                run_dir,
                self.model,
                {
                    "completed_epochs": epoch + 1,
                    "best": self.lr_cb.best,
                    "wait": self.lr_cb.wait,
                    "drops": self.lr_cb.drops,
                    "wall_time_s": self.wall,
                    "epochs_to_target": self.epochs_to_target,
                    "stopped": bool(self.model.stop_training),
                },
            )

    lr_cb = LearningRate()
    nan_cb = Divergence()
    rec = EpochRecorder(lr_cb, nan_cb)
    cbs = [lr_cb, nan_cb, rec]
    # Keras' TensorBoard writer needs the tensorboard package (absent on the JAX-only
    # GPU machine); metrics.csv holds the same numbers.
    # TensorFlow backend only: the callback has per-batch hooks, which on JAX make
    # Keras wait for every step's results (docs/perf_log.md, "callbacks").
    if (keras.backend.backend() == "tensorflow"
            and importlib.util.find_spec("tensorboard") is not None):
        cbs.append(
            keras.callbacks.TensorBoard(
                log_dir=str(Path(run_dir) / runs.TENSORBOARD), write_graph=False
            )
        )
    return cbs, lr_cb, nan_cb, rec


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


def _correct(scores: np.ndarray, labels: np.ndarray):
    top5 = np.argsort(-scores, axis=1)[:, :5]
    return top5[:, 0] == labels, (top5 == labels[:, None]).any(axis=1)


def evaluate(cfg: Config, model, net, stats, arrays, ten_view: bool) -> dict:
    """Centre-crop (and ten-view) predictions for every image of `arrays`."""
    from reproduce.data import ArrayBatches

    batches = ArrayBatches(arrays.images, None, cfg.eval.batch_size, shuffle=False)
    labels = np.asarray(arrays.labels)
    out = {"labels": labels}
    logits = model.predict(batches, verbose=0)
    out["top1_center"], out["top5_center"] = _correct(np.asarray(logits, np.float32), labels)
    if ten_view:
        tv = build_ten_view_model(cfg, net, stats)
        b10 = ArrayBatches(arrays.images, None, max(1, cfg.eval.batch_size // 10), shuffle=False)
        probs = tv.predict(b10, verbose=0)
        out["top1_10view"], out["top5_10view"] = _correct(np.asarray(probs, np.float32), labels)
    return out


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


def _check_same_run(cfg: Config, run_dir: Path, data_id: str) -> None:
    """A run directory holds one experiment (`config.experiment_identity`) and seed."""
    from reproduce.config import ConfigError, experiment_identity, fingerprint_of

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
    runs.write_config(run_dir, cfg.to_dict(), {
        **meta, "fingerprint": cfg.fingerprint(data_id), "data_id": data_id,
        "seed": cfg.train.seed})


def train(cfg: Config, run_dir, meta: Optional[dict] = None, verbose: int = 1,
          epoch_limit: Optional[int] = None) -> dict:
    """Train one run into `run_dir` (resuming or skipping as needed); returns the result.

    epoch_limit: stop after this many epochs in all, even if `train.epochs` is more
    (the Figure 1 grid stops a rate once it can no longer be the fastest). Such a
    run is finished with ``censored: true`` in result.json; a later call with a
    higher limit (or none) trains it on from its state. The limit is not part of
    the configuration: it decides how long to look, not what is computed."""
    import keras

    from reproduce import data as data_lib

    validate(cfg)
    run_dir = Path(run_dir)
    data_id = cfg.data_id()
    _check_same_run(cfg, run_dir, data_id)
    done = _finished_result(run_dir, epoch_limit, verbose)
    if done is not None:
        return done
    meta = dict(meta or {})
    meta.setdefault("command", " ".join(sys.argv))
    # distribute.scheme (§3.2 towers, mirrored, multiworker): entered before anything
    # touches a device, since a cluster must be set up before TF/JAX initialize.
    _persistent_compilation_cache()
    with distribute.scope(cfg):
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
                return _train(cfg, run_dir, precision, verbose, data_lib, data, epoch_limit)
            finally:
                keras.mixed_precision.set_global_policy("float32")


def _finished_result(run_dir: Path, epoch_limit, verbose) -> Optional[dict]:
    if runs.is_finished(run_dir) and not runs.can_extend(run_dir, epoch_limit):
        if verbose:
            print(f"[reproduce] {run_dir} already finished; nothing to do.")
        return runs.read_json(run_dir / runs.RESULT)
    return None


def _persistent_compilation_cache() -> None:
    """JAX: keep compiled programs on disk, so the runs of one configuration (its
    seeds, a resumed run) compile once ($REPRODUCE_JAX_CACHE, default
    <data cache root>/jax; empty disables)."""
    import keras

    if keras.backend.backend() != "jax":
        return
    import jax

    path = os.environ.get("REPRODUCE_JAX_CACHE")
    if path is None:
        from reproduce.data.cache import cache_root

        path = str(cache_root("") / "jax")
    if path and not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _train(cfg, run_dir, precision, verbose, data_lib, data, epoch_limit=None):
    import keras

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

    n_train = len(data.train)
    # Shuffling is ArrayBatches' own, from (seed, epoch), so a resumed run sees the
    # same order; fit(shuffle=False) below keeps Keras from re-permuting batches.
    if isinstance(data.train, data_lib.Stream):  # ImageNet through tf.data
        batches = data.train.batches(cfg.train.batch_size, shuffle=True,
                                     seed=cfg.train.seed, epoch=initial_epoch)
    else:
        # drop_remainder: every training step has the same shape, so the train step
        # compiles once (a last partial batch compiles a second program: tens of
        # seconds on a GPU, per run). Each epoch leaves out < batch_size images.
        batches = data_lib.ArrayBatches(
            data.train.images, data.train.labels, cfg.train.batch_size, shuffle=True,
            seed=cfg.train.seed, epoch=initial_epoch, drop_remainder=True,
        )
    train_batches = distribute.shard_batches(batches)
    val_batches = data_lib.ArrayBatches(
        data.val.images, data.val.labels, cfg.eval.batch_size, shuffle=False
    )
    cbs, lr_cb, nan_cb, rec = _callbacks(cfg, run_dir, model, state, n_train)
    stopped = state.get("stopped", False)
    last_epoch = min(cfg.train.epochs, epoch_limit) if epoch_limit else cfg.train.epochs
    if initial_epoch < last_epoch and not stopped:
        model.fit(
            train_batches,
            validation_data=val_batches,
            epochs=last_epoch,
            initial_epoch=initial_epoch,
            steps_per_epoch=cfg.train.steps_per_epoch or None,
            callbacks=cbs,
            shuffle=False,
            # To a file or pipe (nohup, CI): one line per epoch, not bar redraws.
            verbose=verbose if (verbose != 1 or sys.stdout.isatty()) else 2,
        )
    if nan_cb.where is not None:
        w = nan_cb.where
        lr = float(np.asarray(model.optimizer.learning_rate))
        msg = _divergence_message(cfg, run_dir, w, lr, precision)
        runs.write_failure(run_dir, "diverged", {**w, "learning_rate": lr, "message": msg})
        # The input pipeline stopped mid-epoch; freed now, not at interpreter exit
        # (where TensorFlow logs an error about finalizing its iterator).
        del train_batches, val_batches, batches, cbs
        gc.collect()
        raise TrainingDiverged(msg)

    # Evaluation of the final weights (§6): centre crop and ten views on validation,
    # and the centre crop on (a sample of) the training images for the overfitting gap.
    t0 = time.perf_counter()
    val = evaluate(cfg, model, net, data.stats, data.val, cfg.eval.ten_view)
    if isinstance(data.train, data_lib.Stream):  # the first 10k streamed images
        sb = data.train.batches(250, shuffle=False)
        parts = [sb[i] for i in range(min(len(sb), 40))]
        sample = SimpleNamespace(images=np.concatenate([p[0] for p in parts]),
                                 labels=np.concatenate([p[1] for p in parts]))
    else:
        sample = data_lib.subset(data.train, min(n_train, 10000), seed=cfg.train.seed)
    tr = evaluate(cfg, model, net, data.stats, sample, ten_view=False)
    eval_time = time.perf_counter() - t0
    runs.write_val_correct(run_dir, **val)
    _save_conv1(run_dir, net)

    rows = runs.read_metrics_rows(run_dir)
    last = rows[-1] if rows else {}
    ips = [r["images_per_s"] for r in rows[1:] if r.get("images_per_s")] or [
        r["images_per_s"] for r in rows if r.get("images_per_s")
    ]
    result = {
        "status": "ok",
        "epochs": len(rows),
        "val_top1_err": float(1 - val["top1_center"].mean()),
        "val_top5_err": float(1 - val["top5_center"].mean()),
        "val_top1_err_10view": float(1 - val["top1_10view"].mean()) if "top1_10view" in val else None,
        "val_top5_err_10view": float(1 - val["top5_10view"].mean()) if "top5_10view" in val else None,
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


def _divergence_message(cfg: Config, run_dir: Path, w: dict, lr: float, precision: str) -> str:
    """What diverged, a rate that can help, and exactly what is kept."""
    from reproduce.config import PRESETS, get_config

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
        kept = (f"No epoch completed, so no weights were saved: {run_dir} holds the run's "
                f"description and {runs.FAILURE}.")
    else:
        epochs = f"Epochs 1-{done} completed" if done > 1 else "Epoch 1 completed"
        kept = (f"{epochs}: the weights after epoch {done} are kept in {run_dir / runs.STATE} "
                f"and each epoch's row in {run_dir / runs.METRICS}; the same command "
                f"resumes after epoch {done} at the same rate.")
    return (
        f"training diverged: the loss became {w['loss']} at epoch {w['epoch'] + 1}, "
        f"batch {w['batch']} (learning rate {lr:g}, init {cfg.model.init!r}, "
        f"precision {precision}). Try {advice}; a changed setting is a new experiment "
        f"and starts from scratch in its own run folder. {kept}"
    )


def _save_conv1(run_dir, net) -> None:
    kernels = {}
    for name, key in (("conv1_a", "a"), ("conv1_b", "b"), ("conv1", "single")):
        try:
            layer = net.get_layer(name)
        except ValueError:
            continue
        kernels[key] = np.asarray(layer.kernel.numpy(), np.float32)
    if kernels:
        runs.write_conv1(run_dir, **kernels)
