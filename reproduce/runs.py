"""The run directory: the one module that owns its format.

Training writes through it; the ablation runner and the report read through it.
It imports only the standard library (plus NumPy for the array files), so the
report never loads Keras.

Layout of one run (``run_dir(root, preset, label, config, seed)``)::

    <root>/<preset>/<label>-<fingerprint>/seed<seed>/
        config.json        resolved configuration tree + {"meta": {...}}
        env.json           backend, library versions, device, git commit, host, date
        metrics.csv        one row per completed epoch (see METRIC_COLUMNS)
        state/state.npz    resumable training state (weights, optimizer, schedule),
                           replaced atomically after every completed epoch
        tensorboard/       TensorBoard logs (TensorFlow installed only)
        val_correct.npz    per validation image: label, top-1/top-5 correctness for
                           the centre crop and the ten views (paired bootstrap)
        conv1_kernels.npz  conv1 kernels per tower (report's Fig. 3)
        classes.json       {"class_names": [...]}: the model's output order
        model.keras        the inference model (uint8 SxS RGB in, class probabilities
                           out; see reproduce.inference), written just before result.json
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
import filecmp
import io
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reproduce.files import as_created, atomic_write_text, replacing

CONFIG = "config.json"
ENV = "env.json"
METRICS = "metrics.csv"
RESULT = "result.json"
FAILURE = "failure.json"
STATE = "state"
STATE_FILE = "state.npz"  # in STATE
TENSORBOARD = "tensorboard"
VAL_CORRECT = "val_correct.npz"
CONV1 = "conv1_kernels.npz"
MODEL = "model.keras"
CLASSES = "classes.json"

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


def format_duration(seconds: float | None) -> str:
    """A duration for people (a run's wall_time_s, a plan's estimate): '45 s',
    '12 min', '3 h 05 min'; 'unknown' for None or a value that is not finite."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    s = int(round(seconds))
    if s < 90:
        return f"{s} s"
    h, m = divmod(round(s / 60), 60)
    return f"{h} h {m:02d} min" if h else f"{m} min"


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


class RunFileError(ValueError):
    """A file of a run directory that cannot be read as what it should be
    (truncated, garbage, wrong shape). The message names the file, what is wrong
    and the fix; `path` and `problem` are kept for listings."""

    FIX = "restore the file from a copy, or delete the run directory so that the run is trained again"

    def __init__(self, path: os.PathLike, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}; {self.FIX}")


def read_run_json(path: os.PathLike) -> dict:
    """A run's JSON file, which must hold an object; else `RunFileError` naming it."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except UnicodeDecodeError:
        raise RunFileError(path, "not text (damaged)") from None
    except json.JSONDecodeError as e:
        raise RunFileError(path, f"not valid JSON (damaged or truncated: {e.msg} at line {e.lineno})") from None
    if not isinstance(obj, dict):
        raise RunFileError(path, f"holds a JSON {type(obj).__name__}, not an object")
    return obj


# --------------------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------------------


def default_root() -> Path:
    """$REPRODUCE_RUNS, else ./runs. An empty value counts as unset: as a path it
    would be the current folder, and runs would land among the sources."""
    return Path(os.environ.get("REPRODUCE_RUNS", "").strip() or "runs")


def run_dir(root: os.PathLike, preset: str, label: str, fingerprint: str, seed: int) -> Path:
    return Path(root) / preset / f"{label}-{fingerprint}" / f"seed{seed}"


class RunDirError(RuntimeError):
    """A run directory that cannot be used as asked; the message names it and the fix."""


class RunConflict(RunDirError):
    """The run directory holds a run of a different configuration, a damaged one, or
    a state that cannot be resumed."""


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
        held_by = _claim(
            fd,
            path / LOCK,
            "(NFS needs its lock service; Lustre the 'flock' mount option). Put the runs folder on one that does.",
        )
        if held_by is not None:
            raise RunLocked(
                f"{path} is being trained by another process ({held_by or 'unknown holder'}); "
                "this one leaves it to that process. When that process ends, the run is "
                "finished, or resumes where it stopped if you start it again."
            )
        yield path
    finally:
        os.close(fd)  # releases the lock


def _claim(fd: int, lock_file: Path, fix: str) -> str | None:
    """Take the exclusive flock on the open `lock_file` and write who holds it
    (pid, host, since when) into it; None when taken, else what the holder wrote
    (the lock is another process's). A file system without locks is a
    RunDirError whose message ends with `fix`."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise RunDirError(
                f"cannot lock {lock_file} ({e.strerror or e}): its file system does not support file locks {fix}"
            ) from None
        return os.pread(fd, 512, 0).decode(errors="replace").strip()
    when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()} since {when}\n".encode(), 0)
    return None


def holder(path: os.PathLike) -> str | None:
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


# What a run is, from its files: the one rule (`status_of`) that the runner, the
# trainer, publishing and the report all read. Each caller chooses which statuses
# it accepts (a learning-rate grid takes DIVERGED as the rate's answer; the report
# counts FINISHED only), none derives its own.
FINISHED = "finished"  # result.json with status ok, and no failure since
DIVERGED = "diverged"  # the last training stopped on a non-finite loss (failure.json, reason diverged)
FAILED = "failed"  # the last training stopped for another recorded reason
UNFINISHED = "unfinished"  # neither: not started, running, or interrupted (killed before its result)
STATUSES = (FINISHED, DIVERGED, FAILED, UNFINISHED)


def status_of(result: dict | None, failure: dict | None) -> str:
    """The status of a run whose result.json and failure.json hold `result` and
    `failure` (None: absent). A failure beside a result is the newer of the two
    (`write_result` removes failure.json): a finished run that was extended under a
    higher epoch cap and then diverged is DIVERGED, and its result.json is what it
    reached before. A run that diverged diverges again when trained again with the
    same configuration and seed."""
    if isinstance(failure, dict):
        return DIVERGED if failure.get("reason") == "diverged" else FAILED
    if isinstance(result, dict) and result.get("status") == "ok":
        return FINISHED
    return UNFINISHED


def _read_optional_json(p: Path) -> dict | None:
    """A run's JSON file, or None if absent or unreadable (as if it were absent)."""
    try:
        obj = read_json(p)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def read_status(path: os.PathLike) -> str:
    """`status_of` the run directory `path`, from its result.json and failure.json
    only (a file that cannot be read counts as absent; `load_run` reports it)."""
    return status_of(_read_optional_json(Path(path) / RESULT), _read_optional_json(Path(path) / FAILURE))


def read_result(path: os.PathLike, checked: bool = False) -> dict | None:
    """The run's result.json (None if absent or unreadable). A DIVERGED run may
    have one: what it reached before an extension diverged. `checked`: one whose
    numbers are not numbers raises `RunFileError` naming it, as `load_run` does,
    for callers that compute with its values (a learning-rate grid ranks on them)."""
    p = Path(path) / RESULT
    result = _read_optional_json(p)
    if checked and result is not None:
        _check_result(p, result)
    return result


def is_finished(path: os.PathLike) -> bool:
    """Whether the run in `path` is FINISHED (`read_status`)."""
    return read_status(path) == FINISHED


def is_diverged(path: os.PathLike) -> bool:
    """Whether the run in `path` is DIVERGED (`read_status`)."""
    return read_status(path) == DIVERGED


def can_extend(path: os.PathLike, epoch_limit: int | None) -> bool:
    """A finished run that was stopped by an epoch limit (``censored`` in
    result.json) before its target or its configured epochs, and may train on
    under `epoch_limit` (None: no limit)."""
    res = read_result(path)
    if not res or not res.get("censored"):
        return False
    return epoch_limit is None or int(epoch_limit) > int(res.get("epochs") or 0)


# --------------------------------------------------------------------------------------
# Writers (used by training)
# --------------------------------------------------------------------------------------


def write_config(path: os.PathLike, config_dict: dict, meta: dict) -> None:
    """meta: {"preset", "label", "seed", "fingerprint", "overrides", "command"}."""
    atomic_write_json(Path(path) / CONFIG, {**config_dict, "meta": meta})


def git_commit(cwd: os.PathLike | None = None) -> dict:
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


def environment(extra: dict | None = None) -> dict:
    """What machine and software a run used (no heavy imports beyond those loaded)."""
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
    """The rows of a run's metrics.csv (none if absent). A damaged file (garbage, a
    row with more cells than the header, a non-numeric metric, no epoch column)
    raises `RunFileError` naming it."""
    p = Path(path) / METRICS
    if not p.exists():
        return []
    try:
        with open(p, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None:
                return []
            if "epoch" not in reader.fieldnames:
                raise RunFileError(p, f"no `epoch` column (header: {','.join(reader.fieldnames)[:80]})")
            rows = []
            for row in reader:
                if None in row:  # DictReader puts surplus cells under the key None
                    raise RunFileError(p, f"line {reader.line_num} has more cells than the header")
                parsed = {k: _num(v) for k, v in row.items()}
                bad = [k for k in METRIC_COLUMNS if isinstance(parsed.get(k), str)]
                if bad or not isinstance(parsed.get("epoch"), int):
                    what = f"`{bad[0]}` = {parsed[bad[0]]!r}" if bad else f"`epoch` = {row.get('epoch')!r}"
                    raise RunFileError(p, f"line {reader.line_num}: {what} is not a number")
                rows.append(parsed)
            return rows
    except (UnicodeDecodeError, csv.Error) as e:
        raise RunFileError(p, f"not a readable CSV file ({e})") from None


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


def write_failure(path: os.PathLike, reason: str, details: dict | None = None) -> None:
    atomic_write_json(
        Path(path) / FAILURE,
        {
            "reason": reason,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **(details or {}),
        },
    )


def state_path(path: os.PathLike) -> Path:
    """The resumable training state of the run in `path` (written by the trainer)."""
    return Path(path) / STATE / STATE_FILE


def _write_npz(p: Path, arrays: dict) -> None:
    import numpy as np

    with replacing(p, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def write_model(path: os.PathLike, model, class_names) -> None:
    """The inference model (`model.save`, Keras' own format) and its class names.

    Each file is replaced atomically, the class names first, so a model file in a
    run directory always has its names beside it.
    """
    atomic_write_json(Path(path) / CLASSES, {"class_names": [str(c) for c in class_names]})
    with replacing(Path(path) / MODEL, suffix=".keras") as tmp:  # Keras wants the suffix
        model.save(tmp)


def read_classes(path: os.PathLike) -> list:
    """The class names of the run's model, in the order of its outputs."""
    return list(read_json(Path(path) / CLASSES)["class_names"])


def write_val_correct(path: os.PathLike, **arrays) -> None:
    _write_npz(Path(path) / VAL_CORRECT, arrays)


def write_conv1(path: os.PathLike, **kernels) -> None:
    _write_npz(Path(path) / CONV1, kernels)


# --------------------------------------------------------------------------------------
# Publishing: the small files of finished runs, into a store committed with the code
# --------------------------------------------------------------------------------------

# What a published run keeps: everything the report reads, nothing it does not
# (no weights, optimizer state, model file or TensorBoard logs).
PUBLISHED_FILES = (CONFIG, ENV, METRICS, RESULT, VAL_CORRECT, CONV1)
# A diverged run is published too (a rate that does not train is a finding, and a
# learning-rate grid needs it to be decided on a fresh clone): its record only.
DIVERGED_FILES = (CONFIG, ENV, METRICS, FAILURE)
PUBLISHED_MAX_BYTES = 1 << 20
# Held (flock) in the destination by the publish writing into it; see `publish_lock`.
PUBLISH_LOCK = ".publish.lock"
# The temporary folder a run is copied into before it is renamed into place.
PUBLISH_TMP = ".publish-"


class PublishLocked(RunDirError):
    """Another process is publishing into the same store."""


@contextlib.contextmanager
def publish_lock(dst_root: os.PathLike):
    """Hold the store `dst_root` (created if need be) for one publish: an exclusive
    flock on `dst_root/.publish.lock`, released by the kernel however the holder
    ends. Raises `PublishLocked` at once if another publish holds it: two
    publishes would copy the same runs and race to rename them into place."""
    dst_root = Path(dst_root)
    dst_root.mkdir(parents=True, exist_ok=True)
    fd = os.open(dst_root / PUBLISH_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        who = _claim(fd, dst_root / PUBLISH_LOCK, "; publish into a folder on one that does.")
        if who is not None:
            raise PublishLocked(
                f"another publish is running into {dst_root} ({who or 'unknown holder'}); "
                "wait for it to finish, then publish again (runs it has copied are not copied twice)."
            )
        yield dst_root
    finally:
        os.close(fd)


def remove_stale_publish_folders(dst_root: os.PathLike) -> list:
    """Remove the temporary run folders (".seed<k>.publish-*") that a publish killed
    mid-copy left in the store `dst_root`; call it holding `publish_lock`, so that
    no live publish owns any of them. Returns the folders removed."""
    dst_root = Path(dst_root)
    stale = sorted(p for p in dst_root.rglob(f".*{PUBLISH_TMP}*") if p.is_dir())
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


@dataclass
class Published:
    copied: list  # destination run directories written now
    unchanged: list  # already in the store, identical
    kept: list  # (destination, why): already in the store with other contents, left as is
    skipped: list  # (source, why): not finished, failed, too large, or damaged
    removed: list = field(default_factory=list)  # stale temporary folders of a killed publish


def publish(src_root: os.PathLike, dst_root: os.PathLike) -> Published:
    """Copy every finished run under `src_root` into `dst_root` (same relative
    layout, `PUBLISHED_FILES` only), and every diverged one (`DIVERGED_FILES`).
    A run directory appears in the store whole or not at all (built beside it,
    then renamed). A finished run already published is never overwritten:
    finished runs do not change, so different contents mean two machines ran the
    same experiment and seed, and the first one stays. A published divergence is
    replaced by a finished run of the same experiment and seed.

    One publish at a time per store (`publish_lock`; a second raises
    `PublishLocked`); it first removes what a killed one left half-copied. A run
    that cannot be read is skipped and listed, the rest published."""
    with publish_lock(dst_root):
        return _publish(Path(src_root), Path(dst_root))


def _publish(src_root: Path, dst_root: Path) -> Published:
    out = Published([], [], [], [], remove_stale_publish_folders(dst_root))
    damaged: list = []
    runs_ = list(iter_runs(src_root, damaged))
    out.skipped += [(e.path, f"damaged: {e.problem}") for e in damaged]
    for run in runs_:
        status = run.status
        diverged = status == DIVERGED
        if holder(run.path) is not None:
            out.skipped.append((run.path, "being trained"))
            continue
        if status not in (FINISHED, DIVERGED):
            out.skipped.append((run.path, "failed" if status == FAILED else "not finished"))
            continue
        # Finished and then diverged when extended: the result and the failure both.
        names = (PUBLISHED_FILES + ((FAILURE,) if diverged else ())) if run.result is not None else DIVERGED_FILES
        files = [run.path / f for f in names if (run.path / f).is_file()]
        size = sum(f.stat().st_size for f in files)
        if size > PUBLISHED_MAX_BYTES:
            out.skipped.append(
                (
                    run.path,
                    f"{size / 1e6:.1f} MB of files, over the "
                    f"{PUBLISHED_MAX_BYTES / 1e6:.1f} MB a published run may hold",
                )
            )
            continue
        dst = dst_root / run.path.relative_to(src_root)
        if dst.exists() and not diverged and read_status(dst) == DIVERGED and read_result(dst) is None:
            shutil.rmtree(dst)  # a finished run supersedes a recorded divergence
        if dst.exists():
            same = all((dst / f.name).is_file() and filecmp.cmp(f, dst / f.name, shallow=False) for f in files)
            if same:
                out.unchanged.append(dst)
            else:
                out.kept.append((dst, f"differs from {run.path}; the published copy is kept"))
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}{PUBLISH_TMP}"))
        try:
            for f in files:
                shutil.copy2(f, tmp / f.name)
            as_created(tmp)  # mkdtemp makes it private; a store is shared
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
    result: dict | None  # None unless finished
    failure: dict | None

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
    def status(self) -> str:
        """FINISHED, DIVERGED, FAILED or UNFINISHED (`status_of`)."""
        return status_of(self.result, self.failure)

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    def val_correct(self) -> dict | None:
        return read_npz(self.path / VAL_CORRECT)

    def conv1_kernels(self) -> dict | None:
        return read_npz(self.path / CONV1)


def read_npz(p: Path) -> dict | None:
    """The arrays of a run's .npz file (None if absent); a damaged archive raises
    `RunFileError` (NumPy alone would say it holds "pickled (object) data")."""
    if not p.exists():
        return None
    import numpy as np

    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # zipfile, zlib, format and pickle errors alike mean a damaged file
        raise RunFileError(p, f"not a readable .npz archive (damaged or truncated: {type(e).__name__})") from None


def load_run(path: os.PathLike) -> Run:
    """Read a run directory. A missing config.json or any damaged file raises
    `RunFileError` naming the file; absent optional files are simply absent."""
    path = Path(path)
    if not (path / CONFIG).exists():
        raise RunFileError(path / CONFIG, "missing (the run cannot be identified)")
    cfg = read_run_json(path / CONFIG)
    meta = cfg.pop("meta", {})
    bad = [k for k, v in {"meta": meta, **cfg}.items() if not isinstance(v, dict)]
    if bad:
        raise RunFileError(path / CONFIG, f"its `{bad[0]}` entry is not an object")
    opt = lambda name: read_run_json(path / name) if (path / name).exists() else None  # noqa: E731
    env = opt(ENV) or {}
    result = opt(RESULT)
    if result is not None:
        _check_result(path / RESULT, result)
    return Run(path, cfg, meta, env, read_metrics_rows(path), result, opt(FAILURE))


# Keys of result.json that hold a number or null (None). "status" is text, and
# "precision" (written later) names a dtype.
RESULT_NUMBERS = [k for k in RESULT_KEYS if k != "status"] + ["n_val"]


def _check_result(p: Path, result: dict) -> None:
    """A result.json whose numbers are text ("abc") or booleans is damaged: every
    mean, interval and table would trip over it. NaN and infinity are numbers
    (JSON as Python writes it); the report notes them apart."""
    for k in RESULT_NUMBERS:
        v = result.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise RunFileError(p, f"`{k}` = {v!r} is not a number")


def is_hidden(path: os.PathLike, root: os.PathLike) -> bool:
    """Whether `path` lies in a hidden folder below `root` (a name starting with
    "."): the temporary folders that publishing and the report build beside their
    targets (".seed0.publish-*", ".results.new-*"), whole or half-written, never a
    run."""
    try:
        parts = Path(path).relative_to(root).parts
    except ValueError:
        return False
    return any(part.startswith(".") for part in parts)


def iter_runs(root: os.PathLike, damaged: list | None = None) -> Iterator[Run]:
    """Every run directory below root, sorted by path: each directory holding
    config.json, or a run's result.json or metrics.csv without one. Hidden folders
    (`is_hidden`: a publish or report build in progress, or one a kill left
    behind) are not runs.

    A run that cannot be read is appended to `damaged` as its `RunFileError` and
    skipped; without a `damaged` list the error is raised."""
    root = Path(root)
    if not root.exists():
        return
    dirs = {p.parent for name in (CONFIG, RESULT, METRICS) for p in root.rglob(name) if not is_hidden(p.parent, root)}
    for d in sorted(dirs):
        try:
            run = load_run(d)
        except (RunFileError, OSError) as e:
            if damaged is None:
                raise
            damaged.append(e if isinstance(e, RunFileError) else RunFileError(d, f"cannot be read ({e})"))
            continue
        yield run
