"""How the library writes files: where its cache lies, how a file is replaced in
one step, which permissions new files and folders get, and whether the process
that left a temporary file behind still runs.

Standard library only: the report and the decode workers import it.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path


def cache_root(cache_dir: str = "") -> Path:
    """Where decoded images, dataset digests and JAX's compiled programs are kept:
    `cache_dir` (`data.cache_dir`) if given, else $REPRODUCE_CACHE, else
    ~/.cache/reproduce."""
    root = (
        cache_dir or os.environ.get("REPRODUCE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "reproduce")
    )
    return Path(root).expanduser().absolute()


def current_umask() -> int:
    """The process's umask (reading it means setting it; it is put back at once)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def as_created(path: os.PathLike) -> None:
    """Give `path` the mode open() or mkdir() would have given it under the umask.
    mkstemp and mkdtemp make files and folders private (0600, 0700); run stores,
    caches and reports are read by other users too."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~current_umask())


def host_tag() -> str:
    """This machine's name as temporary names carry it: no '-', which separates
    their fields."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())


# A temporary file of `replacing`: .<name>.tmp-<host>-<pid>-<random><suffix>.
TMP_MARK = ".tmp-"


def _remove_stale_temps(path: Path) -> None:
    """The temporary files that writers of `path` on this machine left when they
    were killed (their process is gone): nothing else would remove them. A live
    writer's, or another machine's (its process cannot be looked up here), stays."""
    prefix = f".{path.name}{TMP_MARK}{host_tag()}-"
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for e in entries:
        m = re.fullmatch(rf"{re.escape(prefix)}(\d+)-[a-z0-9_]+\.\w+", e.name)
        if m and not pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(e.path)


@contextlib.contextmanager
def replacing(path: os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file beside `path` for the with-block to write. When the block
    ends, the file is flushed to disk, given the mode of a new file and renamed
    over `path`, so `path` is the old file or the whole new one whenever the
    process is killed; if the block raises, the file is removed. `suffix` ends the
    temporary name, for writers that want theirs (NumPy's savez: .npz, Keras'
    save: .keras). The name carries this machine and process, so that the next
    write of `path` removes what a killed writer left (`_remove_stale_temps`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    fd, name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}{TMP_MARK}{host_tag()}-{os.getpid()}-", suffix=suffix
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        as_created(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: os.PathLike, text: str) -> None:
    """Write `text` so that `path` is either the old or the whole new file (kill -9 safe)."""
    with replacing(path) as tmp:
        tmp.write_text(text)


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine with that id is running (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
