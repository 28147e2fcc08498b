"""The data pipeline: sources -> uint8 SxS cache -> batches for `model.fit`.

One value, `data.source`, picks the source:

* ``tfds:<name>``  any TensorFlow Datasets image classification set, e.g.
  ``tfds:imagenet2012`` (needs ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar
  in ~/tensorflow_datasets/downloads/manual/; a DataError says so otherwise),
  ``tfds:cifar10``, ``tfds:imagenette/160px-v2``. Needs TensorFlow.
* a folder in ImageFolder layout ``<root>/<split>/<class>/<image>`` (JPEG, PNG or
  WebP), or a ``.tar``, ``.tar.gz``, ``.tar.xz`` or ``.zip`` archive of one (a single
  top-level folder inside is detected), e.g. ``~/data/cifar10-jpeg.tar.xz``.
* a folder of pre-resized JPEG shards written by ``python -m reproduce.data.shards``
  (it holds ``shards.json``): the GPU feed for ImageNet, see `reproduce.data.shards`
  (read through `reproduce.data.shard_source`). Needs TensorFlow (tf.data reads them).
* ``synthetic``  class-dependent colour + stripe patterns, learnable in seconds.

Folders, archives and synthetic data need only NumPy and Pillow (no TensorFlow:
Keras may run on JAX alone); TensorFlow is imported only for tfds:.

§2 preprocessing: the shorter side rescaled to S = data.image_size and the central
SxS patch kept, stored as uint8. Decoding happens once, in parallel processes, into
an on-disk cache (see `reproduce.data.cache` for the layout; location
`data.cache_dir`, else $REPRODUCE_CACHE, else ~/.cache/reproduce); later runs
memory-map it. Large TFDS splits (> 200k examples, i.e. ImageNet train) are
streamed through tf.data instead (`Stream`).

Split names: `data.train_split` / `data.val_split` name the folders (TFDS splits);
a missing `validation` falls back to `val`, `valid` or `test`, with a warning.

Public API (the trainer calls exactly these)::

    load(data_cfg) -> Data(train, val, stats, num_classes, class_names)
        train/val: ImageArrays (or Stream for large TFDS splits); checks that both
        splits have the same classes, two at least.
    check_batches(data, batch_size)   DataError unless the training split holds a batch
    load_split(data_cfg, split) -> ImageArrays | Stream
        ImageArrays(images: uint8 (N,S,S,3) memmap, labels: int32 (N,),
                    class_names: list[str], split: str, source: str, cache_path)
        data.max_train applies when split == data.train_split, data.max_val when
        split == data.val_split (a fixed random subset, seed 0).
    load_stats(data_cfg) -> Stats(mean_image (S,S,3) f32, pca_eigvals (3,) f32
                                  descending, pca_eigvecs (3,3) f32 columns,
                                  num_images, num_pixels)
        of the training split: §2 mean image, §4.1 PCA of all RGB pixel values
        (0-255 scale). Computed once, cached next to the data.
    ArrayBatches(images, labels=None, batch_size=128, shuffle=True, seed=0, epoch=0,
                 drop_remainder=False, workers=4, use_multiprocessing=False,
                 max_queue_size=8, steps_per_epoch=0)
                                       keras.utils.PyDataset of (uint8, int32)
        reshuffled per pass from (seed, pass), a batch a function of (epoch,
        step); `on_epoch_end` advances the epoch, `set_epoch(e)` / `epoch=e`
        resumes. Pass shuffle=False to fit.
    tf_dataset(batches) -> (tf.data.Dataset, callback)   the same batches through
        tf.data (TensorFlow's training feed)
    stream_tf_dataset(stream, batch_size, seed, first_epoch, last_epoch)
        -> (tf.data.Dataset, callback, steps)   a Stream's training batches for
        fit's epochs as one tf.data pipeline (TensorFlow's feed of a stream)
    step_feed(batches, first_epoch) -> (StepFeed, callback)   the same batches
        as a PyDataset chosen by (epoch, step) alone, whatever Keras reads ahead
        (JAX's training feed)
    Stream.batches(batch_size, shuffle, seed, epoch) / Stream.dataset(...)
        the same for a streamed split.
    subset(arrays, n, seed=0) -> ImageArrays   n random images, lazily indexed
    decode_count() -> int       images decoded by this process (and its workers)
    DataError(ValueError)       bad input: the message names the problem and the fix

Environment: REPRODUCE_CACHE (cache root), REPRODUCE_DATA_WORKERS (decode
processes; default: CPUs), REPRODUCE_MAX_BAD_FRACTION (corrupt images tolerated per
split, default 0.01), REPRODUCE_STREAM=1/0 (force streaming/caching of a TFDS training split;
validation splits are always cached),
TFDS_DATA_DIR, TFDS_MANUAL_DIR.
"""

from __future__ import annotations

import numpy as np

from reproduce.data import cache as _cache
from reproduce.data import imagefolder, shard_source, tfds_source
from reproduce.data import synthetic as _synthetic
from reproduce.data.common import (  # noqa: F401
    MAX_BAD_FRACTION,
    Data,
    DataError,
    ImageArrays,
    Stats,
    check_classes,
    check_same_classes,
)
from reproduce.data.decode import decode_count  # noqa: F401
from reproduce.data.pixelstats import compute_stats
from reproduce.data.tfds_source import Stream
from reproduce.files import cache_root
from reproduce.sources import is_shards

__all__ = [
    "load",
    "load_split",
    "load_stats",
    "subset",
    "ArrayBatches",
    "StreamBatches",
    "ImageArrays",
    "Stats",
    "Data",
    "DataError",
    "decode_count",
    "Stream",
    "check_batches",
    "tf_dataset",
    "stream_tf_dataset",
    "step_feed",
]


def __getattr__(name):
    # Keras loads only when batches are asked for: decode workers and the report
    # import this package without it.
    if name in ("ArrayBatches", "StreamBatches", "epoch_permutation", "tf_dataset", "stream_tf_dataset", "step_feed"):
        from reproduce.data import batches

        return getattr(batches, name)
    raise AttributeError(f"module 'reproduce.data' has no attribute {name!r}")


def _kind(source: str) -> str:
    if source == "synthetic":
        return "synthetic"
    if source.startswith("tfds:"):
        if not source[5:]:
            raise DataError("data.source='tfds:' needs a dataset name, e.g. tfds:cifar10")
        return "tfds"
    if not source:
        raise DataError("data.source is empty; use tfds:<name>, a folder or archive path, or synthetic")
    return "shards" if is_shards(source) else "path"


def _max_for(cfg, split: str) -> int:
    if split == cfg.train_split:
        return int(cfg.max_train or 0)
    if split == cfg.val_split:
        return int(cfg.max_val or 0)
    return 0


def _synthetic_split(cfg, split: str) -> ImageArrays:
    is_train = split == cfg.train_split
    n = cfg.synthetic_train if is_train else cfg.synthetic_val
    n = min(n, _max_for(cfg, split) or n)
    names = [f"class{k}" for k in range(cfg.synthetic_classes)]
    check_classes(split, names, "synthetic", "Set data.synthetic_classes to 2 or more.")
    images, labels = _synthetic.synthetic_arrays(
        n, cfg.synthetic_classes, cfg.image_size, seed=_synthetic.SEED if is_train else _synthetic.SEED + 1
    )
    return ImageArrays(images, labels, names, split=split, source="synthetic")


def _load_splits(cfg, splits, same_classes: bool = False) -> list:
    kind = _kind(cfg.source)
    if kind == "synthetic":
        return [_synthetic_split(cfg, s) for s in splits]
    root = cache_root(cfg.cache_dir)
    if kind == "tfds":
        # The validation split is never streamed: the trainer's evaluation indexes it.
        return [
            tfds_source.load_split(
                cfg.source, cfg.source[5:], s, _max_for(cfg, s), cfg.image_size, root, stream_ok=s != cfg.val_split
            )
            for s in splits
        ]
    if kind == "shards":
        return [
            shard_source.load_split(cfg.source, s, _max_for(cfg, s), cfg.image_size, root, stream_ok=s != cfg.val_split)
            for s in splits
        ]
    return imagefolder.load_splits(
        cfg.source, [(s, _max_for(cfg, s)) for s in splits], cfg.image_size, root, same_classes=same_classes
    )


def load_split(data_cfg, split: str):
    """One split: ImageArrays (decoded once into the cache), or a Stream."""
    return _load_splits(data_cfg, [split])[0]


def _stats_of(data_cfg, train) -> Stats:
    if not isinstance(train, ImageArrays):  # a Stream
        return tfds_source.stream_stats(train, cache_root(data_cfg.cache_dir))
    if train.cache_path is None:
        return compute_stats(train.images)
    st = _cache.read_stats(train.cache_path)
    if st is None:
        st = compute_stats(train.images)
        _cache.write_stats(train.cache_path, st)
    return st


def load_stats(data_cfg) -> Stats:
    """§2 mean image and §4.1 pixel PCA of the training split (cached)."""
    return _stats_of(data_cfg, load_split(data_cfg, data_cfg.train_split))


def load(data_cfg) -> Data:
    """Both splits, the training statistics and the classes: what training needs."""
    train, val = _load_splits(data_cfg, [data_cfg.train_split, data_cfg.val_split], same_classes=True)
    check_classes(
        train.split, train.class_names, data_cfg.source, "Point data.source at a dataset of two classes or more."
    )
    check_same_classes(train.split, train.class_names, val.split, val.class_names, data_cfg.source)
    stats = _stats_of(data_cfg, train)
    return Data(
        train=train, val=val, stats=stats, num_classes=len(train.class_names), class_names=list(train.class_names)
    )


def check_batches(data: Data, batch_size: int) -> None:
    """Training drops an epoch's last partial batch (every step has one shape), so a
    training split smaller than one batch would give epochs without a step."""
    n = len(data.train)
    if n < batch_size:
        raise DataError(
            f"the training split {data.train.split!r} of {data.train.source} has {n} "
            f"image(s), fewer than one batch (train.batch_size={batch_size}): an epoch would "
            f"have no training step. Use a smaller batch (--set train.batch_size={max(n, 1)}, "
            f"or SET=train.batch_size={max(n, 1)} with make) or more training images."
        )


class IndexedImages:
    """Rows `index` of a (memory-mapped) image array, read only when indexed."""

    def __init__(self, base, index: np.ndarray):
        self.base, self.index = base, np.asarray(index)
        self.dtype = base.dtype
        self.shape = (len(self.index),) + tuple(base.shape[1:])
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key):
        return self.base[self.index[key]]

    def __array__(self, dtype=None, copy=None):
        a = np.asarray(self.base[self.index])
        return a if dtype is None else a.astype(dtype)


def subset(arrays: ImageArrays, n: int, seed: int = 0) -> ImageArrays:
    """n images of `arrays` drawn without replacement by `seed`, in index order.

    A memmap is not copied: images are read when a batch indexes them.
    """
    total = len(arrays)
    if n >= total:
        return arrays
    idx = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    images = IndexedImages(arrays.images, idx) if isinstance(arrays.images, np.memmap) else arrays.images[idx]
    return ImageArrays(
        images=images,
        labels=arrays.labels[idx],
        class_names=list(arrays.class_names),
        split=arrays.split,
        source=arrays.source,
        cache_path=None,
    )
