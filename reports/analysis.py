"""From grouped runs to the numbers in the report (no formatting, no plotting).

`analyze_preset` returns a `PresetAnalysis`: one `Comparison` per ablation of the
preset (with one `Row` per compared metric, and what its kind measured beyond the
rows in `Comparison.extra`: Figure 1's for lr_grid), made by the ablation's kind
(`ablations.kinds`), then tested together (`judge`); the overfitting table; and
the lists of missing, failed, unfinished and superseded runs. Values are
fractions (errors), points are produced only by the renderer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ablations import registry
from ablations.kinds import kind_of
from reports import collect, measures, stats
from reports.measures import (  # noqa: F401 (the settings and values the report quotes, here too)
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    SMALL_GAP,
    TOP5_MIN_CLASSES,
    Comparison,
    Row,
    early_epoch,
    early_values,
    gap_values,
    result_values,
)

DEFAULT_SEEDS = (0, 1, 2)
MULTIPLICITY = (
    "Bonferroni's correction over the claims of a preset that are tested, one test per claim from "
    "its primary metric (top-1 error; the overfitting gap; early error for bias_init; the epoch "
    "ratio for Figure 1), with simultaneous intervals at level 1 - 0.05/m beside the verdicts, so "
    "that an interval excludes 0 (1 for a ratio) exactly when its claim is significant; top-5 and other secondary "
    "rows are reported with per-claim 95% intervals, not tested"
)
# An effect measured on a longer budget of the same net (registry.BUDGET_SERIES) at
# less than this fraction of its size on a shorter one (or of the other sign)
# makes the shorter budget's verdict `budget-limited`.
BUDGET_SHRINK = 0.5


@dataclass
class OverfitRow:
    arm: str  # "baseline", "no_crop_flip", ...
    group: collect.Group
    train_clean: dict  # seed -> fraction
    train_aug: dict
    val: dict
    gap: dict


@dataclass
class PresetAnalysis:
    preset: str
    root: Path
    labels: dict  # label -> [Group]
    ablations: list
    comparisons: list
    overfitting: list
    expected_seeds: list
    missing: list  # (label, seed, status)
    not_counted: list  # runs
    superseded: list  # (Group, diff from the group used for that label)
    used: set  # (label, fingerprint) of the groups in the tables
    family: int = 0  # claims in the correction family (primary rows with a test)
    notes: list = field(default_factory=list)  # preset-wide

    def comparison(self, name: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.name == name), None)

    @property
    def runs(self) -> list:
        return [r for groups in self.labels.values() for g in groups for r in g.runs]

    def baseline_group(self) -> collect.Group | None:
        """The `baseline` group most comparisons use (else the preferred one)."""
        used = [c.pair.base for c in self.comparisons if c.base_label == "baseline" and c.pair.base is not None]
        if used:
            counts = {}
            for g in used:
                counts[g.fingerprint] = counts.get(g.fingerprint, 0) + 1
            fp = max(counts, key=lambda k: (counts[k], -[x.fingerprint for x in used].index(k)))
            return next(g for g in used if g.fingerprint == fp)
        return collect.current_group(
            self.labels.get("baseline", []), collect.registry_fingerprint(self.preset, "baseline")
        )


def compare(preset: str, a: registry.Ablation, labels: dict, prefer_base: str | None = None) -> Comparison:
    """The comparison of ablation `a` on `preset`, made by its kind."""
    return kind_of(a).compare(preset, a, labels, prefer_base)


# --------------------------------------------------------------------------------------
# The preset
# --------------------------------------------------------------------------------------


def judge(comparisons: list) -> int:
    """Bonferroni's correction over the primary rows with a test, each such row's
    interval recomputed at the simultaneous level (so that it excludes 0 exactly
    when the row is significant), then each row's direction, magnitude and verdict
    (see `reports.stats`). Returns the family size."""
    family = {
        (c.name, r.metric): r.p
        for c in comparisons
        for r in c.rows
        if r.role == "primary" and not r.unmeasurable and not r.withheld and math.isfinite(r.p)
    }
    adjusted = stats.bonferroni(family)
    m = len(family)
    level = stats.simultaneous_level(m)
    alpha = 1.0 - level
    for c in comparisons:
        for r in c.rows:
            r.p_adj = adjusted.get((c.name, r.metric), stats.NAN)
            if r.role == "none":
                r.direction_verdict, r.magnitude, r.verdict = "-", "-", stats.NO_CLAIM
                continue
            if r.withheld:  # the reason that matters, with or without an interval
                r.direction_verdict = r.magnitude = "-"
                r.verdict = r.withheld if r.role == "primary" else stats.SECONDARY
                r.mde, r.seeds_needed = stats.NAN, None  # more seeds would not settle it
                continue
            if r.unmeasurable:
                r.direction_verdict = r.magnitude = r.verdict = stats.NOT_MEASURABLE
                r.mde, r.seeds_needed = stats.NAN, None  # no power statement about a comparison that cannot be made
                continue
            if r.role == "primary" and (c.name, r.metric) in family and r.interval_at is not None and m > 1:
                # seed_ci stays the per-claim 95% interval (described, not tested).
                r.ci, r.level = r.interval_at(level), level
                measures.add_power(r, r.ci, alpha)
                if r.lower_bound_only:
                    r.seeds_needed = None  # a power calculation for a censored ratio would be wrong
            r.magnitude = stats.magnitude_verdict(
                r.ci, r.paper_effect, r.direction, r.mde, bound=r.bound, lower_bound_only=r.lower_bound_only
            )
            if r.role == "secondary":
                r.direction_verdict = r.verdict = stats.SECONDARY
                continue
            r.direction_verdict = stats.direction_verdict(r.ci.estimate, r.p_adj, r.direction)
            r.verdict = stats.claim_verdict(r.direction_verdict, r.magnitude)
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
    welch = stats.welch_interval(list(b.values()), list(v.values()))
    if not math.isfinite(welch.p):
        return ""
    p_w = min(1.0, m * welch.p)
    if (r.p_adj < stats.ALPHA) == (p_w < stats.ALPHA):
        return ""
    word = lambda p: "significant" if p < stats.ALPHA else "not significant"  # noqa: E731
    return (
        f"the paired t test is {word(r.p_adj)} (adjusted p {r.p_adj:.3f}) but Welch's t, which ignores the "
        f"pairing by seed, is {word(p_w)} (adjusted p {p_w:.3f})"
    )


def analyze_preset(preset: str, labels: dict, root) -> PresetAnalysis:
    measures.clear_cache()
    try:
        return _analyze_preset(preset, labels, root)
    finally:
        measures.clear_cache()


def _analyze_preset(preset: str, labels: dict, root) -> PresetAnalysis:
    ablations = registry.for_preset(preset)
    comparisons = [compare(preset, a, labels) for a in ablations]
    # A baseline label's main group is the one most matched pairs use; comparisons
    # without a matched pair (two evaluations of the same runs, missing variants) fall back to it.
    votes: dict = {}
    for c in comparisons:
        if (
            kind_of(c.ablation).trains_variant
            and c.pair.matched
            and c.pair.base is not None
            and c.pair.variant is not None
        ):
            votes.setdefault(c.base_label, []).append(c.pair.base.fingerprint)
    main = {lab: max(fps, key=lambda fp: (fps.count(fp), -fps.index(fp))) for lab, fps in votes.items()}
    for i, (a, c) in enumerate(zip(ablations, comparisons)):
        needs = not (c.pair.matched and c.pair.variant is not None) or not kind_of(a).trains_variant
        if needs and main.get(c.base_label) and (c.pair.base is None or c.pair.base.fingerprint != main[c.base_label]):
            comparisons[i] = compare(preset, a, labels, prefer_base=main[c.base_label])
    family = judge(comparisons)
    notes = []
    classes = sorted({c.num_classes for c in comparisons if c.num_classes})
    if classes and max(classes) <= TOP5_MIN_CLASSES:
        notes.append(
            f"Top-5 error is left out of the claims: the runs have {', '.join(map(str, classes))} classes, "
            "where top-5 error is not comparable with the paper's 1000-class top-5."
        )

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
            overfitting.append(
                OverfitRow(
                    arm,
                    g,
                    result_values(g, "train_top1_err_clean"),
                    result_values(g, "train_top1_err"),
                    result_values(g, "val_top1_err"),
                    gap_values(g),
                )
            )

    # Which groups are in the tables; the rest are superseded.
    used = set()
    for comp in comparisons:
        for g in (comp.pair.base, comp.pair.variant):
            if g is not None:
                used.add((g.label, g.fingerprint))
    an = PresetAnalysis(
        preset, Path(root), labels, ablations, comparisons, overfitting, [], [], [], [], used, family, notes
    )
    bg = an.baseline_group()
    if bg is not None and bg.counted:
        used.add(("baseline", bg.fingerprint))
    # Runs a kind reads beyond its arms' (lr_grid: its grid runs) are not superseded groups.
    extra_labels = {lab for a in ablations for lab in kind_of(a).extra_labels(a)}
    superseded = []
    for label, groups in sorted(labels.items()):
        if label in extra_labels:
            continue
        used_here = [g for g in groups if (label, g.fingerprint) in used]
        for g in groups:
            if (label, g.fingerprint) in used or not g.runs:
                continue
            ref = used_here[0] if used_here else None
            superseded.append((g, collect.config_diff(ref.flat, g.flat) if ref else {}))

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
        return chosen.get(lab) or collect.current_group(labels.get(lab, []))

    needed = {"baseline": expected}
    for a in ablations:
        arms = kind_of(a).arm_labels(a)
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
            elif not collect.is_counted(r):
                missing.append((lab, s, collect.run_status(r)))
    for comp in comparisons:  # runs beyond the arms' seeds (lr_grid: its grid)
        missing += kind_of(comp.ablation).missing(comp)

    not_counted = sorted(
        (r for groups in labels.values() for g in groups for r in g.runs if not collect.is_counted(r)),
        key=lambda r: (r.label, r.seed, str(r.path)),
    )
    an.expected_seeds, an.missing, an.not_counted, an.superseded = expected, missing, not_counted, superseded
    return an


def _budget_epochs(comp: Comparison) -> int | None:
    eps = [r.config.get("train", {}).get("epochs") for r in (comp.pair.base.counted if comp.pair.base else [])]
    eps = [e for e in eps if isinstance(e, int)]
    return max(eps) if eps else None


def budget_limits(analyses: dict) -> None:
    """Across the presets of a budget series (registry.BUDGET_SERIES): a claim whose
    effect at the longest budget measured is under `BUDGET_SHRINK` of its size at a
    shorter one, or of the other sign, is `budget-limited` at the shorter one; the
    row keeps its test and shows both budgets. A short budget can read a slower
    start as a worse (or better) end point: the verdict there is about the budget."""
    for series in registry.BUDGET_SERIES:
        present = [p for p in series if p in analyses]
        names = {c.name for p in present for c in analyses[p].comparisons}
        for name in sorted(names):
            points = []
            for p in present:
                comp = analyses[p].comparison(name)
                r = comp.primary if comp is not None else None
                e = _budget_epochs(comp) if comp is not None else None
                if (
                    r is None
                    or r.is_ratio
                    or e is None
                    or not math.isfinite(r.ci.estimate)
                    or r.withheld
                    or r.unmeasurable == "baseline at chance"
                ):
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
            for e, _p, comp, r in points[:-1]:
                short, long_ = r.ci.estimate, r_long.ci.estimate
                if e >= e_long or short == 0 or r.verdict in (*stats.WITHHELD, stats.NOT_MEASURABLE, stats.NO_CLAIM):
                    continue
                if abs(long_) < BUDGET_SHRINK * abs(short) or (short * long_ < 0 and abs(long_) < abs(short)):
                    tested = r.verdict
                    r.verdict = stats.BUDGET_LIMITED
                    r.budgets = budgets
                    across = ", ".join(f"{100 * d:+.2f} at {ep} epochs ({q})" for q, ep, d in budgets)
                    comp.tags.append(f"budget-limited: {across}; the test at {e} epochs: {tested}")
                    r.notes.append(
                        f"budget-limited: the effect shrinks as the budget grows ({across}); the test "
                        f"at {e} epochs ({tested}) measures the budget, not the end point the paper "
                        "compares"
                    )
