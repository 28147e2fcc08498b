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
  shards   the ImageNet feed (reproduce.data.shards): --shard-images training
           images resized to S (each of --shard-sizes), written once as JPEG
           TFRecord shards, then read back through tf.data (parallel read and
           decode) on one core (the rate per core) and on all cores; the line
           after the table says how many cores a GPU training --gpu-rate
           images/s needs at that rate (reproduce.data.shards.feed_shortfall),
           beside the decode rate per core of the first build (Pillow, from
           the archive: what feeding from the source costs per image).
           Stand-in data: the Imagenette archive (the same decode work per
           image at the same S as ImageNet shards).
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


def bench_shards(train, sizes, n, tmp, batch=128, seconds=10.0):
    """[(S, threads, images, seconds)]: shards of n images of `train`, resized to
    each S, read back with 1 tf.data thread and with all cores."""
    from PIL import Image

    from reproduce.data import shard_source, shards

    out = []
    n = min(n, len(train))
    for size in sizes:
        folder = Path(tmp) / f"shards{size}"

        def resized(size=size):
            for i in range(0, n, 64):
                imgs = [
                    np.asarray(Image.fromarray(np.asarray(im)).resize((size, size), Image.BILINEAR))
                    for im in train.images[i : min(i + 64, n)]
                ]
                yield np.stack(imgs), train.labels[i : i + len(imgs)]

        entry = shards.write_split(folder, "train", resized(), per_shard=128)
        shards.write_manifest(folder, size, train.class_names, {"train": entry})
        for threads in (1, os.cpu_count() or 1):
            total, t0 = 0, None
            while t0 is None or time.perf_counter() - t0 < seconds:
                ds = shard_source.shard_dataset(folder, "train", batch, shuffle=True, threads=threads)
                for x, _ in ds.as_numpy_iterator():
                    if t0 is None:  # the first batch starts the pipeline
                        t0 = time.perf_counter()
                        continue
                    total += len(x)
            out.append((size, threads, total, time.perf_counter() - t0))
    return out


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
        "--gpu-rate",
        type=float,
        default=45_000,
        help="images/s the GPU trains at (the paper's net at batch 512 on an H200: the target)",
    )
    ap.add_argument("--only-shards", action="store_true", help="measure only the shard feed")
    args = ap.parse_args(argv)

    import keras

    import reproduce.data as data
    from reproduce.config import DataConfig
    from reproduce.data import decode

    rows = []
    per_core: dict = {}
    decode_per_core: dict = {}  # source -> (S, images/s per decode worker)

    def row(source, stage, n, sec, note=""):
        rows.append((source, stage, n, sec, n / sec if sec > 0 else float("nan"), note))
        print(
            f"  {source:28s} {stage:8s} {n:8d} img {sec:8.2f} s {n / sec:10.0f} img/s {note}",
            file=sys.stderr,
            flush=True,
        )

    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        sources = [("synthetic", 256, 227, "val", None)]
        d = find_data_dir(args.data)
        for name, s, c, val in ARCHIVES:
            if d is not None and (d / name).is_file():
                sources.append((name, s, c, val, d / name))
        if len(sources) == 1:
            print("(no archives found: pass --data or set DATA_DIR)", file=sys.stderr)
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
            sizes = [int(v) for v in args.shard_sizes.split(",") if v.strip()]
            if "imagenette" in name and sizes:
                for size, threads, n, dt in bench_shards(
                    train, sizes, args.shard_images, tmp, args.batch, args.shard_seconds
                ):
                    row(
                        name,
                        "shards",
                        n,
                        dt,
                        f"S={size} JPEG, {threads} thread(s)" + (" (per core)" if threads == 1 else ""),
                    )
                    if threads == 1:
                        per_core[size] = n / dt
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

    dev = "cpu"
    try:
        import jax

        dev = str(jax.devices()[0]) if keras.backend.backend() == "jax" else dev
    except Exception:
        pass
    print(f"\nData pipeline throughput ({os.cpu_count()} CPUs, Keras {keras.backend.backend()}, augment on {dev})\n")
    print("| source | stage | images | seconds | images/s | notes |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for source, stage, n, sec, ips, note in rows:
        print(f"| {source} | {stage} | {n} | {sec:.2f} | {ips:,.0f} | {note} |")
    if per_core:
        from reproduce.data.shards import feed_shortfall

        print(f"\nImageNet feed (pre-resized JPEG shards), per core, vs a GPU at {args.gpu_rate:,.0f} img/s:")
        for size, rate in sorted(per_core.items()):
            need = int(np.ceil(args.gpu_rate / rate))
            print(
                f"  S={size}: {rate:,.0f} img/s per core; {need} cores to feed the GPU. "
                + (feed_shortfall(16, rate, args.gpu_rate) or "16 cores keep up.")
            )
        for source, (size, rate) in sorted(decode_per_core.items()):
            print(f"  decoding {source} (S={size}, Pillow, first build): {rate:,.0f} img/s per core")


if __name__ == "__main__":
    main()
