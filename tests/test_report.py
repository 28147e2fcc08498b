"""The report generator on fixture run directories with known numbers.

The fixture is written with reproduce.runs' writer functions; every number the
report prints is checked against an independent NumPy/SciPy computation.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from ablations.kinds.lr_grid import GRID_SEED
from ablations.registry import ABLATIONS, get_ablation
from reports import build_report
from reports import stats as S
from reproduce import runs as R
from reproduce.config import apply_overrides, get_config, validate

# Code that runs no Keras model differently per backend: `make test` runs it once.
pytestmark = pytest.mark.one_backend

REPO = Path(__file__).resolve().parents[1]
N_IMG = 240  # validation images per run: errors are multiples of 1/240
EPOCHS = 5
EXTRA = {"train.epochs": EPOCHS}  # every fixture run: a budgeted 5-epoch schedule
COMMAND = "python -m ablations run --preset smoke --seeds 0,1,2 --set train.epochs=5"

# Wrong top-1 counts (of N_IMG) per seed. Deltas are exact multiples of 1/240.
BASE_TOP1 = {0: 120, 1: 126, 2: 123}
BASE_TOP5 = {0: 30, 1: 33, 2: 31}
BASE_TOP1_10V = {0: 114, 1: 122, 2: 116}
NO_LRN_TOP1 = {0: 126, 1: 131, 2: 130}
NO_LRN_TOP5 = {0: 35, 1: 34, 2: 37}
NO_PCA_TOP1 = {0: 127, 1: 125}  # seeds 0, 1 only: Welch
TANH_TOP1 = {0: 150, 1: 160, 2: 155}
LRN_CONV_TOP1 = {0: 121, 1: 125, 2: 124}
TRAIN_CLEAN = {"baseline": (0.30, 0.31, 0.29), "no_crop_flip": (0.05, 0.07, 0.06), "no_dropout": (0.20, 0.18, 0.21)}
NO_CROP_TOP1 = {0: 140, 1: 142, 2: 139}
NO_DROP_TOP1 = {0: 130, 1: 128, 2: 133}
FIG1_RELU = {0: 3, 1: 3, 2: 4}  # epoch (1-based) where training error first <= 25%
FIG1_TANH = {0: 15, 1: 18, 2: None}  # seed 2 never gets there in 20 epochs: censored
BIAS_TOP1 = {0: 121, 1: 125, 2: 123}  # bias_init's final errors: about the baseline's
BIAS_EARLY_DROP = {0: 0.080, 1: 0.082, 2: 0.079}  # bias 1 is ahead after the first epoch


def base_curve(seed, top1=None, train_clean=None):
    """The curve make_run draws by default, explicitly (val error after each epoch)."""
    top1 = BASE_TOP1[seed] if top1 is None else top1
    tc = TRAIN_CLEAN["baseline"][seed] if train_clean is None else train_clean
    return [
        {"epoch": e, "top1_err": tc + 0.1 * (EPOCHS - e), "val_top1_err": top1 / N_IMG + 0.05 * (EPOCHS - 1 - e)}
        for e in range(EPOCHS)
    ]


def config_for(preset: str, label: str, extra=None):
    """The resolved configuration the runner would build for `label`."""
    if label == "baseline":
        cfg = get_config(preset)
    else:
        name = label.split(".")[0]
        a = get_ablation(name)
        cfg = a.base_config(preset) if ".base" in label else a.variant_config(preset)
    apply_overrides(cfg, extra or {})
    return validate(cfg)


def correct_arrays(k_wrong: int, seed: int, n: int = N_IMG) -> np.ndarray:
    ok = np.ones(n, bool)
    ok[np.random.default_rng(1000 + seed * 7 + k_wrong).permutation(n)[:k_wrong]] = False
    return ok


def make_run(
    root,
    preset,
    label,
    seed,
    *,
    top1=None,
    top5=None,
    top1_10v=None,
    train_clean=0.3,
    extra=None,
    curve=None,
    finished=True,
    failure=None,
    date="2025-03-01T10:00:00+00:00",
    wall=100.0,
    kernels=False,
    epochs_to_target=None,
    lr=None,
    n_img=N_IMG,
    classes=4,
    val_correct=True,
    device="cpu",
):
    extra = dict(EXTRA if extra is None else extra)
    if lr is not None:
        extra["train.learning_rate"] = lr
    cfg = config_for(preset, label, extra)
    cfg.train.seed = seed
    fp = cfg.fingerprint()
    path = R.run_dir(root, preset, label, fp, seed)
    meta = {
        "preset": preset,
        "label": label,
        "seed": seed,
        "fingerprint": fp,
        "overrides": [f"{k}={v}" for k, v in extra.items()],
        "command": COMMAND if preset == "smoke" else f"python -m ablations run --preset {preset}",
    }
    R.write_config(path, cfg.to_dict(), meta)
    R.write_env(
        path,
        {
            "date": date,
            "host": "fixture-host",
            "processor": "x86_64",
            "device": device,
            "backend": "jax",
            "versions": {"keras": "3.6.0", "jax": "0.4.35"},
            "python": "3.11.7",
            "git": {"commit": "0123456789abcdef", "dirty": False},
            "num_classes": classes,
        },
    )
    top1 = 120 if top1 is None else top1
    top5 = 30 if top5 is None else top5
    val = top1 / n_img
    if curve is None:  # a val curve that ends at the final error
        curve = [
            {"epoch": e, "top1_err": train_clean + 0.1 * (EPOCHS - e), "val_top1_err": val + 0.05 * (EPOCHS - 1 - e)}
            for e in range(EPOCHS)
        ]
    rows = [
        {
            "loss": 1.0,
            "top5_err": 0.1,
            "val_loss": 1.0,
            "val_top5_err": 0.1,
            "lr": 0.01,
            "epoch_time_s": 1.0,
            "images_per_s": 64.0,
            "val_top1_err": 0.5,
            **r,
        }
        for r in curve
    ]
    R.write_metrics_rows(path, rows)
    if failure:
        R.write_failure(path, failure, {"epoch": 2})
    if not finished:
        return path
    if val_correct:
        labels = np.arange(n_img) % classes
        t1c = correct_arrays(top1, seed, n_img)
        t5c = correct_arrays(top5, seed + 50, n_img)
        t1v = correct_arrays(top1_10v if top1_10v is not None else top1, seed + 100, n_img)
        R.write_val_correct(
            path, labels=labels, top1_center=t1c, top5_center=t5c, top1_10view=t1v, top5_10view=t5c.copy()
        )
    if kernels == "single":  # a one-tower net (cifar10's) saves its kernels under "single"
        R.write_conv1(path, single=np.random.default_rng(seed).normal(size=(5, 5, 3, 8)))
    elif kernels:
        rng = np.random.default_rng(seed)
        R.write_conv1(path, a=rng.normal(size=(11, 11, 3, 6)), b=rng.normal(size=(11, 11, 3, 6)))
    R.write_result(
        path,
        {
            "status": "ok",
            "epochs": len(curve),
            "val_top1_err": val,
            "val_top5_err": top5 / n_img,
            "val_top1_err_10view": (top1_10v / n_img) if top1_10v is not None else None,
            "val_top5_err_10view": top5 / n_img,
            "train_top1_err": curve[-1]["top1_err"],
            "train_top5_err": 0.1,
            "train_top1_err_clean": train_clean,
            "wall_time_s": wall,
            "images_per_s": 64.0,
            "epochs_to_target": epochs_to_target,
        },
    )
    return path


def fig1_curve(reach, n_epochs=20):
    """Training error falling linearly, first <= 0.25 at 1-based epoch `reach` (None: never)."""
    if reach is None:
        return [{"epoch": e, "top1_err": 0.60 - 0.01 * e} for e in range(n_epochs)]
    return [{"epoch": e, "top1_err": 0.25 + 0.02 * (reach - 1 - e)} for e in range(reach)]


def build_fixture(root: Path) -> Path:
    P = "smoke"
    # A superseded baseline: the registry's own 2-epoch config, older, one seed.
    make_run(
        root,
        P,
        "baseline",
        0,
        extra={},
        top1=200,
        date="2025-01-01T00:00:00+00:00",
        curve=[{"epoch": 0, "top1_err": 0.7}, {"epoch": 1, "top1_err": 0.6}],
    )
    for s in (0, 1, 2):
        make_run(
            root,
            P,
            "baseline",
            s,
            top1=BASE_TOP1[s],
            top5=BASE_TOP5[s],
            top1_10v=BASE_TOP1_10V[s],
            train_clean=TRAIN_CLEAN["baseline"][s],
            kernels=(s == 0),
        )
        make_run(root, P, "no_lrn", s, top1=NO_LRN_TOP1[s], top5=NO_LRN_TOP5[s])
        make_run(root, P, "tanh", s, top1=TANH_TOP1[s])
        make_run(root, P, "lrn_convention", s, top1=LRN_CONV_TOP1[s])
        make_run(root, P, "no_crop_flip", s, top1=NO_CROP_TOP1[s], train_clean=TRAIN_CLEAN["no_crop_flip"][s])
        make_run(root, P, "no_dropout", s, top1=NO_DROP_TOP1[s], train_clean=TRAIN_CLEAN["no_dropout"][s])
    for s, k in NO_PCA_TOP1.items():
        make_run(root, P, "no_pca_color", s, top1=k)
    for s in (0, 1, 2):  # bias_init: ahead early, about level at the end
        curve = base_curve(s, BIAS_TOP1[s])
        curve[0]["val_top1_err"] = base_curve(s)[0]["val_top1_err"] - BIAS_EARLY_DROP[s]
        make_run(root, P, "bias_init", s, top1=BIAS_TOP1[s], curve=curve)
    make_run(root, P, "one_tower", 0, top1=130)
    make_run(root, P, "one_tower", 1, finished=False, failure="NaN loss at epoch 2")
    make_run(root, P, "no_overlap_pool", 0, top1=124)
    make_run(root, P, "no_overlap_pool", 1, top1=125)
    make_run(root, P, "no_overlap_pool", 2, finished=False, curve=[{"epoch": 0, "top1_err": 0.8}])
    # Figure 1: seeded arms (ReLU lr 0.01, tanh lr 0.02) and the lr grid (seed 0).
    for s in (0, 1, 2):
        rc, tc = fig1_curve(FIG1_RELU[s]), fig1_curve(FIG1_TANH[s])
        make_run(
            root, P, "fig1_tanh.base", s, curve=rc, lr=0.01, wall=10.0 * FIG1_RELU[s], epochs_to_target=FIG1_RELU[s]
        )
        make_run(
            root, P, "fig1_tanh", s, curve=tc, lr=0.02, wall=10.0 * (FIG1_TANH[s] or 20), epochs_to_target=FIG1_TANH[s]
        )
    assert ABLATIONS["fig1_tanh"].lr_grid == (0.0025, 0.005, 0.01, 0.02)
    grid = {
        "fig1_tanh.base": {0.0025: "censored", 0.005: 6, 0.01: 3, 0.02: 5},
        "fig1_tanh": {0.005: None, 0.01: 19, 0.02: 15},
    }  # tanh lr 0.0025 missing
    for base, reaches in grid.items():
        for lr, reach in reaches.items():
            _grid_run(root, P, base, lr, reach)
    # A second preset: its own section.
    shared = {"data.source": "../shared/data/cifar10-jpeg.tar.xz"}
    for s in (0, 1):
        make_run(root, "cifar10", "baseline", s, top1=60 + s, extra=shared, kernels="single" if s == 0 else False)
        make_run(root, "cifar10", "no_lrn", s, top1=66 + 2 * s, extra=shared)
    from reproduce import benchfile  # bench.json's format has one owner

    bench = {
        "backend": "jax",
        "device": "cpu",
        "batch": 128,
        "path": "step",
        "mfu": None,
        "steps": 10,
        "date": "2025-01-01",
    }
    benchfile.write(
        root / "bench.json",
        benchfile.BenchFile(
            {},
            [
                {**bench, "variant": "alexnet bf16", "precision": "mixed_bfloat16", "images_per_s": 2500.5},
                {**bench, "variant": "alexnet f32", "precision": "float32", "images_per_s": 1200.25},
            ],
        ),
    )
    return root


def _grid_run(root, preset, base_label, lr, reach, device="cpu", seed=GRID_SEED):
    """A grid run: the arm's configuration at one learning rate, labelled <arm label>.grid."""
    label = base_label + ".grid"
    cfg = config_for(preset, base_label, {**EXTRA, "train.learning_rate": lr})
    cfg.train.seed = seed
    fp = cfg.fingerprint()
    path = R.run_dir(root, preset, label, fp, seed)
    R.write_config(
        path,
        cfg.to_dict(),
        {
            "preset": preset,
            "label": label,
            "seed": seed,
            "fingerprint": fp,
            "command": f"python -m ablations grid fig1_tanh --preset {preset}",
        },
    )
    R.write_env(path, {"date": "2025-02-01T00:00:00+00:00", "device": device})
    censored = reach == "censored"  # stopped after 3 epochs: the fastest rate had needed 3
    curve = fig1_curve(None)[:3] if censored else fig1_curve(reach)
    R.write_metrics_rows(path, [{"val_top1_err": 0.5, **r} for r in curve])
    R.write_result(
        path,
        {
            "status": "ok",
            "epochs": len(curve),
            "val_top1_err": 0.5,
            "val_top5_err": 0.1,
            "val_top1_err_10view": None,
            "val_top5_err_10view": None,
            "train_top1_err": curve[-1]["top1_err"],
            "train_top5_err": 0.1,
            "train_top1_err_clean": curve[-1]["top1_err"],
            "wall_time_s": 10.0 * len(curve),
            "images_per_s": 64.0,
            "epochs_to_target": None if censored else reach,
            "censored": censored,
        },
    )
    return path


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    return build_fixture(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def report(fixture_root):
    return build_report(fixture_root, fixture_root / "report")


@pytest.fixture(scope="module")
def full_md(report):
    return report.markdown.read_text()


def preset_section(md: str, preset: str) -> str:
    start = md.index(f"\n## Preset {preset}\n")
    ends = [i for i in (md.find("\n## ", start + 1),) if i > 0]
    return md[start : min(ends) if ends else len(md)]


@pytest.fixture(scope="module")
def md(full_md):
    """The smoke preset's section."""
    return preset_section(full_md, "smoke")


@pytest.fixture(scope="module")
def pdf_text(report):
    from pypdf import PdfReader

    return "".join(p.extract_text() for p in PdfReader(str(report.pdf)).pages)


def squash(s: str) -> str:
    return re.sub(r"\s+", "", s)


def table_row(md: str, first_cell: str, metric: str = "") -> list:
    for line in md.splitlines():
        if line.startswith(f"| {first_cell} |") and metric in line:
            return [c.strip() for c in line.strip("|").split(" | ")]
    raise AssertionError(f"no row {first_cell!r} {metric!r}")


def fmt_pm(values):
    x = 100 * np.asarray(values, float)
    return f"{x.mean():.2f} ± {x.std(ddof=1):.2f}"


def section(md: str, start: str, end: str = "\n### ") -> str:
    """The text from heading `start` to the next heading of the given kind."""
    i = md.index(start)
    j = md.find(end, i + len(start))
    return md[i : j if j > 0 else len(md)]


def the_tests_table(md: str) -> str:
    return section(md, "#### Tests", "\n#### ")


def primary(an, name):
    return an.comparison(name).primary


def scipy_p(row) -> float:
    """The two-sided p-value of a primary row, recomputed with SciPy from its per-seed values."""
    if row.metric == "epochs":
        return sps.ttest_1samp([math.log(row.variant[s] / row.base[s]) for s in sorted(row.base)], 0.0).pvalue
    if set(row.base) == set(row.variant):
        s = sorted(row.base)
        return sps.ttest_rel([row.variant[k] for k in s], [row.base[k] for k in s]).pvalue
    return sps.ttest_ind(list(row.variant.values()), list(row.base.values()), equal_var=False).pvalue


def hand_bonferroni(p: dict) -> dict:
    return {k: min(1.0, len(p) * v) for k, v in p.items()}


# --------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------


def test_paired_delta_matches_scipy(report, md, pdf_text):
    comp = report.analyses["smoke"].comparison("no_lrn")
    row = next(r for r in comp.rows if r.metric == "top-1")
    b = np.array([BASE_TOP1[s] for s in (0, 1, 2)]) / N_IMG
    v = np.array([NO_LRN_TOP1[s] for s in (0, 1, 2)]) / N_IMG
    res = sps.ttest_rel(v, b)
    ci = res.confidence_interval(0.95)
    # seed_ci: the per-claim 95% interval; ci: the same test's simultaneous interval beside the verdict.
    assert row.seed_ci.method == row.ci.method == "paired t"
    assert (row.ci.lo, row.ci.hi) == pytest.approx(tuple(res.confidence_interval(row.level)), abs=1e-12)
    assert row.seed_ci.estimate == pytest.approx((v - b).mean(), abs=1e-12)
    assert (row.seed_ci.lo, row.seed_ci.hi) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert row.p == pytest.approx(res.pvalue)
    d = (v - b).mean()
    cells = table_row(md, "`no_lrn`", "top-1")
    assert cells[2] == fmt_pm(b) and cells[3] == fmt_pm(v)
    assert cells[4] == f"{100 * d:+.2f}"
    assert cells[5] == f"[{100 * ci.low:+.2f}, {100 * ci.high:+.2f}]"
    assert cells[7] == "3"
    # The PDF carries the same values.
    for value in cells[2:6]:
        assert squash(value) in squash(pdf_text)


def test_welch_when_seeds_differ(report, md):
    row = next(r for r in report.analyses["smoke"].comparison("no_pca_color").rows if r.metric == "top-1")
    b = np.array(list(BASE_TOP1.values())) / N_IMG
    v = np.array(list(NO_PCA_TOP1.values())) / N_IMG
    ci = sps.ttest_ind(v, b, equal_var=False).confidence_interval(0.95)
    assert row.seed_ci.method == "Welch t"
    assert (row.seed_ci.lo, row.seed_ci.hi) == pytest.approx((ci.low, ci.high), abs=1e-12)
    cells = table_row(md, "`no_pca_color`", "top-1")
    assert cells[7] == "3/2"
    assert cells[5] == f"[{100 * ci.low:+.2f}, {100 * ci.high:+.2f}]"


def test_image_bootstrap(report):
    row = next(r for r in report.analyses["smoke"].comparison("no_lrn").rows if r.metric == "top-1")
    ici = row.image_ci
    assert ici.method == "bootstrap (images)" and ici.n == N_IMG
    assert ici.estimate == pytest.approx(row.seed_ci.estimate, abs=1e-12)
    assert ici.lo < ici.estimate < ici.hi
    comp = report.analyses["smoke"].comparison("no_lrn")
    wb = np.stack([1 - r.val_correct()["top1_center"] for r in comp.pair.base.counted])
    wv = np.stack([1 - r.val_correct()["top1_center"] for r in comp.pair.variant.counted])
    again = S.paired_bootstrap(wb, wv, 2000, 0)
    assert (again.lo, again.hi) == (ici.lo, ici.hi)


def test_eval_ablation_uses_ten_view_vs_centre(report, md):
    comp = report.analyses["smoke"].comparison("single_view_eval")
    row = next(r for r in comp.rows if r.metric == "top-1")
    b = np.array([BASE_TOP1_10V[s] for s in (0, 1, 2)]) / N_IMG
    v = np.array([BASE_TOP1[s] for s in (0, 1, 2)]) / N_IMG
    ci = sps.ttest_rel(v, b).confidence_interval(0.95)
    assert (row.seed_ci.lo, row.seed_ci.hi) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert comp.pair.base is comp.pair.variant
    assert table_row(md, "`single_view_eval`", "top-1")[4] == f"{100 * (v - b).mean():+.2f}"


def test_gap_metric(report, md):
    row = report.analyses["smoke"].comparison("no_crop_flip").rows[0]
    assert row.metric == "gap" and row.role == "primary"
    gb = np.array([BASE_TOP1[s] / N_IMG - TRAIN_CLEAN["baseline"][s] for s in (0, 1, 2)])
    gv = np.array([NO_CROP_TOP1[s] / N_IMG - TRAIN_CLEAN["no_crop_flip"][s] for s in (0, 1, 2)])
    ci = sps.ttest_rel(gv, gb).confidence_interval(0.95)
    assert row.seed_ci.estimate == pytest.approx((gv - gb).mean())
    assert (row.seed_ci.lo, row.seed_ci.hi) == pytest.approx((ci.low, ci.high))
    assert row.image_ci.estimate == pytest.approx(row.seed_ci.estimate)
    sec = md.split("## 3. Overfitting")[1].split("## 4.")[0]
    assert table_row(sec, "`baseline`")[6] == fmt_pm(gb)
    assert table_row(sec, "`no_crop_flip`")[6] == fmt_pm(gv)
    assert table_row(sec, "`no_dropout`")[3] == fmt_pm(TRAIN_CLEAN["no_dropout"])


def test_a_baseline_that_does_not_overfit_is_said_to_leave_no_room(report, tmp_path):
    assert not any("not begun to overfit" in n for n in report.analyses["smoke"].comparison("no_dropout").notes)
    root = tmp_path / "runs"
    for s in (0, 1):  # validation error 1 point above the clean training error
        make_run(root, "smoke", "baseline", s, top1=120 + s, train_clean=(120 + s) / N_IMG - 0.01)
        make_run(root, "smoke", "no_dropout", s, top1=122 + s, train_clean=(122 + s) / N_IMG - 0.02)
    built = build_report(root, tmp_path / "out")
    comp = built.analyses["smoke"].comparison("no_dropout")
    note = next(n for n in comp.notes if "not begun to overfit" in n)
    assert "+1.0 points" in note
    # ... and the one-line summary says it beside the row, not only in the notes below.
    summary = section(built.markdown.read_text(), "## Summary", "\n## ")
    cells = table_row(summary, "smoke (synthetic)", "`no_dropout`")
    assert cells[5] == S.NOT_TESTABLE
    assert cells[6] == "baseline gap +1.0 pts: the budget ends before overfitting"


def test_claims_without_numbers_and_missing_arms(report):
    an = report.analyses["smoke"]
    assert all(r.verdict == S.NO_CLAIM and r.role == "none" for r in an.comparison("lrn_convention").rows)
    # one_tower: 1 finished seed -> not measurable, and the failed seed is not averaged in.
    row = next(r for r in an.comparison("one_tower").rows if r.metric == "top-1")
    assert row.verdict == S.NOT_MEASURABLE and list(row.variant) == [0] and "one seed" in row.unmeasurable


def test_failed_and_unfinished_listed_not_averaged(report, md, pdf_text):
    an = report.analyses["smoke"]
    listed = {(r.label, r.seed) for r in an.not_counted}
    assert ("one_tower", 1) in listed and ("no_overlap_pool", 2) in listed
    row = next(r for r in an.comparison("no_overlap_pool").rows if r.metric == "top-1")
    assert sorted(row.variant) == [0, 1]
    assert row.seed_ci.method == "Welch t"  # baseline 0,1,2 vs variant 0,1
    assert "failed: NaN loss at epoch 2" in md
    assert "unfinished (1 epochs logged)" in md
    assert "NaN loss at epoch 2" in pdf_text


def test_missing_list(report, md):
    missing = {(lab, s): st for lab, s, st in report.analyses["smoke"].missing}
    assert missing[("one_tower", 1)].startswith("failed")
    assert missing[("one_tower", 2)] == "absent"
    assert missing[("no_pca_color", 2)] == "absent"
    assert missing[("no_overlap_pool", 2)].startswith("unfinished")
    assert missing[("fig1_tanh.grid (lr 0.0025)", GRID_SEED)] == "absent"
    assert ("no_lrn", 0) not in missing and ("baseline", 1) not in missing and ("bias_init", 0) not in missing
    assert not any(lab == "single_view_eval" for lab, _ in missing)  # an eval ablation trains nothing
    sec = md.split("## 7. Completeness")[1]
    assert "| `no_pca_color` | 2 | absent |" in sec


def test_superseded_group(report, md):
    an = report.analyses["smoke"]
    sup = [(g.label, len(g.runs)) for g, _ in an.superseded]
    assert ("baseline", 1) in sup
    bg = an.baseline_group()
    assert bg.seeds == [0, 1, 2]  # the 5-epoch group every comparison uses, not the older registry one
    g, diff = next(x for x in an.superseded if x[0].label == "baseline")
    assert diff["train.epochs"] == (EPOCHS, 2)
    assert "train.epochs: 2 (used: 5)" in md


def test_separate_presets(report, full_md):
    md = full_md
    assert set(report.analyses) == {"smoke", "cifar10"}
    smoke, cifar = md.index("# Preset smoke"), md.index("# Preset cifar10")
    assert cifar < smoke  # the presets' order in reproduce.config.PRESETS
    cifar_sec = preset_section(md, "cifar10")
    row = table_row(cifar_sec, "`no_lrn`", "top-1")
    assert row[2] == fmt_pm([60 / N_IMG, 61 / N_IMG])  # cifar10's own baseline, not smoke's
    cifar_main = cifar_sec.split("## 2.")[1].split("## 3.")[0]
    assert "| `fig1_tanh` |" in cifar_main and "| `tanh` |" not in cifar_main
    assert "| `tanh` |" in md[smoke:]


def test_what_was_run(md):
    sec = md.split("## 1. What was run")[1].split("## 2.")[0]
    assert "Dataset: `synthetic`" in sec
    assert "device cpu" in sec and "fixture-host" in sec and "jax" in sec
    assert "Seeds: 0, 1, 2" in sec
    assert "2025-01-01" in sec and "2025-03-01" in sec


def test_commands_and_bench(md, full_md):
    assert COMMAND in md
    assert "python -m reports --runs" in md
    assert "| 2500.5 | step | alexnet bf16 | mixed_bfloat16 | 128 |" in full_md


def test_figures_and_pdf(report, pdf_text):
    names = {f.path.name for f in report.figures}
    assert {"smoke_learning_curves.png", "smoke_deltas.png", "smoke_conv1.png", "smoke_figure1.png"} <= names
    for f in report.figures:
        assert f.path.stat().st_size > 5_000 and f.path.parent == report.out_dir / "figures"
    assert report.pdf.stat().st_size > 50_000
    assert "Claims and measurements" in pdf_text and "reproduced" in pdf_text
    md = report.markdown.read_text()
    for name in names:
        assert f"figures/{name}" in md
    # The kernel figure's caption names the towers the run has.
    assert "cifar10_conv1.png" in names
    assert "(smoke, seed 0), like the paper's Fig. 3: tower a on top, tower b below." in md
    assert "(cifar10, seed 0), like the paper's Fig. 3: one tower." in md


def test_lossy_data_note(full_md):
    sec = preset_section(full_md, "cifar10")
    assert "lossy JPEG copy of CIFAR-10" in sec


# --------------------------------------------------------------------------------------
# Zero spread: never a point interval
# --------------------------------------------------------------------------------------


def _tied_root(root: Path, val_correct: bool) -> Path:
    """Two seeds on 32 validation images; the variant gets one more image wrong on each:
    both per-seed differences are exactly +3.125 points."""
    for s in (0, 1):
        make_run(root, "smoke", "baseline", s, top1=10 + s, n_img=32, val_correct=val_correct)
        make_run(root, "smoke", "no_lrn", s, top1=11 + s, n_img=32, val_correct=val_correct)
    return root


def test_identical_differences_fall_back_to_the_image_bootstrap(tmp_path):
    rep = build_report(_tied_root(tmp_path / "runs", True), tmp_path / "out")
    row = primary(rep.analyses["smoke"], "no_lrn")
    assert row.seed_ci.estimate == pytest.approx(0.03125) and not row.seed_ci.ok
    assert row.ci is row.image_ci and row.ci.method == "bootstrap (images)" and row.ci.hi > row.ci.lo
    assert row.verdict != S.REPRODUCED  # one image per seed is no evidence
    text = rep.markdown.read_text()
    assert "all 2 seeds gave the same difference" in text and "(images)" in text
    assert "[+3.12, +3.12]" not in text and "[+3.13, +3.13]" not in text


def test_identical_differences_without_images_are_not_measurable(tmp_path):
    rep = build_report(_tied_root(tmp_path / "runs", False), tmp_path / "out")
    row = primary(rep.analyses["smoke"], "no_lrn")
    assert row.verdict == S.NOT_MEASURABLE and "no spread" in row.unmeasurable
    assert "a zero-width one would claim a precision" in rep.markdown.read_text()


# --------------------------------------------------------------------------------------
# Multiple comparisons, detectable effects, direction vs size
# --------------------------------------------------------------------------------------


def test_bonferroni_over_claims_matches_scipy_and_hand_bonferroni(report, md):
    an = report.analyses["smoke"]
    rows = {
        c.name: c.primary
        for c in an.comparisons
        if c.primary is not None and not c.primary.unmeasurable and not c.primary.withheld
    }
    # tanh is confounded: measured, not tested, so not in the family.
    assert primary(an, "tanh").verdict == S.CONFOUNDED
    assert set(rows) == {
        "fig1_tanh",
        "no_lrn",
        "no_overlap_pool",
        "no_pca_color",
        "no_crop_flip",
        "no_dropout",
        "single_view_eval",
        "bias_init",
    }
    raw = {k: scipy_p(r) for k, r in rows.items()}
    for k, r in rows.items():
        assert r.p == pytest.approx(raw[k], rel=1e-9), k
    adjusted = hand_bonferroni(raw)
    for k, r in rows.items():
        assert r.p_adj == pytest.approx(adjusted[k], rel=1e-9), k
    assert an.family == len(rows)
    # single_view_eval is significant on its own but not after the correction.
    sv = rows["single_view_eval"]
    assert raw["single_view_eval"] < 0.05 <= adjusted["single_view_eval"]
    assert sv.direction_verdict == S.DIR_NS and sv.verdict != S.REPRODUCED
    # Secondary rows carry no adjusted p and are not in the family; the method is named.
    assert all(math.isnan(r.p_adj) for c in an.comparisons for r in c.rows if r.role != "primary")
    assert "Bonferroni's correction" in md and f"m = {len(rows)} claim(s)" in md
    cells = table_row(the_tests_table(md), "`single_view_eval`", "top-1")
    assert cells[5] == f"{adjusted['single_view_eval']:.3f}"


def _mde_by_noncentral_t(se, df, alpha=0.05):
    from scipy.optimize import brentq

    tc = sps.t.ppf(1 - alpha / 2, df)
    return se * brentq(lambda d: sps.nct.sf(tc, df, d) - 0.8, 0.1, 100)


def test_detectable_effect_and_underpowered(report, md):
    an = report.analyses["smoke"]
    row = primary(an, "no_overlap_pool")  # Welch, baseline 3 seeds vs variant 2
    b = np.array(list(BASE_TOP1.values())) / N_IMG
    v = np.array([124, 125]) / N_IMG
    se = math.sqrt(b.var(ddof=1) / 3 + v.var(ddof=1) / 2)
    df = sps.ttest_ind(v, b, equal_var=False).df
    alpha = 1 - row.level  # the test at the corrected level: 0.05 / m
    assert alpha == pytest.approx(0.05 / an.family)
    assert row.mde == pytest.approx(_mde_by_noncentral_t(se, df, alpha), rel=1e-4)
    assert row.mde > 0.004  # the paper's +0.4 points are below what 3 vs 2 seeds detect here
    assert row.magnitude == S.MAG_UNDERPOWERED and row.verdict == S.UNDERPOWERED
    cells = table_row(the_tests_table(md), "`no_overlap_pool`", "top-1")
    assert cells[6] == f"{100 * row.mde:.2f}" and cells[10] == S.UNDERPOWERED
    assert int(cells[7]) == row.seeds_needed > 3
    # Paired: no_lrn's MDE from its per-seed differences.
    nl = primary(an, "no_lrn")
    d = (np.array([NO_LRN_TOP1[s] for s in (0, 1, 2)]) - np.array([BASE_TOP1[s] for s in (0, 1, 2)])) / N_IMG
    assert nl.mde == pytest.approx(_mde_by_noncentral_t(d.std(ddof=1) / math.sqrt(3), 2, 1 - nl.level), rel=1e-4)


def test_direction_and_size_are_separate(report, tmp_path):
    """no_lrn alone (a family of one): significant as claimed, but the interval lies
    above the paper's +1.4."""
    root = tmp_path / "runs"
    for s, d in ((0, 9), (1, 11), (2, 10)):
        make_run(root, "smoke", "baseline", s, top1=BASE_TOP1[s])
        make_run(root, "smoke", "no_lrn", s, top1=BASE_TOP1[s] + d)
    built = build_report(root, tmp_path / "out")
    row = primary(built.analyses["smoke"], "no_lrn")
    assert built.analyses["smoke"].family == 1 and row.ci.lo > 0.014
    assert row.direction_verdict == S.DIR_CLAIMED and row.magnitude == S.MAG_LARGER
    assert row.verdict == S.DIRECTION_ONLY
    cells = table_row(the_tests_table(built.markdown.read_text()), "`no_lrn`", "top-1")
    assert cells[8:11] == [S.DIR_CLAIMED, S.MAG_LARGER, S.DIRECTION_ONLY]
    # Qualitative claims need no size: the gap claims are reproduced on direction alone.
    gap = primary(report.analyses["smoke"], "no_crop_flip")
    assert gap.magnitude == S.MAG_NONE and gap.verdict == S.REPRODUCED


def test_lower_bound_claim(report, md):
    """§4.1 "by over 1%": a bound, printed and compared as one."""
    assert ABLATIONS["no_pca_color"].claim("smoke").bound == "at least"
    row = primary(report.analyses["smoke"], "no_pca_color")
    assert row.bound == "at least" and row.claimed_text == "+1.0 or more"
    assert row.magnitude == S.MAG_UNDERPOWERED  # the bound is inside a wide interval: no evidence
    assert "compared as one" in md


# --------------------------------------------------------------------------------------
# Chance, top-5 and the smoke suite
# --------------------------------------------------------------------------------------


def _chance_root(root: Path) -> Path:
    """A smoke suite that never learned: 4 classes, 32 images, 24 wrong (75%) everywhere."""
    for s in (0, 1):
        for label in ("baseline", "no_lrn", "tanh", "no_crop_flip", "no_dropout", "no_pca_color", "bias_init"):
            make_run(
                root,
                "smoke",
                label,
                s,
                top1=24 + (s if label == "tanh" else 0),
                top5=0,
                top1_10v=24,
                n_img=32,
                train_clean=0.75,
            )
    return root


def test_runs_at_chance_get_no_verdict(tmp_path):
    rep = build_report(_chance_root(tmp_path / "runs"), tmp_path / "out")
    an = rep.analyses["smoke"]
    verdicts = {r.verdict for c in an.comparisons for r in c.rows}
    assert not verdicts & {S.REPRODUCED, S.CONTRADICTED, S.DIRECTION_ONLY, S.SIZE_UNRESOLVED, "no difference"}
    for name in ("no_lrn", "tanh", "no_crop_flip", "bias_init"):
        assert primary(an, name).verdict == S.NOT_MEASURABLE
        assert any("at chance" in n for n in an.comparison(name).notes)
    assert not any(r.metric == "top-5" for c in an.comparisons for r in c.rows)
    text = rep.markdown.read_text()
    assert "Top-5 error is left out" in text and "Bonferroni's correction" in text
    for word in ("| no difference |", "| reproduced |", "| contradicted |"):
        assert word not in text
    assert (rep.out_dir / "runs.csv").exists() and (rep.out_dir / "claims.csv").exists()


def test_classes_from_labels_when_env_lacks_them(tmp_path):
    root = _chance_root(tmp_path / "runs")
    for env in root.rglob("env.json"):
        data = R.read_json(env)
        data.pop("num_classes")
        R.atomic_write_json(env, data)
    an = build_report(root, tmp_path / "out").analyses["smoke"]
    assert an.comparison("no_lrn").num_classes == 4  # from val_correct's labels (0..3)
    assert primary(an, "no_lrn").verdict == S.NOT_MEASURABLE


def _imagenet_root(root: Path, source="tfds:imagenet2012") -> Path:
    extra = {**EXTRA, "data.source": source}
    for s in (0, 1, 2):
        make_run(root, "imagenet", "baseline", s, top1=BASE_TOP1[s], top5=BASE_TOP5[s], extra=extra, classes=1000)
        make_run(root, "imagenet", "no_lrn", s, top1=NO_LRN_TOP1[s], top5=NO_LRN_TOP5[s], extra=extra, classes=1000)
    return root


def test_top5_is_secondary_with_many_classes(tmp_path):
    rep = build_report(_imagenet_root(tmp_path / "runs"), tmp_path / "out")
    an = rep.analyses["imagenet"]
    rows = {r.metric: r for r in an.comparison("no_lrn").rows}
    assert rows["top-1"].role == "primary" and rows["top-5"].role == "secondary"
    assert rows["top-5"].verdict == S.SECONDARY and math.isnan(rows["top-5"].p_adj)
    b = np.array([BASE_TOP5[s] for s in (0, 1, 2)]) / N_IMG
    v = np.array([NO_LRN_TOP5[s] for s in (0, 1, 2)]) / N_IMG
    assert rows["top-5"].p == pytest.approx(sps.ttest_rel(v, b).pvalue)
    assert an.family == 1  # one claim, one test, although two metrics are shown
    assert rows["top-1"].p_adj == pytest.approx(rows["top-1"].p)
    assert "Top-5 error is left out" not in rep.markdown.read_text()


# --------------------------------------------------------------------------------------
# Figure 1
# --------------------------------------------------------------------------------------


def test_figure1(report, md):
    f1 = report.analyses["smoke"].comparison("fig1_tanh").extra
    assert {s: t.epochs for s, t in f1.base_ttt.items()} == FIG1_RELU
    assert {s: t.epochs for s, t in f1.variant_ttt.items()} == FIG1_TANH
    assert f1.variant_ttt[2].observed == 20 and not f1.variant_ttt[2].reached
    ratios = np.array([15 / 3, 18 / 3, 20 / 4])
    lr_ = np.log(ratios)
    half = sps.t.ppf(0.975, 2) * lr_.std(ddof=1) / math.sqrt(3)
    assert f1.ratio.estimate == pytest.approx(math.exp(lr_.mean()))
    assert (f1.ratio.lo, f1.ratio.hi) == pytest.approx((math.exp(lr_.mean() - half), math.exp(lr_.mean() + half)))
    assert f1.ratio.mean == pytest.approx(ratios.mean()) and f1.ratio.sd == pytest.approx(ratios.std(ddof=1))
    assert f1.base_lr == 0.01 and f1.variant_lr == 0.02
    assert f1.wall_ratio.estimate == pytest.approx(math.exp(np.log([150 / 30, 180 / 30, 200 / 40]).mean()))
    row = table_row(md, "`fig1_tanh`", "epochs")
    assert row[4] == f"at least x{math.exp(lr_.mean()):.2f}"  # a censored tanh seed (the next test)
    assert "> 20 (not reached)" in md
    # Per arm: the censored tanh arm's mean epochs and seconds to target are lower bounds, ReLU's are not.
    per_arm = md.split("| Epochs to 25% (mean ± sd) |")[1].split("\n\n")[0]
    relu, tanh = (table_row(per_arm, arm) for arm in ("ReLU", "tanh"))
    assert tanh[3] == f"≥ {np.mean([15, 18, 20]):.1f} ± {np.std([15, 18, 20], ddof=1):.1f}"
    assert tanh[5].startswith("≥ ") and not relu[3].startswith("≥") and not relu[5].startswith("≥")
    grid = md.split("| lr | ReLU")[1].split("\n\n")[0]
    assert "| 0.01 | 3 (chosen) |" in grid
    assert "15 (chosen)" in grid
    assert "| 0.0025 | > 3 (stopped: could not beat the fastest rate) |" in grid and "missing" in grid
    fig = report.out_dir / "figures" / "smoke_figure1.png"
    assert fig.exists() and fig.stat().st_size > 10_000


def test_figure1_censored_ratio_is_a_lower_bound(report, md, full_md):
    """tanh seed 2 never reached the target: the ratio is "at least", and the paper's x6
    above the interval cannot count against it."""
    row = primary(report.analyses["smoke"], "fig1_tanh")
    assert row.lower_bound_only and row.ci.hi > math.log(6) > row.ci.lo
    assert row.direction_verdict == S.DIR_CLAIMED
    assert row.magnitude == S.MAG_CENSORED and row.verdict == S.SIZE_UNRESOLVED
    est = report.analyses["smoke"].comparison("fig1_tanh").extra.ratio.estimate
    assert f"tanh / ReLU: at least x{est:.2f}" in md
    assert f"at least x{est:.2f} [" in section(full_md, "## Summary", "\n## ")
    assert "cannot be ruled out above the interval" in md
    # The measurements table: the censored arm's mean epochs and the ratio are lower bounds too.
    cells = table_row(md, "`fig1_tanh`", "epochs")
    assert cells[3].startswith("≥ ") and cells[4] == f"at least x{est:.2f}"


def test_figure1_learning_rate_flags(report, md):
    notes = " ".join(report.analyses["smoke"].comparison("fig1_tanh").extra.notes)
    # tanh's chosen 0.02 is the highest rate its grid finished; ReLU's 0.01 is inside its grid.
    assert "tanh: the chosen lr 0.02 is the highest rate of the grid run" in notes
    assert "relu: the chosen lr" not in notes
    assert f"picked on a single selection seed ({GRID_SEED})" in notes
    assert "picked on a single selection seed" in md


# --------------------------------------------------------------------------------------
# Confounds, early learning, data set
# --------------------------------------------------------------------------------------


def test_confounds_are_named(report, md, full_md):
    tanh = ABLATIONS["tanh"].claim("smoke").caveat
    assert tanh.startswith("Confounded") and "learning rate" in tanh and "biases" in tanh
    assert tanh in md  # in the claim's notes
    summary = section(full_md, "## Summary", "\n## ")
    assert "`tanh`" in table_row(summary, "smoke (synthetic)", "`tanh`")[1]
    cells = table_row(summary, "smoke (synthetic)", "`tanh`")
    # The design's flaw is named first (a collapsed seed of the fixture's tanh arm comes after it).
    assert cells[5] == S.CONFOUNDED and cells[6].split(";")[0] == "Confounded"
    # cifar10 no_lrn: said beside the number in the published-numbers table.
    cifar = preset_section(full_md, "cifar10")
    published = table_row(cifar.split("## 5. Published")[1], "`no_lrn` top-1 delta (points of error)")
    assert "Not like for like" in published[4] and "differ in more than the normalization" in published[4]
    assert ABLATIONS["no_lrn"].claim("cifar10").caveat and not ABLATIONS["no_lrn"].claim("smoke").caveat


def test_the_cifar10_budget_is_set_beside_the_released_schedule(full_md):
    """§3.3's 11% comes from a ~520-epoch schedule: the report says how the runs'
    budget compares, how far the baseline ends from 11%, and (clean training error
    above 11%) that the net is underfitting rather than overfitting."""
    cifar = preset_section(full_md, "cifar10").split("## 5. Published")[1]
    t = get_config("cifar10").train  # the fixture's cifar10 runs keep the preset's schedule
    budget = next(line for line in cifar.splitlines() if line.startswith("Budget: "))
    steps = ", ".join(map(str, t.step_epochs))
    assert f"the baseline trains {t.epochs} epochs (rate lowered 10x at epochs {steps})" in budget
    assert f"about 520 epochs (lowered at 350, 500, 510), {520 / t.epochs:.0f}x longer" in budget
    val = np.array([60, 61]) / N_IMG  # the fixture's two cifar10 baseline seeds
    assert f"ends at {fmt_pm(val)}% validation top-1 error" in budget
    assert f"{100 * (val.mean() - 0.11):.2f} points above the paper's 11.0%" in budget
    assert "30.00 ± 0.00%, is itself above 11.0%: the net has not yet fit its training set" in budget
    # Mishkin et al.'s figures are ImageNet's: nothing to set beside a CIFAR-10 claim.
    assert table_row(cifar, "`no_lrn` top-1 delta (points of error)")[2] == "-"


def test_the_papers_top5_delta_is_labelled_as_top5(full_md):
    published = preset_section(full_md, "smoke").split("## 5. Published")[1]
    cells = table_row(published, "`no_lrn` top-1 delta (points of error)")
    c = ABLATIONS["no_lrn"].claim("smoke")
    assert cells[1] == f"{c.top1:+.1f} (top-5 {c.top5:+.1f}) ({c.section}, {c.setting})"


def test_bias_init_is_measured_as_early_learning(report, md):
    comp = report.analyses["smoke"].comparison("bias_init")
    early = comp.primary
    assert early.metric == "early" and early.label == "val top-1 err after epoch 1"  # 5 epochs // 4 -> 1
    b = np.array([base_curve(s)[0]["val_top1_err"] for s in (0, 1, 2)])
    v = b - np.array([BIAS_EARLY_DROP[s] for s in (0, 1, 2)])
    res = sps.ttest_rel(v, b)
    assert early.seed_ci.estimate == pytest.approx((v - b).mean())
    assert early.p == pytest.approx(res.pvalue)
    assert early.direction == -1 and early.direction_verdict == S.DIR_CLAIMED
    final = next(r for r in comp.rows if r.metric == "top-1")
    assert final.role == "secondary" and final.verdict == S.SECONDARY
    assert "val top-1 err after epoch 1" in the_tests_table(md)


def test_early_learning_is_the_mean_error_before_the_first_drop():
    """A start that is faster anywhere before the first learning-rate drop counts:
    the early measure is the mean validation error over those epochs."""
    from reports import collect as C
    from reports.analysis import early_epoch, early_values

    def run(seed, schedule, steps, curve):
        cfg = {"train": {"epochs": len(curve), "schedule": schedule, "step_epochs": steps}}
        metrics = [{"epoch": e, "val_top1_err": v} for e, v in enumerate(curve)]
        return R.Run(Path(f"/x/{seed}"), cfg, {"seed": seed}, {}, metrics, {"status": "ok"}, None)

    curves = {0: [0.9, 0.7, 0.6, 0.5], 1: [0.9, 0.9, 0.65, 0.55]}
    g = C.Group("p", "bias_init", "f", [run(s, "step", [3], c) for s, c in curves.items()])
    assert early_epoch(g) == 3  # epochs 1-3 at the initial rate
    assert early_values(g, 3) == pytest.approx({0: (0.9 + 0.7 + 0.6) / 3, 1: (0.9 + 0.9 + 0.65) / 3})
    plateau = C.Group("p", "bias_init", "f", [run(0, "plateau", [], [0.5] * 90)])
    assert early_epoch(plateau) == 22  # the first quarter when drops are not scheduled
    short = C.Group("p", "bias_init", "f", [run(0, "step", [3], curves[0][:2])])
    assert early_values(short, 3) == {}  # a seed without every early epoch is left out


def test_setting_is_decided_by_the_data_source(tmp_path, full_md):
    # The main fixture: smoke on synthetic data, cifar10 on a lossy copy.
    smoke_pub = preset_section(full_md, "smoke").split("## 5. Published")[1]
    assert table_row(smoke_pub, "`no_lrn` top-1 delta (points of error)")[4].startswith("no: synthetic")
    # The claims list names both data sets once each, in words.
    claims = preset_section(full_md, "smoke").split("### The paper's claims")[1].split("\n\n")[1]
    no_lrn = next(line for line in claims.splitlines() if line.startswith("- `no_lrn`"))
    assert "(§3.3; the paper measured it on ILSVRC-2012 val, here on synthetic" in no_lrn
    assert "no:" not in no_lrn and no_lrn.count("ILSVRC-2012") == 1
    # A cifar10 run on synthetic data is not "the same data set".
    root = tmp_path / "runs"
    for s in (0, 1):
        make_run(root, "cifar10", "baseline", s, top1=60 + s, extra={**EXTRA, "data.source": "synthetic"})
        make_run(root, "cifar10", "no_lrn", s, top1=64 + s, extra={**EXTRA, "data.source": "synthetic"})
    text = build_report(root, tmp_path / "out").markdown.read_text()
    pub = text.split("## 5. Published")[1]
    assert "same data set" not in pub
    assert table_row(pub, "baseline error, top-1 (%)")[4].startswith("no: synthetic (the paper: CIFAR-10 test)")
    # ImageNet through TFDS is the paper's data set; local files are unverified.
    assert "yes: ILSVRC-2012" in build_report(_imagenet_root(tmp_path / "in"), tmp_path / "o2").markdown.read_text()
    local = build_report(_imagenet_root(tmp_path / "lo", "/data/ilsvrc12"), tmp_path / "o3").markdown.read_text()
    assert "unverified: local files ilsvrc12" in local


# --------------------------------------------------------------------------------------
# Summary first, exports
# --------------------------------------------------------------------------------------


def test_summary_table_comes_first(report, full_md):
    first_table = full_md.index("\n| ")
    assert full_md.index("## Summary") < first_table < full_md.index("## Preset")
    summary = section(full_md, "## Summary", "\n## ")
    assert summary.splitlines()[2].startswith(
        "| Preset (data) | Claim, metric | Paper | Measured [CI] | CI level | Verdict |"
    )
    row = primary(report.analyses["smoke"], "no_lrn")
    cells = table_row(summary, "smoke (synthetic)", "`no_lrn`")
    assert cells[2] == "+1.4 pts"
    assert cells[3] == f"{100 * row.ci.estimate:+.2f} [{100 * row.ci.lo:+.2f}, {100 * row.ci.hi:+.2f}]"
    assert cells[4] == f"{100 * row.level:.1f}% simultaneous" and cells[5].startswith(row.verdict)


def test_csv_exports_load_with_pandas(report):
    import pandas as pd

    runs = pd.read_csv(report.out_dir / "runs.csv")
    an = report.analyses["smoke"]
    assert len(runs) == sum(len(a.runs) for a in report.analyses.values())
    assert {"preset", "label", "seed", "val_top1_err", "epochs", "wall_time_s", "device", "host"} <= set(runs.columns)
    # Config keys that differ from the baseline are columns, with each run's value.
    assert {"model.lrn", "model.activation", "data.crop_flip"} <= set(runs.columns)
    nl = runs[(runs.preset == "smoke") & (runs.label == "no_lrn")].sort_values("seed")
    assert list(nl["model.lrn"]) == [False] * 3
    assert list(nl.val_top1_err) == pytest.approx([100 * NO_LRN_TOP1[s] / N_IMG for s in (0, 1, 2)])
    base = runs[(runs.preset == "smoke") & (runs.label == "baseline") & (runs.counted)]
    assert set(base["model.lrn"]) == {True}

    claims = pd.read_csv(report.out_dir / "claims.csv")
    row = primary(an, "no_lrn")
    c = claims[(claims.preset == "smoke") & (claims.ablation == "no_lrn") & (claims.role == "primary")].iloc[0]
    assert c.paper == pytest.approx(1.4) and c.unit == "points"
    assert (c.measured, c.ci_low, c.ci_high) == pytest.approx((100 * row.ci.estimate, 100 * row.ci.lo, 100 * row.ci.hi))
    assert c.p_adjusted == pytest.approx(row.p_adj) and c.family == an.family and c.level == pytest.approx(row.level)
    assert c.mde == pytest.approx(100 * row.mde) and c.verdict == row.verdict and c.n_base == 3
    f1 = claims[(claims.preset == "smoke") & (claims.ablation == "fig1_tanh")].iloc[0]
    assert f1.unit == "ratio" and f1.paper == 6
    assert f1.measured == pytest.approx(an.comparison("fig1_tanh").extra.ratio.estimate)
    assert set(claims.preset) == {"smoke", "cifar10"}


# --------------------------------------------------------------------------------------
# The PDF as a reader sees it
# --------------------------------------------------------------------------------------


def test_figure_titles_fit_their_figures(monkeypatch, tmp_path, report):
    """A one-panel learning-curve figure is 4.2 in wide: its long title is wrapped, not cut."""
    from reports import figures as F

    seen = []
    monkeypatch.setattr(F, "save", lambda fig, path: seen.append(fig))
    comps = [report.analyses["smoke"].comparison("no_lrn")]
    F.learning_curves(comps, tmp_path / "x.png", "imagenette: validation top-1 error, a long title for one panel")
    fig = seen[0]
    fig.canvas.draw()
    box = fig._suptitle.get_window_extent(fig.canvas.get_renderer())
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width
    assert "\n" in fig._suptitle.get_text()


def test_heading_stays_with_its_figure(tmp_path, report):
    from pypdf import PdfReader

    from reports import document as D

    fig = next(f for f in report.figures if f.path.name == "smoke_figure1.png")
    for words in range(100, 2000, 150):  # the heading lands at every height of the page
        doc = D.Document("layout")
        doc.add(D.Para("filler " * words))
        doc.add(D.Heading(3, "HEADING-WITH-FIGURE"))
        doc.add(D.Figure(fig.path, "figures/f.png", "caption", fig.width_in, fig.height_in))
        D.to_pdf(doc, tmp_path / "l.pdf")
        pages = PdfReader(str(tmp_path / "l.pdf")).pages
        on = [i for i, p in enumerate(pages) if "HEADING-WITH-FIGURE" in p.extract_text()]
        with_image = [i for i, p in enumerate(pages) if p.images]
        assert on == with_image, words


def test_pdf_maps_greek_letters(pdf_text):
    """The PDF's core fonts are latin-1: α must be spelled out, not printed as "?"."""
    assert "two-sidedtestatalpha=0.05" in squash(pdf_text)
    assert "at?=" not in squash(pdf_text)


# --------------------------------------------------------------------------------------
# Inputs and outputs: empty, missing, damaged, read-only; the pair written atomically
# --------------------------------------------------------------------------------------


def test_empty_root(tmp_path):
    (tmp_path / "nothing").mkdir()
    rep = build_report(tmp_path / "nothing", tmp_path / "out")
    assert "No runs found" in rep.markdown.read_text()
    assert rep.pdf.exists() and rep.runs_csv.exists() and rep.claims_csv.exists()
    rep = build_report(tmp_path / "nothing", tmp_path / "out2", preset="imagenette")
    text = rep.markdown.read_text()
    assert "| `baseline` | 0 | absent |" in text and "| `no_lrn` | 2 | absent |" in text


def test_missing_runs_folder_is_an_error_naming_it(tmp_path, capsys):
    from reports.__main__ import main
    from reports.report import ReportError

    typo = tmp_path / "rusn"
    with pytest.raises(ReportError, match=f"runs folder {re.escape(str(typo))} does not exist"):
        build_report(typo)
    assert main(["--runs", str(typo)]) == 2
    err = capsys.readouterr().err
    assert str(typo) in err and "--runs" in err and "Traceback" not in err
    assert not typo.exists()  # a mistyped path is not created


def test_cli_imports_no_training_code(fixture_root, tmp_path):
    """A full report through the CLI, in a fresh interpreter, loads no Keras, TensorFlow
    or JAX: an import hook records every attempt (even where they are not installed)."""
    out = tmp_path / "cli"
    prog = f"""
import sys, runpy
HEAVY = ("keras", "tensorflow", "jax", "jaxlib")
tried = []
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            tried.append(name)
            raise ImportError("blocked: " + name)
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["reports", "--runs", {str(fixture_root)!r}, "--out", {str(out)!r}]
try:
    runpy.run_module("reports", run_name="__main__")
except SystemExit as e:
    assert not e.code, e.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
print("LOADED", loaded, "TRIED", tried)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-c", prog], cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "LOADED [] TRIED []" in p.stdout
    text = (out / "report.md").read_text()
    assert "## Preset smoke" in text and "## Preset cifar10" in text
    assert (out / "report.pdf").stat().st_size > 50_000
    # As run, with the machine's folders by their last name (the report is committed).
    assert f"python -m reports --runs {fixture_root.name} --out {out.name}" in text and str(fixture_root) not in text
    assert f"wrote {out / 'claims.csv'}" in p.stdout


def test_cli_defaults(tmp_path, monkeypatch, capsys):
    from reports.__main__ import main

    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("REPRODUCE_RUNS", str(tmp_path / "empty"))
    assert main([]) == 0
    assert (tmp_path / "empty" / "report" / "report.md").exists()
    assert (tmp_path / "empty" / "report" / "report.pdf").exists()
    assert "report.md" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--preset", "imagenett"])


def _run_path(root: Path, label: str, seed: int, preset: str = "smoke") -> Path:
    return next(p for p in (root / preset).glob(f"{label}-*/seed{seed}") if (p / "result.json").exists())


def test_damaged_runs_are_listed_and_the_rest_reported(fixture_root, tmp_path, capsys):
    import shutil

    from reports.__main__ import main

    root = tmp_path / "runs"
    shutil.copytree(fixture_root, root, ignore=shutil.ignore_patterns("report"))
    env = _run_path(root, "no_lrn", 0) / "env.json"
    env.write_text(env.read_text()[:25])  # truncated JSON
    metrics = _run_path(root, "tanh", 1) / "metrics.csv"
    metrics.write_text(metrics.read_text() + "7,x,y,1,2,3,4,5,6,7,8,9,10\n")  # more cells than the header
    npz = _run_path(root, "no_crop_flip", 2) / "val_correct.npz"
    npz.write_bytes(b"not a zip archive at all")
    cfg = _run_path(root, "no_dropout", 0) / "config.json"
    cfg.write_text(cfg.read_text()[:-40])  # a finished run whose config.json was cut short

    rep = build_report(root, tmp_path / "out")
    problems = {e.path: e.problem for e in rep.damaged}
    assert set(problems) == {env, metrics, npz, cfg}
    assert "not valid JSON" in problems[env] and "not valid JSON" in problems[cfg]
    assert "more cells than the header" in problems[metrics]
    assert "not a readable .npz archive" in problems[npz] and "pickled" not in problems[npz]
    text = rep.markdown.read_text()
    assert "# Damaged runs (skipped)" in text
    for p in problems:
        assert f"`{p.relative_to(root)}`" in text
    assert "delete the run directory" in text
    # The rest is reported: no_lrn from seeds 1 and 2 against the baseline's three (Welch).
    row = primary(rep.analyses["smoke"], "no_lrn")
    assert sorted(row.variant) == [1, 2] and row.seed_ci.method == "Welch t"
    assert sorted(primary(rep.analyses["smoke"], "no_dropout").variant) == [1, 2]
    # The CLI says so too, and succeeds.
    assert main(["--runs", str(root), "--out", str(tmp_path / "cli")]) == 0
    err = capsys.readouterr().err
    assert f"skipped a damaged run: {npz}" in err


def test_run_readers_name_the_damaged_file(tmp_path):
    path = make_run(tmp_path, "smoke", "baseline", 0, top1=120)
    (path / "metrics.csv").write_text("epoch,loss\n0,abc\n")
    with pytest.raises(R.RunFileError, match=r"metrics\.csv: line 2: `loss` = 'abc' is not a number"):
        R.read_metrics_rows(path)
    (path / "metrics.csv").write_text("loss\n1.0\n")
    with pytest.raises(R.RunFileError, match="no `epoch` column"):
        R.load_run(path)
    (path / "metrics.csv").write_text("epoch,loss\n0,1.0\n")
    (path / "result.json").write_text("[1, 2]")
    with pytest.raises(R.RunFileError, match=r"result\.json: holds a JSON list, not an object"):
        R.load_run(path)
    (path / "config.json").write_text('{"model": ')
    with pytest.raises(R.RunFileError, match=r"config\.json: not valid JSON .*; restore the file"):
        R.load_run(path)
    # iter_runs: collected when asked, raised otherwise, never silently dropped.
    damaged = []
    assert list(R.iter_runs(tmp_path, damaged)) == [] and [e.path.name for e in damaged] == ["config.json"]
    with pytest.raises(R.RunFileError):
        list(R.iter_runs(tmp_path))
    (path / "config.json").unlink()  # a run with results but no config.json is still seen
    damaged = []
    list(R.iter_runs(tmp_path, damaged))
    assert "missing" in damaged[0].problem


def test_unwritable_report_folder_is_a_clear_error(tmp_path, fixture_root):
    from reports.__main__ import main
    from reports.report import ReportError

    (tmp_path / "runs").mkdir()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ReportError, match="cannot write the report beside .*a-file/report.*--out"):
        build_report(tmp_path / "runs", blocker / "report")
    with pytest.raises(ReportError, match="is a file, not a folder"):
        build_report(tmp_path / "runs", blocker)
    assert main(["--runs", str(tmp_path / "runs"), "--out", str(blocker / "report")]) == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_parent_is_a_clear_error(tmp_path):
    from reports.report import ReportError

    (tmp_path / "runs").mkdir()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ReportError, match="Permission denied"):
            build_report(tmp_path / "runs", ro / "report")
    finally:
        ro.chmod(0o755)


def test_report_folder_is_replaced_as_a_whole(tmp_path, monkeypatch):
    from reports import document as D
    from reports.report import ReportError

    root = _imagenet_root(tmp_path / "runs")
    out = tmp_path / "out"
    first = build_report(root, out)
    md1, pdf1 = first.markdown.read_bytes(), first.pdf.read_bytes()
    # A build that fails after writing report.md leaves the previous pair untouched.
    make_run(root, "imagenet", "tanh", 0, top1=150, extra={**EXTRA, "data.source": "tfds:imagenet2012"}, classes=1000)

    def broken(doc, path):
        assert path.parent != out and (path.parent / "report.md").exists()  # built aside
        raise RuntimeError("disk full")

    monkeypatch.setattr(D, "to_pdf", broken)
    with pytest.raises(RuntimeError):
        build_report(root, out)
    assert (out / "report.md").read_bytes() == md1 and (out / "report.pdf").read_bytes() == pdf1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "runs"]  # no half-built folder left
    monkeypatch.undo()
    second = build_report(root, out)
    assert "`tanh`" in second.markdown.read_text() and second.markdown.read_bytes() != md1
    assert second.pdf.read_bytes() != pdf1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "runs"]
    assert (out.stat().st_mode & 0o777) == 0o777 & ~_umask()
    # Where the system cannot exchange two folders in one step, two renames do it.
    from reports import folder_swap

    monkeypatch.setattr(folder_swap, "exchange", lambda a, b: False)
    make_run(
        root, "imagenet", "one_tower", 0, top1=130, extra={**EXTRA, "data.source": "tfds:imagenet2012"}, classes=1000
    )
    third = build_report(root, out)
    assert "one_tower @ " in third.markdown.read_text() and third.pdf.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "runs"]
    monkeypatch.undo()
    # A folder holding other things (a published store: its runs beside the report)
    # keeps them; only the report's own entries are replaced, each whole.
    (out / "notes.txt").write_text("mine")
    (out / "imagenet").mkdir()
    fourth = build_report(root, out)
    assert (out / "notes.txt").read_text() == "mine" and (out / "imagenet").is_dir()
    assert "one_tower @ " in fourth.markdown.read_text() and fourth.pdf.stat().st_size > 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["notes.txt", "imagenet", "report.md", "report.pdf", "figures", "runs.csv", "claims.csv"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "runs"]
    # the store as its own report folder (make publish: --runs results --out results)
    store_report = build_report(root, root)
    assert store_report.markdown == root / "report.md" and (root / "imagenet").is_dir()
    assert "`tanh`" in store_report.markdown.read_text()
    with pytest.raises(ReportError, match="is a file"):
        build_report(root, out / "notes.txt")


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_readme_block_is_written_from_the_report(fixture_root, tmp_path):
    from reports.__main__ import main
    from reports.readme import README_BEGIN, README_END

    readme = tmp_path / "README.md"
    readme.write_text(f"# Project\n\nintro\n\n{README_BEGIN}\nold numbers\n{README_END}\n\n## More\n")
    assert main(["--runs", str(fixture_root), "--out", str(tmp_path / "out"), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Project\n\nintro\n\n") and text.endswith(f"{README_END}\n\n## More\n")
    block = text.split(README_BEGIN)[1].split(README_END)[0]
    assert "old numbers" not in block
    assert "| Preset (data) | Claim, metric | Paper | Measured [CI] | CI level | Verdict | Note |" in block
    assert "`no_lrn` §3.3" in block and "(out/report.md)" in block
    # claims with an arm that never ran are named once, not a table row of n/a each
    unrun = block.split("Not measured yet (an arm has no finished run): ")[1].split("\n")[0]
    assert unrun.startswith("`cifar10`: `fig1_tanh`, ") and "`smoke`" not in unrun
    # ... and the preset's tally counts them as not run, not under a verdict
    n_unrun = len(unrun.split("`cifar10`: ")[1].split(";")[0].split(", "))
    full = (tmp_path / "out" / "report.md").read_text()
    assert f"not run yet: {n_unrun})" in full.replace(". Missing", ")")
    # ... and so does each of their rows in the preset's tests table, whatever rule would judge a measured one
    # (cifar10's no_crop_flip: the baseline's small gap would make it "not testable at this budget").
    tests_table = preset_section(full, "cifar10").split("#### Tests")[1].split("#### ")[0]
    for name in unrun.split("`cifar10`: ")[1].split(";")[0].rstrip(".").split(", "):
        verdicts = [line.rsplit(" | ", 1)[1] for line in tests_table.splitlines() if line.startswith(f"| {name} |")]
        assert verdicts and set(verdicts) == {"not run yet |"}, (name, verdicts)
    assert "| cifar10 (a lossy JPEG copy of CIFAR-10) | `fig1_tanh`" not in block
    assert "| smoke (synthetic) | `fig1_tanh`" in block
    assert "`smoke`: synthetic" in block  # where the numbers come from, per preset
    readme.write_text("# no block\n")
    assert main(["--runs", str(fixture_root), "--out", str(tmp_path / "out"), "--readme", str(readme)]) == 2
    assert readme.read_text() == "# no block\n"


def test_a_variant_that_never_learned_is_said_beside_its_row(tmp_path):
    """A learning baseline and a variant stuck at chance (4 classes: 75%) in every seed."""
    root = tmp_path / "runs"
    for s in (0, 1):
        make_run(root, "smoke", "baseline", s, top1=8 + s, n_img=32, train_clean=0.2)
        make_run(root, "smoke", "bias_init", s, top1=24, n_img=32, train_clean=0.75)
        make_run(root, "smoke", "no_lrn", s, top1=10 + s, n_img=32, train_clean=0.25)
    built = build_report(root, tmp_path / "out")
    an = built.analyses["smoke"]
    comp = an.comparison("bias_init")
    assert comp.tags == ["collapsed: `bias_init` at chance in 2/2 seeds (75.0%)"]
    assert primary(an, "bias_init").verdict == S.COLLAPSED
    assert any("training collapsed there" in n for n in comp.notes)
    assert not an.comparison("no_lrn").tags  # a variant that learns gets no such tag
    # Without baseline runs there is nothing to say the baseline learns.
    for s in (0, 1):
        make_run(root, "cifar10", "bias_init", s, top1=24, n_img=32, train_clean=0.75)
    assert not build_report(root, tmp_path / "out2").analyses["cifar10"].comparison("bias_init").tags
    summary = section(built.markdown.read_text(), "## Summary", "\n## ")
    assert table_row(summary, "smoke (synthetic)", "`bias_init`")[6] == comp.tags[0]


def test_a_diverged_grid_rate_is_shown_as_diverged(tmp_path):
    root = tmp_path / "runs"
    for s in (0, 1):
        make_run(root, "smoke", "fig1_tanh.base", s, curve=fig1_curve(3 + s), lr=0.01, epochs_to_target=3 + s)
        make_run(root, "smoke", "fig1_tanh", s, curve=fig1_curve(15 + s), lr=0.02, epochs_to_target=15 + s)
    _grid_run(root, "smoke", "fig1_tanh.base", 0.005, 5)
    _grid_run(root, "smoke", "fig1_tanh.base", 0.01, 3)
    _grid_run(root, "smoke", "fig1_tanh", 0.02, 15)
    for arm, lr in (("fig1_tanh.base", 0.02), ("fig1_tanh", 0.04)):  # tanh's grid grew to 0.04, which diverged
        bad = _grid_run(root, "smoke", arm, lr, 3)
        (bad / R.RESULT).unlink()  # as train() leaves it: the record and failure.json, no result
        R.write_failure(bad, "diverged", {"epoch": 0, "batch": 41, "learning_rate": lr})
    rep = build_report(root, tmp_path / "out")
    md = rep.markdown.read_text()
    grid = md.split("| lr | ReLU")[1].split("\n\n")[0]
    assert "| 0.02 | diverged (non-finite loss in epoch 1) | n/a | 15 (chosen) |" in grid
    # 0.04 is only in tanh's grid: "-" for ReLU, not "missing".
    assert "| 0.04 | - | - | diverged (non-finite loss in epoch 1) | n/a |" in grid
    assert "| 0.0025 | missing | n/a | missing | n/a |" in grid
    # A diverged rate counts as tried when the edges of the grid are found: ReLU's 0.01
    # lies between 0.005 and the diverged 0.02, tanh's 0.02 below the diverged 0.04.
    notes = " ".join(rep.analyses["smoke"].comparison("fig1_tanh").extra.notes)
    assert "relu: the chosen lr" not in notes
    assert "tanh: the chosen lr 0.02 is the lowest rate of the grid run (0.02, 0.04)" in notes
    # A preset run for Figure 1 alone has no baseline runs; its arms still name the data.
    summary = section(md, "## Summary", "\n## ")
    assert table_row(summary, "smoke (synthetic)", "`fig1_tanh`")


def test_a_second_selection_seed_says_whether_the_rates_and_the_ratio_change(tmp_path, monkeypatch):
    """The grids repeated on another selection seed: its fastest rates beside the
    choice, the ratio on that seed alone among the counting rules, its grid, and
    its runs still to do listed as missing until its grids are complete."""
    import dataclasses

    from ablations import registry

    ab = dataclasses.replace(registry.ABLATIONS["fig1_tanh"], check_selection_seeds={"smoke": (1001,)})
    monkeypatch.setitem(registry.ABLATIONS, "fig1_tanh", ab)
    root = tmp_path / "runs"
    for s in (0, 1):
        make_run(root, "smoke", "fig1_tanh.base", s, curve=fig1_curve(3 + s), lr=0.01, epochs_to_target=3 + s)
        make_run(root, "smoke", "fig1_tanh", s, curve=fig1_curve(15 + s), lr=0.02, epochs_to_target=15 + s)
    choice = {
        "fig1_tanh.base": {0.0025: 6, 0.005: 5, 0.01: 3, 0.02: 4},
        "fig1_tanh": {0.0025: 30, 0.005: 20, 0.01: 17, 0.02: 15},
    }
    for arm, grid in choice.items():
        for lr, reach in grid.items():
            _grid_run(root, "smoke", arm, lr, reach)
    # Seed 1001: ReLU's grid is complete and prefers 0.005; tanh's lacks 0.0025.
    for lr, reach in {0.0025: 6, 0.005: 2, 0.01: 3, 0.02: 4}.items():
        _grid_run(root, "smoke", "fig1_tanh.base", lr, reach, seed=1001)
    for lr, reach in {0.005: 20, 0.01: 14, 0.02: 16}.items():
        _grid_run(root, "smoke", "fig1_tanh", lr, reach, seed=1001)
    rep = build_report(root, tmp_path / "out")
    f1 = rep.analyses["smoke"].comparison("fig1_tanh").extra
    (check,) = f1.checks
    assert check.seed == 1001 and check.chosen == {"relu": 0.005, "tanh": None} and not check.complete
    assert ("fig1_tanh.grid (lr 0.0025)", 1001, "absent") in rep.analyses["smoke"].missing
    md = rep.markdown.read_text()
    assert "| 1001 | 0.005 (2 epochs) | grid not complete | n/a | n/a (grid not complete) |" in md
    assert "the grids on selection seed 1001 are not complete yet" in md
    assert "| 1000 (the choice) | 0.01 (3 epochs) | 0.02 (15 epochs) | x5.00 |  |" in md
    assert not any("1001 alone" in r.name for r in f1.rules)
    # The last rate: both arms' fastest rates on 1001 differ from the choice.
    _grid_run(root, "smoke", "fig1_tanh", 0.0025, 30, seed=1001)
    rep = build_report(root, tmp_path / "out2")
    f1 = rep.analyses["smoke"].comparison("fig1_tanh").extra
    assert f1.checks[0].chosen == {"relu": 0.005, "tanh": 0.01}
    rule = next(r for r in f1.rules if "selection seed 1001 alone" in r.name)
    assert rule.estimate == pytest.approx(14 / 2) and rule.per_seed == {1001: (2, 14)}
    assert f1.rule_range[1] == pytest.approx(7.0)  # the range over rules includes it
    md = rep.markdown.read_text()
    # n = 2: the test's interval is wider than the range, and the report says so.
    assert f1.rules[0].ci.lo < f1.rule_range[0] and f1.rule_range[1] < f1.rules[0].ci.hi
    assert "(the range lies within the test's interval over seeds)" in md
    assert "moves the ratio more than its interval" not in md
    assert "| 1001 | 0.005 (2 epochs) | 0.01 (14 epochs) | x7.00 | no |" in md
    assert "selection seed 1001 would choose other rates (ReLU 0.01 -> 0.005, tanh 0.02 -> 0.01)" in md
    assert "The same grid on selection seed 1001" in md and "0.005 | 2 (fastest)" in md
    assert "picked on a single selection seed" not in md
    assert not any(s == 1001 for _, s, _ in rep.analyses["smoke"].missing)


def test_figure1_arms_are_expected_to_have_the_seeds_either_arm_has(tmp_path):
    """A Figure 1 campaign with 5 seeds and no preset baseline: the arm behind lists
    the seeds it still lacks, not the default 0, 1, 2."""
    root = tmp_path / "runs"
    for s in range(5):
        make_run(root, "smoke", "fig1_tanh.base", s, curve=fig1_curve(3), lr=0.01, epochs_to_target=3)
    for s in (0, 1):
        make_run(root, "smoke", "fig1_tanh", s, curve=fig1_curve(15), lr=0.02, epochs_to_target=15)
    rep = build_report(root, tmp_path / "out")
    missing = {(lab, s) for lab, s, _ in rep.analyses["smoke"].missing}
    assert {("fig1_tanh", s) for s in (2, 3, 4)} <= missing
    assert not any(lab == "fig1_tanh.base" for lab, _ in missing)
    assert ("baseline", 0) in missing and ("baseline", 3) not in missing  # the preset's own: 0, 1, 2
    assert "| `fig1_tanh` | 4 | absent |" in rep.markdown.read_text().split("## 7. Completeness")[1]


def test_figure1_wall_times_compare_runs_on_one_device(tmp_path):
    """Epochs compare across machines, seconds do not: a tanh seed run on a slower
    CPU is left out of the wall-time ratio (and said so), not averaged in."""
    root = tmp_path / "runs"
    for s in range(3):
        make_run(
            root,
            "smoke",
            "fig1_tanh.base",
            s,
            curve=fig1_curve(3),
            lr=0.01,
            epochs_to_target=3,
            wall=10.0 * (1 + 0.01 * s),
            device="CPU (A, 2 cores)",
        )
    for s, dev, wall in ((0, "CPU (A, 2 cores)", 60.0), (1, "CPU (A, 2 cores)", 61.0), (2, "CPU (B, 2 cores)", 400.0)):
        make_run(
            root, "smoke", "fig1_tanh", s, curve=fig1_curve(15), lr=0.02, epochs_to_target=15, wall=wall, device=dev
        )
    _grid_run(root, "smoke", "fig1_tanh.base", 0.01, 3, device="CPU (A, 2 cores)")
    _grid_run(root, "smoke", "fig1_tanh", 0.02, 15, device="CPU (B, 2 cores)")
    rep = build_report(root, tmp_path / "out")
    f1 = rep.analyses["smoke"].comparison("fig1_tanh").extra
    assert f1.wall_device == "CPU (A, 2 cores)"
    assert f1.wall_ratio.estimate == pytest.approx(
        np.exp(np.mean(np.log([60.0, 61.0])) - np.mean(np.log([10.0, 10.1, 10.2])))
    )
    assert any("1 run(s) on other or unrecorded devices are left out" in n for n in f1.notes)
    md = rep.markdown.read_text()
    assert "Wall-time ratio (tanh / ReLU, time to target, runs on CPU (A, 2 cores))" in md
    assert "| tanh | 0.02 | 3 | 15.0 ± 0.0 | s0: 15, s1: 15, s2: 15 | 60 ± 1 (n = 2) |" in md  # seed 2's 400 s left out
    assert "| ReLU | 0.01 | 3 | 3.0 ± 0.0 | s0: 3, s1: 3, s2: 3 | 10 ± 0 |" in md
    # The grid's wall times: one from the other CPU is starred and its device named.
    grid = md.split("| lr | ReLU")[1].split("\n\n")[0] + md.split("| lr | ReLU")[1].split("\n\n")[1]
    assert "| 0.02 | missing | n/a | 15 (chosen) | 150* |" in grid and "| 0.01 | 3 (chosen) | 30 | missing" in grid
    assert "Wall s on CPU (A, 2 cores); * on CPU (B, 2 cores), not comparable." in grid
    # Arms with no device in common: no wall-time ratio at all.
    root2 = tmp_path / "runs2"
    for s in range(2):
        make_run(root2, "smoke", "fig1_tanh.base", s, curve=fig1_curve(3), lr=0.01, epochs_to_target=3, device="A")
        make_run(root2, "smoke", "fig1_tanh", s, curve=fig1_curve(15), lr=0.02, epochs_to_target=15, device="B")
    f1 = build_report(root2, tmp_path / "out2").analyses["smoke"].comparison("fig1_tanh").extra
    assert f1.wall_ratio is None and any("ran on different devices" in n for n in f1.notes)


# --------------------------------------------------------------------------------------
# Runs written by newer or older code
# --------------------------------------------------------------------------------------


def test_runs_written_by_other_code_are_noted(tmp_path, monkeypatch):
    import json

    from reproduce import config as CFG

    for s in range(3):
        make_run(tmp_path, "smoke", "baseline", s, top1=BASE_TOP1[s])
        odd = make_run(tmp_path, "smoke", "no_lrn", s, top1=NO_LRN_TOP1[s])
    newer = _run_path(tmp_path, "no_lrn", 1)
    cfg = json.loads((newer / "config.json").read_text())
    cfg["model"]["fancy_norm"] = True  # a key of newer code
    (newer / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setitem(CFG.RENAMED, "train.old_knob", None)  # a key this code has removed
    cfg = json.loads((odd / "config.json").read_text())
    cfg["train"]["old_knob"] = 3
    (odd / "config.json").write_text(json.dumps(cfg))
    res = json.loads((odd / "result.json").read_text())
    (odd / "result.json").write_text(json.dumps({**res, "val_top5_err": float("nan")}))

    rep = build_report(tmp_path, tmp_path / "out")
    assert rep.damaged == []
    text = rep.markdown.read_text()
    assert "# Runs written by other code (used, check them)" in text
    listing = section(text, "# Runs written by other code", "\n#")
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in listing.splitlines()
        if line.startswith("| `smoke/")
    }
    assert rows == {
        f"`{newer.relative_to(tmp_path)}`": "config.json has key(s) this code does not know (newer code, or "
        "edited by hand): `model.fancy_norm`",
        f"`{odd.relative_to(tmp_path)}`": "config.json has key(s) removed since it was written (older code), "
        "ignored: `train.old_knob`; result.json holds non-finite values: "
        "`val_top5_err` = nan",
    }
    # A run written by this code is not listed; without odd runs there is no such section.
    clean = tmp_path / "clean"
    make_run(clean, "smoke", "baseline", 0)
    assert "Runs written by other code" not in build_report(clean, tmp_path / "out2").markdown.read_text()
