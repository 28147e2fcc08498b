"""Measurements that exist only here, plugged into `reproduce.bench.run` as extra
paths (its ``measures`` hook), and the reference figures the log compares with.

``step`` with ``scan``/``no_augment``
    K training steps per dispatch in one ``lax.scan`` (JAX); or the bare net on
    float crops, no Augment (the anchors' setup).
``resident`` / ``e2e-resident`` (JAX)
    The device-resident design proposed for the trainer (perf_log.md, P6): the
    whole uint8 training set on the device, batches gathered by index inside one
    compiled ``lax.scan`` over a chunk of steps (``scan=1``: one dispatch per step).
"""

from __future__ import annotations

import dataclasses
import re
import time

import keras
import numpy as np

from experiments.perf.variants import Variant
from reproduce.bench import Job, Timing, jax_train_step, measure_step, time_jax
from reproduce.train import compile_model

#: Figures to beat on one NVIDIA H200, synthetic data, mixed_bfloat16, 227-px crops
#: (straightforward Keras 3 on JAX), keyed by (path, batch).
H200_ANCHORS = {
    ("step", 128): 22000,
    ("step", 512): 26000,
    ("fit", 128): 21000,
    ("fit", 512): 14600,  # 23,500 with steps_per_execution=8
}
#: Targets on one H200 for the paper's net through the real training path.
H200_TARGETS = {128: 35000, 512: 45000}


def anchors_note(rows: list) -> str:
    """One line per row that has an H200 anchor or target to compare with."""
    lines = []
    for r in rows:
        if (
            re.search(r"H200", r.get("device", ""))
            and "NVL" not in r.get("device", "")
            and r["precision"] == "mixed_bfloat16"
            and r.get("crop_size") == 227
        ):
            anchor, target = H200_ANCHORS.get((r["path"], r["batch"])), H200_TARGETS.get(r["batch"])
            if anchor or target:
                lines.append(
                    f"{r['path']} {r['variant']} b={r['batch']}: {r['images_per_s']:,.0f} img/s; "
                    f"anchor {anchor or '-'}, target {target or '-'}"
                )
    return "\n".join(lines)


def _float_batch(job: Job, seed: int = 0):
    """Mean-subtracted-looking float crops and labels: the bare net's input."""
    rng = np.random.default_rng(seed)
    c = job.cfg.data.crop_size
    x = rng.normal(0.0, 60.0, size=(job.batch, c, c, 3)).astype(np.float32)
    return x, np.asarray(job.labels[: job.batch])


def _scan_step(job: Job, model, x, y, scan: int, unroll: int) -> Timing:
    import jax

    one, state = jax_train_step(model)

    def many(state, x, y):
        def body(state, _):
            return one(state, x, y)

        state, losses = jax.lax.scan(body, state, None, length=scan, unroll=unroll)
        return state, losses[-1]

    args = (jax.device_put(x), jax.device_put(y))
    return time_jax(jax.jit(many, donate_argnums=0), state, job, args, per_call=scan)


def step_measure(variant: Variant):
    """The step path for `variant`: the bench's own, on the bare net for
    no_augment, K steps per dispatch for scan > 1."""

    def measure(job: Job) -> Timing:
        model, x, y = job.model, None, None
        if not variant.augment:
            model = compile_model(job.net, job.cfg)
            x, y = _float_batch(job)
        if variant.scan > 1:
            if x is None:
                x, y = np.asarray(job.images[: job.batch]), np.asarray(job.labels[: job.batch])
            return _scan_step(job, model, x, y, variant.scan, variant.unroll)
        if x is None:
            return measure_step(job)
        return measure_step(dataclasses.replace(job, model=model, images=x, labels=y))

    return measure


def resident_measure(variant: Variant):
    """The resident paths: uint8 images and labels on the device, each chunk of
    steps one compiled lax.scan that gathers its batches by index (JAX)."""

    def measure(job: Job) -> Timing:
        import jax
        import jax.numpy as jnp

        one, state0 = jax_train_step(job.model)
        n, batch = len(job.labels), job.batch
        per_epoch = n // batch
        if per_epoch < 1:
            raise ValueError(f"{n} images are fewer than one batch of {batch}")
        chunk = max(1, min(variant.scan or job.steps, job.steps, per_epoch))

        def run_chunk(state, images, labels, idx):
            def body(state, ix):
                return one(state, jnp.take(images, ix, axis=0), jnp.take(labels, ix, axis=0))

            if idx.shape[0] == 1:  # one step per dispatch: no loop
                return body(state, idx[0])
            state, losses = jax.lax.scan(body, state, idx, unroll=variant.unroll)
            return state, losses[-1]

        imgs, labs = jax.device_put(np.asarray(job.images)), jax.device_put(np.asarray(job.labels))
        rng = np.random.default_rng(job.cfg.train.seed)
        order = {"pos": per_epoch, "perm": None}

        def next_args():  # the next chunk of batches of this epoch's permutation
            if order["pos"] + chunk > per_epoch:
                order["perm"] = rng.permutation(n)[: per_epoch * batch].reshape(per_epoch, batch)
                order["pos"] = 0
            idx = order["perm"][order["pos"] : order["pos"] + chunk].astype(np.int32)
            order["pos"] += chunk
            return imgs, labs, idx

        fn = jax.jit(run_chunk, donate_argnums=0)
        return time_jax(fn, state0, job, per_call=chunk, next_args=next_args)

    return measure


def measures_for(variant: Variant) -> dict:
    """The extra and replaced paths for reproduce.bench.run(measures=...)."""
    out = {"resident": resident_measure(variant), "e2e-resident": resident_measure(variant)}
    if variant.scan > 1 or not variant.augment:
        out["step"] = step_measure(variant)
    return out


def skip_reason(variant: Variant, path: str, backend: str) -> str | None:
    """Why `variant` is not measured on `path` here, or None."""
    if path in ("resident", "e2e-resident") and backend != "jax":
        return "the resident paths are JAX-only"
    if not variant.augment and path != "step":
        return "no_augment applies to the step path only"
    if variant.scan and path not in ("step", "resident", "e2e-resident"):
        return "scan applies to the step and resident paths"
    if (variant.lrn == "vjp" or variant.scan > 1) and backend != "jax":
        return "JAX-only variant"
    return None


def measure_matmul_tflops(n: int = 8192, dtype: str = "bfloat16", repeats: int = 10) -> float | None:
    """TFLOP/s of an n x n x n matmul on the default device (JAX backend only): the
    attainable peak the log compares MFU with (~790 bf16 on an H200)."""
    if keras.backend.backend() != "jax":
        return None
    import jax
    import jax.numpy as jnp

    if jax.devices()[0].platform == "cpu":  # a small one (8192^3 bf16 takes minutes there)
        n, repeats = min(n, 1024), min(repeats, 3)
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype=jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype=jnp.float32).astype(dtype)
    f = jax.jit(lambda a, b: a @ b)
    for _ in range(3):
        f(a, b).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = f(a, b)
    out.block_until_ready()
    return 2.0 * n**3 * repeats / (time.perf_counter() - t0) / 1e12
