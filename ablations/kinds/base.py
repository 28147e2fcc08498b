"""What a kind of ablation decides, and the runner interface its jobs walk through.

For an ablation (`ablations.registry.Ablation`) of its kind, a `Kind` owns:

- its jobs (`walk`): the runs to do, adaptive ones included (runs whose
  settings depend on earlier runs' results), walked through the runner's small
  interface `Runs`; a kind never imports training code, the runner passes the
  training in by being the one that trains;
- the configuration keys it sets (`touched_keys`: a user override of one would
  change the question, and is refused);
- its labels: its arms' seeded runs (`arm_labels`) and any other runs it reads
  (`extra_labels`);
- the plan's notes about runs it decides as the suite goes (`plan_notes`);
- its analysis (`compare`): a `reports.measures.Comparison` with its rows, and
  anything more in `Comparison.extra`, and the runs it still needs (`missing`);
- its report: text for the generic tables (`difference_text`,
  `measured_suffix`) and blocks and figures of its own (`report_blocks`).

The defaults here are those of two arms each trained on every seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # types only: a kind imports no training code
    from pathlib import Path

    from reproduce.config import Config


class Runs(Protocol):
    """What a kind's `walk` may ask of the runner (`ablations.runner.Runner`)."""

    preset: str
    seeds: list  # the measured seeds
    verbose: int
    dry: bool  # planning only: `run_one` lists the runs it would train, and trains none
    held: dict  # run directory -> why: runs that other processes are training
    damaged: dict  # run directory -> why: finished runs whose result.json is damaged
    # The run directory the last `run_one` left to another process (one that holds
    # it, or another worker whose share it is) or to the user (damaged), else None.
    passed_on: str | None

    def baseline_config(self, ab) -> Config: ...

    def variant_config(self, ab) -> Config: ...

    def run_one(
        self, label: str, cfg: Config, seed: int, epoch_limit: int | None = None, diverged_is_final: bool = False
    ) -> dict | None:
        """Train (or find finished) the run of `label`, `cfg` and `seed`; its
        result, or None (not finished: failed, damaged, left to another process,
        or only planned). `epoch_limit` caps its epochs (a capped run is extended by a
        later call with a higher cap); with `diverged_is_final` a run that
        diverged is an answer (its earlier result, if any), not a failure."""
        ...


class Kind:
    """The default kind: a baseline arm and a variant arm, each trained on every seed."""

    name = ""
    # The variant arm is runs of its own (False: the baseline arm's runs, evaluated
    # another way).
    trains_variant = True

    def check(self, ab) -> None:
        """Raise ValueError if `ab` lacks what this kind needs."""

    # -- labels ---------------------------------------------------------------------

    def arm_labels(self, ab) -> tuple:
        """The labels of the arms' seeded runs (each needs every measured seed)."""
        return (ab.base_label, ab.name) if self.trains_variant else (ab.base_label,)

    def extra_labels(self, ab) -> tuple:
        """Labels of other runs the analysis reads (not superseded configurations)."""
        return ()

    def selection_label(self, label: str) -> str | None:
        """The label of the runs that chose `label`'s settings, if this kind makes such runs."""
        return None

    # -- jobs -----------------------------------------------------------------------

    def touched_keys(self, ab, preset: str) -> set:
        return set(ab.variant_overrides(preset)) | set(ab.both_arms_overrides(preset))

    def walk(self, ab, runs: Runs) -> None:
        base = runs.baseline_config(ab)
        for s in runs.seeds:
            runs.run_one(ab.base_label, base, s)
        if not self.trains_variant:
            return
        var = runs.variant_config(ab)
        for s in runs.seeds:
            runs.run_one(ab.name, var, s)

    def plan_notes(self, ab, todo: list) -> list:
        """Lines for the plan about runs decided as the suite goes (`todo`: the
        plan's `ablations.plan.Job`s so far)."""
        return []

    # -- analysis -------------------------------------------------------------------

    def compare(self, preset: str, ab, labels: dict, prefer_base: str | None = None):
        """The `reports.measures.Comparison` of `ab` on `preset` from `labels`
        (label -> [reports.collect.Group]); `prefer_base`: a baseline fingerprint
        to try first (the one the preset's other comparisons use)."""
        raise NotImplementedError

    def missing(self, comp) -> list:
        """[(label, seed, status)] of runs beyond the arms' seeds that the analysis lacks."""
        return []

    # -- report ---------------------------------------------------------------------

    def difference_text(self, comp) -> str | None:
        """The arms' difference as the report's "Arms compared" table says it (None:
        their configuration difference)."""
        return None

    def measured_suffix(self, comp) -> str:
        """More for the summary table's "Measured" cell of the primary row."""
        return ""

    def report_blocks(self, an, comp, out_dir: Path, figs: list) -> list:
        """Blocks (`reports.document`) for the preset's figures section; figures
        written go to `figs` (`reports.figures.FigureFile`)."""
        return []
