"""reproduce.bench: FLOP counting, the benchmark's output, and the JAX path without TensorFlow.

These check what the bench writes, not how fast anything is (CI is a shared CPU).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from reproduce import bench

ROOT = Path(__file__).resolve().parents[1]
BACKEND = keras.backend.backend()
TINY = dict(full=False, precisions=["float32"], batches=[4], steps=2, warmup=1, repeats=1, verbose=False)


def _small_flops():
    from reproduce.model import alexnet

    return bench.count_training_flops(alexnet, 67, 1000, width=0.125)


def _check_rows(rows, paths):
    assert [r["path"] for r in rows] == list(paths)
    for r in rows:
        for key in bench.ROW_KEYS:
            assert key in r, key
        assert r["images_per_s"] > 0 and r["step_ms"] > 0
        assert r["backend"] == BACKEND or r["backend"] == "jax"
        assert r["batch"] == 4 and r["precision"] == "float32" and r["steps"] >= 2
        assert r["crop_size"] == 67 and r["width"] == 0.125
        assert r["loss_finite"] is True
        assert r["flops_per_image"] == pytest.approx(_small_flops(), rel=1e-9)
        assert r["date"].count("-") == 2


def test_training_flops_of_the_papers_net():
    from reproduce.model import alexnet

    # Counted from the layer shapes: built without initializing its 61M weights.
    flops = bench.count_training_flops(alexnet, 227, 1000)
    assert flops == pytest.approx(bench.PAPER_TRAIN_FLOPS, rel=0.01)
    assert flops / 6 == pytest.approx(724.4e6, rel=1e-3)  # forward multiply-adds
    # The same count from a built (small) model.
    small = alexnet(67, 10, width=0.125)
    assert bench.training_flops(small) == bench.count_training_flops(alexnet, 67, 10, width=0.125)


def test_peaks_and_mfu_inputs():
    assert bench.peak_tflops("1 x NVIDIA H200", "mixed_bfloat16") == (989.0, "bf16")
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3", "float32") == (495.0, "tf32")
    assert bench.peak_tflops("Tesla V100-SXM2-16GB", "float32") == (15.7, "fp32")
    assert bench.peak_tflops("NVIDIA L40S", "mixed_bfloat16")[0] == 362.0
    assert bench.peak_tflops("NVIDIA L4", "mixed_bfloat16")[0] == 121.0
    assert bench.peak_tflops("CPU (x86_64, 2 cores)", "float32") == (None, None)


@pytest.mark.skipif(BACKEND == "jax", reason="on JAX the subprocess test below runs the bench")
def test_bench_writes_json(tmp_path):
    """In-process `run` on the active backend, both synthetic paths."""
    out = tmp_path / "bench.json"
    rows = bench.run(paths=["step", "fit"], out=str(out), peak=1.0, **TINY)
    _check_rows(rows, ["step", "fit"])
    assert all(r["mfu"] > 0 for r in rows)  # against the given 1 TFLOP/s peak
    saved = json.loads(out.read_text())
    assert saved["backend"] == BACKEND and saved["rows"] == json.loads(json.dumps(rows))
    assert "| step |" in bench.format_table(rows)


_NO_TF = """
import sys
for name in ("tensorflow", "tensorflow_datasets", "tensorboard"):
    sys.modules[name] = None  # as if not installed: import fails, find_spec is None
from reproduce import bench
code = bench.main(sys.argv[1:])
import reproduce.model, reproduce.layers, reproduce.augment, reproduce.data, reproduce.train
assert sys.modules.get("tensorflow") is None
sys.exit(code)
"""


@pytest.mark.skipif(BACKEND != "jax", reason="the JAX path's check; runs in the JAX session")
def test_jax_path_runs_without_tensorflow(tmp_path):
    """The GPU machine has JAX and no TensorFlow. `python -m reproduce bench`'s main
    (step and fit paths: the trainer's model, compile and callbacks, reproduce.data's
    ArrayBatches) must run with `import tensorflow` failing, and write its JSON."""
    out = tmp_path / "bench.json"
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT)}
    args = ["--small", "--paths", "step,fit", "--precision", "float32", "--batch", "4",
            "--steps", "2", "--warmup", "1", "--repeats", "1", "--out", str(out), "--quiet"]
    p = subprocess.run([sys.executable, "-c", _NO_TF, *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    saved = json.loads(out.read_text())
    rows = saved["rows"]
    _check_rows(rows, ["step", "fit"])
    assert saved["backend"] == "jax" and rows[0]["mfu"] is None  # a CPU: no known peak
    assert "| step |" in p.stdout and "| fit |" in p.stdout


def test_variants_compute_the_same_function():
    """The prototypes measured for proposed changes (docs/perf_log.md) are exact
    rewrites: LRN forms agree, and the fused towers equal the explicit towers."""
    from reproduce.config import ModelConfig
    from reproduce.layers import LocalResponseNormalization
    from reproduce.model import alexnet

    rng = np.random.default_rng(0)
    x = rng.normal(0, 30, (2, 3, 3, 12)).astype("float32")
    ref = np.asarray(LocalResponseNormalization(size=5, alpha=1e-3)(x))
    halves = np.concatenate(
        [np.asarray(LocalResponseNormalization(size=5, alpha=1e-3)(h)) for h in (x[..., :6], x[..., 6:])], -1)
    for impl in bench.LRN_IMPLS:
        y = bench.lrn_apply(keras.ops.convert_to_tensor(x), size=5, k=2.0, alpha=1e-3, beta=0.75, impl=impl)
        np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-4)
        y2 = bench.lrn_apply(keras.ops.convert_to_tensor(x), size=5, k=2.0, alpha=1e-3, beta=0.75,
                             impl=impl, groups=2)
        np.testing.assert_allclose(np.asarray(y2), halves, rtol=1e-5, atol=1e-4)
    if BACKEND == "jax":  # the hand-written VJP against autodiff
        import jax
        import jax.numpy as jnp

        g = rng.normal(size=x.shape).astype("float32")

        def loss(impl):
            return lambda v: jnp.sum(bench.lrn_apply(v, size=5, k=2.0, alpha=1e-3, beta=0.75,
                                                     impl=impl, groups=2) * g)

        a = jax.grad(loss("project"))(jnp.asarray(x))
        for impl in ("slices", "vjp"):
            b = jax.grad(loss(impl))(jnp.asarray(x))
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)

    # conv1 by space-to-depth equals the strided convolution (227: padded; 70: cropped).
    for n in (67, 70):
        xi = rng.normal(size=(2, n, n, 3)).astype("float32")
        k = rng.normal(size=(11, 11, 3, 4)).astype("float32")
        np.testing.assert_allclose(
            np.asarray(bench.space_to_depth_conv(keras.ops.convert_to_tensor(xi), keras.ops.convert_to_tensor(k), 4)),
            np.asarray(keras.ops.conv(xi, k, strides=4, padding="valid")), rtol=1e-4, atol=2e-4)
    if BACKEND == "jax":
        return  # the layers are keras.ops: the fused-tower check runs in the TF session (faster)
    split = alexnet(67, 5, width=0.125, seed=1)
    xi = rng.normal(0, 50, (2, 67, 67, 3)).astype("float32")
    want = np.asarray(split.predict(xi, verbose=0))
    for towers in ("grouped", "blockdiag"):
        fused = bench.fused_alexnet(ModelConfig(width=0.125), 67, 5, seed=2, towers=towers)
        assert bench.training_flops(fused) == bench.training_flops(split)
        bench.fuse_weights(split, fused)
        np.testing.assert_allclose(np.asarray(fused.predict(xi, verbose=0)), want, rtol=1e-4, atol=1e-5)


def test_variant_names_parse():
    v = bench.parse_variant("towers=grouped+lrn=vjp+scan=4+conv1=s2d")
    assert (v.towers, v.lrn, v.scan, v.augment, v.conv1) == ("grouped", "vjp", 4, True, "s2d")
    assert bench.parse_variant("project") == bench.Variant()
    assert bench.parse_variant("lrn=project") == bench.Variant()
    assert bench.parse_variant(v.name) == v
    with pytest.raises(ValueError, match="unknown variant part"):
        bench.parse_variant("towers=triple")
