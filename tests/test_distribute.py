"""Several devices (towers, mirrored) and several machines (multiworker).

Device counts and clusters are fixed when TensorFlow or JAX initializes, so the
checks that need two devices or two processes run in subprocesses
(tests/distribute_worker.py) on CPU: two logical CPU devices, or two worker
processes on 127.0.0.1. Each group of subprocesses runs once per test session
(also under pytest-xdist) and the tests below read its results.
"""

import fcntl
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from reproduce import distribute
from reproduce.config import get_config

BACKEND = keras.backend.backend()
ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "distribute_worker.py"
TIMEOUT = 420
TOL = 1e-5


# --------------------------------------------------------------------------------------
# Subprocess plumbing
# --------------------------------------------------------------------------------------


def _env(**extra) -> dict:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TF_CONFIG", "KERAS_DISTRIBUTION_", "JAX_COORDINATOR"))
    }
    env.update(KERAS_BACKEND=BACKEND, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, env, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args], env=env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT
    )


def _wait(procs: dict, logs: dict) -> None:
    try:
        for p in procs.values():
            p.wait(timeout=TIMEOUT)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    failed = {n: p.returncode for n, p in procs.items() if p.returncode}
    if failed:
        tails = "\n".join(f"--- {n} (exit {failed[n]}):\n" + logs[n].read_text()[-3000:] for n in failed)
        raise AssertionError(f"subprocess failed: {failed}\n{tails}")


def _once(tmp_path_factory, name, produce):
    """produce(dir) once per session, shared by the pytest-xdist workers."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    done = root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            d = root / name
            d.mkdir(exist_ok=True)
            done.write_text(json.dumps(produce(d)))
    return json.loads(done.read_text())


def _two_device_env() -> dict:
    if BACKEND == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        return _env(XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=2".strip())
    return _env()  # the worker configures two logical CPUs itself


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory):
    """towers and mirrored on two CPU devices vs one device, then the trainer."""

    def produce(d):
        out, log = d / "equivalence.json", d / "equivalence.log"
        p = _start(["equivalence", str(out), "towers", "mirrored", f"--train={d / 'runs'}"], _two_device_env(), log)
        _wait({"equivalence": p}, {"equivalence": log})
        return json.loads(out.read_text())

    return _once(tmp_path_factory, f"two_devices_{BACKEND}", produce)


def _cluster_env(index: int, ports: list) -> dict:
    if BACKEND == "tensorflow":
        tf_config = {
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
            "task": {"type": "worker", "index": index},
        }
        return _env(TF_CONFIG=json.dumps(tf_config))
    return _env(
        KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{ports[0]}",
        KERAS_DISTRIBUTION_NUM_PROCESSES="2",
        KERAS_DISTRIBUTION_PROCESS_ID=str(index),
    )


@pytest.fixture(scope="module")
def multiworker(tmp_path_factory):
    """Two worker processes on 127.0.0.1 and a one-process reference, concurrently."""
    if BACKEND == "jax":
        import jax

        if not hasattr(jax.config, "jax_cpu_collectives_implementation"):
            pytest.skip("this jax has no CPU cross-process collectives (gloo)")

    def produce(d):
        ports = [_free_port(), _free_port()]
        procs, logs = {}, {}
        for name, env in (("worker0", _cluster_env(0, ports)), ("worker1", _cluster_env(1, ports)), ("single", _env())):
            logs[name] = d / f"{name}.log"
            scheme = "none" if name == "single" else "multiworker"
            procs[name] = _start(["train", str(d / name), scheme], env, logs[name])
        _wait(procs, logs)
        out = {}
        for name in procs:
            state = next((d / name).rglob("state.npz"))
            out[name] = {
                "state": str(state),
                "result": json.loads(logs[name].read_text().strip().splitlines()[-1]),
                "metrics": (state.parent.parent / "metrics.csv").read_text(),
            }
        return out

    return _once(tmp_path_factory, f"multiworker_{BACKEND}", produce)


def _arrays(path, prefix):
    z = np.load(path)
    return [z[k] for k in sorted(z.files) if k.startswith(prefix)]


def _max_diff(a, b) -> float:
    assert len(a) == len(b)
    return max(float(np.max(np.abs(np.asarray(u, np.float64) - v))) for u, v in zip(a, b) if u.size)


# --------------------------------------------------------------------------------------
# One step on two devices = one step on one device
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["towers", "mirrored"])
def test_two_steps_match_one_device(two_devices, scheme):
    """Same weights, same global batches: same loss, weights and momentum, to 1e-5."""
    r = two_devices["schemes"][scheme]
    assert len(r["devices"]) == 2
    assert r["num_replicas"] == (2 if scheme == "mirrored" else 1)
    assert r["moved"] > 1e-3  # the steps changed the weights: the comparison means something
    assert abs(r["loss"] - r["ref_loss"]) <= TOL * max(1.0, abs(r["ref_loss"]))
    assert r["weights_max_diff"] <= TOL
    assert r["optimizer_max_diff"] <= TOL


@pytest.mark.parametrize("scheme", ["towers", "mirrored"])
def test_state_file_moves_between_one_and_two_devices(two_devices, scheme):
    """The trainer's positional state file restores exactly in both directions."""
    r = two_devices["schemes"][scheme]
    assert r["distributed_to_single_diff"] == 0.0
    assert r["single_to_distributed_diff"] == 0.0


@pytest.mark.parametrize("scheme", ["towers", "mirrored"])
def test_trainer_runs_under_scheme(two_devices, scheme):
    """reproduce.train.train end to end: fit with validation, centre and ten-view eval."""
    t = two_devices["schemes"][scheme]["train"]
    assert t["status"] == "ok" and t["epochs"] == 1
    assert 0.0 <= t["val_top1_err"] <= 1.0 and t["val_top1_err_10view"] is not None


# --------------------------------------------------------------------------------------
# Towers: where things are
# --------------------------------------------------------------------------------------

TOWER = re.compile(r"^(conv\d|lrn\d|pool\d|crop\d)_([ab])(_\d+)?$")
# Layers through which §3.2's GPUs exchange activations: conv3 reads both towers'
# conv2 maps, the fully connected layers all of the previous layer.
CROSS_TALK = re.compile(r"^(concat3|conv3_[ab]|concat5|flatten|fc[678]|drop[67])(_\d+)?$")


def _layer_of(op_name: str):
    """The innermost layer name scope of an op (forward or gradient_tape/...)."""
    for seg in reversed(op_name.split("/")):
        m = TOWER.match(seg)
        if m:
            return f"{m.group(1)}_{m.group(2)}"
        if CROSS_TALK.match(seg):
            return CROSS_TALK.match(seg).group(1)
    return None


def _cpu(device: str):
    m = re.search(r"CPU:(\d+)$", device or "")
    return int(m.group(1)) if m else None


@pytest.mark.skipif(BACKEND != "tensorflow", reason="device placement by tower is the TensorFlow form")
def test_towers_variables_and_ops_on_their_devices(two_devices):
    p = two_devices["schemes"]["towers"]["placement"]
    for path, device in p["variables"].items():
        layer = path.split("/")[0]
        m = TOWER.match(layer)
        if m:
            assert _cpu(device) == "ab".index(m.group(2)), (path, device)
    assert _cpu(p["variables"]["fc6/kernel"]) == 1 and _cpu(p["variables"]["fc7/kernel"]) == 0

    ops = {o["name"]: o for o in p["ops"]}

    def device_of(name, device):
        # Ops with no requested device run on the default device, CPU:0; a
        # variable read runs where its variable is.
        if name in ops and not device:
            o = ops[name]
            for _i_name, i_dev, _ in o["inputs"]:
                if o["type"] in ("ReadVariableOp", "Placeholder") and _cpu(i_dev) is not None:
                    return _cpu(i_dev)
        return _cpu(device) or 0

    placed = {"forward": set(), "backward": set()}
    for o in p["ops"]:
        layer = _layer_of(o["name"])
        m = TOWER.match(layer or "")
        if m and o["type"] not in ("Placeholder", "ReadVariableOp"):
            assert _cpu(o["device"]) == "ab".index(m.group(2)), (o["name"], o["device"])
            placed["backward" if o["name"].startswith("gradient_tape/") else "forward"].add(o["type"])
    # the convolutions, LRN and pooling of both passes were checked
    assert {"Conv2D", "MaxPool"} <= placed["forward"]
    assert {"Conv2DBackpropFilter", "Conv2DBackpropInput", "MaxPoolGrad"} <= placed["backward"]

    # Every tensor that crosses devices, forward or backward, enters or leaves a
    # cross-talk layer (or is the input image, which both towers read).
    crossings = set()
    for o in p["ops"]:
        d = device_of(o["name"], o["device"])
        for i_name, _i_dev, scalar in o["inputs"]:
            if scalar or i_name == "data" or i_name not in ops:
                continue
            if device_of(i_name, ops[i_name]["device"]) != d:
                crossings.add((_layer_of(i_name), _layer_of(o["name"]), o["type"]))
    assert crossings, "no cross-device traffic at all: the towers were not split"
    bad = {c for c in crossings if not (CROSS_TALK.match(c[0] or "") or CROSS_TALK.match(c[1] or ""))}
    assert not bad, f"cross-device traffic outside conv3 and fc6-fc8: {sorted(bad, key=str)}"


@pytest.mark.skipif(BACKEND != "jax", reason="the JAX form of the towers is a ModelParallel layout")
def test_towers_jax_layout_splits_the_classifier(two_devices):
    layouts = two_devices["schemes"]["towers"]["layouts"]
    for name in ("fc6", "fc7", "fc8"):
        assert "'model'" in layouts[f"{name}/kernel"], layouts[f"{name}/kernel"]
    conv = [v for k, v in layouts.items() if k.startswith("conv")]
    assert conv and all("model" not in v for v in conv)  # replicated, see distribute's docstring
    mirrored = two_devices["schemes"]["mirrored"]["layouts"]
    assert all("model" not in v for v in mirrored.values())


# --------------------------------------------------------------------------------------
# Two machines (two processes on 127.0.0.1)
# --------------------------------------------------------------------------------------


def test_multiworker_workers_agree_with_one_process(multiworker):
    """A few smoke steps: both workers end with the same weights as one process."""
    w0, w1, one = (multiworker[k] for k in ("worker0", "worker1", "single"))
    for prefix in ("m", "o"):  # model variables, optimizer variables
        a, b, c = (_arrays(x["state"], prefix) for x in (w0, w1, one))
        assert _max_diff(a, b) == 0.0  # all-reduced: bitwise the same on both workers
        assert _max_diff(a, c) <= TOL
    assert _max_diff(_arrays(one["state"], "m"), [np.zeros_like(x) for x in _arrays(one["state"], "m")]) > 0
    rows = [x["metrics"].splitlines()[1].split(",") for x in (w0, w1, one)]
    for col in (1, 2, 4, 5):  # loss, top1_err, val_loss, val_top1_err
        vals = [float(r[col]) for r in rows]
        assert max(vals) - min(vals) <= TOL * max(1.0, abs(vals[0])), (col, vals)
    for x in (w0, w1):
        assert x["result"]["status"] == "ok"
        assert x["result"]["val_top1_err"] == one["result"]["val_top1_err"]


def test_multiworker_state_resumes_on_one_device(multiworker):
    """The state file a worker wrote loads into a one-device model unchanged."""
    from distribute_worker import SMOKE_RUN

    from reproduce.checkpoint import state_variables
    from reproduce.data import load
    from reproduce.train import build_training_model, load_state

    state = Path(multiworker["worker0"]["state"])
    cfg = get_config("smoke", list(SMOKE_RUN))  # the workers' net (dropout=0 has no RNG state)
    data = load(cfg.data)
    model, _ = build_training_model(cfg, data.stats, data.num_classes)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    info = load_state(state.parent.parent, model)
    assert info["completed_epochs"] == 1
    got = [np.asarray(v.numpy()) for v in state_variables(model)]
    assert _max_diff(got, _arrays(state, "m")) == 0.0


# --------------------------------------------------------------------------------------
# Errors and the batch split, in this process (one device)
# --------------------------------------------------------------------------------------


def _one_device() -> bool:
    return len(distribute.local_devices()) == 1


@pytest.mark.parametrize("scheme,needs", [("towers", "needs 2 devices"), ("mirrored", "needs at least 2 devices")])
def test_too_few_devices_is_a_clear_error(scheme, needs):
    if not _one_device():
        pytest.skip("this process sees several devices")
    cfg = get_config("smoke", {"distribute.scheme": scheme})
    with pytest.raises(distribute.DistributeError) as e:
        distribute.plan(cfg)
    msg = str(e.value)
    assert f"distribute.scheme={scheme!r} {needs}" in msg
    assert "found 1: [" in msg and "distribute.scheme=none" in msg
    assert repr(distribute.local_devices()) in msg  # names what was found


def test_towers_needs_the_two_tower_net():
    cfg = get_config("smoke", {"distribute.scheme": "towers", "model.towers": 1})
    with pytest.raises(distribute.DistributeError, match="model.towers=2"):
        distribute.plan(cfg)


def test_multiworker_without_cluster_is_a_clear_error(monkeypatch):
    cfg = get_config("smoke", {"distribute.scheme": "multiworker"})
    for k in (
        "TF_CONFIG",
        "KERAS_DISTRIBUTION_JOB_ADDRESSES",
        "KERAS_DISTRIBUTION_NUM_PROCESSES",
        "KERAS_DISTRIBUTION_PROCESS_ID",
        "JAX_COORDINATOR_ADDRESS",
    ):
        monkeypatch.delenv(k, raising=False)
    if BACKEND == "tensorflow":
        with pytest.raises(distribute.DistributeError, match="TF_CONFIG"):
            distribute.plan(cfg)
        monkeypatch.setenv("TF_CONFIG", "{not json")
        with pytest.raises(distribute.DistributeError, match="not a cluster description"):
            distribute.plan(cfg)
    else:
        with pytest.raises(distribute.DistributeError, match="KERAS_DISTRIBUTION_JOB_ADDRESSES"):
            distribute.plan(cfg)


def test_none_is_a_no_op():
    cfg = get_config("smoke")
    with distribute.scope(cfg) as plan:
        assert plan.scheme == "none" and plan.num_replicas == 1
        model = keras.Sequential([keras.layers.Dense(1)])
        assert distribute.place(model) is model
        batches = object()
        assert distribute.shard_batches(batches) is batches
    assert distribute.active() is None


def test_process_batches_split_each_global_batch():
    """JAX data parallelism: each process feeds its rows of every global batch."""
    from reproduce.data import ArrayBatches

    x = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1)
    y = np.arange(40, dtype=np.int32)
    full = ArrayBatches(x, y, 8, shuffle=True, seed=3, workers=1)
    parts = [
        distribute.process_batches(
            ArrayBatches(x, y, 8, shuffle=True, seed=3, workers=1), num_devices=2, num_processes=2, process_index=i
        )
        for i in range(2)
    ]
    assert len(parts[0]) == len(full) == 5
    for i in range(len(full)):
        fx, fy = full[i]
        (x0, y0), (x1, y1) = parts[0][i], parts[1][i]
        np.testing.assert_array_equal(np.concatenate([y0, y1]), fy)
        np.testing.assert_array_equal(np.concatenate([x0, x1]), fx)
    # a final batch of 3 images cannot be split over 2 devices: dropped
    odd = ArrayBatches(x[:19], y[:19], 8, shuffle=False, workers=1)
    assert len(distribute.process_batches(odd, num_devices=2)) == 2
    with pytest.raises(distribute.DistributeError, match="does not split evenly"):
        distribute.process_batches(ArrayBatches(x, y, 15, workers=1), num_devices=2)
