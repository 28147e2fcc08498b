"""Assemble the report: analysis -> document -> report.md, report.pdf, figures/*.png.

The report is a pure function of the run directories (read through
`reproduce.runs`) and the registry's claims; it never imports training code.
"""

from __future__ import annotations

import fcntl
import math
import os
import re
import shlex
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ablations import registry as REG
from reproduce import runs as R
from reproduce.config import PRESETS
from reports import analysis as A
from reports import collect as C
from reports import document as D
from reports import export as E
from reports import figures as F
from reports import stats as S

TITLE = "AlexNet reproduction report (Krizhevsky, Sutskever & Hinton, NIPS 2012)"

# Published numbers (error fractions): where, the data set as in `Claim.setting`, top-1, top-5.
PAPER_HEADLINE = {
    "imagenet": ("Table 2: one CNN", "ILSVRC-2012 val", 0.407, 0.182),
    "cifar10": ("§3.3: four-layer CNN with normalization", "CIFAR-10 test", 0.11, None),
}
MISHKIN_CITE = ("Mishkin, Sergievskiy & Matas 2016, \"Systematic evaluation of CNN advances on the "
                "ImageNet\" (arXiv:1606.02228; CVIU 2017): CaffeNet at 128 px (fc6/fc7 2048 units, LSUV "
                "init), ImageNet-2012 validation, figures from the authors' caffenet-benchmark repository")
# Their top-1 *accuracies* (checked against that repository), and the difference as
# points of top-1 error, variant - baseline. Only comparisons they ran as ours are
# listed (their pooling table compares max, average and stochastic pooling, not
# overlapping against non-overlapping windows).
MISHKIN = {
    "tanh": ("TanH 0.401 vs ReLU 0.470 top-1 accuracy", 6.9),
    "no_lrn": ("ReLU without LRN 0.471 vs with LRN 0.470 top-1 accuracy", -0.1),
}
# What the report writes into its folder; the folder is replaced as a whole.
PRODUCTS = ("report.md", "report.pdf", "figures", "runs.csv", "claims.csv")


class ReportError(Exception):
    """A problem with the report's input or output folders, said in one line."""


@dataclass
class Report:
    out_dir: Path
    markdown: Path
    pdf: Path
    figures: list = field(default_factory=list)
    analyses: dict = field(default_factory=dict)  # preset -> analysis.PresetAnalysis
    document: Optional[D.Document] = None
    damaged: list = field(default_factory=list)  # reproduce.runs.RunFileError of the runs left out
    runs_csv: Optional[Path] = None
    claims_csv: Optional[Path] = None


# --------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------


def pct(x: Optional[float], digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}"


def pts(x: Optional[float], digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:+.{digits}f}"


def mean_sd_pct(values: dict) -> str:
    m, sd, n = S.mean_sd(list(values.values()))
    if n == 0:
        return "n/a"
    return f"{pct(m)} ± {pct(sd)}" if n >= 2 else f"{pct(m)} (n=1)"


def ci_pts(ci) -> str:
    return f"[{pts(ci.lo)}, {pts(ci.hi)}]" if ci is not None and ci.ok else "n/a"


def n_text(base: dict, variant: dict) -> str:
    if set(base) == set(variant):
        return str(len(base))
    return f"{len(base)}/{len(variant)}"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def num(x, fmt="{:.1f}") -> str:
    return "n/a" if x is None or not math.isfinite(x) else fmt.format(x)


def code(s) -> str:
    return f"`{s}`"


def command_text(cmd) -> str:
    if cmd is None:
        return ""
    if isinstance(cmd, (list, tuple)):
        return shlex.join(str(c) for c in cmd)
    return str(cmd)


def distinct(values) -> str:
    c = Counter(v for v in values if v not in (None, ""))
    if not c:
        return "not recorded"
    return "; ".join(f"{v} ({n} run{'s' if n > 1 else ''})" if len(c) > 1 else str(v) for v, n in c.most_common())


# --------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------


def preset_description(doc: str, limit: int = 240) -> str:
    """The opening of a preset's docstring in whole sentences: its first paragraph,
    as many sentences as fit in `limit` characters (at least the first)."""
    para = " ".join((doc or "").strip().split("\n\n", 1)[0].split())
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z`(])", para)
    out = sentences[0]
    for s in sentences[1:]:
        if len(out) + 1 + len(s) > limit:
            break
        out += " " + s
    return out


def _what_was_run(an: A.PresetAnalysis) -> list:
    runs = an.runs
    blocks = [D.Heading(2, "1. What was run")]
    bg = an.baseline_group()
    ref = (bg.counted or bg.runs)[0] if bg else (runs[0] if runs else None)
    items = []
    if ref is not None:
        data = ref.config.get("data", {})
        src = str(data.get("source", "?"))
        # Local files by name and content digest, never by where they lay on the machine that ran.
        ident = C.data_id(ref)
        shown = code(src)
        if C.is_local_source(src):
            shown = code(C.portable(src, [src])) + (f" (content digest {code(ident)})" if ident.startswith(
                ("sha256:", "files:")) else " (no content digest recorded)")
        line = f"Dataset: {shown}, images {data.get('image_size')} px, crops {data.get('crop_size')} px"
        if data.get("max_train") or data.get("max_val"):
            line += (f", subset: at most {data.get('max_train') or 'all'} training and "
                     f"{data.get('max_val') or 'all'} validation images")
        lossy = [v for k, v in C.LOSSY.items() if k in src]
        if lossy:
            line += (f". Note: this is {lossy[0]} (the shared-data copy), not the original files; "
                     "errors are not directly comparable with results on the original images")
        items.append(line + ".")
    doc = preset_description(PRESETS[an.preset].doc) if an.preset in PRESETS else ""
    items.append(f"Preset: {code(an.preset)}" + (f" - {doc}" if doc else ""))
    items.append("Hardware: device " + distinct(str(r.env.get("device")) if r.env.get("device") is not None
                                                 else None for r in runs)
                 + "; host " + distinct(r.env.get("host") for r in runs)
                 + "; processor " + distinct(r.env.get("processor") for r in runs) + ".")
    items.append("Backend: " + distinct(r.env.get("backend") or r.env.get("keras_backend") for r in runs)
                 + "; versions: " + distinct(
                     ", ".join(f"{k} {v}" for k, v in sorted((r.env.get("versions") or {}).items()) if v)
                     for r in runs)
                 + "; Python " + distinct(r.env.get("python") for r in runs) + ".")
    commits = []
    for r in runs:
        g = r.env.get("git") or {}
        if g.get("commit"):
            commits.append(g["commit"][:10] + (" (dirty)" if g.get("dirty") else ""))
    items.append("Code: git " + distinct(commits) + ".")
    seeds = sorted({r.seed for r in runs})
    items.append(f"Seeds: {', '.join(map(str, seeds)) or 'none'} (expected per arm: "
                 f"{', '.join(map(str, an.expected_seeds))}).")
    done = [r for r in runs if C.is_counted(r)]
    wall = sum(float(r.result.get("wall_time_s") or 0) for r in done)
    n_failed = sum(1 for r in runs if r.failure is not None)
    items.append(f"Runs: {len(runs)} run directories, {len(done)} finished, {n_failed} failed, "
                 f"{len(runs) - len(done) - n_failed} unfinished.")
    items.append(f"Compute: {duration(wall)}" + (f" ({wall:.0f} s)" if wall >= 120 else "")
                 + f", the sum of wall_time_s over the {len(done)} finished runs (grid and superseded "
                 "runs included).")
    dates = sorted((C.run_date(r) for r in runs if C.run_date(r)), key=C._date_key)
    items.append("Dates: " + ("not recorded" if not dates else dates[0] if dates[0] == dates[-1]
                               else f"{dates[0]} to {dates[-1]}") + ".")
    blocks.append(D.Bullets(items))

    rows = []
    for label in sorted(an.labels):
        for g in an.labels[label]:
            if (label, g.fingerprint) not in an.used:
                continue
            r0 = (g.counted or g.runs)[0]
            t = r0.config.get("train", {})
            rows.append([
                code(label), code(g.fingerprint), ", ".join(map(str, g.seeds)) or "none",
                str(max((r.result or {}).get("epochs") or 0 for r in g.counted) if g.counted else 0)
                + f" / {t.get('epochs')}",
                f"{t.get('learning_rate')} ({t.get('schedule')})",
                distinct(str(r.env.get("device")) if r.env.get("device") is not None else None for r in g.runs),
                g.latest[:10] or "n/a",
            ])
    if rows:
        blocks.append(D.Table(["Label", "Fingerprint", "Finished seeds", "Epochs (done / configured)",
                               "lr (schedule)", "Device", "Latest"], rows,
                              ["l", "l", "l", "r", "l", "l", "l"],
                              caption="The configuration groups the tables below use."))
    return blocks


def fmt_p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _ratio(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"x{x:.2f}"


def level_text(row: A.Row) -> str:
    """The level of the interval beside a verdict, e.g. "99.4% simultaneous"."""
    if math.isclose(row.level, A.LEVEL):
        return f"{row.level:.0%}"
    return f"{100 * row.level:.1f}% simultaneous"


def verdict_text(row: A.Row) -> str:
    return row.verdict + (" (fragile)" if row.fragile else "")


def measured_text(row: A.Row, with_method: bool = False) -> str:
    """The measured effect and the interval the test uses, e.g. "+2.50 [+1.10, +3.90]"."""
    if row.is_ratio:
        ci = row.ci
        exp = lambda x: math.exp(x) if x is not None and math.isfinite(x) else S.NAN  # noqa: E731
        text = _ratio(exp(ci.estimate)) + (f" [{_ratio(exp(ci.lo))}, {_ratio(exp(ci.hi))}]" if ci.ok
                                           else " (no interval)")
        return ("at least " + text) if row.lower_bound_only else text
    ci = row.ci
    text = pts(ci.estimate) + (f" [{pts(ci.lo)}, {pts(ci.hi)}]" if ci.ok else " (no interval)")
    if with_method and ci.ok and ci.method.startswith("bootstrap"):
        text += " (images)"
    return text


def mde_text(row: A.Row) -> str:
    """The detectable effect on the printed scale (points, or a ratio)."""
    if not math.isfinite(row.mde):
        return "n/a"
    return _ratio(math.exp(row.mde)) if row.is_ratio else f"{100 * row.mde:.2f}"


def seeds_text(row: A.Row) -> str:
    if row.seeds_needed is None:
        return "n/a"
    return f"> {row.seeds_needed - 1}" if row.seeds_needed > 10_000 else str(row.seeds_needed)


def _caveat_tag(claim) -> str:
    """The caveat's leading phrase ("Confounded", "Not like for like")."""
    return claim.caveat.split(":", 1)[0] if claim.caveat else ""


def _main_table(an: A.PresetAnalysis) -> list:
    blocks = [D.Heading(2, "2. Claims and measurements")]
    blocks.append(D.Para(
        "Errors are validation errors in %, mean ± sd over seeds (sample sd). Delta = variant - "
        "baseline in points (percentage points of error; for Figure 1 the ratio of epochs, variant / "
        "baseline). **95% CI (seeds)**: Student t on the per-seed differences when both arms have "
        "the same seeds (paired), Welch's t otherwise; it includes training noise and is the interval "
        "the tests start from (the verdicts use the simultaneous intervals of the next table). When every "
        "seed gives the same difference no t interval exists (it would have "
        "zero width); the paired bootstrap over validation images is used instead where per-image "
        "results exist, else the row is `not measurable`. **95% CI (images)**: percentile bootstrap "
        f"over validation images ({A.BOOTSTRAP_RESAMPLES} resamples, seed {A.BOOTSTRAP_SEED}, pooled over "
        "seeds); it reflects only the finite validation set."))
    rows = []
    for comp in an.comparisons:
        for r in comp.rows:
            if r.is_ratio:
                ep = lambda v: _ep(list(v.values()))  # noqa: E731
                rows.append([code(comp.name), r.label, ep(r.base), ep(r.variant), _ratio(r.seed_ci.estimate),
                             f"[{_ratio(r.seed_ci.lo)}, {_ratio(r.seed_ci.hi)}]" if r.seed_ci.ok else "n/a", "n/a",
                             n_text(r.base, r.variant)])
                continue
            rows.append([code(comp.name), r.label, mean_sd_pct(r.base), mean_sd_pct(r.variant),
                         pts(r.seed_ci.estimate), ci_pts(r.seed_ci), ci_pts(r.image_ci), n_text(r.base, r.variant)])
        if not comp.rows:
            rows.append([code(comp.name), "-", "n/a", "n/a", "n/a", "n/a", "n/a", "0"])
    blocks.append(D.Table(
        ["Ablation", "Metric", "Baseline", "Variant", "Delta", "95% CI (seeds)", "95% CI (images)", "n"],
        rows, ["l", "l", "r", "r", "r", "r", "r", "r"],
        caption="n: seeds per arm (b/v when the arms' seeds differ). single_view_eval: baseline = "
                "ten-view error, variant = centre-crop error of the same baseline runs."))

    blocks.append(D.Heading(3, "Tests"))
    level = S.simultaneous_level(an.family)
    blocks.append(D.Para(
        f"**Multiple comparisons**: {A.MULTIPLICITY}; here m = {an.family} claim(s) with a test, so the "
        + (f"intervals beside the verdicts are {100 * level:.1f}% intervals. " if an.family > 1 else
           "intervals beside the verdicts are the ordinary 95% ones (nothing to correct for). ")
        + "**p (adj.)**: the "
        "Bonferroni-adjusted two-sided p-value of \"no difference\" (secondary rows: the unadjusted p, in "
        "brackets). **Direction**: the claimed sign is significant when the adjusted p < 0.05, which is when "
        "the simultaneous interval excludes 0. **Fragile**: a paired comparison whose verdict Welch's t (which "
        "ignores the pairing by seed) would not share. **MDE**: the minimum "
        f"detectable effect, the smallest true difference that a two-sided test at α = {S.ALPHA:g}/m (a tested claim; {S.ALPHA:g} for the other rows) finds "
        f"with {S.POWER:.0%} power at the observed spread (noncentral t with the interval's degrees of "
        "freedom; normal for the image bootstrap), in points (a ratio for Figure 1). **Seeds for paper**: "
        "seeds per arm at which the MDE reaches the paper's effect, at the observed spread. **Size**: the "
        "paper's value against the interval; `paper's value inside the interval` only when the paper's "
        "effect is at least the MDE, else `underpowered` (a wide interval contains everything and is not "
        "evidence); a claim stated as a lower bound (\"over 1%\") is compared as a bound. **Verdict**: "
        "`reproduced` = significant in the claimed direction and the size agrees (or no size is claimed); "
        "`direction reproduced, size differs/unresolved`; `contradicted` = significant the other way; "
        "`underpowered` = not significant and the paper's effect is below the MDE; `not reproduced` = not "
        "significant and the interval excludes the paper's effect; `not measurable` = no interval, or the "
        f"baseline is at chance. Withheld without a test (no p, MDE or seeds): `{S.COLLAPSED}` = an arm ended "
        f"at chance in some seed; `{S.CONFOUNDED}` = the arms differ in more than the claim's choice; "
        f"`{S.NOT_TESTABLE}` = a claim about overfitting while the baseline does not yet overfit (its gap is "
        f"under {100 * A.SMALL_GAP:.0f} points). `{S.BUDGET_LIMITED}` = the effect shrinks to under "
        f"{A.BUDGET_SHRINK:.0%} of its size (or changes sign) on a longer budget of the same net: the verdict at "
        "the short budget is about the budget."))
    rows = []
    for comp in an.comparisons:
        for r in comp.rows:
            p = ("-" if r.withheld or r.role == "none" else fmt_p(r.p_adj) if r.role == "primary"
                 else f"({fmt_p(r.p)})")
            paper = f"{comp.claim.section}: {r.claimed_text}"
            rows.append([code(comp.name), r.label, paper, measured_text(r, True), level_text(r), p, mde_text(r),
                         seeds_text(r), r.direction_verdict, r.magnitude, verdict_text(r)])
        if not comp.rows:
            rows.append([code(comp.name), "-", comp.claim.section, "n/a", "-", "n/a", "n/a", "n/a",
                         S.NOT_MEASURABLE, S.NOT_MEASURABLE, S.NOT_MEASURABLE])
    blocks.append(D.Table(
        ["Ablation", "Metric", "Paper", "Measured [CI]", "CI level", "p (adj.)", "MDE", "Seeds for paper",
         "Direction", "Size", "Verdict"], rows, ["l", "l", "l", "r", "l", "r", "r", "r", "l", "l", "l"],
        caption="Measured: the delta (points) or ratio with the interval the test uses; \"(images)\" marks the "
                "image bootstrap, \"at least\" a ratio bounded by censored runs."))

    blocks.append(D.Heading(3, "The paper's claims"))
    items = []
    for comp in an.comparisons:
        c = comp.claim
        where = f"the paper measured it on {c.setting}" + (f", here on {comp.dataset}" if comp.dataset else "")
        item = (f"{code(comp.name)} ({c.section}; {where}): \"{c.text}\" "
                f"Variant: {comp.ablation.description}.")
        if c.bound == "at least":
            item += " The paper states a lower bound, so it is compared as one."
        if c.caveat:
            item += f" **{c.caveat}**"
        items.append(item)
    blocks.append(D.Bullets(items))

    blocks.append(D.Heading(3, "Arms compared"))
    arm_rows = []
    for comp in an.comparisons:
        p = comp.pair
        arm = lambda g: f"{g.label} @ {g.fingerprint} (seeds {', '.join(map(str, g.seeds))})" if g else "none"  # noqa: E731
        if comp.ablation.kind == "eval":
            diff = "same runs, evaluated two ways"
        elif p.base is None or p.variant is None:
            diff = "-"
        else:
            diff = "; ".join(f"{k}: {x} -> {y}" for k, (x, y) in p.diff.items()) or "none (!)"
            if p.unexpected:
                diff += " (!) differs beyond the ablation"
        arm_rows.append([code(comp.name), arm(p.base), arm(p.variant), diff])
    blocks.append(D.Table(["Ablation", "Baseline arm", "Variant arm", "Configuration difference"],
                          arm_rows, caption="Arms are chosen so that their configurations differ exactly "
                          "by the ablation (Figure 1 arms may also differ in learning rate, chosen per "
                          "activation as in §3.1)."))
    notes = list(an.notes)
    notes += [f"{code(c.name)}: {n}" for c in an.comparisons for n in c.notes]
    notes += [f"{code(c.name)} {r.metric}: {n}" for c in an.comparisons for r in c.rows for n in r.notes]
    notes += [f"{code(c.name)} {r.metric}: {r.verdict}: {r.withheld_why}" for c in an.comparisons for r in c.rows
              if r.withheld and r.withheld_why and r.verdict == r.withheld]
    if notes:
        blocks.append(D.Heading(3, "Notes"))
        blocks.append(D.Bullets(notes))
    return blocks


def _ep(values: list) -> str:
    m, sd, n = S.mean_sd(values)
    return "n/a" if n == 0 else (f"{m:.1f} ± {sd:.1f}" if n >= 2 else f"{m:.1f} (n=1)")


def _overfitting(an: A.PresetAnalysis) -> list:
    blocks = [D.Heading(2, "3. Overfitting")]
    if not an.overfitting:
        return blocks + [D.Para("No finished runs of the baseline, `no_crop_flip` or `no_dropout` arms.")]
    rows = []
    for o in an.overfitting:
        rows.append([code(o.arm), code(o.group.fingerprint), str(len(o.gap)), mean_sd_pct(o.train_clean),
                     mean_sd_pct(o.train_aug), mean_sd_pct(o.val), mean_sd_pct(o.gap)])
    blocks.append(D.Table(
        ["Arm", "Fingerprint", "n", "Train top-1 err (clean)", "Train top-1 err (augmented, last epoch)",
         "Val top-1 err", "Gap (val - clean train)"], rows, ["l", "l", "r", "r", "r", "r", "r"],
        caption="Train (clean): training images, centre crop, inference mode (no dropout). "
                "A larger gap is more overfitting; the gap deltas and their intervals are in the main table."))
    if an.overfitting[0].group.flat.get("model.dropout") == 0:
        blocks.append(D.Para("This preset's baseline has no dropout (model.dropout = 0), so no_dropout "
                             "does not apply to it."))
    return blocks


def _figure(fig: Optional[F.FigureFile], out_dir: Path, caption: str):
    if fig is None:
        return None
    return D.Figure(fig.path, str(fig.path.relative_to(out_dir)), caption, fig.width_in, fig.height_in)


def _figures(an: A.PresetAnalysis, out_dir: Path, figs: list) -> list:
    p = an.preset
    fdir = out_dir / "figures"
    blocks = [D.Heading(2, "4. Figures")]
    f = F.learning_curves(an.comparisons, fdir / f"{p}_learning_curves.png", f"{p}: validation top-1 error")
    blocks.append(_figure(f, out_dir, f"Learning curves ({p}): validation top-1 error (centre crop) per "
                          "epoch, baseline solid, variant dashed; band = ±1 sd over seeds (thin lines: single seeds, "
                          "where runs of an arm have different lengths)."))
    rows = [r for c in an.comparisons for r in c.rows if r.metric in ("top-1", "top-5", "gap", "early")]
    f2 = F.delta_chart(rows, fdir / f"{p}_deltas.png", f"{p}: variant - baseline")
    blocks.append(_figure(f2, out_dir, f"Measured deltas ({p}) with the interval each test uses (thick; its "
                          "level in section 2) and the 95% interval over validation images (thin); x = the paper's "
                          "claimed delta. The axis shows effects of "
                          f"a few points: what lies beyond ±{F.DELTA_CLIP:g} points is drawn at its edge as a "
                          "triangle, with the value written."))
    bg = an.baseline_group()
    kernels, src = None, None
    for r in (bg.counted if bg else []):
        kernels = r.conv1_kernels()
        if kernels:
            src = r
            break
    f3 = None
    if kernels:
        f3 = F.conv1_grid(kernels, fdir / f"{p}_conv1.png",
                          f"conv1 kernels, {p} baseline seed {src.seed} (each kernel scaled to [0, 1])")
    blocks.append(_figure(f3, out_dir, f"conv1 kernels of one baseline run ({p}, seed {src.seed if src else '-'}), "
                          "like the paper's Fig. 3: tower a on top, tower b below."))
    f4 = None
    if an.fig1 is not None:
        f4 = F.figure1(an.fig1, fdir / f"{p}_figure1.png",
                       f"Figure 1 ({p}): {an.fig1.ablation.description.split(': ', 1)[-1]}")
    figs.extend(x for x in (f, f2, f3, f4) if x is not None)
    if an.fig1 is not None:
        blocks += _fig1_blocks(an, out_dir, f4)
    if len([b for b in blocks if b is not None]) == 1:
        blocks.append(D.Para("Nothing to plot yet."))
    return blocks


def _fig1_blocks(an: A.PresetAnalysis, out_dir: Path, fig) -> list:
    f1 = an.fig1
    blocks = [D.Heading(3, f"Figure 1: ReLU vs tanh ({code(f1.ablation.name)})")]
    blocks.append(_figure(fig, out_dir, f"Training error vs epochs: ReLU solid, tanh dashed, "
                          f"{f1.target:.0%} target dotted (cf. the paper's Figure 1). Thin lines: single seeds; thick "
                          "line and band: mean ± 1 sd over seeds, drawn over the epochs every seed ran "
                          "(runs stop at the target)."))
    rows = []
    for arm, ttt, lr, key in (("ReLU", f1.base_ttt, f1.base_lr, "relu"), ("tanh", f1.variant_ttt, f1.variant_lr, "tanh")):
        m, sd, n = S.mean_sd([t.bound for t in ttt.values()])
        walls = list(f1.arm_walls.get(key, {}).values())
        wm, wsd, _ = S.mean_sd(walls)
        rows.append([arm, num(lr, "{:g}"), str(n),
                     "n/a" if n == 0 else (f"{m:.1f} ± {sd:.1f}" if n >= 2 else f"{m:.1f}"),
                     ", ".join(f"s{s}: {t}" for s, t in sorted(ttt.items())) or "n/a",
                     "n/a" if not walls else (f"{wm:.0f} ± {wsd:.0f}" if len(walls) >= 2 else f"{wm:.0f}")
                     + (f" (n = {len(walls)})" if walls and len(walls) != n else "")])
    blocks.append(D.Table(["Activation", "lr", "n", f"Epochs to {f1.target:.0%} (mean ± sd)", "Per seed",
                           "Wall time to target (s)"], rows, ["l", "r", "r", "r", "l", "r"],
                          caption=f"Wall times: the runs on {f1.wall_device}." if f1.wall_device else ""))
    r = f1.ratio
    row = next((x for c in an.comparisons for x in c.rows if x.metric == "epochs"), None)
    if r is not None and row is not None:
        claim = f1.ablation.claim(an.preset)
        at_least = "at least " if row.lower_bound_only else ""
        cmp6 = f"size: {row.magnitude}"
        if claim.ratio and row.verdict == S.NOT_MEASURABLE:
            cmp6 = f"not measurable here, so no comparison with the paper's x{claim.ratio:g}"
        elif claim.ratio and row.lower_bound_only and row.magnitude == S.MAG_LARGER:
            cmp6 = (f"even as a lower bound the interval lies above the paper's x{claim.ratio:g}: tanh is slower "
                    "here, relative to ReLU, than in the paper")
        elif claim.ratio and row.lower_bound_only:
            cmp6 = (f"censored tanh runs make the ratio a lower bound, so the paper's x{claim.ratio:g} cannot "
                    "be ruled out above the interval; run those seeds longer to resolve it")
        elif claim.ratio and row.magnitude == S.MAG_UNDERPOWERED:
            cmp6 = (f"the paper's x{claim.ratio:g} is inside the interval, but below the detectable ratio "
                    f"({mde_text(row)}): no evidence either way")
        elif claim.ratio:
            cmp6 = {S.MAG_INSIDE: f"the paper's x{claim.ratio:g} lies inside the interval",
                    S.MAG_SMALLER: f"the paper's x{claim.ratio:g} lies above the interval (a smaller speed-up)",
                    S.MAG_LARGER: f"the paper's x{claim.ratio:g} lies below the interval (tanh is slower here)",
                    }.get(row.magnitude, cmp6)
        spread = f"per-seed ratios {r.mean:.2f} ± {r.sd:.2f}" if math.isfinite(r.sd) else "per-seed ratios n/a"
        wall = ""
        if f1.wall_ratio is not None and math.isfinite(f1.wall_ratio.estimate):
            w = f1.wall_ratio
            on = f", runs on {f1.wall_device}" if f1.wall_device else ""
            wall = (f" Wall-time ratio (tanh / ReLU, time to target{on}): {at_least}x{w.estimate:.2f}"
                    + (f", 95% CI [x{w.lo:.2f}, x{w.hi:.2f}]." if w.ok else "."))
        blocks.append(D.Para(
            f"Epochs to {f1.target:.0%} training error, tanh / ReLU: {at_least}x{r.estimate:.2f} (geometric mean, "
            f"{spread}), 95% CI " + (f"[x{r.lo:.2f}, x{r.hi:.2f}]" if r.ok else "n/a")
            + f" ({r.method} on log epochs, n = {r.n}"
            + (", a lower bound: censored tanh runs count the epochs they ran" if row.lower_bound_only else "")
            + f"). Direction (adjusted p {fmt_p(row.p_adj)}): {row.direction_verdict}; verdict: "
            f"**{verdict_text(row)}**. Against the paper: {cmp6}.{wall}"))
    if f1.rules:
        rng = f1.rule_range
        blocks.append(D.Para(
            "How the epochs are counted moves the ratio more than its interval over seeds suggests, so the "
            "ratio is given under each counting rule; the range over rules"
            + (f" is **{_ratio(rng[0])} to {_ratio(rng[1])}**" if rng else " is not available")
            + (f" (the paper: x{f1.ablation.claim(an.preset).ratio:g})" if f1.ablation.claim(an.preset).ratio else "")
            + ". The test above uses whole epochs; the selection seed's runs were picked for being fastest, so "
            "they stay out of the test."))
        rule_rows = []
        for rule in f1.rules:
            ci = rule.ci
            rule_rows.append([rule.name, _ratio(rule.estimate),
                              f"[{_ratio(ci.lo)}, {_ratio(ci.hi)}]" if ci is not None and ci.ok else "n/a",
                              str(rule.n),
                              ", ".join(f"s{s}: {_epochs_pair(b, v)}" for s, (b, v) in sorted(rule.per_seed.items()))])
        blocks.append(D.Table(["Counting rule", "tanh / ReLU", "95% CI (seeds)", "Pairs", "Per seed (ReLU, tanh)"],
                              rule_rows, ["l", "r", "r", "r", "l"],
                              caption="Fractional crossings: the training-error curve taken as linear within each "
                                      "epoch, starting from chance before the first."))
    # The learning-rate grid.
    lrs = sorted({c.lr for cells in f1.grid.values() for c in cells})
    if lrs:
        by = {arm: {c.lr: c for c in cells} for arm, cells in f1.grid.items()}
        # Seconds compare on one device only: a grid run's wall time from another one
        # (or none recorded) is marked, and the device named below the table.
        devs = [A.run_device(c.run) for cells in f1.grid.values() for c in cells if c.wall_s is not None]
        ref = f1.wall_device or (max(set(devs) - {None}, key=devs.count) if set(devs) - {None} else None)
        elsewhere: set = set()

        def wall_text(c) -> str:
            dev = A.run_device(c.run)
            if ref is None or c.wall_s is None or dev == ref:
                return num(c.wall_s, "{:.0f}")
            elsewhere.add(dev or "a device not recorded")
            return num(c.wall_s, "{:.0f}") + "*"

        grid_rows = []
        for lr in lrs:
            row_ = [f"{lr:g}"]
            for arm, chosen in (("relu", f1.base_lr), ("tanh", f1.variant_lr)):
                c = by.get(arm, {}).get(lr)
                mark = " (chosen)" if chosen is not None and math.isclose(lr, chosen) else ""
                if c is None or c.ttt is None:
                    # No cell: a rate only the other arm's grid grew to (an edge extension).
                    row_ += [(c.status if c else "-") + mark, "n/a" if c else "-"]
                elif c.censored and not c.ttt.reached:
                    row_ += [f"> {c.ttt.observed} (stopped: could not beat the fastest rate)" + mark,
                             wall_text(c)]
                else:
                    row_ += [str(c.ttt) + mark, wall_text(c)]
            grid_rows.append(row_)
        blocks.append(D.Table(["lr", f"ReLU: epochs to {f1.target:.0%}", "ReLU: wall s",
                               f"tanh: epochs to {f1.target:.0%}", "tanh: wall s"], grid_rows,
                              ["r", "l", "r", "l", "r"],
                              caption=f"Learning-rate grid (one run per rate and activation, on selection seed "
                                      f"{REG.GRID_SEED}, apart from the measured ones); (chosen) marks the rate the "
                                      "seeded runs above used. §3.1: the rates were chosen independently per network "
                                      "to make training as fast as possible. A grid run stops once it can no longer "
                                      "beat the fastest rate (> N: stopped after N epochs); - : not in that arm's grid."
                                      + (f" Wall s on {ref}; * on {', '.join(sorted(elsewhere))}, not comparable."
                                         if elsewhere else "")))
    if f1.notes:
        blocks.append(D.Bullets(list(f1.notes)))
    return blocks


def _epochs_pair(b: float, v: float) -> str:
    fmt = lambda x: f"{x:g}" if float(x).is_integer() else f"{x:.2f}"  # noqa: E731
    return f"({fmt(b)}, {fmt(v)})"


def _published(an: A.PresetAnalysis) -> list:
    blocks = [D.Heading(2, "5. Published numbers for comparison")]
    rows = []
    head = PAPER_HEADLINE.get(an.preset)
    bg = an.baseline_group()
    ref = (bg.counted or bg.runs)[0] if bg is not None and (bg.counted or bg.runs) else None
    if head is not None:
        where, setting, top1, top5 = head
        t1 = A.result_values(bg, "val_top1_err")
        t5 = A.result_values(bg, "val_top5_err")
        paper = pct(top1, 1) + (f" / {pct(top5, 1)}" if top5 is not None else "") + f" ({where}, {setting})"
        ours = mean_sd_pct(t1) + (f" / {mean_sd_pct(t5)}" if top5 is not None else "")
        name = "baseline error, top-1" + (" / top-5" if top5 is not None else "") + " (%)"
        rows.append([name, paper, "-", ours, C.setting_match(ref, setting) + "; see the preset's schedule"])
    for comp in an.comparisons:
        c = comp.claim
        if c.metric != "error" or (c.top1 is None and comp.name not in MISHKIN):
            continue
        top1 = next((r for r in comp.rows if r.metric == "top-1"), None)
        ours = "n/a"
        if top1 is not None and math.isfinite(top1.seed_ci.estimate):
            ours = pts(top1.seed_ci.estimate) + (f" {ci_pts(top1.seed_ci)}" if top1.seed_ci.ok
                                                 else f" (no CI: {top1.seed_ci.reason})")
            if top1.unmeasurable == "baseline at chance":
                ours += "; not measurable: baseline at chance"
        paper = (f"{c.top1:+.1f}" + (" or more" if c.bound == "at least" else "")
                 + (f" / {c.top5:+.1f}" if c.top5 is not None else "")
                 + f" ({c.section}, {c.setting})") if c.top1 is not None else f"qualitative ({c.section})"
        mk = MISHKIN.get(comp.name)
        mtext = f"{mk[0]} (= {mk[1]:+.1f} points of top-1 error)" if mk else "-"
        setting = comp.setting + (f". {c.caveat}" if c.caveat else "")
        rows.append([f"{code(comp.name)} top-1 delta (points of error)", paper, mtext, ours, setting])
    blocks.append(D.Table(["Quantity", "Krizhevsky et al. 2012", "Mishkin et al. 2016", f"This report ({an.preset})",
                           "Setting matches?"], rows, ["l", "l", "l", "r", "l"],
                          caption="Deltas are variant - baseline in points of top-1 error, ours with the 95% CI "
                                  "over seeds. Setting: decided from each run's recorded data source (TFDS name, "
                                  "local files identified by hash only, or synthetic data), not the preset's name."))
    blocks.append(D.Para(
        f"Mishkin et al.: {MISHKIN_CITE}. Their numbers are top-1 accuracies, shown here also as a "
        "difference in points of error. ImageNet at 128 px is closest to the imagenette presets' resolution "
        "but has 1000 classes, so no preset here matches their setting exactly. Krizhevsky et al.'s deltas "
        "are from the sections cited; their ten-view numbers are on ILSVRC-2010 test (§6)."))
    return blocks


def _commands(an: A.PresetAnalysis, report_cmd: str) -> list:
    seen, lines = set(), []
    sources = {str(r.config.get("data", {}).get("source", "")) for r in an.runs}
    for r in sorted(an.runs, key=lambda r: (r.label, r.seed, str(r.path))):
        c = C.portable(command_text(r.meta.get("command")), sources)
        if c and c not in seen:
            seen.add(c)
            lines.append(c)
    return [D.Heading(2, "6. Commands"),
            D.Para("The commands recorded in the runs (deduplicated), then the command that built this report. "
                   "Paths are shown relative to the repository, data files by name (their digest is in section 1), "
                   "other folders by their last name."),
            D.Code(lines or ["(no command recorded in the runs)"]), D.Code([C.portable(report_cmd, sources)])]


def _completeness(an: A.PresetAnalysis, root) -> list:
    blocks = [D.Heading(2, "7. Completeness")]
    if an.missing:
        blocks.append(D.Para(f"Runs the ablations of this preset need but that are absent or did not finish "
                             f"(seeds expected per arm: those seen for the baseline, or 0, 1, 2 by default: here "
                             f"{', '.join(map(str, an.expected_seeds))}; an ablation with a baseline arm of its own, "
                             "such as Figure 1, also expects the seeds either of its arms has):"))
        blocks.append(D.Table(["Label", "Seed", "Status"],
                              [[code(lab), str(s), st] for lab, s, st in an.missing], ["l", "r", "l"]))
    else:
        blocks.append(D.Para("Every run the ablations of this preset need has finished."))
    if an.not_counted:
        blocks.append(D.Heading(3, "Runs not counted (failed or unfinished)"))
        blocks.append(D.Table(["Label", "Seed", "Fingerprint", "Status", "Path"],
                              [[code(r.label), str(r.seed), code(C.fingerprint(r)), C.run_status(r),
                                code(C.relpath(r.path, root))] for r in an.not_counted],
                              ["l", "r", "l", "l", "l"], caption="Listed, never averaged in."))
    if an.superseded:
        blocks.append(D.Heading(3, "Superseded configurations"))
        rows = []
        for g, diff in an.superseded:
            d = "; ".join(f"{k}: {y} (used: {x})" for k, (x, y) in diff.items()) or "-"
            rows.append([code(g.label), code(g.fingerprint), f"{len(g.counted)}/{len(g.runs)}",
                         g.latest[:19] or "n/a", d])
        blocks.append(D.Table(["Label", "Fingerprint", "Finished/all", "Latest", "Differs from the group used by"],
                              rows, ["l", "l", "r", "l", "l"],
                              caption="Other configurations of the same labels; not in the tables above."))
    return blocks


def _summary(an: A.PresetAnalysis) -> D.Para:
    counts = Counter(r.verdict for c in an.comparisons for r in c.rows if r.role == "primary")
    parts = [f"{v}: {n}" for v, n in sorted(counts.items(), key=lambda kv: S.VERDICTS.index(kv[0])
                                            if kv[0] in S.VERDICTS else 99)]
    n_done = sum(1 for r in an.runs if C.is_counted(r))
    return D.Para(f"{len(an.runs)} runs ({n_done} finished), {len(an.comparisons)} ablations. Verdicts over "
                  f"the claims: {'; '.join(parts) or 'none'}. Missing or unfinished: "
                  f"{len(an.missing)} (section 7).")


def fig1_range_text(an: A.PresetAnalysis) -> str:
    """Figure 1's ratio as a range over counting rules, e.g. "x5.40-x6.41 over 4 counting rules"."""
    f1 = an.fig1
    rng = f1.rule_range if f1 is not None else None
    if rng is None or len(f1.rules) < 2:
        return ""
    return f"{_ratio(rng[0])}-{_ratio(rng[1])} over {len(f1.rules)} counting rules"


def _summary_table(analyses: dict, unrun: Optional[dict] = None) -> list:
    """The table a reader takes in at a glance: one row per tested claim of each
    preset, claims measured at the paper's own scale (Figure 1) first. Claims
    with an arm that has no finished run, and rows where the paper makes no
    claim, are listed in one line each below the table. With `unrun` (a dict),
    the never-run claims are returned there instead, preset -> names (the
    README's short form)."""
    own_scale, rows, no_claim, never = [], [], [], {}
    for p, an in analyses.items():
        bg = an.baseline_group()
        ref = (bg.counted or bg.runs)[0] if bg is not None and (bg.counted or bg.runs) else None
        if ref is None:  # no baseline runs (a preset run for Figure 1 only): any arm names the data
            ref = next((g.counted[0] for comp in an.comparisons for g in (comp.pair.base, comp.pair.variant)
                        if g is not None and g.counted), None)
        data = C.dataset_name(ref) if ref is not None else "no runs"
        for comp in an.comparisons:
            r = comp.primary or next(iter(comp.rows), None)
            c = comp.claim
            if r is None or not r.base or not r.variant:
                never.setdefault(p, []).append(comp.name)
                continue
            if r.role == "none":
                no_claim.append(f"{code(comp.name)} ({p}): {measured_text(r, True)}")
                continue
            paper = r.claimed_text + ("" if r.is_ratio else " pts")
            measured = measured_text(r, True)
            if r.is_ratio and fig1_range_text(an):
                measured = f"{measured}; {fig1_range_text(an)}"
            note = "; ".join(x for x in (_caveat_tag(c), *comp.tags, r.unmeasurable if r.role != "none" else "",
                                         r.fragile and "fragile: paired and Welch tests disagree")
                             if x)
            row = [f"{p} ({data})", f"{code(comp.name)} {c.section}, {r.label}", paper, measured,
                   level_text(r), verdict_text(r), note]
            at_paper_scale = r.is_ratio or comp.setting.startswith("yes") or c.setting.startswith("CIFAR-10")
            (own_scale if at_paper_scale else rows).append(row)
    blocks = []
    if own_scale or rows:
        blocks.append(D.Table(
            ["Preset (data)", "Claim, metric", "Paper", "Measured [CI]", "CI level", "Verdict", "Note"],
            own_scale + rows, ["l", "l", "l", "r", "l", "l", "l"],
            caption=f"One row per tested claim, those at the paper's own scale (Figure 1, CIFAR-10) first: its "
                    f"primary metric, variant - baseline in points of error (a ratio for Figure 1, with its range "
                    f"over counting rules). Verdicts after {A.MULTIPLICITY}. `reproduced` needs the claimed sign "
                    "significant and the paper's size inside an adequately powered interval (or no size "
                    "claimed); withheld verdicts (collapsed, confounded, not testable) give no test. See each "
                    "preset's section 2 for the tests, detectable effects and notes."))
    if no_claim:
        blocks.append(D.Para("No claim in the paper (measured, not tested): " + "; ".join(no_claim) + "."))
    if never:
        if unrun is not None:
            unrun.update(never)
        else:
            blocks.append(D.Para("Not measured yet (an arm has no finished run): " + "; ".join(
                f"`{p}`: " + ", ".join(code(n) for n in names) for p, names in never.items()) + "."))
    if not blocks:
        return []
    return [D.Heading(1, "Summary"), *blocks]


README_BEGIN = "<!-- results: written by `make publish` (python -m reports --readme) from results/; do not edit -->"
README_END = "<!-- /results -->"


def _provenance(an: A.PresetAnalysis) -> str:
    """One line: where a preset's numbers come from."""
    runs = [r for r in an.runs if C.is_counted(r)]
    if not runs:
        return f"`{an.preset}`: no finished runs."
    bg = an.baseline_group()
    ref = (bg.counted or bg.runs)[0] if bg is not None and (bg.counted or bg.runs) else runs[0]
    wall = sum(float(r.result.get("wall_time_s") or 0) for r in runs)
    dates = sorted((C.run_date(r)[:10] for r in runs if C.run_date(r)))
    precisions = distinct(r.result.get("precision") or r.env.get("precision") for r in runs)
    return (f"`{an.preset}`: {C.dataset_name(ref)}; {len(runs)} finished run{'s' if len(runs) != 1 else ''}, seeds "
            f"{', '.join(map(str, sorted({r.seed for r in runs})))}; "
            f"{distinct(str(r.env.get('device')) for r in runs)}, "
            f"{distinct(r.env.get('backend') for r in runs)}, {precisions}; "
            f"{duration(wall)} of training and evaluation; "
            + (dates[0] if dates and dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}" if dates else "undated")
            + ".")


def update_readme(readme: Path, report: "Report", report_link: str) -> bool:
    """Replace the block between README_BEGIN and README_END in `readme` with the
    report's summary table and where its numbers come from; False if the file has
    no such block (nothing is written then)."""
    text = Path(readme).read_text()
    if README_BEGIN not in text or README_END not in text:
        return False
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    doc = D.Document("")
    unrun: dict = {}
    table = _summary_table(report.analyses, unrun)
    if table:
        doc.add(*table[1:])  # without its heading: the README has its own
    else:
        doc.add(D.Para("No claim has finished runs in both arms yet."))
    if unrun:
        doc.add(D.Para("Not measured yet (an arm has no finished run): " + "; ".join(
            f"`{p}`: " + ", ".join(code(n) for n in names) for p, names in unrun.items()) + "."))
    doc.add(D.Bullets([_provenance(an) for an in report.analyses.values()]))
    doc.add(D.Para(f"The whole report: [{report_link}/report.md]({report_link}/report.md) "
                   f"([PDF]({report_link}/report.pdf)); per-run and per-claim tables: "
                   f"[runs.csv]({report_link}/runs.csv), [claims.csv]({report_link}/claims.csv)."))
    body = D.to_markdown(doc).strip()
    body = body.split("\n", 1)[1].strip() if body.startswith("# ") or body.startswith("#\n") else body
    atomic = Path(readme).with_name(f".{Path(readme).name}.tmp")
    atomic.write_text(head + README_BEGIN + "\n" + body + "\n" + README_END + tail)
    os.replace(atomic, readme)
    return True


def _damaged(damaged: list, root) -> list:
    if not damaged:
        return []
    rows = [[code(C.relpath(e.path, root)), e.problem] for e in damaged]
    return [D.Heading(1, "Damaged runs (skipped)"),
            D.Para(f"{len(damaged)} run(s) could not be read and are left out of everything below. Fix: "
                   f"{R.RunFileError.FIX}, then build the report again."),
            D.Table(["File", "What is wrong"], rows, ["l", "l"])]


def _odd(grouped: dict, root) -> list:
    odd = C.odd_runs(grouped)
    if not odd:
        return []
    rows = [[code(C.relpath(r.path, root)), "; ".join(o)] for r, o in odd]
    return [D.Heading(1, "Runs written by other code (used, check them)"),
            D.Para(f"{len(odd)} run(s) hold what this code does not expect. They are counted as usual, but a "
                   "configuration with unknown keys is grouped by the fingerprint it recorded and not compared "
                   "key by key, and non-finite results are left out of the comparisons."),
            D.Table(["Run", "What is odd"], rows, ["l", "l"])]


def _bench(root: Path) -> list:
    p = Path(root) / "bench.json"
    if not p.exists():
        return []
    blocks = [D.Heading(1, "Throughput benchmark (bench.json)")]
    try:
        from reproduce import benchfile  # the owner of bench.json's format

        items = benchfile.read(p).table()
        cols = []
        for it in items:
            for k, v in it.items():
                if k not in cols and (v is None or isinstance(v, (str, int, float, bool))):
                    cols.append(k)
        cols = sorted(cols, key=lambda k: (k != "name", "image" not in k.lower(), cols.index(k)))[:9]
        if not items or not cols:
            return blocks + [D.Para("bench.json holds no table of results.")]

        def fmt(v):
            return f"{v:.1f}" if isinstance(v, float) else ("" if v is None else str(v))

        blocks.append(D.Table(cols, [[fmt(it.get(k)) for k in cols] for it in items]))
    except Exception as e:  # tolerant by design: a bad bench file must not break the report
        blocks.append(D.Para(f"bench.json could not be read: {type(e).__name__}: {e}"))
    return blocks


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def build_report(runs_root=None, out_dir=None, preset: Optional[str] = None,
                 command: Optional[str] = None) -> Report:
    """Write report.md, report.pdf, figures/*.png, runs.csv and claims.csv for the
    runs under `runs_root`.

    runs_root: default `reproduce.runs.default_root()`, which must exist; out_dir:
    default `<runs_root>/report`; preset: only this preset's section (it is written
    even with no runs, listing what is missing). A run with a damaged file is
    skipped and listed. The output folder is built aside and swapped in whole, so
    a reader never sees a report.md from one build beside a report.pdf from
    another. Returns a `Report` with the paths, the per-preset analyses and the
    damaged runs. Raises `ReportError` for a missing runs folder or an output
    folder that cannot be written.
    """
    # An empty --runs or --out (RUNS= with make) is unset, not the current folder.
    root = Path(runs_root) if runs_root not in (None, "") else R.default_root()
    if not root.is_dir():
        raise ReportError(f"runs folder {root} " + ("is not a folder" if root.exists() else "does not exist")
                          + ": pass the folder holding the run directories with --runs (or $REPRODUCE_RUNS)")
    out = Path(out_dir) if out_dir not in (None, "") else root / "report"
    _check_out(out)
    if command is None:
        command = f"python -m reports --runs {shlex.quote(str(root))} --out {shlex.quote(str(out))}" + (
            f" --preset {preset}" if preset else "")
    damaged: list = []
    grouped = C.load(root, damaged)
    presets = [preset] if preset else C.preset_order(grouped)
    analyses = {p: A.analyze_preset(p, grouped.get(p, {}), root) for p in presets if grouped.get(p) or preset}
    # The budget rule compares a preset with the others of its series: they are
    # analysed too when one preset's report is asked for, so its verdicts do not
    # depend on which presets are built.
    series = {q for ser in REG.BUDGET_SERIES if set(ser) & set(analyses) for q in ser}
    beside = {q: A.analyze_preset(q, grouped[q], root) for q in series - set(analyses) if grouped.get(q)}
    A.budget_limits({**analyses, **beside})

    build = _new_folder(out)
    held = _hold(build)  # until the swap: a concurrent build does not take it for stale
    try:
        _remove_stale(out)
        report = _write(build, root, command, preset, grouped, analyses, damaged)
        _swap_in(build, out)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    finally:
        os.close(held)
    report.out_dir, report.markdown, report.pdf = out, out / "report.md", out / "report.pdf"
    report.runs_csv, report.claims_csv = out / "runs.csv", out / "claims.csv"
    report.figures = [F.FigureFile(out / f.path.relative_to(build), f.width_in, f.height_in) for f in report.figures]
    return report


def _write(build: Path, root: Path, command: str, preset, grouped: dict, analyses: dict, damaged: list) -> Report:
    doc = D.Document(TITLE)
    report = Report(build, build / "report.md", build / "report.pdf", document=doc, analyses=analyses,
                    damaged=damaged)
    doc.add(D.Para(f"Runs root: {code(C.portable(str(root)))}. Built by {code(C.portable(command))} from the run "
                   "directories alone "
                   "(results, metrics, per-image correctness and kernels); it loads no training code. "
                   "Tables for pandas: `runs.csv` (one row per run) and `claims.csv` (one row per claim and metric) "
                   "beside this file."))
    if not grouped:
        doc.add(D.Para(f"No runs found under {code(C.portable(str(root)))} (no run directory with config.json)."))
    elif preset and preset not in grouped:
        doc.add(D.Para(f"No runs of preset {code(preset)} under {code(C.portable(str(root)))}; presets present: "
                       f"{', '.join(code(p) for p in C.preset_order(grouped))}."))
    doc.add(*_summary_table(analyses))
    doc.add(*_damaged(damaged, root))
    doc.add(*_odd(grouped, root))
    if len(analyses) > 1:
        doc.add(D.Para("Presets in this report (one section each): " + ", ".join(code(p) for p in analyses) + "."))
    for p, an in analyses.items():
        doc.add(D.Heading(1, f"Preset {p}"))
        if not an.labels:
            doc.add(D.Para("No runs of this preset yet."))
        doc.add(_summary(an))
        doc.add(*_what_was_run(an))
        doc.add(*_main_table(an))
        doc.add(*_overfitting(an))
        doc.add(*_figures(an, build, report.figures))
        doc.add(*_published(an))
        doc.add(*_commands(an, command))
        doc.add(*_completeness(an, root))
    doc.add(*_bench(root))
    report.markdown.write_text(D.to_markdown(doc))
    D.to_pdf(doc, report.pdf)
    E.write_csvs(build, analyses, damaged, root)
    return report


# --------------------------------------------------------------------------------------
# The output folder, replaced as a whole
# --------------------------------------------------------------------------------------


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ReportError(f"report folder {out} is a file, not a folder: choose another with --out")


def _shared(out: Path) -> bool:
    """`out` also holds other things (a published store: results/ keeps its runs
    beside report.md): only the report's own entries are replaced there."""
    return out.is_dir() and any(p.name not in PRODUCTS and not p.name.startswith(".")
                                for p in out.iterdir())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _new_folder(out: Path) -> Path:
    """An empty folder beside `out` (same file system, so it can be renamed onto it)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
        os.chmod(build, 0o777 & ~_umask())  # mkdtemp makes it private; the report is for every reader
        return build
    except OSError as e:
        raise ReportError(f"cannot write the report beside {out}: {e.strerror or e} ({e.filename or out.parent}); "
                          "choose a writable folder with --out") from None


def _hold(folder: Path) -> int:
    """An open descriptor of `folder` with an exclusive flock on it (kept across the
    renames of the swap: a lock belongs to the folder, not its name); the kernel
    drops it when the build ends, however it ends."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pass  # no locks on this file system: then stale folders are left, never a live one removed
    return fd


def _remove_stale(out: Path) -> list:
    """Remove the build folders (".<out>.new-*", ".<out>.old-*") that a killed build
    left beside `out`; a folder a running build holds (`_hold`) is left alone.
    Returns the folders removed."""
    removed = []
    for p in sorted(out.parent.glob(f".{out.name}.new-*")) + sorted(out.parent.glob(f".{out.name}.old-*")):
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # held: a build in progress (or no locks here: left, to be safe)
        finally:
            os.close(fd)
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0


def _place_entries(build: Path, out: Path) -> None:
    """Move each finished product of `build` onto its name in `out`, every file
    complete before the first is replaced; report.md and report.pdf are replaced
    one right after the other, last."""
    names = sorted(p.name for p in build.iterdir())
    order = [n for n in names if n not in ("report.md", "report.pdf")] + [
        n for n in ("report.md", "report.pdf") if n in names]
    for name in order:
        src, dst = build / name, out / name
        if src.is_dir() and dst.is_dir():
            if _exchange(src, dst):
                continue  # src now holds the old folder, removed with `build`
            shutil.rmtree(dst)
        os.replace(src, dst)
    shutil.rmtree(build, ignore_errors=True)


def _swap_in(build: Path, out: Path) -> None:
    """Put the finished folder `build` in place of `out`: one atomic exchange where
    the system has it, else two renames (in between, `out` is briefly absent:
    still never a mix of two builds)."""
    try:
        if _shared(out):
            _place_entries(build, out)
        elif not out.exists():
            os.rename(build, out)
        elif _exchange(build, out):
            shutil.rmtree(build)  # now the previous report
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            held = _hold(old)
            try:
                os.rename(out, old / "report")
                os.rename(build, out)
                shutil.rmtree(old)
            finally:
                os.close(held)
    except OSError as e:
        raise ReportError(f"cannot replace the report folder {out}: {e.strerror or e}; choose a writable "
                          "folder with --out") from None
