"""Layers the paper needs that Keras 3 does not ship.

* :class:`LocalResponseNormalization`: the cross-channel "brightness
  normalization" of §3.3, with the paper's printed formula and the one
  Krizhevsky's code (and Caffe) actually computes.
* :class:`LocallyConnected2D`: a convolution without weight sharing, the
  ``type=local`` layer of cuda-convnet's CIFAR-10 nets (the net behind the §3.3
  CIFAR-10 claim). Keras 3 dropped ``LocallyConnected2D``.
* :class:`HostNormal`, :class:`HostConstant`: initializers computed with NumPy
  on the host, so one seed gives the same initial weights on every backend.

The layers are written in ``keras.ops`` so they run on every backend; LRN uses
the fused TensorFlow kernel on the TensorFlow backend. Everything here is
registered for ``.keras`` saving under the package name ``reproduce``.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from reproduce.config import check_value


@keras.saving.register_keras_serializable(package="reproduce")
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalization across channels (§3.3), channels last.

    With ``a`` the activity of channel ``i`` at one position, ``N`` channels and
    ``n = size``, the output is::

        b_i = a_i / (k + alpha' * sum_{j=max(0, i-n//2)}^{min(N-1, i+n//2)} a_j**2) ** beta

    The window is clipped at the first and last channels (it is not wrapped and
    not zero-padded in the count). ``alpha'`` depends on ``convention``:

    ``"paper"``
        ``alpha' = alpha``: the formula exactly as printed in §3.3, with the
        paper's k=2, n=5, alpha=1e-4, beta=0.75.
    ``"cuda-convnet"``
        ``alpha' = alpha / size``: what Krizhevsky's cuda-convnet computes (its
        layer parser divides the configured ``scale`` by ``size``) and what Caffe's
        ``LRN`` layer and ``torch.nn.LocalResponseNorm`` compute. With the paper's
        numbers this normalizes 5x more weakly than the printed formula.
        ``tf.nn.local_response_normalization`` uses the printed (undivided) form.

    The two differ only by that factor of ``size``; the paper does not say which it
    used, so both are offered and compared by the ``lrn_convention`` ablation.

    On the TensorFlow backend the fused ``tf.nn.local_response_normalization``
    (cuDNN on GPUs) computes it; elsewhere, and for settings cuDNN rejects, a
    portable ``keras.ops`` version (see ``_portable``). Both agree to float32
    rounding.

    The computation always runs in float32, also under ``mixed_bfloat16``: the sum
    of squares and the fractional power are where low precision hurts, and the
    layer is cheap. The input is cast to float32 and the result back to the
    layer's compute dtype (``autocast=False`` so a float32 input is never rounded
    to bfloat16 first).

    Args:
        size: odd window width ``n`` in channels.
        k, alpha, beta: the constants of the formula above.
        convention: ``"paper"`` or ``"cuda-convnet"``.
    """

    def __init__(self, size=5, k=2.0, alpha=1e-4, beta=0.75, convention="paper", **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        # The allowed values are the configuration's (reproduce.config.ModelConfig):
        # an odd window of `size` channels centred on each channel (§3.3).
        check_value("model.lrn_size", size, "LocalResponseNormalization size")
        check_value("model.lrn_convention", convention, "LocalResponseNormalization convention")
        self.size = size
        self.k = float(k)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.convention = convention
        self.supports_masking = True

    @property
    def effective_alpha(self) -> float:
        """The coefficient that multiplies the plain sum of squares."""
        return self.alpha / self.size if self.convention == "cuda-convnet" else self.alpha

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        if keras.backend.backend() == "tensorflow" and len(x.shape) == 4 and self._fusable():
            # The fused kernel (cuDNN on GPUs) is faster than the window sum
            # below and has a fused gradient. TensorFlow's formula is the printed
            # one, so the convention is applied through alpha.
            import tensorflow as tf

            y = tf.nn.local_response_normalization(
                x,
                depth_radius=self.size // 2,
                bias=self.k,
                alpha=self.effective_alpha,
                beta=self.beta,
            )
        else:
            y = self._portable(x)
        return ops.cast(y, self.compute_dtype)

    def _fusable(self) -> bool:
        # TensorFlow's GPU kernel is cuDNN's, which rejects depth_radius outside
        # [1, 7], beta < 0.01 and bias < 1e-5; other settings take the portable
        # path on every device.
        return 1 <= self.size // 2 <= 7 and self.beta >= 0.01 and self.k >= 1e-5

    def _portable(self, x):
        # The windowed sum of squares over channels is a 1D sum-pool along the
        # channel axis of the zero-padded squares (padding makes the window clip
        # at the first and last channels). Measured on CPU/XLA against the usual
        # alternatives for a (32, 55, 55, 48) map: forward about equal, but the
        # gradient 1.2x faster than a matmul with a CxC band matrix and 3.5x
        # faster than a sum of `size` shifted slices (whose transpose is `size`
        # pads). Unlike the band matmul it is also exact float32 arithmetic,
        # whereas GPU/TPU matmuls run float32 at reduced (TF32 / bf16-pass)
        # precision by default, and it does size*C rather than C*C work.
        r = self.size // 2
        channels = x.shape[-1]
        sq = ops.square(x)
        pad = [[0, 0]] * (len(x.shape) - 1) + [[r, r]]
        rows = ops.reshape(ops.pad(sq, pad), (-1, channels + 2 * r, 1))
        # average_pool divides by `size`; multiplying back costs one rounding.
        total = ops.average_pool(rows, self.size, strides=1, padding="valid", data_format="channels_last") * float(
            self.size
        )
        total = ops.reshape(total, ops.shape(x))
        denom = ops.power(self.k + self.effective_alpha * total, self.beta)
        return x / denom

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            size=self.size,
            k=self.k,
            alpha=self.alpha,
            beta=self.beta,
            convention=self.convention,
        )
        return config


def _pair(value, name):
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"LocallyConnected2D {name}={value!r} must be an int or a pair")
    return value


def _out_and_pad(n, k, s, padding):
    """Output length and (before, after) padding, TensorFlow's "same"/"valid" rules."""
    if padding == "valid":
        return (n - k) // s + 1, (0, 0)
    out = -(-n // s)  # ceil(n / s)
    total = max((out - 1) * s + k - n, 0)
    return out, (total // 2, total - total // 2)


def _tap_rows(kernel_size, strides, out_h, out_w, width):
    """Row ``r * width + c`` of the padded input for every tap of every output
    position, positions first (``i * out_w + j``), then the taps in ``(kh, kw)``
    order: shape ``(out_h * out_w * kh * kw,)``, int32."""
    (kh, kw), (sh, sw) = kernel_size, strides
    r = np.arange(out_h)[:, None, None, None] * sh + np.arange(kh)[None, None, :, None]
    c = np.arange(out_w)[None, :, None, None] * sw + np.arange(kw)[None, None, None, :]
    return (r * width + c).reshape(-1).astype("int32")


@keras.saving.register_keras_serializable(package="reproduce")
class LocallyConnected2D(keras.layers.Layer):
    """A 2D convolution whose filters are not shared across positions.

    Every output position ``(i, j)`` has its own ``kh*kw*in_ch x filters`` weight
    matrix and its own bias: cuda-convnet's ``type=local`` layer (the ``local3``
    and ``local4`` layers of its CIFAR-10 nets). Channels last.

    Weights:
        kernel: ``(out_h*out_w, kh*kw*in_ch, filters)``; row ``l = i*out_w + j``
            is position ``(i, j)``; within a row the patch is flattened in
            ``(kh, kw, in_ch)`` order, the order of a ``Conv2D`` kernel's reshape.
        bias: ``(out_h, out_w, filters)``.

    ``padding="same"`` pads with zeros like ``Conv2D`` (output ``ceil(n/stride)``,
    the extra pixel after); ``"valid"`` does not pad.

    Implementation (the same on every backend): the padded input, transposed to
    positions first ``(H*W, N, C)``, gives every position's ``kh*kw`` taps in one
    ``take`` with constant indices; transposed to ``(L, N, kh*kw*C)`` (the
    flattening order above) they meet the kernel in one batched matmul with the
    positions as the batch dimension, and the ``(L, N, F)`` result is transposed
    back. Measured on a 2-core CPU (forward + backward of the CIFAR net's local3
    and local4, batch 128) against the earlier form, a stack of ``kh*kw`` strided
    slices and an ``einsum``: 2.3-2.9x faster in TensorFlow without XLA (whose
    gradient of each strided slice is a padded copy), 1.4-1.5x on JAX, equal
    under XLA on TensorFlow (experiments/perf/cifar_local_profile.py;
    tests/test_layers.py checks the gradients against a loop and the earlier form).
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
            raise ValueError(f"LocallyConnected2D filters={filters!r} must be a positive integer")
        padding = str(padding).lower()
        if padding not in ("valid", "same"):
            raise ValueError(f"LocallyConnected2D padding={padding!r} is not allowed; choose 'valid' or 'same'")
        self.filters = filters
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.padding = padding
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def _geometry(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        if h is None or w is None:
            raise ValueError("LocallyConnected2D needs a fixed input height and width")
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        out_h, pad_h = _out_and_pad(h, kh, sh, self.padding)
        out_w, pad_w = _out_and_pad(w, kw, sw, self.padding)
        if out_h < 1 or out_w < 1:
            raise ValueError(
                f"LocallyConnected2D {self.name}: input {h}x{w} is smaller than its "
                f"{kh}x{kw} window (padding={self.padding!r})"
            )
        return out_h, out_w, pad_h, pad_w

    def build(self, input_shape):
        out_h, out_w, _, _ = self._geometry(input_shape)
        kh, kw = self.kernel_size
        in_ch = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel",
            shape=(out_h * out_w, kh * kw * in_ch, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(out_h, out_w, self.filters), initializer=self.bias_initializer
            )
        else:
            self.bias = None

    def call(self, inputs):
        out_h, out_w, pad_h, pad_w = self._geometry(inputs.shape)
        x = inputs
        if pad_h != (0, 0) or pad_w != (0, 0):
            x = ops.pad(x, [[0, 0], list(pad_h), list(pad_w), [0, 0]])
        hp, wp, channels = x.shape[1], x.shape[2], x.shape[3]
        taps = self.kernel_size[0] * self.kernel_size[1]
        positions = out_h * out_w
        # Positions first: (Hp*Wp, N, C). One gather of rows gives (L*kh*kw, N, C);
        # its gradient is one scatter-add, where a stack of kh*kw strided slices
        # had kh*kw padded slice gradients to add up.
        rows = ops.reshape(ops.transpose(x, (1, 2, 0, 3)), (hp * wp, -1, channels))
        patches = ops.take(rows, _tap_rows(self.kernel_size, self.strides, out_h, out_w, wp), axis=0)
        # (L, kh*kw, N, C) -> (L, N, kh*kw*C): the kernel's (kh, kw, in_ch) order.
        patches = ops.reshape(patches, (positions, taps, -1, channels))
        patches = ops.reshape(ops.transpose(patches, (0, 2, 1, 3)), (positions, -1, taps * channels))
        y = ops.matmul(patches, self.kernel)  # (L, N, F): positions are the batch
        y = ops.reshape(ops.transpose(y, (1, 0, 2)), (-1, out_h, out_w, self.filters))
        if self.use_bias:
            y = y + self.bias
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        out_h, out_w, _, _ = self._geometry(input_shape)
        return (input_shape[0], out_h, out_w, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
        )
        return config


# --------------------------------------------------------------------------------------
# Initializers
# --------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="reproduce")
class HostNormal(keras.initializers.Initializer):
    """N(mean, stddev**2) drawn with NumPy's PCG64 from an integer seed.

    Used for the paper's N(0, 0.01) weights (§5) instead of
    ``keras.initializers.RandomNormal`` for two reasons: the same seed gives
    bit-identical weights on the TensorFlow and JAX backends (Keras' backend
    RNGs differ), and on JAX it avoids compiling three XLA programs per weight
    shape (draw, scale, shift), which dominated the time to build a model.
    """

    def __init__(self, stddev=0.01, mean=0.0, seed=0):
        self.stddev = float(stddev)
        self.mean = float(mean)
        self.seed = int(seed)

    def __call__(self, shape, dtype=None):
        rng = np.random.default_rng(self.seed)
        value = rng.standard_normal(tuple(shape), dtype=np.float32) * np.float32(self.stddev)
        if self.mean:
            value += np.float32(self.mean)
        return ops.convert_to_tensor(value, dtype=dtype or "float32")

    def get_config(self):
        return {"stddev": self.stddev, "mean": self.mean, "seed": self.seed}


@keras.saving.register_keras_serializable(package="reproduce")
class HostConstant(keras.initializers.Initializer):
    """A constant, filled on the host (no per-shape XLA program on JAX)."""

    def __init__(self, value=0.0):
        self.value = float(value)

    def __call__(self, shape, dtype=None):
        return ops.convert_to_tensor(np.full(tuple(shape), self.value, np.float32), dtype=dtype or "float32")

    def get_config(self):
        return {"value": self.value}
