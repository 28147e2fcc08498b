"""Replace a folder by a finished build of it, so that a reader never sees part of
one build beside part of another (report.md of one build, report.pdf of the
previous one).

The build is written into a hidden folder beside the target (`new_folder`: the
same file system, so it can be renamed onto it), held with an flock while it is
written (`hold`), so that `remove_stale` removes only what killed builds left,
and then put in place (`swap_in`): one atomic exchange where the system has
renameat2 (Linux), else two renames. A target that holds other things too (the
published store: results/ keeps its runs beside the report) keeps them; only the
build's own entries are replaced there, each whole.

Standard library only. Errors are OSErrors; the caller says them in its terms.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from reproduce.files import as_created


def new_folder(out: Path) -> Path:
    """An empty folder ".<out>.new-*" beside `out`, with the mode a new folder gets
    under the umask (mkdtemp makes it private; a report is for every reader)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    as_created(build)
    return build


def hold(folder: Path) -> int:
    """An open descriptor of `folder` with an exclusive flock on it (kept across the
    renames of the swap: a lock belongs to the folder, not its name); the kernel
    drops it when the build ends, however it ends."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pass  # no locks on this file system: then stale folders are left, never a live one removed
    return fd


def remove_stale(out: Path) -> list:
    """Remove the build folders (".<out>.new-*", ".<out>.old-*") that a killed build
    left beside `out`; a folder a running build holds (`hold`) is left alone.
    Returns the folders removed."""
    removed = []
    for p in sorted(out.parent.glob(f".{out.name}.new-*")) + sorted(out.parent.glob(f".{out.name}.old-*")):
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # held: a build in progress (or no locks here: left, to be safe)
        finally:
            os.close(fd)
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0


def swap_in(build: Path, out: Path, own: Iterable[str], last: Iterable[str] = ()) -> None:
    """Put the finished folder `build` in place of `out`: one atomic exchange where
    the system has it, else two renames (in between, `out` is briefly absent:
    still never a mix of two builds). When `out` holds entries besides the names
    in `own` (hidden ones aside), only `build`'s entries are moved onto theirs,
    the names in `last` last, in that order."""
    if _shared(out, own):
        _place_entries(build, out, tuple(last))
    elif not out.exists():
        os.rename(build, out)
    elif exchange(build, out):
        shutil.rmtree(build)  # now the previous folder
    else:
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        held = hold(old)
        try:
            os.rename(out, old / out.name)
            os.rename(build, out)
            shutil.rmtree(old)
        finally:
            os.close(held)


def _shared(out: Path, own: Iterable[str]) -> bool:
    own = set(own)
    return out.is_dir() and any(p.name not in own and not p.name.startswith(".") for p in out.iterdir())


def _place_entries(build: Path, out: Path, last: tuple) -> None:
    """Move each entry of `build` onto its name in `out`, every one complete before
    the first is replaced; the names in `last` are replaced one right after the
    other, last."""
    names = sorted(p.name for p in build.iterdir())
    order = [n for n in names if n not in last] + [n for n in last if n in names]
    for name in order:
        src, dst = build / name, out / name
        if src.is_dir() and dst.is_dir():
            if exchange(src, dst):
                continue  # src now holds the old folder, removed with `build`
            shutil.rmtree(dst)
        os.replace(src, dst)
    shutil.rmtree(build, ignore_errors=True)
