"""Decode images with Pillow into the §2 SxS uint8 form, in parallel worker processes.

Works with no TensorFlow installed (Keras on JAX alone).

§2: "Given a rectangular image, we first rescaled the image such that the shorter
side was of length 256, and then cropped out the central 256x256 patch." We do both
in one Pillow call: resample the central min(w, h) square of the original to SxS
(`Image.resize(box=...)`), which is the same window without the rounding of an
intermediate image. Bilinear with Pillow's antialiasing support when shrinking; the
paper does not name its filter. TFDS streaming (`tfds_source`) crops the same
square and resizes it with TensorFlow's antialiased bilinear.

Workers write straight into the cache's memory-mapped `.npy` (opened by path), so
decoded pixels never travel through pipes; only encoded bytes do, for archives
that can only be read as a stream (.tar.gz, .tar.xz, TFDS records).
"""

from __future__ import annotations

import io
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
import time
import traceback
import zipfile
from collections.abc import Iterable, Iterator

import numpy as np

from reproduce.data.common import DataError

# Below this many images a build decodes in the calling process: starting worker
# processes costs ~1 s, more than decoding a few hundred small images.
PARALLEL_MIN = 1000
CHUNK_ITEMS = 128  # images per worker task
CHUNK_BYTES = 16 << 20  # ... or this many encoded bytes, whichever comes first
# The largest encoded image file read into memory. A photo is a few MB (an
# ImageNet JPEG ~110 kB, a 50-megapixel camera JPEG ~25 MB); anything larger is
# not an image of this pipeline, and reading it first would exhaust the memory (a
# compressed archive cannot tell a member's real content before reading it).
MAX_IMAGE_BYTES = 64 << 20

# Decodes done by this process and by workers on its behalf (tests count them to
# prove a second load reads the cache).
_DECODED = [0]


def decode_count() -> int:
    return _DECODED[0]


def num_workers() -> int:
    env = os.environ.get("REPRODUCE_DATA_WORKERS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise DataError(
                f"REPRODUCE_DATA_WORKERS={env!r} is not a whole number: set it to the "
                f"number of decode processes (e.g. REPRODUCE_DATA_WORKERS=4), or unset it "
                f"to use one per CPU."
            ) from None
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        n = os.cpu_count() or 1
    return max(1, min(n, 32))


def too_big(nbytes: int, what: str, fix: str) -> str | None:
    """The message for an image file larger than MAX_IMAGE_BYTES, else None."""
    if nbytes <= MAX_IMAGE_BYTES:
        return None
    return (
        f"{what} is {_size(nbytes)} ({nbytes} bytes), more than the "
        f"{_size(MAX_IMAGE_BYTES)} one image file may have "
        f"(reproduce.data.decode.MAX_IMAGE_BYTES): it is not read. {fix}"
    )


def _size(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):,.1f} MiB" if nbytes >= 1 << 20 else f"{nbytes / 1024:,.1f} KiB"


# Pillow's modes for one 16-bit channel (16-bit grayscale PNGs; "I" is how some
# Pillow versions open them). Pillow's own conversion to RGB clips them at 255.
_MODES_16 = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _to_8bit(img):
    """A 16-bit grayscale image as 8-bit "L", scaled (v * 255 / 65535, rounded),
    not clipped: clipping turns everything above 255 of 65535 white."""
    from PIL import Image

    a = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
    return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), "L")


def decode_image(data: bytes, size: int) -> np.ndarray:
    """Encoded JPEG/PNG/WebP bytes -> uint8 (size, size, 3), §2."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        # JPEG only: let libjpeg scale by 1/2, 1/4 or 1/8 while decoding when the
        # result still has both sides >= size (large ImageNet photos decode several
        # times faster; the final resample below still does the antialiasing).
        img.draft("RGB", (size, size))
        if img.mode in _MODES_16:
            img = _to_8bit(img)
        if img.mode != "RGB":
            img = img.convert("RGB")
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) / 2.0, (h - side) / 2.0
        if side == size and left == int(left) and top == int(top):
            out = img.crop((int(left), int(top), int(left) + size, int(top) + size))
        else:
            out = img.resize(
                (size, size),
                Image.Resampling.BILINEAR,
                box=(left, top, left + side, top + side),
            )
        arr = np.asarray(out, dtype=np.uint8)
    if arr.shape != (size, size, 3):  # pragma: no cover - Pillow contract
        raise ValueError(f"decoded to shape {arr.shape}")
    return arr


# --------------------------------------------------------------------------------------
# Readers: how a worker gets the encoded bytes of one item
# --------------------------------------------------------------------------------------
# reader = ("file", root)      payload = relative path
#          ("zip", path)       payload = member name
#          ("tar", path)       payload = (data offset, size) inside the uncompressed tar
#          ("bytes", None)     payload = the bytes themselves

_OPEN: dict = {}  # per-process open archives


def _read(reader: tuple, payload) -> bytes:
    kind, where = reader
    if kind == "bytes":
        return payload
    if kind == "file":
        with open(os.path.join(where, payload), "rb") as f:
            msg = too_big(os.fstat(f.fileno()).st_size, "the file", "Remove it from the data folder.")
            if msg:
                raise ValueError(msg)
            return f.read()
    if kind == "zip":
        z = _OPEN.get(("zip", where))
        if z is None:
            z = _OPEN[("zip", where)] = zipfile.ZipFile(where)
        return z.read(payload)
    if kind == "tar":
        f = _OPEN.get(("tar", where))
        if f is None:
            # Kept open for the worker's life: every image of the archive is read
            # through it (as the zip's ZipFile above).
            f = _OPEN[("tar", where)] = open(where, "rb")  # noqa: SIM115
        offset, size = payload
        f.seek(offset)
        data = f.read(size)
        if len(data) != size:
            raise OSError(f"archive ends early ({len(data)} of {size} bytes)")
        return data
    raise ValueError(f"unknown reader {kind!r}")


def decode_job(job) -> tuple[int, list]:
    """Worker task: decode `items` into rows of the .npy at `out_path`.

    Returns (number decoded, [(out_path, index, name, error message), ...] for
    failures).
    """
    out_path, size, reader, items = job
    arr = np.load(out_path, mmap_mode="r+")
    bad = []
    n = 0
    for index, name, payload in items:
        try:
            arr[index] = decode_image(_read(reader, payload), size)
            n += 1
        except Exception as e:  # any failure of one file is that file's problem
            bad.append((out_path, index, name, f"{type(e).__name__}: {e}"))
    arr.flush()
    del arr
    return n, bad


def chunked(out_path: str, size: int, reader: tuple, items: Iterable) -> Iterator[tuple]:
    """Group (index, name, payload) items into worker jobs."""
    buf, nbytes = [], 0
    for item in items:
        buf.append(item)
        if isinstance(item[2], (bytes, bytearray)):
            nbytes += len(item[2])
        if len(buf) >= CHUNK_ITEMS or nbytes >= CHUNK_BYTES:
            yield (out_path, size, reader, buf)
            buf, nbytes = [], 0
    if buf:
        yield (out_path, size, reader, buf)


def run_jobs(jobs: Iterable[tuple], total: int, label: str = "") -> list:
    """Run decode jobs (inline for small builds, else in worker processes).

    `jobs` may be a lazy generator (streamed archives): at most two jobs per worker
    are queued, so memory stays bounded. Returns all failures.
    """
    bad: list = []
    workers = num_workers()
    t0 = last = time.perf_counter()
    done = 0

    def collect(n_items, result):
        nonlocal done, last
        n, b = result
        _DECODED[0] += n
        bad.extend(b)
        done += n_items
        now = time.perf_counter()
        if total >= PARALLEL_MIN and now - last > 15:
            last = now
            print(
                f"[reproduce.data] {label}: {done}/{total} images decoded ({done / max(now - t0, 1e-9):.0f}/s)",
                file=sys.stderr,
                flush=True,
            )

    if workers <= 1 or total < PARALLEL_MIN:
        for job in jobs:
            collect(len(job[3]), decode_job(job))
        return bad
    with _WorkerPool(min(workers, -(-total // CHUNK_ITEMS))) as pool:
        pool.run(jobs, collect)
    return bad


# --------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------
# Workers are fresh interpreters (`python -m reproduce.data._worker`) talking pickled,
# length-prefixed frames over their stdin/stdout. Not multiprocessing: its `spawn`
# and `forkserver` re-run the caller's main script in every child (an unguarded
# script or notebook breaks), and `fork` copies a parent that may already run JAX
# or TensorFlow threads, which can deadlock the child. Workers import only NumPy,
# Pillow and this package.


def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)))
    stream.write(data)
    stream.flush()


def _recv(stream):
    head = stream.read(8)
    if len(head) < 8:
        return _EOF
    (n,) = struct.unpack("<Q", head)
    data = stream.read(n)
    if len(data) < n:
        return _EOF
    return pickle.loads(data)


_EOF = object()


class _WorkerPool:
    def __init__(self, n: int):
        # The folder holding the `reproduce` package (reproduce/data/decode.py is three
        # levels below it), so the workers import this same copy.
        pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([pkg_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "reproduce.data._worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
            )
            for _ in range(n)
        ]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10 if exc[0] is None else 1)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            p.stdout.close()

    def run(self, jobs: Iterable[tuple], collect) -> None:
        """Feed `jobs` to the workers (one thread each); `collect(n_items, result)`."""
        q: queue.Queue = queue.Queue(maxsize=2 * len(self.procs))
        results: queue.Queue = queue.Queue()
        stop = object()

        def serve(p):
            while True:
                job = q.get()
                if job is stop:
                    return
                try:
                    _send(p.stdin, job)
                    r = _recv(p.stdout)
                except (OSError, ValueError) as e:
                    r = ("error", f"worker pipe failed: {e}")
                if r is _EOF:
                    r = ("error", f"decode worker {p.pid} exited (code {p.poll()})")
                results.put((len(job[3]), r))
                if r[0] == "error":
                    return

        threads = [threading.Thread(target=serve, args=(p,), daemon=True) for p in self.procs]
        for t in threads:
            t.start()
        pending = 0
        error = None

        def drain(block: bool):
            nonlocal pending, error
            while pending:
                try:
                    n_items, r = results.get(block=block, timeout=None if block else 0)
                except queue.Empty:
                    return
                pending -= 1
                if r[0] == "error":
                    error = error or r[1]
                else:
                    collect(n_items, r[1])
                block = False

        try:
            for job in jobs:
                while error is None:
                    try:
                        q.put(job, timeout=0.2)
                        break
                    except queue.Full:
                        drain(block=False)
                if error is not None:
                    break
                pending += 1
                drain(block=False)
            while pending and error is None:
                drain(block=True)
        finally:
            for _ in threads:
                try:
                    q.put_nowait(stop)
                except queue.Full:
                    pass
        if error is not None:
            raise RuntimeError(f"decoding failed: {error}")
        for t in threads:
            t.join()


def _worker_main() -> None:
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the frame stream
    while True:
        job = _recv(inp)
        if job is _EOF:
            return
        try:
            _send(out, ("ok", decode_job(job)))
        except Exception:
            _send(out, ("error", traceback.format_exc()))
