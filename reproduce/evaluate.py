"""Error rates (§6): the training metrics, and the final evaluation on the centre
crop and on the ten views of §4.1.

The paper reports top-1 and top-5 error rates; "at test time, the network makes a
prediction by extracting five 224x224 patches (the four corner patches and the
center patch) as well as their horizontal reflections (hence ten patches in all),
and averaging the predictions made by the network's softmax layer on the ten
patches" (§4.1).
"""

from __future__ import annotations

from types import SimpleNamespace

import keras
import numpy as np

from reproduce import distribute
from reproduce.augment import ten_views
from reproduce.config import Config
from reproduce.data import ArrayBatches, Stream, subset
from reproduce.data.batches import PaddedBatches
from reproduce.devices import xla

VIEWS = 10  # four corners and the centre, and their reflections (§4.1)
TRAIN_SAMPLE = 10_000  # training images evaluated for the overfitting gap


@keras.saving.register_keras_serializable(package="reproduce")
class TopKError(keras.metrics.SparseTopKCategoricalAccuracy):
    """1 - top-k accuracy: the paper reports error rates (§6)."""

    def result(self):
        return 1.0 - super().result()


def error_metrics() -> list:
    """The metrics every run logs: top-1 and top-5 error (metrics.csv's columns)."""
    return [TopKError(k=1, name="top1_err"), TopKError(k=5, name="top5_err")]


@keras.saving.register_keras_serializable(package="reproduce")
class TenViews(keras.layers.Layer):
    """uint8 (B, S, S, 3) -> the ten CxC views of §4.1 minus the mean image, as
    one batch of 10*B images, view-major (``reproduce.augment.ten_views``)."""

    def __init__(self, crop_size: int, mean_image=None, **kwargs):
        super().__init__(**kwargs)
        self.crop_size = int(crop_size)
        self.mean_image = None if mean_image is None else np.asarray(mean_image, np.float32)

    def call(self, images):
        c = self.crop_size
        return keras.ops.reshape(ten_views(images, c, self.mean_image), (-1, c, c, 3))

    def compute_output_shape(self, input_shape):
        return (None, self.crop_size, self.crop_size, 3)

    def get_config(self):
        config = super().get_config()
        mean = None if self.mean_image is None else self.mean_image.tolist()
        config.update(crop_size=self.crop_size, mean_image=mean)
        return config


@keras.saving.register_keras_serializable(package="reproduce")
class AverageSoftmax(keras.layers.Layer):
    """Logits of `views` x B view-major images -> the softmax averaged over the
    views, per image (float32)."""

    def __init__(self, views: int = VIEWS, **kwargs):
        super().__init__(**kwargs)
        self.views = int(views)

    def call(self, logits):
        p = keras.ops.softmax(keras.ops.cast(logits, "float32"), axis=-1)
        p = keras.ops.reshape(p, (self.views, -1, keras.ops.shape(p)[-1]))
        return keras.ops.mean(p, axis=0)

    def compute_output_shape(self, input_shape):
        return (None, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(views=self.views)
        return config


def build_ten_view_model(cfg: Config, net, stats) -> keras.Model:
    """uint8 SxS -> ten CxC views (§4.1) -> net -> softmax averaged over views."""
    d = cfg.data
    mean = stats.mean_image if d.mean_subtract else None
    inputs = keras.Input((d.image_size, d.image_size, 3), dtype="uint8")
    views = TenViews(d.crop_size, mean, name="ten_views")(inputs)
    probs = AverageSoftmax(VIEWS, dtype="float32", name="average_softmax")(net(views))
    model = keras.Model(inputs, probs)
    model.compile(jit_compile=xla(cfg))
    return distribute.place(model)


def _correct(scores: np.ndarray, labels: np.ndarray):
    top5 = np.argsort(-scores, axis=1)[:, :5]
    return top5[:, 0] == labels, (top5 == labels[:, None]).any(axis=1)


def evaluate(cfg: Config, model, net, stats, arrays, ten_view: bool) -> dict:
    """Per image of `arrays`: its label and whether the centre crop's (and the ten
    views') top-1 and top-5 predictions are right (runs.VAL_CORRECT's arrays)."""
    labels = np.asarray(arrays.labels)
    n = len(labels)
    out = {"labels": labels}
    # The last batch is padded to a full one and its padded rows' outputs dropped:
    # one batch shape, one compiled program (a partial batch compiles another).
    batches = PaddedBatches(ArrayBatches(arrays.images, None, cfg.eval.batch_size, shuffle=False))
    logits = np.asarray(model.predict(batches, verbose=0), np.float32)[:n]
    out["top1_center"], out["top5_center"] = _correct(logits, labels)
    if ten_view:
        tv = build_ten_view_model(cfg, net, stats)
        b10 = PaddedBatches(ArrayBatches(arrays.images, None, max(1, cfg.eval.batch_size // VIEWS), shuffle=False))
        probs = np.asarray(tv.predict(b10, verbose=0), np.float32)[:n]
        out["top1_10view"], out["top5_10view"] = _correct(probs, labels)
    return out


def validation_errors(out: dict) -> dict:
    """The validation errors a result records (runs.RESULT_KEYS), from `evaluate`'s
    per-image results: top-1 and top-5 error of the centre crop and of the ten
    views (None where the ten views were not evaluated)."""

    def error(key):
        return float(1 - out[key].mean()) if key in out else None

    return {
        "val_top1_err": error("top1_center"),
        "val_top5_err": error("top5_center"),
        "val_top1_err_10view": error("top1_10view"),
        "val_top5_err_10view": error("top5_10view"),
    }


def dead_fraction(activations) -> float:
    """The fraction of units (columns) that output 0 for every row: ReLUs that never
    fire on those inputs, and so pass no gradient."""
    a = np.asarray(activations)
    return float(np.mean(np.all(a <= 0, axis=0)))


DEAD_SAMPLE = 2_000  # images on which a unit must never fire to count as dead


def fc7_dead_fraction(cfg: Config, model, net, arrays) -> float | None:
    """The fraction of fc7's ReLUs that output 0 on every one of the first
    DEAD_SAMPLE images of `arrays` (centre crops, inference mode). §5 gives fc6
    and fc7 bias 1 "to provide the ReLUs with positive inputs"; a net whose
    training collapsed has most of them dead. None for a net without a ReLU fc7
    (the CIFAR-10 nets, tanh)."""
    if cfg.model.activation != "relu" or "fc7" not in {layer.name for layer in net.layers}:
        return None
    probe = keras.Model(net.inputs, net.get_layer("fc7").output, name="fc7_probe")
    image = keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype)
    fc7 = keras.Model(image, probe(model.get_layer("augment")(image)), name="fc7_of_images")
    fc7.compile(jit_compile=xla(cfg))
    fc7 = distribute.place(fc7)  # like the ten-view model: every process gets every output
    n = min(len(arrays.labels), DEAD_SAMPLE)
    batches = PaddedBatches(ArrayBatches(arrays.images[:n], None, cfg.eval.batch_size, shuffle=False))
    return dead_fraction(np.asarray(fc7.predict(batches, verbose=0), np.float32)[:n])


def training_sample(cfg: Config, train):
    """Up to TRAIN_SAMPLE training images (a seeded subset; a stream's first ones)
    for the training error without augmentation or dropout: the overfitting gap."""
    if isinstance(train, Stream):
        sb = train.batches(250, shuffle=False)
        parts = [sb[i] for i in range(min(len(sb), TRAIN_SAMPLE // 250))]
        return SimpleNamespace(
            images=np.concatenate([p[0] for p in parts]), labels=np.concatenate([p[1] for p in parts])
        )
    return subset(train, min(len(train), TRAIN_SAMPLE), seed=cfg.train.seed)
