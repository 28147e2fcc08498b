"""Training: the paper's update rule, learning, resume after SIGKILL, divergence."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from reproduce import runs
from reproduce.config import get_config
from reproduce.train import RunConflict, TrainingDiverged, train

ROOT = Path(__file__).resolve().parent.parent


def _tiny_cfg(**over):
    base = {
        "train.epochs": 2,
        "data.synthetic_train": 48,
        "data.synthetic_val": 16,
    }
    base.update(over)
    return get_config("smoke", base)


def test_one_sgd_step_is_the_papers_update_rule():
    """v <- 0.9 v - 0.0005 eps w - eps grad; w <- w + v (§5), checked in NumPy."""
    from reproduce.config import ModelConfig
    from reproduce.model import build_model

    eps, wd, mom = 0.05, 5e-4, 0.9
    mcfg = ModelConfig(arch="cifar_fig1", lrn=False, dropout=0.0)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 50, (8, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 8)

    def one_step(decay):
        keras.utils.set_random_seed(1)
        net = build_model(mcfg, image_size=32, num_classes=10, weight_decay=decay, seed=1)
        opt = keras.optimizers.SGD(learning_rate=eps, momentum=mom)
        net.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        opt.build(net.trainable_variables)
        w0 = [v.numpy().copy() for v in net.trainable_variables]
        # a known, non-zero momentum buffer so the momentum term is exercised too
        v0 = [np.full_like(w, 1e-3) for w in w0]
        for slot, val in zip([v for v in opt.variables if "momentum" in v.path], v0):
            slot.assign(val)
        net.train_on_batch(x, y)
        return net, w0, v0, [v.numpy() for v in net.trainable_variables]

    net, w0, v0, w1_plain = one_step(0.0)
    _, w0d, _, w1_decay = one_step(wd)
    for a, b in zip(w0, w0d):
        np.testing.assert_array_equal(a, b)
    for var, w, v, plain, decayed in zip(net.trainable_variables, w0, v0, w1_plain, w1_decay):
        grad = (w + mom * v - plain) / eps  # the data gradient, from the undecayed step
        is_kernel = var.path.endswith("kernel")
        v1 = mom * v - (wd * eps * w if is_kernel else 0.0) - eps * grad
        np.testing.assert_allclose(decayed, w + v1, rtol=1e-4, atol=1e-7, err_msg=var.path)


def test_learns_generated_data(tmp_path):
    cfg = get_config(
        "smoke",
        {
            "model.arch": "cifar_fig1",
            "model.dropout": 0.0,
            "data.image_size": 36,
            "data.crop_size": 32,
            "data.synthetic_train": 1024,
            "data.synthetic_val": 128,
            "data.pca_color": False,
            "train.epochs": 10,
            "train.batch_size": 32,
            "train.schedule": "constant",
            "train.learning_rate": 0.002,
            "eval.ten_view": False,
            "model.init": "caffe",
            "train.xla": True,  # the defaults outside the smoke preset
            "train.run_eagerly": False,
        },
    )
    seen = {}

    class Compiled(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["jit_compile"] = self.model.jit_compile

    result = train(
        cfg, tmp_path / "run", meta={"preset": "smoke", "label": "baseline"}, verbose=0, callbacks=[Compiled()]
    )
    assert 1 - result["val_top1_err"] > 0.9, result
    assert seen["jit_compile"] is True  # XLA, also where Keras' default would not use it


def test_run_directory_contents_and_skip(tmp_path):
    d = tmp_path / "run"
    cfg = _tiny_cfg()
    r = train(cfg, d, meta={"preset": "smoke", "label": "baseline"}, verbose=0)
    for name in (runs.CONFIG, runs.ENV, runs.METRICS, runs.RESULT, runs.VAL_CORRECT, runs.CONV1):
        assert (d / name).exists(), name
    rows = runs.read_metrics_rows(d)
    assert [row["epoch"] for row in rows] == [0, 1]
    assert set(runs.METRIC_COLUMNS) <= set(rows[0])
    assert r["status"] == "ok" and 0 <= r["val_top1_err"] <= 1 and r["val_top1_err_10view"] is not None
    run = runs.load_run(d)
    assert run.finished and run.meta["fingerprint"] == cfg.fingerprint()
    assert run.env["backend"] == keras.backend.backend()
    vc = run.val_correct()
    assert vc["top1_center"].shape == (16,)
    assert np.isclose(1 - vc["top1_center"].mean(), r["val_top1_err"])
    # a finished run is not trained again
    before = (d / runs.RESULT).stat().st_mtime_ns
    assert train(cfg, d, verbose=0) == r
    assert (d / runs.RESULT).stat().st_mtime_ns == before
    # another configuration may not reuse the directory
    with pytest.raises(RunConflict, match="fingerprint"):
        train(_tiny_cfg(**{"model.lrn": False}), d, verbose=0)


def test_divergence_is_a_clear_error_and_keeps_progress(tmp_path):
    d = tmp_path / "run"
    cfg = _tiny_cfg(**{"train.learning_rate": 1e12, "train.epochs": 1})
    with pytest.raises(TrainingDiverged, match=r"learning_rate") as e:
        train(cfg, d, verbose=0)
    assert "diverged" in str(e.value)
    fail = json.loads((d / runs.FAILURE).read_text())
    assert fail["reason"] == "diverged"
    assert not (d / runs.RESULT).exists()


def _train_cmd(run_dir, epochs):
    return [
        sys.executable,
        "-m",
        "reproduce",
        "train",
        "--preset",
        "smoke",
        "--run-dir",
        str(run_dir),
        "--quiet",
        "--set",
        f"train.epochs={epochs}",
        "data.synthetic_train=320",
        "eval.ten_view=false",
    ]


# A child process that trains the same run as _train_cmd and, half-way through the
# second epoch, writes a marker file and waits there to be killed.
_PAUSED_IN_EPOCH_2 = """
import sys, time
import keras
from reproduce.config import get_config
from reproduce.train import train

class PauseInEpoch2(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 5:
            open(sys.argv[2], "w").close()
            time.sleep(600)

train(get_config("smoke", sys.argv[3:]), sys.argv[1], verbose=0, callbacks=[PauseInEpoch2()])
"""


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_with_every_epoch_once(tmp_path):
    d, marker = tmp_path / "run", tmp_path / "in-epoch-2"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    overrides = ["train.epochs=4", "data.synthetic_train=320", "eval.ten_view=false"]
    proc = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_IN_EPOCH_2, str(d), str(marker), *overrides],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 240
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "timeout"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Killed inside epoch 2 (index 1): epoch 1's row and state are on disk, nothing more.
    assert [r["epoch"] for r in runs.read_metrics_rows(d)] == [0]
    with np.load(runs.state_path(d)) as z:
        assert json.loads(bytes(z["info"]).decode())["completed_epochs"] == 1
    assert not (d / runs.RESULT).exists()
    done = subprocess.run(_train_cmd(d, 4), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = runs.read_metrics_rows(d)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert runs.is_finished(d)


def test_a_resumed_run_continues_exactly(tmp_path):
    """Interrupted after epoch 2 and resumed, a run ends where the uninterrupted one
    does: same data order, augmentation and dropout draws, weights and momentum."""
    cfg = _tiny_cfg(**{"train.epochs": 3, "eval.ten_view": False})
    straight = train(cfg, tmp_path / "a", verbose=0)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", verbose=0, callbacks=[Interrupt()])
    assert len(runs.read_metrics_rows(tmp_path / "b")) == 2
    resumed = train(cfg, tmp_path / "b", verbose=0)

    rows_a, rows_b = runs.read_metrics_rows(tmp_path / "a"), runs.read_metrics_rows(tmp_path / "b")
    assert [r["epoch"] for r in rows_b] == [0, 1, 2]
    for ra, rb in zip(rows_a, rows_b):
        for k in ("loss", "top1_err", "val_loss", "val_top1_err", "lr"):
            assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-6), (ra["epoch"], k)
    for k in ("val_top1_err", "val_top5_err", "train_top1_err_clean"):
        assert resumed[k] == pytest.approx(straight[k], abs=1e-9), k
    # The same batches at every epoch (chosen by (epoch, step) alone): the same bits.
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert sorted(wa) == sorted(wb)
    for k in wa:
        np.testing.assert_array_equal(wb[k], wa[k], err_msg=k)


def _weights(run_dir) -> dict:
    """The saved training state's arrays (weights, momentum, seed state)."""
    with np.load(runs.state_path(run_dir)) as z:
        return {k: z[k] for k in z.files if k != "info"}


def test_an_eager_run_trains_what_the_traced_step_does(tmp_path):
    """train.run_eagerly (the smoke preset's, TensorFlow only) changes how the step
    runs, not what it computes: the same weights, float rounding aside, and so the
    same fingerprint."""
    seen = []

    class Mode(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append(self.model.run_eagerly)

    eager = _tiny_cfg(**{"eval.ten_view": False, "train.run_eagerly": True})
    traced = _tiny_cfg(**{"eval.ten_view": False, "train.run_eagerly": False})
    assert eager.fingerprint() == traced.fingerprint()
    train(eager, tmp_path / "eager", verbose=0, callbacks=[Mode()])
    train(traced, tmp_path / "traced", verbose=0, callbacks=[Mode()])
    assert seen == [keras.backend.backend() == "tensorflow", False]
    we, wt = _weights(tmp_path / "eager"), _weights(tmp_path / "traced")
    assert we and sorted(we) == sorted(wt)
    for k in we:
        np.testing.assert_allclose(we[k], wt[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_two_runs_of_a_seed_train_the_same_weights(tmp_path):
    """The feed reads ahead in threads, whose timing differs from run to run; the
    batches, and so the weights, do not."""
    cfg = _tiny_cfg(**{"eval.ten_view": False})
    train(cfg, tmp_path / "a", verbose=0)
    train(cfg, tmp_path / "b", verbose=0)
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert wa and sorted(wa) == sorted(wb)
    for k in wa:
        np.testing.assert_array_equal(wb[k], wa[k], err_msg=k)


def test_epoch_limit_censors_and_a_higher_limit_trains_on(tmp_path):
    d = tmp_path / "run"
    cfg = _tiny_cfg(**{"train.epochs": 3, "eval.ten_view": False})
    r1 = train(cfg, d, verbose=0, epoch_limit=1)
    assert r1["censored"] is True and r1["epochs"] == 1
    assert runs.is_finished(d) and not runs.can_extend(d, 1) and runs.can_extend(d, 2)
    assert train(cfg, d, verbose=0, epoch_limit=1) == r1  # nothing more to do
    r2 = train(cfg, d, verbose=0)  # no limit: on to train.epochs from the saved state
    assert r2["censored"] is False and r2["epochs"] == 3
    assert [row["epoch"] for row in runs.read_metrics_rows(d)] == [0, 1, 2]
    assert not runs.can_extend(d, None)


def test_a_run_records_its_target_and_trains_on_past_it_only_when_asked(tmp_path):
    """Figure 1's runs stop at the training-error target; a run with
    `train.stop_at_target` off records the epoch it got there and trains its whole
    budget, so its final error is measured too."""
    over = {"train.epochs": 3, "eval.ten_view": False, "train.stop_at_train_error": 1.0}
    stopped = train(_tiny_cfg(**over), tmp_path / "stops", verbose=0)
    assert (stopped["epochs"], stopped["epochs_to_target"], stopped["censored"]) == (1, 1, False)
    on = train(_tiny_cfg(**over, **{"train.stop_at_target": False}), tmp_path / "on", verbose=0)
    assert (on["epochs"], on["epochs_to_target"], on["censored"]) == (3, 1, False)
    assert [row["epoch"] for row in runs.read_metrics_rows(tmp_path / "on")] == [0, 1, 2]


def test_dead_fc7_units_are_counted_and_recorded(tmp_path):
    """A unit is dead when it outputs 0 on every image: with fc7's kernel zeroed, its
    bias alone decides (negative: all dead; positive: none), whatever the images."""
    from reproduce import data as data_lib
    from reproduce.evaluate import dead_fraction, fc7_dead_fraction
    from reproduce.train import build_training_model

    assert dead_fraction(np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -2.0]])) == pytest.approx(2 / 3)
    cfg = _tiny_cfg()
    data = data_lib.load(cfg.data)
    model, net = build_training_model(cfg, data.stats, data.num_classes)
    fc7 = net.get_layer("fc7")
    k, b = fc7.get_weights()
    for bias, expected in ((-1.0, 1.0), (1.0, 0.0)):
        fc7.set_weights([np.zeros_like(k), np.full_like(b, bias)])
        assert fc7_dead_fraction(cfg, model, net, data.train) == pytest.approx(expected)
    b[: len(b) // 4] = -1.0  # a quarter of the units pushed below 0 on every input
    b[len(b) // 4 :] = 1.0
    fc7.set_weights([np.zeros_like(k), b])
    assert fc7_dead_fraction(cfg, model, net, data.train) == pytest.approx((len(b) // 4) / len(b))
    # tanh has no dead units to count; a trained run records its fraction
    assert fc7_dead_fraction(_tiny_cfg(**{"model.activation": "tanh"}), model, net, data.train) is None
    r = train(cfg, tmp_path / "run", verbose=0)
    assert 0.0 <= r["fc7_dead_fraction"] <= 1.0
    assert runs.read_json(tmp_path / "run" / runs.RESULT)["fc7_dead_fraction"] == r["fc7_dead_fraction"]
