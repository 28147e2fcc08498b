"""Data pipeline throughput on this machine: a benchmark, not a test.

    KERAS_BACKEND=jax python scripts/bench_data.py [--data DIR] [--max N] [--batch 128]

For each source it prints images/s of:
  decode   first load: archive -> decoded uint8 SxS cache (parallel workers), into a
           fresh temporary cache (so it is always measured), or synthetic generation
  read     one shuffled epoch of cached batches through ArrayBatches (memmap ->
           uint8 batches; the page cache is warm right after the build)
  feed     the training feed as `fit` reads it on TensorFlow: Keras' adapter of
           the PyDataset (`from_generator`, one Python thread; the "keras" row)
           and the tf.data feed the trainer uses there (`tf_dataset`, parallel
           reads; the "tf.data" row); the same batches, consumed as tensors
  augment  Augment(training=True) (mean, random crops + flips, PCA colour) on one
           uint8 batch, compiled (jax.jit / tf.function(jit_compile=True)), on the
           default Keras device
  shards   the ImageNet feed (reproduce.data.shards): --shard-images images at S
           (each of --shard-sizes), written once as JPEG TFRecord shards, then
           read back through tf.data (parallel read and decode) on one core (the
           rate per core) and on all cores. Stand-in data (--shard-source): the
           Imagenette archive's training images resized to S when it is found,
           else generated smooth synthetic images (no archive needed); the rows
           name the source and the mean JPEG size, which sets the decode work.
           After the table: this machine's cores at that rate against a GPU
           training --gpu-rate images/s (reproduce.data.shards.feed_shortfall),
           and, labelled as a projection, 16 cores of an H200 machine at this
           machine's rate per core; beside the decode rate per core of the first
           build (Pillow, from the archive: what feeding from the source costs).
           The rates per core are recorded for this machine in the cache root
           (reproduce.data.shards.FEED_RATES; --no-record: not), where the suite
           planner compares them with its calibrated training rate.
Sources: synthetic, and the ImageFolder archives cifar10-jpeg.tar.xz (S=32/C=24)
and imagenette-144-webp.tar.xz (S=144/C=128) found in --data, $DATA_DIR or ./data.
Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ARCHIVES = (  # file, S, C, validation split
    ("cifar10-jpeg.tar.xz", 32, 24, "test"),
    ("imagenette-144-webp.tar.xz", 144, 128, "val"),
)
SHARD_ARCHIVE = "imagenette-144-webp.tar.xz"  # the shards' stand-in photos
H200_CORES = 16  # the host cores of the H200 machine this project is lent


def find_data_dir(arg):
    for d in (arg, os.environ.get("DATA_DIR"), ROOT / "data"):
        if d and Path(d).is_dir():
            return Path(d)
        if d and Path(d).is_file():  # DATA_DIR may name one archive
            return Path(d).parent
    return None


def bench_read(arrays, batch, seconds=20.0):
    from reproduce.data import ArrayBatches

    b = ArrayBatches(arrays.images, arrays.labels, batch, shuffle=True, seed=0)
    t0, n = time.perf_counter(), 0
    for i in range(len(b)):
        x, _ = b[i]
        n += len(x)
        if time.perf_counter() - t0 > seconds:
            break
    return n, time.perf_counter() - t0


def bench_feed(arrays, batch, seconds=10.0):
    """[(feed, images, seconds)]: shuffled training batches through Keras' adapter
    of the PyDataset and through tf_dataset, each consumed as TensorFlow tensors
    for about `seconds`."""
    import tensorflow as tf
    from keras.src.trainers.data_adapters import get_data_adapter  # as fit makes it

    from reproduce.data import ArrayBatches, tf_dataset

    def batches():
        return ArrayBatches(arrays.images, arrays.labels, batch, shuffle=True, seed=0, drop_remainder=True)

    out = []
    for feed in ("keras", "tf.data"):
        total, t0, epoch = 0, None, 0
        while t0 is None or time.perf_counter() - t0 < seconds:
            b = batches()
            b.set_epoch(epoch)
            adapter = get_data_adapter(b, shuffle=False) if feed == "keras" else None
            ds = adapter.get_tf_dataset() if adapter else tf_dataset(b)[0]
            for x, _ in ds:
                tf.reduce_max(x[:1, :1])  # the batch is there as a tensor
                if t0 is None:  # the first batch starts the pipeline
                    t0 = time.perf_counter()
                    continue
                total += int(x.shape[0])
                if time.perf_counter() - t0 > seconds:
                    break
            if adapter:
                adapter.on_epoch_end()  # stops its reader threads
            epoch += 1
        out.append((feed, total, time.perf_counter() - t0))
    return out


def bench_augment(stats, s, c, batch, reps=20):
    import keras

    from reproduce.augment import Augment

    layer = Augment(
        c, mean_image=stats.mean_image, pca_eigvals=stats.pca_eigvals, pca_eigvecs=stats.pca_eigvecs, seed=0
    )
    x = np.random.default_rng(0).integers(0, 256, (batch, s, s, 3), dtype=np.uint8)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        tv = [v.value for v in layer.trainable_variables]
        ntv = [v.value for v in layer.non_trainable_variables]

        @jax.jit
        def step(ntv, x):
            y, ntv = layer.stateless_call(tv, ntv, x, training=True)
            return y, ntv

        xd = jax.device_put(x)
        y, ntv = step(ntv, xd)
        y.block_until_ready()
        t0 = time.perf_counter()
        for _ in range(reps):
            y, ntv = step(ntv, xd)
        y.block_until_ready()
    elif backend == "tensorflow":
        import tensorflow as tf

        step = tf.function(lambda x: layer(x, training=True), jit_compile=True)
        xd = tf.constant(x)
        step(xd).numpy()
        t0 = time.perf_counter()
        for _ in range(reps):
            y = step(xd)
        y.numpy()
    else:
        return None
    return reps * batch, time.perf_counter() - t0


def smooth_images(n, size, seed=0):
    """(uint8 (n, size, size, 3), int labels): generated stand-ins for photos,
    smooth colour fields with a little grain, so their JPEGs are of the order of
    photos' rather than noise's (which would not compress)."""
    from PIL import Image

    rng = np.random.default_rng([seed, size])
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
        field = np.asarray(coarse.resize((size, size), Image.BICUBIC), np.float32)
        out[i] = np.clip(field + rng.normal(0, 6, field.shape), 0, 255).astype(np.uint8)
    return out, np.arange(n) % 10


def resized_images(train, n):
    """`images_at(size, lo, hi)` for bench_shards: `train`'s images lo..hi resized to size."""
    from PIL import Image

    def images_at(size, lo, hi):
        imgs = [
            np.asarray(Image.fromarray(np.asarray(im)).resize((size, size), Image.BILINEAR))
            for im in train.images[lo:hi]
        ]
        return np.stack(imgs), np.asarray(train.labels[lo:hi])

    return images_at


def generated_images(size, lo, hi):
    """`images_at(size, lo, hi)` for bench_shards: generated smooth images."""
    x, y = smooth_images(hi - lo, size, seed=lo)
    return x, y


def bench_shards(images_at, sizes, n, tmp, batch=128, seconds=10.0, threads=None):
    """[(S, threads, images, seconds, kB per JPEG)]: n images from
    `images_at(S, lo, hi)` written as shards at each S, read back with 1 tf.data
    thread and with all cores (`threads`: the counts to measure)."""
    from reproduce.data import shard_source, shards

    out = []
    for size in sizes:
        folder = Path(tmp) / f"shards{size}"
        chunks = (images_at(size, i, min(i + 64, n)) for i in range(0, n, 64))
        entry = shards.write_split(folder, "train", chunks, per_shard=128)
        shards.write_manifest(folder, size, [str(c) for c in range(10)], {"train": entry})
        kb = sum((folder / f).stat().st_size for f in entry["files"]) / max(1, entry["n"]) / 1e3
        for t in threads or (1, shards.feed_cores()):
            total, t0 = 0, None
            while t0 is None or time.perf_counter() - t0 < seconds:
                ds = shard_source.shard_dataset(folder, "train", batch, shuffle=True, threads=t)
                for x, _ in ds.as_numpy_iterator():
                    if t0 is None:  # the first batch starts the pipeline
                        t0 = time.perf_counter()
                        continue
                    total += len(x)
            out.append((size, t, total, time.perf_counter() - t0, kb))
    return out


def feed_lines(per_core, gpu_rate, cores, source):
    """The lines after the table: this machine's feed at its measured rate per
    core, and the projection to an H200 machine's 16 cores."""
    from reproduce.data.shards import feed_shortfall

    lines = [
        f"ImageNet feed (pre-resized JPEG shards; stand-in data: {source}), measured per core, "
        f"against a GPU at {gpu_rate:,.0f} img/s:"
    ]
    for size, (rate, kb) in sorted(per_core.items()):
        need = int(np.ceil(gpu_rate / rate))
        here = feed_shortfall(cores, rate, gpu_rate) or f"{cores} cores keep up."
        h200 = feed_shortfall(H200_CORES, rate, gpu_rate) or f"{H200_CORES} cores would keep up."
        lines += [
            f"  S={size}: {rate:,.0f} img/s per core ({kb:.1f} kB per JPEG); {need} cores at this rate feed the GPU.",
            f"    this machine ({cores} cores): {here}",
            f"    projection, not measured: an H200 machine's {H200_CORES} cores at this machine's rate "
            f"per core: {h200}",
        ]
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="folder holding the archives (default: $DATA_DIR, else ./data)")
    ap.add_argument("--max", type=int, default=0, help="use at most N images per split (0 = all)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument(
        "--shard-sizes", default="144,160,256", help="S of the ImageNet feed's shards to measure ('' for none)"
    )
    ap.add_argument("--shard-images", type=int, default=1024)
    ap.add_argument("--shard-seconds", type=float, default=8.0, help="seconds per shard measurement")
    ap.add_argument(
        "--shard-source",
        choices=("auto", "archive", "synthetic"),
        default="auto",
        help=f"the shards' images: {SHARD_ARCHIVE}'s (archive), generated ones (synthetic), or the "
        "archive's where it is found, else generated (auto)",
    )
    ap.add_argument(
        "--gpu-rate",
        type=float,
        default=45_000,
        help="images/s the GPU trains at (default: the paper's net at batch 512 on an H200, the target; "
        "not a measurement)",
    )
    ap.add_argument("--only-shards", action="store_true", help="measure only the shard feed")
    ap.add_argument("--no-record", action="store_true", help="do not record the rates per core for the planner")
    args = ap.parse_args(argv)

    import keras

    import reproduce.data as data
    from reproduce.config import DataConfig
    from reproduce.data import decode, shards

    rows = []
    per_core: dict = {}  # S -> (images/s on one core, kB per JPEG)
    decode_per_core: dict = {}  # source -> (S, images/s per decode worker)
    sizes = [int(v) for v in args.shard_sizes.split(",") if v.strip()]

    def row(source, stage, n, sec, note=""):
        rows.append((source, stage, n, sec, n / sec if sec > 0 else float("nan"), note))
        print(
            f"  {source:28s} {stage:8s} {n:8d} img {sec:8.2f} s {n / sec:10.0f} img/s {note}",
            file=sys.stderr,
            flush=True,
        )

    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        sources = [] if args.only_shards else [("synthetic", 256, 227, "val", None)]
        d = find_data_dir(args.data)
        for name, s, c, val in ARCHIVES:
            wanted = not args.only_shards or (name == SHARD_ARCHIVE and sizes and args.shard_source != "synthetic")
            if wanted and d is not None and (d / name).is_file():
                sources.append((name, s, c, val, d / name))
        if d is None or not any(path for *_, path in sources):
            print("(no archives found: pass --data or set DATA_DIR)", file=sys.stderr)
        shard_train = None  # the archive's training images, the shards' stand-in
        for name, s, c, val, path in sources:
            cfg = DataConfig(
                source="synthetic" if path is None else str(path),
                image_size=s,
                crop_size=c,
                val_split=val,
                cache_dir=tmp,
                max_train=args.max,
                max_val=args.max,
                synthetic_train=args.max or 2048,
                synthetic_val=256,
            )
            t0 = time.perf_counter()
            train = data.load_split(cfg, cfg.train_split)
            val_arrays = data.load_split(cfg, cfg.val_split)
            dt = time.perf_counter() - t0
            n = len(train) + len(val_arrays)
            note = "generate" if path is None else f"{decode.num_workers()} workers, S={s}"
            row(name, "decode", n, dt, note)
            if path is not None:
                decode_per_core[name] = (s, n / dt / decode.num_workers())
            if name == SHARD_ARCHIVE:
                shard_train = train
            if args.only_shards:
                continue
            stats = data.load_stats(cfg)
            n, dt = bench_read(train, args.batch)
            row(name, "read", n, dt, f"batch {args.batch}, memmap" if path else "in memory")
            try:
                feeds = bench_feed(train, args.batch)
            except ImportError:  # no TensorFlow (JAX alone): no tf.data feed to compare
                feeds = []
            for feed, n, dt in feeds:
                row(name, "feed", n, dt, f"{feed}, batch {args.batch}")
            r = bench_augment(stats, s, c, args.batch)
            if r:
                row(name, "augment", r[0], r[1], f"{s}->{c}, {keras.backend.backend()}")

        shard_source_name = ""
        if sizes:
            if args.shard_source == "archive" and shard_train is None:
                raise SystemExit(f"--shard-source archive: no {SHARD_ARCHIVE} found (pass --data)")
            if shard_train is not None and args.shard_source != "synthetic":
                n_shard = min(args.shard_images, len(shard_train))
                images_at, shard_source_name = resized_images(shard_train, n_shard), SHARD_ARCHIVE
            else:
                n_shard, images_at, shard_source_name = args.shard_images, generated_images, "synthetic JPEGs"
            for size, threads, n, dt, kb in bench_shards(
                images_at, sizes, n_shard, tmp, args.batch, args.shard_seconds
            ):
                note = f"S={size} JPEG ({kb:.1f} kB), {threads} thread(s)" + (" (per core)" if threads == 1 else "")
                row(shard_source_name, "shards", n, dt, note)
                if threads == 1:
                    per_core[size] = (n / dt, kb)

    dev = "cpu"
    try:
        import jax

        dev = str(jax.devices()[0]) if keras.backend.backend() == "jax" else dev
    except Exception:
        pass
    cores = shards.feed_cores()
    print(f"\nData pipeline throughput ({cores} CPUs, Keras {keras.backend.backend()}, augment on {dev})\n")
    print("| source | stage | images | seconds | images/s | notes |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for source, stage, n, sec, ips, note in rows:
        print(f"| {source} | {stage} | {n} | {sec:.2f} | {ips:,.0f} | {note} |")
    if per_core:
        print()
        print("\n".join(feed_lines(per_core, args.gpu_rate, cores, f"{shard_source_name}, {n_shard} images")))
        if not args.no_record:
            for size, (rate, kb) in per_core.items():
                where = shards.record_feed_rate(size, rate, f"{shard_source_name}, {kb:.1f} kB per JPEG")
            print(f"  (recorded for this machine in {where}: the suite planner compares them with its training rate)")
    for source, (size, rate) in sorted(decode_per_core.items()):
        print(f"  decoding {source} (S={size}, Pillow, first build): {rate:,.0f} img/s per core")


if __name__ == "__main__":
    main()
