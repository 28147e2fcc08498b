"""The GPU path, checked on a CPU: what would cost a GPU its speed or its memory
(host syncs, recompiles, a slow feed, per-epoch writes) and what would make a
GPU run wrong or silent (precision pooling, a CPU-only install)."""

import json
import math
import os
import warnings

import keras
import numpy as np
import pytest

from reproduce import devices, distribute, runs
from reproduce.config import get_config

BACKEND = keras.backend.backend()


# -- divergence check and TensorBoard: no per-batch hook on TensorFlow ---------------


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the TensorFlow trainer's callbacks")
def test_no_callback_of_a_training_run_has_a_per_batch_hook_on_tensorflow(tmp_path):
    from reproduce.callbacks import per_batch_hooks, training_callbacks

    cbs = training_callbacks(get_config("smoke"), tmp_path, {}, 64).all
    assert per_batch_hooks(cbs) == []


def test_per_batch_hooks_names_a_callback_that_reads_every_step():
    from reproduce.callbacks import BatchDivergence, per_batch_hooks

    class Reads(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    # BatchDivergence is async_safe: Keras runs it off the training loop (JAX).
    assert per_batch_hooks([Reads(), BatchDivergence()]) == ["Reads"]


# -- each process reads only its share of a global batch -----------------------------


class CountingRows:
    """A (N, 1, 1, 1) uint8 array that counts the rows read from it."""

    def __init__(self, n):
        self.base = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1)
        self.shape, self.dtype, self.ndim = self.base.shape, self.base.dtype, 4
        self.rows_read = 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, key):
        out = self.base[key]
        self.rows_read += len(out)
        return out


@pytest.mark.one_backend
def test_each_of_two_processes_reads_half_the_rows_of_each_global_batch():
    from reproduce.data import ArrayBatches

    y = np.arange(40, dtype=np.int32)
    full = ArrayBatches(np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1), y, 8, seed=3, workers=1)
    seen = []
    for p in range(2):
        images = CountingRows(40)
        part = distribute.process_batches(ArrayBatches(images, y, 8, seed=3, workers=1),
                                          num_devices=2, num_processes=2, process_index=p)
        seen.append([part[i] for i in range(len(part))])
        assert images.rows_read == 20  # 5 batches x 4 rows, not 5 x 8
    for i in range(len(full)):
        fx, fy = full[i]
        np.testing.assert_array_equal(np.concatenate([seen[0][i][1], seen[1][i][1]]), fy)
        np.testing.assert_array_equal(np.concatenate([seen[0][i][0], seen[1][i][0]]), fx)


# -- per-replica batch ---------------------------------------------------------------


@pytest.mark.one_backend
def test_a_small_batch_per_replica_is_warned_about():
    msg = distribute.replica_batch_warning(128, 8, "mirrored")
    assert "train.batch_size=128 over the 8 replicas of distribute.scheme='mirrored' is 16 images per device" in msg
    assert "one suite worker per GPU" in msg and "docs/distributed.md" in msg
    assert distribute.replica_batch_warning(512, 8, "mirrored") is None  # 64 each
    assert distribute.replica_batch_warning(16, 1, "none") is None


# -- the host feed ---------------------------------------------------------------------


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the tf.data feed is TensorFlow's")
def test_the_tf_data_feed_gives_the_same_batches_epoch_after_epoch():
    from reproduce.data import ArrayBatches
    from reproduce.data.batches import tf_dataset

    x = np.random.default_rng(0).integers(0, 256, (37, 4, 4, 3), dtype=np.uint8)
    y = np.arange(37, dtype=np.int32)
    want = ArrayBatches(x, y, 8, seed=5, epoch=2, drop_remainder=True, workers=1)
    ds, hooks = tf_dataset(ArrayBatches(x, y, 8, seed=5, epoch=2, drop_remainder=True, workers=1))
    for epoch in (2, 3):
        got = list(ds.as_numpy_iterator())
        assert len(got) == len(want) == 4
        for i, (gx, gy) in enumerate(got):
            np.testing.assert_array_equal(gx, want[i][0])
            np.testing.assert_array_equal(gy, want[i][1])
        hooks.on_epoch_end(epoch)
        want.on_epoch_end()
    assert want.epoch == 4


# -- resolved precision and run identity -----------------------------------------------


@pytest.mark.one_backend
def test_bf16_on_an_accelerator_is_another_experiment_and_float32_keeps_its_identity(monkeypatch):
    cfg = get_config("imagenette-cpu")
    before = cfg.fingerprint("data")
    monkeypatch.setattr(devices, "accelerator", lambda: None)
    assert devices.resolved_config(cfg) is cfg  # float32 here: the published identity
    monkeypatch.setattr(devices, "accelerator", lambda: "gpu")
    gpu = devices.resolved_config(cfg)
    assert gpu.train.precision == "mixed_bfloat16" and cfg.train.precision == "auto"
    assert gpu.fingerprint("data") != before
    explicit = get_config("imagenette-cpu", ["train.precision=float32"])
    assert devices.resolved_config(explicit) is explicit


# -- checkpoint interval -------------------------------------------------------------


class StopAfter(keras.callbacks.Callback):
    """Kills the run (an exception) at the end of epoch `epoch`, after the trainer's
    callbacks; records the completed epochs of the state file after each epoch."""

    def __init__(self, run_dir, epoch=None):
        super().__init__()
        self.run_dir, self.epoch, self.saved = run_dir, epoch, []

    def on_epoch_end(self, epoch, logs=None):
        p = runs.state_path(self.run_dir)
        info = json.loads(bytes(np.load(p)["info"]).decode()) if p.exists() else {}
        self.saved.append(info.get("completed_epochs"))
        if epoch == self.epoch:
            raise KeyboardInterrupt("killed")


def test_checkpoint_every_two_epochs_resumes_from_the_last_one(tmp_path):
    from reproduce.train import train

    cfg = get_config("smoke", ["train.epochs=4", "train.checkpoint_every=2", "train.step_epochs=3"])
    assert cfg.fingerprint() == get_config("smoke", ["train.epochs=4", "train.step_epochs=3"]).fingerprint()
    straight_cb = StopAfter(tmp_path / "a")
    straight = train(cfg, tmp_path / "a", verbose=0, callbacks=[straight_cb])
    assert straight_cb.saved == [None, 2, 2, 4]  # after epochs 2 and 4 (the last) only

    d = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, d, verbose=0, callbacks=[StopAfter(d, epoch=2)])  # epoch 3 not saved
    assert [r["epoch"] for r in runs.read_metrics_rows(d)] == [0, 1, 2]
    resumed = train(cfg, d, verbose=0)
    assert [r["epoch"] for r in runs.read_metrics_rows(d)] == [0, 1, 2, 3]
    for k in ("val_top1_err", "val_top5_err", "train_top1_err_clean"):
        assert resumed[k] == pytest.approx(straight[k], abs=1e-9), k


# -- partial last batches --------------------------------------------------------------


def test_evaluation_pads_the_last_batch_and_matches_one_whole_batch():
    from reproduce.data import ArrayBatches
    from reproduce.data.batches import PaddedBatches
    from reproduce.data.pixelstats import compute_stats
    from reproduce.evaluate import build_ten_view_model, evaluate
    from reproduce.train import build_training_model, compile_model

    cfg = get_config("smoke", ["eval.batch_size=20"])
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (37, 76, 76, 3), dtype=np.uint8)
    labels = (np.arange(37) % 4).astype(np.int32)
    stats = compute_stats(images)
    model, net = build_training_model(cfg, stats, 4)
    compile_model(model, cfg)

    padded = PaddedBatches(ArrayBatches(images, None, 20, shuffle=False))
    assert [len(padded[i][0]) for i in range(len(padded))] == [20, 20]  # one shape
    np.testing.assert_array_equal(padded[1][0][:17], images[20:])

    arrays = type("A", (), {"images": images, "labels": labels})()
    got = evaluate(cfg, model, net, stats, arrays, ten_view=True)

    def correct(scores):
        order = np.argsort(-np.asarray(scores, np.float64), axis=1)
        return order[:, 0] == labels, (order[:, :5] == labels[:, None]).any(axis=1)

    top1, top5 = correct(model(images, training=False))
    np.testing.assert_array_equal(got["top1_center"], top1)
    np.testing.assert_array_equal(got["top5_center"], top5)
    tv1, tv5 = correct(build_ten_view_model(cfg, net, stats)(images))
    np.testing.assert_array_equal(got["top1_10view"], tv1)
    np.testing.assert_array_equal(got["top5_10view"], tv5)
    assert len(got["top1_center"]) == len(got["top1_10view"]) == 37


@pytest.mark.one_backend
def test_a_streamed_training_epoch_has_floor_n_over_batch_steps():
    from reproduce.data.tfds_source import Stream
    from reproduce.train import _training_batches

    stream = Stream.__new__(Stream)
    stream.num_examples = 1000
    cfg = get_config("smoke", ["train.batch_size=128"])
    assert len(_training_batches(cfg, stream, 0)) == math.floor(1000 / 128) == 7


# -- TensorFlow beside JAX -------------------------------------------------------------


@pytest.mark.one_backend
def test_the_data_pipeline_hides_the_gpus_from_tensorflow_under_jax(monkeypatch):
    import tensorflow as tf

    from reproduce.data import tfds_source

    calls = []
    monkeypatch.setattr(tf.config, "set_visible_devices", lambda devs, kind=None: calls.append((devs, kind)))
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    assert tfds_source._tf() is tf
    assert calls == [([], "GPU")]
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    tfds_source._tf()
    assert calls == [([], "GPU")]  # Keras on TensorFlow keeps its GPUs


# -- a GPU install that runs on the CPU ------------------------------------------------


@pytest.mark.one_backend
def test_gpus_the_driver_lists_but_the_backend_does_not_see_are_warned_about(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(devices, "accelerator", lambda: None)
    assert devices.nvidia_gpus() == ["GPU 0: NVIDIA H200 (UUID: GPU-0)"]
    with pytest.warns(UserWarning, match=r"nvidia-smi lists 1 GPU\(s\) \(GPU 0: NVIDIA H200"):
        devices.warn_if_gpu_unused()
    assert "sees none: this run computes on the CPU" in devices.gpu_unused_message()
    monkeypatch.setattr(devices, "accelerator", lambda: "gpu")
    assert devices.gpu_unused_message() is None
    monkeypatch.setattr(devices, "accelerator", lambda: None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        devices.warn_if_gpu_unused()  # the CPU on purpose: no warning


# -- the ImageNet feed: pre-resized shards ---------------------------------------------


@pytest.mark.one_backend
def test_shards_hold_the_images_and_read_back_in_a_seeded_order(tmp_path):
    from reproduce.data import shards

    rng = np.random.default_rng(0)
    # Smooth images: JPEG keeps them within a few levels.
    base = np.linspace(0, 255, 32)[None, :, None] * np.ones((32, 1, 3))
    images = np.stack([np.roll(base, k, axis=1) for k in range(10)]).astype(np.uint8)
    labels = rng.integers(0, 3, 10)
    entry = shards.write_split(tmp_path, "train", [(images[:6], labels[:6]), (images[6:], labels[6:])],
                               per_shard=4)
    shards.write_manifest(tmp_path, 32, ["a", "b", "c"], {"train": entry})
    assert entry["n"] == 10 and len(entry["files"]) == 3

    def read(**kw):
        return [b for b in shards.shard_dataset(tmp_path, "train", 4, **kw).as_numpy_iterator()]

    plain = read(shuffle=False)
    x = np.concatenate([b[0] for b in plain])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in plain]), labels)
    assert x.shape == (10, 32, 32, 3) and x.dtype == np.uint8
    assert np.abs(x.astype(int) - images).mean() < 3
    a, b = read(seed=1, epoch=0), read(seed=1, epoch=0)
    np.testing.assert_array_equal(np.concatenate([t[1] for t in a]), np.concatenate([t[1] for t in b]))
    assert [len(t[0]) for t in read(seed=1, epoch=1, drop_remainder=True)] == [4, 4]
    with pytest.raises(shards.DataError, match="split 'validation' is not in"):
        shards.shard_dataset(tmp_path, "validation", 4)


@pytest.mark.one_backend
def test_a_feed_slower_than_the_gpu_is_warned_about():
    from reproduce.data.shards import feed_shortfall

    msg = feed_shortfall(16, 500, 45_000)
    assert "16 cores x 500 images/s per core = 8,000 images/s, below the 45,000" in msg
    assert "(18%)" in msg
    assert feed_shortfall(16, 3000, 45_000) is None
