"""Assemble the report: analysis -> document -> report.md, report.pdf, figures/*.png.

The report is a pure function of the run directories (read through
`reproduce.runs`) and the registry's claims; it never imports training code.
"""

from __future__ import annotations

import math
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from reproduce import runs as R
from reproduce.config import PRESETS
from reports import analysis as A
from reports import collect as C
from reports import document as D
from reports import figures as F
from reports import stats as S

TITLE = "AlexNet reproduction report (Krizhevsky, Sutskever & Hinton, NIPS 2012)"
LOSSY = {
    "cifar10-jpeg": "a lossy JPEG copy of CIFAR-10",
    "imagenette-144-webp": "a lossy WebP copy of Imagenette at 144 px",
}

# Published numbers (in points of top-1/top-5 *error*, variant - baseline).
PAPER_HEADLINE = {
    "imagenet": ("Table 2: one CNN, ILSVRC-2012 validation", 0.407, 0.182),
    "cifar10": ("§3.3: four-layer CNN with normalization, CIFAR-10 test", 0.11, None),
}
SAME_DATA = {"imagenet": "ILSVRC-2012", "cifar10": "CIFAR-10"}
MISHKIN_CITE = ("Mishkin, Sergievskiy & Matas 2016, \"Systematic evaluation of CNN advances on the "
                "ImageNet\" (arXiv:1606.02228; CVIU 2017), CaffeNet on ImageNet at 128 px")
# As reported in this project's issue 5 (top-1 *accuracy* differences), not re-checked
# against the paper's tables here; printed with "reported as".
MISHKIN = {
    "tanh": ("tanh instead of ReLU", "-7.0 points top-1 accuracy", 7.0),
    "no_lrn": ("no LRN", "about 0", 0.0),
    "no_overlap_pool": ("2x2 non-overlapping pooling", "+1.3 points top-1 accuracy", -1.3),
}


@dataclass
class Report:
    out_dir: Path
    markdown: Path
    pdf: Path
    figures: list = field(default_factory=list)
    analyses: dict = field(default_factory=dict)  # preset -> analysis.PresetAnalysis
    document: Optional[D.Document] = None


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


def _what_was_run(an: A.PresetAnalysis) -> list:
    runs = an.runs
    blocks = [D.Heading(2, "1. What was run")]
    bg = an.baseline_group()
    ref = (bg.counted or bg.runs)[0] if bg else (runs[0] if runs else None)
    items = []
    if ref is not None:
        data = ref.config.get("data", {})
        src = str(data.get("source", "?"))
        line = f"Dataset: {code(src)}, images {data.get('image_size')} px, crops {data.get('crop_size')} px"
        if data.get("max_train") or data.get("max_val"):
            line += (f", subset: at most {data.get('max_train') or 'all'} training and "
                     f"{data.get('max_val') or 'all'} validation images")
        lossy = [v for k, v in LOSSY.items() if k in src]
        if lossy:
            line += (f". Note: this is {lossy[0]} (the shared-data copy), not the original files; "
                     "errors are not directly comparable with results on the original images")
        items.append(line + ".")
    doc = PRESETS[an.preset].doc.splitlines()[0] if an.preset in PRESETS and PRESETS[an.preset].doc else ""
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


def _metric_name(row: A.Row, comp: A.Comparison) -> str:
    if row.metric == "gap":
        return "gap: val top-1 - train top-1 (clean)"
    base = f"val {row.metric} err"
    return base + (" (10-view -> centre)" if comp.ablation.kind == "eval" else "")


def _main_table(an: A.PresetAnalysis) -> list:
    blocks = [D.Heading(2, "2. Claims and measurements")]
    blocks.append(D.Para(
        "Errors are validation errors in %, mean ± sd over seeds (sample sd). Delta = variant - "
        "baseline in points (percentage points of error; for Figure 1 the ratio of epochs, variant / "
        "baseline). **95% CI (seeds)**: Student t on the per-seed differences when both arms have "
        "the same seeds (paired), Welch's t otherwise; this interval, which includes training "
        "noise, decides the verdict. **95% CI (images)**: paired percentile bootstrap over "
        f"validation images ({A.BOOTSTRAP_RESAMPLES} resamples, seed {A.BOOTSTRAP_SEED}, pooled over "
        "seeds); it only reflects the finite validation set. **Verdict**: `reproduced` = the seed CI "
        "excludes 0 on the claimed side; `contradicted` = it excludes 0 on the other side; otherwise "
        "the sign of the estimate gives `same/opposite direction, not significant`; an endpoint equal "
        "to 0 does not exclude it; `not measurable` when an arm is missing or has fewer than 2 seeds. "
        "Verdicts judge the direction only: **Paper vs CI** says whether the paper's delta lies "
        "inside the seed CI, above or below it."))
    rows = []
    for comp in an.comparisons:
        for r in comp.rows:
            if r.metric == "epochs":
                ci = r.seed_ci
                bm, bsd, bn = S.mean_sd(list(r.base.values()))
                vm, vsd, vn = S.mean_sd(list(r.variant.values()))
                ep = lambda m, sd, n: "n/a" if n == 0 else (f"{m:.1f} ± {sd:.1f}" if n >= 2 else f"{m:.1f} (n=1)")  # noqa: E731
                rows.append([code(comp.name), f"epochs to {an.fig1.target:.0%} train err" if an.fig1 else "epochs",
                             f"{comp.claim.section}: {r.claimed_text}", ep(bm, bsd, bn), ep(vm, vsd, vn),
                             "x" + num(ci.estimate, "{:.2f}") if ci.ok or math.isfinite(ci.estimate) else "n/a",
                             f"[x{ci.lo:.2f}, x{ci.hi:.2f}]" if ci.ok else "n/a", "n/a",
                             n_text(r.base, r.variant), r.verdict, r.paper_vs_ci or "-"])
                continue
            rows.append([
                code(comp.name), _metric_name(r, comp), f"{comp.claim.section}: {r.claimed_text}",
                mean_sd_pct(r.base), mean_sd_pct(r.variant), pts(r.seed_ci.estimate), ci_pts(r.seed_ci),
                ci_pts(r.image_ci), n_text(r.base, r.variant), r.verdict, r.paper_vs_ci or "-",
            ])
        if not comp.rows:
            rows.append([code(comp.name), "-", f"{comp.claim.section}", "n/a", "n/a", "n/a", "n/a", "n/a",
                         "0", S.NOT_MEASURABLE, "-"])
    blocks.append(D.Table(
        ["Ablation", "Metric", "Paper", "Baseline", "Variant", "Delta", "95% CI (seeds)",
         "95% CI (images)", "n", "Verdict", "Paper vs CI"],
        rows, ["l", "l", "l", "r", "r", "r", "r", "r", "r", "l", "l"],
        caption="n: seeds per arm (b/v when the arms' seeds differ). single_view_eval: baseline = "
                "ten-view error, variant = centre-crop error of the same baseline runs."))

    blocks.append(D.Heading(3, "The paper's claims"))
    blocks.append(D.Bullets([
        f"{code(comp.name)} ({comp.claim.section}, measured on {comp.claim.setting}): "
        f"\"{comp.claim.text}\" Variant: {comp.ablation.description}." for comp in an.comparisons]))

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
    notes = [f"{code(c.name)}: {n}" for c in an.comparisons for n in c.notes]
    notes += [f"{code(c.name)} {r.metric}: {n}" for c in an.comparisons for r in c.rows for n in r.notes]
    if notes:
        blocks.append(D.Heading(3, "Notes"))
        blocks.append(D.Bullets(notes))
    return blocks


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
    rows = [r for c in an.comparisons for r in c.rows if r.metric in ("top-1", "top-5", "gap")]
    f2 = F.delta_chart(rows, fdir / f"{p}_deltas.png", f"{p}: variant - baseline")
    blocks.append(_figure(f2, out_dir, f"Measured deltas ({p}) with 95% intervals over seeds (thick) and "
                          "over validation images (thin); x = the paper's claimed delta."))
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
    for arm, runs, ttt, lr in (("ReLU", f1.base_runs, f1.base_ttt, f1.base_lr),
                               ("tanh", f1.variant_runs, f1.variant_ttt, f1.variant_lr)):
        m, sd, n = S.mean_sd([t.bound for t in ttt.values()])
        walls = [float(r.result.get("wall_time_s") or math.nan) for r in runs]
        wm, wsd, _ = S.mean_sd(walls)
        rows.append([arm, num(lr, "{:g}"), str(n),
                     "n/a" if n == 0 else (f"{m:.1f} ± {sd:.1f}" if n >= 2 else f"{m:.1f}"),
                     ", ".join(f"s{s}: {t}" for s, t in sorted(ttt.items())) or "n/a",
                     "n/a" if not walls else (f"{wm:.0f} ± {wsd:.0f}" if len(walls) >= 2 else f"{wm:.0f}")])
    blocks.append(D.Table(["Activation", "lr", "n", f"Epochs to {f1.target:.0%} (mean ± sd)", "Per seed",
                           "Wall time to target (s)"], rows, ["l", "r", "r", "r", "l", "r"]))
    r = f1.ratio
    row = next((x for c in an.comparisons for x in c.rows if x.metric == "epochs"), None)
    if r is not None and row is not None:
        claim = f1.ablation.claim(an.preset)
        cmp6 = ""
        if claim.ratio and row.verdict == "not measurable":
            cmp6 = f"not measurable here, so no comparison with the paper's x{claim.ratio:g}"
        elif claim.ratio and r.ok:
            if r.lo > claim.ratio:
                cmp6 = f"the paper's x{claim.ratio:g} lies below the interval (tanh is slower here than in the paper)"
            elif r.hi < claim.ratio:
                cmp6 = f"the paper's x{claim.ratio:g} lies above the interval (a smaller speed-up than the paper's)"
            else:
                cmp6 = f"the paper's x{claim.ratio:g} lies inside the interval"
        elif claim.ratio:
            cmp6 = f"no interval (n < 2), so no comparison with the paper's x{claim.ratio:g}"
        spread = f"per-seed ratios {r.mean:.2f} ± {r.sd:.2f}" if math.isfinite(r.sd) else "per-seed ratios n/a"
        wall = ""
        if f1.wall_ratio is not None and math.isfinite(f1.wall_ratio.estimate):
            w = f1.wall_ratio
            wall = (f" Wall-time ratio (tanh / ReLU, time to target): x{w.estimate:.2f}"
                    + (f", 95% CI [x{w.lo:.2f}, x{w.hi:.2f}]." if w.ok else "."))
        blocks.append(D.Para(
            f"Epochs to {f1.target:.0%} training error, tanh / ReLU: x{r.estimate:.2f} (geometric mean, "
            f"{spread}), 95% CI " + (f"[x{r.lo:.2f}, x{r.hi:.2f}]" if r.ok else "n/a")
            + f" ({r.method} on log epochs, n = {r.n}). Verdict: **{row.verdict}** (`reproduced` when the "
            f"interval lies above 1, i.e. ReLU reaches the target faster). Against the paper: {cmp6}.{wall}"))
    # The learning-rate grid.
    lrs = sorted({c.lr for cells in f1.grid.values() for c in cells})
    if lrs:
        by = {arm: {c.lr: c for c in cells} for arm, cells in f1.grid.items()}
        grid_rows = []
        for lr in lrs:
            row_ = [f"{lr:g}"]
            for arm, chosen in (("relu", f1.base_lr), ("tanh", f1.variant_lr)):
                c = by.get(arm, {}).get(lr)
                mark = " (chosen)" if chosen is not None and math.isclose(lr, chosen) else ""
                if c is None or c.ttt is None:
                    row_ += [(c.status if c else "missing") + mark, "n/a"]
                else:
                    row_ += [str(c.ttt) + mark, num(c.wall_s, "{:.0f}")]
            grid_rows.append(row_)
        blocks.append(D.Table(["lr", f"ReLU: epochs to {f1.target:.0%}", "ReLU: wall s",
                               f"tanh: epochs to {f1.target:.0%}", "tanh: wall s"], grid_rows,
                              ["r", "l", "r", "l", "r"],
                              caption="Learning-rate grid (one run per rate and activation, on a seed apart from the measured ones); "
                                      "(chosen) marks the rate the seeded runs above used. §3.1: the rates "
                                      "were chosen independently per network to make training as fast as possible."))
    if f1.notes:
        blocks.append(D.Bullets(list(f1.notes)))
    return blocks


def _published(an: A.PresetAnalysis) -> list:
    blocks = [D.Heading(2, "5. Published numbers for comparison")]
    rows = []
    head = PAPER_HEADLINE.get(an.preset)
    bg = an.baseline_group()
    if head is not None:
        t1 = A.result_values(bg, "val_top1_err")
        t5 = A.result_values(bg, "val_top5_err")
        paper = pct(head[1], 1) + (f" / {pct(head[2], 1)}" if head[2] is not None else "") + f" ({head[0]})"
        ours = mean_sd_pct(t1) + (f" / {mean_sd_pct(t5)}" if head[2] is not None else "")
        name = "baseline error, top-1" + (" / top-5" if head[2] is not None else "") + " (%)"
        rows.append([name, paper, "-", ours, "same data set; see the preset's schedule"])
    for comp in an.comparisons:
        c = comp.claim
        if c.metric != "error" or (c.top1 is None and comp.name not in MISHKIN):
            continue
        top1 = next((r for r in comp.rows if r.metric == "top-1"), None)
        ours = "n/a"
        if top1 is not None and math.isfinite(top1.seed_ci.estimate):
            ours = pts(top1.seed_ci.estimate) + (f" {ci_pts(top1.seed_ci)}" if top1.seed_ci.ok else " (no CI, n < 2)")
        paper = (f"{c.top1:+.1f}" + (f" / {c.top5:+.1f}" if c.top5 is not None else "")
                 + f" ({c.section}, {c.setting})") if c.top1 is not None else f"qualitative ({c.section})"
        mk = MISHKIN.get(comp.name)
        mtext = "-"
        if mk:
            mtext = f"reported as {mk[1]} for {mk[0]}" + (f" (= {mk[2]:+.1f} points top-1 error)" if mk[2] else "")
        same = SAME_DATA.get(an.preset)
        matches = "paper: same data set" if same and same in c.setting else "no (different data)"
        rows.append([f"{code(comp.name)} top-1 delta (points of error)", paper, mtext, ours, matches])
    blocks.append(D.Table(["Quantity", "Krizhevsky et al. 2012", "Mishkin et al. 2016", f"This report ({an.preset})",
                           "Setting matches?"], rows, ["l", "l", "l", "r", "l"],
                          caption="Deltas are variant - baseline in points of top-1 error, ours with the 95% CI "
                                  "over seeds."))
    blocks.append(D.Para(
        f"Mishkin et al.: {MISHKIN_CITE}. Their numbers are given as reported in this project's issue 5 "
        "(top-1 accuracy differences, converted here to error by a sign flip) and were not re-checked "
        "against the paper's tables for this report. ImageNet at 128 px is closest to the imagenette "
        "preset's resolution but has 1000 classes, so no preset here matches their setting exactly. "
        "Krizhevsky et al.'s deltas are from the sections cited; their ten-view numbers are on "
        "ILSVRC-2010 test (§6)."))
    return blocks


def _commands(an: A.PresetAnalysis, report_cmd: str) -> list:
    seen, lines = set(), []
    for r in sorted(an.runs, key=lambda r: (r.label, r.seed, str(r.path))):
        c = command_text(r.meta.get("command"))
        if c and c not in seen:
            seen.add(c)
            lines.append(c)
    return [D.Heading(2, "6. Commands"),
            D.Para("The commands recorded in the runs (deduplicated), then the command that built this report."),
            D.Code(lines or ["(no command recorded in the runs)"]), D.Code([report_cmd])]


def _completeness(an: A.PresetAnalysis, root) -> list:
    blocks = [D.Heading(2, "7. Completeness")]
    if an.missing:
        blocks.append(D.Para(f"Runs the ablations of this preset need but that are absent or did not finish "
                             f"(seeds expected per arm: {', '.join(map(str, an.expected_seeds))}, those seen for "
                             "the baseline or 0, 1, 2 by default):"))
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
    counts = Counter(r.verdict for c in an.comparisons for r in c.rows)
    parts = [f"{v}: {n}" for v, n in sorted(counts.items(), key=lambda kv: S.VERDICTS.index(kv[0])
                                            if kv[0] in S.VERDICTS else 99)]
    n_done = sum(1 for r in an.runs if C.is_counted(r))
    return D.Para(f"{len(an.runs)} runs ({n_done} finished), {len(an.comparisons)} ablations. Verdicts over "
                  f"the compared metrics: {'; '.join(parts) or 'none'}. Missing or unfinished: "
                  f"{len(an.missing)} (section 7).")


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
    """Write report.md, report.pdf and figures/*.png for the runs under `runs_root`.

    runs_root: default `reproduce.runs.default_root()`; out_dir: default
    `<runs_root>/report`; preset: only this preset's section (it is written even
    with no runs, listing what is missing). Returns a `Report` with the paths and
    the per-preset analyses.
    """
    root = Path(runs_root) if runs_root is not None else R.default_root()
    out = Path(out_dir) if out_dir is not None else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    if command is None:
        command = f"python -m reports --runs {shlex.quote(str(root))} --out {shlex.quote(str(out))}" + (
            f" --preset {preset}" if preset else "")
    grouped = C.load(root)
    presets = [preset] if preset else C.preset_order(grouped)

    doc = D.Document(TITLE)
    report = Report(out, out / "report.md", out / "report.pdf", document=doc)
    doc.add(D.Para(f"Runs root: {code(root)}. Built by {code(command)} from the run directories alone "
                   "(results, metrics, per-image correctness and kernels); it loads no training code."))
    if not grouped:
        doc.add(D.Para(f"No runs found under {code(root)} (no run directory with config.json)."))
    elif preset and preset not in grouped:
        doc.add(D.Para(f"No runs of preset {code(preset)} under {code(root)}; presets present: "
                       f"{', '.join(code(p) for p in C.preset_order(grouped))}."))
    if len(presets) > 1:
        doc.add(D.Para("Presets in this report (one section each): " + ", ".join(code(p) for p in presets) + "."))
    for p in presets:
        labels = grouped.get(p, {})
        if not labels and not preset:
            continue
        an = A.analyze_preset(p, labels, root)
        report.analyses[p] = an
        doc.add(D.Heading(1, f"Preset {p}"))
        if not labels:
            doc.add(D.Para(f"No runs of this preset yet."))
        doc.add(_summary(an))
        doc.add(*_what_was_run(an))
        doc.add(*_main_table(an))
        doc.add(*_overfitting(an))
        doc.add(*_figures(an, out, report.figures))
        doc.add(*_published(an))
        doc.add(*_commands(an, command))
        doc.add(*_completeness(an, root))
    doc.add(*_bench(root))

    report.markdown.write_text(D.to_markdown(doc))
    D.to_pdf(doc, report.pdf)
    return report
