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
from typing import Optional

import numpy as np

from ablations import registry as REG
from reports import collect as C
from reports import stats as S

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
LEVEL = 0.95
DEFAULT_SEEDS = (0, 1, 2)
FIG1_TARGET = 0.25  # §3.1: "25% training error"


@dataclass
class Row:
    """One compared quantity of one ablation."""

    ablation: str
    metric: str  # "top-1", "top-5", "gap", "epochs"
    claimed: Optional[float]  # the paper's delta (fraction) or ratio; None = qualitative
    claimed_text: str  # how the claim is printed, e.g. "+1.4", "> 0", "x6", "no claim"
    direction: int
    base: dict  # seed -> value (error fraction, gap fraction, or epochs)
    variant: dict
    seed_ci: object  # stats.Interval (deltas) or stats.RatioSummary (epochs)
    image_ci: Optional[S.Interval]
    verdict: str
    paper_vs_ci: str  # "inside", "above", "below", or "" (nothing to compare)
    notes: list = field(default_factory=list)


@dataclass
class Comparison:
    ablation: REG.Ablation
    claim: REG.Claim
    base_label: str
    variant_label: str
    pair: C.Pair
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.ablation.name


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


# --------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------


def _paper_vs(ci, claimed: Optional[float]) -> str:
    if claimed is None or not ci.ok:
        return ""
    if claimed < ci.lo:
        return "below"
    if claimed > ci.hi:
        return "above"
    return "inside"


def _claimed_text(claim: REG.Claim, metric: str) -> tuple[Optional[float], str, bool]:
    """(claimed value, printed text, is there a claim for this metric)."""
    if claim.metric == "none":
        return None, "no claim", False
    if metric == "epochs":
        return claim.ratio, (f"x{claim.ratio:g}" if claim.ratio else ("> 1" if claim.direction > 0 else "< 1")), True
    if metric == "gap":
        return None, ("> 0" if claim.direction > 0 else "< 0"), True
    val = claim.top1 if metric == "top-1" else claim.top5
    if val is not None:
        return val / 100.0, f"{val:+.1f}", True
    if claim.top1 is not None or claim.top5 is not None:  # a quantitative claim, not on this metric
        return None, "no top-5 claim" if metric == "top-5" else "no top-1 claim", False
    return None, ("> 0" if claim.direction > 0 else "< 0"), True


def delta_row(name, metric, claim, base, variant, image_ci, notes=()) -> Row:
    claimed, text, has_claim = _claimed_text(claim, metric)
    ci = S.delta_interval(base, variant, LEVEL)
    n = min(len(base), len(variant))
    v = S.verdict(ci.estimate, ci.lo, ci.hi, claim.direction, n=n, claim=has_claim)
    return Row(name, metric, claimed, text, claim.direction, base, variant, ci, image_ci, v,
               _paper_vs(ci, claimed), list(notes))


def _image_ci(base_runs, var_runs, base_key, var_key, shift=0.0):
    b, why_b = wrong_matrix(base_runs, base_key)
    v, why_v = wrong_matrix(var_runs, var_key)
    if b is None or v is None:
        return None, why_b or why_v
    (bm, bl), (vm, vl) = b, v
    if bm.shape[1] != vm.shape[1] or (bl is not None and vl is not None and not np.array_equal(bl, vl)):
        return None, "the arms' validation sets differ"
    return S.paired_bootstrap(bm, vm, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, LEVEL, shift), ""


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

    if claim.metric == "epochs":
        return comp  # Figure 1: filled by `fig1_analysis`
    if claim.metric == "gap":
        b, v = gap_values(pair.base), gap_values(pair.variant)
        shift = float(np.mean([vr.result["train_top1_err_clean"] for vr in vruns if vr.seed in v]) -
                      np.mean([br.result["train_top1_err_clean"] for br in bruns if br.seed in b])) if b and v else 0.0
        ici, why = _image_ci(bruns, vruns, "top1_center", "top1_center", -shift) if b and v else (None, "")
        notes = [f"image CI: {why}"] if why else []
        comp.rows.append(delta_row(a.name, "gap", claim, b, v, ici, notes))
        return comp
    for metric, k in (("top-1", "top1"), ("top-5", "top5")):
        if eval_kind:
            b = result_values(pair.base, f"val_{k}_err_10view")
            v = result_values(pair.base, f"val_{k}_err")
            v = {s: x for s, x in v.items() if s in b}
            ici, why = _image_ci(bruns, bruns, f"{k}_10view", f"{k}_center") if b else (None, "no ten-view results")
        else:
            b = result_values(pair.base, f"val_{k}_err")
            v = result_values(pair.variant, f"val_{k}_err")
            ici, why = _image_ci(bruns, vruns, f"{k}_center", f"{k}_center") if b and v else (None, "")
        notes = [f"image CI: {why}"] if why else []
        comp.rows.append(delta_row(a.name, metric, claim, b, v, ici, notes))
    return comp


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
    if bt and vt:
        ratio = S.ratio_interval({s: t.bound for s, t in bt.items()}, {s: t.bound for s, t in vt.items()}, LEVEL)
        wb, wv = result_values(comp.pair.base, "wall_time_s"), result_values(comp.pair.variant, "wall_time_s")
        wb = {s: x for s, x in wb.items() if x > 0}
        wv = {s: x for s, x in wv.items() if x > 0}
        if wb and wv:
            wall = S.ratio_interval(wb, wv, LEVEL)
    base_cens = [s for s, t in bt.items() if not t.reached]
    var_cens = [s for s, t in vt.items() if not t.reached]
    if ratio is None:
        v = S.NOT_MEASURABLE
    elif base_cens:
        v = S.NOT_MEASURABLE
        notes.append(f"ReLU seeds {base_cens} never reached {target:.0%}: the ratio has no lower bound")
    else:
        v = S.verdict(ratio.estimate, ratio.lo, ratio.hi, claim.direction, n=n, null=1.0)
    if var_cens:
        notes.append(f"tanh seeds {var_cens} never reached {target:.0%}; their epochs are counted as the "
                     "epochs run, so the ratio and its interval are lower bounds")
    claimed, text, _ = _claimed_text(claim, "epochs")
    row = Row(a.name, "epochs", claimed, text, claim.direction,
              {s: t.bound for s, t in bt.items()}, {s: t.bound for s, t in vt.items()},
              ratio if ratio is not None else S.RatioSummary(*(S.NAN,) * 5, "n/a", n), None, v,
              _paper_vs(ratio, claimed) if ratio is not None else "", notes)
    comp.rows.append(row)

    def lr_of(runs):
        lrs = sorted({C.learning_rate(r) for r in runs} - {None})
        return lrs[0] if len(lrs) == 1 else None

    grid = {}
    for arm, label in (("relu", f"{a.name}.base.grid"), ("tanh", f"{a.name}.grid")):
        groups = labels.get(label, [])
        runs = [r for g in groups for r in g.runs]
        lrs = sorted({C.learning_rate(r) for r in runs if C.learning_rate(r) is not None} | set(a.lr_grid))
        cells = []
        for lr in lrs:
            at = [r for r in runs if C.learning_rate(r) is not None and math.isclose(C.learning_rate(r), lr)]
            done = sorted((r for r in at if C.is_counted(r)), key=lambda r: C._date_key(C.run_date(r)))
            if done:
                r = done[-1]
                wall_s = (r.result or {}).get("wall_time_s")
                cells.append(GridCell(lr, r, run_ttt(r, target), wall_s, "finished"))
            elif at:
                r = at[-1]
                cells.append(GridCell(lr, r, None, None, C.run_status(r)))
            else:
                cells.append(GridCell(lr, None, None, None, "missing"))
        grid[arm] = cells
    fig = Fig1(a, target, bruns, vruns, bt, vt, ratio, wall, lr_of(bruns), lr_of(vruns), grid, notes)
    for arm, chosen in (("relu", fig.base_lr), ("tanh", fig.variant_lr)):
        done = [c for c in grid[arm] if c.ttt is not None]
        if not done or chosen is None:
            continue
        best = min(done, key=lambda c: (REG.grid_rank(c.ttt.epochs if c.ttt.reached else None,
                                                      (c.run.result or {}).get("train_top1_err")), c.lr))
        if best.ttt.reached and not math.isclose(best.lr, chosen):
            fig.notes.append(f"{arm}: the seeded runs used lr {chosen:g}, but the grid's fastest "
                             f"to {target:.0%} was lr {best.lr:g}")
    return fig


# --------------------------------------------------------------------------------------
# The preset
# --------------------------------------------------------------------------------------


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
    an = PresetAnalysis(preset, Path(root), labels, ablations, comparisons, overfitting, fig1, [], [], [], [], used)
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

    # Missing: every (label, seed) an ablation needs, given the baseline's seeds.
    seen_seeds = sorted({r.seed for g in labels.get("baseline", []) for r in g.runs})
    expected = seen_seeds or list(DEFAULT_SEEDS)
    needed = ["baseline"]
    for a in ablations:
        for lab in (a.base_label, a.name if a.kind == "train" else None):
            if lab and lab not in needed:
                needed.append(lab)
    chosen = {}
    for comp in comparisons:
        for lab, g in ((comp.base_label, comp.pair.base), (comp.variant_label, comp.pair.variant)):
            if g is not None:
                chosen.setdefault(lab, g)
    if bg is not None:
        chosen["baseline"] = bg
    missing = []
    for lab in needed:
        g = chosen.get(lab) or C.current_group(labels.get(lab, []))
        by_seed = {r.seed: r for r in g.runs} if g else {}
        for s in expected:
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
