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
        part = distribute.process_batches(
            ArrayBatches(images, y, 8, seed=3, workers=1), num_devices=2, num_processes=2, process_index=p
        )
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


class LabelsSeen(keras.Model):
    """A linear model that records the labels of every batch `fit` trains on."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)
        self.seen = []

    def call(self, x):
        return self.dense(keras.ops.reshape(keras.ops.cast(x, "float32"), (-1, 48)))

    def train_step(self, data):
        self.seen.append(np.asarray(data[1]))
        return {"n": keras.ops.sum(data[1])}


def _fit_labels(feed, steps_per_epoch, initial_epoch=1, epochs=3):
    """The labels of the batches fit reads from epoch `initial_epoch` on, through
    Keras' adapter of the PyDataset ("keras") or through tf_dataset ("tf.data"),
    as the trainer sets them up."""
    from reproduce.data import ArrayBatches, tf_dataset

    x = np.zeros((37, 4, 4, 3), np.uint8)
    y = np.arange(37, dtype=np.int32)  # a label names its example
    batches = ArrayBatches(x, y, 8, seed=5, epoch=initial_epoch, drop_remainder=True, steps_per_epoch=steps_per_epoch)
    model = LabelsSeen()
    model.compile(run_eagerly=True)
    callbacks = []
    if feed == "tf.data":
        batches, feed_epoch = tf_dataset(batches)
        callbacks.append(feed_epoch)
    model.fit(batches, epochs=epochs, initial_epoch=initial_epoch, shuffle=False, verbose=0, callbacks=callbacks)
    return model.seen


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the tf.data feed is TensorFlow's")
@pytest.mark.parametrize("steps_per_epoch", [0, 3])
def test_the_tf_data_feed_gives_fit_the_same_batches_as_the_pydataset(steps_per_epoch):
    from reproduce.data import epoch_permutation

    keras_feed = _fit_labels("keras", steps_per_epoch)
    tf_feed = _fit_labels("tf.data", steps_per_epoch)
    # Independently: fit's epoch e reads the batches' epoch e + 1 (Keras moves a
    # PyDataset once before training: every run so far read that), and step i of
    # epoch E is batch g % 4 of pass g // 4 over the 37 // 8 = 4 batches, g = E*S + i.
    per_epoch = steps_per_epoch or 4
    want = []
    for epoch in (1, 2):
        for i in range(per_epoch):
            p, b = divmod((epoch + 1) * per_epoch + i, 4)
            want.append(np.sort(epoch_permutation(37, 5, p)[8 * b : 8 * b + 8]))
    assert len(keras_feed) == len(tf_feed) == len(want) == 2 * per_epoch
    for k, (a, b, w) in enumerate(zip(keras_feed, tf_feed, want)):
        np.testing.assert_array_equal(a, w, err_msg=f"step {k}")
        np.testing.assert_array_equal(b, w, err_msg=f"step {k}")


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the tf.data feed is TensorFlow's")
def test_training_through_tf_data_computes_what_the_pydataset_feed_does(tmp_path, monkeypatch):
    """Same batches and same augmentation draws: the same losses and weights, to the bit."""
    from reproduce import train as train_lib

    cfg = get_config("smoke", ["train.steps_per_epoch=3", "train.epochs=2", "eval.ten_view=false"])
    out = {}
    for feed in ("tf.data", "keras"):
        monkeypatch.setattr(train_lib, "tf_data_feed", lambda feed=feed: feed == "tf.data")
        train_lib.train(cfg, tmp_path / feed, verbose=0)
        rows = runs.read_metrics_rows(tmp_path / feed)
        with np.load(runs.state_path(tmp_path / feed)) as z:
            out[feed] = ([(r["loss"], r["top1_err"]) for r in rows], {k: z[k] for k in z.files if k != "info"})
    assert len(out["keras"][0]) == 2
    assert out["tf.data"][0] == out["keras"][0]
    for k, v in out["keras"][1].items():
        np.testing.assert_array_equal(out["tf.data"][1][k], v, err_msg=k)


def _fit_batch_labels(epoch, per_epoch):
    """Independently: the labels of step i of fit's epoch e (the batches' epoch e + 1)
    over 37 examples in 4 batches of 8 per pass: batch g % 4 of pass g // 4,
    g = (e + 1) * per_epoch + i."""
    from reproduce.data import epoch_permutation

    out = []
    for i in range(per_epoch):
        p, b = divmod((epoch + 1) * per_epoch + i, 4)
        out.append(np.sort(epoch_permutation(37, 5, p)[8 * b : 8 * b + 8]))
    return out


class RecordInput(keras.layers.Layer):
    """Records the first pixel of every image a concrete (eager) batch holds; the
    symbolic and traced calls that build the model hold none and are skipped."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def call(self, x):
        try:
            self.seen.append(np.asarray(x)[:, 0, 0, 0].astype(np.int32))
        except Exception:
            pass
        return keras.ops.reshape(keras.ops.cast(x, "float32"), (-1, 48))


def _step_feed_labels(steps_per_epoch, initial_epoch, epochs=3):
    """The labels of the batches fit trains on from `initial_epoch` on, through the
    trainer's PyDataset feed (step_feed), on the current backend."""
    from reproduce.data import ArrayBatches, step_feed

    y = np.arange(37, dtype=np.int32)  # a label names its example, and so does its image
    x = np.broadcast_to(y[:, None, None, None], (37, 4, 4, 3)).astype(np.uint8)
    batches = ArrayBatches(x, y, 8, seed=5, epoch=initial_epoch, drop_remainder=True, steps_per_epoch=steps_per_epoch)
    record = RecordInput()
    model = keras.Sequential([keras.Input((4, 4, 3), dtype="uint8"), record, keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    feed, feed_epoch = step_feed(batches, initial_epoch, threads=3)
    try:
        model.fit(feed, epochs=epochs, initial_epoch=initial_epoch, shuffle=False, verbose=0, callbacks=[feed_epoch])
    finally:
        feed.close()
    return record.seen


@pytest.mark.parametrize("steps_per_epoch", [0, 3])
def test_the_step_feed_gives_fit_the_batches_of_their_epoch_and_step_alone(steps_per_epoch):
    """Whatever Keras reads ahead (it reads a batch to build the model), fit's epoch e
    trains on the batches' epoch e + 1, as the tf.data feed does; a run resumed at
    epoch 1 reads what an uninterrupted one reads there."""
    per_epoch = steps_per_epoch or 4
    straight = _step_feed_labels(steps_per_epoch, 0)
    resumed = _step_feed_labels(steps_per_epoch, 1)
    want = [b for e in (0, 1, 2) for b in _fit_batch_labels(e, per_epoch)]
    assert len(straight) == 3 * per_epoch and len(resumed) == 2 * per_epoch
    for k, (a, w) in enumerate(zip(straight, want)):
        np.testing.assert_array_equal(a, w, err_msg=f"step {k}")
    for k, (a, w) in enumerate(zip(resumed, want[per_epoch:])):
        np.testing.assert_array_equal(a, w, err_msg=f"resumed step {k}")


def test_a_step_feed_batch_depends_on_its_epoch_and_step_not_on_what_was_read_ahead():
    from reproduce.data import ArrayBatches, epoch_permutation
    from reproduce.data.batches import StepFeed

    y = np.arange(37, dtype=np.int32)
    batches = ArrayBatches(np.zeros((37, 4, 4, 3), np.uint8), y, 8, seed=5, drop_remainder=True)
    feed = StepFeed(batches, epoch=2, threads=2, ahead=3)
    try:
        # Jumps backwards and between epochs: every read-ahead guess is wrong once.
        for epoch, i in [(2, 0), (2, 1), (7, 1), (2, 3), (3, 0), (3, 0), (0, 2)]:
            feed.set_epoch(epoch)
            _, labels = feed[i]
            want = np.sort(epoch_permutation(37, 5, epoch)[8 * i : 8 * i + 8])
            np.testing.assert_array_equal(labels, want, err_msg=f"{(epoch, i)}")
        with pytest.raises(IndexError, match="batch 4 of 4"):
            feed[4]
    finally:
        feed.close()
    with pytest.raises(ValueError, match="threads=0"):
        StepFeed(batches, threads=0)


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


@pytest.mark.one_backend
def test_the_runner_names_a_bf16_run_apart_from_the_float32_one(tmp_path, monkeypatch):
    from ablations.runner import Runner

    def run_dirs():
        return {str(j.run_dir) for j in Runner("smoke", 1, tmp_path, verbose=0).plan().todo}

    monkeypatch.setattr(devices, "accelerator", lambda: None)
    cpu = run_dirs()
    monkeypatch.setattr(devices, "accelerator", lambda: "gpu")
    gpu = run_dirs()
    assert cpu and len(gpu) == len(cpu) and not cpu & gpu
    base = get_config("smoke")
    assert str(runs.run_dir(tmp_path, "smoke", "baseline", base.fingerprint(), 0)) in cpu
    bf16 = get_config("smoke", ["train.precision=mixed_bfloat16"])
    assert str(runs.run_dir(tmp_path, "smoke", "baseline", bf16.fingerprint(), 0)) in gpu


@pytest.mark.one_backend
def test_float32_resolution_keeps_every_published_run_directory(monkeypatch):
    from pathlib import Path

    from reproduce.config import Config

    monkeypatch.setattr(devices, "accelerator", lambda: None)
    stored = sorted(Path(__file__).resolve().parent.parent.glob("results/*/*/seed*/config.json"))
    assert stored
    for path in stored:
        tree = json.loads(path.read_text())
        # The dataset as the run recorded it (a local archive: its digest), not as
        # data.source would name it on this machine.
        cfg = devices.resolved_config(Config.from_dict(tree))
        fp = cfg.fingerprint(tree["meta"]["data_id"])
        assert path.parent.parent.name.endswith("-" + fp), path
        assert fp == tree["meta"]["fingerprint"], path


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
    from reproduce.train import training_feed

    stream = Stream.__new__(Stream)
    stream.num_examples = 1000
    cfg = get_config("smoke", ["train.batch_size=128"])
    batches, _, _ = training_feed(cfg, stream, 0)
    assert len(batches) == math.floor(1000 / 128) == 7


# -- TensorFlow beside JAX -------------------------------------------------------------


@pytest.mark.one_backend
def test_the_data_pipeline_hides_the_gpus_from_tensorflow_under_jax(monkeypatch):
    import tensorflow as tf

    from reproduce.data import tfds_source

    calls = []
    monkeypatch.setattr(tf.config, "set_visible_devices", lambda devs, kind=None: calls.append((devs, kind)))
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    assert tfds_source.tensorflow_for_data() is tf
    assert calls == [([], "GPU")]
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    tfds_source.tensorflow_for_data()
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
    from reproduce.data import shard_source, shards

    rng = np.random.default_rng(0)
    # Smooth images: JPEG keeps them within a few levels.
    base = np.linspace(0, 255, 32)[None, :, None] * np.ones((32, 1, 3))
    images = np.stack([np.roll(base, k, axis=1) for k in range(10)]).astype(np.uint8)
    labels = rng.integers(0, 3, 10)
    entry = shards.write_split(tmp_path, "train", [(images[:6], labels[:6]), (images[6:], labels[6:])], per_shard=4)
    shards.write_manifest(tmp_path, 32, ["a", "b", "c"], {"train": entry})
    assert entry["n"] == 10 and len(entry["files"]) == 3

    def read(**kw):
        return [b for b in shard_source.shard_dataset(tmp_path, "train", 4, **kw).as_numpy_iterator()]

    plain = read(shuffle=False)
    x = np.concatenate([b[0] for b in plain])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in plain]), labels)
    assert x.shape == (10, 32, 32, 3) and x.dtype == np.uint8
    assert np.abs(x.astype(int) - images).mean() < 3
    a, b = read(seed=1, epoch=0), read(seed=1, epoch=0)
    np.testing.assert_array_equal(np.concatenate([t[1] for t in a]), np.concatenate([t[1] for t in b]))
    assert [len(t[0]) for t in read(seed=1, epoch=1, drop_remainder=True)] == [4, 4]
    with pytest.raises(shard_source.DataError, match="split 'validation' is not in"):
        shard_source.shard_dataset(tmp_path, "validation", 4)


def _smooth_image_folder(root, per_class, classes=4, shape=(90, 76)):
    """An ImageFolder of smooth PNGs (JPEG keeps them within a few levels):
    class c's images are gradients with their own colour and phase."""
    from PIL import Image

    h, w = shape
    ramp = np.linspace(0, 1, w)[None, :, None] * np.ones((h, 1, 3))
    for split, n in per_class.items():
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                tint = np.array([60 + 40 * c, 200 - 30 * c, 90 + 10 * i])
                img = np.roll(ramp, 5 * i, axis=1) * tint + 20
                Image.fromarray(img.astype(np.uint8)).save(d / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def shards_folder(tmp_path_factory):
    """An ImageFolder and its shards at S=76, written by the command."""
    from reproduce.data import shards

    tmp = tmp_path_factory.mktemp("shards")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPRODUCE_CACHE", str(tmp / "cache"))  # where the command decodes
        folder = _smooth_image_folder(tmp / "folder", {"train": 12, "val": 4})
        assert shards.main([str(folder), str(tmp / "shards"), "--size", "76", "--val-split", "val"]) == 0
    return folder, tmp / "shards"


@pytest.mark.one_backend
def test_shards_are_a_data_source_that_reads_back_what_was_written(shards_folder, tmp_path, monkeypatch):
    import shutil

    import tensorflow as tf

    from reproduce import data
    from reproduce.config import DataConfig, data_identity

    folder, out = shards_folder

    def cfg(source, **kw):
        return DataConfig(
            source=str(source), image_size=76, crop_size=67, val_split="val", cache_dir=str(tmp_path / "cache"), **kw
        )

    orig = data.load(cfg(folder))  # the folder's own decode, at the same S
    cached = data.load(cfg(out))
    assert isinstance(cached.train, data.ImageArrays) and len(cached.train) == 48
    assert cached.class_names == orig.class_names == [f"class{c}" for c in range(4)]
    for split in ("train", "val"):
        a, b = getattr(orig, split), getattr(cached, split)
        np.testing.assert_array_equal(b.labels, a.labels)
        assert np.abs(np.asarray(b.images, int) - np.asarray(a.images)).mean() < 2  # JPEG q95
    # The cache holds exactly the JPEGs decoded, record by record, in the order written.
    m = json.loads((out / "shards.json").read_text())
    records = [
        r for f in m["splits"]["train"]["files"] for r in tf.data.TFRecordDataset(str(out / f)).as_numpy_iterator()
    ]
    for i in (0, 17, 47):
        ex = tf.train.Example.FromString(records[i])
        img = tf.io.decode_jpeg(ex.features.feature["image"].bytes_list.value[0], channels=3)
        np.testing.assert_array_equal(np.asarray(cached.train.images[i]), img.numpy())
        assert ex.features.feature["label"].int64_list.value[0] == cached.train.labels[i]

    # Streamed (a large training split): the same images, shuffled by (seed, epoch).
    monkeypatch.setenv("REPRODUCE_STREAM", "1")
    streamed = data.load(cfg(out))
    assert isinstance(streamed.train, data.Stream) and len(streamed.train) == 48
    assert isinstance(streamed.val, data.ImageArrays)  # evaluation indexes it
    plain = list(streamed.train.dataset(16, shuffle=False).as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate([x for x, _ in plain]), cached.train.images)
    epochs = [
        np.concatenate([y for _, y in streamed.train.dataset(16, seed=3, epoch=e).as_numpy_iterator()])
        for e in (0, 0, 1)
    ]
    np.testing.assert_array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[0], epochs[2])
    np.testing.assert_array_equal(np.sort(epochs[2]), np.sort(cached.train.labels))
    # data.max_train: the same subset streamed as cached.
    sub_stream = data.load(cfg(out, max_train=20)).train
    monkeypatch.setenv("REPRODUCE_STREAM", "0")
    sub_cached = data.load(cfg(out, max_train=20)).train
    assert len(sub_stream) == len(sub_cached) == 20
    np.testing.assert_array_equal(
        np.concatenate([x for x, _ in sub_stream.dataset(8, shuffle=False).as_numpy_iterator()]), sub_cached.images
    )

    # Identity by content: a copy elsewhere is the same dataset, re-encoded shards are not.
    ident = data_identity(str(out))
    assert ident.startswith("shards:")
    shutil.copytree(out, tmp_path / "copy")
    assert data_identity(str(tmp_path / "copy")) == ident
    from reproduce.data import shards

    shards.main([str(folder), str(tmp_path / "q80"), "--size", "76", "--val-split", "val", "--quality", "80"])
    assert data_identity(str(tmp_path / "q80")).startswith("shards:")
    assert data_identity(str(tmp_path / "q80")) != ident
    with pytest.raises(data.DataError, match=r"hold 76x76 images, but data.image_size=64"):
        data.load(
            DataConfig(source=str(out), image_size=64, crop_size=56, val_split="val", cache_dir=str(tmp_path / "cache"))
        )


def test_the_smoke_preset_trains_from_streamed_shards(shards_folder, tmp_path, monkeypatch):
    from reproduce.config import data_identity
    from reproduce.train import train

    _, out = shards_folder
    monkeypatch.setenv("REPRODUCE_STREAM", "1")
    monkeypatch.setenv("REPRODUCE_CACHE", str(tmp_path / "cache"))
    cfg = get_config("smoke", [f"data.source={out}", "data.val_split=val", "train.epochs=1", "eval.ten_view=false"])
    result = train(cfg, tmp_path / "run", verbose=0)
    assert result["status"] == "ok" and result["epochs"] == 1
    rows = runs.read_metrics_rows(tmp_path / "run")
    assert len(rows) == 1 and math.isfinite(rows[0]["loss"])
    meta = json.loads((tmp_path / "run" / runs.CONFIG).read_text())["meta"]
    assert meta["data_id"] == data_identity(str(out))
    assert meta["fingerprint"] == cfg.fingerprint()


@pytest.mark.one_backend
def test_a_feed_slower_than_the_gpu_is_warned_about():
    from reproduce.data.shards import feed_shortfall

    msg = feed_shortfall(16, 500, 45_000)
    assert "16 cores x 500 images/s per core = 8,000 images/s, below the 45,000" in msg
    assert "(18%)" in msg
    assert feed_shortfall(16, 3000, 45_000) is None
