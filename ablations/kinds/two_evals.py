"""Kind "two_evals": two evaluations of the same trained runs.

single_view_eval (§6): the baseline arm's runs, each evaluated on ten views
(four corner crops, the centre crop and their flips, softmax averaged) and on the
centre crop alone. Nothing is trained beyond the baseline's seeds; the "baseline"
of the comparison is the ten-view error, the "variant" the centre-crop error of
the same runs, so the delta is what ten-view testing gains. The image bootstrap
pairs the two evaluations image by image.
"""

from __future__ import annotations

from ablations.kinds.base import Kind
from reports import measures

# The two evaluations, "baseline" first: result.json key and val_correct.npz array
# per metric key ("top1", "top5").
BASE_EVAL = ("val_{key}_err_10view", "{key}_10view")
VARIANT_EVAL = ("val_{key}_err", "{key}_center")
LABEL = " (10-view -> centre)"


class TwoEvals(Kind):
    name = "two_evals"
    trains_variant = False

    def compare(self, preset: str, ab, labels: dict, prefer_base: str | None = None):
        comp = measures.arms_comparison(preset, ab, labels, same_runs=True, prefer_base=prefer_base)
        claim, pair = comp.claim, comp.pair
        runs = pair.base.counted if pair.base else []
        for metric, key in measures.error_metrics(comp):
            b = measures.result_values(pair.base, BASE_EVAL[0].format(key=key))
            v = measures.result_values(pair.base, VARIANT_EVAL[0].format(key=key))
            v = {s: x for s, x in v.items() if s in b}
            ici, why = (
                measures.image_interval(runs, runs, BASE_EVAL[1].format(key=key), VARIANT_EVAL[1].format(key=key))
                if b
                else (None, "no ten-view results")
            )
            notes = [f"image CI: {why}"] if why else []
            role = "primary" if metric == "top-1" and claim.metric == "error" else "secondary"
            comp.rows.append(
                measures.delta_row(ab.name, metric, claim, b, v, ici, notes, role, f"val {metric} err{LABEL}")
            )
        measures.check_arms(comp, same_runs=True)
        return comp

    def difference_text(self, comp) -> str | None:
        return "same runs, evaluated two ways"


KIND = TwoEvals()
