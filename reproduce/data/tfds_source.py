"""`tfds:<name>` sources: any TensorFlow Datasets image classification dataset.

TensorFlow and tensorflow_datasets are imported only in here, and only when a
`tfds:` source is used.

Small splits (<= STREAM_MIN_EXAMPLES examples; cifar10, imagenette, the 50k
ImageNet validation set) are decoded once into the same uint8 cache as folders:
the encoded bytes are read with `tfds.decode.SkipDecoding()` and decoded by the
same Pillow workers, so a TFDS split and an ImageFolder copy of it give the same
pixels. Large splits (ImageNet's 1.28M training images) are streamed instead:
`Stream.dataset()` is a tf.data pipeline (file + buffer shuffling, parallel decode
with `tf.image.decode_and_crop_jpeg` of the central square, antialiased resize to
SxS, batching, prefetch) yielding uint8 (B, S, S, 3) and int32 labels.
$REPRODUCE_STREAM=1 / 0 forces streaming / caching of the training split. The
validation split is always cached: evaluation reads it every epoch, and the
final evaluation indexes it (ten views, per-image results).

Datasets TFDS cannot download (imagenet2012 needs the user's own ILSVRC-2012 tar
files) fail with a DataError that says which files to put where.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from reproduce.data import cache as cache_lib
from reproduce.data import decode as dec
from reproduce.data.common import DataError, check_bad_images, resolve_split
from reproduce.data.pixelstats import StatsAccumulator

STREAM_MIN_EXAMPLES = 200_000
# Streamed datasets: the mean image and pixel PCA come from all pixels of this many
# training images (a shuffled sample; 4% of ImageNet, ~3.3e9 pixel values at S=256).
STREAM_STATS_IMAGES = 50_000
SHUFFLE_BUFFER = 10_000  # encoded images (~110 kB each for ImageNet: ~1 GB)

# Files a manual-download dataset needs in the TFDS manual folder.
MANUAL_FILES = {
    "imagenet2012": ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
    "imagenet2012_subset": ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
}


def tensorflow_for_data():
    """TensorFlow for tf.data only, where Keras runs on another backend: the GPUs
    hidden from TensorFlow first, so it does not reserve their memory (by default
    it maps nearly all of every GPU's memory when it initializes) under JAX."""
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            # TensorFlow was initialized already (someone used it before): it
            # cannot be changed now; say so rather than fail the data pipeline.
            if tf.config.get_visible_devices("GPU"):
                warnings.warn(
                    "TensorFlow was initialized with the GPUs visible before the "
                    "data pipeline hid them; it may hold GPU memory JAX needs. "
                    "Set TF_FORCE_GPU_ALLOW_GROWTH=true.",
                    stacklevel=2,
                )
    return tf


def _tfds():
    try:
        tensorflow_for_data()  # before TFDS imports TensorFlow and it initializes
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(
            f"data.source='tfds:...' needs TensorFlow and tensorflow-datasets ({e}). "
            f"Install them (pip install tensorflow tensorflow-datasets), or use a folder "
            f"or archive (data.source=/path/to/imagenette-144-webp.tar.xz) or 'synthetic', "
            f"which need neither."
        ) from None
    return tfds


def data_dir():
    return os.environ.get("TFDS_DATA_DIR") or None


def _data_root() -> str:
    return data_dir() or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")


def get_builder(name: str):
    tfds = _tfds()
    try:
        return tfds.builder(name, data_dir=data_dir())
    except Exception as e:  # DatasetNotFoundError, bad config name, ...
        raise DataError(
            f"data.source='tfds:{name}': TFDS cannot make this dataset "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            f"Check the name at https://www.tensorflow.org/datasets/catalog."
        ) from None


def ensure_prepared(builder, name: str) -> None:
    """Download and prepare if needed, with a clear error where TFDS cannot."""
    if builder.is_prepared():
        return
    tfds = _tfds()
    base = name.split("/")[0].split(":")[0]
    if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
        manual = os.environ.get("TFDS_MANUAL_DIR") or os.path.join(_data_root(), "downloads", "manual")
        needed = MANUAL_FILES.get(base, ())
        missing = [f for f in needed if not os.path.isfile(os.path.join(manual, f))]
        empty = not needed and not (os.path.isdir(manual) and os.listdir(manual))
        if missing or empty:
            what = (
                ", ".join(missing)
                if missing
                else f"the files described at https://www.tensorflow.org/datasets/catalog/{base}"
            )
            raise DataError(
                f"data.source='tfds:{name}' is not prepared in {builder.data_dir}, and TFDS "
                f"builds it only from files you download yourself. Missing in {manual}: "
                f"{what}.\n"
                + (
                    "Get ILSVRC2012_img_train.tar (138 GB) and ILSVRC2012_img_val.tar "
                    "(6.3 GB) from https://image-net.org/download-images (free "
                    "registration).\n"
                    if base.startswith("imagenet2012")
                    else ""
                )
                + "Put them in ~/tensorflow_datasets/downloads/manual/ (or "
                "$TFDS_DATA_DIR/downloads/manual/ if TFDS_DATA_DIR is set, or any folder "
                "named by TFDS_MANUAL_DIR), or build once with `tfds build "
                f"{base} --manual_dir=<folder>`; then rerun. Without these files use "
                "data.source=<ImageFolder folder or archive>, e.g. the Imagenette archive."
            )
        print(
            f"[reproduce.data] preparing tfds:{name} from {manual} (once; ImageNet takes hours)",
            file=sys.stderr,
            flush=True,
        )
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
        return
    mocked = getattr(type(builder).download_and_prepare, "__module__", "").startswith(
        "tensorflow_datasets.testing"
    )  # tfds.testing.mock_data: nothing to download
    if not mocked and not _online():
        raise DataError(
            f"data.source='tfds:{name}' is not prepared in {builder.data_dir} and this "
            "machine is offline, so TFDS cannot download it. Either run again where the "
            "machine can download (TFDS prepares it once), or use a local folder or "
            "archive in ImageFolder layout: `make reproduce DATA_DIR=path/to/"
            "imagenette-144-webp.tar.xz` (or --set data.source=PATH)."
        )
    try:
        builder.download_and_prepare()
    except Exception as e:
        raise DataError(
            f"TFDS could not download and prepare {name!r} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). If this machine is offline, "
            f"copy a prepared TFDS data_dir here and set TFDS_DATA_DIR, or use an "
            f"ImageFolder archive (data.source=/path/to/cifar10-jpeg.tar.xz)."
        ) from None


def _online(timeout: float = 3.0) -> bool:
    """Whether TFDS can reach its download mirror (checked before a long download)."""
    if os.environ.get("REPRODUCE_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("storage.googleapis.com", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _keys(info):
    """(image feature key, label feature key) of a classification dataset."""
    sk = info.supervised_keys
    if isinstance(sk, (tuple, list)) and len(sk) == 2 and all(isinstance(k, str) for k in sk):
        return sk
    tfds = _tfds()
    feats = info.features
    img = [k for k, f in feats.items() if isinstance(f, tfds.features.Image)]
    lab = [k for k, f in feats.items() if isinstance(f, tfds.features.ClassLabel)]
    if not img or not lab:
        raise DataError(
            f"TFDS dataset {info.name!r} has no image + class label features "
            f"(features: {list(feats)}); it is not an image classification set"
        )
    return img[0], lab[0]


class _Split:
    """A resolved TFDS split: how to read it, and what is in it."""

    def __init__(self, name: str, split: str, max_n: int):
        tfds = _tfds()
        b = get_builder(name)
        ensure_prepared(b, name)
        avail = list(b.info.splits.keys())
        # Mocked or not-yet-described datasets have no split list: trust the name.
        self.resolved = resolve_split(split, avail, f"TFDS {name}") if avail else split
        self.expr = f"{self.resolved}[:{max_n}]" if max_n else self.resolved
        self.name, self.requested, self.max_n = name, split, max_n
        self.image_key, self.label_key = _keys(b.info)
        self.class_names = list(b.info.features[self.label_key].names)
        self.version = str(b.version)
        self.tfds = tfds

    def load(self, shuffle_files=False, seed=None):
        tfds = self.tfds
        rc = tfds.ReadConfig(shuffle_seed=seed) if seed is not None else None
        return tfds.load(
            self.name,
            split=self.expr,
            data_dir=data_dir(),
            decoders={self.image_key: tfds.decode.SkipDecoding()},
            shuffle_files=shuffle_files,
            read_config=rc,
        )

    def identity(self) -> dict:
        return {"kind": "tfds", "name": self.name, "version": self.version, "data_dir": data_dir() or _data_root()}

    def num_examples(self) -> int:
        n = int(self.load().cardinality())
        return n if n >= 0 else -1


def want_stream(n: int, stream_ok: bool = True) -> bool:
    if not stream_ok:
        return False
    force = os.environ.get("REPRODUCE_STREAM", "")
    if force in ("1", "true", "yes"):
        return True
    if force in ("0", "false", "no"):
        return False
    return n > STREAM_MIN_EXAMPLES


def load_split(source: str, name: str, split: str, max_n: int, size: int, root: Path, stream_ok: bool = True):
    """ImageArrays (decoded into the cache) or, if `stream_ok`, a Stream (large splits)."""
    s = _Split(name, split, max_n)
    n = s.num_examples()
    if want_stream(n, stream_ok):
        return Stream(source, s, size, n)
    final = cache_lib.entry_path(root, "tfds_" + name, split, size, max_n, s.identity())
    if not cache_lib.usable(final):
        _build(source, s, size, final)
    else:
        cache_lib.warn_if_over_tolerance(final, cache_lib.read_manifest(final))
    return cache_lib.open_entry(final, source)


def _build(source: str, s: _Split, size: int, final: Path) -> None:
    t0 = time.perf_counter()
    ds = s.load()
    # Pass 1 reads only the labels (records are not decoded): N for the allocation.
    labels = np.fromiter((int(x) for x in ds.map(lambda ex: ex[s.label_key]).as_numpy_iterator()), dtype=np.int64)
    n = len(labels)
    if n == 0:
        raise DataError(f"split {s.expr!r} of TFDS {s.name!r} is empty")
    builder = cache_lib.EntryBuilder(final)
    out = builder.allocate(n, size)

    def items():
        for i, data in enumerate(ds.map(lambda ex: ex[s.image_key]).as_numpy_iterator()):
            yield (i, f"{s.resolved}#{i}", bytes(data))

    try:
        bad = dec.run_jobs(dec.chunked(out, size, ("bytes", None), items()), n, f"tfds:{s.name} {s.resolved}")
    except BaseException:
        builder.abort()
        raise
    bad = [(i, name, msg) for _, i, name, msg in bad]
    skipped = check_bad_images(bad, n, f"TFDS {s.name}", s.resolved, builder)
    builder.commit(
        labels.astype(np.int32),
        [i for i, _, _ in bad],
        {
            "source": source,
            "where": f"TFDS {s.name}",
            "identity": s.identity(),
            "split_requested": s.requested,
            "split": s.resolved,
            "class_names": s.class_names,
            "n_listed": n,
            "max": s.max_n,
            "skipped": [[name, msg] for _, name, msg in bad],
            "skipped_names": skipped,
            "build_seconds": round(time.perf_counter() - t0, 2),
        },
    )


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0] & 0x7FFFFFFF)


def decode_square(data, size: int):
    """tf: encoded image -> uint8 (size, size, 3): central square, resized (§2)."""
    tf = tensorflow_for_data()

    def jpeg():
        shape = tf.image.extract_jpeg_shape(data)
        h, w = shape[0], shape[1]
        side = tf.minimum(h, w)
        window = tf.stack([(h - side) // 2, (w - side) // 2, side, side])
        # Decodes only the window: cheaper than decode-then-crop for wide photos.
        return tf.image.decode_and_crop_jpeg(data, window, channels=3)

    def other():
        img = tf.io.decode_image(data, channels=3, expand_animations=False)
        h, w = tf.shape(img)[0], tf.shape(img)[1]
        side = tf.minimum(h, w)
        return tf.image.crop_to_bounding_box(img, (h - side) // 2, (w - side) // 2, side, side)

    img = tf.cond(tf.io.is_jpeg(data), jpeg, other)
    img = tf.image.resize(img, [size, size], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(img), 0.0, 255.0), tf.uint8)


class Stream:
    """A large TFDS split read on the fly (never cached): uint8 SxS batches.

    `len(stream)` is the number of examples; `class_names`, `split`, `image_size`
    as for ImageArrays. Feed `stream.batches(...)` (a keras PyDataset, like
    ArrayBatches) or `stream.dataset(...)` (a tf.data.Dataset) to `model.fit`.
    Picklable: TensorFlow objects are made only when asked for.
    """

    def __init__(self, source: str, s: _Split, size: int, n: int):
        self.source = source
        self.name, self.expr, self.split = s.name, s.expr, s.resolved
        self.split_requested, self.max_n = s.requested, s.max_n
        self.image_key, self.label_key = s.image_key, s.label_key
        self.class_names = s.class_names
        self.version = s.version
        self.image_size = size
        self.num_examples = n
        self.cache_name = "tfds_" + s.name  # of its statistics' cache entry

    def __len__(self) -> int:
        return self.num_examples

    def identity(self) -> dict:
        return {"kind": "tfds", "name": self.name, "version": self.version, "data_dir": data_dir() or _data_root()}

    def dataset(
        self,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        drop_remainder: bool = False,
        shuffle_buffer: int = SHUFFLE_BUFFER,
        process: tuple = (1, 0),
    ):
        """One epoch as a tf.data.Dataset; order fixed by (seed, epoch).
        process=(P, p): every P-th example from the p-th of that order, decoded
        (one process's share; `batches.StreamBatches.for_process`)."""
        tf = tensorflow_for_data()

        tfds = _tfds()
        es = _epoch_seed(seed, epoch)
        ds = tfds.load(
            self.name,
            split=self.expr,
            data_dir=data_dir(),
            decoders={self.image_key: tfds.decode.SkipDecoding()},
            shuffle_files=shuffle,
            read_config=tfds.ReadConfig(shuffle_seed=es, interleave_cycle_length=16),
        )
        ik, lk, size = self.image_key, self.label_key, self.image_size
        ds = ds.map(lambda ex: (ex[ik], tf.cast(ex[lk], tf.int32)))
        if shuffle:  # shuffle the small encoded bytes, before decoding
            ds = ds.shuffle(shuffle_buffer, seed=es, reshuffle_each_iteration=False)
        if process[0] > 1:  # after the shuffle, which is the same in every process
            ds = ds.shard(int(process[0]), int(process[1]))
        ds = ds.map(lambda b, y: (decode_square(b, size), y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        return ds.prefetch(tf.data.AUTOTUNE)

    def batches(
        self,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        drop_remainder: bool = False,
        **kwargs,
    ):
        from reproduce.data.batches import StreamBatches

        return StreamBatches(
            self, batch_size, shuffle=shuffle, seed=seed, epoch=epoch, drop_remainder=drop_remainder, **kwargs
        )

    def num_batches(self, batch_size: int, drop_remainder: bool = False) -> int:
        f = math.floor if drop_remainder else math.ceil
        return int(f(self.num_examples / batch_size))


def stream_stats(stream: Stream, root: Path, sample: int = STREAM_STATS_IMAGES):
    """Mean image + PCA from a shuffled sample of a stream, cached on disk."""
    sample = min(sample, stream.num_examples) if stream.num_examples > 0 else sample
    ident = {**stream.identity(), "stats_sample": sample}
    path = cache_lib.entry_path(
        root, stream.cache_name + "_stats", stream.split_requested, stream.image_size, stream.max_n, ident
    )
    st = cache_lib.read_stats(path)
    if st is not None:
        return st
    acc = StatsAccumulator()
    for x, _ in stream.dataset(256, shuffle=True, seed=0).as_numpy_iterator():
        acc.update(x[: sample - acc.n])
        if acc.n >= sample:
            break
    st = acc.result()
    path.mkdir(parents=True, exist_ok=True)
    cache_lib.write_stats(path, st)
    return st
