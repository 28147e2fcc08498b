"""The networks: the paper's shapes and parameter count, towers, every switch, CIFAR nets."""

import inspect
import itertools

import keras
import numpy as np
import pytest

from reproduce import config as C
from reproduce import model as M
from reproduce.config import ModelConfig
from reproduce.layers import LocallyConnected2D, LocalResponseNormalization

# A few reused configurations: on the jax backend every new model (and shape)
# costs XLA compiles, so tests share them where they can.
SMALL = dict(image_size=67, num_classes=3, width=0.0625)  # 3/8/12/12/8 kernels per tower, fc 256
TINY = dict(num_classes=2, towers=1, width=0.001, lrn=False)  # one kernel per conv layer
CIFAR_WIDTH = 0.25


def conv_params(k, cin, cout):
    return k * k * cin * cout + cout


def alexnet_params(towers, classes=1000, pool5=6):
    """Parameter count from the paper's layer shapes (§3.5, Fig. 2)."""
    if towers == 2:  # per tower, times two
        convs = 2 * (
            conv_params(11, 3, 48)
            + conv_params(5, 48, 128)
            + conv_params(3, 256, 192)
            + conv_params(3, 192, 192)
            + conv_params(3, 192, 128)
        )
    else:  # §3.2: half the kernels, except conv5
        convs = (
            conv_params(11, 3, 48)
            + conv_params(5, 48, 128)
            + conv_params(3, 128, 192)
            + conv_params(3, 192, 192)
            + conv_params(3, 192, 256)
        )
    fcs = (pool5 * pool5 * 256 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * classes + classes)
    return convs + fcs


def images(n, size, seed=0):
    # Mean-subtracted pixels on the 0-255 scale.
    return (np.random.RandomState(seed).randn(n, size, size, 3) * 50).astype("float32")


def side(model, name):
    return model.get_layer(name).output.shape[1]


def train_step_loss(model, n=2, seed=0):
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = images(n, model.input.shape[1], seed)
    y = np.arange(n) % model.output.shape[-1]
    return float(np.asarray(model.train_on_batch(x, y)))


@pytest.fixture(scope="module")
def paper_net():
    return M.alexnet()  # 227 px, 1000 classes, two towers: built once


# --------------------------------------------------------------------------------------
# The paper's net
# --------------------------------------------------------------------------------------


def test_paper_shapes(paper_net):
    m = paper_net
    assert m.input.shape[1:] == (227, 227, 3)
    assert tuple(m.output.shape) == (None, 1000)
    for t in M.TOWER_SUFFIXES:
        assert m.get_layer(f"conv1{t}").output.shape[1:] == (55, 55, 48)
        assert m.get_layer(f"pool1{t}").output.shape[1:] == (27, 27, 48)
        assert m.get_layer(f"conv2{t}").output.shape[1:] == (27, 27, 128)
        assert m.get_layer(f"pool2{t}").output.shape[1:] == (13, 13, 128)
        assert m.get_layer(f"conv3{t}").output.shape[1:] == (13, 13, 192)
        assert m.get_layer(f"conv4{t}").output.shape[1:] == (13, 13, 192)
        assert m.get_layer(f"conv5{t}").output.shape[1:] == (13, 13, 128)
        assert m.get_layer(f"pool5{t}").output.shape[1:] == (6, 6, 128)
        # conv3 sees both towers (§3.2): 256 input channels.
        assert m.get_layer(f"conv3{t}").kernel.shape == (3, 3, 256, 192)
        assert m.get_layer(f"conv4{t}").kernel.shape == (3, 3, 192, 192)
    assert m.get_layer("flatten").output.shape[1:] == (9216,)
    assert [m.get_layer(n).units for n in ("fc6", "fc7", "fc8")] == [4096, 4096, 1000]


def test_paper_parameter_count(paper_net):
    assert paper_net.count_params() == alexnet_params(2) == 60_965_224


def test_paper_layer_names_and_towers(paper_net):
    names = [layer.name for layer in paper_net.layers]
    for stem in ("conv1", "lrn1", "pool1", "conv2", "lrn2", "pool2", "conv3", "conv4", "conv5", "pool5"):
        assert f"{stem}_a" in names and f"{stem}_b" in names
    for shared in ("image", "concat3", "concat5", "flatten", "fc6", "drop6", "fc7", "drop7", "fc8"):
        assert shared in names
    a, b = M.tower_layers(paper_net, 0), M.tower_layers(paper_net, "b")
    assert a == M.tower_layers(paper_net, "_a") and len(a) == len(b) == 10
    assert {n[:-2] for n in a} == {n[:-2] for n in b}
    assert not set(a) & set(b)
    with pytest.raises(ValueError, match="tower=2"):
        M.tower_layers(paper_net, 2)


def test_paper_defaults(paper_net):
    m = paper_net
    lrn = m.get_layer("lrn1_a")
    assert (lrn.size, lrn.k, lrn.alpha, lrn.beta, lrn.convention) == (5, 2.0, 1e-4, 0.75, "paper")
    p = m.get_layer("pool1_a")
    assert (p.pool_size, p.strides, p.padding) == ((3, 3), (2, 2), "valid")
    assert m.get_layer("drop6").rate == m.get_layer("drop7").rate == 0.5
    assert m.get_layer("conv1_a").activation is keras.activations.relu
    assert m.get_layer("fc8").activation is keras.activations.linear
    assert m.get_layer("fc8").dtype_policy.compute_dtype == "float32"
    # §5 biases: 1 in conv2, conv4, conv5, fc6, fc7; 0 elsewhere.
    for name in ("conv2_a", "conv4_b", "conv5_a", "fc6", "fc7"):
        assert np.all(keras.ops.convert_to_numpy(m.get_layer(name).bias) == 1.0), name
    for name in ("conv1_a", "conv3_b", "fc8"):
        assert np.all(keras.ops.convert_to_numpy(m.get_layer(name).bias) == 0.0), name
    w = keras.ops.convert_to_numpy(m.get_layer("fc7").kernel)
    assert abs(w.mean()) < 1e-4 and w.std() == pytest.approx(0.01, rel=0.01)


def test_one_tower_net():
    # §3.2: 48, 128, 192, 192, 256 kernels, fc 4096, 4096. Shapes at 227 on a
    # narrow copy; the exact count on the full-width net at 67 px, where pool5 is
    # 1x1 so fc6 is small, then carried to 227 (only fc6's fan-in changes).
    m = M.alexnet(227, **dict(TINY, lrn=True))
    names = [layer.name for layer in m.layers]
    assert {"conv1", "lrn1", "pool1", "lrn2", "conv3", "fc6", "drop7", "fc8"} <= set(names)
    assert not M.tower_layers(m, 0) and not any(n.endswith(M.TOWER_SUFFIXES) for n in names)
    assert [side(m, n) for n in ("conv1", "pool1", "conv2", "pool2", "conv3", "conv5", "pool5")] == [
        55,
        27,
        27,
        13,
        13,
        13,
        6,
    ]
    full = M.alexnet(67, 1000, towers=1)
    assert [full.get_layer(f"conv{i}").filters for i in range(1, 6)] == [48, 128, 192, 192, 256]
    assert full.get_layer("conv3").kernel.shape == (3, 3, 128, 192)  # one tower: no cross-talk to add
    assert [full.get_layer(n).units for n in ("fc6", "fc7")] == [4096, 4096]
    assert full.count_params() == alexnet_params(1, pool5=1)
    assert full.count_params() + 35 * 256 * 4096 == alexnet_params(1) == 59_798_312


def test_width_scales_every_hidden_layer():
    m = M.alexnet(**SMALL)
    assert [m.get_layer(f"conv{i}_a").filters for i in range(1, 6)] == [3, 8, 12, 12, 8]
    assert [m.get_layer(n).units for n in ("fc6", "fc7", "fc8")] == [256, 256, 3]
    one = M.alexnet(**dict(SMALL, towers=1))
    assert [one.get_layer(f"conv{i}").filters for i in range(1, 6)] == [3, 8, 12, 12, 16]
    tiny = M.alexnet(67, **TINY)  # everything at least 1
    assert [tiny.get_layer(f"conv{i}").filters for i in range(1, 6)] == [1] * 5
    assert tiny.get_layer("fc6").units == 4


def test_towers_are_independent_except_at_conv3():
    m = M.alexnet(**SMALL, dropout=0.0, seed=1)
    probe = keras.Model(m.input, [m.get_layer(n).output for n in ("conv2_a", "conv2_b", "conv3_a", "conv3_b")])
    x = images(2, 67)
    base = [np.asarray(o) for o in probe.predict(x, verbose=0)]

    def outputs_after_perturbing(layer_name):
        layer = m.get_layer(layer_name)
        saved = layer.get_weights()
        rng = np.random.RandomState(7)
        layer.set_weights([saved[0] + rng.randn(*saved[0].shape).astype("float32") * 0.05, saved[1]])
        out = [np.asarray(o) for o in probe.predict(x, verbose=0)]
        layer.set_weights(saved)
        return out

    c2a, c2b, c3a, c3b = outputs_after_perturbing("conv2_b")
    np.testing.assert_array_equal(c2a, base[0])  # tower a does not see conv2_b
    assert not np.allclose(c2b, base[1])
    assert not np.allclose(c3a, base[2]) and not np.allclose(c3b, base[3])  # conv3 sees tower b
    c2a, c2b, c3a, c3b = outputs_after_perturbing("conv2_a")
    np.testing.assert_array_equal(c2b, base[1])
    assert not np.allclose(c3a, base[2]) and not np.allclose(c3b, base[3])  # ... and tower a


def test_pooling_variants_give_identical_shapes():
    # §3.4: the non-overlapping comparison "produces output of equivalent
    # dimensions". conv1's map changes every 4 input pixels, so stepping by 4
    # visits every distinct map size from 67 to 260 (and with them all 8
    # odd/even combinations of the three pooled maps), plus the presets' sizes.
    parities = set()
    for size in sorted(set(range(67, 261, 4)) | {128, 227, 228}):
        shapes = {}
        for pooling in ("overlap", "non_overlap"):
            m = M.alexnet(size, pooling=pooling, **TINY)  # 1 tower, 1 kernel per layer
            shapes[pooling] = [
                tuple(layer.output.shape) for layer in m.layers if layer.name.startswith(("conv", "pool"))
            ]
        assert shapes["overlap"] == shapes["non_overlap"], size
        parities.add(tuple(side(m, n) % 2 for n in ("conv1", "pool1", "pool2")))
        if size == 227:
            assert [s[1] for s in shapes["overlap"]] == [55, 27, 27, 13, 13, 13, 13, 6]
    assert len(parities) == 8


def test_non_overlap_crops_only_even_maps():
    m = M.alexnet(128, pooling="non_overlap", **TINY)
    names = [layer.name for layer in m.layers]
    assert side(m, "conv1") == 30 and "crop1" in names  # 30 is even: drop the row 3x3/2 never reads
    assert m.get_layer("pool1").pool_size == (2, 2) and side(m, "pool1") == 14
    assert "crop1" not in [layer.name for layer in M.alexnet(227, pooling="non_overlap", **TINY).layers]


def test_smallest_input():
    assert M.MIN_IMAGE_SIZE == 67
    assert side(M.alexnet(67, **TINY), "pool5") == 1
    with pytest.raises(ValueError) as err:
        M.alexnet(66, 2)
    msg = str(err.value)
    assert "image_size=66" in msg and "pool5" in msg and "67" in msg
    with pytest.raises(ValueError, match="conv1"):
        M.alexnet(10, 2)


# --------------------------------------------------------------------------------------
# Every switch builds and trains: a covering design
# --------------------------------------------------------------------------------------

# The switches of reproduce.model.alexnet. The values of its choices are the
# product's own (declared on reproduce.config.ModelConfig), so a choice added there
# makes test_design_covers_the_models_switches fail until the design covers it.
CHOICES = {name: C.choices(f"model.{name}") for name in ("activation", "lrn_convention", "pooling", "towers", "init")}
SWITCHES = {**CHOICES, "lrn": (True, False), "dropout": (0.5, 0.0), "weight_decay": (0.0, 5e-4)}


def _covering_design(switches: dict) -> list:
    """A strength-2 covering array, built greedily: each run is the combination of
    values that covers the most pairs (a value of one switch with a value of
    another) not yet covered, until every pair appears; a handful of runs instead of
    the product of every switch's values."""
    keys = list(switches)
    todo = {(a, x, b, y) for i, a in enumerate(keys) for b in keys[i + 1 :] for x in switches[a] for y in switches[b]}
    candidates = [dict(zip(keys, combo)) for combo in itertools.product(*switches.values())]
    design = []
    while todo:

        def gain(run, todo=todo):
            return sum((a, run[a], b, run[b]) in todo for i, a in enumerate(keys) for b in keys[i + 1 :])

        run = max(candidates, key=gain)
        design.append(run)
        todo -= {(a, run[a], b, run[b]) for i, a in enumerate(keys) for b in keys[i + 1 :]}
    return design


DESIGN = _covering_design(SWITCHES)


def test_design_covers_the_models_switches():
    params = inspect.signature(M.alexnet).parameters
    assert set(SWITCHES) <= set(params)
    # Every argument of alexnet that is a configuration choice is in the design...
    assert {name for name in params if f"model.{name}" in C.ALLOWED} == set(CHOICES)
    # ... with every value it allows, and every pair of values of every two switches.
    keys = list(SWITCHES)
    for i, a in enumerate(keys):
        assert {run[a] for run in DESIGN} == set(SWITCHES[a]), a
        for b in keys[i + 1 :]:
            seen = {(run[a], run[b]) for run in DESIGN}
            assert len(seen) == len(SWITCHES[a]) * len(SWITCHES[b]), (a, b)


@pytest.mark.parametrize("switches", DESIGN, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_switch_combination_builds_and_trains(switches):
    m = M.alexnet(**SMALL, **switches)
    names = [layer.name for layer in m.layers]
    assert any(n.startswith("lrn") for n in names) == switches["lrn"]
    assert any(n.endswith("_b") for n in names) == (switches["towers"] == 2)
    assert (len(m.losses) > 0) == (switches["weight_decay"] > 0)
    assert m.get_layer("drop6").rate == switches["dropout"]  # kept at rate 0: stable names
    act = keras.activations.get(switches["activation"])
    assert all(m.get_layer(n).activation is act for n in names if n.startswith(("conv", "fc6", "fc7")))
    before = keras.ops.convert_to_numpy(m.get_layer("fc6").kernel).copy()
    assert np.isfinite(train_step_loss(m))
    assert not np.array_equal(before, keras.ops.convert_to_numpy(m.get_layer("fc6").kernel))


def test_seed_fixes_the_weights():
    a = M.alexnet(**SMALL, seed=3).get_weights()
    b = M.alexnet(**SMALL, seed=3).get_weights()
    c = M.alexnet(**SMALL, seed=4).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], a[2])  # conv1_a and conv1_b differ
    # seed=None follows keras.utils.set_random_seed.
    keras.utils.set_random_seed(11)
    d = M.alexnet(**SMALL).get_weights()
    keras.utils.set_random_seed(11)
    e = M.alexnet(**SMALL).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(d, e))


def test_caffe_init_and_weight_decay():
    m = M.alexnet(**SMALL, init="caffe", weight_decay=5e-4)
    for name in ("conv2_b", "conv4_a", "conv5_b", "fc6", "fc7"):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(m.get_layer(name).bias), 0.1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(m.get_layer("conv3_a").bias), 0.0)
    # L2(wd / 2) on every kernel (gradient wd * w, §5), none on biases.
    kernels = [layer for layer in m.layers if hasattr(layer, "kernel")]
    assert len(kernels) == 2 * 5 + 3
    for layer in kernels:
        assert isinstance(layer.kernel_regularizer, keras.regularizers.L2)
        assert layer.kernel_regularizer.l2 == pytest.approx(2.5e-4)
        assert layer.bias_regularizer is None
    assert len(m.losses) == len(kernels)


@pytest.mark.parametrize("init,positive", [("paper", 1.0), ("caffe", 0.1), ("zero", 0.0)])
def test_positive_biases_by_init(init, positive):
    # §5's layers (conv2, conv4, conv5, fc6, fc7) get the init's constant; the others 0.
    m = M.alexnet(**SMALL, init=init)
    for name in ("conv2_a", "conv2_b", "conv4_a", "conv4_b", "conv5_a", "conv5_b", "fc6", "fc7"):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(m.get_layer(name).bias), np.float32(positive))
    for name in ("conv1_a", "conv3_b", "fc8"):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(m.get_layer(name).bias), 0.0)


@pytest.mark.parametrize(
    "kwargs,words",
    [
        (dict(activation="sigmoid"), ["activation", "'sigmoid'", "'relu'", "'tanh'"]),
        (dict(lrn_convention="caffe"), ["lrn_convention", "'caffe'", "'cuda-convnet'"]),
        (dict(pooling="avg"), ["pooling", "'avg'", "'non_overlap'"]),
        (dict(towers=3), ["towers", "3", "1, 2"]),
        (dict(init="glorot"), ["init", "'glorot'", "'caffe'"]),
        (dict(dropout=1.0), ["dropout", "1.0", "[0, 1)"]),
        (dict(dropout=-0.1), ["dropout", "-0.1"]),
        (dict(num_classes=0), ["num_classes", "0"]),
        (dict(width=0), ["width", "0"]),
        (dict(lrn_size=4), ["lrn_size", "4", "odd"]),
        (dict(image_size=50), ["image_size=50", "pool", "67"]),
    ],
)
def test_invalid_settings_raise(kwargs, words):
    args = dict(SMALL, **kwargs)
    with pytest.raises(ValueError) as err:
        M.alexnet(**args)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


# --------------------------------------------------------------------------------------
# Saving, mixed precision, build_model
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["alexnet", "cifar_local"])
def test_keras_file_round_trip(arch, tmp_path):
    if arch == "alexnet":
        m = M.alexnet(**SMALL, lrn_convention="cuda-convnet", pooling="non_overlap", weight_decay=5e-4)
    else:
        m = M.cifar_local(24, 10, width=CIFAR_WIDTH)
    x = images(2, m.input.shape[1])
    m.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in m.layers]
    assert any(isinstance(layer, LocalResponseNormalization) for layer in loaded.layers)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), m.predict(x, verbose=0))


def test_mixed_bfloat16_gives_float32_logits():
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        nets = {
            "alexnet": M.alexnet(**SMALL),
            "cifar_local": M.cifar_local(24, 10, width=CIFAR_WIDTH),
        }
        for m in nets.values():
            logits = m.predict(images(2, m.input.shape[1]), verbose=0)
            assert logits.dtype == np.float32 and np.isfinite(logits).all()
            first = m.layers[1]
            assert first.compute_dtype == "bfloat16" and first.variable_dtype == "float32"
        for lrn in (nets["alexnet"].get_layer("lrn1_a"), nets["cifar_local"].get_layer("lrn2")):
            # bfloat16 out, float32 inside (tests/test_layers.py checks the inside).
            assert lrn.compute_dtype == "bfloat16" and not lrn.autocast
        assert np.isfinite(train_step_loss(nets["alexnet"]))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_build_model_passes_every_switch():
    cfg = ModelConfig(
        activation="tanh",
        lrn_convention="cuda-convnet",
        lrn_size=3,
        lrn_k=1.0,
        lrn_alpha=2e-4,
        lrn_beta=0.5,
        pooling="non_overlap",
        dropout=0.25,
        towers=1,
        width=0.0625,
        init="caffe",
    )
    m = M.build_model(cfg, 67, 3, weight_decay=1e-3, seed=0)
    lrn = m.get_layer("lrn2")
    assert (lrn.size, lrn.k, lrn.alpha, lrn.beta, lrn.convention) == (3, 1.0, 2e-4, 0.5, "cuda-convnet")
    assert m.get_layer("conv1").activation is keras.activations.tanh
    assert m.get_layer("pool5").pool_size == (2, 2) and m.get_layer("drop6").rate == 0.25
    np.testing.assert_allclose(keras.ops.convert_to_numpy(m.get_layer("fc6").bias), 0.1)
    assert m.get_layer("fc6").kernel_regularizer.l2 == pytest.approx(5e-4)
    assert tuple(m.output.shape) == (None, 3)
    same = M.build_model(cfg, 67, 3, weight_decay=1e-3, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(m.get_weights(), same.get_weights()))

    fig1 = M.build_model(ModelConfig(arch="cifar_fig1", lrn=False, dropout=0.0, width=CIFAR_WIDTH), 32, 10)
    assert fig1.name == "cifar_fig1" and fig1.get_layer("conv1").filters == 8
    local = M.build_model(
        ModelConfig(
            arch="cifar_local",
            dropout=0.0,
            num_classes=10,
            width=CIFAR_WIDTH,
            lrn_size=9,
            lrn_k=1.0,
            lrn_alpha=1e-3,
            lrn_convention="cuda-convnet",
        ),
        24,
        10,
    )
    assert local.name == "cifar_local" and local.get_layer("lrn2").size == 9
    with pytest.raises(ValueError, match="model.num_classes=10 .*num_classes=4"):
        M.build_model(ModelConfig(num_classes=10, width=0.0625), 67, 4)
    with pytest.raises(ValueError, match="arch='vgg'"):
        M.build_model(ModelConfig(arch="vgg"), 67, 4)


# --------------------------------------------------------------------------------------
# CIFAR-10 nets
# --------------------------------------------------------------------------------------


def test_cifar_fig1_shapes_and_count():
    m = M.cifar_fig1()  # layers-18pct at 32 px
    assert [side(m, n) for n in ("conv1", "pool1", "conv2", "pool2", "conv3", "pool3")] == [32, 16, 16, 8, 8, 4]
    assert [m.get_layer(n).filters for n in ("conv1", "conv2", "conv3")] == [32, 32, 64]
    assert isinstance(m.get_layer("pool1"), keras.layers.MaxPooling2D)
    assert isinstance(m.get_layer("pool2"), keras.layers.AveragePooling2D)
    assert not any(isinstance(layer, (LocalResponseNormalization, keras.layers.Dropout)) for layer in m.layers)
    expected = conv_params(5, 3, 32) + conv_params(5, 32, 32) + conv_params(5, 32, 64) + 4 * 4 * 64 * 10 + 10
    assert m.count_params() == expected == 89_578
    # Ceil-mode pooling: even maps halve, odd maps 2m+1 give m.
    assert [side(M.cifar_fig1(24), n) for n in ("pool1", "pool2", "pool3")] == [12, 6, 3]
    assert [side(M.cifar_fig1(67), n) for n in ("pool1", "pool2", "pool3")] == [33, 16, 8]


def test_cifar_local_shapes_and_count():
    m = M.cifar_local()  # layers-conv-local-11pct at 24 px
    order = [layer.name for layer in m.layers]
    assert order == ["image", "conv1", "pool1", "lrn1", "conv2", "lrn2", "pool2", "local3", "local4", "flatten", "fc10"]
    assert [side(m, n) for n in ("conv1", "pool1", "conv2", "pool2", "local3", "local4")] == [24, 12, 12, 6, 6, 6]
    assert isinstance(m.get_layer("local3"), LocallyConnected2D)
    assert [m.get_layer(n).filters for n in ("conv1", "conv2", "local3", "local4")] == [64, 64, 64, 32]
    lrn = m.get_layer("lrn1")  # the release's cmrnorm: size 9, scale 0.001 / size, pow 0.75, + 1
    assert (lrn.size, lrn.k, lrn.alpha, lrn.beta, lrn.convention) == (9, 1.0, 1e-3, 0.75, "cuda-convnet")

    def local(cin, cout):  # 6x6 positions, unshared
        return 36 * (9 * cin * cout + cout)

    expected = conv_params(5, 3, 64) + conv_params(5, 64, 64) + local(64, 64) + local(64, 32) + 6 * 6 * 32 * 10 + 10
    assert m.count_params() == expected == 2_112_970


@pytest.mark.parametrize("arch", [M.cifar_fig1, M.cifar_local])
def test_cifar_lrn_switch_changes_only_the_lrn_layers(arch):
    on, off = arch(lrn=True, width=CIFAR_WIDTH, seed=0), arch(lrn=False, width=CIFAR_WIDTH, seed=0)
    names_on, names_off = [layer.name for layer in on.layers], [layer.name for layer in off.layers]
    assert [n for n in names_on if not n.startswith("lrn")] == names_off
    assert sum(n.startswith("lrn") for n in names_on) == 2
    assert on.count_params() == off.count_params()
    assert all(np.array_equal(a, b) for a, b in zip(on.get_weights(), off.get_weights()))


@pytest.mark.parametrize(
    "arch,size,switches,pools",
    [
        (M.cifar_fig1, 24, dict(activation="tanh", init="caffe", pooling="non_overlap"), [12, 6, 3]),
        (M.cifar_local, 24, dict(activation="relu", init="paper", weight_decay=4e-3), [12, 6]),
    ],
    ids=["fig1-24", "local-24"],
)
def test_cifar_nets_train(arch, size, switches, pools):
    m = arch(size, 10, width=CIFAR_WIDTH, **switches)
    assert [layer.output.shape[1] for layer in m.layers if layer.name.startswith("pool")] == pools
    before = [w.copy() for w in m.get_weights()]
    assert np.isfinite(train_step_loss(m))
    # Every weight moves, the locally connected layers' included.
    assert all(not np.array_equal(a, b) for a, b in zip(before, m.get_weights()))


def test_cifar_non_overlapping_pooling_keeps_the_sizes():
    for arch, size in ((M.cifar_local, 24), (M.cifar_fig1, 32), (M.cifar_fig1, 67)):
        a = arch(size, 10, width=CIFAR_WIDTH, pooling="overlap")
        b = arch(size, 10, width=CIFAR_WIDTH, pooling="non_overlap")
        assert [tuple(x.output.shape) for x in a.layers] == [tuple(x.output.shape) for x in b.layers]
        assert b.get_layer("pool1").pool_size == (2, 2)


def test_cifar_invalid_settings():
    with pytest.raises(ValueError, match="dropout=0.5 .*cifar_local"):
        M.cifar_local(dropout=0.5)
    with pytest.raises(ValueError, match="activation='elu'"):
        M.cifar_fig1(activation="elu")
    with pytest.raises(ValueError, match="image_size=3 .*cifar_local.*smallest valid input is 4"):
        M.cifar_local(3)
