"""Faults a new user meets: each gets a clear message and loses nothing; one process
per run; several workers share one runs folder."""

import contextlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

import reproduce.data as data
from reproduce import runs
from reproduce.config import get_config
from reproduce.data import DataError, cache
from reproduce.train import TrainingDiverged, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_data import cfg as data_cfg  # noqa: E402
from test_data import make_tree

ROOT = Path(__file__).resolve().parent.parent
BACKEND = keras.backend.backend()
# Small enough for seconds per run on a CPU.
TINY = ["data.synthetic_train=48", "data.synthetic_val=16", "eval.ten_view=false"]


def _tiny(**over):
    return get_config("smoke", [*TINY, *(f"{k}={v}" for k, v in over.items())])


def _env(tmp_path, **extra):
    return {
        **os.environ,
        "KERAS_BACKEND": BACKEND,
        "REPRODUCE_CACHE": str(tmp_path / "cache"),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def _cli(tmp_path, *args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env or _env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- the classes and the batch --------------------------------------------------------


def test_one_class_is_refused_before_a_run_directory(tmp_path):
    src = make_tree(tmp_path / "src", classes=("cat",), corrupt=False) / "mydata"
    cfg = get_config(
        "smoke", {"data.source": str(src), "data.cache_dir": str(tmp_path / "cache"), "data.val_split": "val"}
    )
    with pytest.raises(
        DataError,
        match=r"split 'train' in .*mydata has 1 class \('cat'\); "
        r"training needs at least two",
    ):
        train(cfg, tmp_path / "run", verbose=0)
    assert not (tmp_path / "run").exists()
    assert not list((tmp_path / "cache").glob("*__S*"))  # refused before decoding
    with pytest.raises(DataError, match="data.synthetic_classes to 2 or more"):
        train(_tiny(**{"data.synthetic_classes": 1}), tmp_path / "run", verbose=0)
    assert not (tmp_path / "run").exists()


def test_a_training_split_smaller_than_a_batch_is_refused_before_a_run_directory(tmp_path):
    cfg = _tiny(**{"data.synthetic_train": 10})
    with pytest.raises(DataError) as e:
        train(cfg, tmp_path / "run", verbose=0)
    msg = str(e.value)
    assert "has 10 image(s), fewer than one batch (train.batch_size=16)" in msg
    assert "--set train.batch_size=10" in msg
    assert not (tmp_path / "run").exists()


# -- the data cache -------------------------------------------------------------------


def _flip_one_byte(p: Path) -> None:
    st = p.stat()
    with open(p, "r+b") as f:
        f.seek(st.st_size - 7)
        b = f.read(1)
        f.seek(st.st_size - 7)
        f.write(bytes([b[0] ^ 0xFF]))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # content alone differs


DAMAGE = {
    "truncated images.npy": lambda e: os.truncate(e / cache.IMAGES, (e / cache.IMAGES).stat().st_size // 2),
    "a changed byte in images.npy": lambda e: _flip_one_byte(e / cache.IMAGES),
    "garbage labels.npy": lambda e: (e / cache.LABELS).write_bytes(b"\x93NUMPY garbage" * 9),
    "labels out of range": lambda e: np.save(e / cache.LABELS, np.full(9, 7, np.int32)),
    "garbage manifest": lambda e: (e / cache.MANIFEST).write_bytes(b"\xff\xfe\x00garbage"),
    "empty manifest": lambda e: (e / cache.MANIFEST).write_text("{}"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_cache_entry_is_named_and_rebuilt(tmp_path, damage, monkeypatch):
    src = make_tree(tmp_path / "src", corrupt=False)
    c = data_cfg(src, tmp_path, val_split="val")
    good = data.load_split(c, "train")
    entry = Path(good.cache_path)
    images, labels = np.asarray(good.images).copy(), good.labels.copy()
    assert json.loads((entry / cache.MANIFEST).read_text())["checksums"][cache.IMAGES].startswith("crc32:")
    del good
    DAMAGE[damage](entry)
    monkeypatch.setattr(cache, "_VERIFIED", set())  # as a new process sees it
    n0 = data.decode_count()
    with pytest.warns(
        UserWarning,
        match=rf"the cache entry {re.escape(str(entry))} is damaged: "
        r".*Rebuilding it from the source",
    ):
        again = data.load_split(c, "train")
    assert data.decode_count() - n0 == 9
    np.testing.assert_array_equal(np.asarray(again.images), images)
    np.testing.assert_array_equal(again.labels, labels)
    assert cache.damage(entry) is None


def test_a_damaged_stats_file_is_named_and_recomputed(tmp_path):
    src = make_tree(tmp_path / "src", corrupt=False)
    c = data_cfg(src, tmp_path, val_split="val")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the val/validation fallback
        ref = data.load_stats(c)
        entry = Path(data.load_split(c, "train").cache_path)
    (entry / cache.STATS).write_bytes(b"garbage")
    with pytest.warns(
        UserWarning,
        match=rf"{re.escape(str(entry / cache.STATS))} is damaged "
        r"\(not a NumPy file\); recomputing",
    ):
        st = data.load_stats(c)
    np.testing.assert_array_equal(st.mean_image, ref.mean_image)
    assert cache.read_stats(entry) is not None  # replaced by a sound one


# -- the run directory ----------------------------------------------------------------


def test_a_held_run_directory_is_refused_until_its_holder_dies(tmp_path):
    d = tmp_path / "run"
    with (
        runs.lock(d),
        pytest.raises(
            runs.RunLocked,
            match=rf"{re.escape(str(d))} is being trained by "
            rf"another process \(pid {os.getpid()} on host",
        ),
        runs.lock(d),
    ):
        pass
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom reproduce import runs\n"
            f"with runs.lock({str(d)!r}):\n    print('held', flush=True)\n    time.sleep(120)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(runs.RunLocked, match=f"pid {holder.pid} "), runs.lock(d):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with runs.lock(d):  # the kernel released it with the process: never stale
        pass


@pytest.mark.slow
def test_two_make_train_on_the_same_run_train_it_once(tmp_path):
    cmd = [
        "make",
        "-s",
        "train",
        "PRESET=smoke",
        f"RUNS={tmp_path / 'runs'}",
        f"PY={sys.executable}",
        f"BACKEND={BACKEND}",
        "SET=eval.ten_view=false",
    ]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    trained = [o for o in outs if "Epoch 1/2" in o[1]]
    assert len(trained) == 1, outs
    other = next(o for o in outs if o is not trained[0])
    assert trained[0][0] == 0, trained[0][2][-2000:]
    # The other one either found the run held (and said so) or already finished.
    assert (
        other[0] != 0 and "is being trained by another process (pid" in other[2] and "Traceback" not in other[2]
    ) or (other[0] == 0 and "already finished; nothing to do" in other[1]), other
    (d,) = [p.parent for p in (tmp_path / "runs").rglob(runs.RESULT)]
    assert [r["epoch"] for r in runs.read_metrics_rows(d)] == [0, 1]


def test_run_files_follow_the_umask(tmp_path):
    from reproduce import sources as identity

    def modes(umask):
        d = tmp_path / f"u{umask:o}"
        old = os.umask(umask)
        try:
            runs.write_config(d, {}, {"preset": "smoke"})
            runs.write_env(d, {"host": "h"})
            runs.write_metrics_rows(d, [{"epoch": 0, "loss": 1.0}])
            runs.write_failure(d, "diverged")
            with runs.lock(d):
                pass
            identity._write_memo(d / "identities.json", {"a": "b"})  # the data cache's too
        finally:
            os.umask(old)
        return {p.name: stat.S_IMODE(p.stat().st_mode) for p in d.iterdir()}

    assert set(modes(0o022).values()) == {0o644}
    assert set(modes(0o077).values()) == {0o600}


@contextlib.contextmanager
def _read_only(folder: Path):
    """`folder` made unwritable (as root: immutable, since root ignores modes)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o555)
    immutable = (
        os.geteuid() == 0
        and shutil.which("chattr") is not None
        and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    )
    try:
        try:
            (folder / "probe").mkdir()
        except OSError:
            yield folder
        else:
            (folder / "probe").rmdir()
            pytest.skip("cannot make a read-only folder here")
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        os.chmod(folder, 0o755)


def test_a_read_only_runs_folder_is_a_clear_error(tmp_path):
    with _read_only(tmp_path / "ro") as ro:
        with pytest.raises(
            runs.RunDirError,
            match=rf"cannot write in {re.escape(str(ro))}/smoke.*"
            "Make that folder writable",
        ):
            train(_tiny(), ro / "smoke" / "seed0", verbose=0)
        from ablations.runner import Runner

        with pytest.raises(runs.RunDirError, match=rf"cannot write in {re.escape(str(ro))}: runs"):
            Runner("smoke", 1, ro, overrides=TINY, verbose=0).run(["no_lrn"])
    # An interrupted run whose folder became read-only (its lock file is there).
    d = tmp_path / "run"
    d.mkdir()
    (d / runs.LOCK).touch()
    with _read_only(d), pytest.raises(runs.RunDirError, match=rf"cannot write in {re.escape(str(d))} "):
        train(_tiny(), d, verbose=0)


@pytest.mark.slow
def test_train_names_a_damaged_config_json(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / runs.CONFIG).write_text('{"data": {"source": "synth')  # cut short
    p = _cli(tmp_path, "reproduce", "train", "--preset", "smoke", "--run-dir", str(d))
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert f"error: {d / runs.CONFIG} is damaged" in p.stderr
    assert f"delete just {d / runs.CONFIG}" in p.stderr
    assert (d / runs.CONFIG).read_text().startswith('{"data"')  # left as it was


def test_the_runner_reports_a_damaged_run_and_trains_the_others(tmp_path):
    from ablations.runner import Runner, _with_seed

    r = Runner("smoke", "0,1", tmp_path, overrides=[*TINY, "train.epochs=1"], verbose=0)
    bad = runs.run_dir(tmp_path, "smoke", "baseline", _with_seed(r.baseline_config(), 0).fingerprint(), 0)
    bad.mkdir(parents=True)
    (bad / runs.CONFIG).write_text("[]")
    r.run_baseline()
    assert [d for d, _ in r.failed] == [bad] and "is damaged" in r.failed[0][1]
    assert r.trained == 1 and runs.is_finished(bad.parent / "seed1")


def test_a_damaged_published_copy_does_not_block_training_the_run_here(tmp_path, capsys):
    """Only a damaged result under the runner's own root stops a run: a damaged copy
    in a published store is named and passed over, and the run trains here."""
    from ablations.runner import Runner, _with_seed

    overrides = [*TINY, "train.epochs=1"]
    pub, local = tmp_path / "published", tmp_path / "runs"
    Runner("smoke", "0,", pub, overrides=overrides, verbose=0).run_baseline()
    r = Runner("smoke", "0,", local, overrides=overrides, verbose=0, published=[pub])
    fp = _with_seed(r.baseline_config(), 0).fingerprint()
    copy = runs.run_dir(pub, "smoke", "baseline", fp, 0) / runs.RESULT
    damaged = {**json.loads(copy.read_text()), "val_top1_err": "abc"}
    copy.write_text(json.dumps(damaged))
    capsys.readouterr()
    r.run_baseline()
    assert r.failed == [] and r.trained == 1
    assert runs.is_finished(runs.run_dir(local, "smoke", "baseline", fp, 0))
    err = capsys.readouterr().err
    assert f"not using a damaged published run (training it here): {copy}: `val_top1_err` = 'abc'" in err
    assert json.loads(copy.read_text()) == damaged  # the published copy is left as it was


# -- the backend ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "cli", [("reproduce", "train", "--preset", "smoke"), ("ablations", "run", "no_lrn", "--preset", "smoke")]
)
def test_an_unsupported_backend_says_which_are(tmp_path, cli):
    p = _cli(tmp_path, *cli, env=_env(tmp_path, KERAS_BACKEND="torch"), timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.startswith(
        "error: Keras backend 'torch' (KERAS_BACKEND, or BACKEND= with make) "
        "is not supported here; use tensorflow or jax"
    )
    assert "pip install" in p.stderr


def test_a_missing_backend_says_how_to_install_it(monkeypatch):
    from reproduce import logs

    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setattr(logs.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(logs.BackendError, match=r"'jax' is not installed .*pip install 'jax\[cpu\]'"):
        logs.check_backend()


# -- divergence -----------------------------------------------------------------------


@pytest.mark.slow
def test_divergence_at_a_huge_rate_suggests_the_presets_and_says_nothing_was_kept(tmp_path):
    d = tmp_path / "run"
    p = _cli(
        tmp_path,
        "reproduce",
        "train",
        "--preset",
        "smoke",
        "--run-dir",
        str(d),
        "--set",
        "train.learning_rate=1e6",
        "eval.ten_view=false",
        env=_env(tmp_path, TF_CPP_MIN_LOG_LEVEL="0"),
    )
    assert p.returncode == 1, p.stderr[-3000:]
    err = p.stderr.strip().splitlines()
    # The message is the last line: nothing from TensorFlow follows it.
    assert err[-1].startswith("error: training diverged"), p.stderr[-3000:]
    msg = err[-1]
    assert "Try the smoke preset's learning rate (--set train.learning_rate=0.01)" in msg
    assert f"No epoch completed, so no weights were saved: {d} holds the run's description" in msg
    assert not (d / runs.STATE).exists()
    assert "500000" not in msg and "Invalid loss" not in p.stdout


def test_divergence_after_an_epoch_says_which_epochs_are_kept(tmp_path):
    import keras

    class HugeRateInEpoch2(keras.callbacks.Callback):
        # runs after the trainer's schedule callback (extra callbacks come last)
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                self.model.optimizer.learning_rate.assign(1e12)

    d = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as e:
        train(_tiny(), d, meta={"preset": "smoke"}, verbose=0, callbacks=[HugeRateInEpoch2()])
    msg = str(e.value)
    assert "at epoch 2" in msg
    assert "Try a 10x smaller learning rate (--set train.learning_rate=0.001)" in msg
    assert f"Epoch 1 completed: the weights after epoch 1 are kept in {d / runs.STATE}" in msg
    assert "resumes after epoch 1" in msg
    assert [r["epoch"] for r in runs.read_metrics_rows(d)] == [0]


def test_one_status_per_run_directory_and_each_reader_chooses_what_it_accepts(tmp_path, monkeypatch):
    """Run directories trained here: one finished, one diverged (a huge rate), one
    stopped after its first epoch, and one stopped with a recorded failure of
    another kind. `Run.status` and `read_status` agree on each; the report counts
    finished runs only, the runner skips finished runs and takes a diverged one
    as a grid rate's answer only, publishing keeps finished and diverged runs."""
    from ablations.runner import Runner
    from reports import collect as C
    from reproduce import train as train_lib

    class Stop(Exception):
        pass

    class StopAtEpoch2(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise Stop("stopped after epoch 1")

    real_train = train_lib.train

    def stopping_train(cfg, run_dir, **kw):
        return real_train(cfg, run_dir, callbacks=[StopAtEpoch2()], **kw)

    root = tmp_path / "runs"
    r = Runner("smoke", 1, root, verbose=0, published=[])
    cfgs = {
        "ok": _tiny(**{"train.epochs": 1}),
        "nan": _tiny(**{"train.learning_rate": 1e12, "train.epochs": 1}),
        "stopped": _tiny(**{"train.epochs": 2}),
        "failed": _tiny(**{"train.epochs": 2}),
    }
    assert r.run_one("ok", cfgs["ok"], 0)["status"] == "ok"
    assert r.run_one("nan", cfgs["nan"], 0) is None and [d.parent.name.split("-")[0] for d, _ in r.failed] == ["nan"]
    monkeypatch.setattr(train_lib, "train", stopping_train)
    for label in ("stopped", "failed"):
        with pytest.raises(Stop):
            r.run_one(label, cfgs[label], 0)
    dirs = {label: next((root / "smoke").glob(f"{label}-*/seed0")) for label in cfgs}
    runs.write_failure(dirs["failed"], "out of memory", {"epoch": 1})

    status = {label: runs.load_run(d).status for label, d in dirs.items()}
    assert status == {"ok": runs.FINISHED, "nan": runs.DIVERGED, "stopped": runs.UNFINISHED, "failed": runs.FAILED}
    assert {label: runs.read_status(d) for label, d in dirs.items()} == status
    assert (dirs["stopped"] / runs.METRICS).exists() and not (dirs["stopped"] / runs.RESULT).exists()
    # The report: counted only when finished, the others listed with their status.
    loaded = {label: runs.load_run(d) for label, d in dirs.items()}
    assert [label for label, run in loaded.items() if C.is_counted(run)] == ["ok"]
    assert {label: C.run_status(run) for label, run in loaded.items()} == {
        "ok": "finished",
        "nan": "failed: diverged",
        "stopped": "unfinished (1 epochs logged)",
        "failed": "failed: out of memory",
    }
    # The runner: a finished run is not trained again; a diverged one is a grid rate's
    # answer, and trained again as a seeded run; the others are trained again.
    calls = []
    monkeypatch.setattr(train_lib, "train", lambda cfg, run_dir, **kw: calls.append(run_dir.parent.name) or None)
    assert r.run_one("ok", cfgs["ok"], 0) == runs.read_result(dirs["ok"])
    assert r.run_one("nan", cfgs["nan"], 0, diverged_is_final=True) is None and calls == []
    for label in ("nan", "stopped", "failed"):
        r.run_one(label, cfgs[label], 0)
    assert [c.split("-")[0] for c in calls] == ["nan", "stopped", "failed"]
    # Publishing: finished and diverged runs travel, the others stay.
    pub = runs.publish(root, tmp_path / "results")
    assert sorted(d.parent.name.split("-")[0] for d in pub.copied) == ["nan", "ok"]
    assert sorted((p.parent.name.split("-")[0], why) for p, why in pub.skipped) == [
        ("failed", "failed"),
        ("stopped", "not finished"),
    ]


def test_the_divergence_check_never_syncs_the_training_state_from_its_thread():
    # On JAX the per-batch check runs in Keras' callback thread (async_safe), while
    # the training loop donates the state's buffers to the next step; a state sync
    # from that thread (what keras.callbacks.Callback.model does on JAX) assigns
    # deleted buffers to the model's variables.
    from reproduce.callbacks import BatchDivergence

    class Model:
        stop_training = False

        def jax_state_sync(self):
            raise AssertionError("state synced from the callback thread")

    cb, model = BatchDivergence(), Model()
    cb.set_model(model)
    cb.on_epoch_begin(3)
    cb.on_batch_end(7, {"loss": 1.5})
    assert not model.stop_training and cb.where is None
    cb.on_batch_end(8, {"loss": float("nan")})
    assert model.stop_training
    assert cb.where["epoch"] == 3 and cb.where["batch"] == 8


# -- make with paths that hold spaces -------------------------------------------------


def test_make_passes_a_data_dir_with_spaces_as_one_argument(tmp_path):
    fake = tmp_path / "fakepy"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    cwd = tmp_path / "here"
    cwd.mkdir()
    for data_dir, want in (("my data/it's.tar.xz", f"{cwd}/my data/it's.tar.xz"), ("/abs/my data", "/abs/my data")):
        p = subprocess.run(
            [
                "make",
                "-s",
                "-f",
                str(ROOT / "Makefile"),
                "train",
                "PRESET=smoke",
                f"DATA_DIR={data_dir}",
                f"PY={fake}",
                "SET=train.epochs=1 model.lrn=false",
            ],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout) == [
            "-m",
            "reproduce",
            "train",
            "--preset",
            "smoke",
            "--set",
            f"data.source={want}",
            "train.epochs=1",
            "model.lrn=false",
        ]


# -- several workers on one runs folder -----------------------------------------------


@pytest.mark.slow
def test_two_workers_share_a_suite_and_train_every_run_once(tmp_path):
    root = tmp_path / "runs"
    p = _cli(
        tmp_path,
        "ablations",
        "run",
        "no_lrn",
        "--preset",
        "smoke",
        "--seeds",
        "2",
        "--runs",
        str(root),
        "--workers",
        "2",
        "--set",
        "eval.ten_view=false",
        env=_env(tmp_path, CUDA_VISIBLE_DEVICES=""),
        timeout=900,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "[ablations] starting 2 workers (no GPU visible" in p.stdout
    for i in (0, 1):
        assert f"[worker {i}/2] [ablations] worker {i}/2: 2 of these run(s) first" in p.stdout
    results = sorted(root.rglob(runs.RESULT))
    assert len(results) == 4
    # Each training prints its first epoch once; each run's metrics hold each epoch once.
    assert sum("Epoch 1/2" in ln for ln in p.stdout.splitlines()) == 4
    for r in results:
        assert [row["epoch"] for row in runs.read_metrics_rows(r.parent)] == [0, 1]
    trained = [int(m) for m in re.findall(r"\] \[ablations\] trained (\d+) run\(s\)", p.stdout)]
    assert len(trained) == 2 and sum(trained) == 4


def test_workers_get_one_gpu_each_and_no_more_workers_than_gpus(tmp_path, monkeypatch, capfd):
    from ablations import workers

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert workers.visible_gpus() == ["3", "5"]
    with pytest.raises(ValueError, match=r"WORKERS=3 \(--workers\) but 2 GPU\(s\) are visible"):
        workers.launch(["plan"], 3)
    # Each worker is `python -m ablations <argv> --worker I/N`, on its own GPU.
    fake = tmp_path / "ablations"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(
        "import os, sys\nprint(os.environ['CUDA_VISIBLE_DEVICES'], *sys.argv[1:])\n"
        "sys.exit(3 if sys.argv[-1] == '1/2' else 0)\n"
    )
    monkeypatch.chdir(tmp_path)
    assert workers.launch(["run", "no_lrn", "--workers", "2", "--seeds", "1"], 2) == 3
    out = capfd.readouterr().out
    assert "[worker 0/2] 3 run no_lrn --seeds 1 --worker 0/2" in out
    assert "[worker 1/2] 5 run no_lrn --seeds 1 --worker 1/2" in out
    assert "exit status 0/2: 0, 1/2: 3" in out


def _fake_train(monkeypatch, needs=lambda lr: 8):
    """reproduce.train.train replaced by a stand-in that finishes a run at once
    (the target reached after needs(lr) epochs); returns the (label, seed, lr) trained."""
    from reproduce import train as train_lib

    calls = []

    def fake(cfg, run_dir, meta=None, verbose=0, epoch_limit=None):
        calls.append((meta["label"], cfg.train.seed, cfg.train.learning_rate))
        n = needs(cfg.train.learning_rate)
        result = {"status": "ok", "epochs": n, "epochs_to_target": n, "train_top1_err": 0.2, "censored": False}
        runs.atomic_write_json(Path(run_dir) / runs.RESULT, result)
        return result

    monkeypatch.setattr(train_lib, "train", fake)
    return calls


def test_a_worker_takes_its_share_first_then_what_is_left(tmp_path, monkeypatch):
    from ablations.runner import Runner

    calls = _fake_train(monkeypatch)
    r = Runner("smoke", 2, tmp_path, verbose=0, worker=(1, 2))
    r.run(["no_lrn"])  # plan: baseline 0, baseline 1, no_lrn 0, no_lrn 1
    assert [c[:2] for c in calls] == [("baseline", 1), ("no_lrn", 1), ("baseline", 0), ("no_lrn", 0)]
    assert r.trained == 4 and not r.held


def test_a_held_run_is_left_to_its_holder_and_a_held_grid_run_its_whole_arm(tmp_path, monkeypatch):
    from ablations.kinds.lr_grid import GRID_SEED
    from ablations.registry import get_ablation
    from ablations.runner import Runner, _with_seed

    calls = _fake_train(monkeypatch)
    r = Runner("cifar10", 1, tmp_path, verbose=0)
    ab = get_ablation("fig1_tanh")
    first = _with_seed(r.baseline_config(ab), GRID_SEED)
    first.train.learning_rate = 0.005  # the grid's first rate (middle-out)
    held = runs.run_dir(tmp_path, "cifar10", f"{ab.base_label}.grid", first.fingerprint(), GRID_SEED)
    with runs.lock(held):
        r.run(["fig1_tanh"])
    assert calls and all(label.startswith(ab.name) for label, _, _ in calls), calls
    assert list(r.held) == [str(held)] and r.trained == len(calls)
    # Once the holder is gone, the same command takes the rest.
    calls.clear()
    r2 = Runner("cifar10", 1, tmp_path, verbose=0)
    r2.run(["fig1_tanh"])
    assert {label for label, _, _ in calls} == {f"{ab.base_label}.grid", ab.base_label}


def test_a_damaged_grid_result_is_named_and_the_rest_of_the_suite_goes_on(tmp_path, monkeypatch, capsys):
    """A finished grid run whose result.json holds text for a number is damaged, as
    publishing and the report call it: named with the fix, not ranked (its arm
    chooses no rate) and not trained over; the other arm trains."""
    from ablations.kinds.lr_grid import GRID_SEED
    from ablations.registry import get_ablation
    from ablations.runner import Runner, _with_seed

    calls = _fake_train(monkeypatch)
    ab = get_ablation("fig1_tanh")
    Runner("cifar10", 1, tmp_path, verbose=0).run(["fig1_tanh"])
    first = _with_seed(Runner("cifar10", 1, tmp_path, verbose=0).baseline_config(ab), GRID_SEED)
    first.train.learning_rate = 0.005  # the grid's first rate (middle-out)
    bad = runs.run_dir(tmp_path, "cifar10", f"{ab.base_label}.grid", first.fingerprint(), GRID_SEED)
    result = json.loads((bad / runs.RESULT).read_text())
    (bad / runs.RESULT).write_text(json.dumps({**result, "epochs_to_target": "abc"}))
    (variant_seed,) = (tmp_path / "cifar10").glob(f"{ab.name}-*/seed0")
    shutil.rmtree(variant_seed)
    message = (
        f"{bad / runs.RESULT}: `epochs_to_target` = 'abc' is not a number; restore the file "
        "from a copy, or delete the run directory so that the run is trained again"
    )
    calls.clear()
    capsys.readouterr()

    r = Runner("cifar10", 1, tmp_path, verbose=0)
    plan = r.plan(["fig1_tanh"])
    assert message in capsys.readouterr().err
    assert [(j.label, j.seed) for j in plan.todo] == [(ab.name, 0)]
    r.run(["fig1_tanh"])
    assert [c[:2] for c in calls] == [(ab.name, 0)] and r.trained == 1
    assert r.failed == [(bad, message)]
    assert json.loads((bad / runs.RESULT).read_text())["epochs_to_target"] == "abc"  # left for the user


# -- data the pipeline used to misread, and settings that were not checked ------------------
# (link loops, 16-bit PNGs, huge archive members, empty class folders, a raised
# bad-file tolerance, REPRODUCE_DATA_WORKERS: tests/test_data.py; ranges and key
# suggestions: tests/test_config.py; the SavedModel target: tests/test_inference.py)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.learning_rate=-0.01", "train.learning_rate=-0.01 must be > 0"),
        ("data.max_train=-1", "data.max_train=-1 must be an integer >= 0"),
        ("train.seed=-1", "train.seed=-1 must be an integer in [0, 2147483647]"),
        ("model.dropout=nan", "model.dropout=nan must be a finite number in [0, 1)"),
        ("train.learning_rate=nan", "train.learning_rate=nan must be a finite number > 0"),
    ],
)
def test_out_of_range_settings_stop_train_before_a_run_directory(tmp_path, override, message):
    cfg = _tiny()
    key, value = override.split("=")
    section, name = key.split(".")
    setattr(getattr(cfg, section), name, type(getattr(getattr(cfg, section), name))(value))
    with pytest.raises(ValueError) as e:  # a ConfigError
        train(cfg, tmp_path / "run", verbose=0)
    assert str(e.value) == message
    assert str(e.value).count(override) == 1  # named as the problem, never offered as the fix
    assert not (tmp_path / "run").exists()


def test_forced_streaming_trains_and_evaluates(tmp_path, monkeypatch):
    """REPRODUCE_STREAM=1 streams the training split; the validation split stays in
    the cache (the evaluation indexes it), so a run finishes."""
    pytest.importorskip("tensorflow")
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setenv("REPRODUCE_STREAM", "1")
    cfg = get_config(
        "smoke",
        [
            "data.source=tfds:cifar10",
            "data.val_split=test",
            f"data.cache_dir={tmp_path / 'cache'}",
            "eval.ten_view=false",
            "train.epochs=1",
        ],
    )
    with tfds.testing.mock_data(num_examples=32):
        d = data.load(cfg.data)
        assert isinstance(d.train, data.Stream) and not isinstance(d.val, data.Stream)
        result = train(cfg, tmp_path / "run", verbose=0)
    assert result["status"] == "ok" and result["epochs"] == 1 and result["n_val"] == 32
    assert runs.is_finished(tmp_path / "run")


# -- half-written folders, damaged result files, an empty RUNS, the smoke suite's cost --


def _two_finished_runs(root: Path) -> list:
    from test_report import make_run

    return [make_run(root, "smoke", "baseline", s, top1=120 + s) for s in (0, 1)]


def test_a_publish_killed_mid_copy_is_no_run_and_the_next_publish_removes_it(tmp_path):
    from ablations.plan import preset_history
    from reports import collect

    src, store = tmp_path / "runs", tmp_path / "results"
    r0, r1 = _two_finished_runs(src)
    # What a publish killed while copying seed 0 leaves: its files in a hidden folder.
    stale = store / r0.relative_to(src).parent / f".{r0.name}{runs.PUBLISH_TMP}k1ll3d"
    stale.mkdir(parents=True)
    for name in ("config.json", "env.json", "metrics.csv", "result.json"):
        shutil.copy2(r0 / name, stale / name)
    assert list(runs.iter_runs(store)) == []
    assert collect.load(store) == {} and preset_history([store], "smoke") == []

    res = runs.publish(src, store)
    assert res.removed == [stale] and not stale.exists()
    assert sorted(res.copied) == sorted(store / r.relative_to(src) for r in (r0, r1))
    assert sorted(r.path for r in runs.iter_runs(store)) == sorted(res.copied)


def test_a_second_publish_into_the_same_store_is_refused_while_one_runs(tmp_path, capsys):
    from reproduce.__main__ import main

    src, store = tmp_path / "runs", tmp_path / "results"
    _two_finished_runs(src)
    with runs.publish_lock(store):
        with pytest.raises(
            runs.PublishLocked,
            match=r"another publish is running into .*results "
            rf"\(pid {os.getpid()} on host ",
        ):
            runs.publish(src, store)
        assert main(["publish", "--runs", str(src), "--to", str(store)]) == 2
        assert "error: another publish is running into" in capsys.readouterr().err
        assert not list(store.rglob("result.json"))  # nothing copied, no ENOTEMPTY
    assert len(runs.publish(src, store).copied) == 2  # once it has ended


def test_a_result_json_with_a_non_number_is_skipped_as_damaged_and_the_rest_published(tmp_path):
    from reports import build_report

    src, store = tmp_path / "runs", tmp_path / "results"
    r0, r1 = _two_finished_runs(src)
    res = json.loads((r1 / "result.json").read_text())
    (r1 / "result.json").write_text(json.dumps({**res, "val_top1_err": "abc"}))

    with pytest.raises(
        runs.RunFileError,
        match=r"result\.json: `val_top1_err` = 'abc' is not a number; "
        "restore the file",
    ):
        runs.load_run(r1)
    out = runs.publish(src, store)
    assert out.copied == [store / r0.relative_to(src)]
    assert out.skipped == [(r1 / "result.json", "damaged: `val_top1_err` = 'abc' is not a number")]
    rep = build_report(src, tmp_path / "report")
    assert [e.path for e in rep.damaged] == [r1 / "result.json"]
    assert "`val_top1_err` = 'abc' is not a number" in rep.markdown.read_text()
    build_report(store, store)  # make publish's report of the store


def test_a_killed_report_build_is_removed_by_the_next_and_ignored_by_git(tmp_path):
    from reports import build_report, folder_swap

    _two_finished_runs(tmp_path / "runs")
    out = tmp_path / "results"
    stale_new, stale_old = tmp_path / ".results.new-k1ll3d", tmp_path / ".results.old-k1ll3d"
    live = tmp_path / ".results.new-running"  # another build, still writing
    for d in (stale_new, stale_old, live):
        d.mkdir()
        (d / "report.md").write_text("half a report")
    held = folder_swap.hold(live)
    try:
        build_report(tmp_path / "runs", out)
    finally:
        os.close(held)
    assert not stale_new.exists() and not stale_old.exists()
    assert (live / "report.md").exists()
    assert (out / "report.md").exists()
    for name in (".results.new-k1ll3d/", "results/smoke/x/.seed0.publish-ab12/", "results/.publish.lock"):
        p = subprocess.run(["git", "check-ignore", "-q", "--no-index", name], cwd=ROOT)
        assert p.returncode == 0, f"{name} is not ignored by git"


def test_an_empty_runs_setting_means_the_default_folder(tmp_path, monkeypatch):
    from reports import build_report

    monkeypatch.setenv("REPRODUCE_RUNS", "")
    assert runs.default_root() == Path("runs")
    monkeypatch.chdir(tmp_path)
    _two_finished_runs(tmp_path / "runs")
    rep = build_report("", "")  # --runs '' --out ''
    assert rep.out_dir == Path("runs") / "report" and (tmp_path / "runs/report/report.md").exists()
    assert not (tmp_path / "report.md").exists()
    for target in ("reproduce", "report", "publish"):
        p = subprocess.run(
            ["make", "-n", "-f", str(ROOT / "Makefile"), target, "RUNS="],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0, p.stderr
        assert "--runs runs" in p.stdout, p.stdout
        assert "--runs  " not in p.stdout and "REPRODUCE_RUNS= " not in p.stdout


def test_the_smoke_figure1_arms_train_a_few_short_runs(tmp_path):
    from collections import Counter

    from ablations.registry import get_ablation
    from ablations.runner import Runner

    a = get_ablation("fig1_tanh")
    for cfg in (a.base_config("smoke"), a.variant_config("smoke")):
        assert cfg.train.epochs == 2 and cfg.train.stop_at_train_error == 0.25
    # Figure 1 itself is left as measured.
    for cfg in (a.base_config("cifar10"), a.variant_config("cifar10")):
        assert cfg.train.epochs == 100 and cfg.train.stop_at_train_error == 0.25
    plan = Runner("smoke", 3, tmp_path / "runs", published=[]).plan(["fig1_tanh"])
    labels = Counter(j.label for j in plan.todo)
    assert labels == {"fig1_tanh.base.grid": 4, "fig1_tanh.grid": 4, "fig1_tanh.base": 3, "fig1_tanh": 3}
    assert all(j.cfg.train.epochs == 2 for j in plan.todo)


def test_the_plan_counts_a_fixed_cost_per_epoch(tmp_path, monkeypatch):
    """Validation's start, the checkpoint and the callbacks cost every epoch the
    same, whatever its images: on the smoke preset's 4-step epochs, most of it."""
    import types

    from ablations import plan as P

    cfg = get_config("smoke", ["train.epochs=40"])
    monkeypatch.setattr(P, "preset_history", lambda roots, preset: [])
    monkeypatch.setattr(P, "calibrate", lambda cfg, data: (640.0, 5.0, 0.25))  # 0.25 s per epoch
    d = types.SimpleNamespace(train=range(64), val=range(32))
    plan = P.SuitePlan(todo=[P.Job("baseline", 0, tmp_path / "a", cfg)])
    P.fill_estimates(plan, [tmp_path], "smoke", load_data=lambda _: d, verbose=False, device="CPU")
    (job,) = plan.todo
    images = 40 * 64 + P.FORWARD_SHARE * (40 * 32 + 32 * 11 + 64)  # epochs, validation, final evaluation
    assert job.estimate_s == pytest.approx(5.0 + 40 * 0.25 + images / 640.0)


def test_the_scheme_is_not_part_of_the_fingerprint():
    from reproduce.config import NOT_IDENTITY

    assert "distribute.scheme" in NOT_IDENTITY
    assert get_config("smoke").fingerprint() == get_config("smoke", ["distribute.scheme=mirrored"]).fingerprint()


def test_make_tensorboard_shows_the_runs_folder(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}  # under `make test`
    p = subprocess.run(
        ["make", "--no-print-directory", "-n", "-f", str(ROOT / "Makefile"), "tensorboard", "RUNS=/some/runs"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    assert re.search(r"tensorboard --logdir '/some/runs'$", p.stdout.strip()), p.stdout


def test_only_the_tensorflow_backend_logs_to_tensorboard(tmp_path):
    """A run's tensorboard/ folder (what `make tensorboard` shows) is written on
    TensorFlow only; on JAX the run has metrics.csv alone."""
    import importlib.util

    from reproduce.callbacks import EpochTensorBoard, training_callbacks

    logs = [c for c in training_callbacks(get_config("smoke"), tmp_path, {}, 64).all if isinstance(c, EpochTensorBoard)]
    if BACKEND == "tensorflow" and importlib.util.find_spec("tensorboard") is not None:
        assert [Path(c.log_dir) for c in logs] == [tmp_path / runs.TENSORBOARD]
    else:
        assert logs == []


def test_a_replacement_that_fails_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    """`reproduce.files.replacing`, which every file the library writes goes through:
    the old file stays whole until the new one is complete."""
    from reproduce.files import replacing

    p = tmp_path / "state.npz"
    np.savez(p, a=np.arange(3))
    with pytest.raises(RuntimeError, match="stopped"), replacing(p, suffix=".npz") as tmp:
        np.savez(tmp, a=np.arange(5))
        raise RuntimeError("stopped mid-write")
    assert np.load(p)["a"].tolist() == [0, 1, 2]
    assert [x.name for x in tmp_path.iterdir()] == ["state.npz"]
    with replacing(p, suffix=".npz") as tmp:
        np.savez(tmp, a=np.arange(5))
    assert np.load(p)["a"].tolist() == [0, 1, 2, 3, 4]
    assert [x.name for x in tmp_path.iterdir()] == ["state.npz"]


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write_and_ignored_by_git(tmp_path):
    """`reproduce.files.replacing`: what a writer killed mid-write left beside the
    file (the repository's README.md, for a report built into the checkout) goes
    with the next write of that file; a live writer's, or another machine's, stays."""
    from reproduce.files import host_tag, replacing

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = host_tag()
    stale = tmp_path / f".README.md.tmp-{host}-{dead.pid}-k1ll3d00.tmp"
    live = tmp_path / f".README.md.tmp-{host}-{os.getpid()}-wr1t1ng0.tmp"
    elsewhere = tmp_path / f".README.md.tmp-other_host-{dead.pid}-k1ll3d00.tmp"
    other_file = tmp_path / f".notes.md.tmp-{host}-{dead.pid}-k1ll3d00.tmp"
    for p in (stale, live, elsewhere, other_file):
        p.write_text("half a file")
    with replacing(tmp_path / "README.md") as tmp:
        tmp.write_text("# the report")
        name = tmp.name
    assert (tmp_path / "README.md").read_text() == "# the report"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["README.md", live.name, elsewhere.name, other_file.name]
    )
    for ignored in (name, stale.name, f"results/smoke/x/seed0/.state.npz.tmp-{host}-1-ab12cd34.npz"):
        p = subprocess.run(["git", "check-ignore", "-q", "--no-index", ignored], cwd=ROOT)
        assert p.returncode == 0, f"{ignored} is not ignored by git"
