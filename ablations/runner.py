"""Runs ablations: the baseline and the variant for each seed, skipping finished runs.

Every run goes through `reproduce.train.train` into a directory named by
`reproduce.runs.run_dir(root, preset, label, fingerprint, seed)`, so a run that
already finished with the same configuration and seed is never repeated, an
interrupted one resumes, and runs copied in from other machines accumulate.
A run that fails (for example a diverged loss) is recorded in its directory and
reported at the end; the other runs still go ahead.

Several runners may share one runs root (`worker`, docs/distributed.md): each
run is trained under its directory's lock (`reproduce.runs.lock`), and a runner
that finds a run locked leaves it to its holder and goes on to the next, so every
run is trained once however many runners there are, on however many machines.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Iterable, Optional

from ablations.registry import (
    GRID_MAX_EXTENSIONS,
    GRID_EXTEND_FACTOR,
    GRID_SEED,
    Ablation,
    for_preset,
    get_ablation,
    grid_rank,
    next_grid_rate,
)
from ablations.plan import Job, Progress, SuitePlan, fill_estimates, print_plan
from reproduce import runs
from reproduce.config import Config, apply_overrides, validate


def parse_seeds(seeds) -> list[int]:
    """`3` means seeds 0, 1, 2; `0,4,7` means exactly those; `0,` the seed 0 alone."""
    if isinstance(seeds, int):
        seeds = str(seeds)
    s = str(seeds).strip()
    try:
        if "," in s:
            out = [int(x) for x in s.split(",") if x.strip()]
        else:
            out = list(range(int(s)))
    except ValueError:
        raise ValueError(f"SEEDS={seeds!r} is neither a count (3 = seeds 0, 1, 2) nor a "
                         "comma-separated list of seeds (0,4,7)") from None
    if not out and "," not in s:  # a count of zero: probably meant the seed 0
        raise ValueError(f"SEEDS={seeds!r} is a count (3 = seeds 0, 1, 2), so it means no "
                         "seeds at all; for seed 0 alone write SEEDS=0, (a list of one seed)")
    if not out or min(out) < 0:
        raise ValueError(f"SEEDS={seeds!r}: need at least one seed, none negative")
    return out


def parse_worker(spec) -> tuple[int, int]:
    """`I/N`: this is worker I (0-based) of N."""
    try:
        i, n = (int(x) for x in str(spec).split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise ValueError(f"--worker {spec!r}: expected I/N with 0 <= I < N, e.g. 0/4 ... 3/4 "
                         "(SLURM: --array=0-3 and --worker $SLURM_ARRAY_TASK_ID/4)")
    return i, n


class _ArmHeld(Exception):
    """A Figure 1 grid run is held by another process: the arm is left to it."""


def _with_seed(cfg: Config, seed: int) -> Config:
    cfg = cfg.copy()
    cfg.train.seed = seed
    return cfg


def default_published() -> list:
    """Stores of published runs that count as finished: $REPRODUCE_PUBLISHED
    (os.pathsep-separated), else this checkout's `results/` if it exists."""
    env = os.environ.get("REPRODUCE_PUBLISHED")
    if env is not None:
        return [Path(p) for p in env.split(os.pathsep) if p]
    here = Path(__file__).resolve().parent.parent / "results"
    return [here] if here.is_dir() else []


class Runner:
    """Runs (or, with `plan()`, only lists) the runs of a preset's ablations.

    A run counts as finished if its directory under `root` holds a result, or the
    same experiment's directory under one of the `published` stores does (runs
    committed to `results/` are not trained again)."""

    def __init__(self, preset: str, seeds, root=None, overrides=None, verbose: int = 1,
                 command: Optional[str] = None, published=None, worker=None):
        self.preset = preset
        # (I, N): worker I of N first trains its share of the plan (every Nth run,
        # from the I-th), then any run still left that no other process holds.
        self.worker = worker
        self._share: Optional[set] = None  # run dirs of this worker's first pass
        self.seeds = parse_seeds(seeds)
        self.root = Path(root) if root else runs.default_root()
        self.published = [Path(p) for p in (published or [])]
        self.overrides = list(overrides or [])
        self.verbose = verbose
        self.command = command or "python -m ablations " + " ".join(sys.argv[1:])
        self.plan_ = SuitePlan()
        self.failed: list = []  # (run_dir, message)
        self.held: dict = {}  # run_dir -> message: being trained by another process
        self._held_now: Optional[str] = None
        self.trained = 0
        self._dry = False
        self._seen: set = set()
        self._progress: Optional[Progress] = None

    # -- configuration of each arm ------------------------------------------------------

    def _extra(self, cfg: Config) -> Config:
        apply_overrides(cfg, self.overrides)
        return validate(cfg)

    def baseline_config(self, ab: Optional[Ablation] = None) -> Config:
        if ab is None:
            from reproduce.config import get_config

            return self._extra(get_config(self.preset))
        return self._extra(ab.base_config(self.preset))

    def variant_config(self, ab: Ablation) -> Config:
        return self._extra(ab.variant_config(self.preset))

    # -- running ------------------------------------------------------------------------

    def _finished(self, label: str, cfg: Config, seed: int, epoch_limit, diverged_is_final=False):
        """(run_dir under root, where it is finished: "done"/"published"/None, result).
        With `diverged_is_final`, a run that diverged counts as finished, with no result."""
        fp = cfg.fingerprint()
        d = runs.run_dir(self.root, self.preset, label, fp, seed)
        if runs.is_finished(d) and not runs.can_extend(d, epoch_limit):
            return d, "done", runs.read_json(d / runs.RESULT)
        for store in self.published:
            p = runs.run_dir(store, self.preset, label, fp, seed)
            if runs.is_finished(p) and not runs.can_extend(p, epoch_limit):
                return d, "published", runs.read_json(p / runs.RESULT)
        if diverged_is_final:
            for where, p in [("done", d)] + [("published", runs.run_dir(store, self.preset, label, fp, seed))
                                             for store in self.published]:
                if runs.is_diverged(p):  # with the result it had before, if it was an extension
                    return d, where, runs.read_json(p / runs.RESULT) if runs.is_finished(p) else None
        return d, None, None

    def run_one(self, label: str, cfg: Config, seed: int,
                epoch_limit: Optional[int] = None, diverged_is_final: bool = False) -> Optional[dict]:
        cfg = _with_seed(cfg, seed)
        d, where, result = self._finished(label, cfg, seed, epoch_limit, diverged_is_final)
        key = str(d)
        if where is not None:
            if key not in self._seen:
                self._seen.add(key)
                (self.plan_.done if where == "done" else self.plan_.published).append(d)
            self.held.pop(key, None)
            if self._progress is not None:
                self._progress.drop(d)  # finished by another process since the plan
            return result
        if self._dry:
            if key not in self._seen:
                self._seen.add(key)
                self.plan_.todo.append(Job(label, seed, d, cfg, epoch_limit))
            return None
        if self._share is not None and key not in self._share:
            self._held_now = key  # another worker's share, on this first pass
            return None
        holder = runs.holder(d)
        if holder is not None:
            return self._leave(d, f"{d} is being trained by another process ({holder})")
        from reproduce import train as train_lib

        import keras

        keras.backend.clear_session()
        meta = {"preset": self.preset, "label": label, "overrides": self.overrides,
                "command": self.command}
        if self._progress is not None:
            self._progress.start(d, label, seed)
        elif self.verbose:
            print(f"[ablations] {label} seed {seed} -> {d}", flush=True)
        if self.verbose:
            cap = f" (at most {epoch_limit} epochs)" if epoch_limit else ""
            print(f"[ablations] {d}{cap}", flush=True)
        ok = False
        try:
            result = train_lib.train(cfg, d, meta=meta, verbose=self.verbose,
                                     epoch_limit=epoch_limit)
            ok = True
        except runs.RunLocked as e:  # taken between the look above and the lock
            return self._leave(d, str(e))
        except train_lib.TrainingDiverged as e:
            if diverged_is_final:  # a grid rate that does not train: an answer, not a failure
                print(f"[ablations] {d} diverged: recorded as this learning rate's answer ({e})", flush=True)
                return runs.read_json(d / runs.RESULT) if runs.is_finished(d) else None
            self.failed.append((d, str(e)))
            print(f"[ablations] FAILED {d}: {e}", file=sys.stderr)
            return None
        except runs.RunDirError as e:
            # A damaged or foreign run directory: reported at the end.
            self.failed.append((d, str(e)))
            print(f"[ablations] FAILED {d}: {e}", file=sys.stderr)
            return None
        finally:
            if self._progress is not None:
                self._progress.finish(d, ok)
        self._seen.add(key)  # a later walk finds it finished: not "already finished"
        self.trained += 1
        return result

    def _leave(self, d: Path, why: str) -> None:
        """Another process is training `d`: go on to the next run."""
        key = str(d)
        if key not in self.held:
            print(f"[ablations] moving on: {why}", flush=True)
        self.held[key] = why
        self._held_now = key
        if self._progress is not None:
            self._progress.drop(d)
        return None

    def run_baseline(self) -> None:
        cfg = self.baseline_config()
        for s in self.seeds:
            self.run_one("baseline", cfg, s)

    def _check_overrides(self, ab: Ablation) -> None:
        """A user override of a key the ablation itself changes would make the two
        arms identical (or change the question): refuse it."""
        touched = set(ab.variant_overrides(self.preset)) | set(ab.both_arms_overrides(self.preset))
        if ab.lr_grid:
            touched.add("train.learning_rate")
        mine = {o.split("=", 1)[0].strip() for o in self.overrides}
        clash = sorted(mine & touched)
        if clash:
            raise ValueError(
                f"SET/--set changes {', '.join(clash)}, which the ablation {ab.name!r} "
                f"itself sets ({', '.join(sorted(touched))}); drop those overrides"
            )

    def run_ablation(self, ab: Ablation) -> None:
        self._check_overrides(ab)
        if self.preset not in ab.presets:
            raise ValueError(
                f"ablation {ab.name!r} does not apply to preset {self.preset!r} "
                f"(it applies to: {', '.join(ab.presets)})"
            )
        if ab.lr_grid:
            self._run_lr_grid_ablation(ab)
            return
        base = self.baseline_config(ab)
        for s in self.seeds:
            self.run_one(ab.base_label, base, s)
        if ab.kind == "eval":
            return  # both arms come from the baseline runs' two evaluations
        var = self.variant_config(ab)
        for s in self.seeds:
            self.run_one(ab.name, var, s)

    def _run_lr_grid_ablation(self, ab: Ablation) -> None:
        """Figure 1 (§3.1): 'the learning rates for each network were chosen
        independently to make training as fast as possible'. Each arm tries the
        grid's rates on GRID_SEED (not a measured seed, so the reported runs are not
        the ones picked for being fastest), the middle two first, then the untried
        rate nearest the fastest so far (`next_grid_rate`). A grid run
        stops once it has used as many epochs as the fastest finished rate needed
        (it can at best tie; it is then censored). The fastest rate (`grid_rank`)
        is chosen; if it lies at the edge of the grid, the grid grows by
        GRID_EXTEND_FACTOR on that side first. Then the seeds run at that rate."""
        for label, cfg in ((ab.base_label, self.baseline_config(ab)), (ab.name, self.variant_config(ab))):
            try:
                self._run_lr_grid_arm(ab, label, cfg)
            except _ArmHeld as e:
                # Each grid run's epoch cap and the rate the seeds use depend on the
                # grid runs before it: the arm is left to the process that holds one
                # (it walks the grid in the same order and then trains the seeds), or,
                # on a worker's first pass, to the worker whose share the run is.
                if e.args[0] in self.held:
                    print(f"[ablations] {label}: another process is training its "
                          "learning-rate grid and then its seeds; moving on", flush=True)

    def _run_lr_grid_arm(self, ab: Ablation, label: str, cfg: Config) -> None:
        ranks: dict = {}

        def try_rate(lr: float) -> None:
            c = cfg.copy()
            c.train.learning_rate = float(lr)
            reached = [r[0] for r in ranks.values() if r[0] != math.inf]
            cap = int(min(reached)) if reached else None
            self._held_now = None
            # A rate that diverged has given its answer (it does not train): not retried.
            r = self.run_one(f"{label}.grid", c, GRID_SEED, epoch_limit=cap, diverged_is_final=True)
            if self._held_now:
                raise _ArmHeld(self._held_now)
            ranks[float(lr)] = (grid_rank(r.get("epochs_to_target"), r.get("train_top1_err"))
                                if r else (math.inf, math.inf))

        while (lr := next_grid_rate(ab.lr_grid, ranks)) is not None:
            try_rate(lr)
        for _ in range(GRID_MAX_EXTENSIONS):
            best = min(ranks, key=lambda lr: (ranks[lr], lr))
            if best == min(ranks) and ranks[best][0] != math.inf:
                try_rate(best / GRID_EXTEND_FACTOR)
            elif best == max(ranks) and ranks[best][0] != math.inf:
                try_rate(best * GRID_EXTEND_FACTOR)
            else:
                break
        best = min(ranks, key=lambda lr: (ranks[lr], lr))
        chosen = cfg.copy()
        chosen.train.learning_rate = best
        if self.verbose and not self._dry:
            e = ranks[best][0]
            print(f"[ablations] {label}: learning rate {best:g} chosen from "
                  f"{', '.join(f'{lr:g}' for lr in sorted(ranks))} (epochs to target "
                  f"{'not reached' if e == math.inf else int(e)})", flush=True)
        for s in self.seeds:
            self.run_one(label, chosen, s)

    # -- the suite ----------------------------------------------------------------------

    def _check(self, names) -> list:
        abls = [get_ablation(n) for n in names]
        for ab in abls:
            if self.preset not in ab.presets:
                raise ValueError(
                    f"ablation {ab.name!r} does not apply to preset {self.preset!r} "
                    f"(it applies to: {', '.join(ab.presets)}); "
                    f"for {self.preset}: {', '.join(a.name for a in for_preset(self.preset))}"
                )
        for ab in abls:
            self._check_overrides(ab)
        return abls

    def _walk(self, abls, baseline: bool) -> None:
        if baseline:
            self.run_baseline()
        for ab in abls:
            self.run_ablation(ab)

    def plan(self, names: Optional[Iterable[str]] = None, baseline: Optional[bool] = None) -> SuitePlan:
        """What `run(names)` (or, with names None, `run_all()`) would do: the runs
        to train and those already finished, without training anything. Runs
        that depend on results not yet there (the Figure 1 seeds, before the
        grid has chosen their rate) are listed at the rate known so far."""
        abls = self._check(names if names is not None else [a.name for a in for_preset(self.preset)])
        self._dry, self.plan_, self._seen = True, SuitePlan(), set()
        try:
            self._walk(abls, names is None if baseline is None else baseline)
        finally:
            self._dry = False
        if any(j.label.endswith(".grid") for j in self.plan_.todo):  # the seeds' rate is not known yet
            self.plan_.pending.append(
                "(Figure 1: grid rates stop early once they cannot win; the grid may grow "
                f"by x{GRID_EXTEND_FACTOR:g} at an edge, up to {GRID_MAX_EXTENSIONS} more rates per arm)")
        plan, self._seen = self.plan_, set()
        self.plan_ = SuitePlan()
        return plan

    def _execute(self, names: Optional[list]) -> SuitePlan:
        abls = self._check(names if names is not None else [a.name for a in for_preset(self.preset)])
        runs.check_writable(self.root)
        plan = self.plan(names) if (self.verbose or self.worker) else None
        if self.worker:
            i, n = self.worker
            self._share = {str(j.run_dir) for j in plan.todo[i::n]}
        if self.verbose:
            from reproduce import data as data_lib
            from reproduce.train import device_description

            device = device_description()
            fill_estimates(plan, [self.root, *self.published], self.preset,
                           load_data=data_lib.load, verbose=True, device=device)
            print_plan(plan, self.preset, device)
            jobs = plan.todo
            if self.worker:
                jobs = [j for j in plan.todo if str(j.run_dir) in self._share]
                print(f"[ablations] worker {i}/{n}: {len(jobs)} of these run(s) first, then "
                      "any run left that no other process holds", flush=True)
            self._progress = Progress(jobs)
        while True:
            trained = self.trained
            self._walk(abls, names is None)
            # After a worker's share: the runs left (other workers' shares, if they
            # are slower or stopped; runs decided as the suite goes). Later walks
            # take runs that came free (a holder stopped, a grid chose its rate);
            # a walk costs only reading result files.
            if self._share is not None:
                self._share = None
            elif not (self.held and self.trained > trained):
                break
        self._progress = None
        return self.plan_

    def run(self, names: Iterable[str]) -> SuitePlan:
        return self._execute(list(names))

    def run_all(self) -> SuitePlan:
        return self._execute(None)
