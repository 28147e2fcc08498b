"""The ablation registry and runner."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from ablations.registry import ABLATIONS, for_preset, get_ablation
from ablations.runner import parse_seeds
from reproduce.config import PRESETS, diff, get_config

ROOT = Path(__file__).resolve().parent.parent


def test_registry_entries_are_complete():
    assert {"tanh", "no_lrn", "lrn_convention", "no_overlap_pool", "no_pca_color", "no_crop_flip",
            "no_dropout", "one_tower", "single_view_eval", "bias_init", "fig1_tanh"} <= set(ABLATIONS)
    for a in ABLATIONS.values():
        assert a.description and a.presets and set(a.presets) <= set(PRESETS)
        for p in a.presets:
            c = a.claim(p)
            assert c.section.startswith("§") and c.text
            base, var = a.base_config(p), a.variant_config(p)
            if a.kind == "train":
                assert diff(base, var), f"{a.name} on {p}: the variant equals the baseline"
            else:
                assert not diff(base, var)


def test_unknown_ablation_names_the_valid_ones():
    with pytest.raises(ValueError, match="no_lrn") as e:
        get_ablation("no_lnr")
    assert "one_tower" in str(e.value)


def test_seeds():
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("0,4,7") == [0, 4, 7] and parse_seeds(2) == [0, 1]


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
    stats = Stats(np.full((S, S, 3), 120, np.float32), np.array([0.2, 0.02, 0.005], np.float32) * 255**2,
                  np.eye(3, dtype=np.float32))
    model, net = build_training_model(cfg, stats, num_classes=4)
    model.compile(optimizer=keras.optimizers.SGD(0.001, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).integers(0, 256, (4, cfg.data.image_size, cfg.data.image_size, 3), dtype=np.uint8)
    loss = model.train_on_batch(x, np.arange(4) % 4)
    assert np.isfinite(loss)


def test_make_ablation_end_to_end_then_nothing_to_do(tmp_path):
    env = {**os.environ, "REPRODUCE_CACHE": str(tmp_path / "cache")}
    cmd = ["make", "-s", "ablation", "NAME=no_lrn", "PRESET=smoke", "SEEDS=2", f"RUNS={tmp_path / 'runs'}",
           f"PY={sys.executable}", f"BACKEND={keras.backend.backend()}", "SET=eval.ten_view=false"]
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "trained 4 run(s); 0 already finished" in first.stdout
    assert (tmp_path / "runs" / "report" / "report.md").exists()
    assert (tmp_path / "runs" / "report" / "report.pdf").exists()
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "trained 0 run(s); 4 already finished" in second.stdout
    assert "Epoch" not in second.stdout


def test_user_overrides_may_not_cancel_the_ablation(tmp_path):
    from ablations.runner import Runner

    r = Runner("smoke", 1, tmp_path, overrides=["model.lrn=true"], verbose=0)
    with pytest.raises(ValueError, match="model.lrn"):
        r.run(["no_lrn"])
    assert not any(tmp_path.iterdir())  # refused before anything ran
