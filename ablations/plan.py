"""What a suite will cost: the plan printed before training, the progress line during it.

Time per run comes from what this machine has measured, most specific first:

1. finished runs of the same experiment (other seeds) made on this host and
   device (`on_this_machine`);
2. finished runs with the same label, then any run of the preset, on this host
   and device, scaled by their epochs and training images;
3. otherwise a calibration: a few training steps of the preset's baseline net on
   this machine (the compile is timed apart), images/s times the run's images,
   plus what every epoch costs whatever its images (the validation pass's start,
   the checkpoint, metrics.csv and the other callbacks: a few tenths of a second,
   which on the smoke preset's 4-step epochs is most of an epoch).

Seconds per image are this machine's; the epochs of a run that stops at a
training error (Figure 1) are the experiment's, so they come from every
machine's runs (`expected_epochs`).

Where several runs qualify, their median counts, so that one run slowed by a
neighbour on the machine does not skew the rest. Figures are estimates for
planning; every run records its real wall time.
"""

from __future__ import annotations

import math
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

# An image's forward pass costs about this share of its training step (forward,
# backward, update): what validation and the final evaluation cost per image.
FORWARD_SHARE = 1 / 3
# A suite longer than this on the machine it starts on gets a warning that names
# a smaller preset.
LONG_SUITE_S = 4 * 3600
# Presets with a tier sized for a CPU (named when a suite would take too long).
SMALLER = {"imagenette": "imagenette-cpu", "imagenet": "imagenette"}


@dataclass
class Job:
    label: str
    seed: int
    run_dir: Path
    cfg: object  # reproduce.config.Config
    epoch_limit: Optional[int] = None
    estimate_s: Optional[float] = None
    estimate_kind: str = ""  # "history", "scaled", "calibrated", "upper bound"


@dataclass
class SuitePlan:
    todo: list = field(default_factory=list)  # [Job]
    done: list = field(default_factory=list)  # [Path] finished here
    published: list = field(default_factory=list)  # [Path] finished in a published store
    pending: list = field(default_factory=list)  # descriptions of runs not yet known

    @property
    def estimate_s(self) -> float:
        return sum(j.estimate_s or 0.0 for j in self.todo)


def fmt_duration(s: Optional[float]) -> str:
    if s is None or not math.isfinite(s):
        return "unknown"
    s = int(round(s))
    if s < 90:
        return f"{s} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    h, m = divmod(round(s / 60), 60)
    return f"{h} h {m:02d} min"


def _images_per_epoch(cfg, n_train: int) -> int:
    t = cfg.train
    full = (n_train // t.batch_size) * t.batch_size or n_train
    return min(full, t.steps_per_epoch * t.batch_size) if t.steps_per_epoch else full


def _epochs_planned(cfg, epoch_limit: Optional[int]) -> int:
    return min(cfg.train.epochs, epoch_limit) if epoch_limit else cfg.train.epochs


def preset_history(roots, preset: str) -> list:
    """Finished runs of `preset` from every root, made on any machine (runs.Run)."""
    from reproduce import runs

    out = []
    for root in roots:
        d = Path(root) / preset
        if d.is_dir():
            # A damaged run tells nothing about time; the report lists it.
            out += [r for r in runs.iter_runs(d, damaged=[]) if r.finished]
    return out


def on_this_machine(runs_: list, device: Optional[str] = None) -> list:
    """The runs of `runs_` made on this host and, with `device`
    (`reproduce.devices.device_description()`), on this device: a host name alone
    does not identify a machine, since cloud VMs of one kind share it ("vm") over
    CPUs 2-3x apart (the published Figure 1 runs: a median tanh epoch of 49 s on an
    Intel Xeon, 138 s on an AMD EPYC, same host name), and a bare CPU model name
    does not either (55 s on another "AMD EPYC"; devices now name the CPU's family
    and model numbers). Runs that recorded no device still count."""
    host = socket.gethostname()
    return [r for r in runs_
            if r.env.get("host") == host and (device is None or r.env.get("device") in (None, device))]


def expected_epochs(job: Job, runs_: list) -> Optional[float]:
    """For a run that stops at a training error: the epochs it will take, from
    `runs_` (any machine's): its label's runs (mean epochs run), else the fastest
    rate of its learning-rate grid (the seeds run at that rate); None if unknown."""
    if not job.cfg.train.stop_at_train_error:
        return None
    own = [len(r.metrics) for r in runs_ if r.label == job.label and r.metrics]
    if own:
        return sum(own) / len(own)
    grid = f"{job.label}.grid"
    reached = [r.result["epochs_to_target"] for r in runs_
               if r.label == grid and (r.result or {}).get("epochs_to_target")]
    return min(reached) if reached and not job.label.endswith(".grid") else None


def history_estimate(job: Job, history: list, n_train: int,
                     everywhere: Optional[list] = None) -> tuple[Optional[float], str]:
    """Seconds for `job` from finished runs on this host (`history`), or (None, "").
    A run that stops at a target takes its epochs from `everywhere` (runs of the
    preset on any machine; default `history`): epochs to a training error belong to
    the experiment, seconds per image to the machine."""
    from reproduce.config import experiment_identity

    def wall(r):
        return float((r.result or {}).get("wall_time_s") or 0.0)

    def per_image(r):
        n = (r.env or {}).get("n_train") or n_train
        seen = max(1, len(r.metrics)) * _images_per_epoch(job.cfg, int(n))
        return wall(r) / seen

    try:
        me = experiment_identity(job.cfg, job.cfg.data_id())
    except Exception:  # an unreadable source: no estimate from history
        me = None
    # Medians, not means: a run that shared the machine with something else (a test
    # suite, a second campaign) can take twice as long, and one such run should not
    # double the estimate of every run after it.
    same = [r for r in history if r.label == job.label and wall(r) > 0 and me is not None
            and _identity(r) == me]
    if same and not job.cfg.train.stop_at_train_error:
        return statistics.median(map(wall, same)), "history"
    # Then the same label at other settings, then (for a run that stops at a target)
    # its arm's learning-rate grid, then the whole preset: the ablations of a preset
    # differ little in cost per image, so more runs beat a closer match. The epochs
    # of a run that stops at a target are not the preset's: Figure 1's tanh net needs
    # several times the ReLU net's, and its grid has measured how many.
    target = bool(job.cfg.train.stop_at_train_error)
    grid = f"{job.label}.grid"
    pools = [[r for r in history if r.label == job.label]]
    if target and not job.label.endswith(".grid"):
        pools.append([r for r in history if r.label == grid])
    target_epochs = expected_epochs(job, history if everywhere is None else everywhere)
    for pool in pools + [history]:
        pool = [r for r in pool if wall(r) > 0 and r.metrics]
        if pool:
            s = statistics.median(map(per_image, pool))
            if target:
                epochs = (target_epochs if target_epochs is not None
                          else sum(len(r.metrics) for r in pool) / len(pool))
                epochs = min(epochs, _epochs_planned(job.cfg, job.epoch_limit))
                return s * epochs * _images_per_epoch(job.cfg, n_train), "scaled"
            return s * _epochs_planned(job.cfg, job.epoch_limit) * _images_per_epoch(job.cfg, n_train), "scaled"
    return None, ""


def _identity(run) -> Optional[dict]:
    from reproduce.config import ConfigError, experiment_identity

    try:
        return experiment_identity(run.config, run.meta.get("data_id"))
    except (ConfigError, KeyError, TypeError, ValueError):
        return None


def calibrate(cfg, data, steps: int = 6) -> tuple[float, float, float]:
    """(training images/s, fixed seconds per run, fixed seconds per epoch) of `cfg`'s
    net on this machine: `steps` timed steps after one step that builds and
    compiles, through the trainer's own model and compile, on uint8 batches of the
    data's image size. A run builds and compiles twice (training, then
    evaluation): that, twice the first step's time, is its fixed cost. The cost
    per epoch is measured by `_epoch_cost`."""
    import keras
    import numpy as np

    from reproduce import train as train_lib

    keras.backend.clear_session()
    t_build = time.perf_counter()
    model, _ = train_lib.build_training_model(cfg, data.stats, data.num_classes)
    train_lib.compile_model(model, cfg)
    b, s = cfg.train.batch_size, cfg.data.image_size
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8)
    y = rng.integers(0, data.num_classes, (b,), dtype=np.int32)
    model.train_on_batch(x, y)
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    dt = time.perf_counter() - t0
    ips = steps * b / dt
    per_epoch = _epoch_cost(model, cfg, x, y, ips)
    keras.backend.clear_session()
    return ips, 2 * (t0 - t_build), per_epoch


def _epoch_cost(model, cfg, x, y, ips: float, epochs: int = 3) -> float:
    """Seconds an epoch costs beyond its training steps and validation images: a
    `fit` of one-step epochs with the trainer's own callbacks (metrics.csv, the
    checkpoint, TensorBoard where it is written) into a scratch folder and a
    one-batch validation pass, timed from one epoch's end to the next (the first
    epoch compiles the validation step and is left out)."""
    import tempfile

    import keras

    from reproduce.callbacks import training_callbacks

    ends: list = []
    clock = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: ends.append(time.perf_counter()))
    nv = min(len(x), cfg.eval.batch_size)
    cfg = cfg.copy()
    cfg.train.stop_at_train_error = 0.0  # every epoch runs, whatever its error
    with tempfile.TemporaryDirectory(prefix="plan-epoch-") as tmp:
        cbs = training_callbacks(cfg, tmp, {}, len(x))
        model.fit(x, y, batch_size=len(x), epochs=epochs, validation_data=(x[:nv], y[:nv]),
                  validation_batch_size=nv, callbacks=[*cbs.all, clock], shuffle=False, verbose=0)
    gaps = [b - a for a, b in zip(ends[1:], ends[2:])]
    if not gaps:  # stopped early (a loss that turned NaN): nothing measured
        return 0.0
    return max(0.0, statistics.median(gaps) - (len(x) + FORWARD_SHARE * nv) / ips)


def _epochs_run(job: Job, epochs: Optional[float] = None) -> float:
    """The epochs a run trains: `epochs` (expected) within its plan, else as planned."""
    planned = _epochs_planned(job.cfg, job.epoch_limit)
    return planned if epochs is None else min(epochs, planned)


def calibrated_estimate(job: Job, data, rate: tuple, epochs: Optional[float] = None) -> float:
    """Seconds for `job` from a calibration `rate` = (images/s, seconds per run,
    seconds per epoch): its fixed cost, every epoch's fixed cost, and its images."""
    ips, fixed, per_epoch = rate
    return fixed + per_epoch * _epochs_run(job, epochs) + _images_seen(job, data, epochs) / ips


def _images_seen(job: Job, data, epochs: Optional[float] = None) -> float:
    """Training-step equivalents of a run of `epochs` (default: as configured): its
    training images, the validation split after every epoch, and the final
    evaluation (centre crop and ten views of the validation split, centre crop of a
    training sample), forward passes counted at FORWARD_SHARE of a step."""
    from reproduce.evaluate import TRAIN_SAMPLE, VIEWS

    cfg, n_train, n_val = job.cfg, len(data.train), len(data.val)
    epochs = _epochs_run(job, epochs)
    forward = epochs * n_val + n_val * (1 + (VIEWS if cfg.eval.ten_view else 0)) + min(n_train, TRAIN_SAMPLE)
    return epochs * _images_per_epoch(cfg, n_train) + FORWARD_SHARE * forward


def fill_estimates(plan: SuitePlan, roots, preset: str, load_data=None, verbose: bool = True,
                   device: Optional[str] = None) -> None:
    """Give every job of `plan` an estimate (see the module docstring); `device`
    as in `on_this_machine`."""
    if not plan.todo:
        return
    everywhere = preset_history(roots, preset)
    history = on_this_machine(everywhere, device)
    data_cache: dict = {}

    def data_for(cfg):
        key = (cfg.data.source, cfg.data.image_size, cfg.data.max_train, cfg.data.max_val)
        if key not in data_cache:
            data_cache[key] = load_data(cfg.data)
        return data_cache[key]

    rates: dict = {}
    for job in plan.todo:
        data = data_for(job.cfg) if load_data else None
        n_train = len(data.train) if data is not None else 0
        est, kind = history_estimate(job, history, n_train, everywhere)
        if est is None and data is not None:
            key = (job.cfg.model.arch, job.cfg.model.width, job.cfg.model.towers,
                   job.cfg.data.image_size, job.cfg.data.crop_size, job.cfg.train.batch_size)
            if key not in rates:
                if verbose:
                    print(f"[ablations] measuring this machine's training rate ({job.label}, "
                          "a few steps)...", flush=True)
                rates[key] = calibrate(job.cfg, data)
            # A run to a target whose epochs some machine has measured: those epochs at
            # this machine's rate; one with none measured: its epoch cap, a bound.
            epochs = expected_epochs(job, everywhere)
            est = calibrated_estimate(job, data, rates[key], epochs)
            kind = "upper bound" if job.cfg.train.stop_at_train_error and epochs is None else "calibrated"
        job.estimate_s, job.estimate_kind = est, kind


def print_plan(plan: SuitePlan, preset: str, device: str, out=sys.stdout) -> None:
    n_done = len(plan.done) + len(plan.published)
    kinds = sorted({j.estimate_kind for j in plan.todo if j.estimate_kind})
    print(f"[ablations] plan for preset {preset}: {len(plan.todo)} run(s) to train, "
          f"{n_done} already finished ({len(plan.published)} of them published)"
          + (f", {len(plan.pending)} more decided as the suite goes" if plan.pending else ""),
          file=out)
    capped = any(j.estimate_kind == "upper bound" for j in plan.todo)
    if plan.todo:
        print(f"[ablations] estimated time on this machine ({device}): "
              + ("at most " if capped else "") + fmt_duration(plan.estimate_s)
              + (f" ({', '.join(kinds)})" if kinds else ""), file=out)
        if capped:
            print("    (runs that stop at a training-error target are counted at their "
                  "train.epochs cap; they usually stop far sooner)", file=out)
        by_label: dict = {}
        for j in plan.todo:
            n, s = by_label.get(j.label, (0, 0.0))
            by_label[j.label] = (n + 1, s + (j.estimate_s or 0.0))
        for label, (n, s) in by_label.items():
            print(f"    {label:28s} {n} run(s)  ~{fmt_duration(s)}", file=out)
    for p in plan.pending:
        print(f"    {p}", file=out)
    if plan.estimate_s > LONG_SUITE_S:
        smaller = SMALLER.get(preset)
        print(f"[ablations] note: this suite would take {'up to' if capped else 'about'} "
              f"{fmt_duration(plan.estimate_s)} here." + (f" PRESET={smaller} is the tier sized for this kind of machine."
                         if smaller else ""), file=out)
    out.flush()


class Progress:
    """`run i/n · elapsed · ETA` before each run; the ETA scales the remaining
    estimates by how long the finished runs of this call took against theirs
    (a run that failed, say diverged in its first epoch, tells nothing about the
    speed of the others and is left out of the scale)."""

    def __init__(self, jobs: list, out=sys.stdout):
        self.est = {str(j.run_dir): j.estimate_s for j in jobs}
        self.total = len(jobs)
        self.i = 0
        self.t0 = time.perf_counter()
        self.spent_est = 0.0
        self.spent_real = 0.0
        self._t_run = self.t0
        self.out = out
        self._current = None

    def start(self, run_dir, label: str, seed: int) -> None:
        self.i += 1
        self._t_run = time.perf_counter()
        elapsed = self._t_run - self.t0
        remaining = sum(v or 0.0 for k, v in self.est.items())
        scale = self.spent_real / self.spent_est if self.spent_est > 0 else 1.0
        eta = remaining * scale
        print(f"[ablations] run {self.i}/{max(self.total, self.i)} · elapsed "
              f"{fmt_duration(elapsed)} · ETA {fmt_duration(eta) if remaining else 'unknown'}"
              f" · {label} seed {seed}", file=self.out, flush=True)
        self._current = str(run_dir)

    def drop(self, run_dir) -> None:
        """A planned run this process will not train: another one has it."""
        if self.est.pop(str(run_dir), False) is not False:
            self.total -= 1
            if self._current == str(run_dir):
                self.i -= 1  # its line was printed: the next run takes its number

    def finish(self, run_dir, ok: bool = True) -> None:
        est = self.est.pop(str(run_dir), None) or 0.0
        if ok and est:
            self.spent_est += est
            self.spent_real += time.perf_counter() - self._t_run
