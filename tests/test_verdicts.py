"""The verdict rules a referee checks: no verdict from an arm that collapsed to chance,
from a confounded comparison, or from an overfitting claim while the baseline does not
overfit; budget-limited claims across budgets; intervals beside the verdicts that agree
with the test; fragile verdicts; Figure 1's counting rules.

Runs are fabricated with tests/test_report.py's writer (no training)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from reports import build_report
from reports import stats as S

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_report import N_IMG, fig1_curve, make_run  # noqa: E402

pytestmark = pytest.mark.one_backend


def _primary(rep, preset, name):
    return rep.analyses[preset].comparison(name).primary


def test_claims_on_the_papers_own_data_lead_the_summary_and_an_epochs_ratio_alone_does_not(tmp_path, monkeypatch):
    """Figure 1 and the CIFAR-10 LRN claim were measured by the paper on CIFAR-10:
    their rows come first. An epochs ratio measured for an ImageNet claim (a fair
    tanh test) is not at the paper's scale and stays with the other rows."""
    from ablations import registry
    from ablations.registry import Ablation, Claim

    ab = Ablation(
        name="tanh_elsewhere",
        description="tanh against ReLU, each at its own learning rate",
        overrides={"model.activation": "tanh"},
        presets=("imagenette-cpu",),  # a preset listed before cifar10
        kind="lr_grid",
        base_overrides={"train.stop_at_train_error": 0.25, "train.epochs": 8},
        lr_grid=(0.01,),
        claims={"*": Claim("§3.1", "ReLUs train several times faster", metric="epochs")},
    )
    monkeypatch.setitem(registry.ABLATIONS, ab.name, ab)
    root = tmp_path / "runs"
    for label, reach in (("tanh_elsewhere.base", 3), ("tanh_elsewhere", 6)):
        for s in (0, 1, 2):
            curve = [{"epoch": e, "top1_err": 0.25 + 0.02 * (reach + s % 2 - 1 - e)} for e in range(reach + s % 2)]
            extra = {"data.source": "synthetic", "train.learning_rate": 0.01}
            make_run(root, "imagenette-cpu", label, s, curve=curve, extra=extra, epochs_to_target=reach)
    cifar = {"data.source": "../shared/data/cifar10-jpeg.tar.xz"}
    for s in (0, 1):
        make_run(root, "cifar10", "baseline", s, top1=60 + s, extra=cifar)
        make_run(root, "cifar10", "no_lrn", s, top1=66 + 2 * s, extra=cifar)
    md = build_report(root, tmp_path / "out").markdown.read_text()
    summary = md[md.index("## Summary") :]
    rows = [line for line in summary.splitlines() if line.startswith(("| imagenette-cpu", "| cifar10"))]
    first = rows[0]
    assert first.startswith("| cifar10 ") and "`no_lrn` §3.3" in first
    assert any("`tanh_elsewhere`" in row for row in rows[1:])


# -- withheld verdicts ---------------------------------------------------------------


def test_an_arm_at_chance_in_one_seed_gets_no_verdict(tmp_path):
    """A variant at chance (4 classes: 75% error) in one of three seeds: its delta is
    huge and 'significant', but a collapsed arm says nothing about the claim."""
    root = tmp_path / "runs"
    for s in (0, 1, 2):
        make_run(root, "smoke", "baseline", s, top1=60 + s, train_clean=0.2)
        make_run(root, "smoke", "no_lrn", s, top1=(180 if s == 0 else 64 + 2 * s), train_clean=0.2)
    rep = build_report(root, tmp_path / "out")
    row = _primary(rep, "smoke", "no_lrn")
    assert row.verdict == S.COLLAPSED == "collapsed (training diverged; claim untested)"
    assert math.isnan(row.mde) and row.seeds_needed is None
    comp = rep.analyses["smoke"].comparison("no_lrn")
    col = comp.collapse["no_lrn"]
    assert col.seeds == [0] and col.n == 3 and col.error == pytest.approx(180 / N_IMG)
    assert "at chance in 1/3 seeds" in comp.tags[0]
    # Not in the correction's family: it was not tested.
    assert rep.analyses["smoke"].family == 0 and math.isnan(row.p_adj)
    md = rep.markdown.read_text()
    assert S.COLLAPSED in md and "`no_lrn` at chance in 1/3 seeds (75.0%)" in md
    # A slow arm that has begun to learn is not collapsed: 10 classes, 3,925 images,
    # 85.8% error is nine binomial standard errors below chance (90%).
    assert S.collapsed(0.858, 10, 3925) is False and S.collapsed(0.895, 10, 3925) is True


def test_a_collapse_records_dead_fc7_units_where_the_run_has_them(tmp_path):
    root = tmp_path / "runs"
    for s in (0, 1):
        make_run(root, "smoke", "baseline", s, top1=60 + s, train_clean=0.2)
        p = make_run(root, "smoke", "bias_init", s, top1=180, train_clean=0.75)
        res = __import__("json").loads((p / "result.json").read_text())
        res["fc7_dead_fraction"] = 0.99
        (p / "result.json").write_text(__import__("json").dumps(res))
    rep = build_report(root, tmp_path / "out")
    assert _primary(rep, "smoke", "bias_init").verdict == S.COLLAPSED
    assert "dead fc7 units 99%, 99%" in rep.analyses["smoke"].comparison("bias_init").tags[0]


def test_a_confounded_claim_is_not_reproduced(tmp_path):
    """tanh on the ImageNet presets keeps ReLU's rate and biases: a large, significant
    delta in the claimed direction would otherwise read 'reproduced'."""
    root = tmp_path / "runs"
    for s in (0, 1, 2):
        make_run(root, "smoke", "baseline", s, top1=60 + s, train_clean=0.2)
        make_run(root, "smoke", "tanh", s, top1=100 + 3 * s, train_clean=0.3)
    rep = build_report(root, tmp_path / "out")
    row = _primary(rep, "smoke", "tanh")
    assert row.verdict == S.CONFOUNDED == "confounded: untested"
    assert "learning rate" in row.withheld_why
    assert row.ci.ok and row.ci.lo > 0  # the delta is still measured and shown
    assert "| reproduced |" not in rep.markdown.read_text()
    # No test result leaks: no p in claims.csv, no p in the tests table.
    import pandas as pd

    claims = pd.read_csv(rep.out_dir / "claims.csv")
    tanh = claims[(claims.ablation == "tanh") & (claims.preset == "smoke")]
    assert tanh.p.isna().all() and tanh.p_adjusted.isna().all() and tanh.mde.isna().all()


def test_an_overfitting_claim_is_not_testable_while_the_baseline_does_not_overfit(tmp_path):
    root = tmp_path / "runs"
    for s in (0, 1, 2):  # baseline: val 25-26%, clean train 24%: a 1-2 point gap
        make_run(root, "smoke", "baseline", s, top1=60 + s, train_clean=0.24)
        make_run(root, "smoke", "no_dropout", s, top1=70 + 2 * s, train_clean=0.20)
        make_run(root, "smoke", "no_pca_color", s, top1=66 + s, train_clean=0.24)
        make_run(root, "smoke", "no_lrn", s, top1=66 + s, train_clean=0.24)
    rep = build_report(root, tmp_path / "out")
    for name in ("no_dropout", "no_pca_color"):
        row = _primary(rep, "smoke", name)
        assert row.verdict == S.NOT_TESTABLE, name
        assert row.seeds_needed is None and math.isnan(row.mde)
    assert _primary(rep, "smoke", "no_lrn").verdict not in S.WITHHELD  # not a claim about overfitting
    # With a baseline that overfits, the same claim is tested.
    root2 = tmp_path / "runs2"
    for s in (0, 1, 2):
        make_run(root2, "smoke", "baseline", s, top1=60 + s, train_clean=0.10)
        make_run(root2, "smoke", "no_dropout", s, top1=70 + 2 * s, train_clean=0.05)
    row = _primary(build_report(root2, tmp_path / "out2"), "smoke", "no_dropout")
    assert row.verdict not in S.WITHHELD and math.isfinite(row.p_adj)


# -- across budgets --------------------------------------------------------------------


def _lrn_pair(root, preset, seeds, base, delta):
    for s in seeds:
        make_run(root, preset, "baseline", s, top1=base + s, extra={}, classes=10, train_clean=0.3)
        make_run(root, preset, "no_lrn", s, top1=base + s + delta + (s % 2), extra={}, classes=10, train_clean=0.3)


def test_an_effect_that_shrinks_with_budget_is_budget_limited(tmp_path):
    """no_lrn: -6.8 points at 6 epochs, -1.6 at 12 (the published pattern, scaled)."""
    root = tmp_path / "runs"
    _lrn_pair(root, "imagenette-cpu", (0, 1, 2), 120, -16)
    _lrn_pair(root, "imagenette-cpu-x2", (0,), 80, -4)
    rep = build_report(root, tmp_path / "out")
    short = _primary(rep, "imagenette-cpu", "no_lrn")
    assert short.verdict == S.BUDGET_LIMITED
    assert [(p, e) for p, e, _ in short.budgets] == [("imagenette-cpu", 6), ("imagenette-cpu-x2", 12)]
    tag = rep.analyses["imagenette-cpu"].comparison("no_lrn").tags[-1]
    assert "at 6 epochs (imagenette-cpu)" in tag and "at 12 epochs (imagenette-cpu-x2)" in tag
    # The verdict does not depend on which presets the report is built for.
    one = build_report(root, tmp_path / "one", preset="imagenette-cpu")
    assert list(one.analyses) == ["imagenette-cpu"]
    assert _primary(one, "imagenette-cpu", "no_lrn").verdict == S.BUDGET_LIMITED
    # An effect that holds at the longer budget keeps its verdict.
    root2 = tmp_path / "runs2"
    _lrn_pair(root2, "imagenette-cpu", (0, 1, 2), 120, -16)
    _lrn_pair(root2, "imagenette-cpu-x2", (0,), 80, -14)
    assert _primary(build_report(root2, tmp_path / "out2"), "imagenette-cpu", "no_lrn").verdict != S.BUDGET_LIMITED


# -- intervals consistent with the verdicts ------------------------------------------------


def test_intervals_beside_verdicts_are_simultaneous_and_agree_with_the_test(tmp_path):
    root = tmp_path / "runs"
    deltas = {"no_lrn": (9, 11, 10), "no_overlap_pool": (1, 6, -2), "one_tower": (4, 3, 6)}
    for s in (0, 1, 2):
        make_run(root, "smoke", "baseline", s, top1=60 + 3 * s, train_clean=0.05)
        for name, d in deltas.items():
            make_run(root, "smoke", name, s, top1=60 + 3 * s + d[s], train_clean=0.05)
    rep = build_report(root, tmp_path / "out")
    an = rep.analyses["smoke"]
    tested = {c.name: c.primary for c in an.comparisons if c.primary is not None and math.isfinite(c.primary.p_adj)}
    assert set(tested) == set(deltas) and an.family == 3
    level = 1 - 0.05 / 3
    for name, row in tested.items():
        d = np.array(deltas[name]) / N_IMG
        t = sps.ttest_1samp(d, 0.0)
        lo, hi = t.confidence_interval(level)
        assert (row.ci.lo, row.ci.hi) == pytest.approx((lo, hi), rel=1e-9), name
        assert row.level == pytest.approx(level)
        assert row.p_adj == pytest.approx(min(1.0, 3 * t.pvalue), rel=1e-9)
        significant = row.p_adj < 0.05
        assert significant == (row.ci.lo > 0 or row.ci.hi < 0), name  # never an interval off 0 beside "n.s."
        assert (row.direction_verdict != S.DIR_NS) == significant
    assert "98.3% simultaneous" in rep.markdown.read_text()


def test_paired_and_welch_disagreeing_is_called_fragile(tmp_path):
    """Seeds that move both arms together: the paired test sees a steady +2 points, Welch's t
    sees two overlapping clouds."""
    root = tmp_path / "runs"
    base = {0: 40, 1: 70, 2: 100, 3: 55}
    for s, b in base.items():
        make_run(root, "smoke", "baseline", s, top1=b, train_clean=0.05)
        make_run(root, "smoke", "no_lrn", s, top1=b + 5 + (s % 2), train_clean=0.05)
    rep = build_report(root, tmp_path / "out")
    row = _primary(rep, "smoke", "no_lrn")
    assert row.p_adj < 0.05 and row.ci.method == "paired t"
    assert sps.ttest_ind([b + 5 + (s % 2) for s, b in base.items()], list(base.values()), equal_var=False).pvalue > 0.05
    assert "Welch" in row.fragile and "(fragile)" in rep.markdown.read_text()


# -- Figure 1 -----------------------------------------------------------------------------


def test_fractional_crossing_by_hand():
    # From chance (0.9): 0.5 after epoch 1, 0.3 after 2, 0.2 after 3; 25% is crossed half way through epoch 3.
    assert S.fractional_epochs_to_target([0.5, 0.3, 0.2], 0.25, 0.9) == pytest.approx(2.5)
    assert S.fractional_epochs_to_target([0.1], 0.25, 0.9) == pytest.approx(0.8 / 0.8 * 1 - (0.25 - 0.1) / 0.8)
    assert S.fractional_epochs_to_target([0.5, 0.4], 0.25, 0.9) is None
    assert S.fractional_epochs_to_target([0.5, float("nan"), 0.2], 0.25, 0.9) is None
    # Read at mid-epoch: 0.5 at 0.5, 0.3 at 1.5, 0.2 at 2.5; 25% is crossed at 2.0.
    assert S.fractional_epochs_to_target([0.5, 0.3, 0.2], 0.25, 0.9, at=0.5) == pytest.approx(2.0)


def _curve(errors):
    return [{"epoch": e, "top1_err": x} for e, x in enumerate(errors)]


def _crossing(errors, target=0.25, start=0.75, at=1.0):
    """Independently: where the piecewise-linear curve through (0, start), (at, e1),
    (1 + at, e2), ... first meets the target (np.interp on the segment that brackets it)."""
    xs, pts = [0.0] + [i + at for i in range(len(errors))], [start, *errors]
    for i in range(1, len(pts)):
        if pts[i] <= target:
            return float(np.interp(-target, [-pts[i - 1], -pts[i]], [xs[i - 1], xs[i]]))
    return None


def test_figure1_gives_the_ratio_under_every_counting_rule(tmp_path):
    from test_report import config_for

    from ablations.kinds.lr_grid import GRID_SEED

    root = tmp_path / "runs"
    relu = {0: [0.5, 0.3, 0.2], 1: [0.5, 0.26, 0.24], 2: [0.6, 0.4, 0.28, 0.22]}
    tanh = {s: [0.7 - 0.03 * e for e in range(n)] for s, n in ((0, 16), (1, 17), (2, 18))}
    whole = lambda c: next(i + 1 for i, x in enumerate(c) if x <= 0.25)  # noqa: E731
    for s in (0, 1, 2):
        make_run(root, "smoke", "fig1_tanh.base", s, curve=_curve(relu[s]), epochs_to_target=whole(relu[s]))
        make_run(root, "smoke", "fig1_tanh", s, curve=_curve(tanh[s]), epochs_to_target=whole(tanh[s]))
    # The selection seed's grid runs at the chosen rates (the seeded runs' rates).
    lr_b = config_for("smoke", "fig1_tanh.base").train.learning_rate
    lr_v = config_for("smoke", "fig1_tanh").train.learning_rate
    make_run(root, "smoke", "fig1_tanh.base.grid", GRID_SEED, curve=fig1_curve(2), epochs_to_target=2, lr=lr_b)
    make_run(root, "smoke", "fig1_tanh.grid", GRID_SEED, curve=fig1_curve(12), epochs_to_target=12, lr=lr_v)
    rep = build_report(root, tmp_path / "out")
    f1 = rep.analyses["smoke"].comparison("fig1_tanh").extra
    gm = lambda xs: math.exp(np.mean(np.log(xs)))  # noqa: E731
    by_whole = [whole(tanh[s]) / whole(relu[s]) for s in relu]
    assert f1.rules[0].name.startswith("whole epochs") and f1.rules[0].estimate == pytest.approx(gm(by_whole))
    interp = next(r for r in f1.rules if r.name.startswith("the crossing interpolated within its epoch"))
    assert interp.estimate == pytest.approx(gm([_crossing(tanh[s]) / _crossing(relu[s]) for s in relu]))
    assert interp.estimate != pytest.approx(f1.rules[0].estimate)
    # The log's value is the epoch's running mean: read at mid-epoch, both arms cross half an epoch earlier.
    mid = next(r for r in f1.rules if "middle of its epoch" in r.name)
    assert mid.estimate == pytest.approx(gm([_crossing(tanh[s], at=0.5) / _crossing(relu[s], at=0.5) for s in relu]))
    pair = next(r for r in f1.rules if "one more pair" in r.name)
    assert pair.n == 4 and pair.estimate == pytest.approx(gm(by_whole + [12 / 2]))
    alone = next(r for r in f1.rules if r.name.endswith("(its grid runs at the chosen rates)"))
    assert alone.estimate == pytest.approx(6.0) and alone.ci is None
    lo, hi = f1.rule_range
    assert (lo, hi) == pytest.approx((min(r.estimate for r in f1.rules), max(r.estimate for r in f1.rules)))
    md = rep.markdown.read_text()
    # Three ways of counting epochs, and two rules that change which seeds count.
    assert [r.by_seed for r in f1.rules] == [False, False, False, True, True]
    assert f"x{lo:.2f}-x{hi:.2f} over 3 counting rules and 2 seed choices" in md
    # "Moves the ratio more than its interval" only where the range reaches outside the test's interval.
    test_ci = f1.rules[0].ci
    wider = lo < test_ci.lo or hi > test_ci.hi
    assert ("How the epochs are counted moves the ratio more than its interval" in md) == wider
    assert ("(the range lies within the test's interval over seeds)" in md) == (not wider)


def test_the_counting_rules_are_said_to_move_the_ratio_only_where_they_reach_past_its_interval():
    from ablations.kinds.lr_grid import rules_lead

    ci = S.ratio_interval({0: 3, 1: 3, 2: 4}, {0: 18, 1: 19, 2: 22}, 0.95)
    assert ci.ok and ci.lo < 5.5 < ci.hi
    inside = (ci.lo * 1.01, ci.hi * 0.99)
    assert rules_lead(ci, inside).endswith("(the range lies within the test's interval over seeds)")
    for past in ((ci.lo * 0.9, ci.hi * 0.99), (ci.lo * 1.01, ci.hi * 1.1)):
        assert rules_lead(ci, past).startswith("How the epochs are counted moves the ratio more than its interval")
    # No interval (every seed gave the same ratio): nothing to compare the range with.
    flat = S.ratio_interval({0: 3, 1: 3}, {0: 9, 1: 9}, 0.95)
    assert not flat.ok and rules_lead(flat, (3.0, 3.5)) == "The ratio under each counting rule"


def test_seeds_trained_past_the_target_give_time_to_target_and_final_error(tmp_path, monkeypatch):
    """The fair tanh test's seeds train on past the target to a fixed budget: the
    time to target is their epochs' own times up to it (not the whole budget's wall
    time), and the error at the budget is reported per arm with the paired
    difference in validation error, without a verdict (§3.1 claims speed)."""
    from ablations import registry
    from ablations.registry import Ablation, Claim

    ab = Ablation(
        name="tanh_budget",
        description="tanh against ReLU, each at its own learning rate",
        overrides={"model.activation": "tanh"},
        presets=("smoke",),
        kind="lr_grid",
        base_overrides={"train.stop_at_train_error": 0.25, "train.epochs": 12},
        seed_overrides={"train.stop_at_target": False, "train.epochs": 8},
        lr_grid=(0.01,),
        arm_names=("ReLU", "tanh"),
        arm_title="Activation",
        claims={
            "*": Claim(
                "§3.1", "ReLUs train several times faster", metric="epochs", setting="smoke", caveat="At 25% error."
            )
        },
    )
    monkeypatch.setitem(registry.ABLATIONS, ab.name, ab)
    root = tmp_path / "runs"
    seeds = (0, 1, 2)
    reach = {"tanh_budget.base": 3, "tanh_budget": 6}
    per_epoch = {"tanh_budget.base": 10.0, "tanh_budget": 12.0}
    wrong = {"tanh_budget.base": (60, 66, 72), "tanh_budget": (90, 84, 99)}
    for label in reach:
        for s in seeds:
            curve = [
                {"epoch": e, "top1_err": 0.25 + 0.02 * (reach[label] - 1 - e), "epoch_time_s": per_epoch[label]}
                for e in range(8)
            ]
            make_run(
                root,
                "smoke",
                label,
                s,
                curve=curve,
                extra={"train.stop_at_target": False, "train.epochs": 8, "train.learning_rate": 0.01},
                top1=wrong[label][s],
                wall=1000.0,
                epochs_to_target=reach[label],
            )
    rep = build_report(root, tmp_path / "out")
    f1 = rep.analyses["smoke"].comparison("tanh_budget").extra
    assert {s: t.epochs for s, t in f1.base_ttt.items()} == {0: 3, 1: 3, 2: 3}
    assert f1.arm_walls == {"relu": {s: 30.0 for s in seeds}, "tanh": {s: 72.0 for s in seeds}}
    md = rep.markdown.read_text()
    # The summary row's notes: the one-sentence caveat, then the next note, no ".;" between.
    summary = next(line for line in md.splitlines() if line.startswith("| smoke") and "`tanh_budget`" in line)
    assert summary.split(" | ")[-1].startswith("At 25% error; ")
    section = md[md.index("ReLU vs tanh (`tanh_budget`)") :]
    assert "(the seeds train on past the target to a fixed budget)" in section
    base = [100.0 * w / N_IMG for w in wrong["tanh_budget.base"]]
    var = [100.0 * w / N_IMG for w in wrong["tanh_budget"]]
    diff = np.subtract(var, base)
    t = sps.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / math.sqrt(len(diff))
    assert (
        f"Validation top-1 error after 8 epochs, tanh - ReLU: {diff.mean():+.2f} points, "
        f"95% CI [{diff.mean() - t:+.2f}, {diff.mean() + t:+.2f}] (paired t, n = 3)"
    ) in section
    final = section[section.index("| Activation | lr | n | Train top-1 err, clean") :]
    row = next(line for line in final.splitlines() if line.startswith("| tanh | 0.01 | 3 |"))
    assert row.split(" | ")[4] == f"{np.mean(var):.1f} ± {np.std(var, ddof=1):.1f}"
    assert "Error after 8 epochs" in section
