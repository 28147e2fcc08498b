"""What every kind of ablation measures with: the rows of a comparison and the values they are made of.

A `Comparison` holds one `Row` per compared quantity of one ablation on one
preset; the kind of the ablation (`ablations.kinds`) decides which runs are its
arms and which rows it has, from the pieces here: per-run values (final errors,
the overfitting gap, early learning, epochs to a target), the row of a delta with
its seed and image intervals (`delta_row`), the choice of the arms' groups
(`arms_comparison`), and the verdicts withheld before any test (`check_arms`).
Values are fractions (errors); points are produced only by the renderer. No
formatting, no plotting; `reports.analysis` assembles a preset from comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ablations import registry
from reports import collect, stats

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
LEVEL = 0.95
# §5: bias 1 "accelerates the early stages of learning". Early = the epochs at the
# initial learning rate, before a step schedule's first drop (imagenette-cpu: 3 of
# 4, cifar10: 30 of 40), else the first quarter of the schedule (the plateau
# schedule's drops depend on the run); the measure is the mean validation error over
# those epochs, an area under the early learning curve, so a faster start counts
# whenever it happens.
EARLY_FRACTION = 0.25
# A baseline whose validation error is within this of its clean training error has
# not begun to overfit (the paper's nets overfit substantially, §4): the overfitting
# claims are then said to have little room to show.
SMALL_GAP = 0.05
# Top-5 error with this many classes or fewer is near 0 and says nothing
# comparable with the paper's 1000-class top-5.
TOP5_MIN_CLASSES = 10


@dataclass
class Row:
    """One compared quantity of one ablation.

    role: "primary" (the claim's test, in the preset's correction family), "secondary"
    (reported, not tested: top-5 beside top-1, final error beside early error), or
    "none" (the paper makes no claim). ci is the interval the test uses: the seed
    interval, or the image bootstrap when the seeds show no spread; for the epoch
    ratio it is on log values. mde is on ci's scale."""

    ablation: str
    metric: str  # "top-1", "top-5", "gap", "early", "epochs"
    claimed: float | None  # the paper's delta (fraction) or ratio; None = qualitative
    claimed_text: str  # how the claim is printed, e.g. "+1.4", "> 0", "x6", "no claim"
    direction: int
    base: dict  # seed -> value (error fraction, gap fraction, or epochs)
    variant: dict
    seed_ci: object  # stats.Interval (deltas) or stats.RatioSummary (epochs)
    image_ci: stats.Interval | None
    ci: stats.Interval
    role: str = "primary"
    bound: str = "point"
    unmeasurable: str = ""  # why no test is possible ("" = measurable)
    lower_bound_only: bool = False  # censored runs: the measured value bounds the truth from below
    p_adj: float = stats.NAN
    mde: float = stats.NAN
    seeds_needed: int | None = None
    direction_verdict: str = ""
    magnitude: str = ""
    verdict: str = ""
    notes: list = field(default_factory=list)
    label: str = ""  # the metric as printed, e.g. "val top-1 err after epoch 7"
    # A verdict given without a test (stats.WITHHELD), and why.
    withheld: str = ""
    withheld_why: str = ""
    level: float = LEVEL  # of `ci`: simultaneous (1 - alpha/m) for a tested primary row
    # The interval the test uses, at a given level (None: `ci` is all there is).
    interval_at: Callable | None = field(default=None, repr=False, compare=False)
    # Where the paired and Welch tests disagree on significance: what each says.
    fragile: str = ""
    # Across budgets (registry.BUDGET_SERIES): [(preset, epochs, estimate)], shortest first.
    budgets: list = field(default_factory=list)

    @property
    def p(self) -> float:
        return self.ci.p

    @property
    def is_ratio(self) -> bool:
        return self.metric == "epochs"

    @property
    def paper_effect(self) -> float | None:
        """The paper's value on ci's scale (log for ratios)."""
        if self.claimed is None:
            return None
        return math.log(self.claimed) if self.is_ratio else self.claimed


@dataclass
class Comparison:
    ablation: registry.Ablation
    claim: registry.Claim
    base_label: str
    variant_label: str
    pair: collect.Pair
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    num_classes: int | None = None
    setting: str = ""  # collect.setting_match of the baseline's data with the claim's
    dataset: str = ""  # collect.dataset_name of the baseline's data
    # Caveats short enough for the one-line summary (README table), beside the claim's own.
    tags: list = field(default_factory=list)
    # Arms with seeds at chance: label -> Collapse.
    collapse: dict = field(default_factory=dict)
    n_val: int | None = None  # validation images of the baseline's runs
    # Whether the learning-curves figure draws a panel for it (two trained arms
    # compared by their final errors).
    curves: bool = False
    # What the ablation's kind measured beyond the rows (lr_grid: its `Fig1`).
    extra: object | None = None

    @property
    def name(self) -> str:
        return self.ablation.name

    @property
    def primary(self) -> Row | None:
        return next((r for r in self.rows if r.role == "primary"), None)


@dataclass
class Collapse:
    """An arm's seeds that ended at chance (a net that predicts about one class),
    with the fraction of fc7 units that never fire where the run recorded it."""

    seeds: list  # the seeds at chance
    n: int  # the arm's seeds
    error: float  # their mean top-1 error
    dead_fc7: dict = field(default_factory=dict)  # seed -> fraction of dead fc7 units

    def text(self, label: str) -> str:
        t = f"`{label}` at chance in {len(self.seeds)}/{self.n} seeds ({self.error:.1%})"
        if self.dead_fc7:
            t += ", dead fc7 units " + ", ".join(f"{100 * v:.0f}%" for _, v in sorted(self.dead_fc7.items()))
        return t


# --------------------------------------------------------------------------------------
# Per-run values
# --------------------------------------------------------------------------------------


def result_values(group: collect.Group | None, key: str) -> dict:
    if group is None:
        return {}
    out = {}
    for r in group.counted:
        v = r.result.get(key)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            out[r.seed] = float(v)
    return out


def trained_past_target(run) -> bool:
    """Whether `run` recorded its epochs to the training-error target and trained on
    past them to its budget (`train.stop_at_target` off), rather than stopping."""
    train = (run.config or {}).get("train", {})
    return bool(train.get("stop_at_train_error")) and train.get("stop_at_target") is False


def wall_to_target(group: collect.Group | None, target: float) -> dict:
    """{seed: seconds to the training-error target}. A run that stopped there: its
    wall_time_s (its training and final evaluation). A run that trained on past it:
    the logged times of its epochs up to the one that reached the target, since its
    wall time covers the whole budget; a run of that kind that never reached the
    target is left out (it has no time to the target)."""
    out = {}
    for s, wall in result_values(group, "wall_time_s").items():
        run = next(r for r in group.counted if r.seed == s)
        if not trained_past_target(run):
            out[s] = wall
            continue
        t = run_ttt(run, target)
        times = [r.get("epoch_time_s") for r in run.metrics if int(r["epoch"]) < (t.epochs or 0)]
        if t.reached and times and all(x is not None for x in times):
            out[s] = float(sum(float(x) for x in times))
    return out


def gap_values(group: collect.Group | None) -> dict:
    val, train = result_values(group, "val_top1_err"), result_values(group, "train_top1_err_clean")
    return {s: val[s] - train[s] for s in val if s in train}


def early_epoch(group: collect.Group | None) -> int | None:
    """How many epochs (from the first) measure early learning: those before a step
    schedule's first drop, else the first EARLY_FRACTION of the schedule; at least one."""
    runs = group.counted if group else []
    ks = []
    for r in runs:
        t = r.config.get("train", {})
        epochs = t.get("epochs")
        if not isinstance(epochs, int) or epochs < 1:
            continue
        steps = [e for e in (t.get("step_epochs") or []) if isinstance(e, int) and 0 < e < epochs]
        ks.append(min(steps) if t.get("schedule") == "step" and steps else max(1, int(epochs * EARLY_FRACTION)))
    return min(ks) if ks else None


def early_values(group: collect.Group | None, k: int) -> dict:
    """Mean validation top-1 error over epochs 1..k per seed, from metrics.csv (a
    seed that lacks one of those epochs is left out)."""
    out = {}
    for r in group.counted if group else []:
        by_epoch = {m.get("epoch"): m.get("val_top1_err") for m in r.metrics}
        vals = [by_epoch.get(e) for e in range(k)]
        if all(v is not None and math.isfinite(float(v)) for v in vals):
            out[r.seed] = float(np.mean([float(v) for v in vals]))
    return out


def early_label(k: int) -> str:
    return "val top-1 err after epoch 1" if k == 1 else f"mean val top-1 err over epochs 1-{k}"


def run_fractional_ttt(run, target: float, at: float = 1.0) -> float | None:
    """Fractional epochs to the target (`stats.fractional_epochs_to_target`), the
    curve starting at chance before training; None if never reached."""
    rows = sorted((r for r in run.metrics if r.get("top1_err") is not None), key=lambda r: int(r["epoch"]))
    k = collect.num_classes(run) or 10
    return stats.fractional_epochs_to_target([float(r["top1_err"]) for r in rows], target, 1.0 - 1.0 / k, at)


def run_ttt(run, target: float) -> stats.TimeToTarget:
    """Epochs to the training-error target, from the logged curve (else result.json)."""
    rows = [r for r in run.metrics if r.get("top1_err") is not None]
    if rows:
        return stats.epochs_to_target([r["top1_err"] for r in rows], target, [int(r["epoch"]) + 1 for r in rows])
    res = run.result or {}
    e = res.get("epochs_to_target")
    return stats.TimeToTarget(int(e) if e is not None else None, int(res.get("epochs") or 0))


_VAL_CORRECT: dict = {}  # path -> val_correct arrays, for one analyze_preset call


def clear_cache() -> None:
    """Forget the per-image arrays read so far (`reports.analysis.analyze_preset`
    reads each run's once per call)."""
    _VAL_CORRECT.clear()


def _val_correct(run):
    key = str(run.path)
    if key not in _VAL_CORRECT:
        _VAL_CORRECT[key] = run.val_correct()
    return _VAL_CORRECT[key]


def wrong_matrix(runs: list, key: str):
    """(runs x images) 0/1 wrongness for `key` of val_correct, or (None, reason)."""
    mats, labels = [], None
    for r in runs:
        vc = _val_correct(r)
        if vc is None or key not in vc:
            return None, f"no per-image `{key}` for seed {r.seed}"
        if labels is None:
            labels = vc.get("labels")
        elif "labels" in vc and (vc["labels"].shape != labels.shape or not np.array_equal(vc["labels"], labels)):
            return None, "the runs' validation sets differ"
        mats.append(1.0 - np.asarray(vc[key], dtype=float))
    if not mats:
        return None, "no runs"
    if len({m.shape for m in mats}) != 1:
        return None, "the runs' validation sets differ"
    return (np.stack(mats), labels), ""


def group_classes(group: collect.Group | None) -> tuple[int | None, int | None]:
    """(classes, validation images) of a group's runs, the first run that records them."""
    k = n = None
    for r in group.counted if group else []:
        k = k or collect.num_classes(r)
        n = n or collect.n_val(r)
    return k, n


# --------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------


def claimed_text(claim: registry.Claim, metric: str) -> tuple[float | None, str, bool]:
    """(claimed value, printed text, is there a claim for this metric)."""
    if claim.metric == "none":
        return None, "no claim", False
    if metric == "epochs":
        return claim.ratio, (f"x{claim.ratio:g}" if claim.ratio else ("> 1" if claim.direction > 0 else "< 1")), True
    if metric in ("gap", "early"):
        return None, ("> 0" if claim.direction > 0 else "< 0"), True
    val = claim.top1 if metric == "top-1" else claim.top5
    if val is not None:
        text = f"{val:+.1f}" + (" or more" if claim.bound == "at least" else "")
        return val / 100.0, text, True
    if claim.top1 is not None or claim.top5 is not None:  # a quantitative claim, not on this metric
        return None, "no top-5 claim" if metric == "top-5" else "no top-1 claim", False
    return None, ("> 0" if claim.direction > 0 else "< 0"), True


def delta_row(name, metric, claim, base, variant, image_ci_at=None, notes=(), role="primary", label="") -> Row:
    """A row for `variant - base` over seeds. When every seed gives the same
    difference the t interval would be a point: the image bootstrap is used
    instead where it exists, else the row is not measurable. `image_ci_at`:
    level -> the image bootstrap interval (None: no per-image results)."""
    claimed, text, has_claim = claimed_text(claim, metric)
    seed = stats.delta_interval(base, variant, LEVEL)
    image_ci = image_ci_at(LEVEL) if image_ci_at is not None else None
    ci, notes = seed, list(notes)
    by_images = False
    if not seed.ok and seed.reason.startswith("no spread"):
        if image_ci is not None and image_ci.ok:
            ci, by_images = image_ci, True
            notes.append(
                f"{seed.reason}, so the interval and test are the paired bootstrap over validation "
                "images, which reflects the finite validation set only, not training noise"
            )
        else:
            notes.append(
                f"{seed.reason} and there is no image-level interval: no interval is given "
                "(a zero-width one would claim a precision the runs do not have)"
            )

    def interval_at(level: float) -> stats.Interval:
        return image_ci_at(level) if by_images else stats.delta_interval(base, variant, level)

    row = Row(
        name,
        metric,
        claimed,
        text,
        claim.direction,
        base,
        variant,
        seed,
        image_ci,
        ci,
        role=role if has_claim else "none",
        bound=claim.bound,
        notes=notes,
        label=label,
        interval_at=interval_at,
    )
    add_power(row, seed)
    return row


def add_power(row: Row, seed_ci: stats.Interval, alpha: float = stats.ALPHA) -> None:
    """The row's detectable effect (at its interval's spread) and the seeds the
    paper's effect would need (at the seeds' spread), for a test at `alpha`."""
    if not row.ci.ok:
        row.unmeasurable = row.ci.reason or "no interval"
    row.mde = stats.mde(row.ci.se, row.ci.df, alpha) if row.ci.ok else stats.NAN
    row.seeds_needed = stats.seeds_needed(row.paper_effect, seed_ci, alpha)


def image_interval(base_runs, var_runs, base_key, var_key, shift=0.0):
    """(level -> the paired image bootstrap interval, "") or (None, why not)."""
    b, why_b = wrong_matrix(base_runs, base_key)
    v, why_v = wrong_matrix(var_runs, var_key)
    if b is None or v is None:
        return None, why_b or why_v
    (bm, bl), (vm, vl) = b, v
    if bm.shape[1] != vm.shape[1] or (bl is not None and vl is not None and not np.array_equal(bl, vl)):
        return None, "the arms' validation sets differ"
    return (lambda level: stats.paired_bootstrap(bm, vm, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, level, shift)), ""


# --------------------------------------------------------------------------------------
# The arms of a comparison
# --------------------------------------------------------------------------------------


def arms_comparison(
    preset: str, a: registry.Ablation, labels: dict, same_runs: bool = False, allowed=(), prefer_base: str | None = None
) -> Comparison:
    """A `Comparison` of `a` on `preset` with its arms chosen and no rows yet: the
    baseline arm's runs (`a.base_label`) and the variant's (`a.name`; with
    `same_runs`, the baseline's runs again), the pair of groups whose
    configurations differ by the ablation's overrides and the `allowed` keys
    (`collect.choose_pair`), the data set and the class count."""
    claim = a.claim(preset)
    base_label = a.base_label
    var_label = base_label if same_runs else a.name
    pair = collect.choose_pair(
        labels.get(base_label, []),
        labels.get(var_label, []),
        a.variant_overrides(preset),
        allowed=allowed,
        base_fp=collect.registry_fingerprint(preset, base_label, a),
        variant_fp=collect.registry_fingerprint(preset, var_label, a),
        same_runs=same_runs,
        prefer_base=prefer_base,
    )
    comp = Comparison(a, claim, base_label, var_label, pair)
    if pair.base is None:
        comp.notes.append(f"no finished `{base_label}` runs")
    if pair.variant is None and not same_runs:
        comp.notes.append(f"no finished `{var_label}` runs")
    if pair.unexpected:
        keys = ", ".join(f"{k}: {x!r} -> {y!r}" for k, (x, y) in pair.unexpected.items())
        comp.notes.append(
            f"the arms' configurations also differ outside the ablation ({keys}); "
            "no pair of groups differing only by the ablation was found"
        )
    bruns = pair.base.counted if pair.base else []
    comp.setting = collect.setting_match(bruns[0] if bruns else None, claim.setting)
    comp.dataset = collect.dataset_name(bruns[0]) if bruns else ""
    comp.num_classes, comp.n_val = group_classes(pair.base)
    return comp


def error_metrics(comp: Comparison) -> list:
    """[(metric, key)]: top-1, and top-5 unless the runs have too few classes for it
    to mean what the paper's 1000-class top-5 means."""
    metrics = [("top-1", "top1")]
    if comp.num_classes is None or comp.num_classes > TOP5_MIN_CLASSES:
        metrics.append(("top-5", "top5"))
    return metrics


def check_arms(comp: Comparison, same_runs: bool = False) -> None:
    """What the rows cannot say, decided before any test: a baseline at chance makes
    every row not measurable; else `_withhold` (collapsed arms, a confound, an
    overfitting claim before the baseline overfits)."""
    pair, claim, k_classes, n_val = comp.pair, comp.claim, comp.num_classes, comp.n_val
    base_err = result_values(pair.base, "val_top1_err")
    m = float(np.mean(list(base_err.values()))) if base_err else stats.NAN
    if stats.near_chance(m, k_classes, n_val):
        why = (
            f"the baseline is at chance ({m:.1%} top-1 error; chance is {1 - 1 / k_classes:.1%} with "
            f"{k_classes} classes): a net that has not learned says nothing about the claim"
        )
        comp.notes.append(why)
        for r in comp.rows:  # the reason that matters; a lack of spread at chance is no surprise
            r.unmeasurable = "baseline at chance"
            r.notes = [n for n in r.notes if not n.startswith("no spread")]
        return
    _withhold(comp, pair, claim, k_classes, n_val, same_runs)


def fc7_dead(run) -> float | None:
    """The share of fc7 units that never fire, as the run recorded it (None: not recorded)."""
    v = (run.result or {}).get("fc7_dead_fraction")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def collapse_of(group: collect.Group | None, k_classes, n_val) -> Collapse | None:
    """The group's seeds at chance (None: none, or no class count to judge by)."""
    err = result_values(group, "val_top1_err")
    stuck = sorted(s for s, e in err.items() if stats.collapsed(e, k_classes, n_val))
    if not stuck:
        return None
    dead = {}
    for r in group.counted:
        v = fc7_dead(r)
        if r.seed in stuck and v is not None:
            dead[r.seed] = v
    return Collapse(stuck, len(err), float(np.mean([err[s] for s in stuck])), dead)


def _withhold(comp: Comparison, pair, claim: registry.Claim, k_classes, n_val, same_runs: bool) -> None:
    """Verdicts the comparison cannot give, decided before any test: an arm that
    collapsed to chance in some seed (a net that failed to train says nothing about
    the choice; the delta would measure the other arm's progress), a confounded
    claim, and an overfitting claim while the baseline does not yet overfit."""
    arms = [(comp.base_label, pair.base)] + ([] if same_runs else [(comp.variant_label, pair.variant)])
    for label, g in arms:
        col = collapse_of(g, k_classes, n_val)
        if col is not None:
            comp.collapse[label] = col
    primary = [r for r in comp.rows if r.role == "primary"]
    if comp.collapse:
        texts = [col.text(label) for label, col in comp.collapse.items()]
        comp.tags.append("collapsed: " + "; ".join(texts))
        comp.notes.append(
            "an arm ended at chance in some seed (" + "; ".join(texts) + f"; chance is {1 - 1 / k_classes:.1%} "
            f"with {k_classes} classes): training collapsed there, so the comparison says nothing about the "
            "claim and no verdict is given; the collapse rate is the outcome to report"
        )
    # Every tested row of the comparison (the primary and its secondary rows) is withheld.
    primary = [r for r in comp.rows if r.role != "none"]
    # A confound is a flaw of the design, known before any run: it is named first.
    if claim.confounded:
        for r in primary:
            r.withheld, r.withheld_why = stats.CONFOUNDED, claim.caveat.split(":", 1)[-1].strip()
        return
    if comp.collapse:
        for r in primary:
            r.withheld, r.withheld_why = stats.COLLAPSED, "; ".join(col.text(lab) for lab, col in comp.collapse.items())
        return
    if claim.regulariser:
        gap = gap_values(pair.base)
        if gap and float(np.mean(list(gap.values()))) < SMALL_GAP:
            g = 100 * float(np.mean(list(gap.values())))
            why = (
                f"the baseline's gap (val - clean train top-1 error) is {g:+.1f} points, under "
                f"{100 * SMALL_GAP:.0f}: the net has not begun to overfit, so a claim about overfitting cannot "
                "show at this budget, and more seeds would not settle it"
            )
            if not any(t.startswith("baseline gap") for t in comp.tags):
                comp.tags.append(f"baseline gap {g:+.1f} pts: the budget ends before overfitting")
            for r in primary:
                r.withheld, r.withheld_why = stats.NOT_TESTABLE, why


def run_device(r) -> str | None:
    return (r.env or {}).get("device")
