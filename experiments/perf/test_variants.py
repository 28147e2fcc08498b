"""The performance prototypes are exact rewrites of the project's net: LRN forms
agree with the layer (and the hand-written VJP with autodiff), conv1 by
space-to-depth equals the strided convolution, the fused towers equal the
explicit towers, and the bench measures them (resident paths included)."""

import json

import keras
import numpy as np
import pytest

from experiments.perf import run as perf_run
from experiments.perf.variants import (
    LRN_FORMS,
    Variant,
    VariantLRN,
    fused_alexnet,
    net_builder,
    parse_variant,
    space_to_depth_conv,
)
from reproduce.config import ModelConfig
from reproduce.flops import training_flops
from reproduce.layers import LocalResponseNormalization
from reproduce.model import alexnet

BACKEND = keras.backend.backend()


def test_variant_names_parse():
    v = parse_variant("towers=grouped+lrn=vjp+scan=4+conv1=s2d")
    assert (v.towers, v.lrn, v.scan, v.augment, v.conv1) == ("grouped", "vjp", 4, True, "s2d")
    assert parse_variant("project") == Variant()
    assert parse_variant("lrn=project") == Variant()
    assert parse_variant(v.name) == v
    with pytest.raises(ValueError, match="unknown variant part"):
        parse_variant("towers=triple")


def test_lrn_forms_agree_with_the_layer():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 30, (2, 3, 3, 12)).astype("float32")
    ref = np.asarray(LocalResponseNormalization(size=5, alpha=1e-3)(x))
    halves = np.concatenate(
        [np.asarray(LocalResponseNormalization(size=5, alpha=1e-3)(h)) for h in (x[..., :6], x[..., 6:])], -1
    )
    for form in LRN_FORMS:
        for groups, want in ((1, ref), (2, halves)):
            y = VariantLRN(form=form, groups=groups, size=5, alpha=1e-3)(x)
            np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-4, err_msg=f"{form} {groups}")
    if BACKEND == "jax":  # the hand-written VJP against autodiff of the project's layer
        import jax
        import jax.numpy as jnp

        g = rng.normal(size=x.shape).astype("float32")

        def grad(form):
            layer = VariantLRN(form=form, groups=2, size=5, alpha=1e-3)
            return np.asarray(jax.grad(lambda v: jnp.sum(layer(v) * g))(jnp.asarray(x)))

        np.testing.assert_allclose(grad("vjp"), grad("project"), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("n", [67, 70])  # 67: the input is padded; 70: cropped
def test_space_to_depth_conv1_equals_the_strided_convolution(n):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, n, n, 3)).astype("float32")
    k = rng.normal(size=(11, 11, 3, 4)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(space_to_depth_conv(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(k), 4)),
        np.asarray(keras.ops.conv(x, k, strides=4, padding="valid")),
        rtol=1e-4,
        atol=2e-4,
    )


@pytest.mark.skipif(BACKEND == "jax", reason="keras.ops only: checked once, in the TensorFlow session")
def test_variant_nets_compute_the_projects_function():
    split = alexnet(67, 5, width=0.125, seed=1)
    x = np.random.default_rng(2).normal(0, 50, (2, 67, 67, 3)).astype("float32")
    want = np.asarray(split.predict(x, verbose=0))
    for towers in ("grouped", "blockdiag"):
        fused = fused_alexnet(split, towers)
        assert training_flops(fused) == training_flops(split)
        np.testing.assert_allclose(np.asarray(fused.predict(x, verbose=0)), want, rtol=1e-4, atol=1e-5)
    for name in ("lrn=bf16+conv1=s2d", "towers=blockdiag+conv1=s2d"):
        net = net_builder(parse_variant(name))(ModelConfig(width=0.125), 67, 5, 0.0, 1)
        np.testing.assert_allclose(np.asarray(net.predict(x, verbose=0)), want, rtol=1e-4, atol=1e-5, err_msg=name)
    dense = fused_alexnet(split, "dense")
    assert training_flops(dense) > training_flops(split)  # a larger net


@pytest.mark.skipif(BACKEND != "jax", reason="the resident and scan paths are JAX's")
def test_resident_and_scan_rows(tmp_path):
    out = tmp_path / "bench.json"
    rows = perf_run.run_variants(
        ["scan=2", "no_augment"],
        paths=["step", "resident"],
        full=False,
        precisions=["float32"],
        batches=[4],
        steps=2,
        warmup=1,
        repeats=1,
        out=str(out),
        verbose=False,
    )
    assert [(r["path"], r["variant"]) for r in rows] == [
        ("step", "scan=2"),
        ("resident", "scan=2"),
        ("step", "no_augment"),
    ]  # no_augment: step only
    assert all(r["images_per_s"] > 0 and r["loss_finite"] and r["steps"] == 2 for r in rows)
    assert len(json.loads(out.read_text())["rows"]) == 3  # one file for all variants
