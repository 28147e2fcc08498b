"""Runs ablations: the runs each one's kind asks for, skipping finished runs.

What an ablation runs is its kind's (`ablations.kinds`: a baseline and a variant
arm per seed, the baseline's runs alone, or a learning-rate grid on a selection
seed and then the seeds); the kind walks its runs through `Runner.run_one`, and
only the runner trains. Every run goes through `reproduce.train.train` into a
directory named by
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

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from ablations.kinds import kind_of
from ablations.plan import Job, Progress, SuitePlan, fill_estimates, print_plan
from ablations.registry import Ablation, for_preset, get_ablation
from reproduce import runs
from reproduce.config import Config, apply_overrides, get_config, validate


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
        raise ValueError(
            f"SEEDS={seeds!r} is neither a count (3 = seeds 0, 1, 2) nor a comma-separated list of seeds (0,4,7)"
        ) from None
    if not out and "," not in s:  # a count of zero: probably meant the seed 0
        raise ValueError(
            f"SEEDS={seeds!r} is a count (3 = seeds 0, 1, 2), so it means no "
            "seeds at all; for seed 0 alone write SEEDS=0, (a list of one seed)"
        )
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
        raise ValueError(
            f"--worker {spec!r}: expected I/N with 0 <= I < N, e.g. 0/4 ... 3/4 "
            "(SLURM: --array=0-3 and --worker $SLURM_ARRAY_TASK_ID/4)"
        )
    return i, n


# Where `Runner._finished` found a run whose result.json is damaged (its numbers
# are not numbers): neither finished nor to be trained.
DAMAGED = "damaged"


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

    def __init__(
        self,
        preset: str,
        seeds,
        root=None,
        overrides=None,
        verbose: int = 1,
        command: str | None = None,
        published=None,
        worker=None,
    ):
        self.preset = preset
        # (I, N): worker I of N first trains its share of the plan (every Nth run,
        # from the I-th), then any run still left that no other process holds.
        self.worker = worker
        self._share: set | None = None  # run dirs of this worker's first pass
        self.seeds = parse_seeds(seeds)
        self.root = Path(root) if root else runs.default_root()
        self.published = [Path(p) for p in (published or [])]
        self.overrides = list(overrides or [])
        self.verbose = verbose
        self.command = command or "python -m ablations " + " ".join(sys.argv[1:])
        self.plan_ = SuitePlan()
        self.failed: list = []  # (run_dir, message)
        self.held: dict = {}  # run_dir -> message: being trained by another process
        self.damaged: dict = {}  # run_dir -> message: finished, but its result.json is damaged
        self._warned_published: set = set()  # damaged published result files already named
        # The run the last run_one left to another process (its holder, or the worker
        # whose share it is), for the kinds whose next runs depend on it.
        self.passed_on: str | None = None
        # The folder whose run answered the last run_one (here, or a published copy);
        # None when none did. Kinds that judge a run beyond its result read it there.
        self.found: Path | None = None
        self.trained = 0
        self._dry = False
        self._seen: set = set()
        self._progress: Progress | None = None

    @property
    def dry(self) -> bool:
        """Planning: `run_one` lists the runs it would train, and trains none."""
        return self._dry

    # -- configuration of each arm ------------------------------------------------------

    def _extra(self, cfg: Config) -> Config:
        apply_overrides(cfg, self.overrides)
        return validate(cfg)

    def baseline_config(self, ab: Ablation | None = None) -> Config:
        if ab is None:
            return self._extra(get_config(self.preset))
        return self._extra(ab.base_config(self.preset))

    def variant_config(self, ab: Ablation) -> Config:
        return self._extra(ab.variant_config(self.preset))

    # -- running ------------------------------------------------------------------------

    def _finished(self, label: str, cfg: Config, seed: int, epoch_limit, diverged_is_final=False):
        """(run_dir under root, where it is finished: "done"/"published"/None, result),
        from the run's status (`reproduce.runs.read_status`): FINISHED and not to be
        extended under `epoch_limit`, here or in a published store; with
        `diverged_is_final`, DIVERGED too (with the result it had before, if it
        diverged when extended). DAMAGED, with the `RunFileError` in place of the
        result, when the run's result.json under root is damaged and no other
        place answers; a damaged published copy alone is warned about and passed
        over (the run is trained here)."""
        from reproduce.devices import resolved_config  # imports Keras

        # The identity the trainer gives the run: "auto" precision as it resolves here.
        fp = resolved_config(cfg).fingerprint()
        d = runs.run_dir(self.root, self.preset, label, fp, seed)
        places = [("done", d)] + [
            ("published", runs.run_dir(store, self.preset, label, fp, seed)) for store in self.published
        ]
        status = [runs.read_status(p) for _, p in places]
        # A result whose numbers are not numbers is damaged, as for publishing and
        # the report: another place's copy may still answer. Damage here (under
        # root) is DAMAGED: training again would overwrite what the run computed.
        # A damaged published copy alone is passed over with a warning: the run
        # is trained (or extended) here, and the published copy stays as it is.
        damaged = []
        for (where, p), st in zip(places, status):
            if st == runs.FINISHED:
                try:
                    result = runs.read_result(p, checked=True)
                except runs.RunFileError as e:
                    damaged.append((where, e))
                    continue
                if not runs.can_extend(p, epoch_limit):
                    self.found = p
                    return d, where, result
        if diverged_is_final:
            for (where, p), st in zip(places, status):
                if st == runs.DIVERGED:
                    try:
                        result = runs.read_result(p, checked=True)
                        self.found = p
                        return d, where, result
                    except runs.RunFileError as e:
                        damaged.append((where, e))
        local = [e for where, e in damaged if where == "done"]
        if local:
            return d, DAMAGED, local[0]
        for _, e in damaged:
            key = str(e.path)
            if key not in self._warned_published:
                self._warned_published.add(key)
                print(f"[ablations] not using a damaged published run (training it here): {e}", file=sys.stderr)
        return d, None, None

    def run_one(
        self, label: str, cfg: Config, seed: int, epoch_limit: int | None = None, diverged_is_final: bool = False
    ) -> dict | None:
        """Train the run of `label`, `cfg` and `seed` unless it is finished (here or
        published), or list it when planning; its result, or None. `epoch_limit`
        caps its epochs; with `diverged_is_final` a run that diverged is an answer,
        not a failure (see `ablations.kinds.base.Runs`). A finished run with a
        damaged result.json gives None and is reported (`_damaged`)."""
        self.passed_on = self.found = None
        cfg = _with_seed(cfg, seed)
        d, where, result = self._finished(label, cfg, seed, epoch_limit, diverged_is_final)
        key = str(d)
        if where == DAMAGED:
            return self._damaged(d, result)
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
            self.passed_on = key  # another worker's share, on this first pass
            return None
        holder = runs.holder(d)
        if holder is not None:
            return self._leave(d, f"{d} is being trained by another process ({holder})")
        import keras

        from reproduce import train as train_lib

        keras.backend.clear_session()
        meta = {"preset": self.preset, "label": label, "overrides": self.overrides, "command": self.command}
        if self._progress is not None:
            self._progress.start(d, label, seed)
        elif self.verbose:
            print(f"[ablations] {label} seed {seed} -> {d}", flush=True)
        if self.verbose:
            cap = f" (at most {epoch_limit} epochs)" if epoch_limit else ""
            print(f"[ablations] {d}{cap}", flush=True)
        ok = False
        try:
            result = train_lib.train(cfg, d, meta=meta, verbose=self.verbose, epoch_limit=epoch_limit)
            ok = True
        except runs.RunLocked as e:  # taken between the look above and the lock
            return self._leave(d, str(e))
        except train_lib.TrainingDiverged as e:
            if diverged_is_final:  # a grid rate that does not train: an answer, not a failure
                print(f"[ablations] {d} diverged: recorded as this learning rate's answer ({e})", flush=True)
                self.found = d
                try:
                    return runs.read_result(d, checked=True)
                except runs.RunFileError as damaged:
                    return self._damaged(d, damaged)
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
        self.found = d
        self.trained += 1
        return result

    def _damaged(self, d: Path, error: runs.RunFileError) -> None:
        """The finished run `d` has a damaged result: it is neither used nor trained
        again (that would discard or overwrite what it computed), and it is reported
        at the end, as a failure, like a damaged run directory met in training. The
        kinds whose next runs depend on it (a learning-rate grid) stop there."""
        key = str(d)
        if key not in self.damaged:
            print(f"[ablations] skipping a damaged run: {error}", file=sys.stderr, flush=True)
        self.damaged[key] = str(error)
        # The folder listed is the one whose file is damaged, with its message.
        where = error.path.parent if getattr(error, "path", None) is not None else d
        if not self._dry and all(str(f) != str(where) for f, _ in self.failed):
            self.failed.append((where, str(error)))
        self.passed_on = key
        if self._progress is not None:
            self._progress.drop(d)
        return None

    def _leave(self, d: Path, why: str) -> None:
        """Another process is training `d`: go on to the next run."""
        key = str(d)
        if key not in self.held:
            print(f"[ablations] moving on: {why}", flush=True)
        self.held[key] = why
        self.passed_on = key
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
        kind = kind_of(ab)
        kind.check(ab)
        touched = kind.touched_keys(ab, self.preset)
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
        kind_of(ab).walk(ab, self)

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

    def plan(self, names: Iterable[str] | None = None, baseline: bool | None = None) -> SuitePlan:
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
        for ab in abls:  # runs decided as the suite goes
            self.plan_.pending += kind_of(ab).plan_notes(ab, self.plan_.todo)
        plan, self._seen = self.plan_, set()
        self.plan_ = SuitePlan()
        return plan

    def _execute(self, names: list | None) -> SuitePlan:
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
            fill_estimates(
                plan, [self.root, *self.published], self.preset, load_data=data_lib.load, verbose=True, device=device
            )
            print_plan(plan, self.preset, device)
            jobs = plan.todo
            if self.worker:
                jobs = [j for j in plan.todo if str(j.run_dir) in self._share]
                print(
                    f"[ablations] worker {i}/{n}: {len(jobs)} of these run(s) first, then "
                    "any run left that no other process holds",
                    flush=True,
                )
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
