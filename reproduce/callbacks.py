"""The trainer's Keras callbacks: the paper's learning-rate schedule (§5), the
divergence check, and the per-epoch record (metrics.csv and the resumable state).

`training_callbacks` makes the list `reproduce.train` passes to `model.fit` (the
throughput benchmark measures `fit` with the same list). Each callback starts from
the saved state of an interrupted run (`state`, the info dict of
`reproduce.checkpoint.load_state`), so a resumed run continues exactly.
"""

from __future__ import annotations

import importlib.util
import math
import time
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np

from reproduce import runs
from reproduce.checkpoint import save_state
from reproduce.config import Config


class LearningRate(keras.callbacks.Callback):
    """The paper's schedule (§5): "divide the learning rate by 10 when the
    validation error rate stopped improving with the current learning rate", at
    most `train.max_drops` times; or fixed steps (`train.step_epochs`) for
    budgeted runs; or constant."""

    def __init__(self, cfg: Config, state: dict):
        super().__init__()
        self.train_cfg = cfg.train
        self.lr0 = cfg.train.learning_rate
        self.best = state.get("best", math.inf)
        self.wait = state.get("wait", 0)
        self.drops = state.get("drops", 0)

    def lr_for(self, epoch: int) -> float:
        t = self.train_cfg
        if t.schedule == "step":
            return self.lr0 * 0.1 ** sum(1 for e in t.step_epochs if epoch >= e)
        if t.schedule == "plateau":
            return self.lr0 * 0.1**self.drops
        return self.lr0

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate.assign(self.lr_for(epoch))

    def on_epoch_end(self, epoch, logs=None):
        t = self.train_cfg
        err = (logs or {}).get("val_top1_err")
        if t.schedule != "plateau" or err is None:
            return
        if err < self.best - 1e-4:
            self.best, self.wait = float(err), 0
        else:
            self.wait += 1
            if self.wait >= t.plateau_patience and self.drops < t.max_drops:
                self.drops += 1
                self.wait = 0


class Divergence(keras.callbacks.Callback):
    """Where training diverged (the loss became NaN or infinite), for the message.

    This class has no per-batch hook: `EpochRecorder` checks the epoch's mean
    loss at the end of every epoch (a NaN or infinite step makes the mean NaN or
    infinite too) and fills `where`. That is the check on TensorFlow, whose
    Keras trainer dispatches callbacks synchronously: a per-batch hook there
    would read the loss (float(loss), a host-device sync) after every step.
    `BatchDivergence` adds the per-batch stop where that costs nothing.
    """

    def __init__(self):
        super().__init__()
        self.where = None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch


class BatchDivergence(Divergence):
    """`Divergence` that also stops within the epoch: TerminateOnNaN's stop,
    remembering where.

    async_safe: on JAX, Keras then runs the per-batch check in its callback
    thread instead of making the training loop wait for every step's loss
    (float(loss) is a device sync; without this the accelerator idles while the
    host stages each next batch: experiments/perf/perf_log.md). The stop comes a
    few steps later; a diverged state is never checkpointed either way.
    """

    async_safe = True

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            if self.where is None:
                self.where = {"epoch": self.epoch, "batch": batch, "loss": float(loss)}
            # `self._model`, not `self.model`: on JAX the public property syncs
            # the training state into the model's variables, and from this
            # callback thread that races the training loop, which has already
            # donated those buffers to the next step ("Buffer has been deleted
            # or donated"). Setting the flag needs no state.
            self._model.stop_training = True


class EpochRecorder(keras.callbacks.Callback):
    """After every completed epoch: its metrics.csv row, then, every
    `train.checkpoint_every` epochs, the resumable state (replaced atomically, so
    a kill at any moment loses at most the epochs since the last one; a resumed
    run drops their rows and trains them again, from the same state and the same
    (seed, epoch) batches). The state is also saved after the last epoch and when
    training stops early. Records the first epoch whose training error reaches
    `train.stop_at_train_error` (the Figure 1 experiment, §3.1) and stops there
    unless `train.stop_at_target` is off."""

    def __init__(
        self, cfg: Config, run_dir, state: dict, n_train: int, learning_rate: LearningRate, divergence: Divergence
    ):
        super().__init__()
        self.cfg, self.run_dir, self.n_train = cfg, Path(run_dir), n_train
        self.learning_rate, self.divergence = learning_rate, divergence
        self.wall = state.get("wall_time_s", 0.0)
        self.epochs_to_target = state.get("epochs_to_target")
        self.t0 = None

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def images_per_epoch(self) -> int:
        t = self.cfg.train
        full = (self.n_train // t.batch_size) * t.batch_size or self.n_train  # drop_remainder
        return min(full, t.steps_per_epoch * t.batch_size) if t.steps_per_epoch else full

    def checkpoint_due(self, epoch: int) -> bool:
        """Whether the state is saved after `epoch` (0-based): every
        `train.checkpoint_every` epochs, after the last epoch of this fit, and
        when training stops early (so a finished run always has its state)."""
        every = max(1, int(self.cfg.train.checkpoint_every))
        last = (self.params or {}).get("epochs")
        return (epoch + 1) % every == 0 or bool(self.model.stop_training) or last is None or epoch + 1 >= last

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        dt = time.perf_counter() - self.t0
        self.wall += dt
        nan = self.divergence
        if nan.where is not None or not np.isfinite(logs.get("loss", 0.0)):
            if nan.where is None:
                nan.where = {"epoch": epoch, "batch": "end of epoch", "loss": float(logs.get("loss", float("nan")))}
            self.model.stop_training = True
            return  # never checkpoint a diverged state
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
            "images_per_s": round(self.images_per_epoch() / dt, 1) if dt > 0 else None,
        }
        target = self.cfg.train.stop_at_train_error
        if target and self.epochs_to_target is None and logs.get("top1_err", 1.0) <= target:
            self.epochs_to_target = epoch + 1
            self.model.stop_training = bool(self.cfg.train.stop_at_target)
        runs.append_metrics_row(self.run_dir, row)
        if not self.checkpoint_due(epoch):
            return
        lr = self.learning_rate
        save_state(
            self.run_dir,
            self.model,
            {
                "completed_epochs": epoch + 1,
                "best": lr.best,
                "wait": lr.wait,
                "drops": lr.drops,
                "wall_time_s": self.wall,
                "epochs_to_target": self.epochs_to_target,
                "stopped": bool(self.model.stop_training),
            },
        )


class TrainingCallbacks(NamedTuple):
    learning_rate: LearningRate
    divergence: Divergence
    recorder: EpochRecorder
    all: list  # what model.fit gets, in order


def training_callbacks(cfg: Config, run_dir, state: dict, n_train: int) -> TrainingCallbacks:
    """The trainer's callbacks for one run, resuming from `state` ({} for a new run)."""
    lr = LearningRate(cfg, state)
    # TensorFlow: no per-batch hook (the epoch-end check); elsewhere the
    # per-batch stop, which Keras dispatches off the training loop's thread.
    tf_backend = keras.backend.backend() == "tensorflow"
    nan = Divergence() if tf_backend else BatchDivergence()
    rec = EpochRecorder(cfg, run_dir, state, n_train, lr, nan)
    cbs = [lr, nan, rec]
    # TensorFlow backend with the tensorboard package only: on JAX Keras would
    # wait for every step's results (experiments/perf/perf_log.md, "callbacks");
    # metrics.csv holds the same numbers.
    if tf_backend and importlib.util.find_spec("tensorboard") is not None:
        cbs.append(EpochTensorBoard(log_dir=str(Path(run_dir) / runs.TENSORBOARD), write_graph=False))
    return TrainingCallbacks(lr, nan, rec, cbs)


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """TensorBoard's per-epoch scalars without its per-batch hooks.

    With `update_freq="epoch"`, no graph and no profiling, the hooks write
    nothing, but their presence alone makes a callback list per-batch work."""

    on_train_batch_begin = keras.callbacks.Callback.on_train_batch_begin
    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end


def per_batch_hooks(callbacks) -> list:
    """Names of the callbacks with a per-batch training hook that Keras must run
    on the training loop (not marked async_safe): each one, on a GPU, costs a
    host-device sync per step where it reads the step's results."""
    base = keras.callbacks.Callback
    return sorted(
        type(cb).__name__
        for cb in callbacks
        if not getattr(cb, "async_safe", False)
        and (
            type(cb).on_train_batch_end is not base.on_train_batch_end
            or type(cb).on_batch_end is not base.on_batch_end
            or type(cb).on_train_batch_begin is not base.on_train_batch_begin
        )
    )
