"""Kind "paired": a baseline arm and a variant arm, each trained on every seed.

Most of the paper's claims: the variant switches one feature off (or changes one
choice), everything else equal, and the two arms are compared seed by seed
(`reports.stats`: paired t on the per-seed differences, Welch's t when the arms'
seeds differ, the paired bootstrap over validation images beside it). The rows
follow the claim's metric (`ablations.registry.Claim.metric`): validation top-1
(and top-5) error; the overfitting gap (val - clean train top-1) with the final
errors beside it; or early learning (§5: the mean validation error over the
epochs at the initial learning rate) with the final errors beside it, untested.
"""

from __future__ import annotations

import numpy as np

from ablations.kinds.base import Kind
from reports import measures


class Paired(Kind):
    name = "paired"

    def compare(self, preset: str, ab, labels: dict, prefer_base: str | None = None):
        comp = measures.arms_comparison(preset, ab, labels, prefer_base=prefer_base)
        add_rows(comp)
        measures.check_arms(comp)
        return comp


def add_rows(comp) -> None:
    """The rows of two trained arms compared by the claim's metric (see the module
    docstring); the comparison gets a learning-curves panel."""
    a, claim, pair = comp.ablation, comp.claim, comp.pair
    bruns = pair.base.counted if pair.base else []
    vruns = pair.variant.counted if pair.variant else []
    comp.curves = True
    if claim.metric == "gap":
        b, v = measures.gap_values(pair.base), measures.gap_values(pair.variant)
        shift = (
            float(
                np.mean([vr.result["train_top1_err_clean"] for vr in vruns if vr.seed in v])
                - np.mean([br.result["train_top1_err_clean"] for br in bruns if br.seed in b])
            )
            if b and v
            else 0.0
        )
        ici, why = (
            measures.image_interval(bruns, vruns, "top1_center", "top1_center", -shift) if b and v else (None, "")
        )
        notes = [f"image CI: {why}"] if why else []
        comp.rows.append(
            measures.delta_row(a.name, "gap", claim, b, v, ici, notes, label="gap: val top-1 - train top-1 (clean)")
        )
        if b and float(np.mean(list(b.values()))) < measures.SMALL_GAP:
            comp.tags.append(
                f"baseline gap {100 * float(np.mean(list(b.values()))):+.1f} pts: the budget ends before overfitting"
            )
            comp.notes.append(
                f"the baseline's own gap is {100 * float(np.mean(list(b.values()))):+.1f} points: at this "
                "budget the net has not begun to overfit, so a claim about overfitting has little room to "
                "show (a longer budget would)"
            )
    if claim.metric == "early":
        k = measures.early_epoch(pair.base)
        if k is None:
            comp.notes.append("no configured epoch count, so no early-learning epoch")
        else:
            b, v = measures.early_values(pair.base, k), measures.early_values(pair.variant, k)
            comp.rows.append(
                measures.delta_row(
                    a.name,
                    "early",
                    claim,
                    b,
                    v,
                    None,
                    ["image CI: per-image results exist for the final epoch only"],
                    label=measures.early_label(k),
                )
            )
            comp.notes.append(
                f"§5 claims faster early learning, so the test is the {measures.early_label(k)} (the "
                "epochs at the initial learning rate, from metrics.csv: an area under the early "
                "learning curve); the final errors are shown beside it, untested"
            )
    for metric, key in measures.error_metrics(comp) if claim.metric != "gap" else ():
        b = measures.result_values(pair.base, f"val_{key}_err")
        v = measures.result_values(pair.variant, f"val_{key}_err")
        ici, why = measures.image_interval(bruns, vruns, f"{key}_center", f"{key}_center") if b and v else (None, "")
        notes = [f"image CI: {why}"] if why else []
        role = "primary" if metric == "top-1" and claim.metric == "error" else "secondary"
        comp.rows.append(measures.delta_row(a.name, metric, claim, b, v, ici, notes, role, f"val {metric} err"))


KIND = Paired()
