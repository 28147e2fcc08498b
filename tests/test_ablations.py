"""The ablation registry and runner."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from ablations.kinds import kind_of
from ablations.registry import ABLATIONS, get_ablation
from ablations.runner import Runner, parse_seeds
from reproduce.config import PRESETS, diff

# Code that runs no Keras model differently per backend: `make test` runs it once.
pytestmark = pytest.mark.one_backend

ROOT = Path(__file__).resolve().parent.parent


def test_registry_entries_are_complete():
    assert {
        "tanh",
        "no_lrn",
        "lrn_convention",
        "no_overlap_pool",
        "no_pca_color",
        "no_crop_flip",
        "no_dropout",
        "one_tower",
        "single_view_eval",
        "bias_init",
        "fig1_tanh",
    } <= set(ABLATIONS)
    for a in ABLATIONS.values():
        assert a.description and a.presets and set(a.presets) <= set(PRESETS)
        for p in a.presets:
            c = a.claim(p)
            assert c.section.startswith("§") and c.text
            base, var = a.base_config(p), a.variant_config(p)
            if kind_of(a).trains_variant:
                assert diff(base, var), f"{a.name} on {p}: the variant equals the baseline"
            else:
                assert not diff(base, var)


def test_an_ablation_that_shares_a_base_arm_trains_no_base_runs_of_its_own(tmp_path):
    """bias_zero_fair compares bias 0 with the same bias-0.1 arm as bias_fair: the
    arm's configuration must be the same, and its runs are trained once."""
    for a in ABLATIONS.values():
        if a.shares_base_with:
            owner = get_ablation(a.shares_base_with)
            for p in a.presets:
                assert not diff(a.base_config(p), owner.base_config(p)), (a.name, p)
    a = get_ablation("bias_zero_fair")
    plan = Runner("imagenette-cpu", 1, tmp_path, verbose=0, published=[]).plan(["bias_fair", a.name])
    labels = [j.label for j in plan.todo]
    assert a.base_label == "bias_fair.base" and labels.count("bias_fair.base") == 1
    assert not any(lab.startswith("bias_zero_fair.base") for lab in labels)
    assert labels.count("bias_zero_fair.grid") >= 2 and labels.count("bias_zero_fair") == 1


def test_unknown_ablation_names_the_valid_ones():
    with pytest.raises(ValueError, match="no_lrn") as e:
        get_ablation("no_lnr")
    assert "one_tower" in str(e.value)


def test_seeds():
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("0,4,7") == [0, 4, 7] and parse_seeds(2) == [0, 1]
    assert parse_seeds("5,") == [5]
    for bad in ("abc", "0", "1,x", "-1,2"):
        with pytest.raises(ValueError, match="SEEDS="):
            parse_seeds(bad)


def test_seeds_0_is_zero_seeds_and_says_how_to_ask_for_seed_0():
    assert parse_seeds("0,") == [0]
    with pytest.raises(ValueError) as e:
        parse_seeds("0")
    assert str(e.value) == (
        "SEEDS='0' is a count (3 = seeds 0, 1, 2), so it means no seeds at all; "
        "for seed 0 alone write SEEDS=0, (a list of one seed)"
    )


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_every_ablation_builds_and_takes_one_smoke_step(name):
    from reproduce.data import Stats
    from reproduce.train import build_training_model

    a = ABLATIONS[name]
    preset = "smoke" if "smoke" in a.presets else a.presets[0]
    cfg = a.variant_config("smoke") if preset == "smoke" else a.variant_config(preset)
    if preset != "smoke":
        cfg.data.image_size, cfg.data.crop_size = 76, 67
    keras.utils.set_random_seed(0)
    S = cfg.data.image_size
    stats = Stats(
        np.full((S, S, 3), 120, np.float32),
        np.array([0.2, 0.02, 0.005], np.float32) * 255**2,
        np.eye(3, dtype=np.float32),
    )
    model, net = build_training_model(cfg, stats, num_classes=4)
    model.compile(
        optimizer=keras.optimizers.SGD(0.001, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = np.random.default_rng(0).integers(0, 256, (4, cfg.data.image_size, cfg.data.image_size, 3), dtype=np.uint8)
    loss = model.train_on_batch(x, np.arange(4) % 4)
    assert np.isfinite(loss)


@pytest.mark.slow
def test_make_ablation_end_to_end_then_nothing_to_do(tmp_path):
    env = {**os.environ, "REPRODUCE_CACHE": str(tmp_path / "cache")}
    cmd = [
        "make",
        "-s",
        "ablation",
        "NAME=no_lrn",
        "PRESET=smoke",
        "SEEDS=2",
        f"RUNS={tmp_path / 'runs'}",
        f"PY={sys.executable}",
        f"BACKEND={keras.backend.backend()}",
        "SET=eval.ten_view=false",
    ]
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "plan for preset smoke: 4 run(s) to train, 0 already finished" in first.stdout
    assert "estimated time on this machine" in first.stdout
    assert [ln.split(" · ")[0] for ln in first.stdout.splitlines() if " · ETA " in ln] == [
        f"[ablations] run {i}/4" for i in (1, 2, 3, 4)
    ]
    assert "trained 4 run(s); 0 already finished" in first.stdout
    # not a terminal: one line per epoch, no progress-bar redraws; no TensorFlow start-up noise
    assert "\r" not in first.stdout and "\x08" not in first.stdout
    for noise in ("cuInit", "absl::InitializeLog", "cudart_stub"):
        assert noise not in first.stderr
    assert (tmp_path / "runs" / "report" / "report.md").exists()
    assert (tmp_path / "runs" / "report" / "report.pdf").exists()
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "trained 0 run(s); 4 already finished" in second.stdout
    assert "plan for preset smoke: 0 run(s) to train, 4 already finished" in second.stdout
    assert "Epoch" not in second.stdout


def test_user_overrides_may_not_cancel_the_ablation(tmp_path):
    from ablations.runner import Runner

    r = Runner("smoke", 1, tmp_path, overrides=["model.lrn=true"], verbose=0)
    with pytest.raises(ValueError, match="model.lrn"):
        r.run(["no_lrn"])
    assert not any(tmp_path.iterdir())  # refused before anything ran


def _fake_training(monkeypatch, needs):
    """reproduce.train.train replaced by a stand-in: a rate `lr` reaches the target
    after needs(lr, activation) epochs (None: never), within the caller's limit."""
    from reproduce import train as train_lib

    calls = []

    def fake(cfg, run_dir, meta=None, verbose=0, epoch_limit=None):
        lr, act = cfg.train.learning_rate, cfg.model.activation
        calls.append((meta["label"], cfg.train.seed, lr, epoch_limit))
        n = needs(lr, act)
        limit = min(cfg.train.epochs, epoch_limit or cfg.train.epochs)
        reached = n is not None and n <= limit
        return {
            "status": "ok",
            "epochs": n if reached else limit,
            "epochs_to_target": n if reached else None,
            "train_top1_err": 0.25 - lr if reached else 0.3,
            "censored": not reached,
        }

    monkeypatch.setattr(train_lib, "train", fake)
    return calls


def test_fig1_grid_order_censoring_and_seeds(tmp_path, monkeypatch):
    from ablations.kinds.lr_grid import GRID_SEED, grid_order

    assert grid_order((0.0025, 0.005, 0.01, 0.02)) == [0.005, 0.01, 0.0025, 0.02]
    relu = {0.005: 8, 0.01: 12, 0.0025: 8, 0.02: None}  # 0.0025 ties 0.005 in epochs
    tanh = {0.005: 40, 0.01: 30, 0.0025: 70, 0.02: 35}
    calls = _fake_training(monkeypatch, lambda lr, act: (relu if act == "relu" else tanh)[lr])
    Runner("cifar10", 2, tmp_path, verbose=0).run(["fig1_tanh"])
    grid = [c for c in calls if c[1] == GRID_SEED]
    assert [(c[0], c[2], c[3]) for c in grid] == [
        ("fig1_tanh.base.grid", 0.005, None),
        ("fig1_tanh.base.grid", 0.01, 8),
        ("fig1_tanh.base.grid", 0.0025, 8),
        ("fig1_tanh.base.grid", 0.02, 8),
        # tanh: 0.01 beat 0.005, so the rate on that side (0.02) runs before 0.0025.
        ("fig1_tanh.grid", 0.005, None),
        ("fig1_tanh.grid", 0.01, 40),
        ("fig1_tanh.grid", 0.02, 30),
        ("fig1_tanh.grid", 0.0025, 30),
    ]
    seeded = [(c[0], c[1], c[2], c[3]) for c in calls if not c[0].endswith(".grid")]
    # ReLU: 0.0025 and 0.005 both need 8 epochs; 0.005 ends lower (0.25 - lr): chosen.
    assert seeded == [
        ("fig1_tanh.base", 0, 0.005, None),
        ("fig1_tanh.base", 1, 0.005, None),
        ("fig1_tanh", 0, 0.01, None),
        ("fig1_tanh", 1, 0.01, None),
    ]
    # The grids again on the second selection seed (cifar10's check), each after
    # its arm's seeds: the same search, only to check the choice.
    (check_seed,) = get_ablation("fig1_tanh").check_selection_seeds["cifar10"]
    check = [(c[0], c[2], c[3]) for c in calls if c[1] == check_seed]
    assert check == [(c[0], c[2], c[3]) for c in grid]
    order = [(c[0], c[1]) for c in calls]
    assert order.index(("fig1_tanh.base", 1)) < order.index(("fig1_tanh.base.grid", check_seed))
    assert order.index(("fig1_tanh.base.grid", check_seed)) < order.index(("fig1_tanh.grid", GRID_SEED))


def test_the_next_grid_rate_is_the_untried_one_nearest_the_fastest():
    from ablations.kinds.lr_grid import next_grid_rate

    grid = (0.00125, 0.0025, 0.005, 0.01, 0.02)
    assert next_grid_rate(grid, {}) == 0.005
    assert next_grid_rate(grid, {0.005: (40, 0.3)}) == 0.0025  # the middle two: ties go to the lower
    tried = {0.005: (40, 0.3), 0.0025: (60, 0.3)}
    assert next_grid_rate(grid, tried) == 0.01  # one octave from the fastest, not 0.00125
    tried[0.01] = (30, 0.2)
    assert next_grid_rate(grid, tried) == 0.02
    tried[0.02] = (25, 0.2)
    assert next_grid_rate(grid, tried) == 0.00125
    tried[0.00125] = (float("inf"), 0.5)
    assert next_grid_rate(grid, tried) is None
    # Equally near on both sides: away from the slower rate, where the ranks improve.
    assert next_grid_rate(grid, {0.01: (30, 0.2), 0.00125: (40, 0.3)}) == 0.02
    assert next_grid_rate(grid, {0.0025: (30, 0.2), 0.02: (40, 0.3)}) == 0.00125


def test_the_pending_rate_is_the_grid_then_its_growth_at_the_fastest_edge():
    """What the search runs next from what it knows: the report uses it to tell a
    complete grid from one whose search would still grow."""
    from ablations.kinds.lr_grid import GRID_MAX_EXTENSIONS, pending_rate

    grid = (0.0025, 0.005, 0.01, 0.02)
    assert pending_rate(grid, {}) == 0.005
    ranks = {0.0025: (9, 0.2), 0.005: (8, 0.2), 0.01: (7, 0.2)}
    assert pending_rate(grid, ranks) == 0.02  # the grid first
    ranks[0.02] = (9, 0.2)
    assert pending_rate(grid, ranks) is None  # fastest inside: done
    ranks[0.02] = (6, 0.2)
    assert pending_rate(grid, ranks) == 0.04  # fastest at the top edge: grow
    ranks[0.04] = (float("inf"), float("inf"))  # diverged there
    assert pending_rate(grid, ranks) is None
    edge = {r: (20 - i, 0.2) for i, r in enumerate(grid)}
    for k in range(GRID_MAX_EXTENSIONS):  # faster and faster upwards: at most this many more
        nxt = pending_rate(grid, edge)
        assert nxt == 0.02 * 2 ** (k + 1)
        edge[nxt] = (10 - k, 0.2)
    assert pending_rate(grid, edge) is None
    assert pending_rate(grid, {r: (float("inf"), 0.5) for r in grid}) is None  # none reached: no growth


def test_a_grid_whose_every_rate_collapses_grows_downwards_and_its_verdict_is_withheld(tmp_path, monkeypatch):
    """A rate too high for the initialization kills the ReLUs and leaves the net at
    chance: every rate tried failing means the grid is too high, so it grows
    downwards; an arm whose chosen rate still collapses gets no verdict."""
    from ablations.kinds.lr_grid import GRID_EXTEND_FACTOR, GRID_MAX_EXTENSIONS, GRID_SEED, pending_rate
    from reports import build_report
    from reports import stats as S
    from reproduce import runs as R
    from reproduce import train as train_lib

    grid = (0.0025, 0.005, 0.01, 0.02)
    inf = float("inf")
    assert pending_rate(grid, {r: (inf, inf) for r in grid}, failed=set(grid)) == 0.0025 / GRID_EXTEND_FACTOR
    # One rate that trained (slowly) says the grid is not simply too high: no growth.
    assert (
        pending_rate(grid, {r: (inf, 0.5 if r == 0.0025 else inf) for r in grid}, failed=set(grid) - {0.0025}) is None
    )

    calls = []

    def fake(cfg, run_dir, meta=None, verbose=0, epoch_limit=None):
        lr, act = cfg.train.learning_rate, cfg.model.activation
        calls.append((meta["label"], cfg.train.seed, lr))
        R.write_config(run_dir, cfg.to_dict(), {**meta, "seed": cfg.train.seed, "fingerprint": cfg.fingerprint()})
        R.write_env(run_dir, {"host": "h", "num_classes": 10})
        # ReLU trains below 0.0025 (10 epochs at 0.00125, 20 at 0.000625); tanh nowhere.
        need = {0.00125: 10, 0.000625: 20}.get(lr) if act == "relu" else None
        dead = need is None and (act != "relu" or lr >= 0.0025)
        limit = min(cfg.train.epochs, epoch_limit or cfg.train.epochs)
        n = need if need is not None and need <= limit else limit
        curve = [0.9 if dead else (0.2 if need is not None and e + 1 >= need else 0.5) for e in range(n)]
        R.write_metrics_rows(run_dir, [{"epoch": e, "top1_err": v} for e, v in enumerate(curve)])
        res = {k: None for k in R.RESULT_KEYS} | {
            "status": "ok",
            "epochs": n,
            "epochs_to_target": need if need is not None and need <= limit else None,
            "train_top1_err": curve[-1],
            "censored": need is None or need > limit,
            "val_top1_err": 0.905 if dead else 0.4,
            "val_top5_err": 0.5 if dead else 0.1,
            "train_top1_err_clean": curve[-1],
            "wall_time_s": 1.0,
            "images_per_s": 1.0,
            "n_val": 1000,
            "fc7_dead_fraction": 1.0 if dead else 0.05,
        }
        R.write_result(run_dir, res)
        return res

    monkeypatch.setattr(train_lib, "train", fake)
    Runner("cifar10", 2, tmp_path / "runs", verbose=0).run(["fig1_tanh"])
    relu_grid = [c[2] for c in calls if c[1] == GRID_SEED and c[0] == "fig1_tanh.base.grid"]
    assert relu_grid == [0.005, 0.01, 0.0025, 0.02, 0.00125, 0.000625]  # down, then the usual edge growth
    tanh_grid = [c[2] for c in calls if c[1] == GRID_SEED and c[0] == "fig1_tanh.grid"]
    assert len(tanh_grid) == len(grid) + GRID_MAX_EXTENSIONS and tanh_grid[-1] == 0.0025 / 2**GRID_MAX_EXTENSIONS
    assert {c[2] for c in calls if c[0] == "fig1_tanh.base"} == {0.00125}
    assert {c[2] for c in calls if c[0] == "fig1_tanh"} == {tanh_grid[-1]}

    rep = build_report(tmp_path / "runs", tmp_path / "out")
    comp = rep.analyses["cifar10"].comparison("fig1_tanh")
    assert comp.primary.verdict == S.COLLAPSED
    assert "`fig1_tanh` at chance in 2/2 seeds" in comp.tags[0]
    md = rep.markdown.read_text()
    assert "collapsed: at chance, 100% of fc7 units dead" in md
    # Collapses rate by rate, over the grid's runs (selection seeds 1000 and 1001)
    # and the seeds' (0, 1) of each arm.
    col = comp.extra.collapses
    assert col["relu"][0.005] == (2, 2, [1.0, 1.0]) and col["relu"][0.00125] == (4, 0, [])
    assert col["tanh"][tanh_grid[-1]] == (4, 4, [1.0] * 4)
    assert "| tanh | 0.0003125 | 4 | 4/4 | 100%, 100%, 100%, 100% |" in md


def test_fig1_grid_grows_when_the_best_rate_is_at_its_edge(tmp_path, monkeypatch):
    from ablations.kinds.lr_grid import GRID_SEED

    # Faster and faster towards high rates up to 0.08; tanh best inside the grid.
    relu = {0.0025: 20, 0.005: 15, 0.01: 10, 0.02: 6, 0.04: 5, 0.08: 4, 0.16: None}
    calls = _fake_training(
        monkeypatch, lambda lr, act: relu[lr] if act == "relu" else {0.005: 40, 0.01: 30, 0.0025: 70, 0.02: 35}[lr]
    )
    Runner("cifar10", 1, tmp_path, verbose=0).run(["fig1_tanh"])
    relu_grid = [c[2] for c in calls if c[1] == GRID_SEED and c[0] == "fig1_tanh.base.grid"]
    assert relu_grid == [0.005, 0.01, 0.02, 0.0025, 0.04, 0.08, 0.16]  # towards the faster side first
    assert [c[2] for c in calls if c[0] == "fig1_tanh.base"] == [0.08]


def test_a_diverged_grid_rate_is_decided_once_and_travels_with_the_published_runs(tmp_path, monkeypatch):
    from ablations.kinds.lr_grid import GRID_SEED
    from reproduce import runs as R
    from reproduce import train as train_lib

    calls = []

    def fake(cfg, run_dir, meta=None, verbose=0, epoch_limit=None):
        lr, act = cfg.train.learning_rate, cfg.model.activation
        calls.append((meta["label"], cfg.train.seed, lr))
        R.write_config(run_dir, cfg.to_dict(), {**meta, "seed": cfg.train.seed, "fingerprint": cfg.fingerprint()})
        R.write_env(run_dir, {"host": "h"})
        if lr >= 0.02:  # as train() does: failure.json, then the error
            R.write_failure(run_dir, "diverged", {"epoch": 0, "learning_rate": lr})
            raise train_lib.TrainingDiverged(f"the loss became nan (learning rate {lr})")
        n = {0.0025: 9, 0.005: 8, 0.01: 10}[lr] if act == "relu" else 30
        R.write_metrics_rows(run_dir, [{"epoch": e, "top1_err": 0.3} for e in range(n)])
        res = {
            "status": "ok",
            "epochs": n,
            "epochs_to_target": n,
            "train_top1_err": 0.25,
            "censored": False,
            "val_top1_err": 0.3,
            "val_top5_err": 0.1,
            "val_top1_err_10view": None,
            "val_top5_err_10view": None,
            "train_top5_err": 0.1,
            "train_top1_err_clean": 0.25,
            "wall_time_s": 1.0,
            "images_per_s": 1.0,
        }
        R.write_result(run_dir, {k: res.get(k) for k in R.RESULT_KEYS} | res)
        return res

    monkeypatch.setattr(train_lib, "train", fake)
    first = Runner("cifar10", 1, tmp_path / "runs", verbose=0)
    first.run(["fig1_tanh"])
    assert first.failed == []  # an answer for the grid, not a failed run (exit status 0)
    diverged = [c for c in calls if c[2] >= 0.02]
    assert {c[0] for c in diverged} == {"fig1_tanh.base.grid", "fig1_tanh.grid"}
    assert [c[2] for c in calls if c[0] == "fig1_tanh.base"] == [0.005]  # the diverged edge is not "best"
    # Resumed: the diverged rates are answers, not retried; nothing else is trained either.
    calls.clear()
    Runner("cifar10", 1, tmp_path / "runs", verbose=0).run(["fig1_tanh"])
    assert calls == []
    # Published, they travel: a fresh runs root with the store trains nothing.
    res = R.publish(tmp_path / "runs", tmp_path / "results")
    pub = [d for d in res.copied if (d / R.FAILURE).exists()]
    # The diverged rate of each arm, on the selection seed and on the check seed.
    assert sorted(d.name for d in pub) == sorted([f"seed{GRID_SEED}", "seed1001"] * 2) and all(
        sorted(p.name for p in d.iterdir()) == sorted(f for f in R.DIVERGED_FILES if f != R.METRICS) for d in pub
    )
    fresh = Runner("cifar10", 1, tmp_path / "fresh", verbose=0, published=[tmp_path / "results"])
    done = fresh.plan(names=["fig1_tanh"], baseline=False)
    assert done.todo == [] and done.pending == []  # both grids decided: nothing left to decide
    open_grid = Runner("cifar10", 1, tmp_path / "empty", verbose=0, published=[])
    assert len(open_grid.plan(names=["fig1_tanh"], baseline=False).pending) == 1
    # A finished run of the same experiment and seed replaces a published divergence;
    # while a process trains it, it is not published at all.
    src = next(d for d in (tmp_path / "runs").rglob(f"seed{GRID_SEED}") if (d / R.FAILURE).exists())
    with R.lock(src):
        assert (src, "being trained") in R.publish(tmp_path / "runs", tmp_path / "results").skipped
    R.write_metrics_rows(src, [{"epoch": 0, "top1_err": 0.3}])
    R.write_result(src, {k: 0.0 for k in R.RESULT_KEYS} | {"status": "ok"})
    again = R.publish(tmp_path / "runs", tmp_path / "results")
    dst = tmp_path / "results" / src.relative_to(tmp_path / "runs")
    assert dst in again.copied and (dst / R.RESULT).exists() and not (dst / R.FAILURE).exists()


def test_a_grid_run_that_diverges_when_extended_keeps_its_earlier_result(tmp_path, monkeypatch):
    """A censored grid run extended under a higher cap, diverging on the way: not
    retried on the next walk, and ranked by what it reached before."""
    from ablations.kinds.lr_grid import GRID_SEED
    from reproduce import runs as R
    from reproduce import train as train_lib
    from reproduce.config import get_config

    calls = []
    monkeypatch.setattr(train_lib, "train", lambda *a, **k: calls.append(a) or {})
    cfg = get_config("cifar10", ["model.arch=cifar_fig1", "train.stop_at_train_error=0.25"])
    cfg.train.seed = GRID_SEED
    r = Runner("cifar10", 1, tmp_path, verbose=0)
    d = R.run_dir(tmp_path, "cifar10", "x.grid", cfg.fingerprint(), GRID_SEED)
    R.write_config(
        d, cfg.to_dict(), {"preset": "cifar10", "label": "x.grid", "seed": GRID_SEED, "fingerprint": cfg.fingerprint()}
    )
    earlier = {k: 0.0 for k in R.RESULT_KEYS} | {
        "status": "ok",
        "epochs": 8,
        "censored": True,
        "epochs_to_target": None,
        "train_top1_err": 0.3,
    }
    R.write_result(d, earlier)
    R.write_failure(d, "diverged", {"epoch": 11})  # after the result: the extension diverged
    assert R.can_extend(d, 20) and R.is_diverged(d)
    assert r.run_one("x.grid", cfg, GRID_SEED, epoch_limit=20, diverged_is_final=True) == earlier
    assert calls == []
    # A seeded run (not a grid rate) in the same state is trained again.
    r.run_one("x.grid", cfg, GRID_SEED, epoch_limit=20)
    assert len(calls) == 1


def test_an_ablation_of_an_unknown_kind_is_refused_naming_the_kinds(tmp_path, monkeypatch):
    import dataclasses

    from ablations import registry
    from ablations.kinds import KINDS

    assert set(KINDS) == {"paired", "two_evals", "lr_grid"}
    assert {a.name: kind_of(a).name for a in ABLATIONS.values()}["single_view_eval"] == "two_evals"
    bogus = dataclasses.replace(get_ablation("no_lrn"), name="no_lrn_old_kind", kind="train")
    with pytest.raises(ValueError) as e:
        kind_of(bogus)
    assert "'no_lrn_old_kind'" in str(e.value) and "'train'" in str(e.value)
    assert "paired, two_evals, lr_grid" in str(e.value)
    # The runner refuses it before anything is planned or trained, as does the report's analysis.
    monkeypatch.setitem(registry.ABLATIONS, bogus.name, bogus)
    with pytest.raises(ValueError, match="the kinds are: paired, two_evals, lr_grid"):
        Runner("smoke", 1, tmp_path / "runs", verbose=0, published=[]).plan([bogus.name])
    from reports import analysis

    with pytest.raises(ValueError, match="'train'"):
        analysis.compare("smoke", bogus, {})
    # A learning-rate grid with no rates is refused by its kind.
    empty = dataclasses.replace(get_ablation("fig1_tanh"), name="fig1_no_rates", lr_grid=())
    monkeypatch.setitem(registry.ABLATIONS, empty.name, empty)
    with pytest.raises(ValueError, match="'fig1_no_rates' is of kind 'lr_grid' but has no learning rates"):
        Runner("smoke", 1, tmp_path / "runs", verbose=0, published=[]).plan([empty.name])
    assert not (tmp_path / "runs").exists()


def test_the_lr_grid_plan_walks_each_arms_grid_then_its_seeds(tmp_path):
    """The dry walk of Figure 1 on the smoke preset, as the runner walked it before
    the kinds: each arm's grid from the middle out on the selection seed (no rate
    known, so no cap), then the seeds at the rate known so far (the lowest: every
    rank ties while nothing has run), and one note for the runs decided later."""
    from ablations.kinds.lr_grid import GRID_SEED, grid_label

    plan = Runner("smoke", 3, tmp_path, verbose=0, published=[]).plan(["fig1_tanh"])
    walk = [(j.label, j.seed, j.cfg.train.learning_rate, j.epoch_limit) for j in plan.todo]
    middle_out = (0.005, 0.01, 0.0025, 0.02)
    assert walk == (
        [("fig1_tanh.base.grid", GRID_SEED, lr, None) for lr in middle_out]
        + [("fig1_tanh.base", s, 0.0025, None) for s in range(3)]
        + [("fig1_tanh.grid", GRID_SEED, lr, None) for lr in middle_out]
        + [("fig1_tanh", s, 0.0025, None) for s in range(3)]
    )
    assert plan.pending == [
        "(Figure 1: grid rates stop early once they cannot win; the grid may grow by x2 at "
        "an edge, up to 3 more rates per arm)"
    ]
    # A seeded run at a rate is the same experiment as its grid run at that rate, one seed apart.
    by = {(j.label, j.cfg.train.learning_rate): j.run_dir.parent.name.rsplit("-", 1)[1] for j in plan.todo}
    for arm in ("fig1_tanh.base", "fig1_tanh"):
        assert by[(arm, 0.0025)] == by[(grid_label(arm), 0.0025)]
        assert len({by[(grid_label(arm), lr)] for lr in middle_out}) == 4
    # The rate is the grid's to choose: a user override of it is refused.
    with pytest.raises(ValueError, match="train.learning_rate"):
        Runner("smoke", 1, tmp_path, overrides=["train.learning_rate=0.1"], verbose=0).plan(["fig1_tanh"])


def test_a_new_fair_test_reuses_the_lr_grid_kind(tmp_path, monkeypatch):
    """An lr_grid ablation on another claim (tanh against ReLU on final error, each
    activation at its own rate): the same grid walk, and the paired rows with the
    arms' rates allowed to differ, beside the grid."""
    from ablations import registry
    from ablations.kinds.lr_grid import GRID_SEED
    from ablations.registry import Ablation, Claim
    from reports import analysis

    ab = Ablation(
        name="tanh_tuned",
        description="tanh instead of ReLU, each at its fastest rate",
        overrides={"model.activation": "tanh"},
        presets=("smoke",),
        kind="lr_grid",
        base_overrides={"train.stop_at_train_error": 0.25},
        lr_grid=(0.005, 0.01),
        arm_names=("ReLU", "tanh"),
        arm_title="Activation",
        claims={"*": Claim("§3.1", "tanh is worse at the same budget", top1=1.0)},
    )
    monkeypatch.setitem(registry.ABLATIONS, ab.name, ab)
    plan = Runner("smoke", 2, tmp_path, verbose=0, published=[]).plan([ab.name])
    assert [(j.label, j.seed) for j in plan.todo] == (
        [("tanh_tuned.base.grid", GRID_SEED)] * 2
        + [("tanh_tuned.base", 0), ("tanh_tuned.base", 1)]
        + [("tanh_tuned.grid", GRID_SEED)] * 2
        + [("tanh_tuned", 0), ("tanh_tuned", 1)]
    )
    comp = analysis.compare("smoke", ab, {})
    assert [r.metric for r in comp.rows] == ["top-1", "top-5"] and comp.rows[0].role == "primary"
    fig = comp.extra
    assert fig.ratio is None and set(fig.grid) == {"relu", "tanh"}
    assert [(c.lr, c.status) for c in fig.grid["tanh"]] == [(0.005, "missing"), (0.01, "missing")]
    assert kind_of(ab).missing(comp) == [
        ("tanh_tuned.base.grid (lr 0.005)", GRID_SEED, "absent"),
        ("tanh_tuned.base.grid (lr 0.01)", GRID_SEED, "absent"),
        ("tanh_tuned.grid (lr 0.005)", GRID_SEED, "absent"),
        ("tanh_tuned.grid (lr 0.01)", GRID_SEED, "absent"),
    ]


def test_seed_overrides_reach_the_seeded_runs_and_not_the_grid(tmp_path, monkeypatch):
    """The fair tanh test's seeds train on past the target to a fixed budget (their
    final error), while its grid runs stop at the target, which ranks the rates."""
    from ablations import registry
    from ablations.kinds.lr_grid import GRID_SEED, is_grid_label
    from ablations.plan import history_estimate
    from ablations.registry import Ablation, Claim

    ab = Ablation(
        name="tanh_budget",
        description="tanh instead of ReLU, each at its fastest rate",
        overrides={"model.activation": "tanh"},
        presets=("smoke",),
        kind="lr_grid",
        base_overrides={"train.stop_at_train_error": 0.25, "train.epochs": 12},
        seed_overrides={"train.stop_at_target": False, "train.epochs": 5},
        lr_grid=(0.005, 0.01),
        claims={"*": Claim("§3.1", "ReLUs train faster", metric="epochs", ratio=6.0)},
    )
    monkeypatch.setitem(registry.ABLATIONS, ab.name, ab)
    plan = Runner("smoke", 2, tmp_path, verbose=0, published=[]).plan([ab.name])
    grid = [j for j in plan.todo if is_grid_label(j.label)]
    seeds = [j for j in plan.todo if not is_grid_label(j.label)]
    assert {j.seed for j in grid} == {GRID_SEED} and [j.seed for j in seeds] == [0, 1, 0, 1]
    assert {(j.cfg.train.stop_at_target, j.cfg.train.epochs) for j in grid} == {(True, 12)}
    assert {(j.cfg.train.stop_at_target, j.cfg.train.epochs) for j in seeds} == {(False, 5)}
    # A seed that trains past its target is timed for its whole budget, not for the
    # epochs its arm's grid needed to get there.
    grid_run = _finished_run(grid[0].cfg, "tanh_budget.grid", 20.0, 2)
    grid_run.result["epochs_to_target"] = 2
    est, kind = history_estimate(seeds[0], [grid_run], 640)
    assert kind == "scaled" and est == pytest.approx(10.0 * 5)
    # Either arm's seeds would lose their budget to a user's override: refused.
    with pytest.raises(ValueError, match="train.stop_at_target"):
        Runner("smoke", 1, tmp_path, overrides=["train.stop_at_target=true"], verbose=0).plan([ab.name])


def _finished_run(cfg, label, wall_s, epochs):
    from reproduce import runs

    return runs.Run(
        path=Path("unused"),
        config=cfg.to_dict(),
        meta={"preset": "smoke", "label": label, "data_id": cfg.data_id()},
        env={"host": "h", "n_train": 640},
        metrics=[{"epoch": i} for i in range(epochs)],
        result={"status": "ok", "wall_time_s": wall_s},
        failure=None,
    )


def test_history_for_estimates_is_this_host_and_device(tmp_path):
    """Cloud VMs share a host name over different CPUs: a run from another device
    does not time this one; a run that recorded no device still counts."""
    import socket

    from ablations.plan import on_this_machine, preset_history
    from reproduce import runs as R

    here = socket.gethostname()
    for name, env in (
        ("same", {"host": here, "device": "CPU (A, 2 cores)"}),
        ("other_cpu", {"host": here, "device": "CPU (B, 2 cores)"}),
        ("no_device", {"host": here}),
        ("other_host", {"host": here + "-not", "device": "CPU (A, 2 cores)"}),
    ):
        d = tmp_path / "smoke" / f"{name}-0123456789" / "seed0"
        d.mkdir(parents=True)
        R.write_config(d, {}, {"preset": "smoke", "label": name, "seed": 0})
        R.write_env(d, env)
        R.write_metrics_rows(d, [{"epoch": 0}])
        R.write_result(d, {k: 1.0 for k in R.RESULT_KEYS} | {"status": "ok"})
    runs_ = preset_history([tmp_path], "smoke")
    assert len(runs_) == 4
    assert sorted(r.label for r in on_this_machine(runs_, "CPU (A, 2 cores)")) == ["no_device", "same"]
    assert sorted(r.label for r in on_this_machine(runs_)) == ["no_device", "other_cpu", "same"]


def test_the_estimate_takes_the_median_so_one_slowed_run_does_not_skew_it():
    from ablations.plan import Job, history_estimate
    from reproduce.config import get_config

    cfg = get_config("smoke", ["train.epochs=4", "train.batch_size=64"])
    job = Job("baseline", 3, Path("unused"), cfg)
    # Three seeds of the same experiment, one of them slowed twice by a neighbour.
    same = [
        _finished_run(
            get_config("smoke", ["train.epochs=4", "train.batch_size=64", f"train.seed={s}"]), "baseline", w, 4
        )
        for s, w in ((0, 100.0), (1, 110.0), (2, 400.0))
    ]
    assert history_estimate(job, same, 640) == (110.0, "history")
    # Another label of the preset, 2 epochs instead of 4: scaled by images seen
    # (per image: 50/1280, 55/1280, 300/1280 s; median 55/1280 s).
    other = [
        _finished_run(get_config("smoke", ["train.epochs=2", "train.batch_size=64", "model.lrn=false"]), "no_lrn", w, 2)
        for w in (50.0, 55.0, 300.0)
    ]
    est, kind = history_estimate(job, other, 640)
    assert kind == "scaled"
    assert est == pytest.approx(55.0 / 1280 * 4 * 640)
    assert history_estimate(job, [], 640) == (None, "")


def test_a_run_to_a_target_is_estimated_from_its_own_arms_grid():
    """The tanh seeds of Figure 1 need the epochs tanh's grid measured, not the
    ReLU runs' few epochs that dominate the preset's history."""
    from ablations.plan import Job, history_estimate
    from reproduce.config import get_config

    def cfg(*extra):
        return get_config("smoke", ["train.epochs=60", "train.batch_size=64", "train.stop_at_train_error=0.25", *extra])

    def run(label, wall, epochs, reached):
        r = _finished_run(cfg(), label, wall, epochs)
        r.result["epochs_to_target"] = epochs if reached else None
        return r

    relu = [run("fig1_tanh.base", 8.0, 8, True) for _ in range(5)]  # 1 s an epoch, 8 epochs
    grid = [
        run("fig1_tanh.grid", 60.0, 30, True),
        run("fig1_tanh.grid", 40.0, 20, False),
        run("fig1_tanh.grid", 36.0, 18, True),
    ]  # 2 s an epoch; the fastest rate needed 18
    job = Job("fig1_tanh", 0, Path("unused"), cfg("model.activation=tanh"))
    est, kind = history_estimate(job, relu + grid, 640)
    assert kind == "scaled" and est == pytest.approx(2.0 * 18)
    # Without its grid the preset's history is all there is.
    assert history_estimate(job, relu, 640)[0] == pytest.approx(1.0 * 8)
    # The grid ran on another machine: its epochs still count, timed at this one's speed.
    assert history_estimate(job, relu, 640, everywhere=relu + grid) == (pytest.approx(1.0 * 18), "scaled")
    seeds_elsewhere = [run("fig1_tanh", 99.0, 40, True), run("fig1_tanh", 99.0, 44, True)]
    assert history_estimate(job, relu, 640, everywhere=relu + grid + seeds_elsewhere)[0] == pytest.approx(1.0 * 42)


def test_a_new_machine_times_known_target_epochs_at_its_calibrated_rate(tmp_path, monkeypatch):
    """No history on this host and device, but the tanh grid ran elsewhere: the
    estimate is the grid's epochs at this machine's measured rate, not the cap."""
    import types

    from ablations import plan as P
    from reproduce.config import get_config

    cfg = get_config(
        "smoke", ["train.epochs=60", "train.batch_size=64", "train.stop_at_train_error=0.25", "model.activation=tanh"]
    )
    elsewhere = _finished_run(cfg, "fig1_tanh.grid", 36.0, 18)
    elsewhere.result["epochs_to_target"] = 18
    monkeypatch.setattr(P, "preset_history", lambda roots, preset: [elsewhere])  # host "h": not this one
    # 64 img/s, 5 s fixed per run, 0.5 s per epoch
    monkeypatch.setattr(P, "calibrate", lambda cfg, data: (64.0, 5.0, 0.5))
    data = types.SimpleNamespace(train=range(640), val=range(64))
    jobs = [P.Job("fig1_tanh", 0, tmp_path / "a", cfg), P.Job("fig1_tanh.base", 0, tmp_path / "b", cfg)]
    plan = P.SuitePlan(todo=jobs)
    P.fill_estimates(plan, [tmp_path], "smoke", load_data=lambda d: data, verbose=False, device="CPU (X, 2 cores)")
    known, unknown = plan.todo
    assert known.estimate_kind == "calibrated"
    assert known.estimate_s == pytest.approx(5.0 + 18 * 0.5 + P._images_seen(known, data, 18) / 64.0)
    assert unknown.estimate_kind == "upper bound"  # its own arm has no grid: the 60-epoch cap
    assert unknown.estimate_s == pytest.approx(5.0 + 60 * 0.5 + P._images_seen(unknown, data) / 64.0)
    assert known.estimate_s < unknown.estimate_s / 3


def test_the_eta_leaves_out_a_run_that_failed_at_once():
    import io

    from ablations.plan import Job, Progress
    from reproduce.config import get_config

    jobs = [Job("x", s, Path(f"/r/{s}"), get_config("smoke")) for s in range(3)]
    for j in jobs:
        j.estimate_s = 100.0
    out = io.StringIO()
    p = Progress(jobs, out)
    p.start(jobs[0].run_dir, "x", 0)
    p.finish(jobs[0].run_dir, ok=False)  # diverged in a moment: says nothing about speed
    p.start(jobs[1].run_dir, "x", 1)
    assert out.getvalue().splitlines()[-1].split(" · ")[2] == "ETA 3 min"  # 2 runs x 100 s, unscaled


def test_the_printed_total_adds_the_start_and_the_report_and_rounds_up(tmp_path):
    """The plan's total is the whole command's: the time already spent starting
    and measuring, the runs, then the report; printed rounded up, never down."""
    import io

    from ablations.plan import REPORT_S_PER_PRESET, Job, SuitePlan, print_plan, report_seconds
    from reproduce.config import get_config

    jobs = [
        Job("baseline", s, tmp_path / str(s), get_config("smoke"), estimate_s=50.0, estimate_kind="calibrated")
        for s in range(2)
    ]
    plan = SuitePlan(todo=jobs, started_s=20.0, report_s=15.0)
    out = io.StringIO()
    print_plan(plan, "smoke", "CPU", out)
    line = next(x for x in out.getvalue().splitlines() if "estimated time" in x)
    # 135 s in all: 3 min (2 min would be the nearer whole minute, and below it)
    assert line.endswith(
        "3 min in all (calibrated): the runs ~2 min, then the report ~15 s, after the 20 s spent starting and measuring"
    ), line

    (tmp_path / "runs" / "cifar10").mkdir(parents=True)
    (tmp_path / "runs" / "report").mkdir()  # the report's own folder is no preset
    assert report_seconds(tmp_path / "runs", "smoke") == 2 * REPORT_S_PER_PRESET
    assert report_seconds(tmp_path / "runs", "cifar10") == REPORT_S_PER_PRESET
    assert report_seconds(tmp_path / "absent", "smoke") == REPORT_S_PER_PRESET


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="the process start is read from /proc")
def test_the_time_already_spent_counts_from_the_process_start():
    code = "import time; time.sleep(1.5); from ablations.plan import process_seconds; print(process_seconds())"
    p = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert 1.5 <= float(p.stdout) < 120  # the sleep before the import counts


@pytest.mark.one_backend
def test_an_lr_grid_claim_names_its_registered_target_before_any_run():
    from ablations.kinds import lr_grid

    # Before a run exists the row's label comes from the registry, not the Figure 1 default.
    for name in ("tanh_fair", "bias_fair", "fig1_tanh"):
        ab = get_ablation(name)
        registered = {**ab.base_overrides, **ab.overrides}.get("train.stop_at_train_error", lr_grid.DEFAULT_TARGET)
        assert lr_grid._target_of(ab, []) == pytest.approx(registered), name
    assert lr_grid._target_of(get_ablation("tanh_fair"), []) == pytest.approx(0.70)
