"""What `data.source` names: a TensorFlow Datasets set, synthetic data, or files on
a disk (a folder in ImageFolder layout, or an archive of one); the name a report
gives it, and its identity by content, for the experiment fingerprint.

The fingerprint (`reproduce.config.experiment_identity`) must name the data a run
saw, not where it lay: the same archive copied to another machine or path is the
same dataset, and two different archives that happen to share a file name are
not. So:

* a TFDS name (versioned) and `synthetic` stand for themselves;
* an archive (any file) is named by the SHA-256 of its bytes. Hashing runs at
  several hundred MB/s; the digest is remembered in ``<cache root>/identities.json``
  under the file's real path, size and modification time, so a 50 MB archive is
  read once, not once per run;
* a folder (ImageFolder layout) is named by the SHA-256 of its image files'
  relative paths and sizes (the files `image_files` lists, which the loader
  reads too): reading every byte of an ImageNet-sized folder would cost
  minutes, and re-encoded or renamed images change sizes or names;
* a folder of pre-resized shards (`reproduce.data.shards`: a SHARDS_MANIFEST
  and the files it lists) by the SHA-256 of the manifest's bytes (S, classes,
  splits, counts) and the listed files' names and sizes.

Standard library only: `reproduce.config` imports it, and the report imports
that without NumPy or Keras.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

from reproduce.files import atomic_write_text, cache_root

SYNTHETIC = "synthetic"
TFDS = "tfds:"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
MEMO = "identities.json"
SHARDS_MANIFEST = "shards.json"


class DataError(ValueError):
    """Input data that cannot be used; the message names the problem and the fix."""


def names_itself(source: str) -> bool:
    """A TFDS name or `synthetic`: the source is its own identity."""
    return source == SYNTHETIC or source.startswith(TFDS)


def is_local(source: str) -> bool:
    """A source naming files on a disk (a folder or an archive)."""
    return bool(source) and not names_itself(source)


def local_name(source: str) -> str:
    """The file or folder name of a local source, without where it lay."""
    return os.path.basename(os.path.normpath(source))


def tfds_dataset(source: str) -> str:
    """The TFDS dataset of a ``tfds:<name>[/<config>][:<version>]`` source
    ('imagenette' for 'tfds:imagenette/160px-v2'); '' for other sources."""
    if not source.startswith(TFDS):
        return ""
    return source[len(TFDS) :].split("/")[0].split(":")[0]


def data_identity(source: str) -> str:
    """The dataset by content: TFDS names (versioned) and `synthetic` stand for
    themselves; a local archive or folder is named by a digest of its bytes (an
    archive) or of its files' names and sizes (a folder), so the same archive at
    two paths or on two machines is the same dataset and two different ones with
    the same file name are not."""
    if names_itself(source):
        return source
    return local_identity(source)


def is_shards(source: str) -> bool:
    """A folder of pre-resized shards (it holds a SHARDS_MANIFEST)."""
    path = Path(source).expanduser()
    return path.is_dir() and (path / SHARDS_MANIFEST).is_file()


def local_identity(source: str) -> str:
    """'sha256:<16 hex>' of an archive's bytes, 'files:<16 hex>' of a folder's
    image names and sizes, 'shards:<16 hex>' of a shards folder's manifest and
    file sizes, or 'missing:<name>' when the path does not exist (a run then
    stops at data loading, naming the path)."""
    path = Path(source).expanduser()
    if path.is_file():
        return "sha256:" + _file_digest(path)
    if is_shards(source):
        return "shards:" + _shards_digest(path)
    if path.is_dir():
        st = path.stat()
        return "files:" + _folder_digest(str(path.resolve()), st.st_mtime_ns)
    return "missing:" + local_name(source)


def _file_digest(path: Path) -> str:
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    memo_path = cache_root() / MEMO
    memo = _read_memo(memo_path)
    if key in memo:
        return memo[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()[:16]
    memo = _read_memo(memo_path)  # another process may have added entries
    memo[key] = digest
    _write_memo(memo_path, memo)
    return digest


@functools.lru_cache(maxsize=32)
def _folder_digest(root: str, _mtime_ns: int) -> str:
    h = hashlib.sha256()
    entries = [(rel, os.path.getsize(os.path.join(root, rel))) for rel in image_files(root)]
    for rel, size in sorted(entries):
        h.update(f"{rel}\t{size}\n".encode())
    return h.hexdigest()[:16]


def _shards_digest(folder: Path) -> str:
    blob = (folder / SHARDS_MANIFEST).read_bytes()
    h = hashlib.sha256(blob)
    try:
        splits = json.loads(blob).get("splits", {})
        names = sorted(f for entry in splits.values() for f in entry.get("files", []))
    except (ValueError, AttributeError, TypeError):
        names = []  # a damaged manifest: loading it names the problem
    for name in names:
        p = folder / name
        h.update(f"{name}\t{p.stat().st_size if p.is_file() else -1}\n".encode())
    return h.hexdigest()[:16]


def _skipped(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def image_files(top) -> list:
    """The image files below the folder `top`, as '/'-separated paths relative to
    it: what the ImageFolder loader reads (`reproduce.data.imagefolder`) and what
    the folder's identity is computed from, so both see the same files.

    Hidden files and folders and `__MACOSX` are skipped. Links to folders are
    followed (a class folder may live on another disk), but a link back to a folder
    that contains it (`train/a/loop -> ..`) would list the images above it again
    and again, under the wrong class: a DataError names it.
    """
    top = os.fspath(top)
    out: list = []
    # (logical path, real path) of the folders from `top` down to the current one.
    chain = [(top, os.path.realpath(top))]

    def walk(logical: str, rel: str) -> None:
        try:
            entries = sorted(os.scandir(logical), key=lambda e: e.name)
        except OSError as e:
            raise DataError(
                f"cannot list the folder {logical}: {e.strerror or e}. Check its permissions (or remove it)."
            ) from None
        for e in entries:
            if _skipped(e.name):
                continue
            sub = f"{rel}/{e.name}" if rel else e.name
            if not e.is_dir():
                if e.name.lower().endswith(IMAGE_EXTENSIONS):
                    out.append(sub)
                continue
            real = os.path.realpath(e.path)
            for logical_above, real_above in chain:
                if real_above == real or real_above.startswith(real.rstrip(os.sep) + os.sep):
                    seen_as = "" if os.path.abspath(logical_above) == real else f" ({logical_above})"
                    raise DataError(
                        f"{e.path} links to {real}, a folder that contains it{seen_as}: "
                        "following it would list the same images again and again, under the "
                        "wrong class. Remove the link, or make it point to a folder outside "
                        f"{real}."
                    )
            chain.append((e.path, real))
            try:
                walk(e.path, sub)
            finally:
                chain.pop()

    walk(top, "")
    return out


def _read_memo(path: Path) -> dict:
    try:
        memo = json.loads(path.read_text())
        return memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):
        return {}  # absent or damaged: digests are recomputed, nothing is lost


def _write_memo(path: Path, memo: dict) -> None:
    try:
        atomic_write_text(path, json.dumps(memo, indent=0, sort_keys=True))
    except OSError:
        pass  # a read-only cache only costs re-hashing
