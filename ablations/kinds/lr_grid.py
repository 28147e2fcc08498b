"""Kind "lr_grid": each arm's learning rate chosen on a selection seed, then the seeds at that rate.

Figure 1 (§3.1): "the learning rates for each network were chosen independently
to make training as fast as possible". Each arm (the baseline configuration and
the variant) first runs the rates of `Ablation.lr_grid` on the selection seed
GRID_SEED, apart from the measured seeds so that the reported runs are not the
ones picked for being fastest. The rates run from the grid's middle outwards
(`next_grid_rate`); a grid run stops once it has used as many epochs as the
fastest finished rate needed (it can at best tie, and is then censored); a rate
that diverges has given its answer (it does not train) and is not retried. The
fastest rate (`grid_rank`: epochs to the training-error target, then the last
training error) is chosen; if it lies at an edge of the grid, the grid grows by
GRID_EXTEND_FACTOR on that side first. A rate whose run diverged or ended at
chance (`grid_failed`) trains nothing and ranks last; when every rate tried
failed, the rates were all too high and the grid grows downwards. Then the
measured seeds run at the chosen rate, with `Ablation.seed_overrides` (the fair
tanh test's seeds train on past the target to a fixed budget, for the final
error). An arm labelled L has its grid runs labelled `grid_label(L)`. Where
the ablation names more selection seeds for the preset
(`Ablation.check_selection_seeds`), the same search runs on each of them after
the seeds, only to check the choice: the report says whether the chosen rates
and the ratio on that seed alone change (`SelectionCheck`).

The analysis of a claim on epochs to the training-error target (`Claim.metric`
"epochs", Figure 1's): the ratio variant / baseline of epochs to target over the
seeds (a censored variant run makes it a lower bound), under several counting
rules, and the wall-time ratio on one device. A claim on another metric gets the
rows of `paired` (the arms' rates may differ). Either way the report shows the
grid, rate by rate. The arms are named by `Ablation.arm_names` (Figure 1: ReLU
and tanh).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ablations.kinds import paired
from ablations.kinds.base import Kind
from reports import collect, document, figures, measures, stats, text
from reproduce import runs
from reproduce.config import apply_overrides, validate

# The seed of the grid runs: apart from the measured seeds, so the reported runs
# are not the ones picked for being fastest.
GRID_SEED = 1000
# A rate chosen at the edge of the grid may not be the best one: the grid grows by
# this factor on that side, at most GRID_MAX_EXTENSIONS times, before seeds run.
GRID_EXTEND_FACTOR = 2.0
GRID_MAX_EXTENSIONS = 3
# §3.1: "25% training error"; the target of runs that record none.
DEFAULT_TARGET = 0.25
LR_KEY = "train.learning_rate"
# An arm labelled L has its grid runs labelled L + GRID_SUFFIX (published run
# directories are named by it: "fig1_tanh.base.grid", "fig1_tanh.grid").
GRID_SUFFIX = ".grid"


def grid_label(arm_label: str) -> str:
    """The label of the grid runs of the arm whose seeded runs are `arm_label`."""
    return arm_label + GRID_SUFFIX


def is_grid_label(label: str) -> bool:
    return label.endswith(GRID_SUFFIX)


# --------------------------------------------------------------------------------------
# The grid's order and ranks
# --------------------------------------------------------------------------------------


def grid_order(rates) -> list:
    """The order in which grid rates are tried: from the grid's geometric middle
    outwards, so that a fast rate is likely found first and bounds the others
    (ties: the lower rate first, since too high a rate fails in the first epochs)."""
    rates = sorted(float(r) for r in rates)
    if not rates:
        return []
    mid = math.sqrt(rates[0] * rates[-1])
    return sorted(rates, key=lambda r: (round(abs(math.log(r / mid)), 9), r))


def next_grid_rate(rates, ranks: dict):
    """The next grid rate to try, given the `grid_rank` of those tried (rate ->
    rank), or None when every rate has been tried. The first two come from
    `grid_order` (the middle); after that, the untried rate nearest the fastest so
    far (in octaves), so that the rates likely to be fast run before the ones that
    can only be capped; a tie goes to the side where the ranks improve (the side
    away from the slower of the tried rates), else the lower rate."""
    order = grid_order(rates)
    left = [r for r in order if not any(math.isclose(r, t) for t in ranks)]
    if not left:
        return None
    if len(ranks) < 2:
        return left[0]
    best = min(ranks, key=lambda lr: (ranks[lr], lr))
    worst = max(ranks, key=lambda lr: (ranks[lr], -lr))
    away = 1.0 if worst < best else -1.0  # +1: towards higher rates

    def key(r):
        dist = round(abs(math.log2(r / best)), 9)
        return (dist, 0 if math.copysign(1.0, math.log(r / best)) == away else 1, r)

    return min(left, key=key)


def pending_rate(rates, ranks: dict, failed=()):
    """The next rate the grid search runs, given the `grid_rank` of the rates tried
    (rate -> rank) and the rates among them whose runs failed (`grid_failed`), or
    None when the search is over: every rate of `rates` (`next_grid_rate`), then,
    while the fastest rate reached the target at an edge of those tried, one
    GRID_EXTEND_FACTOR beyond it, or, while every rate tried failed, one
    GRID_EXTEND_FACTOR below the lowest; at most GRID_MAX_EXTENSIONS rates outside
    `rates` in all."""
    lr = next_grid_rate(rates, ranks)
    if lr is not None:
        return lr
    if not ranks:
        return None
    grown = [r for r in ranks if not any(math.isclose(r, x) for x in rates)]
    if len(grown) >= GRID_MAX_EXTENSIONS:
        return None
    best = min(ranks, key=lambda lr: (ranks[lr], lr))
    if ranks[best][0] == math.inf:
        # Divergence and dead units come from too high a rate: only when every rate
        # tried failed is a lower one worth a run (a run that merely learns slowly
        # says nothing about which side to try).
        if all(any(math.isclose(r, f) for f in failed) for r in ranks):
            return min(ranks) / GRID_EXTEND_FACTOR
        return None
    if best == min(ranks):
        return best / GRID_EXTEND_FACTOR
    if best == max(ranks):
        return best * GRID_EXTEND_FACTOR
    return None


def grid_failed(run) -> bool:
    """Whether a grid run says its rate trains nothing: it diverged (a non-finite
    loss), or it ended at chance (`reports.stats.collapsed` on its validation top-1
    error, the rule by which the report calls an arm collapsed), as when a rate too
    high for the initialization kills the ReLUs of fc7 in the first steps (§5's
    positive biases raise that risk)."""
    if run is None:
        return False
    if run.status == runs.DIVERGED:
        return True
    err = (run.result or {}).get("val_top1_err")
    return bool(stats.collapsed(err, collect.num_classes(run), collect.n_val(run)))


def cell_rank(cell) -> tuple | None:
    """The `grid_rank` of a grid cell whose run has its answer (a failed run ranks
    last), or None while it has none."""
    if cell.failed:
        return (math.inf, math.inf)
    if cell.ttt is None:
        return None
    return grid_rank(cell.ttt.epochs if cell.ttt.reached else None, (cell.run.result or {}).get("train_top1_err"))


def grid_rank(epochs_to_target, train_err) -> tuple:
    """How a grid run ranks (lower is faster): epochs to the training-error target
    (None: not reached), then the training error at the last epoch run. Both are
    properties of the run's computation, not of the machine's load, unlike wall
    time."""
    return (
        float("inf") if epochs_to_target is None else int(epochs_to_target),
        float("inf") if train_err is None else float(train_err),
    )


def arm_names(ab) -> tuple:
    """(baseline, variant) as tables and figures name them."""
    return tuple(ab.arm_names) if len(ab.arm_names) == 2 else (ab.base_label, ab.name)


def _title(ab) -> str:
    """The figure the ablation reproduces, from its description ("Figure 1: ..."), or ""."""
    return ab.description.split(": ", 1)[0] if ": " in ab.description else ""


# --------------------------------------------------------------------------------------
# The kind
# --------------------------------------------------------------------------------------


class _ArmPassedOn(Exception):
    """A grid run is another process's: the arm is left to it."""


class LrGrid(Kind):
    name = "lr_grid"

    def check(self, ab) -> None:
        if not ab.lr_grid:
            raise ValueError(
                f"ablation {ab.name!r} is of kind {self.name!r} but has no learning rates to try (its lr_grid is empty)"
            )

    def extra_labels(self, ab) -> tuple:
        return (grid_label(ab.base_label), grid_label(ab.name))

    def selection_label(self, label: str) -> str | None:
        # A run that stops at a target runs the epochs its arm's grid measured.
        return None if is_grid_label(label) else grid_label(label)

    def touched_keys(self, ab, preset: str) -> set:
        return super().touched_keys(ab, preset) | {LR_KEY} | set(ab.seed_overrides)

    def walk(self, ab, runner) -> None:
        self.check(ab)
        checks = check_seeds(ab, runner.preset)
        clash = sorted(set(checks) & set(runner.seeds))
        if clash:
            raise ValueError(
                f"seed(s) {clash} are selection seeds of {ab.name!r} on {runner.preset!r} "
                f"(its learning-rate grids run there: {GRID_SEED}, {', '.join(map(str, checks))}); "
                "measure other seeds"
            )
        for label, cfg in ((ab.base_label, runner.baseline_config(ab)), (ab.name, runner.variant_config(ab))):
            try:
                _walk_arm(ab, label, cfg, runner, checks)
            except _ArmPassedOn as e:
                # Each grid run's epoch cap and the rate the seeds use depend on the
                # grid runs before it: the arm is left to the process that holds one
                # (it walks the grid in the same order and then trains the seeds), or,
                # on a worker's first pass, to the worker whose share the run is.
                if e.args[0] in runner.held:
                    print(
                        f"[ablations] {label}: another process is training its "
                        "learning-rate grid and then its seeds; moving on",
                        flush=True,
                    )
                elif e.args[0] in runner.damaged:
                    # Ranking the other rates without it could choose another rate
                    # and train every seed at it.
                    print(
                        f"[ablations] {label}: a run of its learning-rate grid is damaged (named above), so "
                        "no rate is chosen and its seeds wait until that run is restored or deleted; moving on",
                        file=sys.stderr,
                        flush=True,
                    )

    def plan_notes(self, ab, todo: list) -> list:
        grids = set(self.extra_labels(ab))
        if not any(j.label in grids for j in todo):  # the seeds' rate is known
            return []
        return [
            f"({_title(ab) or ab.name}: grid rates stop early once they cannot win; the grid may grow "
            f"by x{GRID_EXTEND_FACTOR:g} at an edge, up to {GRID_MAX_EXTENSIONS} more rates per arm)"
        ]

    def compare(self, preset: str, ab, labels: dict, prefer_base: str | None = None):
        comp = measures.arms_comparison(preset, ab, labels, allowed=(LR_KEY,), prefer_base=prefer_base)
        if comp.claim.metric != "epochs":
            paired.add_rows(comp)
        comp.extra = analyze(ab, labels, comp, preset)
        # After the epochs row exists: an arm at chance in some seed, or a confound,
        # withholds a ratio's verdict as it does a delta's.
        measures.check_arms(comp)
        return comp

    def missing(self, comp) -> list:
        fig, ab = comp.extra, comp.ablation
        out = []
        grids = [(GRID_SEED, fig.grid)] + [(c.seed, c.grid) for c in fig.checks]
        for seed, grid in grids:
            for key, label in zip(fig.keys, self.extra_labels(ab)):
                for cell in grid[key]:
                    if cell.status != "finished":
                        out.append(
                            (f"{label} (lr {cell.lr:g})", seed, "absent" if cell.status == "missing" else cell.status)
                        )
        return out

    def measured_suffix(self, comp) -> str:
        r = comp.primary or next(iter(comp.rows), None)
        return range_text(comp.extra) if r is not None and r.is_ratio else ""

    def report_blocks(self, an, comp, out_dir: Path, figs: list) -> list:
        ab, p = comp.ablation, an.preset
        title = _title(ab)
        stem = title.lower().replace(" ", "") if title else ab.name
        fig = figure(
            comp.extra,
            out_dir / "figures" / f"{p}_{stem}.png",
            f"{title or ab.name} ({p}): {ab.description.split(': ', 1)[-1]}",
        )
        if fig is not None:
            figs.append(fig)
        return blocks(an, comp, out_dir, fig)


def check_seeds(ab, preset: str) -> tuple:
    """The selection seeds after GRID_SEED on which `ab`'s grids are repeated, to
    check the choice, on `preset` (`Ablation.check_selection_seeds`)."""
    return tuple(int(s) for s in getattr(ab, "check_selection_seeds", {}).get(preset, ()))


def _search(ab, label: str, cfg, runner, seed: int) -> tuple:
    """Run the grid search of the arm `label` on selection seed `seed`: (the chosen
    rate, its rank)."""
    ranks: dict = {}
    failed: set = set()

    def try_rate(lr: float) -> None:
        c = cfg.copy()
        c.train.learning_rate = float(lr)
        reached = [r[0] for r in ranks.values() if r[0] != math.inf]
        cap = int(min(reached)) if reached else None
        # A rate that diverged has given its answer (it does not train): not retried.
        r = runner.run_one(grid_label(label), c, seed, epoch_limit=cap, diverged_is_final=True)
        if runner.passed_on:
            raise _ArmPassedOn(runner.passed_on)
        if grid_failed(_answer(runner)):
            failed.add(float(lr))
            ranks[float(lr)] = (math.inf, math.inf)
        else:
            ranks[float(lr)] = (
                grid_rank(r.get("epochs_to_target"), r.get("train_top1_err")) if r else (math.inf, math.inf)
            )

    while (lr := pending_rate(ab.lr_grid, ranks, failed)) is not None:
        try_rate(lr)
    best = min(ranks, key=lambda lr: (ranks[lr], lr))
    if runner.verbose and not runner.dry:
        e = ranks[best][0]
        print(
            f"[ablations] {label}: learning rate {best:g} "
            + ("chosen" if seed == GRID_SEED else f"fastest on selection seed {seed}")
            + f" from {', '.join(f'{lr:g}' for lr in sorted(ranks))} (epochs to target "
            f"{'not reached' if e == math.inf else int(e)})",
            flush=True,
        )
    return best, ranks[best]


def _answer(runner):
    """The run that answered the runner's last `run_one`, or None (planning; a
    stand-in trainer that wrote no folder; a file unreadable since)."""
    if runner.found is None:
        return None
    try:
        return runs.load_run(runner.found)
    except runs.RunFileError:
        return None


def seed_config(ab, cfg, lr: float):
    """The configuration of an arm's seeded runs: `cfg` at the chosen rate `lr`,
    with `Ablation.seed_overrides`."""
    chosen = cfg.copy()
    chosen.train.learning_rate = float(lr)
    apply_overrides(chosen, ab.seed_overrides)
    return validate(chosen)


def _walk_arm(ab, label: str, cfg, runner, checks: tuple = ()) -> None:
    best, _ = _search(ab, label, cfg, runner, GRID_SEED)
    chosen = seed_config(ab, cfg, best)
    for s in runner.seeds:
        runner.run_one(label, chosen, s)
    # After the seeds: the reported runs do not wait for the check.
    for seed in checks:
        _search(ab, label, cfg, runner, seed)


# --------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------


@dataclass
class GridCell:
    lr: float
    run: object | None  # reproduce.runs.Run
    ttt: stats.TimeToTarget | None
    wall_s: float | None
    status: str
    censored: bool = False  # stopped once it could no longer beat the fastest rate
    failed: bool = False  # its run diverged or ended at chance (`grid_failed`)


@dataclass
class SelectionCheck:
    """The grids repeated on another selection seed (`Ablation.check_selection_seeds`)."""

    seed: int
    grid: dict  # arm key -> [GridCell] sorted by lr
    chosen: dict  # arm key -> the fastest rate of a complete grid, or None
    epochs: dict  # arm key -> epochs to target at that rate (None: not reached)

    @property
    def complete(self) -> bool:
        return all(v is not None for v in self.chosen.values())

    @property
    def ratio(self) -> float | None:
        """variant / baseline epochs to target on this seed alone, at its own rates."""
        b, v = self.epochs.values()
        return v / b if b and v else None


def _fastest(cells: list, lrs=None):
    """The cell `cell_rank` puts first among finished `cells` (restricted to `lrs`), or None."""
    done = [c for c in cells if c.ttt is not None and (lrs is None or any(math.isclose(c.lr, x) for x in lrs))]
    if not done:
        return None
    return min(done, key=lambda c: (cell_rank(c), c.lr))


def _ranks(cells: list) -> tuple[dict, set] | None:
    """(rate -> `cell_rank`, the failed rates) of the cells that have their answer
    (finished, or diverged), as the search ranked them; None while a run the search
    started is not finished (unfinished or failed)."""
    ranks, failed = {}, set()
    for c in cells:
        rank = cell_rank(c)
        if rank is not None:
            ranks[c.lr] = rank
            if c.failed:
                failed.add(c.lr)
        elif c.status != "missing":
            return None
    return ranks, failed


def _selection_check(ab, labels: dict, target: float, keys: tuple, seed: int) -> SelectionCheck:
    grid, chosen, epochs = {}, {}, {}
    for key, label in zip(keys, (grid_label(ab.base_label), grid_label(ab.name))):
        grid[key], _ = _grid_cells(ab, labels, target, label, seed)
        # Complete: the search has no rate left to run (`pending_rate`).
        done = _ranks(grid[key])
        best = _fastest(grid[key]) if done is not None and pending_rate(ab.lr_grid, *done) is None else None
        chosen[key] = best.lr if best is not None else None
        epochs[key] = best.ttt.epochs if best is not None and best.ttt.reached else None
    return SelectionCheck(seed, grid, chosen, epochs)


@dataclass
class Fig1:
    """What an lr_grid ablation measured beyond its rows (`Comparison.extra`)."""

    ablation: object  # ablations.registry.Ablation
    target: float
    base_runs: list  # counted runs of the baseline arm (Figure 1: ReLU)
    variant_runs: list  # counted runs of the variant arm (tanh)
    base_ttt: dict  # seed -> TimeToTarget
    variant_ttt: dict
    ratio: stats.RatioSummary | None
    wall_ratio: stats.RatioSummary | None
    base_lr: float | None
    variant_lr: float | None
    grid: dict  # arm key ("relu"/"tanh") -> [GridCell] sorted by lr
    notes: list = field(default_factory=list)
    wall_device: str | None = None  # the one device whose runs the wall times compare
    arm_walls: dict = field(default_factory=dict)  # arm key -> {seed: wall s} on wall_device
    # The ratio under each way of counting (see `counting_rules`); its spread is the
    # range the report gives, since the choice of rule moves the ratio more than the
    # seeds do.
    rules: list = field(default_factory=list)
    names: tuple = ("baseline", "variant")  # the arms as tables name them (`arm_names`)
    checks: list = field(default_factory=list)  # [SelectionCheck], one per further selection seed
    # arm key -> {lr: (runs, collapsed runs, [dead fc7 fractions of those])}, over every
    # finished run of the arm at any rate (grids, seeds, earlier choices); empty when
    # no run of either arm collapsed (`collapse_by_rate`).
    collapses: dict = field(default_factory=dict)

    @property
    def keys(self) -> tuple:
        """The arms' keys of `grid` and `arm_walls` (their names in lower case)."""
        return tuple(n.lower() for n in self.names)

    @property
    def rule_range(self) -> tuple | None:
        ests = [r.estimate for r in self.rules if r.estimate is not None and math.isfinite(r.estimate)]
        return (min(ests), max(ests)) if ests else None


@dataclass
class CountingRule:
    """The ratio (variant / baseline epochs to target) under one counting rule."""

    name: str
    estimate: float | None
    ci: stats.RatioSummary | None  # None: one pair, no interval
    n: int  # pairs
    per_seed: dict = field(default_factory=dict)  # seed -> (baseline, variant) values
    # The rule changes which seeds count (a selection seed added or alone), not how epochs are counted.
    by_seed: bool = False


def _one_device(names, bruns, vruns, wb: dict, wv: dict):
    """Seconds compare only on one machine (the same code ran 2-3x apart on two CPUs
    with one host name): keep the wall times (seed -> s) of the device both arms
    ran on most, as (device, wb, wv, note). Runs that recorded no device are kept
    only when no run did; arms with no device in common keep no wall times."""
    dev_b = {r.seed: measures.run_device(r) for r in bruns if r.seed in wb}
    dev_v = {r.seed: measures.run_device(r) for r in vruns if r.seed in wv}
    known = (set(dev_b.values()) | set(dev_v.values())) - {None}
    if not known:
        return None, wb, wv, None
    shared = (
        (set(dev_b.values()) & set(dev_v.values())) if dev_b and dev_v else set(dev_b.values()) | set(dev_v.values())
    ) - {None}
    if not shared:
        return (
            None,
            {},
            {},
            (
                f"wall times: the {names[0]} and {names[1]} runs ran on different devices, so no "
                "wall times or wall-time ratio are given (seconds are not comparable across "
                "machines)"
            ),
        )
    dev = max(shared, key=lambda d: (min(list(dev_b.values()).count(d), list(dev_v.values()).count(d)), str(d)))
    keep_b = {s: x for s, x in wb.items() if dev_b[s] == dev}
    keep_v = {s: x for s, x in wv.items() if dev_v[s] == dev}
    left = len(wb) + len(wv) - len(keep_b) - len(keep_v)
    note = (
        None
        if not left
        else (
            f"wall times: only the runs on {dev} ({names[0]} {len(keep_b)}, {names[1]} {len(keep_v)}) are compared; "
            f"{left} run(s) on other or unrecorded devices are left out of the wall-time columns, since seconds are "
            "not comparable across machines (epochs are)"
        )
    )
    return dev, keep_b, keep_v, note


def _target_of(ab, arm_runs) -> float:
    """The runs' own target; before any run, the one the ablation registers."""
    for r in arm_runs:
        t = r.config.get("train", {}).get("stop_at_train_error")
        if t:
            return float(t)
    for diff in (ab.overrides, ab.base_overrides):
        if diff.get("train.stop_at_train_error"):
            return float(diff["train.stop_at_train_error"])
    return DEFAULT_TARGET


def _lr_of(arm_runs) -> float | None:
    lrs = sorted({collect.learning_rate(r) for r in arm_runs} - {None})
    return lrs[0] if len(lrs) == 1 else None


def _epochs_row(comp, names, bt: dict, vt: dict, target: float, notes: list):
    """The ratio of epochs to target (variant / baseline) and its row, appended to
    the comparison; (ratio, wall ratio, wall device, baseline walls, variant walls)."""
    a, claim = comp.ablation, comp.claim
    bruns = comp.pair.base.counted if comp.pair.base else []
    vruns = comp.pair.variant.counted if comp.pair.variant else []
    for r in bruns + vruns:
        e = (r.result or {}).get("epochs_to_target")
        t = (bt if r in bruns else vt)[r.seed]
        if e is not None and t.reached and int(e) != t.epochs:
            notes.append(
                f"`{r.label}` seed {r.seed}: result.json says {e} epochs to target, "
                f"the logged curve {t.epochs}; the curve is used"
            )
    ratio = wall = None
    n = min(len(bt), len(vt))
    wb = measures.wall_to_target(comp.pair.base, target)
    wv = measures.wall_to_target(comp.pair.variant, target)
    wall_device, wb, wv, note = _one_device(
        names, bruns, vruns, {s: x for s, x in wb.items() if x > 0}, {s: x for s, x in wv.items() if x > 0}
    )
    if note:
        notes.append(note)
    if bt and vt:
        ratio = stats.ratio_interval(
            {s: t.bound for s, t in bt.items()}, {s: t.bound for s, t in vt.items()}, measures.LEVEL
        )
        if wb and wv:
            wall = stats.ratio_interval(wb, wv, measures.LEVEL)
    base_cens = [s for s, t in bt.items() if not t.reached]
    var_cens = [s for s, t in vt.items() if not t.reached]
    if var_cens:
        notes.append(
            f"{names[1]} seeds {var_cens} never reached {target:.0%}; their epochs are counted as the "
            f"epochs run, so the ratio and its interval are lower bounds: {names[1]} needs at least that "
            "many times the epochs"
        )
    claimed, claim_text, _ = measures.claimed_text(claim, "epochs")
    log_ci = (
        ratio.log
        if ratio is not None
        else stats.Interval(stats.NAN, stats.NAN, stats.NAN, "n/a", n, reason="an arm has no runs")
    )
    row = measures.Row(
        a.name,
        "epochs",
        claimed,
        claim_text,
        claim.direction,
        {s: t.bound for s, t in bt.items()},
        {s: t.bound for s, t in vt.items()},
        ratio if ratio is not None else stats.RatioSummary(*(stats.NAN,) * 5, "n/a", n),
        None,
        log_ci,
        lower_bound_only=bool(var_cens),
        notes=notes,
        label=f"epochs to {target:.0%} train err",
        interval_at=(
            lambda level: (
                stats.ratio_interval(
                    {s: t.bound for s, t in bt.items()}, {s: t.bound for s, t in vt.items()}, level
                ).log
            )
        )
        if ratio is not None
        else None,
    )
    measures.add_power(row, log_ci)
    if base_cens:
        row.unmeasurable = f"{names[0]} seeds {base_cens} never reached {target:.0%}"
        notes.append(f"{names[0]} seeds {base_cens} never reached {target:.0%}: the ratio has no lower bound")
    if row.lower_bound_only:
        row.seeds_needed = None  # a power calculation for a censored ratio would be wrong
    comp.rows.append(row)
    return ratio, wall, wall_device, wb, wv


def _grid_cells(ab, labels: dict, target: float, label: str, seed: int = GRID_SEED) -> tuple[list, set]:
    """([GridCell] by rate, the seeds of its finished runs) of the grid runs `label`
    on selection seed `seed`."""
    grid_runs = [r for g in labels.get(label, []) for r in g.runs if r.seed == seed]
    seeds = {r.seed for r in grid_runs if collect.is_counted(r)}
    lrs = sorted(
        {collect.learning_rate(r) for r in grid_runs if collect.learning_rate(r) is not None} | set(ab.lr_grid)
    )
    cells = []
    for lr in lrs:
        at = [
            r for r in grid_runs if collect.learning_rate(r) is not None and math.isclose(collect.learning_rate(r), lr)
        ]
        done = sorted((r for r in at if collect.is_counted(r)), key=lambda r: collect._date_key(collect.run_date(r)))
        if done:
            r = done[-1]
            wall_s = (r.result or {}).get("wall_time_s")
            cells.append(
                GridCell(
                    lr,
                    r,
                    measures.run_ttt(r, target),
                    wall_s,
                    "finished",
                    bool(r.result.get("censored")),
                    grid_failed(r),
                )
            )
        elif at:
            r = sorted(at, key=lambda r: collect._date_key(collect.run_date(r)))[-1]
            status = collect.run_status(r)
            if r.status == runs.DIVERGED:  # the rate's answer: it does not train
                e = (r.failure or {}).get("epoch")
                status = "diverged" + (f" (non-finite loss in epoch {int(e) + 1})" if isinstance(e, int) else "")
            cells.append(GridCell(lr, r, None, None, status, failed=r.status == runs.DIVERGED))
        else:
            cells.append(GridCell(lr, None, None, None, "missing"))
    return cells, seeds


def analyze(ab, labels: dict, comp, preset: str = "") -> Fig1:
    """The grid of each arm and, for a claim on epochs to target, the ratio and its
    row (appended to `comp`); the notes are the epochs row's own."""
    names = arm_names(ab)
    bruns = comp.pair.base.counted if comp.pair.base else []
    vruns = comp.pair.variant.counted if comp.pair.variant else []
    target = _target_of(ab, bruns + vruns)
    notes: list = []
    bt = vt = {}
    ratio = wall = wall_device = None
    wb = wv = {}
    if comp.claim.metric == "epochs":
        bt = {r.seed: measures.run_ttt(r, target) for r in bruns}
        vt = {r.seed: measures.run_ttt(r, target) for r in vruns}
        ratio, wall, wall_device, wb, wv = _epochs_row(comp, names, bt, vt, target, notes)
    keys = tuple(n.lower() for n in names)
    grid, grid_seeds = {}, set()
    for key, label in zip(keys, (grid_label(ab.base_label), grid_label(ab.name))):
        grid[key], seeds = _grid_cells(ab, labels, target, label)
        grid_seeds |= seeds
    fig = Fig1(
        ab,
        target,
        bruns,
        vruns,
        bt,
        vt,
        ratio,
        wall,
        _lr_of(bruns),
        _lr_of(vruns),
        grid,
        notes,
        wall_device,
        dict(zip(keys, (wb, wv))),
        names=names,
    )
    fig.checks = [_selection_check(ab, labels, target, keys, seed) for seed in check_seeds(ab, preset)]
    for key, chosen in zip(keys, (fig.base_lr, fig.variant_lr)):
        best = _fastest(grid[key])
        if best is None or chosen is None:
            continue
        if best.ttt.reached and not math.isclose(best.lr, chosen):
            fig.notes.append(
                f"{key}: the seeded runs used lr {chosen:g}, but the grid's fastest to {target:.0%} was lr {best.lr:g}"
            )
        # A rate that diverged was tried: the grid is closed on that side (a higher rate
        # would diverge too), so it counts for the edges.
        rates = sorted(c.lr for c in grid[key] if c.ttt is not None or c.status.startswith("diverged"))
        if len(rates) == 1 or math.isclose(chosen, rates[0]) or math.isclose(chosen, rates[-1]):
            side = "only" if len(rates) == 1 else ("lowest" if math.isclose(chosen, rates[0]) else "highest")
            fig.notes.append(
                f"{key}: the chosen lr {chosen:g} is the {side} rate of the grid run "
                f"({', '.join(f'{x:g}' for x in rates)}): a rate beyond it may be faster, so the "
                f"{key} arm may be slower than its best (the grid grows by x{GRID_EXTEND_FACTOR:g} "
                f"at an edge, at most {GRID_MAX_EXTENSIONS} times)"
            )
    if grid_seeds and len(grid_seeds) == 1 and not any(c.complete for c in fig.checks):
        fig.notes.append(
            f"the learning rates were picked on a single selection seed ({sorted(grid_seeds)[0]}): "
            "rates whose epochs to target are close may rank differently on another seed"
        )
    fig.rules = counting_rules(fig)
    fig.collapses = collapse_by_rate(ab, labels, keys)
    return fig


def collapse_by_rate(ab, labels: dict, keys: tuple) -> dict:
    """How often each arm collapsed (`grid_failed`) at each rate, over all its finished
    runs (the grid's and the seeds', under any fingerprint): arm key -> {lr: (runs,
    collapsed, [dead fc7 fractions of the collapsed runs that recorded one])}; {} when
    no run collapsed. A collapse is an outcome to report on its own, rate by rate."""
    out: dict = {}
    for key, arm in zip(keys, (ab.base_label, ab.name)):
        cells: dict = {}
        for label in (arm, grid_label(arm)):
            for g in labels.get(label, []):
                for r in g.runs:
                    lr = collect.learning_rate(r)
                    if lr is None or not (collect.is_counted(r) or r.status == runs.DIVERGED):
                        continue
                    n, k, dead = cells.get(lr, (0, 0, []))
                    failed = grid_failed(r)
                    v = measures.fc7_dead(r) if failed else None
                    if v is not None:
                        dead = dead + [v]
                    cells[lr] = (n + 1, k + int(failed), dead)
        out[key] = dict(sorted(cells.items()))
    return out if any(k for cells in out.values() for _, k, _ in cells.values()) else {}


def counting_rules(fig: Fig1) -> list:
    """The variant / baseline ratio under each counting rule: whole epochs (the
    primary test), the crossing interpolated within its epoch, and with the
    selection seed's grid runs at the chosen rates counted as one more pair, or
    alone (they were picked for being fastest, so they are kept out of the test)."""
    if fig.ratio is None:
        return []
    pair = lambda b, v: {s: (b[s], v[s]) for s in sorted(set(b) & set(v))}  # noqa: E731
    bi = {s: t.bound for s, t in fig.base_ttt.items()}
    vi = {s: t.bound for s, t in fig.variant_ttt.items()}
    rules = [
        CountingRule(
            "whole epochs: the first epoch at or under the target (the test)",
            fig.ratio.estimate,
            fig.ratio,
            len(set(bi) & set(vi)),
            pair(bi, vi),
        )
    ]
    censored = [s for s, t in (*fig.base_ttt.items(), *fig.variant_ttt.items()) if not t.reached]
    for at, name in (
        (
            1.0,
            "the crossing interpolated within its epoch, each logged error read as the epoch's "
            "end (linear, from chance before training)",
        ),
        (
            0.5,
            "the crossing interpolated, each logged error read at the middle of its epoch (the "
            "log holds the epoch's running mean)",
        ),
    ):
        bf = {r.seed: measures.run_fractional_ttt(r, fig.target, at) for r in fig.base_runs}
        vf = {r.seed: measures.run_fractional_ttt(r, fig.target, at) for r in fig.variant_runs}
        if censored or any(x is None or x <= 0 for x in (*bf.values(), *vf.values())) or not bf or not vf:
            continue  # a censored run has no crossing: the rule would drop the slowest seeds
        rf = stats.ratio_interval(bf, vf, measures.LEVEL)
        rules.append(CountingRule(name, rf.estimate, rf, len(set(bf) & set(vf)), pair(bf, vf)))
    if censored:
        fig.notes.append(
            f"seeds {sorted(set(censored))} never reached the target, so the interpolated counting "
            "rules are left out (they would drop the slowest seeds)"
        )

    def selected(key, lr):
        cell = next((c for c in fig.grid.get(key, []) if lr is not None and math.isclose(c.lr, lr)), None)
        return cell.ttt.epochs if cell is not None and cell.ttt is not None and cell.ttt.reached else None

    sb, sv = selected(fig.keys[0], fig.base_lr), selected(fig.keys[1], fig.variant_lr)
    if sb and sv:
        rp = stats.ratio_interval({**bi, GRID_SEED: sb}, {**vi, GRID_SEED: sv}, measures.LEVEL)
        rules.append(
            CountingRule(
                f"whole epochs, the selection seed {GRID_SEED} counted as one more pair",
                rp.estimate,
                rp,
                len(set(bi) & set(vi)) + 1,
                {**pair(bi, vi), GRID_SEED: (sb, sv)},
                by_seed=True,
            )
        )
        rules.append(
            CountingRule(
                f"the selection seed {GRID_SEED} alone (its grid runs at the chosen rates)",
                sv / sb,
                None,
                1,
                {GRID_SEED: (sb, sv)},
                by_seed=True,
            )
        )
    for check in fig.checks:
        if check.ratio is not None:
            b, v = check.epochs.values()
            rules.append(
                CountingRule(
                    f"the selection seed {check.seed} alone (its grid runs at its own fastest rates)",
                    check.ratio,
                    None,
                    1,
                    {check.seed: (b, v)},
                    by_seed=True,
                )
            )
    return rules


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def range_text(fig: Fig1 | None) -> str:
    """The ratio as a range over counting rules, as "xA-xB over N counting rules"."""
    rng = fig.rule_range if fig is not None else None
    if rng is None or len(fig.rules) < 2:
        return ""
    return f"{text.ratio(rng[0])}-{text.ratio(rng[1])} over {rules_text(fig.rules)}"


def rules_lead(ci, rng: tuple | None) -> str:
    """The sentence before the counting rules' table: that the rules move the ratio
    more than the seeds do only where the range reaches outside the test's interval."""
    if rng is not None and ci is not None and ci.ok and (rng[0] < ci.lo or rng[1] > ci.hi):
        return (
            "How the epochs are counted moves the ratio more than its interval over seeds suggests, so the "
            "ratio is given under each counting rule"
        )
    if rng is not None and ci is not None and ci.ok:
        return "The ratio under each counting rule (the range lies within the test's interval over seeds)"
    return "The ratio under each counting rule"


def rules_text(rules: list) -> str:
    """What a range runs over: "3 counting rules", or "3 counting rules and 3 seed choices"."""
    n_seed = sum(1 for r in rules if r.by_seed)
    n_count = len(rules) - n_seed
    head = f"{n_count} counting rule{'s' * (n_count != 1)}"
    return head + (f" and {n_seed} seed choice{'s' * (n_seed != 1)}" if n_seed else "")


def figure(fig: Fig1, path: Path, title: str) -> figures.FigureFile | None:
    """Training error vs epochs (the paper's Figure 1): the baseline arm solid blue,
    the variant dashed orange (the colour-blind palette: the arms differ in hue and
    in line style), the target as a dotted grey line, +-1 sd seed bands."""
    if not fig.base_runs and not fig.variant_runs:
        return None
    plt, sns = figures.styled_pyplot()
    out, ax = plt.subplots(figsize=(6.4, 4.4))
    nb, nv = fig.names
    b = figures.curve_frame(fig.base_runs, "top1_err", nb)
    v = figures.curve_frame(fig.variant_runs, "top1_err", nv)
    color_b, color_v = sns.color_palette("colorblind", 2)
    lr = lambda x: f", lr {x:g}" if x is not None else ""  # noqa: E731
    figures.draw_band(ax, b, color_b, "-", f"{nb}{lr(fig.base_lr)} (n={b.seed.nunique()})", seeds_too=True)
    figures.draw_band(ax, v, color_v, "--", f"{nv}{lr(fig.variant_lr)} (n={v.seed.nunique()})", seeds_too=True)
    ax.axhline(100 * fig.target, color="0.25", linestyle=":", linewidth=1.2, label=f"{fig.target:.0%} training error")
    ax.set_xlabel("epochs")
    figures.integer_epochs(ax)
    ax.set_ylabel("training error rate (%)")
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax.legend(fontsize=8)
    ax.set_title(figures.wrap_title(title, out.get_size_inches()[0], 10), fontsize=10)
    out.tight_layout()
    return figures.save(out, path)


def blocks(an, comp, out_dir: Path, fig_file: figures.FigureFile | None) -> list:
    """The figure, the epochs to target per arm, the ratio and its counting rules,
    the learning-rate grid and the notes."""
    f1, ab, claim = comp.extra, comp.ablation, comp.claim
    nb, nv = f1.names
    kb, kv = f1.keys
    title = _title(ab)
    out = [document.Heading(3, (f"{title}: " if title else "") + f"{nb} vs {nv} ({text.code(ab.name)})")]
    out.append(
        text.figure_block(
            fig_file,
            out_dir,
            f"Training error vs epochs: {nb} solid, {nv} dashed, "
            f"{f1.target:.0%} target dotted"
            + (f" (cf. the paper's {title})" if title else "")
            + ". Thin lines: single seeds; thick line and band: mean ± 1 sd over seeds, drawn "
            "over the epochs every seed ran "
            + (
                "(the seeds train on past the target to a fixed budget)."
                if _final_budget(f1) is not None
                else "(runs stop at the target)."
            ),
        )
    )
    rows = []
    for arm, ttt, lr, key in ((nb, f1.base_ttt, f1.base_lr, kb), (nv, f1.variant_ttt, f1.variant_lr, kv)):
        m, sd, n = stats.mean_sd([t.bound for t in ttt.values()])
        walls = list(f1.arm_walls.get(key, {}).values())
        wm, wsd, _ = stats.mean_sd(walls)
        # A seed that never reached the target counts the epochs and seconds it ran: the means are lower bounds.
        bound = "≥ " if any(not t.reached for t in ttt.values()) else ""
        rows.append(
            [
                arm,
                text.num(lr, "{:g}"),
                str(n),
                "n/a" if n == 0 else bound + (f"{m:.1f} ± {sd:.1f}" if n >= 2 else f"{m:.1f}"),
                ", ".join(f"s{s}: {t}" for s, t in sorted(ttt.items())) or "n/a",
                "n/a"
                if not walls
                else bound
                + (f"{wm:.0f} ± {wsd:.0f}" if len(walls) >= 2 else f"{wm:.0f}")
                + (f" (n = {len(walls)})" if walls and len(walls) != n else ""),
            ]
        )
    out.append(
        document.Table(
            [ab.arm_title, "lr", "n", f"Epochs to {f1.target:.0%} (mean ± sd)", "Per seed", "Wall time to target (s)"],
            rows,
            ["l", "r", "r", "r", "l", "r"],
            caption=f"Wall times: the runs on {f1.wall_device}." if f1.wall_device else "",
        )
    )
    r = f1.ratio
    row = next((x for x in comp.rows if x.metric == "epochs"), None)
    if r is not None and row is not None:
        at_least = "at least " if row.lower_bound_only else ""
        cmp6 = f"size: {row.magnitude}"
        if claim.ratio and row.verdict == stats.NOT_MEASURABLE:
            cmp6 = f"not measurable here, so no comparison with the paper's x{claim.ratio:g}"
        elif claim.ratio and row.lower_bound_only and row.magnitude == stats.MAG_LARGER:
            cmp6 = (
                f"even as a lower bound the interval lies above the paper's x{claim.ratio:g}: {nv} is slower "
                f"here, relative to {nb}, than in the paper"
            )
        elif claim.ratio and row.lower_bound_only:
            cmp6 = (
                f"censored {nv} runs make the ratio a lower bound, so the paper's x{claim.ratio:g} cannot "
                "be ruled out above the interval; run those seeds longer to resolve it"
            )
        elif claim.ratio and row.magnitude == stats.MAG_UNDERPOWERED:
            cmp6 = (
                f"the paper's x{claim.ratio:g} is inside the interval, but below the detectable ratio "
                f"({text.mde_text(row)}): no evidence either way"
            )
        elif claim.ratio:
            cmp6 = {
                stats.MAG_INSIDE: f"the paper's x{claim.ratio:g} lies inside the interval",
                stats.MAG_SMALLER: f"the paper's x{claim.ratio:g} lies above the interval (a smaller speed-up)",
                stats.MAG_LARGER: f"the paper's x{claim.ratio:g} lies below the interval ({nv} is slower here)",
            }.get(row.magnitude, cmp6)
        spread = f"per-seed ratios {r.mean:.2f} ± {r.sd:.2f}" if math.isfinite(r.sd) else "per-seed ratios n/a"
        wall = ""
        if f1.wall_ratio is not None and math.isfinite(f1.wall_ratio.estimate):
            w = f1.wall_ratio
            on = f", runs on {f1.wall_device}" if f1.wall_device else ""
            wall = f" Wall-time ratio ({nv} / {nb}, time to target{on}): {at_least}x{w.estimate:.2f}" + (
                f", 95% CI [x{w.lo:.2f}, x{w.hi:.2f}]." if w.ok else "."
            )
        out.append(
            document.Para(
                f"Epochs to {f1.target:.0%} training error, {nv} / {nb}: {at_least}x{r.estimate:.2f} (geometric mean, "
                f"{spread}), 95% CI "
                + (f"[x{r.lo:.2f}, x{r.hi:.2f}]" if r.ok else "n/a")
                + f" ({r.method} on log epochs, n = {r.n}"
                + (f", a lower bound: censored {nv} runs count the epochs they ran" if row.lower_bound_only else "")
                + f"). Direction (adjusted p {text.fmt_p(row.p_adj)}): {row.direction_verdict}; verdict: "
                f"**{text.verdict_text(row)}**. Against the paper: {cmp6}.{wall}"
            )
        )
    if f1.rules:
        rng = f1.rule_range
        out.append(
            document.Para(
                rules_lead(r, rng)
                + f"; the range over {rules_text(f1.rules)}"
                + (f" is **{text.ratio(rng[0])} to {text.ratio(rng[1])}**" if rng else " is not available")
                + (f" (the paper: x{claim.ratio:g})" if claim.ratio else "")
                + ". The test above uses whole epochs; the selection seed's runs were picked for being fastest, so "
                "they stay out of the test."
            )
        )
        rule_rows = []
        for rule in f1.rules:
            ci = rule.ci
            rule_rows.append(
                [
                    rule.name,
                    text.ratio(rule.estimate),
                    f"[{text.ratio(ci.lo)}, {text.ratio(ci.hi)}]" if ci is not None and ci.ok else "n/a",
                    str(rule.n),
                    ", ".join(f"s{s}: {text.epochs_pair(b, v)}" for s, (b, v) in sorted(rule.per_seed.items())),
                ]
            )
        out.append(
            document.Table(
                ["Counting rule", f"{nv} / {nb}", "95% CI (seeds)", "Pairs", f"Per seed ({nb}, {nv})"],
                rule_rows,
                ["l", "r", "r", "r", "l"],
                caption="Fractional crossings: the training-error curve taken as linear within each "
                "epoch, starting from chance before the first.",
            )
        )
    out += _final_blocks(f1)
    out += _grid_blocks(f1, ab)
    out += _collapse_blocks(f1, ab)
    out += _check_blocks(f1, ab)
    if f1.notes:
        out.append(document.Bullets(list(f1.notes)))
    return out


def _final_budget(f1: Fig1) -> int | None:
    """The epochs every seeded run of both arms trained, when they all trained on
    past the target to that one budget (`Ablation.seed_overrides`); else None."""
    both = f1.base_runs + f1.variant_runs
    if not f1.base_runs or not f1.variant_runs or not all(measures.trained_past_target(r) for r in both):
        return None
    epochs = {len(r.metrics) for r in both}
    return epochs.pop() if len(epochs) == 1 else None


def _final_blocks(f1: Fig1) -> list:
    """The error at the fixed budget the seeds trained on to, per arm, and the
    difference in validation error (each arm at its own rate, as above)."""
    budget = _final_budget(f1)
    if budget is None:
        return []
    nb, nv = f1.names
    cols = (
        ("train_top1_err_clean", "Train top-1 err, clean (%)"),
        ("val_top1_err", "Val top-1 err (%)"),
        ("val_top5_err", "Val top-5 err (%)"),
    )
    values = {}
    rows = []
    for arm, runs_, lr in ((nb, f1.base_runs, f1.base_lr), (nv, f1.variant_runs, f1.variant_lr)):
        row = [arm, text.num(lr, "{:g}"), str(len(runs_))]
        for key, _ in cols:
            vals = {r.seed: 100.0 * float(r.result[key]) for r in runs_ if (r.result or {}).get(key) is not None}
            values[(arm, key)] = vals
            m, sd, n = stats.mean_sd(list(vals.values()))
            row.append("n/a" if n == 0 else (f"{m:.1f} ± {sd:.1f}" if n >= 2 else f"{m:.1f}"))
        rows.append(row)
    out = [
        document.Table(
            [f1.ablation.arm_title, "lr", "n", *(title for _, title in cols)],
            rows,
            ["l", "r", "r", "r", "r", "r"],
            caption=f"Error after {budget} epochs: the seeds train on past the target, each arm at its own "
            "constant rate, to the same budget. Train (clean): training images, centre crop, inference mode "
            "(no dropout).",
        )
    ]
    d = stats.delta_interval(values[(nb, "val_top1_err")], values[(nv, "val_top1_err")], measures.LEVEL)
    if math.isfinite(d.estimate):
        ci = f"95% CI [{d.lo:+.2f}, {d.hi:+.2f}]" if d.ok else f"no interval ({d.reason or 'too few seeds'})"
        out.append(
            document.Para(
                f"Validation top-1 error after {budget} epochs, {nv} - {nb}: {d.estimate:+.2f} points, {ci} "
                f"({d.method}, n = {d.n}). §3.1 claims a speed-up, not an end point, so this difference "
                "gets no verdict."
            )
        )
    return out


def _collapse_blocks(f1: Fig1, ab) -> list:
    """Collapses rate by rate (`collapse_by_rate`), when any run collapsed."""
    if not f1.collapses:
        return []
    rows = []
    for key, name in zip(f1.keys, f1.names):
        for lr, (n, k, dead) in f1.collapses.get(key, {}).items():
            d = ", ".join(f"{v:.0%}" for v in dead) if dead else "-"
            rows.append([name, f"{lr:g}", str(n), f"{k}/{n}", d])
    return [
        document.Table(
            [ab.arm_title, "lr", "Runs", "At chance or diverged", "fc7 units dead (those at chance)"],
            rows,
            ["l", "r", "r", "r", "l"],
            caption="Collapses by rate: every finished run of each arm (the grid's on the selection "
            "seeds and the seeds', at any rate they ran), and how many ended at chance or diverged.",
        )
    ]


def _grid_blocks(f1: Fig1, ab, check: SelectionCheck | None = None) -> list:
    """The learning-rate grid: one row per rate, each arm's epochs to target and wall
    time (of the selection seed GRID_SEED, or of a `check`'s seed)."""
    grid = f1.grid if check is None else check.grid
    chosen_lrs = (f1.base_lr, f1.variant_lr) if check is None else tuple(check.chosen.values())
    lrs = sorted({c.lr for cells in grid.values() for c in cells})
    if not lrs or (check is not None and not any(c.ttt is not None for cells in grid.values() for c in cells)):
        return []
    nb, nv = f1.names
    by = {arm: {c.lr: c for c in cells} for arm, cells in grid.items()}
    # Seconds compare on one device only: a grid run's wall time from another one
    # (or none recorded) is marked, and the device named below the table.
    devs = [measures.run_device(c.run) for cells in grid.values() for c in cells if c.wall_s is not None]
    ref = f1.wall_device or (max(set(devs) - {None}, key=devs.count) if set(devs) - {None} else None)
    elsewhere: set = set()

    def wall_text(c) -> str:
        dev = measures.run_device(c.run)
        if ref is None or c.wall_s is None or dev == ref:
            return text.num(c.wall_s, "{:.0f}")
        elsewhere.add(dev or "a device not recorded")
        return text.num(c.wall_s, "{:.0f}") + "*"

    grid_rows = []
    for lr in lrs:
        row_ = [f"{lr:g}"]
        for key, chosen in zip(f1.keys, chosen_lrs):
            c = by.get(key, {}).get(lr)
            word = "chosen" if check is None else "fastest"
            mark = f" ({word})" if chosen is not None and math.isclose(lr, chosen) else ""
            if c is None or c.ttt is None:
                # No cell: a rate only the other arm's grid grew to (an edge extension).
                row_ += [(c.status if c else "-") + mark, "n/a" if c else "-"]
            elif c.failed:
                row_ += [f"{c.ttt} ({_failed_text(c)})" + mark, wall_text(c)]
            elif c.censored and not c.ttt.reached:
                row_ += [f"> {c.ttt.observed} (stopped: could not beat the fastest rate)" + mark, wall_text(c)]
            else:
                row_ += [str(c.ttt) + mark, wall_text(c)]
        grid_rows.append(row_)
    return [
        document.Table(
            [
                "lr",
                f"{nb}: epochs to {f1.target:.0%}",
                f"{nb}: wall s",
                f"{nv}: epochs to {f1.target:.0%}",
                f"{nv}: wall s",
            ],
            grid_rows,
            ["r", "l", "r", "l", "r"],
            caption=(
                f"Learning-rate grid (one run per rate and {ab.arm_title.lower()}, on selection "
                f"seed {GRID_SEED}, apart from the measured ones); (chosen) marks the rate the "
                "seeded runs above used. §3.1: the rates were chosen independently per network "
                "to make training as fast as possible."
                if check is None
                else f"The same grid on selection seed {check.seed}, run to check the choice; (fastest) "
                "marks the rate this seed would have chosen."
            )
            + " A grid run stops once it can no longer beat the fastest rate (> N: stopped after N "
            "epochs); - : not in that arm's grid."
            + (
                " collapsed: the run ended at chance, so its rate ranks last; while every rate of an arm "
                f"failed so, its grid grows downwards by x{GRID_EXTEND_FACTOR:g}."
                if any(c.failed for cells in grid.values() for c in cells)
                else ""
            )
            + (f" Wall s on {ref}; * on {', '.join(sorted(elsewhere))}, not comparable." if elsewhere else ""),
        )
    ]


def _failed_text(cell) -> str:
    """Why a finished grid run ranks last (`grid_failed`): at chance, with the share of
    dead fc7 units where the run recorded it."""
    dead = measures.fc7_dead(cell.run)
    tail = f", {dead:.0%} of fc7 units dead" if dead is not None else ""
    return "collapsed: at chance" + tail


def _check_blocks(f1: Fig1, ab) -> list:
    """Do the chosen rates, and the ratio on the selection seed alone, change with the
    selection seed? One row per selection seed, then each check's grid."""
    if not f1.checks:
        return []
    nb, nv = f1.names

    def cell(cells, lr):
        c = next((c for c in cells if lr is not None and math.isclose(c.lr, lr)), None)
        if c is None or c.ttt is None:
            return None
        return c.ttt.epochs if c.ttt.reached else None

    first = {k: lr for k, lr in zip(f1.keys, (f1.base_lr, f1.variant_lr))}
    first_epochs = {k: cell(f1.grid.get(k, []), first[k]) for k in f1.keys}

    def arm_text(lr, epochs):
        if lr is None:
            return "grid not complete"
        return f"{lr:g} ({epochs} epochs)" if epochs is not None else f"{lr:g} (target not reached)"

    def ratio_of(epochs):
        b, v = (epochs.get(k) for k in f1.keys)
        return text.ratio(v / b) if b and v else "n/a"

    rows = [
        [
            f"{GRID_SEED} (the choice)",
            arm_text(first[f1.keys[0]], first_epochs[f1.keys[0]]),
            arm_text(first[f1.keys[1]], first_epochs[f1.keys[1]]),
            ratio_of(first_epochs),
            "",
        ]
    ]
    sentences = []
    for check in f1.checks:
        same = [
            None if check.chosen[k] is None or first[k] is None else math.isclose(check.chosen[k], first[k])
            for k in f1.keys
        ]
        rows.append(
            [
                str(check.seed),
                arm_text(check.chosen[f1.keys[0]], check.epochs[f1.keys[0]]),
                arm_text(check.chosen[f1.keys[1]], check.epochs[f1.keys[1]]),
                ratio_of(check.epochs),
                "n/a (grid not complete)" if None in same else ("yes" if all(same) else "no"),
            ]
        )
        if None in same:
            sentences.append(f"the grids on selection seed {check.seed} are not complete yet")
        elif all(same):
            sentences.append(
                f"selection seed {check.seed} chooses the same rates, so the measured seeds and their ratio stand "
                f"as they are; on that seed alone the ratio is {ratio_of(check.epochs)} "
                f"(seed {GRID_SEED} alone: {ratio_of(first_epochs)})"
            )
        else:
            moved = ", ".join(
                f"{n} {first[k]:g} -> {check.chosen[k]:g}" for n, k, ok in zip(f1.names, f1.keys, same) if not ok
            )
            sentences.append(
                f"selection seed {check.seed} would choose other rates ({moved}); on that seed alone, at its own "
                f"rates, the ratio is {ratio_of(check.epochs)} (seed {GRID_SEED} alone: {ratio_of(first_epochs)}), "
                "and it counts in the range over counting rules above; the measured seeds keep the first choice"
            )
    out = [
        document.Para(
            f"Does the choice depend on the selection seed? The grids were repeated on another selection seed "
            f"after the measured seeds: {'; '.join(sentences)}."
        ),
        document.Table(
            ["Selection seed", f"{nb}: fastest lr", f"{nv}: fastest lr", f"{nv} / {nb} (this seed)", "Same rates"],
            rows,
            ["l", "l", "l", "r", "l"],
            caption="Each selection seed's fastest rate per arm (epochs to target at that rate, its grid run) and "
            "the ratio of those two runs alone.",
        ),
    ]
    for check in f1.checks:
        out += _grid_blocks(f1, ab, check)
    return out


KIND = LrGrid()
