"""What makes two runs the same experiment: one rule for runner, trainer and report.

A run stored before a configuration key existed is still found (skipped by the
runner) and paired (by the report); a dataset counts by its content, so the same
archive at another path reuses a result and another archive with the same name
does not.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ablations.registry import get_ablation
from ablations.runner import Runner
from reports import analysis, collect
from reproduce import runs as R
from reproduce.config import experiment_identity, fingerprint_of, get_config
from tests.test_data import make_archive, make_tree

# Code that runs no Keras model differently per backend: `make test` runs it once.
pytestmark = pytest.mark.one_backend

N = 40


def _store(root: Path, label: str, cfg, seed: int, wrong: int, drop_keys=(), data_id=None, host="machine-a") -> Path:
    """A finished run as older code on another machine would have stored it: its
    config.json lacks `drop_keys` (keys added to the tree since)."""
    cfg = cfg.copy()
    cfg.train.seed = seed
    d = cfg.to_dict()
    for key in drop_keys:
        section, name = key.split(".")
        del d[section][name]
    data_id = data_id or cfg.data.source
    fp = fingerprint_of(experiment_identity(d, data_id))
    path = R.run_dir(root, "smoke", label, fp, seed)
    R.write_config(path, d, {"preset": "smoke", "label": label, "seed": seed, "fingerprint": fp, "data_id": data_id})
    R.write_env(path, {"date": "2026-01-01T00:00:00+00:00", "host": host})
    R.write_metrics_rows(path, [{"epoch": 0, "top1_err": 0.5, "val_top1_err": 0.5}])
    ok = np.ones(N, bool)
    ok[:wrong] = False
    R.write_val_correct(path, labels=np.arange(N) % 4, top1_center=ok, top5_center=ok, top1_10view=ok, top5_10view=ok)
    R.write_result(
        path,
        {
            "status": "ok",
            "epochs": 1,
            "val_top1_err": wrong / N,
            "val_top5_err": wrong / N,
            "val_top1_err_10view": wrong / N,
            "val_top5_err_10view": wrong / N,
            "train_top1_err": 0.5,
            "train_top5_err": 0.5,
            "train_top1_err_clean": 0.5,
            "wall_time_s": 1.0,
            "images_per_s": 1.0,
            "epochs_to_target": None,
        },
    )
    return path


def test_runs_stored_before_a_key_existed_are_skipped_and_paired(tmp_path):
    ab = get_ablation("no_lrn")
    base, var = get_config("smoke"), ab.variant_config("smoke")
    # The baseline predates two keys; the variant was stored by today's code. Both
    # keys are at their defaults today, so nothing they compute differs.
    old = ("data.pca_std", "train.stop_at_train_error")
    for s in (0, 1):
        _store(tmp_path, "baseline", base, s, wrong=20 + s, drop_keys=old)
        _store(tmp_path, "no_lrn", var, s, wrong=25 + s, host="machine-b")
    runner = Runner("smoke", 2, tmp_path, verbose=0)
    plan = runner.run(["no_lrn"])
    assert runner.trained == 0 and len(plan.done) == 4  # found finished: nothing trained
    labels = collect.load(tmp_path)["smoke"]
    comp = analysis.compare("smoke", ab, labels)
    assert comp.pair.matched and not comp.pair.unexpected, comp.notes
    assert comp.pair.base.seeds == [0, 1] and comp.pair.variant.seeds == [0, 1]
    top1 = comp.rows[0]
    assert top1.base == {0: 0.5, 1: 0.525} and top1.variant == {0: 0.625, 1: 0.65}


def test_runs_of_other_machines_pair_although_their_paths_differ(tmp_path):
    """Two machines ran the same archive from different folders: same experiment."""
    ab = get_ablation("no_lrn")
    base = get_config("smoke", ["data.source=/home/a/data/set.tar"])
    var = ab.variant_config("smoke", ["data.source=/scratch/b/set.tar"])
    _store(tmp_path, "baseline", base, 0, wrong=20, data_id="sha256:00aa")
    _store(tmp_path, "no_lrn", var, 0, wrong=25, data_id="sha256:00aa", host="machine-b")
    labels = collect.load(tmp_path)["smoke"]
    comp = analysis.compare("smoke", ab, labels)
    assert comp.pair.matched and not comp.pair.unexpected
    # ... and a different archive under the same name is not the same experiment
    other = tmp_path / "other"
    _store(other, "baseline", base, 0, wrong=20, data_id="sha256:00aa")
    _store(other, "no_lrn", var, 0, wrong=25, data_id="sha256:ffff", host="machine-b")
    comp = analysis.compare("smoke", ab, collect.load(other)["smoke"])
    assert not comp.pair.matched and "data.source" in comp.pair.unexpected


def test_same_name_other_data_trains_again_same_archive_elsewhere_does_not(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRODUCE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("REPRODUCE_MAX_BAD_FRACTION", "0.2")
    for m in ("m1", "m2", "m3"):
        (tmp_path / m).mkdir()
    a = make_archive(make_tree(tmp_path / "t1", per_class=4), tmp_path / "m1" / "data.tar")
    b = tmp_path / "m2" / "data.tar"
    shutil.copy(a, b)
    c = make_archive(make_tree(tmp_path / "t2", per_class=5), tmp_path / "m3" / "data.tar")
    over = ["train.batch_size=4", "train.epochs=1", "eval.ten_view=false"]

    def run(path):
        r = Runner("smoke", 1, tmp_path / "runs", overrides=over + [f"data.source={path}"], verbose=0)
        r.run_baseline()
        return r

    assert run(a).trained == 1
    assert run(b).trained == 0  # the same bytes at another path: already finished
    assert run(c).trained == 1  # another dataset with the same file name: trained
    dirs = sorted(p.parent.parent.name for p in (tmp_path / "runs").rglob(R.RESULT))
    assert len(dirs) == 2 and dirs[0] != dirs[1]
    ids = {
        json.loads((p.parent / R.CONFIG).read_text())["meta"]["data_id"] for p in (tmp_path / "runs").rglob(R.RESULT)
    }
    assert len(ids) == 2 and all(i.startswith("sha256:") for i in ids)


def test_publish_copies_small_files_of_finished_runs_and_the_runner_skips_them(tmp_path):
    base = get_config("smoke")
    done = _store(tmp_path / "runs", "baseline", base, 0, wrong=20)
    (done / R.STATE).mkdir()
    (done / R.STATE / "state.npz").write_bytes(b"weights" * 1000)
    (done / R.TENSORBOARD).mkdir()
    unfinished = _store(tmp_path / "runs", "baseline", base, 1, wrong=20)
    (unfinished / R.RESULT).unlink()
    res = R.publish(tmp_path / "runs", tmp_path / "results")
    assert len(res.copied) == 1 and len(res.skipped) == 1
    dst = res.copied[0]
    assert dst == tmp_path / "results" / done.relative_to(tmp_path / "runs")
    assert sorted(p.name for p in dst.iterdir()) == sorted(f for f in R.PUBLISHED_FILES if (done / f).exists())
    assert (done / R.RESULT).read_bytes() == (dst / R.RESULT).read_bytes()
    # publishing again changes nothing; a different copy of the same run is kept out
    again = R.publish(tmp_path / "runs", tmp_path / "results")
    assert not again.copied and again.unchanged == [dst]
    (done / R.ENV).write_text('{"host": "another"}')
    third = R.publish(tmp_path / "runs", tmp_path / "results")
    assert third.kept and (dst / R.ENV).read_text() != '{"host": "another"}'
    # a fresh runs root with the store published: the finished seed is not trained again
    runner = Runner("smoke", "0,", tmp_path / "fresh", verbose=0, published=[tmp_path / "results"])
    plan = runner.plan(baseline=True, names=[])
    assert [j.seed for j in plan.todo] == [] and plan.published == [
        R.run_dir(tmp_path / "fresh", "smoke", "baseline", base.fingerprint(), 0)
    ]
