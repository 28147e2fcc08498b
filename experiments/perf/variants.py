"""Versions of the paper's net that exist only here: changes proposed for
`reproduce.model` / `reproduce.layers`, measured before they are made
(perf_log.md, "Proposed changes"). Each computes the same function as the
project's net (tests: test_variants.py), except ``towers=dense``, the anchors'
larger comparison net.

A variant's net is built from the project's own (`reproduce.model.build_model`),
through public Keras APIs: ``keras.models.clone_model`` swaps layers (another LRN
form, conv1 by space-to-depth) with the weights kept, and the fused-tower nets
are assembled from the two-tower net's layer configurations and weights.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
from keras import ops

from reproduce.layers import LocalResponseNormalization
from reproduce.model import build_model

LRN_FORMS = ("project", "vjp", "bf16")
TOWER_FORMS = ("split", "grouped", "blockdiag", "dense")


@dataclasses.dataclass(frozen=True)
class Variant:
    """What is changed from the project's net for one measurement.

    lrn: "project" (reproduce.layers as it is), "vjp" (JAX custom VJP that keeps
        only the LRN input for the backward pass and recomputes the rest: P4),
        "bf16" (the whole LRN in the compute dtype).
    towers: "split" (the project's explicit per-tower layers), "grouped" (one
        Conv2D(groups=2) per layer and a grouped LRN: the same function),
        "blockdiag" (dense convolutions with block-diagonal masked kernels: the
        same function again, twice the conv2/4/5 MACs), "dense" (full
        convolutions: NOT the paper's net, the anchors' "dense" comparison): P9.
    augment: False feeds float crops straight to the net (the anchors' setup).
    conv1: "s2d" computes conv1 (11x11 stride 4 on 3 channels, poor tensor-core
        use) as a 3x3 stride-1 convolution on the 4x4 space-to-depth input (48
        channels) with the kernel zero-padded to 12x12 and rearranged: the same
        function and the same 11x11x3 weights, 19% more MACs in better kernels: P8.
    scan: train steps per dispatch (lax.scan; JAX). 0 is the path's default: 1 for
        `step`; for the resident paths, chunks of up to `steps` steps (at most one
        epoch); scan=1 there is one dispatch per step, gathering on the device.
    unroll: lax.scan's unroll (XLA's CPU while loop halves the speed here).
    """

    lrn: str = "project"
    towers: str = "split"
    augment: bool = True
    scan: int = 0
    unroll: int = 1
    conv1: str = "plain"

    @property
    def name(self) -> str:
        parts = []
        if self.lrn != "project":
            parts.append(f"lrn={self.lrn}")
        if self.towers != "split":
            parts.append(f"towers={self.towers}")
        if not self.augment:
            parts.append("no_augment")
        if self.scan:
            parts.append(f"scan={self.scan}")
        if self.unroll != 1:
            parts.append(f"unroll={self.unroll}")
        if self.conv1 != "plain":
            parts.append(f"conv1={self.conv1}")
        return "+".join(parts) or "project"


def parse_variant(text: str) -> Variant:
    """'project' or parts joined by '+': lrn=..., towers=..., no_augment, scan=K,
    unroll=U, conv1=s2d."""
    v = Variant()
    text = (text or "project").strip()
    if text in ("project", "paper", "default", ""):
        return v
    for part in text.split("+"):
        part = part.strip()
        key, _, val = part.partition("=")
        if key == "lrn" and val in LRN_FORMS:
            v = dataclasses.replace(v, lrn=val)
        elif key == "towers" and val in TOWER_FORMS:
            v = dataclasses.replace(v, towers=val)
        elif part == "no_augment":
            v = dataclasses.replace(v, augment=False)
        elif key == "scan" and val.isdigit():
            v = dataclasses.replace(v, scan=int(val))
        elif key == "unroll" and val.isdigit() and int(val) >= 1:
            v = dataclasses.replace(v, unroll=int(val))
        elif key == "conv1" and val in ("plain", "s2d"):
            v = dataclasses.replace(v, conv1=val)
        else:
            raise ValueError(
                f"unknown variant part {part!r}; use project or parts joined by '+': "
                f"lrn={'|'.join(LRN_FORMS)}, towers={'|'.join(TOWER_FORMS)}, no_augment, scan=K, "
                "unroll=U, conv1=s2d"
            )
    return v


# --------------------------------------------------------------------------------------
# LRN forms
# --------------------------------------------------------------------------------------


def window_sum(v, size: int, groups: int = 1):
    """Sum over a window of `size` channels centred on each channel, clipped at the
    ends of each of `groups` equal channel groups: a sum of `size` shifted slices."""
    r = size // 2
    shape = tuple(v.shape)
    c = shape[-1]
    if groups > 1:
        v = ops.reshape(v, (-1,) + shape[1:-1] + (groups, c // groups))
    n = v.shape[-1]
    padded = ops.pad(v, [[0, 0]] * (len(v.shape) - 1) + [[r, r]])
    total = padded[..., 0:n]
    for j in range(1, size):
        total = total + padded[..., j : j + n]
    if groups > 1:
        total = ops.reshape(total, (-1,) + shape[1:])
    return total


_VJP_CACHE: dict = {}


def lrn_vjp(size: int, k: float, alpha: float, beta: float, groups: int = 1):
    """JAX LRN with a hand-written VJP (alpha: the effective coefficient of the plain
    sum of squares). Residual: the input only (in its own dtype, usually the bf16
    activation the ReLU keeps anyway); the backward pass recomputes the
    denominators in float32 inside one fused kernel instead of reading float32
    intermediates saved by autodiff. With s = k + alpha * W(x^2) (W the symmetric
    clipped window sum, its own transpose) and y = x s^-beta:
    dx = g s^-beta - 2 alpha beta x W(g x s^(-beta-1))."""
    key = (size, k, alpha, beta, groups)
    if key in _VJP_CACHE:
        return _VJP_CACHE[key]
    import jax
    import jax.numpy as jnp

    def denominator(x):
        xf = x.astype(jnp.float32)
        return xf, k + alpha * window_sum(xf * xf, size, groups)

    @jax.custom_vjp
    def f(x):
        xf, s = denominator(x)
        return (xf * s ** (-beta)).astype(x.dtype)

    def fwd(x):
        return f(x), x

    def bwd(x, g):
        xf, s = denominator(x)
        d = s ** (-beta)
        gf = g.astype(jnp.float32)
        dx = gf * d - (2.0 * alpha * beta) * xf * window_sum(gf * xf * d / s, size, groups)
        return (dx.astype(x.dtype),)

    f.defvjp(fwd, bwd)
    _VJP_CACHE[key] = f
    return f


@keras.saving.register_keras_serializable(package="experiments")
class VariantLRN(LocalResponseNormalization):
    """The project's LRN computed another way (`form`), over `groups` equal channel
    groups (the fused towers side by side; windows never cross a group)."""

    def __init__(self, form: str = "project", groups: int = 1, **kwargs):
        super().__init__(**kwargs)
        if form not in LRN_FORMS:
            raise ValueError(f"VariantLRN form={form!r} is not allowed; choose one of {LRN_FORMS}")
        self.form, self.groups = form, int(groups)

    def call(self, inputs):
        form = self.form
        if form == "vjp" and keras.backend.backend() != "jax":
            form = "project"  # the custom VJP is JAX-only
        if form == "project":
            parts = ops.split(inputs, self.groups, axis=-1) if self.groups > 1 else [inputs]
            ys = [super(VariantLRN, self).call(p) for p in parts]
            return ops.concatenate(ys, axis=-1) if self.groups > 1 else ys[0]
        if form == "vjp":
            f = lrn_vjp(self.size, self.k, self.effective_alpha, self.beta, self.groups)
            return f(inputs).astype(self.compute_dtype)
        # bf16: the whole computation in the compute dtype, no float32 casts.
        total = window_sum(ops.square(inputs), self.size, self.groups)
        return inputs / ops.power(self.k + self.effective_alpha * total, self.beta)

    def get_config(self):
        config = super().get_config()
        config.update(form=self.form, groups=self.groups)
        return config


# --------------------------------------------------------------------------------------
# conv1 by space-to-depth
# --------------------------------------------------------------------------------------


def space_to_depth_conv(inputs, kernel, stride: int):
    """A valid convolution with `stride` = the kernel's stride, computed as a
    stride-1 convolution on the stride x stride space-to-depth of the input.

    kernel (k, k, C, F) is zero-padded to (k', k') with k' the next multiple of the
    stride and rearranged to (k'/s, k'/s, s*s*C, F); the input is padded (or
    cropped) to s*(out + k'/s - 1) pixels, the rows/columns no output reads (the
    zero taps multiply them). out = (n - k) // s + 1 as for the plain convolution.
    """
    k, c, f = kernel.shape[0], kernel.shape[2], kernel.shape[3]
    s = int(stride)
    kb = -(-k // s)  # kernel side in blocks
    n = inputs.shape[1]
    out = (n - k) // s + 1
    m = out + kb - 1  # blocks the output reads
    need = s * m
    x = inputs
    if need > n:
        x = ops.pad(x, [[0, 0], [0, need - n], [0, need - n], [0, 0]])
    elif need < n:
        x = x[:, :need, :need, :]
    x = ops.reshape(x, (-1, m, s, m, s, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    x = ops.reshape(x, (-1, m, m, s * s * c))
    kp = ops.pad(kernel, [[0, kb * s - k], [0, kb * s - k], [0, 0], [0, 0]])
    kp = ops.reshape(kp, (kb, s, kb, s, c, f))
    kp = ops.transpose(kp, (0, 2, 1, 3, 4, 5))
    kp = ops.reshape(kp, (kb, kb, s * s * c, f))
    return ops.conv(x, kp, strides=1, padding="valid")


@keras.saving.register_keras_serializable(package="experiments")
class SpaceToDepthConv2D(keras.layers.Conv2D):
    """A Conv2D whose strided valid square convolution (conv1) is computed by
    space-to-depth; any other convolution is the plain one."""

    def convolution_op(self, inputs, kernel):
        st = tuple(self.strides)
        if (
            st[0] == st[1]
            and st[0] > 1
            and self.padding == "valid"
            and self.groups == 1
            and tuple(self.dilation_rate) == (1, 1)
            and self.data_format == "channels_last"
            and self.kernel_size[0] == self.kernel_size[1]
        ):
            return space_to_depth_conv(inputs, kernel, st[0])
        return super().convolution_op(inputs, kernel)


# --------------------------------------------------------------------------------------
# Both towers in one layer per stage
# --------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="experiments")
class BlockDiagConv2D(keras.layers.Conv2D):
    """A dense Conv2D whose kernel is masked to `blocks` diagonal blocks: the
    function of Conv2D(groups=blocks), computed by a dense convolution. Counts
    1/blocks of its MACs (reproduce.flops: the useful work, not the zeros)."""

    def __init__(self, *args, blocks: int = 2, **kwargs):
        super().__init__(*args, **kwargs)
        self.blocks = int(blocks)
        self.mac_fraction = 1.0 / self.blocks
        self.mask = None

    def build(self, input_shape):
        super().build(input_shape)
        cin, cout = self.kernel.shape[-2], self.kernel.shape[-1]
        gi, go = cin // self.blocks, cout // self.blocks
        m = (np.arange(cin)[:, None] // gi) == (np.arange(cout)[None, :] // go)
        self.mask = np.broadcast_to(m, tuple(self.kernel.shape)).astype("float32")

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, kernel * ops.convert_to_tensor(self.mask, dtype=kernel.dtype))

    def get_config(self):
        config = super().get_config()
        config.update(blocks=self.blocks)
        return config


def _like(layer, **changes):
    """A new layer of `layer`'s class and configuration, with `changes`."""
    return layer.__class__.from_config({**layer.get_config(), **changes})


def fused_alexnet(split: keras.Model, towers: str = "grouped", lrn_form: str = "project") -> keras.Model:
    """The two-tower net `split` (reproduce.model.alexnet, towers=2) with both towers
    in one layer per stage, the same layer settings, and (except "dense") the same
    weights, so the same function.

    ``towers="grouped"``: conv1 and conv3 are single convolutions with both
    towers' kernels, conv2/4/5 are ``Conv2D(groups=2)``, LRN is grouped (windows
    never cross the tower boundary), pools act on both towers at once (channel
    order [tower a, tower b] everywhere; `fuse_weights` maps the weights).
    ``"blockdiag"``: the same with dense, block-diagonally masked convolutions.
    ``"dense"``: full convolutions and one LRN over all channels: a different
    (larger) net, the anchors' "dense" comparison, with its own initial weights.
    """
    names = {layer.name for layer in split.layers}

    def conv(x, stage, grouped):
        a = split.get_layer(f"{stage}_a")
        cfg = {**a.get_config(), "name": stage, "filters": 2 * a.filters}
        if grouped and towers == "grouped":
            return keras.layers.Conv2D.from_config({**cfg, "groups": 2})(x)
        if grouped and towers == "blockdiag":
            return BlockDiagConv2D.from_config({**cfg, "blocks": 2})(x)
        return keras.layers.Conv2D.from_config(cfg)(x)

    def norm(x, stage):
        if f"{stage}_a" not in names:  # lrn=False
            return x
        return VariantLRN(
            form=lrn_form,
            groups=1 if towers == "dense" else 2,
            **{**split.get_layer(f"{stage}_a").get_config(), "name": stage},
        )(x)

    def pool(x, index):  # the split net's crop (non_overlap on an even map) and pool
        for kind in ("crop", "pool"):
            if f"{kind}{index}_a" in names:
                x = _like(split.get_layer(f"{kind}{index}_a"), name=f"{kind}{index}")(x)
        return x

    inputs = keras.Input(tuple(split.input.shape[1:]), name="image")
    h = pool(norm(conv(inputs, "conv1", False), "lrn1"), 1)
    h = pool(norm(conv(h, "conv2", True), "lrn2"), 2)
    h = conv(h, "conv3", False)
    h = conv(h, "conv4", True)
    h = pool(conv(h, "conv5", True), 5)
    for name in ("flatten", "fc6", "drop6", "fc7", "drop7", "fc8"):
        h = _like(split.get_layer(name))(h)
    fused = keras.Model(inputs, h, name=f"alexnet_{towers}")
    if towers != "dense":
        fuse_weights(split, fused)
    return fused


def fuse_weights(split: keras.Model, fused: keras.Model) -> None:
    """Copy a two-tower net's weights into a `fused_alexnet` (``grouped`` or
    ``blockdiag``) so both compute the same."""
    for stage in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        a, b = split.get_layer(f"{stage}_a"), split.get_layer(f"{stage}_b")
        dst = fused.get_layer(stage)
        ka, kb = np.asarray(a.kernel.numpy()), np.asarray(b.kernel.numpy())
        bias = np.concatenate([np.asarray(a.bias.numpy()), np.asarray(b.bias.numpy())])
        full = tuple(dst.kernel.shape)
        if full[-2] == ka.shape[-2]:  # conv1/conv3 (all inputs) or Conv2D(groups=2)
            kernel = np.concatenate([ka, kb], axis=-1)
        else:  # block-diagonal dense kernel
            kernel = np.zeros(full, np.float32)
            ci, co = ka.shape[-2], ka.shape[-1]
            kernel[..., :ci, :co] = ka
            kernel[..., ci:, co:] = kb
        dst.kernel.assign(kernel)
        dst.bias.assign(bias)
    for name in ("fc6", "fc7", "fc8"):
        fused.get_layer(name).set_weights(split.get_layer(name).get_weights())


# --------------------------------------------------------------------------------------
# The builder the bench takes
# --------------------------------------------------------------------------------------


def swap_layers(net: keras.Model, variant: Variant) -> keras.Model:
    """`net` with its LRN layers in the variant's form and conv1 by space-to-depth
    (as the variant says), the same weights."""

    def clone(layer):
        if isinstance(layer, LocalResponseNormalization) and variant.lrn != "project":
            return VariantLRN(form=variant.lrn, **layer.get_config())
        if variant.conv1 == "s2d" and isinstance(layer, keras.layers.Conv2D) and layer.name.startswith("conv1"):
            return SpaceToDepthConv2D.from_config(layer.get_config())
        return _like(layer)

    swapped = keras.models.clone_model(net, clone_function=clone)
    swapped.set_weights(net.get_weights())
    return swapped


def net_builder(variant: Variant):
    """A `build_net` for reproduce.bench.run / reproduce.train.build_training_model
    that builds the variant's net (the project's for the default Variant)."""

    def build(model_cfg, image_size, num_classes, weight_decay=0.0, seed=None):
        net = build_model(model_cfg, image_size, num_classes, weight_decay, seed)
        two_towers = model_cfg.arch == "alexnet" and model_cfg.towers == 2
        if variant.towers != "split" and two_towers:
            net = fused_alexnet(net, variant.towers, variant.lrn)
            return swap_layers(net, dataclasses.replace(variant, lrn="project")) if variant.conv1 != "plain" else net
        if variant.lrn != "project" or variant.conv1 != "plain":
            return swap_layers(net, variant)
        return net

    return build
