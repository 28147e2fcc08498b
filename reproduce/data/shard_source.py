"""Reading pre-resized JPEG shards (the GPU feed for ImageNet): the half of
`reproduce.data.shards` that the package's `load_split` uses.

`shard_dataset` reads a split back with tf.data (parallel interleaved reads,
parallel decode, no resize); `load_split` gives a large training split as a
`ShardStream` read every epoch and decodes small splits, and the validation
split, once into the uint8 cache (`_build`). The writer and its command line
(`python -m reproduce.data.shards`) read their input through the package, so
they live above it in `reproduce.data.shards`; the layout of a shards folder is
described there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from reproduce.data import cache as cache_lib
from reproduce.data.common import DataError, resolve_split, subsample_indices
from reproduce.data.tfds_source import SHUFFLE_BUFFER, Stream, tensorflow_for_data, want_stream
from reproduce.sources import SHARDS_MANIFEST, local_identity

MANIFEST = SHARDS_MANIFEST


def read_manifest(folder) -> dict:
    p = Path(folder) / MANIFEST
    try:
        with open(p) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(
            f"{p} cannot be read ({e}); write the shards again with "
            f"`python -m reproduce.data.shards SOURCE {folder} --size S`"
        ) from None


def _counts(folder, entry: dict) -> list:
    """Records per file of a split (counted where the manifest predates `counts`)."""
    if "counts" in entry:
        return [int(c) for c in entry["counts"]]
    tf = tensorflow_for_data()
    return [int(tf.data.TFRecordDataset(str(Path(folder) / f)).reduce(0, lambda a, _: a + 1)) for f in entry["files"]]


def shard_dataset(
    folder,
    split: str,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    drop_remainder: bool = False,
    threads: int | None = None,
    shuffle_buffer: int = SHUFFLE_BUFFER,
    max_n: int = 0,
    process: tuple = (1, 0),
):
    """One epoch of `split` as a tf.data.Dataset of (uint8 (B,S,S,3), int32 (B,)),
    order fixed by (seed, epoch). `threads`: tf.data's thread pool (None: all
    cores), to measure the rate per core. max_n: only the records
    `common.subsample_indices(n, max_n)` picks (data.max_train / max_val).
    process=(P, p): only every P-th record from the p-th of that order, decoded
    (one process's share; `batches.StreamBatches.for_process`)."""
    tf = tensorflow_for_data()
    m = read_manifest(folder)
    if split not in m["splits"]:
        raise DataError(f"split {split!r} is not in {Path(folder) / MANIFEST}; it has {', '.join(m['splits'])}")
    size = int(m["size"])
    entry = m["splits"][split]
    files = [str(Path(folder) / f) for f in entry["files"]]
    # Each file's first record's index in the split, to keep a subset by index.
    n = int(entry["n"])
    subset = bool(max_n) and max_n < n
    starts = np.cumsum([0] + _counts(folder, entry)[:-1]) if subset else np.zeros(len(files), np.int64)
    es = int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0] & 0x7FFFFFFF)
    order = np.random.default_rng(es).permutation(len(files)) if shuffle else np.arange(len(files))
    if subset:
        kept = np.zeros(n, bool)
        kept[subsample_indices(n, max_n)] = True
        kept = tf.constant(kept)

    def records(file, start):
        ds = tf.data.TFRecordDataset(file)
        if not subset:
            return ds
        return ds.enumerate(start).filter(lambda i, _: tf.gather(kept, i)).map(lambda _, r: r)

    ds = tf.data.Dataset.from_tensor_slices(
        ([files[i] for i in order], np.asarray(starts, np.int64)[order])
    ).interleave(
        # Unshuffled: one file after another, the order written.
        records,
        cycle_length=(min(16, len(files)) or 1) if shuffle else 1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if shuffle:  # the small encoded records, before decoding
        ds = ds.shuffle(shuffle_buffer, seed=es, reshuffle_each_iteration=False)
    if process[0] > 1:  # after the shuffle, which is the same in every process
        ds = ds.shard(int(process[0]), int(process[1]))
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}

    def decode(record):
        ex = tf.io.parse_single_example(record, spec)
        img = tf.io.decode_jpeg(ex["image"], channels=3)
        img.set_shape((size, size, 3))
        return img, tf.cast(ex["label"], tf.int32)

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    if threads:
        opts = tf.data.Options()
        opts.threading.private_threadpool_size = int(threads)
        opts.threading.max_intra_op_parallelism = 1
        ds = ds.with_options(opts)
    return ds


class ShardStream(Stream):
    """A split of a shards folder read on the fly through tf.data (`shard_dataset`):
    uint8 SxS batches, shuffled by (seed, epoch); otherwise what a TFDS `Stream`
    is (`batches`, `num_batches`, the statistics from a sample)."""

    def __init__(
        self, source: str, folder: Path, split: str, requested: str, max_n: int, size: int, n: int, class_names
    ):
        self.source, self.folder = source, str(folder)
        self.name = Path(folder).name
        self.cache_name = "shards_" + self.name
        self.split, self.split_requested, self.max_n = split, requested, max_n
        self.class_names = list(class_names)
        self.image_size = size
        self.num_examples = n

    def identity(self) -> dict:
        return {"kind": "shards", "data_id": local_identity(self.folder), "split": self.split}

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
        return shard_dataset(
            self.folder,
            self.split,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            epoch=epoch,
            drop_remainder=drop_remainder,
            shuffle_buffer=shuffle_buffer,
            max_n=self.max_n,
            process=process,
        )


def load_split(source: str, split: str, max_n: int, size: int, root: Path, stream_ok: bool = True):
    """A split of the shards folder `source`: ImageArrays (decoded once into the
    cache) or, if `stream_ok` and the split is large, a ShardStream."""
    folder = Path(source).expanduser().absolute()
    m = read_manifest(folder)
    where = f"the shards in {folder}"
    resolved = resolve_split(split, list(m["splits"]), where)
    if int(m["size"]) != size:
        raise DataError(
            f"{where} hold {m['size']}x{m['size']} images, but data.image_size={size}: set "
            f"data.image_size={m['size']} (with data.crop_size at most that), or write shards "
            f"at S={size} (python -m reproduce.data.shards SOURCE OUT --size {size})."
        )
    n = len(subsample_indices(int(m["splits"][resolved]["n"]), max_n))
    if want_stream(n, stream_ok):
        return ShardStream(source, folder, resolved, split, max_n, size, n, m["class_names"])
    ident = {"kind": "shards", "data_id": local_identity(str(folder)), "split": resolved}
    final = cache_lib.entry_path(root, "shards_" + folder.name, split, size, max_n, ident)
    if not cache_lib.usable(final):
        _build(folder, m, resolved, split, max_n, final, source, ident)
    return cache_lib.open_entry(final, source)


def _build(
    folder: Path, m: dict, split: str, requested: str, max_n: int, final: Path, source: str, ident: dict
) -> None:
    """Decode a split's records, in the order written, into a new cache entry."""
    t0 = time.perf_counter()
    tf = tensorflow_for_data()
    total = int(m["splits"][split]["n"])
    n, size = len(subsample_indices(total, max_n)), int(m["size"])
    builder = cache_lib.EntryBuilder(final)
    try:
        images = np.load(builder.allocate(n, size), mmap_mode="r+")
        labels = np.empty(n, np.int32)
        done = 0
        for x, y in shard_dataset(folder, split, 256, shuffle=False, max_n=max_n).as_numpy_iterator():
            if done + len(x) > n:
                break
            images[done : done + len(x)], labels[done : done + len(x)] = x, y
            done += len(x)
        images.flush()
        del images
        if done != n:
            raise DataError(
                f"the shards of split {split!r} in {folder} hold another number of "
                f"records than {folder / MANIFEST} says ({total}): some were changed "
                "or lost. Write the shards again."
            )
    except tf.errors.OpError as e:
        builder.abort()
        raise DataError(
            f"cannot read the shards of split {split!r} in {folder} "
            f"({type(e).__name__}: {str(e.message).splitlines()[0]}). Write the "
            "shards again."
        ) from None
    except BaseException:
        builder.abort()
        raise
    builder.commit(
        labels,
        [],
        {
            "source": source,
            "where": str(folder),
            "identity": ident,
            "split_requested": requested,
            "split": split,
            "class_names": list(m["class_names"]),
            "n_listed": total,
            "max": max_n,
            "skipped": [],
            "skipped_names": [],
            "build_seconds": round(time.perf_counter() - t0, 2),
        },
    )
