"""ImageFolder sources: a folder `<root>/<split>/<class>/<image>` or an archive of one.

Archives: .zip and .tar are read in place with random access (workers read their
members directly: no extraction, no extra disk). .tar.gz/.tgz/.tar.xz/.txz/.tar.bz2
can only be read front to back: a build streams them once, keeping the encoded
images in memory when they fit in STREAM_MEMORY_BYTES (2 GiB), else twice (once to
list the members, once to feed their bytes to the decode workers); they are never
written out. A single top-level folder (`cifar10/train/...`) is detected and skipped.

Class names are the class folder names, sorted; a label is the index in that list.
Images may sit deeper inside a class folder; files that are not .jpg/.jpeg/.png/
.webp, hidden files and `__MACOSX` are ignored.

NumPy and Pillow only (no TensorFlow).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np

from reproduce.data import cache as cache_lib
from reproduce.data import decode as dec
from reproduce.data.common import (
    VAL_ALIASES,
    DataError,
    check_bad_images,
    check_classes,
    check_same_classes,
    is_image_name,
    resolve_split,
    subsample_indices,
)
from reproduce.sources import image_files

# A compressed tar is decompressed once if its images fit in this much memory,
# else twice (list, then decode), never extracted to disk.
STREAM_MEMORY_BYTES = 2 << 30

ARCHIVE_KINDS = {
    ".zip": "zip",
    ".tar": "tar",
    ".tar.gz": "tarstream",
    ".tgz": "tarstream",
    ".tar.xz": "tarstream",
    ".txz": "tarstream",
    ".tar.bz2": "tarstream",
}


def archive_kind(path: str) -> str | None:
    low = path.lower()
    for suffix in sorted(ARCHIVE_KINDS, key=len, reverse=True):
        if low.endswith(suffix):
            return ARCHIVE_KINDS[suffix]
    return None


def _norm(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def _ignored(name: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


def _split_like(names) -> bool:
    return bool(set(names) & ({"train"} | set(VAL_ALIASES)))


class _Layout:
    """Files of an archive arranged as split -> class -> [(name, payload)]."""

    def __init__(self, files, dirs, where: str, wanted=()):
        files = [(n, p) for n, p in files if not _ignored(n)]
        dirs = {d for d in dirs if not _ignored(d)}
        paths = [n for n, _ in files] + list(dirs)
        # Descend through a single top-level folder (cifar10/train/...), as long as
        # the level holds no split-like folder.
        prefix = ""
        for _ in range(3):
            firsts = {
                p[len(prefix) :].split("/", 1)[0] for p in paths if p.startswith(prefix) and "/" in p[len(prefix) :]
            }
            if _split_like(firsts) or set(wanted) & firsts or len(firsts) != 1:
                break
            prefix += firsts.pop() + "/"
        self.prefix = prefix
        self.tree: dict = {}
        self.loose = 0
        for d in dirs:
            if d.startswith(prefix) and d[len(prefix) :]:
                parts = d[len(prefix) :].split("/")
                split = self.tree.setdefault(parts[0], {})
                if len(parts) >= 2:  # a class folder, perhaps without images
                    split.setdefault(parts[1], [])
        for name, payload in files:
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix) :].split("/")
            if len(parts) < 2:
                continue  # a file next to the split folders
            split = self.tree.setdefault(parts[0], {})
            if len(parts) == 2:
                self.loose += is_image_name(name)  # directly in a split folder
            else:
                files_of = split.setdefault(parts[1], [])
                if is_image_name(name):
                    files_of.append((name, payload))
        self.where = where

    def splits(self):
        return sorted(self.tree)


def _item_list(classes: dict, where: str, split: str, max_n: int):
    """(class names, [(label, name, payload)]) in sorted order, subsampled.

    Class folders without images get no label (the manifest's `empty_classes`)."""
    class_names = sorted(c for c, files in classes.items() if files)
    items = []
    for label, c in enumerate(class_names):
        for name, payload in sorted(classes[c], key=lambda t: t[0]):
            items.append((label, name, payload))
    if not items:
        raise DataError(
            f"split {split!r} in {where} has no images: expected "
            f"{split}/<class>/<image> with .jpg/.jpeg/.png/.webp files. Check the path, "
            f"or point data.train_split/data.val_split at a split that has images."
        )
    keep = subsample_indices(len(items), max_n)
    return class_names, [items[i] for i in keep], len(items)


class _Request:
    def __init__(self, split: str, max_n: int, final: Path):
        self.split, self.max_n, self.final = split, max_n, final
        self.resolved = split
        self.class_names: list = []
        self.items: list = []
        self.n_listed = 0
        self.empty_classes: list = []
        self.builder: cache_lib.EntryBuilder | None = None
        self.out = ""


# --------------------------------------------------------------------------------------
# Folder
# --------------------------------------------------------------------------------------


class FolderSource:
    def __init__(self, path: str, wanted=()):
        root = Path(path).expanduser().absolute()
        if not root.is_dir():
            raise DataError(f"data.source={path!r}: no such folder")
        for _ in range(3):  # descend through a single top-level folder
            subs = [p.name for p in root.iterdir() if p.is_dir() and not _ignored(p.name)]
            if _split_like(subs) or set(wanted) & set(subs) or len(subs) != 1:
                break
            root = root / subs[0]
        self.root = root
        self.where = str(root)

    def splits(self):
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not _ignored(p.name))

    def identity(self, split: str) -> dict:
        # The cache entry's key: the image files training reads (`classes`' listing,
        # at any depth and through links to folders), by name, and the mtime of the
        # split folder, of each class folder (an empty one is a class too) and of
        # every folder holding images: adding, removing, renaming or replacing a
        # file anywhere changes it. One listing and a stat per folder, not per
        # image; files rewritten in place are not noticed (delete the cache entry
        # to rebuild).
        d = self.root / split
        names = image_files(d)
        folders = {""} | {e.name for e in os.scandir(d) if e.is_dir() and not _ignored(e.name)}
        for parent in {n.rpartition("/")[0] for n in names}:
            while parent and parent not in folders:
                folders.add(parent)
                parent = parent.rpartition("/")[0]
        h = hashlib.sha256()
        for name in names:
            h.update(f"{name}\n".encode())
        for f in sorted(folders):
            h.update(f"{f}/\t{(d / f).stat().st_mtime_ns}\n".encode())
        return {"kind": "folder", "path": str(self.root), "split": split, "files": len(names), "digest": h.hexdigest()}

    def classes(self, split: str) -> dict:
        d = self.root / split
        classes: dict = {}
        for e in sorted(os.scandir(d), key=lambda e: e.name):
            if e.is_dir() and not _ignored(e.name):
                classes[e.name] = []
        # The same listing as the folder's identity (reproduce.sources): links
        # to folders followed, a link loop refused.
        for name in image_files(d):
            if "/" in name:  # files directly in the split folder belong to no class
                classes[name.split("/", 1)[0]].append((f"{split}/{name}", name))
        return classes


# --------------------------------------------------------------------------------------
# Archive
# --------------------------------------------------------------------------------------


class ArchiveSource:
    def __init__(self, path: str, kind: str):
        p = Path(path).expanduser().absolute()
        if not p.is_file():
            raise DataError(f"data.source={path!r}: no such file")
        self.path, self.kind, self.where = p, kind, str(p)
        self._layout: _Layout | None = None
        self.blobs: dict | None = None  # compressed tar: member bytes, if kept

    def identity(self) -> dict:
        st = self.path.stat()
        return {"kind": "archive", "path": str(self.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def check_size(self, name: str, nbytes: int) -> None:
        """DataError for an image member too large to read (its header's size, before
        any byte of it is read: a compressed archive can hold gigabytes in a few MB)."""
        if not is_image_name(name) or _ignored(name):
            return  # never read
        msg = dec.too_big(
            nbytes,
            f"the member {name!r} of the archive {self.path}",
            "Remove it from the archive, or unpack the archive without it and point data.source at the folder.",
        )
        if msg:
            raise DataError(msg)

    def layout(self, wanted=()) -> _Layout:
        if self._layout is not None:
            return self._layout
        files, dirs = [], set()
        try:
            if self.kind == "zip":
                with zipfile.ZipFile(self.path) as z:
                    for info in z.infolist():
                        name = _norm(info.filename)
                        if info.is_dir():
                            dirs.add(name)
                        else:
                            self.check_size(name, info.file_size)
                            files.append((name, info.filename))
            elif self.kind == "tar":
                with tarfile.open(self.path, mode="r:") as t:
                    for m in t.getmembers():
                        if m.isdir():
                            dirs.add(_norm(m.name))
                        elif m.isfile():
                            self.check_size(_norm(m.name), m.size)
                            files.append((_norm(m.name), (m.offset_data, m.size)))
            else:  # compressed: a streaming pass (decompresses everything)
                # Keep the encoded images while they fit in STREAM_MEMORY_BYTES, so a
                # small archive (both shared ones: ~100 MB of JPEG/WebP) is read once.
                blobs, total = {}, 0
                with tarfile.open(self.path, mode="r|*") as t:
                    for m in t:
                        if m.isdir():
                            dirs.add(_norm(m.name))
                        elif m.isfile():
                            name = _norm(m.name)
                            self.check_size(name, m.size)
                            files.append((name, m.name))
                            if blobs is not None and is_image_name(name) and not _ignored(name):
                                blobs[m.name] = t.extractfile(m).read()
                                total += m.size
                                if total > STREAM_MEMORY_BYTES:
                                    blobs = None  # too big: a second pass streams it
                self.blobs = blobs
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
            raise DataError(
                f"cannot read the archive {self.path}: {type(e).__name__}: {e}. "
                f"Is it complete? (compare its checksum, or unpack it and point "
                f"data.source at the folder)"
            ) from None
        self._layout = _Layout(files, dirs, self.where, wanted)
        return self._layout


# --------------------------------------------------------------------------------------
# Load (building what is missing)
# --------------------------------------------------------------------------------------


def load_splits(source: str, requests, size: int, root: Path, same_classes: bool = False) -> list:
    """ImageArrays for each (split, max_n) of `requests`, building missing cache entries.

    Missing entries of one source are built together: a compressed archive is
    streamed once for all of them. same_classes: fail (before decoding anything)
    unless all requested splits have the same class folders.
    """
    kind = archive_kind(source)
    p = Path(source).expanduser()
    if kind is None and not p.is_dir():
        if p.exists():
            raise DataError(
                f"data.source={source!r} is a file but not a supported archive; use a "
                f"folder in ImageFolder layout or a {', '.join(ARCHIVE_KINDS)} archive"
            )
        raise DataError(
            f"data.source={source!r} does not exist. Give a folder "
            f"<root>/<split>/<class>/<image>, an archive of one "
            f"({', '.join(ARCHIVE_KINDS)}), 'synthetic', or 'tfds:<name>'."
        )
    wanted = [s for s, _ in requests]
    src = ArchiveSource(source, kind) if kind else FolderSource(source, wanted)
    name = src.path.name if kind else src.root.name
    reqs = []
    for split, max_n in requests:
        if kind:
            ident = src.identity()
        else:
            with warnings.catch_warnings():  # announced below, from the manifest
                warnings.simplefilter("ignore")
                ident = src.identity(resolve_split(split, src.splits(), src.where))
        final = cache_lib.entry_path(root, name, split, size, max_n, ident)
        r = _Request(split, max_n, final)
        r.identity = ident
        reqs.append(r)
    missing = [r for r in reqs if not cache_lib.usable(r.final)]
    # Equal requests (e.g. train_split == val_split) are built once.
    todo = list({str(r.final): r for r in missing}.values())
    if todo:
        _plan(src, kind, todo)
        if same_classes:
            planned = {str(r.final): r for r in todo}
            names = [
                (r.split, planned[str(r.final)].resolved, planned[str(r.final)].class_names)
                if str(r.final) in planned
                else (
                    r.split,
                    cache_lib.read_manifest(r.final)["split"],
                    cache_lib.read_manifest(r.final)["class_names"],
                )
                for r in reqs
            ]
            check_classes(names[0][1], names[0][2], src.where)  # before decoding
            for _, split, cls in names[1:]:
                check_same_classes(names[0][1], names[0][2], split, cls, source)
        _build(src, kind, todo, size, source)
    out = []
    built = {str(r.final) for r in todo}
    for r in reqs:
        m = cache_lib.read_manifest(r.final)
        if m.get("split") != r.split:  # say which folder stands in, on every load
            warnings.warn(
                f"split {r.split!r} not found in {m.get('where', source)}; using {m['split']!r} instead", stacklevel=3
            )
        if m.get("empty_classes"):  # on every load too: the labels depend on it
            empty = m["empty_classes"]
            warnings.warn(
                f"{len(empty)} class folder(s) of split {m['split']!r} in "
                f"{m.get('where', source)} hold no images and are left out: "
                f"{', '.join(empty[:20])}{' ...' if len(empty) > 20 else ''}. Put their "
                f"images in, or delete the folders.",
                stacklevel=3,
            )
        if str(r.final) not in built:
            cache_lib.warn_if_over_tolerance(r.final, m)
        out.append(cache_lib.open_entry(r.final, source))
    return out


def _plan(src, kind, reqs) -> None:
    """Resolve each request's split and list its images (no decoding)."""
    layout = src.layout([r.split for r in reqs]) if kind else None
    for r in reqs:
        if kind:
            with warnings.catch_warnings():  # the fallback is announced by load_splits
                warnings.simplefilter("ignore")
                r.resolved = resolve_split(r.split, layout.splits(), src.where)
            classes = layout.tree[r.resolved]
            if layout.loose:
                warnings.warn(
                    f"{layout.loose} image(s) in {src.where} are not inside a <split>/<class>/ folder and are ignored",
                    stacklevel=3,
                )
        else:
            r.resolved = r.identity["split"]
            classes = src.classes(r.resolved)
        r.class_names, r.items, r.n_listed = _item_list(classes, src.where, r.resolved, r.max_n)
        r.empty_classes = sorted(c for c, files in classes.items() if not files)


def _build(src, kind, reqs, size: int, source: str) -> None:
    """Decode planned requests into new cache entries."""
    t0 = time.perf_counter()
    total = sum(len(r.items) for r in reqs)
    for r in reqs:
        r.builder = cache_lib.EntryBuilder(r.final)
        r.out = r.builder.allocate(len(r.items), size)
    try:
        label = f"{Path(source).name} {'+'.join(r.resolved for r in reqs)}"
        if kind == "tarstream" and src.blobs is not None:  # read once, in memory
            jobs = []
            for r in reqs:
                items = [(i, name, src.blobs[payload]) for i, (_, name, payload) in enumerate(r.items)]
                jobs.extend(dec.chunked(r.out, size, ("bytes", None), items))
            bad = dec.run_jobs(jobs, total, label)
        elif kind == "tarstream":
            missing: list = []
            bad = dec.run_jobs(_stream_jobs(src.path, reqs, size, missing), total, label)
            bad.extend(missing)
        else:
            jobs = []
            for r in reqs:
                if kind in ("zip", "tar"):
                    rd = (kind, str(src.path))
                else:
                    rd = ("file", str(src.root / r.resolved))
                items = [(i, name, payload) for i, (_, name, payload) in enumerate(r.items)]
                jobs.extend(dec.chunked(r.out, size, rd, items))
            bad = dec.run_jobs(jobs, total, label)
    except BaseException:
        for r in reqs:
            r.builder.abort()
        raise
    seconds = time.perf_counter() - t0
    by_out: dict = {r.out: [] for r in reqs}
    for job_out, index, name, msg in bad:
        by_out[job_out].append((index, name, msg))
    for r in reqs:
        rbad = by_out[r.out]
        try:
            skipped = check_bad_images(rbad, len(r.items), src.where, r.resolved, r.builder)
        except DataError:
            for other in reqs:
                other.builder.abort()
            raise
        labels = np.array([lab for lab, _, _ in r.items], dtype=np.int32)
        r.builder.commit(
            labels,
            [i for i, _, _ in rbad],
            {
                "source": source,
                "where": src.where,
                "identity": r.identity,
                "split_requested": r.split,
                "split": r.resolved,
                "class_names": r.class_names,
                "n_listed": r.n_listed,
                "empty_classes": r.empty_classes,
                "max": r.max_n,
                "skipped": [[name, msg] for _, name, msg in sorted(rbad)],
                "skipped_names": skipped,
                "build_seconds": round(seconds, 2),
                "workers": dec.num_workers() if total >= dec.PARALLEL_MIN else 1,
            },
        )


def _stream_jobs(path: Path, reqs, size: int, missing: list):
    """Jobs fed from one front-to-back read of a compressed tar.

    Members listed by the first pass but not met in this one (the archive changed
    in between) are appended to `missing` as failures.
    """
    wanted = {}
    for r in reqs:
        for i, (_, name, payload) in enumerate(r.items):
            wanted[payload] = (r, i, name)  # payload = the member's raw name
    seen: set = set()
    buffers = {id(r): [] for r in reqs}
    nbytes = {id(r): 0 for r in reqs}
    with tarfile.open(path, mode="r|*") as t:
        for m in t:
            hit = wanted.get(m.name) if m.isfile() else None
            if hit is None:
                continue
            r, i, name = hit
            seen.add(m.name)
            big = dec.too_big(m.size, "this member", "The archive changed since it was listed.")
            if big:  # grew between the two reads: never read into memory
                missing.append((r.out, i, name, big))
                continue
            f = t.extractfile(m)
            data = f.read() if f is not None else b""
            buffers[id(r)].append((i, name, data))
            nbytes[id(r)] += len(data)
            if len(buffers[id(r)]) >= dec.CHUNK_ITEMS or nbytes[id(r)] >= dec.CHUNK_BYTES:
                yield (r.out, size, ("bytes", None), buffers[id(r)])
                buffers[id(r)], nbytes[id(r)] = [], 0
    for r in reqs:
        if buffers[id(r)]:
            yield (r.out, size, ("bytes", None), buffers[id(r)])
    for payload, (r, i, name) in wanted.items():
        if payload not in seen:
            missing.append((r.out, i, name, "member vanished between the two reads"))
