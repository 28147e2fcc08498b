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

    def train_step(self, *args):
        # TensorFlow: train_step(data) -> logs; JAX: train_step(state, data) -> (logs, state).
        data = args[-1]
        self.seen.append(np.asarray(data[1]))
        logs = {"n": keras.ops.sum(data[1])}
        return logs if len(args) == 1 else (logs, args[0])


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


def test_evaluation_pads_the_last_batch_and_matches_one_whole_batch(monkeypatch):
    from reproduce.data import ArrayBatches
    from reproduce.data.batches import PaddedBatches
    from reproduce.data.pixelstats import compute_stats
    from reproduce.evaluate import build_ten_view_model, evaluate
    from reproduce.train import build_training_model, compile_model

    # The batch sizes every predict of the evaluation is fed: one shape per model
    # (a partial last batch would compile a second program).
    fed = []
    predict = keras.Model.predict

    def spy(self, x, *args, **kwargs):
        fed.append([len(x[i][0]) for i in range(len(x))])
        return predict(self, x, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "predict", spy)

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
    # Centre crops in batches of 20 (37 = 20 + 17, padded), ten views in batches
    # of 20 // 10 = 2 (the 19th holds one image, padded).
    assert fed == [[20, 20], [2] * 19]
    monkeypatch.setattr(keras.Model, "predict", predict)

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


def test_a_training_epoch_of_arrays_has_floor_n_over_batch_steps():
    """The trainer's feed of in-memory arrays drops the partial last batch (one
    train-step shape), on either backend's feed."""
    from reproduce import data as data_lib
    from reproduce.train import training_feed

    cfg = get_config("smoke", ["train.batch_size=8"])
    arrays = data_lib.ImageArrays(np.zeros((37, 4, 4, 3), np.uint8), np.arange(37, dtype=np.int32), ["a"])
    feed, callbacks, steps = training_feed(cfg, arrays, 0)
    if BACKEND == "tensorflow":
        callbacks[0].on_epoch_begin(0)
        sizes = [len(y) for _, y in feed.as_numpy_iterator()]
    else:
        sizes = [len(feed[i][1]) for i in range(len(feed))]
    assert steps is None and sizes == [8] * (37 // 8)


@pytest.mark.parametrize("scheme", ["none", "mirrored", "multiworker", "towers"])
def test_xla_is_asked_for_on_one_device_only(scheme):
    """TensorFlow's distributed schemes keep Keras' choice, which is off: XLA
    compiles the multi-replica step for one device and fails under
    MirroredStrategy (devices.xla); README.md says so."""
    cfg = get_config("smoke", ["train.xla=true", f"distribute.scheme={scheme}"])
    assert devices.xla(cfg) == (True if scheme == "none" else "auto")
    cfg.train.xla = False
    assert devices.xla(cfg) == "auto"


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the tf.data feed is TensorFlow's")
def test_the_stream_feed_moves_between_epochs_inside_a_mirrored_strategy_scope(tmp_path):
    """The trainer builds its feed inside the run's tf.distribute scope: the
    epoch it reads is chosen on the host there too."""
    import tensorflow as tf

    from reproduce.train import training_feed

    stream = _indexed_stream(tmp_path)
    cfg = get_config("smoke", ["train.batch_size=8", "train.epochs=3", "train.seed=5"])
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        feed, callbacks, _ = training_feed(cfg, stream, 1)
        for epoch in (1, 2):
            callbacks[0].on_epoch_begin(epoch)
            got = [y for _, y in feed.as_numpy_iterator()]
            want = _stream_epoch(stream, epoch + 1)
            assert len(got) == len(want) == 5
            for a, w in zip(got, want):
                np.testing.assert_array_equal(a, w)


@pytest.mark.one_backend
def test_a_streamed_training_epoch_has_floor_n_over_batch_steps(monkeypatch):
    import tensorflow as tf

    from reproduce import train as train_lib
    from reproduce.data.tfds_source import Stream

    def dataset(self, batch_size, drop_remainder=False, **kw):
        return tf.data.Dataset.range(1000).map(lambda i: (i, i)).batch(batch_size, drop_remainder=drop_remainder)

    monkeypatch.setattr(Stream, "dataset", dataset)
    stream = Stream.__new__(Stream)
    stream.num_examples = 1000
    cfg = get_config("smoke", ["train.batch_size=128"])
    feed, _, _ = train_lib.training_feed(cfg, stream, 0)  # tf.data (TensorFlow)
    assert int(feed.cardinality()) == math.floor(1000 / 128) == 7
    monkeypatch.setattr(train_lib, "tf_data_feed", lambda: False)
    batches, _, _ = train_lib.training_feed(cfg, stream, 0)  # StreamBatches (JAX)
    assert len(batches) == 7


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


# -- a stream's feed: tf.data on TensorFlow, a share per process on JAX -----------------


def _indexed_stream(folder, n=45, per_shard=8):
    """A ShardStream of n 4x4 images whose label is their index (7 shards)."""
    from reproduce.data import shard_source, shards

    images = np.broadcast_to((np.arange(n) % 256)[:, None, None, None], (n, 4, 4, 3)).astype(np.uint8)
    labels = np.arange(n)
    entry = shards.write_split(folder, "train", [(images, labels)], per_shard=per_shard)
    shards.write_manifest(folder, 4, [str(i) for i in range(n)], {"train": entry})
    return shard_source.ShardStream(str(folder), folder, "train", "train", 0, 4, n, [str(i) for i in range(n)])


def _stream_epoch(stream, epoch, batch=8):
    """Independently: the labels of the stream's epoch `epoch` (seed 5), batch by batch."""
    return [y for _, y in stream.dataset(batch, seed=5, epoch=epoch, drop_remainder=True).as_numpy_iterator()]


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the tf.data feed is TensorFlow's")
def test_the_tf_data_stream_feed_gives_fit_the_same_batches_as_the_pydataset(tmp_path):
    from reproduce.data import StreamBatches, stream_tf_dataset

    stream = _indexed_stream(tmp_path)

    def fit_labels(feed, steps_per_epoch=0, steps_per_execution=1):
        model = LabelsSeen()
        model.compile(run_eagerly=True, steps_per_execution=steps_per_execution)
        if feed == "keras":  # what the trainer gave fit until now
            data, callbacks = StreamBatches(stream, 8, seed=5, epoch=1, drop_remainder=True), []
        else:
            data, callback, _ = stream_tf_dataset(stream, 8, 5, 1, 3, steps_per_epoch)
            callbacks = [callback]
        model.fit(data, epochs=3, initial_epoch=1, shuffle=False, verbose=0, callbacks=callbacks)
        return model.seen

    # fit's epoch e reads the stream's epoch e + 1 (Keras moves a PyDataset once
    # before training), 45 // 8 = 5 batches each.
    want = _stream_epoch(stream, 2) + _stream_epoch(stream, 3)
    keras_feed, tf_feed = fit_labels("keras"), fit_labels("tf.data")
    assert len(keras_feed) == len(tf_feed) == len(want) == 10
    for k, (a, b, w) in enumerate(zip(keras_feed, tf_feed, want)):
        np.testing.assert_array_equal(a, w, err_msg=f"step {k}")
        np.testing.assert_array_equal(b, w, err_msg=f"step {k}")
    # Shortened epochs, several steps per execution: each epoch still starts
    # its own stream epoch (3 steps in executions of 2 take no batch of the next).
    short = fit_labels("tf.data", steps_per_epoch=3, steps_per_execution=2)
    want = _stream_epoch(stream, 2)[:3] + _stream_epoch(stream, 3)[:3]
    assert len(short) == 6
    for k, (a, w) in enumerate(zip(short, want)):
        np.testing.assert_array_equal(a, w, err_msg=f"short step {k}")


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the tf.data feed is TensorFlow's")
def test_training_feed_gives_fit_tf_data_for_arrays_and_for_a_stream_on_tensorflow(tmp_path):
    import tensorflow as tf

    from reproduce import data as data_lib
    from reproduce.train import training_feed

    cfg = get_config("smoke", ["train.batch_size=8", "train.epochs=3"])
    arrays = data_lib.ImageArrays(np.zeros((37, 4, 4, 3), np.uint8), np.arange(37, dtype=np.int32), ["a"])
    feed, callbacks, steps = training_feed(cfg, arrays, 0)
    assert isinstance(feed, tf.data.Dataset) and callbacks and steps is None

    stream = _indexed_stream(tmp_path)
    feed, callbacks, steps = training_feed(cfg, stream, 1)
    assert isinstance(feed, tf.data.Dataset) and len(callbacks) == 1 and steps is None
    assert int(feed.cardinality()) == 5
    for epoch in (1, 2):  # fit's epochs 1 and 2: the stream's 2 and 3
        callbacks[0].on_epoch_begin(epoch)
        got = [y for _, y in feed.as_numpy_iterator()]
        want = [y for _, y in stream.dataset(8, seed=0, epoch=epoch + 1, drop_remainder=True).as_numpy_iterator()]
        assert len(got) == len(want) == 5
        for a, w in zip(got, want):
            np.testing.assert_array_equal(a, w)


def test_the_trainers_stream_feed_gives_each_epoch_its_first_steps_per_epoch_batches(tmp_path):
    """On either backend (tf.data on TensorFlow, StreamBatches on JAX) fit's epoch e
    reads the first train.steps_per_epoch batches of the stream's epoch e + 1:
    the rest of an epoch is not carried into the next."""
    from reproduce.train import training_feed

    stream = _indexed_stream(tmp_path)
    cfg = get_config("smoke", ["train.batch_size=8", "train.epochs=3", "train.seed=5", "train.steps_per_epoch=3"])
    feed, callbacks, steps = training_feed(cfg, stream, 1)
    assert steps is None  # the feed's own length is the epoch
    model = LabelsSeen()
    model.compile(run_eagerly=True, steps_per_execution=2)
    model.fit(feed, epochs=3, initial_epoch=1, shuffle=False, verbose=0, callbacks=callbacks)
    want = _stream_epoch(stream, 2)[:3] + _stream_epoch(stream, 3)[:3]
    assert len(model.seen) == len(want) == 6
    for k, (a, w) in enumerate(zip(model.seen, want)):
        np.testing.assert_array_equal(a, w, err_msg=f"step {k}")


def test_each_of_two_jax_processes_decodes_half_of_each_global_batch_of_a_stream(tmp_path, monkeypatch):
    """JAX multiworker (auto_shard_dataset=False): a streamed training set goes through
    shard_batches like arrays do; process p of 2 gets every other record of the
    shuffled stream, so the two halves of global batch i are its images."""
    from reproduce import train as train_lib

    stream = _indexed_stream(tmp_path)
    cfg = get_config("smoke", ["train.batch_size=8"])
    monkeypatch.setattr(train_lib, "tf_data_feed", lambda: False)  # JAX's feed, on either backend
    calls = []
    dataset = type(stream).dataset

    def spy(self, batch_size, *a, **kw):
        calls.append((batch_size, kw.get("process", (1, 0))))
        return dataset(self, batch_size, *a, **kw)

    monkeypatch.setattr(type(stream), "dataset", spy)
    halves = []
    for p in range(2):
        plan = distribute.Plan("multiworker", "jax", ["d0"], num_replicas=2, num_processes=2, process_index=p)
        monkeypatch.setattr(distribute, "_ACTIVE", [plan])
        feed, _, _ = train_lib.training_feed(cfg, stream, 0)
        halves.append([feed[i] for i in range(len(feed))])
    assert calls == [(4, (2, 0)), (4, (2, 1))]  # each decodes 4 of the 8 images
    whole = [y for _, y in dataset(stream, 8, seed=0, epoch=0, drop_remainder=True).as_numpy_iterator()]
    assert len(halves[0]) == len(halves[1]) == len(whole) == 5
    for i, w in enumerate(whole):
        (x0, y0), (_, y1) = halves[0][i], halves[1][i]
        assert len(y0) == len(y1) == 4
        np.testing.assert_array_equal(np.sort(np.concatenate([y0, y1])), np.sort(w), err_msg=f"batch {i}")
        np.testing.assert_array_equal(x0[:, 0, 0, 0], y0 % 256)  # images and labels stay paired


# -- the planner: a feed slower than the training rate, checkpoints per interval ---------


@pytest.mark.one_backend
def test_the_plan_warns_when_this_machines_shard_feed_cannot_keep_up(tmp_path, monkeypatch):
    import io
    from types import SimpleNamespace

    import ablations.plan as P
    from reproduce import data as data_lib
    from reproduce.data import shards

    monkeypatch.setenv("REPRODUCE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(P, "calibrate", lambda cfg, data: (10_000.0, 5.0, 0.25, 0.5))  # 10k img/s
    val = data_lib.ImageArrays(np.zeros((32, 4, 4, 3), np.uint8), np.zeros(32, np.int32), ["a"])
    streamed = SimpleNamespace(train=_indexed_stream(tmp_path / "shards"), val=val)
    in_memory = SimpleNamespace(train=val, val=val)

    def printed(data):
        plan = P.SuitePlan(todo=[P.Job("baseline", 0, tmp_path / "run", get_config("smoke"))])
        P.fill_estimates(plan, [tmp_path], "smoke", load_data=lambda _: data, verbose=False, device="CPU")
        out = io.StringIO()
        P.print_plan(plan, "smoke", "CPU", out)
        return out.getvalue()

    assert "warning" not in printed(streamed)  # no rate per core measured here: nothing to compare
    shards.record_feed_rate(76, 100.0, "synthetic JPEGs")  # the smoke preset's S
    cores = shards.feed_cores()
    text = printed(streamed)
    assert (
        f"[ablations] warning: the input feed cannot keep up: {cores} cores x 100 images/s per core = "
        f"{100 * cores:,} images/s, below the 10,000 images/s the device trains at" in text
    )
    assert "S=76: scripts/bench_data.py on this machine" in text and "synthetic JPEGs" in text
    assert "warning" not in printed(in_memory)  # arrays in memory: no decode to keep up
    shards.record_feed_rate(76, 10_000.0, "synthetic JPEGs")
    assert "warning" not in printed(streamed)  # fast enough


@pytest.mark.one_backend
def test_the_planner_charges_a_checkpoint_every_checkpoint_every_epochs(tmp_path):
    from types import SimpleNamespace

    import ablations.plan as P

    data = SimpleNamespace(train=range(640), val=range(64))
    rate = (1000.0, 5.0, 0.1, 2.0)  # 2 s per save

    def estimate(k):
        cfg = get_config("smoke", ["train.epochs=10", f"train.checkpoint_every={k}"])
        return P.calibrated_estimate(P.Job("baseline", 0, tmp_path, cfg), data, rate)

    assert P.checkpoints_saved(P.Job("b", 0, tmp_path, get_config("smoke", ["train.epochs=10"]))) == 10
    # Every 4 epochs: after epochs 4 and 8, and after the last (10): 3 saves, not 10.
    assert estimate(1) - estimate(4) == pytest.approx(2.0 * (10 - 3))
    assert estimate(4) - estimate(10) == pytest.approx(2.0 * (3 - 1))


def test_the_calibration_times_a_checkpoint_apart_from_its_epochs(monkeypatch):
    import time

    import ablations.plan as P
    from reproduce import callbacks, checkpoint
    from reproduce import data as data_lib

    real = checkpoint.save_state

    def slow_save(*args, **kwargs):
        time.sleep(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_state", slow_save)
    monkeypatch.setattr(callbacks, "save_state", slow_save)  # the trainer's recorder
    cfg = get_config("smoke", ["eval.ten_view=false"])
    ips, fixed, per_epoch, save_s = P.calibrate(cfg, data_lib.load(cfg.data))
    assert save_s >= 0.5 and per_epoch < 0.5 and ips > 0


@pytest.mark.one_backend
def test_the_gpu_presets_sync_the_host_once_per_8_steps_and_the_cpu_tiers_keep_theirs():
    """Keras on TensorFlow reads every step's logs on the host; the GPU presets
    run 8 steps per execution, and imagenette (seconds per epoch on a GPU) saves
    every 5 epochs. The CPU tiers have published runs: their settings, and so
    their fingerprints, stay."""
    from reproduce.config import experiment_identity

    for name in ("imagenet", "imagenette"):
        assert get_config(name).train.steps_per_execution == 8, name
    assert get_config("imagenette").train.checkpoint_every == 5
    assert get_config("imagenet").train.checkpoint_every == 1  # 1.28M images an epoch
    for name in ("imagenette-cpu", "imagenette-cpu-x2", "imagenette-cpu-long", "cifar10", "smoke"):
        cfg = get_config(name)
        assert (cfg.train.steps_per_execution, cfg.train.checkpoint_every) == (1, 1), name
        assert "train.steps_per_execution" not in experiment_identity(cfg, "data"), name


# -- what training and the bench say before they start ---------------------------------


@pytest.fixture
def driver_lists_a_gpu_the_backend_does_not_see(tmp_path, monkeypatch):
    """A fake `nvidia-smi -L` listing one GPU, and a backend that sees none."""
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(devices, "accelerator", lambda: None)


class DataReached(Exception):
    """Raised where training would load its data: everything before it has run."""


@pytest.mark.one_backend
def test_training_warns_about_an_unused_gpu_and_a_small_batch_per_replica_before_its_data(
    tmp_path, monkeypatch, driver_lists_a_gpu_the_backend_does_not_see
):
    from reproduce import train as train_lib

    def load(_):
        raise DataReached

    monkeypatch.setattr(train_lib.data_lib, "load", load)
    eight = distribute.Plan("mirrored", BACKEND, ["d"] * 8, num_replicas=8)  # one device here, 8 replicas said
    monkeypatch.setattr(distribute, "plan", lambda cfg: eight)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DataReached):
            train_lib.train(get_config("smoke"), tmp_path / "run", verbose=0)
    said = [str(w.message) for w in caught]
    assert any(m.startswith("nvidia-smi lists 1 GPU(s) (GPU 0: NVIDIA H200") for m in said), said
    assert any(
        "train.batch_size=16 over the 8 replicas of distribute.scheme='mirrored' is 2 images per device" in m
        for m in said
    ), said


@pytest.mark.one_backend
def test_the_bench_warns_about_an_unused_gpu(tmp_path, driver_lists_a_gpu_the_backend_does_not_see):
    from reproduce import bench

    with pytest.warns(UserWarning, match=r"nvidia-smi lists 1 GPU\(s\) \(GPU 0: NVIDIA H200"):
        # A budget spent at once: the warning, then no measurement.
        rc = bench.main(["--paths", "step", "--precision", "float32", "--out", "", "--time-budget", "1e-9", "--quiet"])
    assert rc == 1


# -- scripts/bench_data.py: the shard feed's rate per core without the archive ---------


@pytest.mark.one_backend
def test_bench_data_measures_the_shard_feed_per_core_on_generated_images(tmp_path, monkeypatch, capsys):
    import importlib.util
    import re
    from pathlib import Path

    from reproduce.data import shards

    spec = importlib.util.spec_from_file_location(
        "bench_data", Path(__file__).resolve().parent.parent / "scripts" / "bench_data.py"
    )
    bench_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_data)
    monkeypatch.setenv("REPRODUCE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DATA_DIR", raising=False)
    (tmp_path / "no-archives").mkdir()
    bench_data.main(
        ["--data", str(tmp_path / "no-archives"), "--only-shards", "--shard-sizes", "32,48", "--shard-images", "24"]
        + ["--shard-seconds", "0.2", "--batch", "8", "--gpu-rate", "1e9"]
    )
    out = capsys.readouterr().out
    cores = shards.feed_cores()
    for size in (32, 48):
        for threads in sorted({1, cores}):
            m = re.search(
                rf"\| synthetic JPEGs \| shards \| (\d+) \| ([\d.]+) \| ([\d,]+) \| S={size} JPEG "
                rf"\(([\d.]+) kB\), {threads} thread\(s\)",
                out,
            )
            assert m, (size, threads, out)
            assert int(m[1]) > 0 and float(m[2]) > 0 and int(m[3].replace(",", "")) > 0 and float(m[4]) > 0
        per_core = re.search(rf"S={size}: ([\d,]+) img/s per core", out)
        assert per_core and int(per_core[1].replace(",", "")) > 0
        assert shards.measured_feed_rate(size)["per_core"] > 0  # recorded for the planner
    assert f"this machine ({cores} cores): the input feed cannot keep up: {cores} cores x" in out
    assert "projection, not measured: an H200 machine's 16 cores at this machine's rate per core" in out
