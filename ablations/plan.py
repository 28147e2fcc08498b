"""What a suite will cost: the plan printed before training, the progress line during it.

Time per run comes from what this machine has measured, most specific first:

1. finished runs of the same experiment (other seeds) made on this host and
   device (`on_this_machine`);
2. finished runs with the same label, then any run of the preset, on this host
   and device, scaled by their epochs and training images;
3. otherwise a calibration: a few training steps of the preset's baseline net on
   this machine (the compile is timed apart), images/s times the run's images,
   plus what every epoch costs whatever its images (the validation pass's start,
   metrics.csv and the other callbacks: a few tenths of a second, which on the
   smoke preset's 4-step epochs is most of an epoch), plus a checkpoint every
   `train.checkpoint_every` epochs and after the last (a save is timed apart),
   plus what a run costs once (building and compiling the net, the validation
   and final evaluation's compiles, writing model.keras: seconds, most of a
   smoke run).

A calibrated suite that trains from pre-resized shards (`reproduce.data.shards`)
also compares the feed with the training rate: where scripts/bench_data.py has
measured this machine's shard rate per core at the run's image size, and this
machine's cores at that rate fall short of the calibrated images/s, the plan
says so (`reproduce.data.shards.planned_feed_warning`); without a measured rate
it says nothing.

The suite's total adds what its command costs beyond the runs: the time this
process has already spent (Python and the libraries starting, the data, the
calibration), and the report that `make reproduce` builds afterwards
(`REPORT_S_PER_PRESET`).

Seconds per image are this machine's; the epochs of a run that stops at a
training error (Figure 1) are the experiment's, so they come from every
machine's runs (`expected_epochs`), its own label's or, before it has any, those
of the runs that chose its settings (its arm's learning-rate grid: the kind of
its ablation names them, `ablations.kinds.selection_label`).

Where several runs qualify, their median counts, so that one run slowed by a
neighbour on the machine does not skew the rest. Figures are estimates for
planning; every run records its real wall time.
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ablations.kinds import selection_label
from reproduce import runs
from reproduce.config import PRESETS, ConfigError, experiment_identity
from reproduce.runs import format_duration as fmt_duration

# An image's forward pass costs about this share of its training step (forward,
# backward, update): what validation and the final evaluation cost per image.
FORWARD_SHARE = 1 / 3
# A suite longer than this on the machine it starts on gets a warning that names
# a smaller preset.
LONG_SUITE_S = 4 * 3600
# Presets with a tier sized for a CPU (named when a suite would take too long).
SMALLER = {"imagenette": "imagenette-cpu", "imagenet": "imagenette"}
# What `python -m reports` takes per preset in the runs folder (its own process: the
# libraries, every run read, the bootstraps, the figures, the PDF): 7-12 s a preset,
# 30 s for results/' four, on a 2-core AMD EPYC VM under a load of about 3
# (2026-12-04). An allowance for planning, above what was measured there.
REPORT_S_PER_PRESET = 15.0


@dataclass
class Job:
    label: str
    seed: int
    run_dir: Path
    cfg: object  # reproduce.config.Config
    epoch_limit: int | None = None
    estimate_s: float | None = None
    estimate_kind: str = ""  # "history", "scaled", "calibrated", "upper bound"


@dataclass
class SuitePlan:
    todo: list = field(default_factory=list)  # [Job]
    done: list = field(default_factory=list)  # [Path] finished here
    published: list = field(default_factory=list)  # [Path] finished in a published store
    pending: list = field(default_factory=list)  # descriptions of runs not yet known
    started_s: float = 0.0  # what this process had spent when it planned (`fill_estimates`)
    report_s: float = 0.0  # the report built after the runs
    warnings: list = field(default_factory=list)  # what would slow the suite (the feed), printed with it

    @property
    def estimate_s(self) -> float:
        """The runs to train."""
        return sum(j.estimate_s or 0.0 for j in self.todo)

    @property
    def total_s(self) -> float:
        """The whole command, from its start to the report: the time already spent,
        the runs, the report."""
        return self.started_s + self.estimate_s + self.report_s


def process_seconds() -> float:
    """Seconds since this process started (Linux: /proc; elsewhere since this
    module was imported, which misses the interpreter's own start)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


def report_seconds(root, preset: str) -> float:
    """The report's build after a suite of `preset` into `root` (`REPORT_S_PER_PRESET`
    for each preset it will hold)."""
    d = Path(root)
    held = {p.name for p in d.iterdir() if p.is_dir() and p.name in PRESETS} if d.is_dir() else set()
    return REPORT_S_PER_PRESET * len(held | {preset})


def _images_per_epoch(cfg, n_train: int) -> int:
    t = cfg.train
    full = (n_train // t.batch_size) * t.batch_size or n_train
    return min(full, t.steps_per_epoch * t.batch_size) if t.steps_per_epoch else full


def _epochs_planned(cfg, epoch_limit: int | None) -> int:
    return min(cfg.train.epochs, epoch_limit) if epoch_limit else cfg.train.epochs


def preset_history(roots, preset: str) -> list:
    """Finished runs of `preset` from every root, made on any machine (runs.Run)."""
    out = []
    for root in roots:
        d = Path(root) / preset
        if d.is_dir():
            # A damaged run tells nothing about time; the report lists it.
            out += [r for r in runs.iter_runs(d, damaged=[]) if r.status == runs.FINISHED]
    return out


def on_this_machine(runs_: list, device: str | None = None) -> list:
    """The runs of `runs_` made on this host and, with `device`
    (`reproduce.devices.device_description()`), on this device: a host name alone
    does not identify a machine, since cloud VMs of one kind share it ("vm") over
    CPUs 2-3x apart (the published Figure 1 runs: a median tanh epoch of 49 s on an
    Intel Xeon, 138 s on an AMD EPYC, same host name), and a bare CPU model name
    does not either (55 s on another "AMD EPYC"; devices now name the CPU's family
    and model numbers). Runs that recorded no device still count."""
    host = socket.gethostname()
    return [r for r in runs_ if r.env.get("host") == host and (device is None or r.env.get("device") in (None, device))]


def stops_at_target(cfg) -> bool:
    """Whether a run of `cfg` ends when its training error reaches the target, so
    that its epochs are the experiment's answer rather than `train.epochs`."""
    return bool(cfg.train.stop_at_train_error) and bool(cfg.train.stop_at_target)


def expected_epochs(job: Job, runs_: list) -> float | None:
    """For a run that stops at a training error: the epochs it will take, from
    `runs_` (any machine's): its label's runs (mean epochs run), else the fastest
    of the runs that chose its settings (`selection_label`: its arm's
    learning-rate grid, whose fastest rate the seeds run at); None if unknown."""
    if not stops_at_target(job.cfg):
        return None
    own = [len(r.metrics) for r in runs_ if r.label == job.label and r.metrics]
    if own:
        return sum(own) / len(own)
    chooser = selection_label(job.label)
    reached = [
        r.result["epochs_to_target"]
        for r in runs_
        if chooser is not None and r.label == chooser and (r.result or {}).get("epochs_to_target")
    ]
    return min(reached) if reached else None


def history_estimate(job: Job, history: list, n_train: int, everywhere: list | None = None) -> tuple[float | None, str]:
    """Seconds for `job` from finished runs on this host (`history`), or (None, "").
    A run that stops at a target takes its epochs from `everywhere` (runs of the
    preset on any machine; default `history`): epochs to a training error belong to
    the experiment, seconds per image to the machine."""

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
    same = [r for r in history if r.label == job.label and wall(r) > 0 and me is not None and _identity(r) == me]
    if same and not stops_at_target(job.cfg):
        return statistics.median(map(wall, same)), "history"
    # Then the same label at other settings, then (for a run that stops at a target)
    # its arm's learning-rate grid, then the whole preset: the ablations of a preset
    # differ little in cost per image, so more runs beat a closer match. The epochs
    # of a run that stops at a target are not the preset's: Figure 1's tanh net needs
    # several times the ReLU net's, and its grid has measured how many.
    target = stops_at_target(job.cfg)
    chooser = selection_label(job.label)
    pools = [[r for r in history if r.label == job.label]]
    if target and chooser is not None:
        pools.append([r for r in history if r.label == chooser])
    target_epochs = expected_epochs(job, history if everywhere is None else everywhere)
    for pool in pools + [history]:
        pool = [r for r in pool if wall(r) > 0 and r.metrics]
        if pool:
            s = statistics.median(map(per_image, pool))
            if target:
                epochs = target_epochs if target_epochs is not None else sum(len(r.metrics) for r in pool) / len(pool)
                epochs = min(epochs, _epochs_planned(job.cfg, job.epoch_limit))
                return s * epochs * _images_per_epoch(job.cfg, n_train), "scaled"
            return s * _epochs_planned(job.cfg, job.epoch_limit) * _images_per_epoch(job.cfg, n_train), "scaled"
    return None, ""


def _identity(run) -> dict | None:
    try:
        return experiment_identity(run.config, run.meta.get("data_id"))
    except (ConfigError, KeyError, TypeError, ValueError):
        return None


def calibrate(cfg, data, steps: int = 3, epochs: int = 3) -> tuple[float, float, float, float]:
    """(training images/s, fixed seconds per run, fixed seconds per epoch, seconds
    per checkpoint) of `cfg`'s net on this machine, measured as a run spends them,
    through the trainer's own model, compile, feed, callbacks and evaluation, on
    one random uint8 batch of the data's image size.

    A `fit` of `epochs` epochs of `steps` steps each, with a one-batch validation
    pass, into a scratch folder (`_fit_timings`) gives the step rate, what each
    epoch costs beyond its steps and validation images (the validation pass's
    start, metrics.csv, the feed) and, apart, what saving the state costs (a run
    saves every `train.checkpoint_every` epochs). What a run costs once, whatever
    its length: building and compiling the net, the first epoch's extra (`fit`
    starting, the step and the validation step traced or compiled), the final
    evaluation's compiles (centre crop, ten views, the fc7 probe: one batch each),
    writing the inference model, and clearing the session for the next run."""
    import tempfile
    from types import SimpleNamespace

    import keras
    import numpy as np

    from reproduce import train as train_lib
    from reproduce.evaluate import evaluate, fc7_dead_fraction
    from reproduce.model import inference_model

    keras.backend.clear_session()
    t_build = time.perf_counter()
    model, net = train_lib.build_training_model(cfg, data.stats, data.num_classes)
    train_lib.compile_model(model, cfg)
    b, s = cfg.train.batch_size, cfg.data.image_size
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8)
    y = rng.integers(0, data.num_classes, (b,), dtype=np.int32)
    built = time.perf_counter() - t_build
    ips, per_epoch, first_epoch, save_s = _fit_timings(model, cfg, x, y, data.class_names, steps, epochs)
    t_end = time.perf_counter()
    batch = SimpleNamespace(images=x, labels=y)
    evaluate(cfg, model, net, data.stats, batch, cfg.eval.ten_view)
    fc7_dead_fraction(cfg, model, net, batch)
    with tempfile.TemporaryDirectory(prefix="plan-model-") as tmp:
        runs.write_model(tmp, inference_model(cfg, net, data.stats), data.class_names)
    keras.backend.clear_session()
    return ips, built + first_epoch + (time.perf_counter() - t_end), per_epoch, save_s


def _fit_timings(model, cfg, x, y, class_names, steps: int, epochs: int) -> tuple[float, float, float, float]:
    """(training images/s, seconds an epoch costs beyond its training steps,
    validation images and checkpoint, seconds the first epoch costs beyond a later
    one, seconds a checkpoint costs) of a `fit` of `epochs` epochs of `steps`
    steps on the batch `x`, `y`, fed as the trainer feeds a run
    (`reproduce.train.training_feed`, the validation split as `ArrayBatches`)
    with the trainer's callbacks, into a scratch folder. A step is timed from an
    epoch's start to its last step's end; an epoch, from one epoch's end to the
    next; the first, from `fit`'s start to its end (it starts the callbacks and
    traces or compiles the steps). The later epochs count. The epochs save no
    state; two saves of the trained state after `fit` time a checkpoint."""
    import tempfile

    import keras
    import numpy as np

    from reproduce import checkpoint
    from reproduce import data as data_lib
    from reproduce import train as train_lib
    from reproduce.callbacks import training_callbacks

    begins: list = []
    last_step: dict = {}
    ends: list = []
    clock = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: begins.append(time.perf_counter()),
        on_train_batch_end=lambda i, logs: last_step.__setitem__(len(begins) - 1, time.perf_counter()),
        on_epoch_end=lambda e, logs: ends.append(time.perf_counter()),
    )
    nv = min(len(x), cfg.eval.batch_size)
    cfg = cfg.copy()
    cfg.train.stop_at_train_error = 0.0  # every epoch runs, whatever its error
    cfg.train.steps_per_epoch = 0
    train = data_lib.ImageArrays(np.concatenate([x] * steps), np.concatenate([y] * steps), list(class_names))
    feed, feed_callbacks, steps_per_epoch = train_lib.training_feed(cfg, train, 0)
    val = data_lib.ArrayBatches(x[:nv], y[:nv], nv, shuffle=False)
    with tempfile.TemporaryDirectory(prefix="plan-epoch-") as tmp:
        cbs = training_callbacks(cfg, tmp, {}, len(train))
        # A run saves every train.checkpoint_every epochs, so the epochs here save
        # nothing and a save is timed on its own.
        cbs.recorder.checkpoint_due = lambda epoch: False
        t_fit = time.perf_counter()
        model.fit(
            feed,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            validation_data=val,
            callbacks=[*cbs.all, *feed_callbacks, clock],
            shuffle=False,
            verbose=0,
        )
        saves = []
        for _ in range(2):
            t0 = time.perf_counter()
            checkpoint.save_state(tmp, model, {"completed_epochs": epochs})
            saves.append(time.perf_counter() - t0)
    save_s = statistics.mean(saves)
    later = [e for e in range(1, len(ends)) if e in last_step]
    if not later:  # stopped early (a loss that turned NaN): the steps alone, no epoch cost
        spent = max(last_step.values(), default=time.perf_counter()) - t_fit
        return steps * len(x) * max(1, len(last_step)) / max(spent, 1e-9), 0.0, 0.0, save_s
    step_s = statistics.median(last_step[e] - begins[e] for e in later) / steps
    epoch_s = statistics.median(ends[e] - ends[e - 1] for e in later)
    ips = len(x) / step_s
    per_epoch = max(0.0, epoch_s - steps * step_s - FORWARD_SHARE * nv / ips)
    return ips, per_epoch, max(0.0, ends[0] - t_fit - epoch_s), save_s


def _epochs_run(job: Job, epochs: float | None = None) -> float:
    """The epochs a run trains: `epochs` (expected) within its plan, else as planned."""
    planned = _epochs_planned(job.cfg, job.epoch_limit)
    return planned if epochs is None else min(epochs, planned)


def checkpoints_saved(job: Job, epochs: float | None = None) -> int:
    """The state saves of a run of `epochs` (default: as planned): every
    `train.checkpoint_every` epochs, and after the last one."""
    return math.ceil(_epochs_run(job, epochs) / max(1, int(job.cfg.train.checkpoint_every)))


def calibrated_estimate(job: Job, data, rate: tuple, epochs: float | None = None) -> float:
    """Seconds for `job` from a calibration `rate` = (images/s, seconds per run,
    seconds per epoch[, seconds per checkpoint]): its fixed cost, every epoch's
    fixed cost, its checkpoints (`checkpoints_saved`), and its images. Without
    the fourth figure the checkpoints count as part of each epoch's cost."""
    ips, fixed, per_epoch, *save = rate
    saves = save[0] * checkpoints_saved(job, epochs) if save else 0.0
    return fixed + per_epoch * _epochs_run(job, epochs) + saves + _images_seen(job, data, epochs) / ips


def _images_seen(job: Job, data, epochs: float | None = None) -> float:
    """Training-step equivalents of a run of `epochs` (default: as configured): its
    training images, the validation split after every epoch, and the final
    evaluation (centre crop and ten views of the validation split, centre crop of a
    training sample), forward passes counted at FORWARD_SHARE of a step."""
    from reproduce.evaluate import TRAIN_SAMPLE, VIEWS

    cfg, n_train, n_val = job.cfg, len(data.train), len(data.val)
    epochs = _epochs_run(job, epochs)
    forward = epochs * n_val + n_val * (1 + (VIEWS if cfg.eval.ten_view else 0)) + min(n_train, TRAIN_SAMPLE)
    return epochs * _images_per_epoch(cfg, n_train) + FORWARD_SHARE * forward


def fill_estimates(
    plan: SuitePlan, roots, preset: str, load_data=None, verbose: bool = True, device: str | None = None
) -> None:
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
            c = job.cfg
            key = (
                c.model.arch,
                c.model.width,
                c.model.towers,
                c.data.image_size,
                c.data.crop_size,
                c.train.batch_size,
                c.train.steps_per_execution,
                c.train.xla,
                c.train.run_eagerly,
                c.eval.ten_view,
            )
            if key not in rates:
                if verbose:
                    print(
                        f"[ablations] measuring this machine's training rate ({job.label}, a few steps)...", flush=True
                    )
                rates[key] = calibrate(job.cfg, data)
            slow_feed = feed_warning(job.cfg, data, rates[key][0])
            if slow_feed and slow_feed not in plan.warnings:
                plan.warnings.append(slow_feed)
            # A run to a target whose epochs some machine has measured: those epochs at
            # this machine's rate; one with none measured: its epoch cap, a bound.
            epochs = expected_epochs(job, everywhere)
            est = calibrated_estimate(job, data, rates[key], epochs)
            kind = "upper bound" if stops_at_target(job.cfg) and epochs is None else "calibrated"
        job.estimate_s, job.estimate_kind = est, kind
    plan.started_s = process_seconds()
    plan.report_s = report_seconds(roots[0], preset) if roots else 0.0


def feed_warning(cfg, data, step_rate: float) -> str | None:
    """For a run that trains from streamed shards: `reproduce.data.shards.
    planned_feed_warning` at the run's image size against `step_rate` (the
    calibrated training images/s); None for any other source, or where no
    rate per core was measured on this machine."""
    from reproduce.data.shard_source import ShardStream

    if not isinstance(getattr(data, "train", None), ShardStream):
        return None
    from reproduce.data.shards import planned_feed_warning

    return planned_feed_warning(cfg.data.image_size, step_rate)


def _rounded_up(s: float) -> float:
    """`s` rounded up to what `fmt_duration` shows (seconds, or whole minutes from
    90 s), so that a total is never printed below itself."""
    return float(math.ceil(s)) if s < 90 else 60.0 * math.ceil(s / 60)


def print_plan(plan: SuitePlan, preset: str, device: str, out=sys.stdout) -> None:
    n_done = len(plan.done) + len(plan.published)
    kinds = sorted({j.estimate_kind for j in plan.todo if j.estimate_kind})
    print(
        f"[ablations] plan for preset {preset}: {len(plan.todo)} run(s) to train, "
        f"{n_done} already finished ({len(plan.published)} of them published)"
        + (f", {len(plan.pending)} more decided as the suite goes" if plan.pending else ""),
        file=out,
    )
    capped = any(j.estimate_kind == "upper bound" for j in plan.todo)
    if plan.todo:
        print(
            f"[ablations] estimated time on this machine ({device}): "
            + ("at most " if capped else "")
            + fmt_duration(_rounded_up(plan.total_s))
            + " in all"
            + (f" ({', '.join(kinds)})" if kinds else "")
            + f": the runs ~{fmt_duration(plan.estimate_s)}"
            + (f", then the report ~{fmt_duration(plan.report_s)}" if plan.report_s else "")
            + (f", after the {fmt_duration(plan.started_s)} spent starting and measuring" if plan.started_s else ""),
            file=out,
        )
        if capped:
            print(
                "    (runs that stop at a training-error target are counted at their "
                "train.epochs cap; they usually stop far sooner)",
                file=out,
            )
        by_label: dict = {}
        for j in plan.todo:
            n, s = by_label.get(j.label, (0, 0.0))
            by_label[j.label] = (n + 1, s + (j.estimate_s or 0.0))
        for label, (n, s) in by_label.items():
            print(f"    {label:28s} {n} run(s)  ~{fmt_duration(s)}", file=out)
    for p in plan.pending:
        print(f"    {p}", file=out)
    for w in plan.warnings:
        print(f"[ablations] warning: {w}", file=out)
    if plan.total_s > LONG_SUITE_S:
        smaller = SMALLER.get(preset)
        hint = f" PRESET={smaller} is the tier sized for this kind of machine." if smaller else ""
        print(
            f"[ablations] note: this suite would take {'up to' if capped else 'about'} "
            f"{fmt_duration(_rounded_up(plan.total_s))} here." + hint,
            file=out,
        )
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
        print(
            f"[ablations] run {self.i}/{max(self.total, self.i)} · elapsed "
            f"{fmt_duration(elapsed)} · ETA {fmt_duration(eta) if remaining else 'unknown'}"
            f" · {label} seed {seed}",
            file=self.out,
            flush=True,
        )
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
