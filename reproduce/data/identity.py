"""A local dataset's identity by content, for the experiment fingerprint.

The fingerprint (`reproduce.config.experiment_identity`) must name the data a run
saw, not where it lay: the same archive copied to another machine or path is the
same dataset, and two different archives that happen to share a file name are
not. So:

* an archive (any file) is named by the SHA-256 of its bytes. Hashing runs at
  several hundred MB/s; the digest is remembered in ``<cache root>/identities.json``
  under the file's real path, size and modification time, so a 50 MB archive is
  read once, not once per run;
* a folder (ImageFolder layout) is named by the SHA-256 of its image files'
  relative paths and sizes (the files `image_files` lists, which the loader
  reads too): reading every byte of an ImageNet-sized folder would cost
  minutes, and re-encoded or renamed images change sizes or names.

Standard library only (NumPy only on the way to a DataError).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MEMO = "identities.json"


def _cache_root() -> Path:
    # Same default as reproduce.data.cache.cache_root (without importing NumPy).
    root = os.environ.get("REPRODUCE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "reproduce")
    return Path(root).expanduser().absolute()


def local_identity(source: str) -> str:
    """'sha256:<16 hex>' of an archive's bytes, 'files:<16 hex>' of a folder's
    image names and sizes, or 'missing:<name>' when the path does not exist (a
    run then stops at data loading, naming the path)."""
    path = Path(source).expanduser()
    if path.is_file():
        return "sha256:" + _file_digest(path)
    if path.is_dir():
        st = path.stat()
        return "files:" + _folder_digest(str(path.resolve()), st.st_mtime_ns)
    return "missing:" + os.path.basename(os.path.normpath(source))


def _file_digest(path: Path) -> str:
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    memo_path = _cache_root() / MEMO
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
            raise _data_error(f"cannot list the folder {logical}: {e.strerror or e}. Check "
                              "its permissions (or remove it).") from None
        for e in entries:
            if _skipped(e.name):
                continue
            sub = f"{rel}/{e.name}" if rel else e.name
            if not e.is_dir():
                if e.name.lower().endswith(_IMAGE_SUFFIXES):
                    out.append(sub)
                continue
            real = os.path.realpath(e.path)
            for logical_above, real_above in chain:
                if real_above == real or real_above.startswith(real.rstrip(os.sep) + os.sep):
                    seen_as = "" if os.path.abspath(logical_above) == real else f" ({logical_above})"
                    raise _data_error(
                        f"{e.path} links to {real}, a folder that contains it{seen_as}: "
                        "following it would list the same images again and again, under the "
                        "wrong class. Remove the link, or make it point to a folder outside "
                        f"{real}.")
            chain.append((e.path, real))
            try:
                walk(e.path, sub)
            finally:
                chain.pop()

    walk(top, "")
    return out


def _data_error(msg: str) -> Exception:
    # Imported only on failure: this module stays standard library only.
    from reproduce.data.common import DataError

    return DataError(msg)


def _read_memo(path: Path) -> dict:
    try:
        memo = json.loads(path.read_text())
        return memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):
        return {}  # absent or damaged: digests are recomputed, nothing is lost


def _write_memo(path: Path, memo: dict) -> None:
    from reproduce.runs import atomic_write_text  # standard library only, as here

    try:
        atomic_write_text(path, json.dumps(memo, indent=0, sort_keys=True))
    except OSError:
        pass  # a read-only cache only costs re-hashing
