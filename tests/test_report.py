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

from ablations.registry import ABLATIONS, GRID_SEED, get_ablation
from reproduce import runs as R
from reproduce.config import apply_overrides, get_config, validate

from reports import build_report
from reports import stats as S

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


def make_run(root, preset, label, seed, *, top1=None, top5=None, top1_10v=None, train_clean=0.3,
             extra=None, curve=None, finished=True, failure=None, date="2025-03-01T10:00:00+00:00",
             wall=100.0, kernels=False, epochs_to_target=None, lr=None):
    extra = dict(EXTRA if extra is None else extra)
    if lr is not None:
        extra["train.learning_rate"] = lr
    cfg = config_for(preset, label, extra)
    cfg.train.seed = seed
    fp = cfg.fingerprint()
    path = R.run_dir(root, preset, label, fp, seed)
    meta = {"preset": preset, "label": label, "seed": seed, "fingerprint": fp,
            "overrides": [f"{k}={v}" for k, v in extra.items()], "command": COMMAND if preset == "smoke"
            else f"python -m ablations run --preset {preset}"}
    R.write_config(path, cfg.to_dict(), meta)
    R.write_env(path, {"date": date, "host": "fixture-host", "processor": "x86_64", "device": "cpu",
                       "backend": "jax", "versions": {"keras": "3.6.0", "jax": "0.4.35"}, "python": "3.11.7",
                       "git": {"commit": "0123456789abcdef", "dirty": False}})
    top1 = 120 if top1 is None else top1
    top5 = 30 if top5 is None else top5
    val = top1 / N_IMG
    if curve is None:  # a val curve that ends at the final error
        curve = [{"epoch": e, "top1_err": train_clean + 0.1 * (EPOCHS - e), "val_top1_err": val + 0.05 * (EPOCHS - 1 - e)}
                 for e in range(EPOCHS)]
    rows = [{"loss": 1.0, "top5_err": 0.1, "val_loss": 1.0, "val_top5_err": 0.1, "lr": 0.01, "epoch_time_s": 1.0,
             "images_per_s": 64.0, "val_top1_err": 0.5, **r} for r in curve]
    R.write_metrics_rows(path, rows)
    if failure:
        R.write_failure(path, failure, {"epoch": 2})
    if not finished:
        return path
    labels = np.arange(N_IMG) % 4
    t1c = correct_arrays(top1, seed)
    t5c = correct_arrays(top5, seed + 50)
    t1v = correct_arrays(top1_10v if top1_10v is not None else top1, seed + 100)
    R.write_val_correct(path, labels=labels, top1_center=t1c, top5_center=t5c, top1_10view=t1v,
                        top5_10view=t5c.copy())
    if kernels:
        rng = np.random.default_rng(seed)
        R.write_conv1(path, a=rng.normal(size=(11, 11, 3, 6)), b=rng.normal(size=(11, 11, 3, 6)))
    R.write_result(path, {
        "status": "ok", "epochs": len(curve), "val_top1_err": val, "val_top5_err": top5 / N_IMG,
        "val_top1_err_10view": (top1_10v / N_IMG) if top1_10v is not None else None,
        "val_top5_err_10view": top5 / N_IMG, "train_top1_err": curve[-1]["top1_err"],
        "train_top5_err": 0.1, "train_top1_err_clean": train_clean, "wall_time_s": wall,
        "images_per_s": 64.0, "epochs_to_target": epochs_to_target,
    })
    return path


def fig1_curve(reach, n_epochs=20):
    """Training error falling linearly, first <= 0.25 at 1-based epoch `reach` (None: never)."""
    if reach is None:
        return [{"epoch": e, "top1_err": 0.60 - 0.01 * e} for e in range(n_epochs)]
    return [{"epoch": e, "top1_err": 0.25 + 0.02 * (reach - 1 - e)} for e in range(reach)]


def build_fixture(root: Path) -> Path:
    P = "smoke"
    # A superseded baseline: the registry's own 2-epoch config, older, one seed.
    make_run(root, P, "baseline", 0, extra={}, top1=200, date="2025-01-01T00:00:00+00:00",
             curve=[{"epoch": 0, "top1_err": 0.7}, {"epoch": 1, "top1_err": 0.6}])
    for s in (0, 1, 2):
        make_run(root, P, "baseline", s, top1=BASE_TOP1[s], top5=BASE_TOP5[s], top1_10v=BASE_TOP1_10V[s],
                 train_clean=TRAIN_CLEAN["baseline"][s], kernels=(s == 0))
        make_run(root, P, "no_lrn", s, top1=NO_LRN_TOP1[s], top5=NO_LRN_TOP5[s])
        make_run(root, P, "tanh", s, top1=TANH_TOP1[s])
        make_run(root, P, "lrn_convention", s, top1=LRN_CONV_TOP1[s])
        make_run(root, P, "no_crop_flip", s, top1=NO_CROP_TOP1[s], train_clean=TRAIN_CLEAN["no_crop_flip"][s])
        make_run(root, P, "no_dropout", s, top1=NO_DROP_TOP1[s], train_clean=TRAIN_CLEAN["no_dropout"][s])
    for s, k in NO_PCA_TOP1.items():
        make_run(root, P, "no_pca_color", s, top1=k)
    make_run(root, P, "one_tower", 0, top1=130)
    make_run(root, P, "one_tower", 1, finished=False, failure="NaN loss at epoch 2")
    make_run(root, P, "no_overlap_pool", 0, top1=124)
    make_run(root, P, "no_overlap_pool", 1, top1=125)
    make_run(root, P, "no_overlap_pool", 2, finished=False, curve=[{"epoch": 0, "top1_err": 0.8}])
    # Figure 1: seeded arms (ReLU lr 0.01, tanh lr 0.02) and the lr grid (seed 0).
    for s in (0, 1, 2):
        rc, tc = fig1_curve(FIG1_RELU[s]), fig1_curve(FIG1_TANH[s])
        make_run(root, P, "fig1_tanh.base", s, curve=rc, lr=0.01, wall=10.0 * FIG1_RELU[s],
                 epochs_to_target=FIG1_RELU[s])
        make_run(root, P, "fig1_tanh", s, curve=tc, lr=0.02, wall=10.0 * (FIG1_TANH[s] or 20),
                 epochs_to_target=FIG1_TANH[s])
    assert ABLATIONS["fig1_tanh"].lr_grid == (0.0025, 0.005, 0.01, 0.02)
    grid = {"fig1_tanh.base": {0.0025: None, 0.005: 6, 0.01: 3, 0.02: 5},
            "fig1_tanh": {0.005: None, 0.01: 19, 0.02: 15}}  # tanh lr 0.0025 missing
    for base, reaches in grid.items():
        for lr, reach in reaches.items():
            _grid_run(root, P, base, lr, reach)
    # A second preset: its own section.
    shared = {"data.source": "../shared/data/cifar10-jpeg.tar.xz"}
    for s in (0, 1):
        make_run(root, "cifar10", "baseline", s, top1=60 + s, extra=shared)
        make_run(root, "cifar10", "no_lrn", s, top1=66 + 2 * s, extra=shared)
    from reproduce import benchfile  # bench.json's format has one owner

    bench = {"backend": "jax", "device": "cpu", "batch": 128, "path": "step", "mfu": None, "steps": 10,
             "date": "2025-01-01"}
    benchfile.write(root / "bench.json", benchfile.BenchFile({}, [
        {**bench, "variant": "alexnet bf16", "precision": "mixed_bfloat16", "images_per_s": 2500.5},
        {**bench, "variant": "alexnet f32", "precision": "float32", "images_per_s": 1200.25}]))
    return root


def _grid_run(root, preset, base_label, lr, reach):
    """A grid run: the arm's configuration at one learning rate, labelled <arm label>.grid."""
    label = base_label + ".grid"
    cfg = config_for(preset, base_label, {**EXTRA, "train.learning_rate": lr})
    cfg.train.seed = GRID_SEED
    fp = cfg.fingerprint()
    path = R.run_dir(root, preset, label, fp, GRID_SEED)
    R.write_config(path, cfg.to_dict(), {"preset": preset, "label": label, "seed": GRID_SEED, "fingerprint": fp,
                                         "command": f"python -m ablations grid fig1_tanh --preset {preset}"})
    R.write_env(path, {"date": "2025-02-01T00:00:00+00:00", "device": "cpu"})
    curve = fig1_curve(reach)
    R.write_metrics_rows(path, [{"val_top1_err": 0.5, **r} for r in curve])
    R.write_result(path, {
        "status": "ok", "epochs": len(curve), "val_top1_err": 0.5, "val_top5_err": 0.1, "val_top1_err_10view": None,
        "val_top5_err_10view": None, "train_top1_err": curve[-1]["top1_err"], "train_top5_err": 0.1,
        "train_top1_err_clean": curve[-1]["top1_err"], "wall_time_s": 10.0 * len(curve), "images_per_s": 64.0,
        "epochs_to_target": reach})


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
    return md[start: min(ends) if ends else len(md)]


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


# --------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------


def test_paired_delta_matches_scipy(report, md, pdf_text):
    comp = report.analyses["smoke"].comparison("no_lrn")
    row = next(r for r in comp.rows if r.metric == "top-1")
    b = np.array([BASE_TOP1[s] for s in (0, 1, 2)]) / N_IMG
    v = np.array([NO_LRN_TOP1[s] for s in (0, 1, 2)]) / N_IMG
    ci = sps.ttest_rel(v, b).confidence_interval(0.95)
    assert row.seed_ci.method == "paired t"
    assert row.seed_ci.estimate == pytest.approx((v - b).mean(), abs=1e-12)
    assert (row.seed_ci.lo, row.seed_ci.hi) == pytest.approx((ci.low, ci.high), abs=1e-12)
    d = (v - b).mean()
    se = (v - b).std(ddof=1) / math.sqrt(3)
    assert row.seed_ci.hi == pytest.approx(d + sps.t.ppf(0.975, 2) * se)
    cells = table_row(md, "`no_lrn`", "top-1")
    assert cells[3] == fmt_pm(b) and cells[4] == fmt_pm(v)
    assert cells[5] == f"{100 * d:+.2f}"
    assert cells[6] == f"[{100 * ci.low:+.2f}, {100 * ci.high:+.2f}]"
    assert cells[8] == "3"
    assert cells[9] == S.verdict(d, ci.low, ci.high, +1, n=3)
    assert cells[9] == "reproduced"  # all three differences are +5..+7 images of 240
    # Paper's +1.4 points vs the measured interval.
    assert cells[10] == ("inside" if ci.low <= 0.014 <= ci.high else "above" if 0.014 > ci.high else "below")
    # The PDF carries the same values.
    for value in cells[3:7]:
        assert squash(value) in squash(pdf_text)


def test_welch_when_seeds_differ(report, md):
    row = next(r for r in report.analyses["smoke"].comparison("no_pca_color").rows if r.metric == "top-1")
    b = np.array(list(BASE_TOP1.values())) / N_IMG
    v = np.array(list(NO_PCA_TOP1.values())) / N_IMG
    ci = sps.ttest_ind(v, b, equal_var=False).confidence_interval(0.95)
    assert row.seed_ci.method == "Welch t"
    assert (row.seed_ci.lo, row.seed_ci.hi) == pytest.approx((ci.low, ci.high), abs=1e-12)
    cells = table_row(md, "`no_pca_color`", "top-1")
    assert cells[8] == "3/2"
    assert cells[6] == f"[{100 * ci.low:+.2f}, {100 * ci.high:+.2f}]"


def test_image_bootstrap(report):
    row = next(r for r in report.analyses["smoke"].comparison("no_lrn").rows if r.metric == "top-1")
    ici = row.image_ci
    assert ici.method == "bootstrap (images)" and ici.n == N_IMG
    # Point estimate from the per-image arrays equals the seed-level delta (consistent fixture).
    assert ici.estimate == pytest.approx(row.seed_ci.estimate, abs=1e-12)
    assert ici.lo < ici.estimate < ici.hi
    # Independent check: rebuild the per-image differences and bootstrap them with the same seed.
    an = report.analyses["smoke"]
    comp = an.comparison("no_lrn")
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
    assert table_row(md, "`single_view_eval`", "top-1")[5] == f"{100 * (v - b).mean():+.2f}"


def test_gap_metric(report, md):
    row = report.analyses["smoke"].comparison("no_crop_flip").rows[0]
    assert row.metric == "gap"
    gb = np.array([BASE_TOP1[s] / N_IMG - TRAIN_CLEAN["baseline"][s] for s in (0, 1, 2)])
    gv = np.array([NO_CROP_TOP1[s] / N_IMG - TRAIN_CLEAN["no_crop_flip"][s] for s in (0, 1, 2)])
    ci = sps.ttest_rel(gv, gb).confidence_interval(0.95)
    assert row.seed_ci.estimate == pytest.approx((gv - gb).mean())
    assert (row.seed_ci.lo, row.seed_ci.hi) == pytest.approx((ci.low, ci.high))
    assert row.image_ci.estimate == pytest.approx(row.seed_ci.estimate)
    # Overfitting table: baseline, no_crop_flip, no_dropout, mean ± sd.
    sec = md.split("## 3. Overfitting")[1].split("## 4.")[0]
    assert table_row(sec, "`baseline`")[6] == fmt_pm(gb)
    assert table_row(sec, "`no_crop_flip`")[6] == fmt_pm(gv)
    assert table_row(sec, "`no_dropout`")[3] == fmt_pm(TRAIN_CLEAN["no_dropout"])


def test_claims_without_numbers(report, md):
    an = report.analyses["smoke"]
    assert all(r.verdict == "no claim" for r in an.comparison("lrn_convention").rows)
    # no_pca_color claims top-1 only: the top-5 row has no claim.
    assert next(r for r in an.comparison("no_pca_color").rows if r.metric == "top-5").verdict == "no claim"
    # one_tower: 1 finished seed -> not measurable, and the failed seed is not averaged in.
    row = next(r for r in an.comparison("one_tower").rows if r.metric == "top-1")
    assert row.verdict == "not measurable" and list(row.variant) == [0]
    # bias_init: no runs at all.
    assert all(r.verdict == "not measurable" for r in an.comparison("bias_init").rows)


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
    assert all(missing[("bias_init", s)] == "absent" for s in (0, 1, 2))
    assert missing[("fig1_tanh.grid (lr 0.0025)", GRID_SEED)] == "absent"
    assert ("no_lrn", 0) not in missing and ("baseline", 1) not in missing
    assert not any(lab == "single_view_eval" for lab, _ in missing)  # an eval ablation trains nothing
    sec = md.split("## 7. Completeness")[1]
    assert "| `bias_init` | 2 | absent |" in sec


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
    assert row[3] == fmt_pm([60 / N_IMG, 61 / N_IMG])  # cifar10's own baseline, not smoke's
    # Each preset lists its own ablations: cifar10 has fig1_tanh but not tanh (an ImageNet-only one).
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


def test_figure1(report, md):
    f1 = report.analyses["smoke"].fig1
    assert {s: t.epochs for s, t in f1.base_ttt.items()} == FIG1_RELU
    assert {s: t.epochs for s, t in f1.variant_ttt.items()} == FIG1_TANH
    assert f1.variant_ttt[2].observed == 20 and not f1.variant_ttt[2].reached  # censored, kept as a bound
    ratios = np.array([15 / 3, 18 / 3, 20 / 4])
    lr_ = np.log(ratios)
    half = sps.t.ppf(0.975, 2) * lr_.std(ddof=1) / math.sqrt(3)
    assert f1.ratio.estimate == pytest.approx(math.exp(lr_.mean()))
    assert (f1.ratio.lo, f1.ratio.hi) == pytest.approx((math.exp(lr_.mean() - half), math.exp(lr_.mean() + half)))
    assert f1.ratio.mean == pytest.approx(ratios.mean()) and f1.ratio.sd == pytest.approx(ratios.std(ddof=1))
    assert f1.base_lr == 0.01 and f1.variant_lr == 0.02
    assert f1.wall_ratio.estimate == pytest.approx(math.exp(np.log([150 / 30, 180 / 30, 200 / 40]).mean()))
    row = table_row(md, "`fig1_tanh`", "epochs")
    assert row[5] == f"x{math.exp(lr_.mean()):.2f}"
    assert row[9] == "reproduced"
    assert "lower bounds" in md  # the censored tanh seed is said, not dropped
    assert "> 20 (not reached)" in md
    # The learning-rate grid: chosen rates marked, the missing rate shown.
    grid = md.split("| lr | ReLU")[1].split("\n\n")[0]
    assert "| 0.01 | 3 (chosen) |" in grid
    assert "15 (chosen)" in grid
    assert "| 0.0025 | > " in grid and "missing" in grid
    fig = report.out_dir / "figures" / "smoke_figure1.png"
    assert fig.exists() and fig.stat().st_size > 10_000


def test_figures_and_pdf(report, pdf_text):
    names = {f.path.name for f in report.figures}
    assert {"smoke_learning_curves.png", "smoke_deltas.png", "smoke_conv1.png", "smoke_figure1.png"} <= names
    for f in report.figures:
        assert f.path.stat().st_size > 5_000
    assert report.pdf.stat().st_size > 50_000
    assert "Claims and measurements" in pdf_text and "reproduced" in pdf_text
    md = report.markdown.read_text()
    for name in names:
        assert f"figures/{name}" in md


def test_empty_root(tmp_path):
    rep = build_report(tmp_path / "nothing", tmp_path / "out")
    assert "No runs found" in rep.markdown.read_text()
    assert rep.pdf.exists()
    rep = build_report(tmp_path / "nothing", tmp_path / "out2", preset="imagenette")
    text = rep.markdown.read_text()
    assert "| `baseline` | 0 | absent |" in text and "| `no_lrn` | 2 | absent |" in text


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
    assert f"python -m reports --runs {fixture_root} --out {out}" in text


def test_cli_defaults(tmp_path, monkeypatch, capsys):
    from reports.__main__ import main

    monkeypatch.setenv("REPRODUCE_RUNS", str(tmp_path / "empty"))
    assert main([]) == 0
    assert (tmp_path / "empty" / "report" / "report.md").exists()
    assert (tmp_path / "empty" / "report" / "report.pdf").exists()
    assert "report.md" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--preset", "imagenett"])


def test_lossy_data_note(full_md):
    sec = preset_section(full_md, "cifar10")
    assert "lossy JPEG copy of CIFAR-10" in sec
