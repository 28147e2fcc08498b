"""From grouped runs to the numbers in the report (no formatting, no plotting).

`analyze_preset` returns a `PresetAnalysis`: one `Comparison` per ablation of the
preset (with one `Row` per compared metric), the overfitting table, the Figure 1
experiment, and the lists of missing, failed, unfinished and superseded runs.
Values are fractions (errors), points are produced only by the renderer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ablations import registry as REG
from reports import collect as C
from reports import stats as S

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
LEVEL = 0.95
DEFAULT_SEEDS = (0, 1, 2)
FIG1_TARGET = 0.25  # §3.1: "25% training error"
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
MULTIPLICITY = ("Bonferroni's correction over the claims of a preset that are tested, one test per claim from "
                "its primary metric (top-1 error; the overfitting gap; early error for bias_init; the epoch "
                "ratio for Figure 1), with simultaneous intervals at level 1 - 0.05/m beside the verdicts, so "
                "that an interval excludes 0 exactly when its claim is significant; top-5 and other secondary "
                "rows are reported with per-claim 95% intervals, not tested")
# An effect measured on a longer budget of the same net (registry.BUDGET_SERIES) at
# less than this fraction of its size on a shorter one (or of the other sign)
# makes the shorter budget's verdict `budget-limited`.
BUDGET_SHRINK = 0.5


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
    claimed: Optional[float]  # the paper's delta (fraction) or ratio; None = qualitative
    claimed_text: str  # how the claim is printed, e.g. "+1.4", "> 0", "x6", "no claim"
    direction: int
    base: dict  # seed -> value (error fraction, gap fraction, or epochs)
    variant: dict
    seed_ci: object  # stats.Interval (deltas) or stats.RatioSummary (epochs)
    image_ci: Optional[S.Interval]
    ci: S.Interval
    role: str = "primary"
    bound: str = "point"
    unmeasurable: str = ""  # why no test is possible ("" = measurable)
    lower_bound_only: bool = False  # censored runs: the measured value bounds the truth from below
    p_adj: float = S.NAN
    mde: float = S.NAN
    seeds_needed: Optional[int] = None
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
    interval_at: Optional[Callable] = field(default=None, repr=False, compare=False)
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
    def paper_effect(self) -> Optional[float]:
        """The paper's value on ci's scale (log for ratios)."""
        if self.claimed is None:
            return None
        return math.log(self.claimed) if self.is_ratio else self.claimed


@dataclass
class Comparison:
    ablation: REG.Ablation
    claim: REG.Claim
    base_label: str
    variant_label: str
    pair: C.Pair
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    num_classes: Optional[int] = None
    setting: str = ""  # collect.setting_match of the baseline's data with the claim's
    dataset: str = ""  # collect.dataset_name of the baseline's data
    # Caveats short enough for the one-line summary (README table), beside the claim's own.
    tags: list = field(default_factory=list)
    # Arms with seeds at chance: label -> Collapse.
    collapse: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.ablation.name

    @property
    def primary(self) -> Optional[Row]:
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


@dataclass
class OverfitRow:
    arm: str  # "baseline", "no_crop_flip", ...
    group: C.Group
    train_clean: dict  # seed -> fraction
    train_aug: dict
    val: dict
    gap: dict


@dataclass
class GridCell:
    lr: float
    run: Optional[object]  # reproduce.runs.Run
    ttt: Optional[S.TimeToTarget]
    wall_s: Optional[float]
    status: str
    censored: bool = False  # stopped once it could no longer beat the fastest rate


@dataclass
class Fig1:
    ablation: REG.Ablation
    target: float
    base_runs: list  # counted runs, ReLU
    variant_runs: list  # counted runs, tanh
    base_ttt: dict  # seed -> TimeToTarget
    variant_ttt: dict
    ratio: Optional[S.RatioSummary]
    wall_ratio: Optional[S.RatioSummary]
    base_lr: Optional[float]
    variant_lr: Optional[float]
    grid: dict  # "relu"/"tanh" -> [GridCell] sorted by lr
    notes: list = field(default_factory=list)
    wall_device: Optional[str] = None  # the one device whose runs the wall times compare
    arm_walls: dict = field(default_factory=dict)  # "relu"/"tanh" -> {seed: wall s} on wall_device
    # The ratio under each way of counting (see `fig1_rules`); its spread is the range
    # the report gives, since the choice of rule moves the ratio more than the seeds do.
    rules: list = field(default_factory=list)

    @property
    def rule_range(self) -> Optional[tuple]:
        ests = [r.estimate for r in self.rules if r.estimate is not None and math.isfinite(r.estimate)]
        return (min(ests), max(ests)) if ests else None


@dataclass
class CountingRule:
    """The Figure 1 ratio (tanh / ReLU epochs to target) under one counting rule."""

    name: str
    estimate: Optional[float]
    ci: Optional[S.RatioSummary]  # None: one pair, no interval
    n: int  # pairs
    per_seed: dict = field(default_factory=dict)  # seed -> (ReLU, tanh) values


@dataclass
class PresetAnalysis:
    preset: str
    root: Path
    labels: dict  # label -> [Group]
    ablations: list
    comparisons: list
    overfitting: list
    fig1: Optional[Fig1]
    expected_seeds: list
    missing: list  # (label, seed, status)
    not_counted: list  # runs
    superseded: list  # (Group, diff from the group used for that label)
    used: set  # (label, fingerprint) of the groups in the tables
    family: int = 0  # claims in the correction family (primary rows with a test)
    notes: list = field(default_factory=list)  # preset-wide

    def comparison(self, name: str) -> Optional[Comparison]:
        return next((c for c in self.comparisons if c.name == name), None)

    @property
    def runs(self) -> list:
        return [r for groups in self.labels.values() for g in groups for r in g.runs]

    def baseline_group(self) -> Optional[C.Group]:
        """The `baseline` group most comparisons use (else the preferred one)."""
        used = [c.pair.base for c in self.comparisons if c.base_label == "baseline" and c.pair.base is not None]
        if used:
            counts = {}
            for g in used:
                counts[g.fingerprint] = counts.get(g.fingerprint, 0) + 1
            fp = max(counts, key=lambda k: (counts[k], -[x.fingerprint for x in used].index(k)))
            return next(g for g in used if g.fingerprint == fp)
        return C.current_group(self.labels.get("baseline", []), C.registry_fingerprint(self.preset, "baseline"))


# --------------------------------------------------------------------------------------
# Per-run values
# --------------------------------------------------------------------------------------


def result_values(group: Optional[C.Group], key: str) -> dict:
    if group is None:
        return {}
    out = {}
    for r in group.counted:
        v = r.result.get(key)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            out[r.seed] = float(v)
    return out


def gap_values(group: Optional[C.Group]) -> dict:
    val, train = result_values(group, "val_top1_err"), result_values(group, "train_top1_err_clean")
    return {s: val[s] - train[s] for s in val if s in train}


def early_epoch(group: Optional[C.Group]) -> Optional[int]:
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


def early_values(group: Optional[C.Group], k: int) -> dict:
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


def run_fractional_ttt(run, target: float, at: float = 1.0) -> Optional[float]:
    """Fractional epochs to the target (`stats.fractional_epochs_to_target`), the
    curve starting at chance before training; None if never reached."""
    rows = sorted((r for r in run.metrics if r.get("top1_err") is not None), key=lambda r: int(r["epoch"]))
    k = C.num_classes(run) or 10
    return S.fractional_epochs_to_target([float(r["top1_err"]) for r in rows], target, 1.0 - 1.0 / k, at)


def run_ttt(run, target: float) -> S.TimeToTarget:
    """Epochs to the training-error target, from the logged curve (else result.json)."""
    rows = [r for r in run.metrics if r.get("top1_err") is not None]
    if rows:
        return S.epochs_to_target([r["top1_err"] for r in rows], target, [int(r["epoch"]) + 1 for r in rows])
    res = run.result or {}
    e = res.get("epochs_to_target")
    return S.TimeToTarget(int(e) if e is not None else None, int(res.get("epochs") or 0))


_VAL_CORRECT: dict = {}  # path -> val_correct arrays, for one analyze_preset call


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


def group_classes(group: Optional[C.Group]) -> tuple[Optional[int], Optional[int]]:
    """(classes, validation images) of a group's runs, the first run that records them."""
    k = n = None
    for r in group.counted if group else []:
        k = k or C.num_classes(r)
        n = n or C.n_val(r)
    return k, n


# --------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------


def _claimed_text(claim: REG.Claim, metric: str) -> tuple[Optional[float], str, bool]:
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
    claimed, text, has_claim = _claimed_text(claim, metric)
    seed = S.delta_interval(base, variant, LEVEL)
    image_ci = image_ci_at(LEVEL) if image_ci_at is not None else None
    ci, notes = seed, list(notes)
    by_images = False
    if not seed.ok and seed.reason.startswith("no spread"):
        if image_ci is not None and image_ci.ok:
            ci, by_images = image_ci, True
            notes.append(f"{seed.reason}, so the interval and test are the paired bootstrap over validation "
                         "images, which reflects the finite validation set only, not training noise")
        else:
            notes.append(f"{seed.reason} and there is no image-level interval: no interval is given "
                         "(a zero-width one would claim a precision the runs do not have)")
    def interval_at(level: float) -> S.Interval:
        return image_ci_at(level) if by_images else S.delta_interval(base, variant, level)

    row = Row(name, metric, claimed, text, claim.direction, base, variant, seed, image_ci, ci,
              role=role if has_claim else "none", bound=claim.bound, notes=notes, label=label,
              interval_at=interval_at)
    _power(row, seed)
    return row


def _power(row: Row, seed_ci: S.Interval, alpha: float = S.ALPHA) -> None:
    """The row's detectable effect (at its interval's spread) and the seeds the
    paper's effect would need (at the seeds' spread), for a test at `alpha`."""
    if not row.ci.ok:
        row.unmeasurable = row.ci.reason or "no interval"
    row.mde = S.mde(row.ci.se, row.ci.df, alpha) if row.ci.ok else S.NAN
    row.seeds_needed = S.seeds_needed(row.paper_effect, seed_ci, alpha)


def _image_ci(base_runs, var_runs, base_key, var_key, shift=0.0):
    """(level -> the paired image bootstrap interval, "") or (None, why not)."""
    b, why_b = wrong_matrix(base_runs, base_key)
    v, why_v = wrong_matrix(var_runs, var_key)
    if b is None or v is None:
        return None, why_b or why_v
    (bm, bl), (vm, vl) = b, v
    if bm.shape[1] != vm.shape[1] or (bl is not None and vl is not None and not np.array_equal(bl, vl)):
        return None, "the arms' validation sets differ"
    return (lambda level: S.paired_bootstrap(bm, vm, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, level, shift)), ""


def compare(preset: str, a: REG.Ablation, labels: dict, prefer_base: Optional[str] = None) -> Comparison:
    claim = a.claim(preset)
    eval_kind = a.kind == "eval"
    base_label = a.base_label
    var_label = base_label if eval_kind else a.name
    pair = C.choose_pair(
        labels.get(base_label, []),
        labels.get(var_label, []),
        a.variant_overrides(preset),
        allowed=("train.learning_rate",) if a.lr_grid else (),
        base_fp=C.registry_fingerprint(preset, base_label, a),
        variant_fp=C.registry_fingerprint(preset, var_label, a),
        same_runs=eval_kind,
        prefer_base=prefer_base,
    )
    comp = Comparison(a, claim, base_label, var_label, pair)
    if pair.base is None:
        comp.notes.append(f"no finished `{base_label}` runs")
    if pair.variant is None and not eval_kind:
        comp.notes.append(f"no finished `{var_label}` runs")
    if pair.unexpected:
        keys = ", ".join(f"{k}: {x!r} -> {y!r}" for k, (x, y) in pair.unexpected.items())
        comp.notes.append(f"the arms' configurations also differ outside the ablation ({keys}); "
                          "no pair of groups differing only by the ablation was found")
    bruns = pair.base.counted if pair.base else []
    vruns = pair.variant.counted if pair.variant else []
    comp.setting = C.setting_match(bruns[0] if bruns else None, claim.setting)
    comp.dataset = C.dataset_name(bruns[0]) if bruns else ""
    k_classes, n_val = group_classes(pair.base)
    comp.num_classes = k_classes

    if claim.metric == "epochs":
        return comp  # Figure 1: filled by `fig1_analysis`
    if claim.metric == "gap":
        b, v = gap_values(pair.base), gap_values(pair.variant)
        shift = float(np.mean([vr.result["train_top1_err_clean"] for vr in vruns if vr.seed in v]) -
                      np.mean([br.result["train_top1_err_clean"] for br in bruns if br.seed in b])) if b and v else 0.0
        ici, why = _image_ci(bruns, vruns, "top1_center", "top1_center", -shift) if b and v else (None, "")
        notes = [f"image CI: {why}"] if why else []
        comp.rows.append(delta_row(a.name, "gap", claim, b, v, ici, notes, label="gap: val top-1 - train top-1 (clean)"))
        if b and float(np.mean(list(b.values()))) < SMALL_GAP:
            comp.tags.append(f"baseline gap {100 * float(np.mean(list(b.values()))):+.1f} pts: "
                             "the budget ends before overfitting")
            comp.notes.append(
                f"the baseline's own gap is {100 * float(np.mean(list(b.values()))):+.1f} points: at this "
                "budget the net has not begun to overfit, so a claim about overfitting has little room to "
                "show (a longer budget would)")
    metrics = [("top-1", "top1")]
    if k_classes is None or k_classes > TOP5_MIN_CLASSES:
        metrics.append(("top-5", "top5"))
    if claim.metric == "early":
        k = early_epoch(pair.base)
        if k is None:
            comp.notes.append("no configured epoch count, so no early-learning epoch")
        else:
            b, v = early_values(pair.base, k), early_values(pair.variant, k)
            comp.rows.append(delta_row(a.name, "early", claim, b, v, None, ["image CI: per-image results exist "
                                       "for the final epoch only"], label=early_label(k)))
            comp.notes.append(f"§5 claims faster early learning, so the test is the {early_label(k)} (the "
                              "epochs at the initial learning rate, from metrics.csv: an area under the early "
                              "learning curve); the final errors are shown beside it, untested")
    for metric, key in metrics if claim.metric != "gap" else ():
        if eval_kind:
            b = result_values(pair.base, f"val_{key}_err_10view")
            v = result_values(pair.base, f"val_{key}_err")
            v = {s: x for s, x in v.items() if s in b}
            ici, why = _image_ci(bruns, bruns, f"{key}_10view", f"{key}_center") if b else (None, "no ten-view results")
        else:
            b = result_values(pair.base, f"val_{key}_err")
            v = result_values(pair.variant, f"val_{key}_err")
            ici, why = _image_ci(bruns, vruns, f"{key}_center", f"{key}_center") if b and v else (None, "")
        notes = [f"image CI: {why}"] if why else []
        role = "primary" if metric == "top-1" and claim.metric == "error" else "secondary"
        label = f"val {metric} err" + (" (10-view -> centre)" if eval_kind else "")
        comp.rows.append(delta_row(a.name, metric, claim, b, v, ici, notes, role, label))

    base_err = result_values(pair.base, "val_top1_err")
    m = float(np.mean(list(base_err.values()))) if base_err else S.NAN
    if S.near_chance(m, k_classes, n_val):
        why = (f"the baseline is at chance ({m:.1%} top-1 error; chance is {1 - 1 / k_classes:.1%} with "
               f"{k_classes} classes): a net that has not learned says nothing about the claim")
        comp.notes.append(why)
        for r in comp.rows:  # the reason that matters; a lack of spread at chance is no surprise
            r.unmeasurable = "baseline at chance"
            r.notes = [n for n in r.notes if not n.startswith("no spread")]
        return comp
    _withhold(comp, pair, claim, k_classes, n_val, eval_kind)
    return comp


def collapse_of(group: Optional[C.Group], k_classes, n_val) -> Optional[Collapse]:
    """The group's seeds at chance (None: none, or no class count to judge by)."""
    err = result_values(group, "val_top1_err")
    stuck = sorted(s for s, e in err.items() if S.collapsed(e, k_classes, n_val))
    if not stuck:
        return None
    dead = {}
    for r in group.counted:
        v = (r.result or {}).get("fc7_dead_fraction")
        if r.seed in stuck and isinstance(v, (int, float)) and math.isfinite(v):
            dead[r.seed] = float(v)
    return Collapse(stuck, len(err), float(np.mean([err[s] for s in stuck])), dead)


def _withhold(comp: Comparison, pair, claim: REG.Claim, k_classes, n_val, eval_kind: bool) -> None:
    """Verdicts the comparison cannot give, decided before any test: an arm that
    collapsed to chance in some seed (a net that failed to train says nothing about
    the choice; the delta would measure the other arm's progress), a confounded
    claim, and an overfitting claim while the baseline does not yet overfit."""
    arms = [(comp.base_label, pair.base)] + ([] if eval_kind else [(comp.variant_label, pair.variant)])
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
            "claim and no verdict is given; the collapse rate is the outcome to report")
    # Every tested row of the comparison (the primary and its secondary rows) is withheld.
    primary = [r for r in comp.rows if r.role != "none"]
    # A confound is a flaw of the design, known before any run: it is named first.
    if claim.confounded:
        for r in primary:
            r.withheld, r.withheld_why = S.CONFOUNDED, claim.caveat.split(":", 1)[-1].strip()
        return
    if comp.collapse:
        for r in primary:
            r.withheld, r.withheld_why = S.COLLAPSED, "; ".join(col.text(lab) for lab, col in comp.collapse.items())
        return
    if claim.regulariser:
        gap = gap_values(pair.base)
        if gap and float(np.mean(list(gap.values()))) < SMALL_GAP:
            g = 100 * float(np.mean(list(gap.values())))
            why = (f"the baseline's gap (val - clean train top-1 error) is {g:+.1f} points, under "
                   f"{100 * SMALL_GAP:.0f}: the net has not begun to overfit, so a claim about overfitting cannot "
                   "show at this budget, and more seeds would not settle it")
            if not any(t.startswith("baseline gap") for t in comp.tags):
                comp.tags.append(f"baseline gap {g:+.1f} pts: the budget ends before overfitting")
            for r in primary:
                r.withheld, r.withheld_why = S.NOT_TESTABLE, why


def run_device(r) -> Optional[str]:
    return (r.env or {}).get("device")


def _one_device(bruns, vruns, wb: dict, wv: dict):
    """Seconds compare only on one machine (the same code ran 2-3x apart on two CPUs
    with one host name): keep the wall times (seed -> s) of the device both arms
    ran on most, as (device, wb, wv, note). Runs that recorded no device are kept
    only when no run did; arms with no device in common keep no wall times."""
    dev_b = {r.seed: run_device(r) for r in bruns if r.seed in wb}
    dev_v = {r.seed: run_device(r) for r in vruns if r.seed in wv}
    known = (set(dev_b.values()) | set(dev_v.values())) - {None}
    if not known:
        return None, wb, wv, None
    shared = ((set(dev_b.values()) & set(dev_v.values())) if dev_b and dev_v
              else set(dev_b.values()) | set(dev_v.values())) - {None}
    if not shared:
        return None, {}, {}, ("wall times: the ReLU and tanh runs ran on different devices, so no wall times "
                              "or wall-time ratio are given (seconds are not comparable across machines)")
    dev = max(shared, key=lambda d: (min(list(dev_b.values()).count(d), list(dev_v.values()).count(d)),
                                     str(d)))
    keep_b = {s: x for s, x in wb.items() if dev_b[s] == dev}
    keep_v = {s: x for s, x in wv.items() if dev_v[s] == dev}
    left = len(wb) + len(wv) - len(keep_b) - len(keep_v)
    note = None if not left else (
        f"wall times: only the runs on {dev} (ReLU {len(keep_b)}, tanh {len(keep_v)}) are compared; {left} "
        "run(s) on other or unrecorded devices are left out of the wall-time columns, since seconds are not "
        "comparable across machines (epochs are)")
    return dev, keep_b, keep_v, note


def fig1_analysis(preset: str, a: REG.Ablation, labels: dict, comp: Comparison) -> Fig1:
    claim = comp.claim
    bruns = comp.pair.base.counted if comp.pair.base else []
    vruns = comp.pair.variant.counted if comp.pair.variant else []

    def target_of(runs):
        for r in runs:
            t = r.config.get("train", {}).get("stop_at_train_error")
            if t:
                return float(t)
        return FIG1_TARGET

    target = target_of(bruns + vruns)
    bt = {r.seed: run_ttt(r, target) for r in bruns}
    vt = {r.seed: run_ttt(r, target) for r in vruns}
    notes = []
    for r in bruns + vruns:
        e = (r.result or {}).get("epochs_to_target")
        t = (bt if r in bruns else vt)[r.seed]
        if e is not None and t.reached and int(e) != t.epochs:
            notes.append(f"`{r.label}` seed {r.seed}: result.json says {e} epochs to target, "
                         f"the logged curve {t.epochs}; the curve is used")
    ratio = wall = None
    n = min(len(bt), len(vt))
    wb, wv = result_values(comp.pair.base, "wall_time_s"), result_values(comp.pair.variant, "wall_time_s")
    wall_device, wb, wv, note = _one_device(bruns, vruns, {s: x for s, x in wb.items() if x > 0},
                                            {s: x for s, x in wv.items() if x > 0})
    if note:
        notes.append(note)
    if bt and vt:
        ratio = S.ratio_interval({s: t.bound for s, t in bt.items()}, {s: t.bound for s, t in vt.items()}, LEVEL)
        if wb and wv:
            wall = S.ratio_interval(wb, wv, LEVEL)
    base_cens = [s for s, t in bt.items() if not t.reached]
    var_cens = [s for s, t in vt.items() if not t.reached]
    if var_cens:
        notes.append(f"tanh seeds {var_cens} never reached {target:.0%}; their epochs are counted as the "
                     "epochs run, so the ratio and its interval are lower bounds: tanh needs at least that "
                     "many times the epochs")
    claimed, text, _ = _claimed_text(claim, "epochs")
    log_ci = ratio.log if ratio is not None else S.Interval(S.NAN, S.NAN, S.NAN, "n/a", n, reason="an arm has no runs")
    row = Row(a.name, "epochs", claimed, text, claim.direction,
              {s: t.bound for s, t in bt.items()}, {s: t.bound for s, t in vt.items()},
              ratio if ratio is not None else S.RatioSummary(*(S.NAN,) * 5, "n/a", n), None, log_ci,
              lower_bound_only=bool(var_cens), notes=notes, label=f"epochs to {target:.0%} train err",
              interval_at=(lambda level: S.ratio_interval({s: t.bound for s, t in bt.items()},
                                                          {s: t.bound for s, t in vt.items()}, level).log)
              if ratio is not None else None)
    _power(row, log_ci)
    if base_cens:
        row.unmeasurable = f"ReLU seeds {base_cens} never reached {target:.0%}"
        notes.append(f"ReLU seeds {base_cens} never reached {target:.0%}: the ratio has no lower bound")
    if row.lower_bound_only:
        row.seeds_needed = None  # a power calculation for a censored ratio would be wrong
    comp.rows.append(row)

    def lr_of(runs):
        lrs = sorted({C.learning_rate(r) for r in runs} - {None})
        return lrs[0] if len(lrs) == 1 else None

    grid = {}
    grid_seeds = set()
    for arm, label in (("relu", f"{a.name}.base.grid"), ("tanh", f"{a.name}.grid")):
        groups = labels.get(label, [])
        runs = [r for g in groups for r in g.runs]
        grid_seeds |= {r.seed for r in runs if C.is_counted(r)}
        lrs = sorted({C.learning_rate(r) for r in runs if C.learning_rate(r) is not None} | set(a.lr_grid))
        cells = []
        for lr in lrs:
            at = [r for r in runs if C.learning_rate(r) is not None and math.isclose(C.learning_rate(r), lr)]
            done = sorted((r for r in at if C.is_counted(r)), key=lambda r: C._date_key(C.run_date(r)))
            if done:
                r = done[-1]
                wall_s = (r.result or {}).get("wall_time_s")
                cells.append(GridCell(lr, r, run_ttt(r, target), wall_s, "finished", bool(r.result.get("censored"))))
            elif at:
                r = sorted(at, key=lambda r: C._date_key(C.run_date(r)))[-1]
                fail = r.failure or {}
                status = C.run_status(r)
                if fail.get("reason") == "diverged":  # the rate's answer: it does not train
                    e = fail.get("epoch")
                    status = "diverged" + (f" (non-finite loss in epoch {int(e) + 1})" if isinstance(e, int) else "")
                cells.append(GridCell(lr, r, None, None, status))
            else:
                cells.append(GridCell(lr, None, None, None, "missing"))
        grid[arm] = cells
    fig = Fig1(a, target, bruns, vruns, bt, vt, ratio, wall, lr_of(bruns), lr_of(vruns), grid, notes,
               wall_device, {"relu": wb, "tanh": wv})
    for arm, chosen in (("relu", fig.base_lr), ("tanh", fig.variant_lr)):
        done = [c for c in grid[arm] if c.ttt is not None]
        if not done or chosen is None:
            continue
        best = min(done, key=lambda c: (REG.grid_rank(c.ttt.epochs if c.ttt.reached else None,
                                                      (c.run.result or {}).get("train_top1_err")), c.lr))
        if best.ttt.reached and not math.isclose(best.lr, chosen):
            fig.notes.append(f"{arm}: the seeded runs used lr {chosen:g}, but the grid's fastest "
                             f"to {target:.0%} was lr {best.lr:g}")
        # A rate that diverged was tried: the grid is closed on that side (a higher rate
        # would diverge too), so it counts for the edges.
        rates = sorted(c.lr for c in grid[arm] if c.ttt is not None or c.status.startswith("diverged"))
        if len(rates) == 1 or math.isclose(chosen, rates[0]) or math.isclose(chosen, rates[-1]):
            side = "only" if len(rates) == 1 else ("lowest" if math.isclose(chosen, rates[0]) else "highest")
            fig.notes.append(f"{arm}: the chosen lr {chosen:g} is the {side} rate of the grid run "
                             f"({', '.join(f'{x:g}' for x in rates)}): a rate beyond it may be faster, so the "
                             f"{arm} arm may be slower than its best (the grid grows by x{REG.GRID_EXTEND_FACTOR:g} "
                             f"at an edge, at most {REG.GRID_MAX_EXTENSIONS} times)")
    if grid_seeds and len(grid_seeds) == 1:
        fig.notes.append(f"the learning rates were picked on a single selection seed ({sorted(grid_seeds)[0]}): "
                         "rates whose epochs to target are close may rank differently on another seed")
    fig.rules = fig1_rules(fig)
    return fig


def fig1_rules(fig: Fig1) -> list:
    """The tanh / ReLU ratio under each counting rule: whole epochs (the primary
    test), the crossing interpolated within its epoch, and with the selection
    seed's grid runs at the chosen rates counted as one more pair, or alone (they
    were picked for being fastest, so they are kept out of the test)."""
    if fig.ratio is None:
        return []
    pair = lambda b, v: {s: (b[s], v[s]) for s in sorted(set(b) & set(v))}  # noqa: E731
    bi = {s: t.bound for s, t in fig.base_ttt.items()}
    vi = {s: t.bound for s, t in fig.variant_ttt.items()}
    rules = [CountingRule("whole epochs: the first epoch at or under the target (the test)", fig.ratio.estimate,
                          fig.ratio, len(set(bi) & set(vi)), pair(bi, vi))]
    censored = [s for s, t in (*fig.base_ttt.items(), *fig.variant_ttt.items()) if not t.reached]
    for at, name in ((1.0, "the crossing interpolated within its epoch, each logged error read as the epoch's "
                           "end (linear, from chance before training)"),
                     (0.5, "the crossing interpolated, each logged error read at the middle of its epoch (the "
                           "log holds the epoch's running mean)")):
        bf = {r.seed: run_fractional_ttt(r, fig.target, at) for r in fig.base_runs}
        vf = {r.seed: run_fractional_ttt(r, fig.target, at) for r in fig.variant_runs}
        if censored or any(x is None or x <= 0 for x in (*bf.values(), *vf.values())) or not bf or not vf:
            continue  # a censored run has no crossing: the rule would drop the slowest seeds
        rf = S.ratio_interval(bf, vf, LEVEL)
        rules.append(CountingRule(name, rf.estimate, rf, len(set(bf) & set(vf)), pair(bf, vf)))
    if censored:
        fig.notes.append(f"seeds {sorted(set(censored))} never reached the target, so the interpolated counting "
                         "rules are left out (they would drop the slowest seeds)")

    def selected(arm, lr):
        cell = next((c for c in fig.grid.get(arm, []) if lr is not None and math.isclose(c.lr, lr)), None)
        return cell.ttt.epochs if cell is not None and cell.ttt is not None and cell.ttt.reached else None

    sb, sv = selected("relu", fig.base_lr), selected("tanh", fig.variant_lr)
    if sb and sv:
        rp = S.ratio_interval({**bi, REG.GRID_SEED: sb}, {**vi, REG.GRID_SEED: sv}, LEVEL)
        rules.append(CountingRule(f"whole epochs, the selection seed {REG.GRID_SEED} counted as one more pair",
                                  rp.estimate, rp, len(set(bi) & set(vi)) + 1,
                                  {**pair(bi, vi), REG.GRID_SEED: (sb, sv)}))
        rules.append(CountingRule(f"the selection seed {REG.GRID_SEED} alone (its grid runs at the chosen rates)",
                                  sv / sb, None, 1, {REG.GRID_SEED: (sb, sv)}))
    return rules


# --------------------------------------------------------------------------------------
# The preset
# --------------------------------------------------------------------------------------


def judge(comparisons: list) -> int:
    """Bonferroni's correction over the primary rows with a test, each such row's
    interval recomputed at the simultaneous level (so that it excludes 0 exactly
    when the row is significant), then each row's direction, magnitude and verdict
    (see `reports.stats`). Returns the family size."""
    family = {(c.name, r.metric): r.p for c in comparisons for r in c.rows
              if r.role == "primary" and not r.unmeasurable and not r.withheld and math.isfinite(r.p)}
    adjusted = S.bonferroni(family)
    m = len(family)
    level = S.simultaneous_level(m)
    alpha = 1.0 - level
    for c in comparisons:
        for r in c.rows:
            r.p_adj = adjusted.get((c.name, r.metric), S.NAN)
            if r.role == "none":
                r.direction_verdict, r.magnitude, r.verdict = "-", "-", S.NO_CLAIM
                continue
            if r.withheld:  # the reason that matters, with or without an interval
                r.direction_verdict = r.magnitude = "-"
                r.verdict = r.withheld if r.role == "primary" else S.SECONDARY
                r.mde, r.seeds_needed = S.NAN, None  # more seeds would not settle it
                continue
            if r.unmeasurable:
                r.direction_verdict = r.magnitude = r.verdict = S.NOT_MEASURABLE
                r.mde, r.seeds_needed = S.NAN, None  # no power statement about a comparison that cannot be made
                continue
            if r.role == "primary" and (c.name, r.metric) in family and r.interval_at is not None and m > 1:
                # seed_ci stays the per-claim 95% interval (described, not tested).
                r.ci, r.level = r.interval_at(level), level
                _power(r, r.ci, alpha)
                if r.lower_bound_only:
                    r.seeds_needed = None  # a power calculation for a censored ratio would be wrong
            r.magnitude = S.magnitude_verdict(r.ci, r.paper_effect, r.direction, r.mde, bound=r.bound,
                                              lower_bound_only=r.lower_bound_only)
            if r.role == "secondary":
                r.direction_verdict = r.verdict = S.SECONDARY
                continue
            r.direction_verdict = S.direction_verdict(r.ci.estimate, r.p_adj, r.direction)
            r.verdict = S.claim_verdict(r.direction_verdict, r.magnitude)
            r.fragile = _fragility(r, m)
            if r.fragile:
                r.notes.append(f"fragile: {r.fragile}")
    return m


def _fragility(r: Row, m: int) -> str:
    """For a paired comparison: what the paired and Welch tests (each after the
    same correction) say, when they disagree on significance; else ""."""
    if r.ci.method != "paired t" or not math.isfinite(r.p_adj):
        return ""
    b, v = r.base, r.variant
    if r.is_ratio:
        b = {s: math.log(x) for s, x in b.items()}
        v = {s: math.log(x) for s, x in v.items()}
    welch = S.welch_interval(list(b.values()), list(v.values()))
    if not math.isfinite(welch.p):
        return ""
    p_w = min(1.0, m * welch.p)
    if (r.p_adj < S.ALPHA) == (p_w < S.ALPHA):
        return ""
    word = lambda p: "significant" if p < S.ALPHA else "not significant"  # noqa: E731
    return (f"the paired t test is {word(r.p_adj)} (adjusted p {r.p_adj:.3f}) but Welch's t, which ignores the "
            f"pairing by seed, is {word(p_w)} (adjusted p {p_w:.3f})")


def analyze_preset(preset: str, labels: dict, root) -> PresetAnalysis:
    _VAL_CORRECT.clear()
    try:
        return _analyze_preset(preset, labels, root)
    finally:
        _VAL_CORRECT.clear()


def _analyze_preset(preset: str, labels: dict, root) -> PresetAnalysis:
    ablations = REG.for_preset(preset)
    comparisons = [compare(preset, a, labels) for a in ablations]
    # A baseline label's main group is the one most matched pairs use; comparisons
    # without a matched pair (eval ablations, missing variants) fall back to it.
    votes: dict = {}
    for c in comparisons:
        if c.ablation.kind == "train" and c.pair.matched and c.pair.base is not None and c.pair.variant is not None:
            votes.setdefault(c.base_label, []).append(c.pair.base.fingerprint)
    main = {lab: max(fps, key=lambda fp: (fps.count(fp), -fps.index(fp))) for lab, fps in votes.items()}
    for i, (a, c) in enumerate(zip(ablations, comparisons)):
        needs = not (c.pair.matched and c.pair.variant is not None) or a.kind == "eval"
        if needs and main.get(c.base_label) and (c.pair.base is None or c.pair.base.fingerprint != main[c.base_label]):
            comparisons[i] = compare(preset, a, labels, prefer_base=main[c.base_label])
    fig1 = None
    for a, c in zip(ablations, comparisons):
        if c.claim.metric == "epochs":
            fig1 = fig1_analysis(preset, a, labels, c)
    family = judge(comparisons)
    notes = []
    classes = sorted({c.num_classes for c in comparisons if c.num_classes})
    if classes and max(classes) <= TOP5_MIN_CLASSES:
        notes.append(f"Top-5 error is left out: the runs have {', '.join(map(str, classes))} classes, where "
                     "top-5 error is near 0 and not comparable with the paper's 1000-class top-5.")

    # Overfitting: baseline vs no_crop_flip vs no_dropout (the groups the comparisons used).
    overfitting, seen = [], set()
    for name in ("no_crop_flip", "no_dropout"):
        comp = next((c for c in comparisons if c.name == name), None)
        if comp is None:
            continue
        for arm, g in ((comp.base_label, comp.pair.base), (name, comp.pair.variant)):
            if g is None or (g.label, g.fingerprint) in seen:
                continue
            seen.add((g.label, g.fingerprint))
            overfitting.append(OverfitRow(arm, g, result_values(g, "train_top1_err_clean"),
                                          result_values(g, "train_top1_err"),
                                          result_values(g, "val_top1_err"), gap_values(g)))

    # Which groups are in the tables; the rest are superseded.
    used = set()
    for comp in comparisons:
        for g in (comp.pair.base, comp.pair.variant):
            if g is not None:
                used.add((g.label, g.fingerprint))
    an = PresetAnalysis(preset, Path(root), labels, ablations, comparisons, overfitting, fig1, [], [], [], [], used,
                        family, notes)
    bg = an.baseline_group()
    if bg is not None and bg.counted:
        used.add(("baseline", bg.fingerprint))
    grid_labels = {f"{a.name}{s}" for a in ablations if a.lr_grid for s in (".base.grid", ".grid")}
    superseded = []
    for label, groups in sorted(labels.items()):
        if label in grid_labels:
            continue
        used_here = [g for g in groups if (label, g.fingerprint) in used]
        for g in groups:
            if (label, g.fingerprint) in used or not g.runs:
                continue
            ref = used_here[0] if used_here else None
            superseded.append((g, C.config_diff(ref.flat, g.flat) if ref else {}))

    # Missing: every (label, seed) an ablation needs, given the baseline's seeds; an
    # ablation with a baseline arm of its own (Figure 1) needs the seeds either of its
    # arms has, so a campaign run with more seeds lists what it has still to run.
    seen_seeds = sorted({r.seed for g in labels.get("baseline", []) for r in g.runs})
    expected = seen_seeds or list(DEFAULT_SEEDS)
    chosen = {}
    for comp in comparisons:
        for lab, g in ((comp.base_label, comp.pair.base), (comp.variant_label, comp.pair.variant)):
            if g is not None:
                chosen.setdefault(lab, g)
    if bg is not None:
        chosen["baseline"] = bg

    def group(lab):
        return chosen.get(lab) or C.current_group(labels.get(lab, []))

    needed = {"baseline": expected}
    for a in ablations:
        arms = [lab for lab in (a.base_label, a.name if a.kind == "train" else None) if lab]
        own = sorted({r.seed for lab in arms if (g := group(lab)) for r in g.runs})
        for lab in arms:
            needed.setdefault(lab, expected if a.base_label == "baseline" else sorted(set(own) | set(expected)))
    missing = []
    for lab, seeds in needed.items():
        g = group(lab)
        by_seed = {r.seed: r for r in g.runs} if g else {}
        for s in seeds:
            r = by_seed.get(s)
            if r is None:
                missing.append((lab, s, "absent"))
            elif not C.is_counted(r):
                missing.append((lab, s, C.run_status(r)))
    if fig1 is not None:
        for arm, suffix in (("relu", ".base.grid"), ("tanh", ".grid")):
            for cell in fig1.grid[arm]:
                if cell.status != "finished":
                    missing.append((f"{fig1.ablation.name}{suffix} (lr {cell.lr:g})", REG.GRID_SEED,
                                    "absent" if cell.status == "missing" else cell.status))

    not_counted = sorted((r for groups in labels.values() for g in groups for r in g.runs if not C.is_counted(r)),
                         key=lambda r: (r.label, r.seed, str(r.path)))
    an.expected_seeds, an.missing, an.not_counted, an.superseded = expected, missing, not_counted, superseded
    return an


def _budget_epochs(comp: Comparison) -> Optional[int]:
    eps = [r.config.get("train", {}).get("epochs") for r in (comp.pair.base.counted if comp.pair.base else [])]
    eps = [e for e in eps if isinstance(e, int)]
    return max(eps) if eps else None


def budget_limits(analyses: dict) -> None:
    """Across the presets of a budget series (registry.BUDGET_SERIES): a claim whose
    effect at the longest budget measured is under `BUDGET_SHRINK` of its size at a
    shorter one, or of the other sign, is `budget-limited` at the shorter one; the
    row keeps its test and shows both budgets. A short budget can read a slower
    start as a worse (or better) end point: the verdict there is about the budget."""
    for series in REG.BUDGET_SERIES:
        present = [p for p in series if p in analyses]
        names = {c.name for p in present for c in analyses[p].comparisons}
        for name in sorted(names):
            points = []
            for p in present:
                comp = analyses[p].comparison(name)
                r = comp.primary if comp is not None else None
                e = _budget_epochs(comp) if comp is not None else None
                if (r is None or r.is_ratio or e is None or not math.isfinite(r.ci.estimate)
                        or r.withheld or r.unmeasurable == "baseline at chance"):
                    continue  # a withheld or chance-level estimate says nothing about the effect's size
                points.append((e, p, comp, r))
            if len(points) < 2:
                continue
            points.sort(key=lambda x: x[0])
            e_long, p_long, _, r_long = points[-1]
            # The same quantity at each budget (an early-learning mean over more epochs is
            # another measure, and would shrink by construction).
            points = [x for x in points if x[3].metric == r_long.metric and x[3].label == r_long.label]
            budgets = [(p, e, r.ci.estimate) for e, p, _, r in points]
            for e, p, comp, r in points[:-1]:
                short, long_ = r.ci.estimate, r_long.ci.estimate
                if e >= e_long or short == 0 or r.verdict in (*S.WITHHELD, S.NOT_MEASURABLE, S.NO_CLAIM):
                    continue
                if abs(long_) < BUDGET_SHRINK * abs(short) or (short * long_ < 0 and abs(long_) < abs(short)):
                    tested = r.verdict
                    r.verdict = S.BUDGET_LIMITED
                    r.budgets = budgets
                    across = ", ".join(f"{100 * d:+.2f} at {ep} epochs ({q})" for q, ep, d in budgets)
                    comp.tags.append(f"budget-limited: {across}; the test at {e} epochs: {tested}")
                    r.notes.append(f"budget-limited: the effect shrinks as the budget grows ({across}); the test "
                                   f"at {e} epochs ({tested}) measures the budget, not the end point the paper "
                                   "compares")
