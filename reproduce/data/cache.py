"""The on-disk cache of decoded images: one folder per (source, split, S, subsample).

Layout (root: `data.cache_dir`, else $REPRODUCE_CACHE, else ~/.cache/reproduce)::

    <root>/<source-name>__<split>__S<size>[__max<n>]__<hash12>/
        images.npy     uint8 (N, S, S, 3), opened as a read-only memmap
        labels.npy     int32 (N,)
        manifest.json  source identity, split used, class names, skipped files, timings
        stats.npz      training split only, written on first use: mean image + PCA
        COMPLETE       written last; an entry without it is never read

A damaged entry (a truncated or altered file, an unreadable manifest or
statistics) is found when it is opened, named in a warning, and rebuilt from the
source; a damaged stats.npz is recomputed. Every open checks what costs nothing:
the manifest's keys, the arrays' headers, shapes and file sizes, and the labels'
range. The manifest also records a CRC-32 of images.npy and labels.npy, taken at
build time; a process compares it on its first open of each file version, so
bytes changed inside images.npy are noticed too. That costs one read of the file
per process (Imagenette's 590 MB of training images: 0.4 s from the page cache,
1.4 s from disk, on a 2-core CPU), which a training run then reads anyway.
Within a process a file is compared again when its size or time changes; damage
that changes neither (a failing disk) is noticed by the next process. Entries
built before the checksum existed get the other checks only.

`hash12` covers the source's identity (an archive's absolute path, size and
mtime; a folder's path, its image files' names and its folders' mtimes; a TFDS
name, version and data_dir), the requested split, S and the subsample size, so a
changed archive or setting makes a new entry. An entry is built in a hidden
sibling folder `.<name>.tmp-<host>-<pid>-<random>`, completed with the COMPLETE
marker, and renamed into place: a run killed half-way leaves only a temp folder
(removed by the next build on the same host once its process is gone), never an
entry that looks complete.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import uuid
import warnings
import zlib
from pathlib import Path

import numpy as np

from reproduce.data.common import DataError, ImageArrays, Stats, max_bad_fraction
from reproduce.files import host_tag, pid_alive, replacing

CACHE_FORMAT = 1  # bump when the decode or the layout changes
COMPLETE = "COMPLETE"
IMAGES, LABELS, MANIFEST, STATS = "images.npy", "labels.npy", "manifest.json", "stats.npz"


def entry_path(root: Path, name: str, split: str, size: int, max_n: int, identity: dict) -> Path:
    key = {"format": CACHE_FORMAT, "identity": identity, "split": split, "size": size, "max": max_n}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:60] or "data"
    sp = re.sub(r"[^A-Za-z0-9._-]+", "_", split)
    return root / f"{slug}__{sp}__S{size}{f'__max{max_n}' if max_n else ''}__{digest}"


def is_complete(path: Path) -> bool:
    return (Path(path) / COMPLETE).is_file()


def read_manifest(path: Path) -> dict:
    return json.loads((Path(path) / MANIFEST).read_text())


def _crc32(path: Path) -> str:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return f"crc32:{crc:08x}"


def checksums(path: Path) -> dict:
    return {name: _crc32(Path(path) / name) for name in (IMAGES, LABELS)}


# Files whose checksum this process has compared (or computed), by their
# (device, inode, size, mtime): a file changed since is compared again.
_VERIFIED: set = set()


def _stamp(p: Path) -> tuple:
    st = p.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _why_unreadable(e: Exception) -> str:
    # NumPy takes bytes that are neither .npy nor .npz for a pickle and says so,
    # which reads as if the file held objects.
    if "pickled" in str(e):
        return "not a NumPy file"
    return f"{type(e).__name__}: {e}"


def _opened(path: Path):
    """(manifest, images memmap, labels) of an entry, or DataError saying what is wrong."""
    try:
        m = read_manifest(path)
    except (OSError, ValueError) as e:
        raise DataError(f"{MANIFEST} cannot be read ({e})") from None
    if not isinstance(m, dict):
        raise DataError(f"{MANIFEST} holds a JSON {type(m).__name__}, not an object")
    wrong = [k for k, kind in (("n", int), ("class_names", list), ("split", str)) if not isinstance(m.get(k), kind)]
    wrong += [] if isinstance(m.get("checksums", {}), dict) else ["checksums"]
    if wrong:
        raise DataError(f"{MANIFEST} lacks a valid {', '.join(wrong)}")
    n, classes = m["n"], m["class_names"]
    arrays = {}
    for name in (IMAGES, LABELS):
        try:  # any failure to read the file is damage: a truncated header, garbage, ...
            arrays[name] = np.load(path / name, mmap_mode="r" if name == IMAGES else None, allow_pickle=False)
        except Exception as e:
            raise DataError(f"{name} cannot be read ({_why_unreadable(e)})") from None
    images, labels = arrays[IMAGES], arrays[LABELS]
    size = m.get("image_size", images.shape[1] if images.ndim == 4 else 0)
    if images.dtype != np.uint8 or images.shape != (n, size, size, 3):
        raise DataError(f"{IMAGES} holds {images.dtype} {images.shape}, the manifest says uint8 {(n, size, size, 3)}")
    on_disk = (path / IMAGES).stat().st_size
    expected = getattr(images, "offset", on_disk - images.nbytes) + images.nbytes
    if on_disk != expected:
        raise DataError(f"{IMAGES} is {on_disk} bytes, its header says {expected}")
    if (
        labels.shape != (n,)
        or labels.dtype.kind not in "iu"
        or (n and (labels.min() < 0 or labels.max() >= len(classes)))
    ):
        raise DataError(f"{LABELS} holds {labels.dtype} {labels.shape}, not {n} labels in 0..{len(classes) - 1}")
    for name, want in m.get("checksums", {}).items():
        if name not in (IMAGES, LABELS):
            continue
        stamp = _stamp(path / name)
        if stamp not in _VERIFIED:
            got = _crc32(path / name)
            if got != want:
                raise DataError(f"{name} has changed since it was built ({got}, was {want})")
            _VERIFIED.add(stamp)
    return m, images, labels


def damage(path: Path) -> str | None:
    """What is wrong with the complete entry at `path`, or None if it is sound."""
    try:
        _opened(Path(path))
    except DataError as e:
        return str(e)
    return None


def usable(path: Path) -> bool:
    """True for a complete, sound entry. A damaged one is named in a warning and
    removed (the caller then rebuilds it from the source, which is still there)."""
    path = Path(path)
    if not is_complete(path):
        return False
    why = damage(path)
    if why is None:
        return True
    warnings.warn(f"the cache entry {path} is damaged: {why}. Rebuilding it from the source.", stacklevel=3)
    gone = path.parent / f".{path.name}.damaged-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(path, gone)
    except FileNotFoundError:
        return False  # another process removed it first
    except OSError as e:
        raise DataError(
            f"the cache entry {path} is damaged ({why}) and cannot be removed "
            f"({e.strerror or e}). Delete it, or set REPRODUCE_CACHE (or data.cache_dir) "
            "to a writable folder."
        ) from None
    shutil.rmtree(gone, ignore_errors=True)
    return False


def open_entry(path: Path, source: str) -> ImageArrays:
    """A complete entry as memory-mapped arrays (read-only: page cache, no copy)."""
    path = Path(path)
    try:
        m, images, labels = _opened(path)
    except DataError as e:
        raise DataError(f"the cache entry {path} is damaged: {e}. Delete it to rebuild it from the source.") from None
    return ImageArrays(
        images=images,
        labels=labels.astype(np.int32, copy=False),
        class_names=list(m["class_names"]),
        split=m["split"],
        source=source,
        cache_path=str(path),
    )


def warn_if_over_tolerance(path: Path, manifest: dict) -> None:
    """Warn when a reused entry skipped more unreadable images than is allowed now.

    The limit (`max_bad_fraction`) is checked when an entry is built; an entry
    built under a raised REPRODUCE_MAX_BAD_FRACTION would otherwise be reused by
    every later run as if the limit had been met."""
    skipped = manifest.get("skipped") or []
    if not skipped:
        return
    total = int(manifest.get("n", 0)) + len(skipped)
    frac, limit = len(skipped) / max(total, 1), max_bad_fraction()
    if frac > limit:
        warnings.warn(
            f"the cache entry {path} was built skipping {len(skipped)} of {total} unreadable "
            f"images ({100 * frac:.1f}%), more than the {100 * limit:g}% allowed now: a raised "
            f"REPRODUCE_MAX_BAD_FRACTION was in force when it was built. It is reused as it "
            f"is; delete it to rebuild under the current limit (which then names the files), "
            f"or replace the unreadable files.",
            stacklevel=4,
        )


def _remove_stale_temps(final: Path) -> None:
    host = host_tag()
    prefix = f".{final.name}.tmp-"
    if not final.parent.is_dir():
        return
    for p in final.parent.iterdir():
        if not p.name.startswith(prefix):
            continue
        m = re.match(r"(.+)-(\d+)-[0-9a-f]+$", p.name[len(prefix) :])
        if m and m.group(1) == host and not pid_alive(int(m.group(2))):
            shutil.rmtree(p, ignore_errors=True)


class EntryBuilder:
    """Builds one entry in a temp folder; `commit` makes it visible atomically."""

    def __init__(self, final: Path):
        self.final = Path(final)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(self.final)
        self.tmp = self.final.parent / (f".{self.final.name}.tmp-{host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self.tmp.mkdir()
        self.n_alloc = 0
        self.size = 0

    @property
    def images_path(self) -> str:
        return str(self.tmp / "images.alloc.npy")

    def allocate(self, n: int, size: int) -> str:
        """The uint8 (n, size, size, 3) file workers decode into; returns its path."""
        arr = np.lib.format.open_memmap(self.images_path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
        arr.flush()
        del arr
        self.n_alloc, self.size = n, size
        return self.images_path

    def commit(self, labels: np.ndarray, bad_indices, manifest: dict) -> Path:
        """Drop failed rows, write labels, manifest and marker, rename into place."""
        keep = np.setdiff1d(np.arange(self.n_alloc), np.asarray(sorted(bad_indices), dtype=np.int64))
        src = self.tmp / "images.alloc.npy"
        dst = self.tmp / IMAGES
        if len(keep) == self.n_alloc:
            os.replace(src, dst)
        else:  # rare: a few corrupt files; copy the good rows once
            a = np.load(src, mmap_mode="r")
            out = np.lib.format.open_memmap(dst, mode="w+", dtype=np.uint8, shape=(len(keep),) + a.shape[1:])
            for i in range(0, len(keep), 1024):
                out[i : i + 1024] = a[keep[i : i + 1024]]
            out.flush()
            del out, a
            os.remove(src)
        labels = np.asarray(labels, dtype=np.int32)[keep]
        np.save(self.tmp / LABELS, labels)
        sums = checksums(self.tmp)
        _VERIFIED.update(_stamp(self.tmp / name) for name in sums)  # the rename keeps them
        manifest = {
            **manifest,
            "format": CACHE_FORMAT,
            "n": int(len(keep)),
            "image_size": self.size,
            "checksums": sums,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _fsync_dir_files(self.tmp)
        # The marker is the last thing written: everything above is on disk first.
        with open(self.tmp / COMPLETE, "w") as f:
            f.write(f"{len(keep)}\n")
            f.flush()
            os.fsync(f.fileno())
        if self.final.exists():
            if is_complete(self.final):  # another process finished the same entry
                shutil.rmtree(self.tmp, ignore_errors=True)
                return self.final
            shutil.rmtree(self.final)  # an incomplete leftover: never read, replaced
        os.rename(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _fsync_dir_files(d: Path) -> None:
    for p in d.iterdir():
        try:
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
        except OSError:  # pragma: no cover - fsync unsupported (some network FS)
            pass


def read_stats(path: Path) -> Stats | None:
    """The entry's statistics; None if absent, or damaged (said in a warning; the
    caller recomputes and replaces them)."""
    p = Path(path) / STATS
    if not p.is_file():
        return None
    try:  # any failure to read the file is damage
        with np.load(p, allow_pickle=False) as z:
            st = Stats(
                mean_image=z["mean_image"],
                pca_eigvals=z["pca_eigvals"],
                pca_eigvecs=z["pca_eigvecs"],
                num_images=int(z["num_images"]),
                num_pixels=int(z["num_pixels"]),
            )
        shapes = (st.mean_image.ndim, st.pca_eigvals.shape, st.pca_eigvecs.shape)
        if shapes != (3, (3,), (3, 3)) or not all(
            np.isfinite(a).all() for a in (st.mean_image, st.pca_eigvals, st.pca_eigvecs)
        ):
            raise ValueError(f"arrays of shapes {shapes} or not finite")
    except Exception as e:
        warnings.warn(
            f"the cache file {p} is damaged ({_why_unreadable(e)}); recomputing the statistics.", stacklevel=2
        )
        return None
    return st


def write_stats(path: Path, stats: Stats) -> None:
    """Add stats.npz to a (complete) entry, atomically via a temp file + rename."""
    with replacing(Path(path) / STATS, suffix=".npz") as tmp:
        np.savez(
            tmp,
            mean_image=stats.mean_image,
            pca_eigvals=stats.pca_eigvals,
            pca_eigvecs=stats.pca_eigvecs,
            num_images=stats.num_images,
            num_pixels=stats.num_pixels,
        )
