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
  relative paths and sizes: reading every byte of an ImageNet-sized folder would
  cost minutes, and re-encoded or renamed images change sizes or names.

Standard library only.
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
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(_IMAGE_SUFFIXES):
                continue
            full = os.path.join(dirpath, name)
            entries.append((os.path.relpath(full, root).replace(os.sep, "/"),
                            os.path.getsize(full)))
    for rel, size in sorted(entries):
        h.update(f"{rel}\t{size}\n".encode())
    return h.hexdigest()[:16]


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
