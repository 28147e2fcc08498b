"""Subprocess side of tests/test_distribute.py.

Device counts and clusters must be fixed before TensorFlow or JAX initializes, so
each check runs in a fresh interpreter started by the test:

    python tests/distribute_worker.py equivalence OUT.json SCHEME... [--train=ROOT]
        Two logical CPU devices (TensorFlow: a logical device configuration; JAX:
        the parent sets XLA_FLAGS=--xla_force_host_platform_device_count=2), or,
        for `multiworker`, this process's part of the cluster the parent described
        in TF_CONFIG / KERAS_DISTRIBUTION_*. For each scheme: two SGD steps from the
        same weights on the same global batches as on one device (the reference,
        computed in the same process outside the scheme's scope); the state file
        written by either side is loaded by the other. TensorFlow towers also
        report where their variables and traced ops are. --train: then
        reproduce.train.train on `smoke` under each scheme, into ROOT/SCHEME.

    python tests/distribute_worker.py train RUN_DIR SCHEME [OVERRIDE ...]
        reproduce.train.train on a few deterministic `smoke` steps; prints a JSON
        line.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")


def two_cpu_devices() -> None:
    if BACKEND == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    else:
        assert "--xla_force_host_platform_device_count=2" in os.environ.get("XLA_FLAGS", "")


# Tiny AlexNet: two towers, LRN, overlapping pools; no dropout and no augmentation,
# whose random draws are per replica on TensorFlow (the same distribution, not the
# same numbers as on one device).
OVERRIDES = {
    "model.width": 0.0625,
    "model.dropout": 0.0,
    "train.learning_rate": 0.01,
    "train.batch_size": 8,
}
GLOBAL_BATCH = 8
STEPS = 2
IMAGE = 67
CLASSES = 4


def _cfg(scheme):
    from reproduce.config import get_config

    return get_config("smoke", {**OVERRIDES, "distribute.scheme": scheme})


def _build(cfg, weights=None):
    import keras

    from reproduce.model import build_model

    net = build_model(cfg.model, IMAGE, CLASSES, weight_decay=cfg.train.weight_decay, seed=0)
    if weights is not None:
        net.set_weights(weights)
    net.compile(
        optimizer=keras.optimizers.SGD(learning_rate=cfg.train.learning_rate, momentum=cfg.train.momentum),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return net


def _data():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(0, 40, (GLOBAL_BATCH * STEPS, IMAGE, IMAGE, 3)).astype("float32")
    y = rng.integers(0, CLASSES, GLOBAL_BATCH * STEPS).astype("int32")
    return x, y


def _fit(model, x, y):
    hist = model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
    return float(hist.history["loss"][-1])


def _state(model):
    import numpy as np

    from reproduce.checkpoint import state_variables

    return (
        [np.asarray(v.numpy()) for v in state_variables(model)],
        [np.asarray(v.numpy()) for v in model.optimizer.variables],
    )


def _max_diff(a, b) -> float:
    import numpy as np

    assert len(a) == len(b), (len(a), len(b))
    return max(
        float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64)))) if np.size(u) else 0.0
        for u, v in zip(a, b)
    )


def _round_trip(src, dst) -> float:
    """save_state(src) -> load_state(dst); the largest difference of any variable."""
    from reproduce.train import load_state, save_state

    with tempfile.TemporaryDirectory() as d:
        save_state(Path(d), src, {"completed_epochs": 1})
        load_state(Path(d), dst)
    m1, o1 = _state(src)
    m2, o2 = _state(dst)
    return max(_max_diff(m1, m2), _max_diff(o1, o2))


def equivalence(out_path: str, *schemes: str) -> None:
    from reproduce import distribute

    train_root = [a.split("=", 1)[1] for a in schemes if a.startswith("--train=")]
    schemes = tuple(a for a in schemes if not a.startswith("--"))

    if "multiworker" in schemes:
        # The cluster must be up before TensorFlow initializes (the parent set
        # TF_CONFIG or KERAS_DISTRIBUTION_*); the one-device reference is then
        # computed outside the scope, in the same process.
        distribute.plan(_cfg("multiworker"))
    else:
        two_cpu_devices()
    import keras

    keras.utils.set_random_seed(0)
    x, y = _data()
    ref_cfg = _cfg("none")
    ref = _build(ref_cfg)
    w0 = [w.copy() for w in ref.get_weights()]
    ref_loss = _fit(ref, x, y)
    ref_m, ref_o = _state(ref)

    results = {"backend": BACKEND, "schemes": {}}
    for scheme in schemes:
        cfg = _cfg(scheme)
        fresh = _build(ref_cfg)  # one device: built outside the scope
        fresh.optimizer.build(fresh.trainable_variables)
        with distribute.scope(cfg) as plan:
            model = distribute.place(_build(cfg, w0))
            loss = _fit(model, x, y)
            m, o = _state(model)
            r = {
                "devices": [str(d) for d in plan.devices],
                "num_replicas": plan.num_replicas,
                "num_processes": plan.num_processes,
                "loss": loss,
                "ref_loss": ref_loss,
                "weights_max_diff": _max_diff(m, ref_m),
                "optimizer_max_diff": _max_diff(o, ref_o),
                "moved": _max_diff(model.get_weights(), w0),
            }
            # A state file written by the distributed run restores on one device ...
            r["distributed_to_single_diff"] = _round_trip(model, fresh)
            # ... and one written on one device restores in the distributed run.
            again = distribute.place(_build(cfg))
            again.optimizer.build(again.trainable_variables)
            r["single_to_distributed_diff"] = _round_trip(ref, again)
            if BACKEND == "tensorflow" and scheme == "towers":
                r["placement"] = _tf_placement(model, x, y)
            if BACKEND == "jax":
                r["layouts"] = {
                    v.path: str(v.value.sharding.spec)
                    for v in model.weights
                    if hasattr(v.value, "sharding") and hasattr(v.value.sharding, "spec")
                }
        results["schemes"][scheme] = r
    for scheme in schemes if train_root else ():
        # The trainer end to end (uint8 batches, Augment, fit with validation,
        # centre and ten-view evaluation) under the scheme.
        r = results["schemes"][scheme]
        r["train"] = _train(str(Path(train_root[0]) / scheme), scheme, *SMOKE_RUN)
    Path(out_path).write_text(json.dumps(results, indent=1))


def _tf_placement(model, x, y) -> dict:
    """Variable devices, and the device of every op of the traced train step."""
    import tensorflow as tf

    variables = {v.path: v.value.device for v in model.weights}
    fn = tf.function(model.train_step)
    graph = fn.get_concrete_function(
        (tf.TensorSpec((GLOBAL_BATCH, IMAGE, IMAGE, 3), tf.float32), tf.TensorSpec((GLOBAL_BATCH,), tf.int32))
    ).graph
    captured = {id(internal): external.device for external, internal in graph.captures if hasattr(external, "device")}

    def device_of(t):
        if t.dtype == tf.resource:
            return captured.get(id(t), "")
        return t.op.device

    ops = []
    for op in graph.get_operations():
        inputs = [[i.op.name, device_of(i), i.shape.rank == 0 or i.shape.num_elements() == 1] for i in op.inputs]
        ops.append({"name": op.name, "type": op.type, "device": op.device, "inputs": inputs})
    return {"variables": variables, "ops": ops}


# A few deterministic `smoke` steps: no augmentation draws and no dropout, whose
# random numbers are per replica under tf.distribute (statistically the same, not
# the same numbers as on one device). The ten-view evaluation stays on under
# TensorFlow.
SMOKE_RUN = (
    "data.crop_flip=false",
    "data.pca_color=false",
    "model.dropout=0",
    "train.epochs=1",
    "train.steps_per_epoch=2",
)


def _train(run_dir: str, scheme: str, *overrides: str) -> dict:
    from reproduce.config import get_config
    from reproduce.train import train

    cfg = get_config("smoke", ["distribute.scheme=" + scheme, *overrides])
    result = train(cfg, run_dir, verbose=0)
    return {k: result[k] for k in ("status", "val_top1_err", "val_top1_err_10view", "epochs")}


def train_run(run_dir: str, scheme: str, *overrides: str) -> None:
    print(json.dumps(_train(run_dir, scheme, *SMOKE_RUN, *overrides)))


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    {"equivalence": equivalence, "train": train_run}[mode](*args)
