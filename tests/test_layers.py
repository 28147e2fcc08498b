"""Custom layers against plain NumPy loops: LRN (§3.3) and LocallyConnected2D."""

import keras
import numpy as np
import pytest

from reproduce.layers import HostConstant, HostNormal, LocallyConnected2D, LocalResponseNormalization

try:
    import tensorflow as tf
except ImportError:  # the portable path is still tested
    tf = None


def lrn_loop(a, size, k, alpha, beta, convention):
    """§3.3 written out: b_i = a_i / (k + alpha * sum_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a_j^2)^beta."""
    a = a.astype(np.float64)
    if convention == "cuda-convnet":
        alpha = alpha / size
    n_ch = a.shape[-1]
    b = np.empty_like(a)
    for i in range(n_ch):
        lo, hi = max(0, i - size // 2), min(n_ch - 1, i + size // 2)
        s = np.zeros(a.shape[:-1])
        for j in range(lo, hi + 1):
            s += a[..., j] ** 2
        b[..., i] = a[..., i] / (k + alpha * s) ** beta
    return b


def _activations(shape, seed=0, scale=30.0):
    # ReLU-like magnitudes so that alpha * sum is comparable to k.
    return (np.abs(np.random.RandomState(seed).randn(*shape)) * scale).astype("float32")


LRN_CASES = [
    # (channels, size, k, alpha, beta): paper values, CIFAR values, a window wider
    # than the channels, and size 1.
    (16, 5, 2.0, 1e-4, 0.75),
    (12, 9, 1.0, 1e-3, 0.75),
    (7, 9, 2.0, 1e-3, 0.5),
    (6, 1, 1.5, 1e-3, 1.0),
]


@pytest.mark.parametrize("convention", ["paper", "cuda-convnet"])
@pytest.mark.parametrize("channels,size,k,alpha,beta", LRN_CASES)
def test_lrn_matches_the_formula(convention, channels, size, k, alpha, beta):
    x = _activations((2, 3, 4, channels))
    want = lrn_loop(x, size, k, alpha, beta, convention)
    layer = LocalResponseNormalization(size, k, alpha, beta, convention)
    got = keras.ops.convert_to_numpy(layer(x))  # the fused kernel on TensorFlow
    portable = keras.ops.convert_to_numpy(layer._portable(keras.ops.convert_to_tensor(x)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(portable, want, rtol=1e-5, atol=1e-6)
    # The first and last channels are where a wrong (wrapped or zero-counted)
    # window would show.
    np.testing.assert_allclose(got[..., [0, -1]], want[..., [0, -1]], rtol=1e-5)


def test_conventions_differ_by_alpha_over_size():
    x = _activations((1, 2, 2, 8))
    paper = LocalResponseNormalization(5, 2.0, 1e-4 / 5, 0.75, "paper")(x)
    cuda = LocalResponseNormalization(5, 2.0, 1e-4, 0.75, "cuda-convnet")(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(paper), keras.ops.convert_to_numpy(cuda), rtol=1e-6)
    assert LocalResponseNormalization(5, alpha=1e-4, convention="cuda-convnet").effective_alpha == pytest.approx(2e-5)


@pytest.mark.skipif(tf is None, reason="tensorflow is not installed")
@pytest.mark.parametrize("convention", ["paper", "cuda-convnet"])
def test_lrn_portable_matches_tensorflow_fused(convention):
    # Called directly, so this runs under every Keras backend.
    x = _activations((2, 5, 5, 32), seed=1)
    layer = LocalResponseNormalization(5, 2.0, 1e-4, 0.75, convention)
    fused = tf.nn.local_response_normalization(
        x, depth_radius=2, bias=2.0, alpha=layer.effective_alpha, beta=0.75
    ).numpy()
    portable = keras.ops.convert_to_numpy(layer._portable(keras.ops.convert_to_tensor(x)))
    np.testing.assert_allclose(portable, fused, rtol=1e-5, atol=1e-6)


def test_lrn_gradient_is_finite_and_matches_shape():
    x = keras.Variable(_activations((1, 3, 3, 8)))
    layer = LocalResponseNormalization()
    if keras.backend.backend() == "jax":
        import jax

        g = jax.grad(lambda v: layer(v).sum())(x.value)
    else:
        with tf.GradientTape() as tape:
            y = keras.ops.sum(layer(x.value))
        g = tape.gradient(y, x.value)
    g = keras.ops.convert_to_numpy(g)
    assert g.shape == (1, 3, 3, 8) and np.isfinite(g).all()


def test_lrn_computes_in_float32_under_mixed_bfloat16(monkeypatch):
    keras.config.set_dtype_policy("mixed_bfloat16")
    layer = LocalResponseNormalization(5, 2.0, 1e-4, 0.75)
    assert layer.compute_dtype == "bfloat16" and not layer.autocast

    # Spy on whichever kernel runs: it must receive float32, unrounded.
    seen = {}
    if keras.backend.backend() == "tensorflow":
        real = tf.nn.local_response_normalization

        def spy(x, **kw):
            seen["x"] = x
            return real(x, **kw)

        monkeypatch.setattr(tf.nn, "local_response_normalization", spy)
    else:
        real = layer._portable

        def spy(x):
            seen["x"] = x
            return real(x)

        monkeypatch.setattr(layer, "_portable", spy)

    x = _activations((2, 4, 4, 16), seed=2) + np.float32(1 / 3)  # not representable in bf16
    y = layer(x)
    assert keras.backend.standardize_dtype(seen["x"].dtype) == "float32"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(seen["x"]), x)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    want = lrn_loop(x, 5, 2.0, 1e-4, 0.75, "paper")
    got = keras.ops.convert_to_numpy(keras.ops.cast(y, "float32"))
    np.testing.assert_allclose(got, want, rtol=2.0**-8)  # one bf16 rounding of the result


@pytest.mark.parametrize(
    "kwargs,words",
    [
        (dict(convention="caffe"), ["convention", "'caffe'", "'paper'", "'cuda-convnet'"]),
        (dict(size=4), ["size=4", "odd"]),
        (dict(size=0), ["size=0"]),
        (dict(size=-3), ["size=-3"]),
    ],
)
def test_lrn_rejects_bad_settings(kwargs, words):
    with pytest.raises(ValueError) as err:
        LocalResponseNormalization(**kwargs)
    for w in words:
        assert w in str(err.value)


def test_lrn_config_round_trip():
    layer = LocalResponseNormalization(9, 1.0, 1e-3, 0.6, "cuda-convnet", name="lrn_x")
    config = layer.get_config()
    clone = LocalResponseNormalization.from_config(config)
    assert clone.get_config() == config
    assert (clone.size, clone.k, clone.alpha, clone.beta, clone.convention) == (9, 1.0, 1e-3, 0.6, "cuda-convnet")
    x = _activations((1, 2, 2, 10))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(x)), keras.ops.convert_to_numpy(layer(x)))


# --------------------------------------------------------------------------------------
# LocallyConnected2D
# --------------------------------------------------------------------------------------


def apply(layer, x):
    # Through a compiled predict: on jax, one compile instead of one per eager op.
    inputs = keras.Input(x.shape[1:])
    return keras.Model(inputs, layer(inputs)).predict(x, verbose=0)


def local_loop(x, kernel, bias, kernel_size, strides, padding):
    """Unshared weights written out position by position."""
    (kh, kw), (sh, sw) = kernel_size, strides
    n, h, w, c = x.shape
    if padding == "same":
        out_h, out_w = -(-h // sh), -(-w // sw)
        ph = max((out_h - 1) * sh + kh - h, 0)
        pw = max((out_w - 1) * sw + kw - w, 0)
        x = np.pad(x, [(0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)])
    else:
        out_h, out_w = (h - kh) // sh + 1, (w - kw) // sw + 1
    y = np.zeros((n, out_h, out_w, kernel.shape[-1]))
    for i in range(out_h):
        for j in range(out_w):
            patch = x[:, i * sh : i * sh + kh, j * sw : j * sw + kw, :].reshape(n, -1)  # (kh, kw, c) order
            y[:, i, j, :] = patch @ kernel[i * out_w + j] + bias[i, j]
    return y


@pytest.mark.parametrize(
    "padding,strides,size,kernel_size",
    [
        ("valid", 1, 7, (3, 3)),
        ("valid", 2, 7, (3, 3)),
        ("same", 1, 7, (3, 3)),
        ("same", 2, 7, (3, 3)),
        ("same", 2, 6, (2, 3)),  # even sizes and an even kernel: asymmetric padding
        ("valid", 2, 6, (2, 3)),
    ],
)
def test_locally_connected_matches_loop(padding, strides, size, kernel_size):
    rng = np.random.RandomState(3)
    x = rng.randn(2, size, size + 1, 3).astype("float32")
    layer = LocallyConnected2D(
        4,
        kernel_size,
        strides=strides,
        padding=padding,
        kernel_initializer=HostNormal(0.1, seed=1),
        bias_initializer=HostNormal(1.0, seed=2),
    )
    y = apply(layer, x)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in (layer.kernel, layer.bias))
    want = local_loop(x, kernel, bias, kernel_size, (strides, strides), padding)
    assert y.shape == want.shape
    assert kernel.shape == (want.shape[1] * want.shape[2], kernel_size[0] * kernel_size[1] * 3, 4)
    assert bias.shape == want.shape[1:]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def local_loop_grads(x, kernel, g, kernel_size, strides, padding):
    """Gradients of sum(local(x) * g) (no activation) w.r.t. x, kernel and bias,
    written out position by position like `local_loop`."""
    (kh, kw), (sh, sw) = kernel_size, strides
    n, h, w, c = x.shape
    ph = pw = (0, 0)
    if padding == "same":
        out_h, out_w = -(-h // sh), -(-w // sw)
        th, tw = max((out_h - 1) * sh + kh - h, 0), max((out_w - 1) * sw + kw - w, 0)
        ph, pw = (th // 2, th - th // 2), (tw // 2, tw - tw // 2)
    xp = np.pad(x.astype(np.float64), [(0, 0), ph, pw, (0, 0)])
    dxp, dk = np.zeros_like(xp), np.zeros(kernel.shape)
    out_w = g.shape[2]
    for i in range(g.shape[1]):
        for j in range(out_w):
            rows, cols = slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw)
            dk[i * out_w + j] = xp[:, rows, cols, :].reshape(n, -1).T @ g[:, i, j, :]
            dxp[:, rows, cols, :] += (g[:, i, j, :] @ kernel[i * out_w + j].T).reshape(n, kh, kw, c)
    dx = dxp[:, ph[0] : ph[0] + h, pw[0] : pw[0] + w, :]
    return dx, dk, g.sum(axis=0)


def slices_local(x, kernel, bias, kernel_size, strides, padding):
    """The layer's earlier form, in keras.ops: the kh*kw strided slices stacked
    into patches, then one einsum over positions."""
    (kh, kw), (sh, sw) = kernel_size, strides
    n, h, w, c = x.shape
    if padding == "same":
        out_h, out_w = -(-h // sh), -(-w // sw)
        th, tw = max((out_h - 1) * sh + kh - h, 0), max((out_w - 1) * sw + kw - w, 0)
        x = keras.ops.pad(x, [[0, 0], [th // 2, th - th // 2], [tw // 2, tw - tw // 2], [0, 0]])
    else:
        out_h, out_w = (h - kh) // sh + 1, (w - kw) // sw + 1
    taps = [
        x[:, di : di + sh * (out_h - 1) + 1 : sh, dj : dj + sw * (out_w - 1) + 1 : sw, :]
        for di in range(kh)
        for dj in range(kw)
    ]
    patches = keras.ops.reshape(keras.ops.stack(taps, axis=3), (n, out_h * out_w, kh * kw * c))
    y = keras.ops.einsum("nlk,lkf->nlf", patches, kernel)
    return keras.ops.reshape(y, (n, out_h, out_w, kernel.shape[-1])) + bias


def value_and_grads(fn, x, kernel, bias, g):
    """fn(x, kernel, bias) and the gradients of sum(fn(...) * g), on the active backend."""
    if keras.backend.backend() == "jax":
        import jax

        def loss(*args):
            y = fn(*args)
            return keras.ops.sum(y * g), y

        (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(x, kernel, bias)
    else:
        args = [tf.constant(v) for v in (x, kernel, bias)]
        with tf.GradientTape() as tape:
            tape.watch(args)
            y = fn(*args)
            loss = tf.reduce_sum(y * g)
        grads = tape.gradient(loss, args)
    return [keras.ops.convert_to_numpy(v) for v in (y, *grads)]


@pytest.mark.parametrize(
    "padding,strides,size,kernel_size,channels",
    [
        ("same", 1, 6, (3, 3), 8),  # the CIFAR net's local3/local4 geometry, narrower
        ("valid", 2, 7, (3, 3), 3),
        ("same", 2, 6, (2, 3), 3),
    ],
)
def test_locally_connected_gradients(padding, strides, size, kernel_size, channels):
    # The backward pass: against gradients written out (float64) and against the
    # earlier slice-stack form of the layer, to float32 rounding.
    rng = np.random.RandomState(6)
    x = rng.randn(3, size, size + 1, channels).astype("float32")
    layer = LocallyConnected2D(5, kernel_size, strides=strides, padding=padding)
    layer.build(x.shape)
    kernel = (rng.randn(*layer.kernel.shape) * 0.1).astype("float32")
    bias = rng.randn(*layer.bias.shape).astype("float32")
    g = rng.randn(x.shape[0], *layer.bias.shape).astype("float32")

    def new(x, k, b):
        return layer.stateless_call([k, b], [], x)[0]

    def old(x, k, b):
        return slices_local(x, k, b, kernel_size, (strides, strides), padding)

    got = value_and_grads(new, x, kernel, bias, g)
    before = value_and_grads(old, x, kernel, bias, g)
    geometry = (kernel_size, (strides, strides), padding)
    want = (local_loop(x, kernel, bias, *geometry), *local_loop_grads(x, kernel, g, *geometry))
    for a, b, w in zip(got, before, want):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_locally_connected_with_tied_weights_is_conv2d(padding):
    # Independent of the loop above: the same kernel at every position must give
    # exactly Keras' Conv2D (padding conventions included).
    x = np.random.RandomState(4).randn(2, 8, 7, 3).astype("float32")
    conv = keras.layers.Conv2D(5, 3, strides=2, padding=padding, kernel_initializer=HostNormal(0.1, seed=3))
    want = apply(conv, x)
    local = LocallyConnected2D(5, 3, strides=2, padding=padding, use_bias=False, kernel_initializer=HostConstant(0.0))
    local.build(x.shape)
    k = keras.ops.convert_to_numpy(conv.kernel).reshape(1, 27, 5)
    local.kernel.assign(np.repeat(k, local.kernel.shape[0], axis=0))
    np.testing.assert_allclose(apply(local, x), want, rtol=1e-5, atol=1e-5)


def test_locally_connected_config_round_trip():
    layer = LocallyConnected2D(
        3,
        3,
        padding="same",
        activation="relu",
        kernel_initializer=HostNormal(0.04, seed=1),
        bias_initializer=HostConstant(0.1),
        kernel_regularizer=keras.regularizers.L2(0.002),
        name="local_x",
    )
    config = layer.get_config()
    clone = LocallyConnected2D.from_config(config)
    assert clone.get_config() == config
    x = np.random.RandomState(5).randn(4, 5, 5, 2).astype("float32")
    layer.build(x.shape)
    clone.build(x.shape)
    # The initializers are part of the config: the clone starts from the same weights.
    for a, b in zip(layer.get_weights(), clone.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(clone.get_weights()[1], np.full((5, 5, 3), 0.1, "float32"))
    assert len(layer.losses) == 1  # the kernel is regularized, the bias is not
    # (Training through the layer: tests/test_model.py::test_cifar_nets_train.)


def test_host_initializers_are_seeded_and_serializable():
    init = HostNormal(0.01, seed=7)
    a = keras.ops.convert_to_numpy(init((300, 200)))
    np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(HostNormal(0.01, seed=7)((300, 200))))
    assert not np.array_equal(a, keras.ops.convert_to_numpy(HostNormal(0.01, seed=8)((300, 200))))
    assert abs(a.mean()) < 1e-3 and a.std() == pytest.approx(0.01, rel=0.02)
    # Backend-independent: NumPy's PCG64 with the same seed.
    expected = np.random.default_rng(7).standard_normal((300, 200), np.float32) * np.float32(0.01)
    np.testing.assert_array_equal(a, expected)
    for i in (init, HostConstant(0.1)):
        clone = keras.initializers.deserialize(keras.initializers.serialize(i))
        assert type(clone) is type(i) and clone.get_config() == i.get_config()


@pytest.mark.parametrize(
    "kwargs,words",
    [
        (dict(filters=2, kernel_size=3, padding="full"), ["padding", "'full'"]),
        (dict(filters=0, kernel_size=3), ["filters=0"]),
    ],
)
def test_locally_connected_rejects_bad_settings(kwargs, words):
    with pytest.raises(ValueError) as err:
        LocallyConnected2D(**kwargs)
    for w in words:
        assert w in str(err.value)


def test_locally_connected_rejects_too_small_input():
    with pytest.raises(ValueError, match="smaller than its 3x3 window"):
        LocallyConnected2D(2, 3)(np.zeros((1, 2, 2, 1), "float32"))
