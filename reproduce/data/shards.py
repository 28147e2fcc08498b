"""Pre-resized JPEG shards: the ImageNet feed for a GPU.

Streaming ImageNet (`reproduce.data.tfds_source.Stream`) decodes every full-size
JPEG and resizes it to S, every epoch: 400-670 images/s per core, so the 16 cores
of one GPU machine feed a fifth of the 45k images/s the GPU trains at. A uint8
cache at S=256 is ~250 GB, larger than such a machine's RAM and disk. `prepare`
does the §2 preprocessing (shorter side to S, central SxS crop) once and stores
each image as a JPEG of SxS (about 15-25 kB at S=256, ~25 GB for ImageNet) in
TFRecord shards; `shard_source.shard_dataset` reads them back with tf.data
(parallel interleaved reads, parallel decode, no resize). `scripts/bench_data.py`
measures its rate per core ("shards" rows) and records it for the machine it ran
on (`FEED_RATES` in the cache root); `feed_shortfall` says when a machine's cores
cannot keep its GPU busy, and the suite planner (`ablations.plan`) says so before
a suite trained from shards, from the recorded rate and its calibrated training
rate (`planned_feed_warning`).

Layout of a shards folder: `shards.json` (size, classes, splits with their files
and counts) and `<split>-NNNNN.tfrecord` files of examples {image: JPEG bytes,
label: int64}. JPEG re-encoding changes pixel values slightly (quality 95 by
default), so a run on shards is another dataset than the same images streamed:
its `data.source` is the folder, whose identity is the manifest and its files'
names and sizes (`reproduce.sources.local_identity`).

Written once, then trained from like any other source::

    python -m reproduce.data.shards tfds:imagenet2012 /data/imagenet-256 --size 256
    python -m reproduce train --preset imagenet --set data.source=/data/imagenet-256

`shard_source.load_split` (through `reproduce.data.load`): a large training
split (the threshold of TFDS streaming, `tfds_source.want_stream`) is a
`ShardStream`, read through tf.data every epoch; the validation split, and
small splits, are decoded once into the uint8 cache like any folder. data.image_size must be the
shards' S; data.max_train / max_val take the same fixed subset either way.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import socket
from pathlib import Path

import numpy as np

from reproduce import data as data_lib
from reproduce.config import DataConfig
from reproduce.data.shard_source import MANIFEST
from reproduce.data.tfds_source import tensorflow_for_data
from reproduce.files import cache_root
from reproduce.runs import atomic_write_json

PER_SHARD = 1024
QUALITY = 95
# This machine's measured rates of the shard feed per core (scripts/bench_data.py
# writes them, the planner reads them), in the cache root.
FEED_RATES = "feed_rates.json"


def feed_shortfall(cores: int, per_core_rate: float, step_rate: float) -> str | None:
    """A warning when `cores` host cores decoding `per_core_rate` images/s each
    cannot feed a device training `step_rate` images/s; None when they can."""
    feed = cores * per_core_rate
    if feed >= step_rate:
        return None
    return (
        f"the input feed cannot keep up: {cores} cores x {per_core_rate:,.0f} images/s per "
        f"core = {feed:,.0f} images/s, below the {step_rate:,.0f} images/s the device "
        f"trains at ({100 * feed / step_rate:.0f}%). Use pre-resized shards at a smaller "
        f"S (python -m reproduce.data.shards SOURCE OUT --size 160), more cores, or "
        f"measure with scripts/bench_data.py."
    )


def feed_cores() -> int:
    """The cores this process may run on (a container's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def this_machine() -> str:
    """The host and its CPU model: what a rate per core was measured on (cloud
    VMs share host names across CPUs of different speeds)."""
    from reproduce.devices import cpu_name

    try:
        with open("/proc/cpuinfo") as f:
            cpu = cpu_name(f.read())
    except OSError:
        cpu = ""
    return f"{socket.gethostname()} ({cpu or 'CPU unknown'})"


def record_feed_rate(size: int, per_core: float, source: str, root=None) -> Path:
    """Store a measured rate per core of the shard feed at S=`size` for this
    machine (`FEED_RATES` in `root`, default the cache root); returns the file."""
    path = Path(root or cache_root()) / FEED_RATES
    try:
        rates = json.loads(path.read_text())
    except (OSError, ValueError):
        rates = {}
    entry = {"per_core": round(float(per_core), 1), "source": source, "date": datetime.date.today().isoformat()}
    rates.setdefault(this_machine(), {})[str(int(size))] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, rates)
    return path


def measured_feed_rate(size: int, root=None) -> dict | None:
    """This machine's recorded rate per core at S=`size` ({per_core, source,
    date}), or None where none was measured."""
    try:
        rates = json.loads((Path(root or cache_root()) / FEED_RATES).read_text())
        entry = rates[this_machine()][str(int(size))]
        return entry if float(entry["per_core"]) > 0 else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def planned_feed_warning(size: int, step_rate: float, root=None) -> str | None:
    """`feed_shortfall` for this machine's cores at its measured rate per core at
    S=`size` against `step_rate` (the device's measured training rate); None when
    the feed keeps up, or when no rate per core was measured here."""
    m = measured_feed_rate(size, root)
    if m is None or not step_rate:
        return None
    msg = feed_shortfall(feed_cores(), float(m["per_core"]), step_rate)
    return msg and (
        f"{msg} (Rate per core at S={size}: scripts/bench_data.py on this machine, {m['date']}, {m['source']}.)"
    )


def _encode(image: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_split(out_dir, split: str, batches, quality: int = QUALITY, per_shard: int = PER_SHARD) -> dict:
    """Write (uint8 (B,S,S,3) images, labels) batches as `split`'s shards;
    returns the split's manifest entry {files, counts (records per file), n}."""
    tf = tensorflow_for_data()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files, n, writer = [], 0, None
    for images, labels in batches:
        for img, label in zip(images, labels):
            if n % per_shard == 0:
                if writer is not None:
                    writer.close()
                files.append(f"{split}-{len(files):05d}.tfrecord")
                writer = tf.io.TFRecordWriter(str(out_dir / files[-1]))
            ex = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[_encode(img, quality)])),
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
                    }
                )
            )
            writer.write(ex.SerializeToString())
            n += 1
    if writer is not None:
        writer.close()
    counts = [per_shard] * (len(files) - 1) + [n - per_shard * (len(files) - 1)] if files else []
    return {"files": files, "counts": counts, "n": n}


def write_manifest(out_dir, size: int, class_names, splits: dict) -> None:
    atomic_write_json(Path(out_dir) / MANIFEST, {"size": int(size), "class_names": list(class_names), "splits": splits})


def prepare(data_cfg, out_dir, splits=None, quality: int = QUALITY) -> dict:
    """Write the splits of `data_cfg.source` at S = data_cfg.image_size as shards
    in `out_dir` (decoding each image once); returns the manifest's splits."""
    splits = splits or [data_cfg.train_split, data_cfg.val_split]
    done, names = {}, None
    for split in splits:
        arrays = data_lib.load_split(data_cfg, split)
        names = names or list(arrays.class_names)
        if isinstance(arrays, data_lib.ImageArrays):
            b = 256
            batches = ((arrays.images[i : i + b], arrays.labels[i : i + b]) for i in range(0, len(arrays), b))
        else:  # a Stream: its tf.data pipeline decodes and resizes, in order
            batches = arrays.dataset(256, shuffle=False).as_numpy_iterator()
        done[arrays.split] = write_split(out_dir, arrays.split, batches, quality)
    write_manifest(out_dir, data_cfg.image_size, names or [], done)
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m reproduce.data.shards", description="Pre-resized JPEG shards of a dataset (see the module)."
    )
    ap.add_argument("source", help="data.source: tfds:<name>, a folder or archive")
    ap.add_argument("out", help="the shards folder to write")
    ap.add_argument("--size", type=int, default=256, help="S, the side of the stored images")
    ap.add_argument("--quality", type=int, default=QUALITY)
    ap.add_argument("--train-split", default="train")
    ap.add_argument("--val-split", default="validation")
    a = ap.parse_args(argv)
    cfg = DataConfig(
        source=a.source, image_size=a.size, crop_size=min(a.size, 227), train_split=a.train_split, val_split=a.val_split
    )
    done = prepare(cfg, a.out, quality=a.quality)
    for split, entry in done.items():
        print(f"{split}: {entry['n']} images in {len(entry['files'])} shards -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
