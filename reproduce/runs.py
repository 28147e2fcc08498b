"""The run directory: the one module that owns its format.

Training writes through it; the ablation runner and the report read through it.
It imports only the standard library (plus NumPy for the array files), so the
report never loads Keras.

Layout of one run (``run_dir(root, preset, label, config, seed)``)::

    <root>/<preset>/<label>-<fingerprint>/seed<seed>/
        config.json        resolved configuration tree + {"meta": {...}}
        env.json           backend, library versions, device, git commit, host, date
        metrics.csv        one row per completed epoch (see METRIC_COLUMNS)
        state/             resumable training state (weights, optimizer, schedule)
        tensorboard/       TensorBoard logs (TensorFlow installed only)
        val_correct.npz    per validation image: label, top-1/top-5 correctness for
                           the centre crop and the ten views (paired bootstrap)
        conv1_kernels.npz  conv1 kernels per tower (report's Fig. 3)
        failure.json       why the last attempt stopped (NaN loss, ...), if it did
        result.json        written last and atomically, only on success
        .lock              held (flock) by the process training the run; see `lock`

``label`` is ``baseline`` or an ablation's name. Runs with the same preset,
label, configuration fingerprint and seed are the same experiment: a finished
one is never run again, and results from other machines or days that are copied
into the same root simply accumulate.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import errno
import fcntl
import io
import json
import os
import platform
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

CONFIG = "config.json"
ENV = "env.json"
METRICS = "metrics.csv"
RESULT = "result.json"
FAILURE = "failure.json"
STATE = "state"
TENSORBOARD = "tensorboard"
VAL_CORRECT = "val_correct.npz"
CONV1 = "conv1_kernels.npz"

# Columns of metrics.csv, in order. Errors are fractions in [0, 1].
METRIC_COLUMNS = [
    "epoch",  # 0-based
    "loss",
    "top1_err",
    "top5_err",
    "val_loss",
    "val_top1_err",
    "val_top5_err",
    "lr",
    "epoch_time_s",
    "images_per_s",
]

# Keys of result.json (all present on success).
RESULT_KEYS = [
    "status",  # "ok"
    "epochs",  # completed epochs
    "val_top1_err",  # centre crop, final weights
    "val_top5_err",
    "val_top1_err_10view",  # ten views, softmax averaged (None if not evaluated)
    "val_top5_err_10view",
    "train_top1_err",  # last epoch's training error (augmented, dropout on)
    "train_top5_err",
    "train_top1_err_clean",  # training images, centre crop, inference mode
    "wall_time_s",  # all attempts together
    "images_per_s",  # training throughput, mean over epochs
    "epochs_to_target",  # first epoch (1-based) whose train top-1 <= target, or None
]
# Also in result.json, absent in runs stored before they existed:
#   "censored": stopped by the caller's epoch limit before its target or its epochs
#   "n_val", "precision"


def current_umask() -> int:
    """The process's umask (reading it means setting it; it is put back at once)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def atomic_write_text(path: os.PathLike, text: str) -> None:
    """Write `text` so that `path` is either the old or the whole new file (kill -9 safe)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; a run store is shared, so the file gets the
        # mode open() would give it.
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def read_json(path: os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


# --------------------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------------------


def default_root() -> Path:
    return Path(os.environ.get("REPRODUCE_RUNS", "runs"))


def run_dir(root: os.PathLike, preset: str, label: str, fingerprint: str, seed: int) -> Path:
    return Path(root) / preset / f"{label}-{fingerprint}" / f"seed{seed}"


class RunDirError(RuntimeError):
    """A run directory that cannot be used as asked; the message names it and the fix."""


class RunLocked(RunDirError):
    """Another process is training this run."""


LOCK = ".lock"


@contextlib.contextmanager
def lock(path: os.PathLike):
    """Hold the run directory `path` (created if need be) for this process.

    An exclusive `fcntl.flock` on `path/.lock`: the kernel releases it when the
    holder exits, however it ends (kill -9 included), so a lock is never stale;
    the file stays and only tells who held it last. flock works across machines
    on NFSv4 and on Lustre mounted with -o flock. Raises RunLocked (naming the
    holder) at once if another process holds it, and RunDirError if the folder
    cannot be written."""
    path = Path(path)
    fd = None
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        # Every file is replaced through a new temporary one: the folder itself
        # must take new files, not just the lock file that may be there already.
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        if fd is not None:
            os.close(fd)
        raise RunDirError(
            f"cannot write in {path} ({e.strerror or e}: {e.filename}): training writes its results "
            "there. Make that folder writable, or train into another one (RUNS=... with "
            "make, --runs or --run-dir on the command line)."
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunDirError(
                    f"cannot lock {path / LOCK} ({e.strerror or e}): its file system does "
                    "not support file locks (NFS needs its lock service; Lustre the "
                    "'flock' mount option). Put the runs folder on one that does."
                ) from None
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip()
            raise RunLocked(
                f"{path} is being trained by another process ({holder or 'unknown holder'}); "
                "this one leaves it to that process. When that process ends, the run is "
                "finished, or resumes where it stopped if you start it again."
            ) from None
        when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()} since {when}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def holder(path: os.PathLike) -> Optional[str]:
    """Who holds the lock of run directory `path` (as `lock` wrote it), or None if
    no process does. A look, not a claim: `lock` is the claim."""
    try:
        fd = os.open(Path(path) / LOCK, os.O_RDONLY)
    except OSError:
        return None  # no lock file: never held
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown holder"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def check_writable(root: os.PathLike) -> None:
    """Raise RunDirError unless runs can be written under `root` (created later
    if missing: its nearest existing ancestor must then be writable)."""
    p = Path(root).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    if not (p.is_dir() and os.access(p, os.W_OK | os.X_OK)):
        raise RunDirError(
            f"cannot write in {p}: runs are stored under {Path(root)}. Make that folder "
            "writable, or choose another (RUNS=... with make, --runs on the command line)."
        )


def is_finished(path: os.PathLike) -> bool:
    p = Path(path) / RESULT
    if not p.exists():
        return False
    try:
        return read_json(p).get("status") == "ok"
    except (OSError, ValueError):
        return False


def can_extend(path: os.PathLike, epoch_limit: Optional[int]) -> bool:
    """A finished run that was stopped by an epoch limit (``censored`` in
    result.json) before its target or its configured epochs, and may train on
    under `epoch_limit` (None: no limit)."""
    try:
        res = read_json(Path(path) / RESULT)
    except (OSError, ValueError):
        return False
    if not res.get("censored"):
        return False
    return epoch_limit is None or int(epoch_limit) > int(res.get("epochs") or 0)


# --------------------------------------------------------------------------------------
# Writers (used by training)
# --------------------------------------------------------------------------------------


def write_config(path: os.PathLike, config_dict: dict, meta: dict) -> None:
    """meta: {"preset", "label", "seed", "fingerprint", "overrides", "command"}."""
    atomic_write_json(Path(path) / CONFIG, {**config_dict, "meta": meta})


def git_commit(cwd: Optional[os.PathLike] = None) -> dict:
    cwd = cwd or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return {"commit": sha or None, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment(extra: Optional[dict] = None) -> dict:
    """What machine and software a run used (no heavy imports beyond those loaded)."""
    import sys

    env = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "git": git_commit(),
    }
    versions = {}
    for mod in ("keras", "tensorflow", "jax", "jaxlib", "numpy", "tensorflow_datasets"):
        m = sys.modules.get(mod)
        if m is not None:
            versions[mod] = getattr(m, "__version__", None)
    env["versions"] = versions
    if extra:
        env.update(extra)
    return env


def write_env(path: os.PathLike, env: dict) -> None:
    atomic_write_json(Path(path) / ENV, env)


def read_metrics_rows(path: os.PathLike) -> list[dict]:
    p = Path(path) / METRICS
    if not p.exists():
        return []
    with open(p, newline="") as f:
        rows = []
        for row in csv.DictReader(f):
            rows.append({k: _num(v) for k, v in row.items()})
        return rows


def _num(v: str):
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


def write_metrics_rows(path: os.PathLike, rows: list[dict]) -> None:
    """Rewrite metrics.csv atomically with exactly these rows (one per epoch)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in sorted(rows, key=lambda r: r["epoch"]):
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in METRIC_COLUMNS})
    atomic_write_text(Path(path) / METRICS, buf.getvalue())


def append_metrics_row(path: os.PathLike, row: dict) -> None:
    """Add (or replace) one epoch's row; epochs stay unique and ordered."""
    rows = [r for r in read_metrics_rows(path) if r["epoch"] != row["epoch"]]
    rows.append(row)
    write_metrics_rows(path, rows)


def truncate_metrics(path: os.PathLike, completed_epochs: int) -> None:
    """Keep rows for epochs < completed_epochs (rows of an epoch whose state was lost)."""
    rows = read_metrics_rows(path)
    keep = [r for r in rows if r["epoch"] < completed_epochs]
    if len(keep) != len(rows):
        write_metrics_rows(path, keep)


def write_result(path: os.PathLike, result: dict) -> None:
    missing = [k for k in RESULT_KEYS if k not in result]
    if missing:
        raise ValueError(f"result is missing {missing}")
    atomic_write_json(Path(path) / RESULT, result)
    fp = Path(path) / FAILURE
    if fp.exists():
        fp.unlink()


def write_failure(path: os.PathLike, reason: str, details: Optional[dict] = None) -> None:
    atomic_write_json(
        Path(path) / FAILURE,
        {
            "reason": reason,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **(details or {}),
        },
    )


def write_val_correct(path: os.PathLike, **arrays) -> None:
    import numpy as np

    p = Path(path) / VAL_CORRECT
    tmp = p.with_name("." + p.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, p)


def write_conv1(path: os.PathLike, **kernels) -> None:
    import numpy as np

    p = Path(path) / CONV1
    tmp = p.with_name("." + p.name + ".tmp.npz")
    np.savez_compressed(tmp, **kernels)
    os.replace(tmp, p)


# --------------------------------------------------------------------------------------
# Publishing: the small files of finished runs, into a store committed with the code
# --------------------------------------------------------------------------------------

# What a published run keeps: everything the report reads, nothing it does not
# (no weights, optimizer state or TensorBoard logs).
PUBLISHED_FILES = (CONFIG, ENV, METRICS, RESULT, VAL_CORRECT, CONV1)
PUBLISHED_MAX_BYTES = 1 << 20


@dataclass
class Published:
    copied: list  # destination run directories written now
    unchanged: list  # already in the store, identical
    kept: list  # (destination, why): already in the store with other contents, left as is
    skipped: list  # (source, why): not finished, failed, or too large


def publish(src_root: os.PathLike, dst_root: os.PathLike) -> Published:
    """Copy every finished run under `src_root` into `dst_root` (same relative
    layout, `PUBLISHED_FILES` only). A run directory appears in the store whole
    or not at all (built beside it, then renamed). A run already published is
    never overwritten: finished runs do not change, so different contents mean
    two machines ran the same experiment and seed, and the first one stays."""
    import filecmp
    import shutil

    src_root, dst_root = Path(src_root), Path(dst_root)
    out = Published([], [], [], [])
    for run in iter_runs(src_root):
        if not run.finished or run.failure is not None:
            out.skipped.append((run.path, "not finished" if not run.finished else "failed"))
            continue
        files = [run.path / f for f in PUBLISHED_FILES if (run.path / f).is_file()]
        size = sum(f.stat().st_size for f in files)
        if size > PUBLISHED_MAX_BYTES:
            out.skipped.append((run.path, f"{size / 1e6:.1f} MB of files, over the "
                                          f"{PUBLISHED_MAX_BYTES / 1e6:.1f} MB a published run may hold"))
            continue
        dst = dst_root / run.path.relative_to(src_root)
        if dst.exists():
            same = all((dst / f.name).is_file() and filecmp.cmp(f, dst / f.name, shallow=False)
                       for f in files)
            if same:
                out.unchanged.append(dst)
            else:
                out.kept.append((dst, f"differs from {run.path}; the published copy is kept"))
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.publish-"))
        try:
            for f in files:
                shutil.copy2(f, tmp / f.name)
            os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; a store is shared
            os.replace(tmp, dst)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        out.copied.append(dst)
    return out


# --------------------------------------------------------------------------------------
# Readers (used by the runner and the report)
# --------------------------------------------------------------------------------------


@dataclass
class Run:
    path: Path
    config: dict  # the resolved tree, without "meta"
    meta: dict  # preset, label, seed, fingerprint, overrides, command
    env: dict
    metrics: list  # rows of metrics.csv
    result: Optional[dict]  # None unless finished
    failure: Optional[dict]

    @property
    def preset(self) -> str:
        return self.meta.get("preset", "?")

    @property
    def label(self) -> str:
        return self.meta.get("label", "?")

    @property
    def seed(self) -> int:
        return self.meta.get("seed", self.config.get("train", {}).get("seed", 0))

    @property
    def finished(self) -> bool:
        return bool(self.result) and self.result.get("status") == "ok"

    def val_correct(self) -> Optional[dict]:
        p = self.path / VAL_CORRECT
        if not p.exists():
            return None
        import numpy as np

        with np.load(p) as z:
            return {k: z[k] for k in z.files}

    def conv1_kernels(self) -> Optional[dict]:
        p = self.path / CONV1
        if not p.exists():
            return None
        import numpy as np

        with np.load(p) as z:
            return {k: z[k] for k in z.files}


def load_run(path: os.PathLike) -> Optional[Run]:
    path = Path(path)
    try:
        cfg = read_json(path / CONFIG)
    except (OSError, ValueError):
        return None
    meta = cfg.pop("meta", {})
    env = read_json(path / ENV) if (path / ENV).exists() else {}
    result = None
    if (path / RESULT).exists():
        try:
            result = read_json(path / RESULT)
        except ValueError:
            result = None
    failure = read_json(path / FAILURE) if (path / FAILURE).exists() else None
    return Run(path, cfg, meta, env, read_metrics_rows(path), result, failure)


def iter_runs(root: os.PathLike) -> Iterator[Run]:
    """Every run directory (one holding config.json) below root, sorted by path."""
    root = Path(root)
    if not root.exists():
        return
    for cfg in sorted(root.rglob(CONFIG)):
        run = load_run(cfg.parent)
        if run is not None:
            yield run
