"""Feeding `model.fit`: keras PyDatasets over the uint8 cache (and over streams).

Batches are uint8 (B, S, S, 3) images and int32 labels; every float operation
(mean, crops, flips, PCA colour) happens on the accelerator in
`reproduce.augment.Augment`, so the host only copies bytes.

Pass `shuffle=False` to `model.fit`: ArrayBatches shuffles itself, by (seed,
epoch). Keras' own `shuffle=True` (fit's default) permutes the batch order with
Python's global `random`, which a resumed run cannot reproduce.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from reproduce.data.common import ImageArrays


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of one epoch: a function of (seed, epoch) only."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


class ArrayBatches(keras.utils.PyDataset):
    """(uint8 images, int32 labels) batches from (memory-mapped) arrays.

    ArrayBatches(images, labels=None, batch_size=128, shuffle=True, seed=0, epoch=0,
                 drop_remainder=False, workers=4, use_multiprocessing=False,
                 max_queue_size=8)

    `images` may also be an ImageArrays (its labels are used). With labels=None
    the batches are `(images,)` (for `predict`). With shuffle, epoch e visits the
    examples in `epoch_permutation(N, seed, e)` order; Keras calls `on_epoch_end`
    after each epoch, which advances the epoch; a resumed run passes `epoch=` (or
    calls `set_epoch`) to continue the same sequence. The indices inside a batch
    are sorted, so a batch is read from the memmap front to back (the augmentation
    draws are independent of position, so this changes nothing statistically).

    Thread workers (the default, 4) overlap page-cache misses of a cold cache with
    training; NumPy fancy indexing releases the GIL while it copies.
    """

    def __init__(self, images, labels=None, batch_size: int = 128, shuffle: bool = True,
                 seed: int = 0, epoch: int = 0, drop_remainder: bool = False,
                 workers: int = 4, use_multiprocessing: bool = False,
                 max_queue_size: int = 8):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing,
                         max_queue_size=max_queue_size)
        if isinstance(images, ImageArrays):
            labels = images.labels if labels is None else labels
            images = images.images
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images = images
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int32)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_remainder = bool(drop_remainder)
        self.n = int(len(images))
        self._order = None
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._order = epoch_permutation(self.n, self.seed, self.epoch) if self.shuffle else None

    def __len__(self) -> int:
        f = math.floor if self.drop_remainder else math.ceil
        return int(f(self.n / self.batch_size))

    def batch_indices(self, i: int) -> np.ndarray:
        if i < 0 or i >= len(self):
            raise IndexError(f"batch {i} of {len(self)}")
        lo, hi = i * self.batch_size, min((i + 1) * self.batch_size, self.n)
        if self._order is None:
            return np.arange(lo, hi)
        return np.sort(self._order[lo:hi])

    def __getitem__(self, i: int):
        return self.rows(self.batch_indices(i))

    def rows(self, idx: np.ndarray):
        """The batch of the examples `idx` (ascending), read from the arrays: a
        part of a batch for a process that feeds only its share of it."""
        idx = np.asarray(idx)
        if len(idx) and idx[-1] - idx[0] + 1 == len(idx):  # contiguous: a plain slice copy
            x = np.array(self.images[idx[0]:idx[-1] + 1], dtype=np.uint8)
        else:
            x = np.asarray(self.images[idx], dtype=np.uint8)
        if self.labels is None:
            return (x,)
        return x, self.labels[idx]

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.set_epoch(self.epoch + 1)
        else:
            self.epoch += 1


class StreamBatches(keras.utils.PyDataset):
    """A `Stream` as a keras PyDataset: batches are read in order from tf.data.

    Same arguments as ArrayBatches (no workers: tf.data parallelises the decode).
    `__getitem__` ignores its index and returns the next batch, so pass
    `shuffle=False` to `model.fit` (the stream shuffles by (seed, epoch) itself).
    A new epoch's pipeline starts at `on_epoch_begin`.
    """

    def __init__(self, stream, batch_size: int = 128, shuffle: bool = True, seed: int = 0,
                 epoch: int = 0, drop_remainder: bool = False):
        super().__init__(workers=1, use_multiprocessing=False)
        self.stream = stream
        self.batch_size = int(batch_size)
        self.shuffle, self.seed, self.epoch = bool(shuffle), int(seed), int(epoch)
        self.drop_remainder = bool(drop_remainder)
        self._it = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._it = None

    def __len__(self) -> int:
        return self.stream.num_batches(self.batch_size, self.drop_remainder)

    def __getitem__(self, i: int):
        if self._it is None:
            ds = self.stream.dataset(self.batch_size, shuffle=self.shuffle, seed=self.seed,
                                     epoch=self.epoch, drop_remainder=self.drop_remainder)
            self._it = ds.as_numpy_iterator()
        x, y = next(self._it)
        return x, y

    def on_epoch_begin(self) -> None:
        self._it = None

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)


class DerivedBatches(keras.utils.PyDataset):
    """A PyDataset made from another one (`inner`): the same worker settings, its
    epoch hooks forwarded, and by default the same batches. Subclasses change
    which batches (`__len__`, `__getitem__`)."""

    def __init__(self, inner):
        super().__init__(
            workers=getattr(inner, "workers", 1),
            use_multiprocessing=getattr(inner, "use_multiprocessing", False),
            max_queue_size=getattr(inner, "max_queue_size", 10),
        )
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int):
        return self.inner[i]

    def on_epoch_begin(self) -> None:
        if hasattr(self.inner, "on_epoch_begin"):
            self.inner.on_epoch_begin()

    def on_epoch_end(self) -> None:
        if hasattr(self.inner, "on_epoch_end"):
            self.inner.on_epoch_end()


class CycledBatches(DerivedBatches):
    """`n` batches cycling over `inner`'s: an epoch of any length from a few batches."""

    def __init__(self, inner, n: int):
        super().__init__(inner)
        self.n = int(n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.inner[i % len(self.inner)]


class PaddedBatches(DerivedBatches):
    """`inner`'s batches with the last one padded to `inner.batch_size` rows (the
    last image repeated), for `predict`: every batch has one shape, so the
    prediction step compiles once. The caller drops the padded rows' outputs:
    the first `n_rows` predictions are the real images', in order."""

    def __init__(self, inner):
        super().__init__(inner)
        self.batch_size = int(inner.batch_size)
        self.n_rows = int(inner.n)

    def __getitem__(self, i: int):
        batch = self.inner[i]
        arrays = batch if isinstance(batch, tuple) else (batch,)
        short = self.batch_size - len(arrays[0])
        if short > 0:
            arrays = tuple(np.concatenate([a, np.repeat(a[-1:], short, axis=0)]) for a in arrays)
        return arrays if isinstance(batch, tuple) else arrays[0]


def tf_dataset(batches):
    """(dataset, callback): the (images, labels) batches of a PyDataset whose
    batches may be read in any order (ArrayBatches) as a tf.data pipeline, and the
    Keras callback that moves it to the next epoch's order. `make bench` times it
    beside Keras' adapter; training does not use it yet: with `steps_per_epoch`
    set, Keras keeps one iterator across epochs, so epoch order would have to be
    indexed by (epoch, step) rather than moved by a callback.

    Keras feeds a PyDataset to TensorFlow through `tf.data.Dataset.from_generator`,
    one Python thread handing over one batch at a time: about 4-5k images/s on
    the 2-core machine of experiments/perf/perf_log.md ("feed"), far below a
    GPU's step rate. Here tf.data runs the reads itself, several batches in
    parallel and in order (`deterministic`), with the same batches in the same
    order; the GIL is released while NumPy copies the rows.
    """
    import tensorflow as tf

    size = batches[0][0].shape[1:]

    def read(i):
        x, y = batches[int(i)]
        return x, y

    def load(i):
        x, y = tf.numpy_function(read, [i], [tf.uint8, tf.int32], stateful=True)
        x.set_shape((None, *size))
        y.set_shape((None,))
        return x, y

    ds = tf.data.Dataset.range(len(batches)).map(
        load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE), EpochHooks(batches)


class EpochHooks(keras.callbacks.Callback):
    """Calls a dataset's epoch hooks from `fit` (which calls them itself only for
    a PyDataset it is given)."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        if hasattr(self.batches, "on_epoch_begin"):
            self.batches.on_epoch_begin()

    def on_epoch_end(self, epoch, logs=None):
        if hasattr(self.batches, "on_epoch_end"):
            self.batches.on_epoch_end()
