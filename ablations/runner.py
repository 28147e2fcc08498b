"""Runs ablations: the baseline and the variant for each seed, skipping finished runs.

Every run goes through `reproduce.train.train` into a directory named by
`reproduce.runs.run_dir(root, preset, label, fingerprint, seed)`, so a run that
already finished with the same configuration and seed is never repeated, an
interrupted one resumes, and runs copied in from other machines accumulate.
A run that fails (for example a diverged loss) is recorded in its directory and
reported at the end; the other runs still go ahead.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from ablations.registry import (
    GRID_MAX_EXTENSIONS,
    GRID_EXTEND_FACTOR,
    GRID_SEED,
    Ablation,
    for_preset,
    get_ablation,
    grid_order,
    grid_rank,
)
from reproduce import runs
from reproduce.config import Config, apply_overrides, validate


def parse_seeds(seeds) -> list[int]:
    """`3` means seeds 0, 1, 2; `0,4,7` means exactly those."""
    if isinstance(seeds, int):
        return list(range(seeds))
    s = str(seeds).strip()
    if "," in s:
        return [int(x) for x in s.split(",") if x.strip()]
    n = int(s)
    if n < 1:
        raise ValueError(f"SEEDS={seeds!r}: need at least one seed")
    return list(range(n))


@dataclass
class Plan:
    """What one call will run, in order, and what it found already done."""

    todo: list = field(default_factory=list)  # (label, cfg, run_dir)
    done: list = field(default_factory=list)
    failed: list = field(default_factory=list)  # (run_dir, message)


def _with_seed(cfg: Config, seed: int) -> Config:
    cfg = cfg.copy()
    cfg.train.seed = seed
    return cfg


class Runner:
    def __init__(self, preset: str, seeds, root=None, overrides=None, verbose: int = 1,
                 command: Optional[str] = None):
        self.preset = preset
        self.seeds = parse_seeds(seeds)
        self.root = Path(root) if root else runs.default_root()
        self.overrides = list(overrides or [])
        self.verbose = verbose
        self.command = command or "python -m ablations " + " ".join(sys.argv[1:])
        self.plan = Plan()
        self.trained = 0

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

    def run_one(self, label: str, cfg: Config, seed: int,
                epoch_limit: Optional[int] = None) -> Optional[dict]:
        cfg = _with_seed(cfg, seed)
        d = runs.run_dir(self.root, self.preset, label, cfg.fingerprint(), seed)
        if runs.is_finished(d) and not runs.can_extend(d, epoch_limit):
            self.plan.done.append(d)
            return runs.read_json(d / runs.RESULT)
        from reproduce import train as train_lib

        import keras

        keras.backend.clear_session()
        meta = {"preset": self.preset, "label": label, "overrides": self.overrides,
                "command": self.command}
        if self.verbose:
            cap = f" (at most {epoch_limit} epochs)" if epoch_limit else ""
            print(f"[ablations] {label} seed {seed}{cap} -> {d}", flush=True)
        try:
            result = train_lib.train(cfg, d, meta=meta, verbose=self.verbose,
                                     epoch_limit=epoch_limit)
        except train_lib.TrainingDiverged as e:
            self.plan.failed.append((d, str(e)))
            print(f"[ablations] FAILED {d}: {e}", file=sys.stderr)
            return None
        self.trained += 1
        return result

    def run_baseline(self) -> None:
        cfg = self.baseline_config()
        for s in self.seeds:
            self.run_one("baseline", cfg, s)

    def _check_overrides(self, ab: Ablation) -> None:
        """A user override of a key the ablation itself changes would make the two
        arms identical (or change the question): refuse it."""
        touched = set(ab.variant_overrides(self.preset)) | set(ab.base_overrides)
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
        the ones picked for being fastest), from the middle outwards. A grid run
        stops once it has used as many epochs as the fastest finished rate needed
        (it can at best tie; it is then censored). The fastest rate (`grid_rank`)
        is chosen; if it lies at the edge of the grid, the grid grows by
        GRID_EXTEND_FACTOR on that side first. Then the seeds run at that rate."""
        for label, cfg in ((ab.base_label, self.baseline_config(ab)), (ab.name, self.variant_config(ab))):
            ranks: dict = {}

            def try_rate(lr: float) -> None:
                c = cfg.copy()
                c.train.learning_rate = float(lr)
                reached = [r[0] for r in ranks.values() if r[0] != math.inf]
                cap = int(min(reached)) if reached else None
                r = self.run_one(f"{label}.grid", c, GRID_SEED, epoch_limit=cap)
                ranks[float(lr)] = (grid_rank(r.get("epochs_to_target"), r.get("train_top1_err"))
                                    if r else (math.inf, math.inf))

            for lr in grid_order(ab.lr_grid):
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
            if self.verbose:
                e = ranks[best][0]
                print(f"[ablations] {label}: learning rate {best:g} chosen from "
                      f"{', '.join(f'{lr:g}' for lr in sorted(ranks))} (epochs to target "
                      f"{'not reached' if e == math.inf else int(e)})", flush=True)
            for s in self.seeds:
                self.run_one(label, chosen, s)

    def run(self, names: Iterable[str]) -> Plan:
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
        for ab in abls:
            self.run_ablation(ab)
        return self.plan

    def run_all(self) -> Plan:
        self.run_baseline()
        return self.run([a.name for a in for_preset(self.preset)])
