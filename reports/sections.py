"""The report's sections, as `reports.document` blocks: the summary table, the
damaged and odd runs, and for each preset what was run, the claims and their
tests, overfitting, figures, published numbers, commands and completeness.

Numbers are written by `reports.text`; each ablation's kind adds its own rows and
figures (`ablations.kinds`). `reports.report` puts the sections in order.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

from ablations.kinds import kind_of
from reports import analysis, collect, document, figures, stats
from reports.text import (
    ci_pts,
    code,
    command_text,
    distinct,
    duration,
    figure_block,
    fmt_p,
    level_text,
    mde_text,
    mean_sd_pct,
    measured_text,
    n_text,
    pct,
    pts,
    ratio,
    seeds_text,
    verdict_text,
)
from reproduce import runs
from reproduce.config import PRESETS

# Published numbers (error fractions): where, the data set as in `Claim.setting`, top-1, top-5.
PAPER_HEADLINE = {
    "imagenet": ("Table 2: one CNN", "ILSVRC-2012 val", 0.407, 0.182),
    "cifar10": ("§3.3: four-layer CNN with normalization", "CIFAR-10 test", 0.11, None),
}
# The released training schedule behind a PAPER_HEADLINE figure: (epochs, epochs at which
# the rate drops 10x, whose schedule). cuda-convnet's layers-conv-local-11pct net, the
# 11% of §3.3, trains about 520 epochs: 350 at its first rate, then drops at 350, 500
# and 510 (cuda-convnet's "how to obtain good performance" methodology).
RELEASED_SCHEDULE = {
    "cifar10": (520, (350, 500, 510), "cuda-convnet's released schedule for the 11% net"),
}
MISHKIN_CITE = (
    'Mishkin, Sergievskiy & Matas 2016, "Systematic evaluation of CNN advances on the '
    'ImageNet" (arXiv:1606.02228; CVIU 2017): CaffeNet at 128 px (fc6/fc7 2048 units, LSUV '
    "init), ImageNet-2012 validation, figures from the authors' caffenet-benchmark repository"
)
# Their top-1 *accuracies* (checked against that repository), and the difference as
# points of top-1 error, variant - baseline. Only comparisons they ran as ours are
# listed (their pooling table compares max, average and stochastic pooling, not
# overlapping against non-overlapping windows).
MISHKIN = {
    "tanh": ("TanH 0.401 vs ReLU 0.470 top-1 accuracy", 6.9),
    "no_lrn": ("ReLU without LRN 0.471 vs with LRN 0.470 top-1 accuracy", -0.1),
}


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


def what_was_run(an: analysis.PresetAnalysis) -> list:
    preset_runs = an.runs
    blocks = [document.Heading(2, "1. What was run")]
    bg = an.baseline_group()
    ref = (bg.counted or bg.runs)[0] if bg else (preset_runs[0] if preset_runs else None)
    items = []
    if ref is not None:
        data = ref.config.get("data", {})
        src = str(data.get("source", "?"))
        # Local files by name and content digest, never by where they lay on the machine that ran.
        ident = collect.data_id(ref)
        shown = code(src)
        if collect.is_local_source(src):
            shown = code(collect.portable(src, [src])) + (
                f" (content digest {code(ident)})"
                if ident.startswith(("sha256:", "files:"))
                else " (no content digest recorded)"
            )
        line = f"Dataset: {shown}, images {data.get('image_size')} px, crops {data.get('crop_size')} px"
        if data.get("max_train") or data.get("max_val"):
            line += (
                f", subset: at most {data.get('max_train') or 'all'} training and "
                f"{data.get('max_val') or 'all'} validation images"
            )
        lossy = [v for k, v in collect.LOSSY.items() if k in src]
        if lossy:
            line += (
                f". Note: this is {lossy[0]}, not the original files; "
                "errors are not directly comparable with results on the original images"
            )
        items.append(line + ".")
    doc = preset_description(PRESETS[an.preset].doc) if an.preset in PRESETS else ""
    items.append(f"Preset: {code(an.preset)}" + (f" - {doc}" if doc else ""))
    items.append(
        "Hardware: device "
        + distinct(str(r.env.get("device")) if r.env.get("device") is not None else None for r in preset_runs)
        + "; host "
        + distinct(r.env.get("host") for r in preset_runs)
        + "; processor "
        + distinct(r.env.get("processor") for r in preset_runs)
        + "."
    )
    items.append(
        "Backend: "
        + distinct(r.env.get("backend") or r.env.get("keras_backend") for r in preset_runs)
        + "; versions: "
        + distinct(
            ", ".join(f"{k} {v}" for k, v in sorted((r.env.get("versions") or {}).items()) if v) for r in preset_runs
        )
        + "; Python "
        + distinct(r.env.get("python") for r in preset_runs)
        + "."
    )
    commits = []
    for r in preset_runs:
        g = r.env.get("git") or {}
        if g.get("commit"):
            commits.append(g["commit"][:10] + (" (dirty)" if g.get("dirty") else ""))
    items.append("Code: git " + distinct(commits) + ".")
    seeds = sorted({r.seed for r in preset_runs})
    items.append(
        f"Seeds: {', '.join(map(str, seeds)) or 'none'} (expected per arm: {', '.join(map(str, an.expected_seeds))})."
    )
    done = [r for r in preset_runs if collect.is_counted(r)]
    wall = sum(float(r.result.get("wall_time_s") or 0) for r in done)
    n_failed = sum(1 for r in preset_runs if r.failure is not None)
    items.append(
        f"Runs: {len(preset_runs)} run directories, {len(done)} finished, {n_failed} failed, "
        f"{len(preset_runs) - len(done) - n_failed} unfinished."
    )
    items.append(
        f"Compute: {duration(wall)}"
        + (f" ({wall:.0f} s)" if wall >= 120 else "")
        + f", the sum of wall_time_s over the {len(done)} finished runs (grid and superseded "
        "runs included)."
    )
    dates = sorted((collect.run_date(r) for r in preset_runs if collect.run_date(r)), key=collect._date_key)
    items.append(
        "Dates: "
        + ("not recorded" if not dates else dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}")
        + "."
    )
    blocks.append(document.Bullets(items))

    rows = []
    for label in sorted(an.labels):
        for g in an.labels[label]:
            if (label, g.fingerprint) not in an.used:
                continue
            r0 = (g.counted or g.runs)[0]
            t = r0.config.get("train", {})
            rows.append(
                [
                    code(label),
                    code(g.fingerprint),
                    ", ".join(map(str, g.seeds)) or "none",
                    str(max((r.result or {}).get("epochs") or 0 for r in g.counted) if g.counted else 0)
                    + f" / {t.get('epochs')}",
                    f"{t.get('learning_rate')} ({t.get('schedule')})",
                    distinct(str(r.env.get("device")) if r.env.get("device") is not None else None for r in g.runs),
                    g.latest[:10] or "n/a",
                ]
            )
    if rows:
        blocks.append(
            document.Table(
                [
                    "Label",
                    "Fingerprint",
                    "Finished seeds",
                    "Epochs (done / configured)",
                    "lr (schedule)",
                    "Device",
                    "Latest",
                ],
                rows,
                ["l", "l", "l", "r", "l", "l", "l"],
                caption="The configuration groups the tables below use.",
            )
        )
    return blocks


def _caveat_tag(claim) -> str:
    """The caveat's leading phrase ("Confounded", "Not like for like")."""
    # A caveat of one sentence is its own tag; its full stop would sit before the "; " of the next tag.
    return claim.caveat.split(":", 1)[0].rstrip(".") if claim.caveat else ""


def main_table(an: analysis.PresetAnalysis) -> list:
    blocks = [document.Heading(2, "2. Claims and measurements")]
    blocks.append(
        document.Para(
            "Errors are validation errors in %, mean ± sd over seeds (sample sd). Delta = variant - "
            "baseline in points (percentage points of error; for Figure 1 the ratio of epochs, variant / "
            "baseline). **95% CI (seeds)**: Student t on the per-seed differences when both arms have "
            "the same seeds (paired), Welch's t otherwise; it includes training noise and is the interval "
            "the tests start from (the verdicts use the simultaneous intervals of the next table). When every "
            "seed gives the same difference no t interval exists (it would have "
            "zero width); the paired bootstrap over validation images is used instead where per-image "
            "results exist, else the row is `not measurable`. **95% CI (images)**: percentile bootstrap "
            f"over validation images ({analysis.BOOTSTRAP_RESAMPLES} resamples, seed {analysis.BOOTSTRAP_SEED}, "
            "pooled over seeds); it reflects only the finite validation set."
        )
    )
    rows = []
    for comp in an.comparisons:
        for r in comp.rows:
            if r.is_ratio:
                ep = lambda v: _ep(list(v.values()))  # noqa: E731
                rows.append(
                    [
                        code(comp.name),
                        r.label,
                        ep(r.base),
                        # Censored variant runs count the epochs they ran: their mean and the ratio are lower bounds.
                        ("≥ " if r.lower_bound_only else "") + ep(r.variant),
                        ("at least " if r.lower_bound_only else "") + ratio(r.seed_ci.estimate),
                        f"[{ratio(r.seed_ci.lo)}, {ratio(r.seed_ci.hi)}]" if r.seed_ci.ok else "n/a",
                        "n/a",
                        n_text(r.base, r.variant),
                    ]
                )
                continue
            rows.append(
                [
                    code(comp.name),
                    r.label,
                    mean_sd_pct(r.base),
                    mean_sd_pct(r.variant),
                    pts(r.seed_ci.estimate),
                    ci_pts(r.seed_ci),
                    ci_pts(r.image_ci),
                    n_text(r.base, r.variant),
                ]
            )
        if not comp.rows:
            rows.append([code(comp.name), "-", "n/a", "n/a", "n/a", "n/a", "n/a", "0"])
    blocks.append(
        document.Table(
            ["Ablation", "Metric", "Baseline", "Variant", "Delta", "95% CI (seeds)", "95% CI (images)", "n"],
            rows,
            ["l", "l", "r", "r", "r", "r", "r", "r"],
            caption="n: seeds per arm (b/v when the arms' seeds differ). single_view_eval: baseline = "
            "ten-view error, variant = centre-crop error of the same baseline runs.",
        )
    )

    blocks.append(document.Heading(3, "Tests"))
    level = stats.simultaneous_level(an.family)
    blocks.append(
        document.Para(
            f"**Multiple comparisons**: {analysis.MULTIPLICITY}; here m = {an.family} claim(s) with a test, so the "
            + (
                f"intervals beside the verdicts are {100 * level:.1f}% intervals. "
                if an.family > 1
                else "intervals beside the verdicts are the ordinary 95% ones (nothing to correct for). "
            )
            + "**p (adj.)**: the "
            'Bonferroni-adjusted two-sided p-value of "no difference" (secondary rows: the unadjusted p, in '
            "brackets). **Direction**: the claimed sign is significant when the adjusted p < 0.05, which is when "
            "the simultaneous interval excludes 0 (1 for a ratio). **Fragile**: a paired comparison whose verdict "
            "Welch's t (which ignores the pairing by seed) would not share. **MDE**: the minimum "
            f"detectable effect, the smallest true difference that a two-sided test at α = {stats.ALPHA:g}/m (a tested "
            f"claim; {stats.ALPHA:g} for the other rows) finds "
            f"with {stats.POWER:.0%} power at the observed spread (noncentral t with the interval's degrees of "
            "freedom; normal for the image bootstrap), in points (a ratio for Figure 1). **Seeds for paper**: "
            "seeds per arm at which the MDE reaches the paper's effect, at the observed spread. **Size**: the "
            "paper's value against the interval; `paper's value inside the interval` only when the paper's "
            "effect is at least the MDE, else `underpowered` (a wide interval contains everything and is not "
            'evidence); a claim stated as a lower bound ("over 1%") is compared as a bound. **Verdict**: '
            "`reproduced` = significant in the claimed direction and the size agrees (or no size is claimed); "
            "`direction reproduced, size differs/unresolved`; `contradicted` = significant the other way; "
            "`underpowered` = not significant and the paper's effect is below the MDE; `not reproduced` = not "
            "significant and the interval excludes the paper's effect; `not significant` = not significant where "
            "the paper states no size to set beside the MDE; `not measurable` = no interval, or the "
            f"baseline is at chance. Withheld without a test (no p, MDE or seeds): `{stats.COLLAPSED}` = an arm ended "
            f"at chance in some seed; `{stats.CONFOUNDED}` = the comparison mixes the claim's choice with another "
            "factor, named in the note (e.g. a setting tuned for one arm only); "
            f"`{stats.NOT_TESTABLE}` = a claim about overfitting while the baseline does not yet overfit (its gap is "
            f"under {100 * analysis.SMALL_GAP:.0f} points). `{stats.BUDGET_LIMITED}` = the effect shrinks to under "
            f"{analysis.BUDGET_SHRINK:.0%} of its size (or changes sign) on a longer budget of the same net: the "
            "verdict at the short budget is about the budget."
        )
    )
    rows = []
    for comp in an.comparisons:
        for r in comp.rows:
            p = "-" if r.withheld or r.role == "none" else fmt_p(r.p_adj) if r.role == "primary" else f"({fmt_p(r.p)})"
            paper = f"{comp.claim.section}: {r.claimed_text}"
            if not (r.base and r.variant):  # an arm with no finished run: nothing measured, nothing judged
                rows.append([code(comp.name), r.label, paper, "n/a", "-", "-", "n/a", "n/a", "-", "-", stats.NOT_RUN])
                continue
            rows.append(
                [
                    code(comp.name),
                    r.label,
                    paper,
                    measured_text(r, True),
                    level_text(r),
                    p,
                    mde_text(r),
                    seeds_text(r),
                    r.direction_verdict,
                    r.magnitude,
                    verdict_text(r),
                ]
            )
        if not comp.rows:
            rows.append(
                [
                    code(comp.name),
                    "-",
                    comp.claim.section,
                    "n/a",
                    "-",
                    "n/a",
                    "n/a",
                    "n/a",
                    stats.NOT_MEASURABLE,
                    stats.NOT_MEASURABLE,
                    stats.NOT_MEASURABLE,
                ]
            )
    blocks.append(
        document.Table(
            [
                "Ablation",
                "Metric",
                "Paper",
                "Measured [CI]",
                "CI level",
                "p (adj.)",
                "MDE",
                "Seeds for paper",
                "Direction",
                "Size",
                "Verdict",
            ],
            rows,
            ["l", "l", "l", "r", "l", "r", "r", "r", "l", "l", "l"],
            caption='Measured: the delta (points) or ratio with the interval the test uses; "(images)" marks the '
            'image bootstrap, "at least" a ratio bounded by censored runs.',
        )
    )

    blocks.append(document.Heading(3, "The paper's claims"))
    items = []
    for comp in an.comparisons:
        c = comp.claim
        where = f"the paper measured it on {c.setting}" + (f", here on {comp.dataset}" if comp.dataset else "")
        item = f'{code(comp.name)} ({c.section}; {where}): "{c.text}" Variant: {comp.ablation.description}.'
        if c.bound == "at least":
            item += " The paper states a lower bound, so it is compared as one."
        if c.caveat:
            item += f" **{c.caveat}**"
        items.append(item)
    blocks.append(document.Bullets(items))

    blocks.append(document.Heading(3, "Arms compared"))
    arm_rows = []
    for comp in an.comparisons:
        p = comp.pair
        arm = lambda g: f"{g.label} @ {g.fingerprint} (seeds {', '.join(map(str, g.seeds))})" if g else "none"  # noqa: E731
        same = kind_of(comp.ablation).difference_text(comp)
        if same is not None:
            diff = same
        elif p.base is None or p.variant is None:
            diff = "-"
        else:
            diff = "; ".join(f"{k}: {x} -> {y}" for k, (x, y) in p.diff.items()) or "none (!)"
            if p.unexpected:
                diff += " (!) differs beyond the ablation"
        arm_rows.append([code(comp.name), arm(p.base), arm(p.variant), diff])
    blocks.append(
        document.Table(
            ["Ablation", "Baseline arm", "Variant arm", "Configuration difference"],
            arm_rows,
            caption="Arms are chosen so that their configurations differ exactly "
            "by the ablation's overrides (the last column); the arms of a learning-rate grid (Figure 1 and the "
            "fair tests) also differ in learning rate, chosen per arm as in §3.1.",
        )
    )
    notes = list(an.notes)
    notes += [f"{code(c.name)}: {n}" for c in an.comparisons for n in c.notes]
    notes += [f"{code(c.name)} {r.metric}: {n}" for c in an.comparisons for r in c.rows for n in r.notes]
    notes += [
        f"{code(c.name)} {r.metric}: {r.verdict}: {r.withheld_why}"
        for c in an.comparisons
        for r in c.rows
        if r.withheld and r.withheld_why and r.verdict == r.withheld
    ]
    if notes:
        blocks.append(document.Heading(3, "Notes"))
        blocks.append(document.Bullets(notes))
    return blocks


def _ep(values: list) -> str:
    m, sd, n = stats.mean_sd(values)
    return "n/a" if n == 0 else (f"{m:.1f} ± {sd:.1f}" if n >= 2 else f"{m:.1f} (n=1)")


def overfitting(an: analysis.PresetAnalysis) -> list:
    blocks = [document.Heading(2, "3. Overfitting")]
    if not an.overfitting:
        return blocks + [document.Para("No finished runs of the baseline, `no_crop_flip` or `no_dropout` arms.")]
    rows = []
    for o in an.overfitting:
        rows.append(
            [
                code(o.arm),
                code(o.group.fingerprint),
                str(len(o.gap)),
                mean_sd_pct(o.train_clean),
                mean_sd_pct(o.train_aug),
                mean_sd_pct(o.val),
                mean_sd_pct(o.gap),
            ]
        )
    blocks.append(
        document.Table(
            [
                "Arm",
                "Fingerprint",
                "n",
                "Train top-1 err (clean)",
                "Train top-1 err (augmented, last epoch)",
                "Val top-1 err",
                "Gap (val - clean train)",
            ],
            rows,
            ["l", "l", "r", "r", "r", "r", "r"],
            caption="Train (clean): training images, centre crop, inference mode (no dropout). "
            "A larger gap is more overfitting; the gap deltas and their intervals are in the main table.",
        )
    )
    if an.overfitting[0].group.flat.get("model.dropout") == 0:
        blocks.append(
            document.Para(
                "This preset's baseline has no dropout (model.dropout = 0), so no_dropout does not apply to it."
            )
        )
    return blocks


def figure_section(an: analysis.PresetAnalysis, out_dir: Path, figs: list) -> list:
    p = an.preset
    fdir = out_dir / "figures"
    blocks = [document.Heading(2, "4. Figures")]
    f = figures.learning_curves(an.comparisons, fdir / f"{p}_learning_curves.png", f"{p}: validation top-1 error")
    blocks.append(
        figure_block(
            f,
            out_dir,
            f"Learning curves ({p}): validation top-1 error (centre crop) per "
            "epoch, baseline solid, variant dashed; band = ±1 sd over seeds (thin lines: single "
            "seeds, where runs of an arm have different lengths).",
        )
    )
    rows = [r for c in an.comparisons for r in c.rows if r.metric in ("top-1", "top-5", "gap", "early")]
    f2 = figures.delta_chart(rows, fdir / f"{p}_deltas.png", f"{p}: variant - baseline")
    blocks.append(
        figure_block(
            f2,
            out_dir,
            f"Measured deltas ({p}) with the interval each test uses (thick; its "
            "level in section 2) and the 95% interval over validation images (thin); x = the "
            "paper's claimed delta. The axis shows effects of "
            f"a few points: what lies beyond ±{figures.DELTA_CLIP:g} points is drawn at its edge "
            "as a triangle, with the value written.",
        )
    )
    bg = an.baseline_group()
    kernels, src = None, None
    for r in bg.counted if bg else []:
        kernels = r.conv1_kernels()
        if kernels:
            src = r
            break
    f3 = None
    if kernels:
        f3 = figures.conv1_grid(
            kernels,
            fdir / f"{p}_conv1.png",
            f"conv1 kernels, {p} baseline seed {src.seed} (each kernel scaled to [0, 1])",
        )
    towers = "tower a on top, tower b below" if kernels and set(kernels) != {"single"} else "one tower"
    blocks.append(
        figure_block(
            f3,
            out_dir,
            f"conv1 kernels of one baseline run ({p}, seed {src.seed if src else '-'}), like the paper's Fig. 3: "
            f"{towers}.",
        )
    )
    figs.extend(x for x in (f, f2, f3) if x is not None)
    for comp in an.comparisons:  # each kind's own figures (lr_grid: Figure 1 and its grid)
        blocks += kind_of(comp.ablation).report_blocks(an, comp, out_dir, figs)
    if len([b for b in blocks if b is not None]) == 1:
        blocks.append(document.Para("Nothing to plot yet."))
    return blocks


def published_numbers(an: analysis.PresetAnalysis) -> list:
    blocks = [document.Heading(2, "5. Published numbers for comparison")]
    rows = []
    head = PAPER_HEADLINE.get(an.preset)
    bg = an.baseline_group()
    ref = (bg.counted or bg.runs)[0] if bg is not None and (bg.counted or bg.runs) else None
    if head is not None:
        where, setting, top1, top5 = head
        t1 = analysis.result_values(bg, "val_top1_err")
        t5 = analysis.result_values(bg, "val_top5_err")
        paper = pct(top1, 1) + (f" / {pct(top5, 1)}" if top5 is not None else "") + f" ({where}, {setting})"
        ours = mean_sd_pct(t1) + (f" / {mean_sd_pct(t5)}" if top5 is not None else "")
        name = "baseline error, top-1" + (" / top-5" if top5 is not None else "") + " (%)"
        note = "; see the budget below" if an.preset in RELEASED_SCHEDULE else ""
        rows.append([name, paper, "-", ours, collect.setting_match(ref, setting) + note])
    for comp in an.comparisons:
        c = comp.claim
        if c.metric != "error" or (c.top1 is None and comp.name not in MISHKIN):
            continue
        top1 = next((r for r in comp.rows if r.metric == "top-1"), None)
        ours = "n/a"
        if top1 is not None and math.isfinite(top1.seed_ci.estimate):
            ours = pts(top1.seed_ci.estimate) + (
                f" {ci_pts(top1.seed_ci)}" if top1.seed_ci.ok else f" (no CI: {top1.seed_ci.reason})"
            )
            if top1.unmeasurable == "baseline at chance":
                ours += "; not measurable: baseline at chance"
        paper = (
            (
                f"{c.top1:+.1f}"
                + (" or more" if c.bound == "at least" else "")
                + (f" (top-5 {c.top5:+.1f})" if c.top5 is not None else "")
                + f" ({c.section}, {c.setting})"
            )
            if c.top1 is not None
            else f"qualitative ({c.section})"
        )
        # Their figures are ImageNet's: beside a claim measured on another data set they compare nothing.
        mk = MISHKIN.get(comp.name) if "ILSVRC" in c.setting else None
        mtext = f"{mk[0]} (= {mk[1]:+.1f} points of top-1 error)" if mk else "-"
        setting = comp.setting + (f". {c.caveat}" if c.caveat else "")
        rows.append([f"{code(comp.name)} top-1 delta (points of error)", paper, mtext, ours, setting])
    blocks.append(
        document.Table(
            [
                "Quantity",
                "Krizhevsky et al. 2012",
                "Mishkin et al. 2016",
                f"This report ({an.preset})",
                "Setting matches?",
            ],
            rows,
            ["l", "l", "l", "r", "l"],
            caption="Deltas are variant - baseline in points of top-1 error, ours with the 95% CI "
            "over seeds. Setting: decided from each run's recorded data source (TFDS name, "
            "local files identified by hash only, or synthetic data), not the preset's name.",
        )
    )
    budget = budget_note(an, bg)
    if budget is not None:
        blocks.append(budget)
    blocks.append(
        document.Para(
            f"Mishkin et al.: {MISHKIN_CITE}. Their numbers are top-1 accuracies, shown here also as a "
            "difference in points of error. ImageNet at 128 px is closest to the imagenette presets' resolution "
            "but has 1000 classes, so no preset here matches their setting exactly. Krizhevsky et al.'s deltas "
            "are from the sections cited; their ten-view numbers are on ILSVRC-2010 test (§6)."
        )
    )
    return blocks


def budget_note(an: analysis.PresetAnalysis, bg) -> document.Para | None:
    """How the baseline's epoch budget compares with the released schedule behind the
    paper's figure, and how far the baseline ends from that figure and why: a net whose
    clean training error is still above the paper's test error is underfitting, so the
    distance is the shortened schedule rather than overfitting."""
    released, head = RELEASED_SCHEDULE.get(an.preset), PAPER_HEADLINE.get(an.preset)
    runs_ = bg.counted if bg is not None else []
    if released is None or head is None or not runs_:
        return None
    rel_epochs, rel_steps, whose = released
    paper = head[2]
    t = runs_[0].config.get("train", {})
    epochs, steps = t.get("epochs"), [e for e in (t.get("step_epochs") or []) if isinstance(e, int)]
    if not isinstance(epochs, int) or epochs <= 0:
        return None
    drops = ""
    if t.get("schedule") == "step" and steps:
        drops = f" (rate lowered 10x at epochs {', '.join(map(str, steps))})"
    val = analysis.result_values(bg, "val_top1_err")
    views = analysis.result_values(bg, "val_top1_err_10view")
    clean = analysis.result_values(bg, "train_top1_err_clean")
    text = (
        f"Budget: the baseline trains {epochs} epochs{drops}; {whose} is about {rel_epochs} epochs "
        f"(lowered at {', '.join(map(str, rel_steps))}), {rel_epochs / epochs:.0f}x longer. "
    )
    if val:
        m_val, _, _ = stats.mean_sd(list(val.values()))
        text += (
            f"At this budget the baseline ends at {mean_sd_pct(val)}% validation top-1 error "
            f"(centre crop{f'; ten views {mean_sd_pct(views)}%' if views else ''}, n = {len(val)}), "
            f"{pct(abs(m_val - paper))} points {'above' if m_val > paper else 'below'} the paper's {pct(paper, 1)}%."
        )
    if clean:
        m_clean, _, _ = stats.mean_sd(list(clean.values()))
        if m_clean > paper:
            text += (
                f" Its clean training error, {mean_sd_pct(clean)}%, is itself above {pct(paper, 1)}%: the net "
                "has not yet fit its training set, so the distance is the shortened schedule (the released one "
                f"keeps its first rate for {rel_steps[0]} epochs), not overfitting; the lossy copy of the "
                "data may add to it (not measured)."
            )
        else:
            text += (
                f" Its clean training error, {mean_sd_pct(clean)}%, is below {pct(paper, 1)}%: the distance "
                "is in generalisation, not in fitting the training set."
            )
    return document.Para(text)


def commands(an: analysis.PresetAnalysis, report_cmd: str) -> list:
    seen, lines = set(), []
    sources = {str(r.config.get("data", {}).get("source", "")) for r in an.runs}
    for r in sorted(an.runs, key=lambda r: (r.label, r.seed, str(r.path))):
        c = collect.portable(command_text(r.meta.get("command")), sources)
        if c and c not in seen:
            seen.add(c)
            lines.append(c)
    return [
        document.Heading(2, "6. Commands"),
        document.Para(
            "The commands recorded in the runs (deduplicated), then the command that built this "
            "report. Paths are shown relative to the repository, data files by name (their digest is "
            "in section 1), other folders by their last name."
        ),
        document.Code(lines or ["(no command recorded in the runs)"]),
        document.Code([collect.portable(report_cmd, sources)]),
    ]


def completeness(an: analysis.PresetAnalysis, root) -> list:
    blocks = [document.Heading(2, "7. Completeness")]
    if an.missing:
        blocks.append(
            document.Para(
                f"Runs the ablations of this preset need but that are absent or did not finish "
                f"(seeds expected per arm: those seen for the baseline, or 0, 1, 2 by default: here "
                f"{', '.join(map(str, an.expected_seeds))}; an ablation with a baseline arm of its own, "
                "such as Figure 1, also expects the seeds either of its arms has):"
            )
        )
        blocks.append(
            document.Table(
                ["Label", "Seed", "Status"], [[code(lab), str(s), st] for lab, s, st in an.missing], ["l", "r", "l"]
            )
        )
    else:
        blocks.append(document.Para("Every run the ablations of this preset need has finished."))
    if an.not_counted:
        blocks.append(document.Heading(3, "Runs not counted (failed or unfinished)"))
        blocks.append(
            document.Table(
                ["Label", "Seed", "Fingerprint", "Status", "Path"],
                [
                    [
                        code(r.label),
                        str(r.seed),
                        code(collect.fingerprint(r)),
                        collect.run_status(r),
                        code(collect.relpath(r.path, root)),
                    ]
                    for r in an.not_counted
                ],
                ["l", "r", "l", "l", "l"],
                caption="Listed, never averaged in.",
            )
        )
    if an.superseded:
        blocks.append(document.Heading(3, "Superseded configurations"))
        rows = []
        for g, diff in an.superseded:
            d = "; ".join(f"{k}: {y} (used: {x})" for k, (x, y) in diff.items()) or "-"
            rows.append(
                [code(g.label), code(g.fingerprint), f"{len(g.counted)}/{len(g.runs)}", g.latest[:19] or "n/a", d]
            )
        blocks.append(
            document.Table(
                ["Label", "Fingerprint", "Finished/all", "Latest", "Differs from the group used by"],
                rows,
                ["l", "l", "r", "l", "l"],
                caption="Other configurations of the same labels; not in the tables above.",
            )
        )
    return blocks


def preset_summary(an: analysis.PresetAnalysis) -> document.Para:
    # An ablation with an arm never run has no verdict to count, only a gap (the
    # summary table's rule: its first row stands for it when it has no primary one).
    firsts = [c.primary or next(iter(c.rows), None) for c in an.comparisons]
    counts = Counter(r.verdict for c in an.comparisons for r in c.rows if r.role == "primary" and r.base and r.variant)
    parts = [
        f"{v}: {n}"
        for v, n in sorted(
            counts.items(), key=lambda kv: stats.VERDICTS.index(kv[0]) if kv[0] in stats.VERDICTS else 99
        )
    ]
    unrun = sum(1 for r in firsts if r is None or not (r.base and r.variant))
    if unrun:
        parts.append(f"{stats.NOT_RUN}: {unrun}")
    n_done = sum(1 for r in an.runs if collect.is_counted(r))
    return document.Para(
        f"{len(an.runs)} runs ({n_done} finished), {len(an.comparisons)} ablations. Verdicts over "
        f"the claims: {'; '.join(parts) or 'none'}. Missing or unfinished: "
        f"{len(an.missing)} (section 7)."
    )


def summary_table(analyses: dict, unrun: dict | None = None) -> list:
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
            ref = next(
                (
                    g.counted[0]
                    for comp in an.comparisons
                    for g in (comp.pair.base, comp.pair.variant)
                    if g is not None and g.counted
                ),
                None,
            )
        data = collect.dataset_name(ref) if ref is not None else "no runs"
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
            more = kind_of(comp.ablation).measured_suffix(comp)
            if more:
                measured = f"{measured}; {more}"
            note = "; ".join(
                x
                for x in (
                    _caveat_tag(c),
                    *comp.tags,
                    r.unmeasurable if r.role != "none" else "",
                    r.fragile and "fragile: paired and Welch tests disagree",
                )
                if x
            )
            row = [
                f"{p} ({data})",
                f"{code(comp.name)} {c.section}, {r.label}",
                paper,
                measured,
                level_text(r),
                verdict_text(r),
                note,
            ]
            # The paper's own scale is its data set, not its kind of metric: an epochs ratio measured
            # on Imagenette (a fair test of an ImageNet claim) is not Figure 1.
            at_paper_scale = comp.setting.startswith("yes") or c.setting.startswith("CIFAR-10")
            (own_scale if at_paper_scale else rows).append(row)
    blocks = []
    if own_scale or rows:
        blocks.append(
            document.Table(
                ["Preset (data)", "Claim, metric", "Paper", "Measured [CI]", "CI level", "Verdict", "Note"],
                own_scale + rows,
                ["l", "l", "l", "r", "l", "l", "l"],
                caption="One row per tested claim, those the paper measured on CIFAR-10 (Figure 1, the LRN claim) "
                "first: its primary metric, variant - baseline in points of error (a ratio for Figure 1, with its "
                f"range over counting rules). Verdicts after {analysis.MULTIPLICITY}. `reproduced` needs the claimed "
                "sign significant and the paper's size inside an adequately powered interval (or no size "
                "claimed); withheld verdicts (collapsed, confounded, not testable) give no test. See each "
                "preset's section 2 for the tests, detectable effects and notes.",
            )
        )
    if no_claim:
        blocks.append(document.Para("No claim in the paper (measured, not tested): " + "; ".join(no_claim) + "."))
    if never:
        if unrun is not None:
            unrun.update(never)
        else:
            blocks.append(
                document.Para(
                    "Not measured yet (an arm has no finished run): "
                    + "; ".join(f"`{p}`: " + ", ".join(code(n) for n in names) for p, names in never.items())
                    + "."
                )
            )
    if not blocks:
        return []
    return [document.Heading(1, "Summary"), *blocks]


def damaged_runs(damaged: list, root) -> list:
    if not damaged:
        return []
    rows = [[code(collect.relpath(e.path, root)), e.problem] for e in damaged]
    return [
        document.Heading(1, "Damaged runs (skipped)"),
        document.Para(
            f"{len(damaged)} run(s) could not be read and are left out of everything below. Fix: "
            f"{runs.RunFileError.FIX}, then build the report again."
        ),
        document.Table(["File", "What is wrong"], rows, ["l", "l"]),
    ]


def other_code_runs(grouped: dict, root) -> list:
    odd = collect.odd_runs(grouped)
    if not odd:
        return []
    rows = [[code(collect.relpath(r.path, root)), "; ".join(o)] for r, o in odd]
    return [
        document.Heading(1, "Runs written by other code (used, check them)"),
        document.Para(
            f"{len(odd)} run(s) hold what this code does not expect. They are counted as usual, but a "
            "configuration with unknown keys is grouped by the fingerprint it recorded and not compared "
            "key by key, and non-finite results are left out of the comparisons."
        ),
        document.Table(["Run", "What is odd"], rows, ["l", "l"]),
    ]
