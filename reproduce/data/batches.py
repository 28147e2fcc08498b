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
import threading
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np

from reproduce.data.common import ImageArrays


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of one epoch: a function of (seed, epoch) only."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


# Keras moves a PyDataset to its next epoch once before `fit`'s first epoch
# (EpochIterator.reset calls on_epoch_end), so `fit`'s epoch e of a run whose
# batches start at epoch e0 has always read the batches' epoch e0 + (e - e0) + 1.
# A feed that sets its epoch itself (`tf_dataset`, `step_feed`) adds it, so a
# seed's batches are those of every run trained before.
FIT_EPOCH_OFFSET = 1


class ArrayBatches(keras.utils.PyDataset):
    """(uint8 images, int32 labels) batches from (memory-mapped) arrays.

    ArrayBatches(images, labels=None, batch_size=128, shuffle=True, seed=0, epoch=0,
                 drop_remainder=False, workers=4, use_multiprocessing=False,
                 max_queue_size=8, steps_per_epoch=0)

    `images` may also be an ImageArrays (its labels are used). With labels=None
    the batches are `(images,)` (for `predict`). With shuffle, pass p over the
    data visits the examples in `epoch_permutation(N, seed, p)` order. Keras calls
    `on_epoch_end` after each epoch, which advances the epoch; a resumed run
    passes `epoch=` (or calls `set_epoch`) to continue the same sequence. The
    indices inside a batch are sorted, so a batch is read from the memmap front to
    back (the augmentation draws are independent of position, so this changes
    nothing statistically).

    Batches are indexed by (epoch, step) (`indices_at`): step i of epoch e is
    batch g % P of pass g // P, with g = e * len(self) + i and P the batches of
    one pass. `steps_per_epoch` (0: one pass) shortens the epoch to that many
    steps (at most P), each epoch going on where the previous one stopped. So
    the batches never depend on how Keras iterates: give `fit` no
    steps_per_epoch (with one, Keras keeps its iterator across epochs, and
    batches read ahead under one epoch would be used in the next).

    Thread workers (the default, 4) overlap page-cache misses of a cold cache with
    training; NumPy fancy indexing releases the GIL while it copies.
    """

    def __init__(
        self,
        images,
        labels=None,
        batch_size: int = 128,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        drop_remainder: bool = False,
        workers: int = 4,
        use_multiprocessing: bool = False,
        max_queue_size: int = 8,
        steps_per_epoch: int = 0,
    ):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        if isinstance(images, ImageArrays):
            labels = images.labels if labels is None else labels
            images = images.images
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if steps_per_epoch < 0:
            raise ValueError(f"steps_per_epoch must be >= 0 (0: one pass over the data), got {steps_per_epoch}")
        self.images = images
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int32)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_remainder = bool(drop_remainder)
        self.n = int(len(images))
        f = math.floor if self.drop_remainder else math.ceil
        self.pass_batches = int(f(self.n / self.batch_size))
        self.steps_per_epoch = int(steps_per_epoch)
        self._orders: dict = {}  # pass -> permutation: the last two (an epoch may span two)
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return min(self.steps_per_epoch or self.pass_batches, self.pass_batches)

    def _order(self, p: int) -> np.ndarray:
        order = self._orders.get(p)
        if order is None:
            order = epoch_permutation(self.n, self.seed, p)
            # Worker threads may add concurrently: a lost entry is only recomputed.
            self._orders = {**{k: v for k, v in self._orders.items() if k >= p - 1}, p: order}
        return order

    def indices_at(self, epoch: int, i: int) -> np.ndarray:
        """The examples of step i of `epoch` (ascending), whatever the current epoch."""
        if i < 0 or i >= len(self):
            raise IndexError(f"batch {i} of {len(self)}")
        g = int(epoch) * len(self) + i
        p, b = divmod(g, self.pass_batches)
        lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, self.n)
        if not self.shuffle:
            return np.arange(lo, hi)
        return np.sort(self._order(p)[lo:hi])

    def batch_indices(self, i: int) -> np.ndarray:
        return self.indices_at(self.epoch, i)

    def batch_at(self, epoch: int, i: int):
        """The batch of step i of `epoch`, whatever the current epoch."""
        return self.rows(self.indices_at(epoch, i))

    def __getitem__(self, i: int):
        return self.batch_at(self.epoch, i)

    def rows(self, idx: np.ndarray):
        """The batch of the examples `idx` (ascending), read from the arrays: a
        part of a batch for a process that feeds only its share of it."""
        idx = np.asarray(idx)
        if len(idx) and idx[-1] - idx[0] + 1 == len(idx):  # contiguous: a plain slice copy
            x = np.array(self.images[idx[0] : idx[-1] + 1], dtype=np.uint8)
        else:
            x = np.asarray(self.images[idx], dtype=np.uint8)
        if self.labels is None:
            return (x,)
        return x, self.labels[idx]

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)


class StreamBatches(keras.utils.PyDataset):
    """A `Stream` as a keras PyDataset: batches are read in order from tf.data.

    Same arguments as ArrayBatches (no workers: tf.data parallelises the decode).
    `__getitem__` ignores its index and returns the next batch, so pass
    `shuffle=False` to `model.fit` (the stream shuffles by (seed, epoch) itself).
    A new epoch's pipeline starts at `on_epoch_begin`.

    `process=(P, p)`: the share of process p of P of every global batch of
    `batch_size` (`for_process`, JAX's multi-process data parallelism).

    `steps_per_epoch` (0: the whole stream): each epoch is the first that many
    batches of the stream's epoch, as `stream_tf_dataset` gives `fit` on
    TensorFlow. It is the PyDataset's own length, so give `fit` no
    steps_per_epoch: Keras then starts every epoch with a fresh iterator instead
    of carrying the rest of one epoch's batches into the next.
    """

    def __init__(
        self,
        stream,
        batch_size: int = 128,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        drop_remainder: bool = False,
        process: tuple = (1, 0),
        steps_per_epoch: int = 0,
    ):
        super().__init__(workers=1, use_multiprocessing=False)
        self.stream = stream
        self.batch_size = int(batch_size)
        self.shuffle, self.seed, self.epoch = bool(shuffle), int(seed), int(epoch)
        self.drop_remainder = bool(drop_remainder)
        self.process = (int(process[0]), int(process[1]))
        self.steps_per_epoch = int(steps_per_epoch or 0)
        if self.steps_per_epoch < 0:
            raise ValueError(f"steps_per_epoch must be >= 0 (0: the whole stream), got {steps_per_epoch!r}")
        num, index = self.process
        if num > 1 and (not self.drop_remainder or self.batch_size % num or not 0 <= index < num):
            raise ValueError(
                f"process {index} of {num} reads 1/{num} of every global batch of "
                f"{self.batch_size}: it needs drop_remainder=True and a batch size that "
                f"{num} divides"
            )
        self._it = None

    def for_process(self, num_processes: int, process_index: int) -> StreamBatches:
        """The same batches as read by process `process_index` of `num_processes`:
        each reads and decodes only its 1/P of the records. The stream is sharded
        record by record after its seeded shuffle (the same order in every
        process), so global batch i holds exactly the images of this stream's
        batch i, in another row order; every process has `len(self)` batches."""
        return StreamBatches(
            self.stream,
            self.batch_size,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=self.epoch,
            drop_remainder=self.drop_remainder,
            process=(num_processes, process_index),
            steps_per_epoch=self.steps_per_epoch,
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._it = None

    def __len__(self) -> int:
        n = self.stream.num_batches(self.batch_size, self.drop_remainder)
        return min(n, self.steps_per_epoch) if self.steps_per_epoch else n

    def __getitem__(self, i: int):
        if self._it is None:
            num, index = self.process
            kwargs = {"process": self.process} if num > 1 else {}
            ds = self.stream.dataset(
                self.batch_size // num,
                shuffle=self.shuffle,
                seed=self.seed,
                epoch=self.epoch,
                drop_remainder=self.drop_remainder,
                **kwargs,
            )
            # A process's share can hold one batch more than the global count,
            # and steps_per_epoch can end the epoch early.
            ds = ds.take(len(self))
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
    """(dataset, callback): one epoch of the (images, labels) batches of a
    PyDataset as a tf.data pipeline, for `fit` on TensorFlow, and the Keras
    callback that moves it from epoch to epoch.

    Keras feeds a PyDataset to TensorFlow through `tf.data.Dataset.from_generator`,
    one Python thread handing over one batch at a time: about 4-5k images/s on
    the 2-core machine of experiments/perf/perf_log.md ("feed"), far below a
    GPU's step rate. Here tf.data runs the reads itself, several batches in
    parallel and in order (`deterministic`); the GIL is released while NumPy
    copies the rows.

    Batches indexed by (epoch, step) (ArrayBatches) give the same batches, step
    for step, as `fit` reads from the PyDataset itself: at `fit`'s epoch e the
    callback sets the batches' epoch to e + FIT_EPOCH_OFFSET, as Keras' adapter
    would have moved it. Give `fit` no steps_per_epoch (the batches' length is
    the epoch, `ArrayBatches(steps_per_epoch=)`): Keras then makes a new iterator
    at each epoch, after the callback, so no batch is read ahead under another
    epoch. Other PyDatasets are read by index, the same every epoch.
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

    ds = tf.data.Dataset.range(len(batches)).map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE), FeedEpoch(batches)


def stream_tf_dataset(stream, batch_size: int, seed: int, first_epoch: int, last_epoch: int, steps_per_epoch: int = 0):
    """(dataset, callback, steps): the shuffled training batches of a `Stream`
    (drop_remainder) for `fit`'s epochs first_epoch .. last_epoch - 1 as one
    tf.data pipeline, for `fit` on TensorFlow, the callback that moves it from
    epoch to epoch, and the steps of each epoch.

    Through `StreamBatches` Keras hands the batches over from one Python thread
    (`tf_dataset` says what that costs); here `fit` reads the stream's own
    tf.data pipelines. At `fit`'s epoch e they are the stream's epoch
    e + FIT_EPOCH_OFFSET, what `StreamBatches` gives `fit` there, batch for
    batch (the first `steps_per_epoch` of them, if given). One pipeline per
    epoch is built here; a new iterator at each epoch (Keras makes one when
    `fit` has no steps_per_epoch) reads the one the callback chose, so
    `train.steps_per_execution` cannot carry batches from one epoch to the next.
    """
    import tensorflow as tf

    steps = stream.num_batches(batch_size, drop_remainder=True)
    if steps_per_epoch:
        steps = min(steps, int(steps_per_epoch))
    epochs = range(first_epoch + FIT_EPOCH_OFFSET, max(first_epoch + 1, last_epoch) + FIT_EPOCH_OFFSET)
    per_epoch = [stream.dataset(batch_size, shuffle=True, seed=seed, epoch=e, drop_remainder=True) for e in epochs]
    # The epoch to read is host state, read by the pipeline on the host: not a
    # tf.Variable, which the trainer's tf.distribute scope would make a
    # per-device variable that the input pipeline then reads across devices.
    chosen = np.zeros((), np.int64)

    def read_choice(_):
        return tf.ensure_shape(tf.numpy_function(chosen.copy, [], tf.int64, stateful=True), [])

    choice = tf.data.Dataset.range(steps).map(read_choice)
    # Keras learns the epoch's length; a stream shorter than it says fails, not silently.
    ds = tf.data.Dataset.choose_from_datasets(per_epoch, choice).apply(tf.data.experimental.assert_cardinality(steps))
    return ds.prefetch(tf.data.AUTOTUNE), StreamEpoch(chosen, first_epoch), steps


class StreamEpoch(keras.callbacks.Callback):
    """Chooses the epoch `stream_tf_dataset`'s next iterator reads."""

    def __init__(self, chosen, first_epoch: int):
        super().__init__()
        self.chosen, self.first_epoch = chosen, int(first_epoch)

    def on_epoch_begin(self, epoch, logs=None):
        self.chosen[...] = int(epoch) - self.first_epoch


class FeedEpoch(keras.callbacks.Callback):
    """Sets a feed's batches to the epoch `fit` reads them at (`tf_dataset`,
    `step_feed`)."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(epoch + FIT_EPOCH_OFFSET)


class StepFeed(keras.utils.PyDataset):
    """The training batches for `fit` without tf.data (JAX): step i of the epoch
    set by `set_epoch` is `inner.batch_at(epoch, i)`, whatever Keras reads ahead.

    Keras' adapter reads a PyDataset of several workers ahead through its
    enqueuer, and what was read but not taken stays queued for the next epoch:
    the batch `fit` reads to build the model leaves a handful of batches read
    under the previous epoch's order (their number depends on thread timing) at
    the head of every epoch, so two runs can train on different batch orders.
    Here Keras gets no enqueuer (one worker: it calls `__getitem__` in its own
    thread, in step order, with a new iterator each epoch), and the read-ahead is
    this feed's own: futures keyed by (epoch, step), each a pure function of its
    key, so a read-ahead that guessed wrong is a miss, never another batch. The
    epoch changes only through `set_epoch` (the callback `step_feed` returns),
    not through Keras' epoch hooks.

    `inner` needs `batch_at(epoch, i)` and a length (ArrayBatches, or
    `distribute.process_batches` of one); `threads` read up to `ahead` batches
    ahead, the next epoch's first ones at an epoch's end.
    """

    def __init__(self, inner, epoch: int = 0, threads: int = 4, ahead: int = 8):
        super().__init__(workers=1, use_multiprocessing=False)
        if threads < 1 or ahead < 0:
            raise ValueError(f"StepFeed needs threads >= 1 and ahead >= 0, got threads={threads} ahead={ahead}")
        self.inner, self.threads, self.ahead = inner, int(threads), int(ahead)
        self.batch_size = getattr(inner, "batch_size", None)
        self.epoch = int(epoch)
        self._lock = threading.Lock()
        self._pool = None
        self._pending: dict = {}  # (epoch, step) -> Future of that batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def _after(self, key) -> list:
        """The `ahead` (epoch, step) keys that follow `key`."""
        n = len(self)
        g = key[0] * n + key[1]
        return [divmod(g + k, n) for k in range(1, self.ahead + 1)]

    def __getitem__(self, i: int):
        n = len(self)
        if i < 0 or i >= n:
            raise IndexError(f"batch {i} of {n}")
        key = (self.epoch, int(i))
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="step-feed")
            fut = self._pending.pop(key, None) or self._pool.submit(self.inner.batch_at, *key)
            window = self._after(key)
            for k in [k for k in self._pending if k not in window]:
                self._pending.pop(k).cancel()
            for k in window:
                if k not in self._pending:
                    self._pending[k] = self._pool.submit(self.inner.batch_at, *k)
        return fut.result()

    def close(self) -> None:
        """Stops the read-ahead threads (reading again starts them anew)."""
        with self._lock:
            pool, self._pool = self._pool, None
            for f in self._pending.values():
                f.cancel()
            self._pending = {}
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def step_feed(batches, first_epoch: int = 0, threads: int = 4):
    """(feed, callback): `batches` (indexed by (epoch, step)) as a `StepFeed` for
    `fit`, and the callback that sets its epoch: at `fit`'s epoch e, the batches'
    epoch e + FIT_EPOCH_OFFSET, exactly what `tf_dataset` reads on TensorFlow.
    `first_epoch`: fit's initial_epoch (the feed starts there, so the batch Keras
    reads to build the model is the first one it trains on)."""
    feed = StepFeed(batches, first_epoch + FIT_EPOCH_OFFSET, threads=threads)
    return feed, FeedEpoch(feed)
