"""Training throughput: images/s and model FLOP utilization (MFU) of the training step.

``python -m reproduce bench`` (``make bench``) or, from Python,
``reproduce.bench.run(...)``, which returns the result rows; ``python -m
reproduce.bench`` takes the same options. Paths, each on the active Keras backend,
with and without ``mixed_bfloat16``:

``step``
    A jitted training step (forward, backward, the paper's SGD update) on one
    synthetic batch already on the device: uint8 SxS images -> Augment (crops,
    flips, PCA colour, mean; inside the step, as in training) -> net. JAX: a
    stateless step, ``jax.jit`` with donated state; TensorFlow: a
    ``tf.function(jit_compile=True)``. The ceiling of what training can reach.
``fit``
    ``model.fit`` exactly as ``reproduce.train`` runs it: the same model and
    ``compile`` arguments, the trainer's own callbacks (``--callbacks none``
    leaves them out), batches from ``reproduce.data.ArrayBatches`` over a uint8
    NumPy array of synthetic images.
``e2e``
    The same as ``fit`` on real cached data (``--data DIR``: an ImageFolder folder
    or archive, loaded through ``reproduce.data.load`` with
    ``data.source=DIR``), so the input pipeline is measured too; the row carries
    the ratio to the synthetic ``fit`` row of the same settings.
``resident`` / ``e2e-resident`` (JAX only; ask for them with ``--paths``)
    The device-resident design proposed for the trainer (docs/perf_log.md): the
    whole uint8 training set on the device, batches gathered by index inside
    one compiled ``lax.scan`` over a chunk of steps (``scan=1``: one dispatch
    per step).

Model FLOPs are counted from the model's layer shapes (:func:`training_flops`:
convolution and dense multiply-adds x 6, i.e. x2 FLOPs per MAC and x3 for
forward + backward); the paper's 227-pixel two-tower net is 4.35 GFLOP per
training image. MFU = FLOP/s / the device's peak (:data:`PEAKS`, or
``--peak-tflops``); float32 is compared with the TF32 tensor-core peak where the
device has one, because XLA (JAX and TensorFlow) runs float32 convolutions and
matmuls in TF32 there by default.

On a machine without an accelerator the default is a small configuration (67-px
crops of 76-px images, width 0.125, batch 8, a few steps) so it runs in seconds;
``--full`` runs the paper's net (227 crops of 256 images, batches 128 and 512).
Output: a table on screen and a JSON file (``--out``, default
``$REPRODUCE_RUNS/bench.json``, i.e. ``runs/bench.json``): ``{"rows": [...],
"errors": [...], ...}``, one row per measurement with the keys of
:data:`ROW_KEYS` and more (variant, step_ms, compile_s, flops_per_image,
tflops, peak_tflops, crop_size, ...). ``--plan FILE`` runs a list of jobs in one
process (``scripts/gpu_bench.sh``).

``--variant`` runs experimental versions of the net that exist only here, to
measure changes proposed for ``reproduce.model``/``reproduce.layers`` before they
are made (docs/perf_log.md): ``lrn=slices|matmul|vjp|bf16``,
``towers=grouped|blockdiag|dense``, ``conv1=s2d``, ``no_augment``, ``scan=K``,
``unroll=U``; join several with ``+`` (see :class:`Variant`).

Nothing here imports TensorFlow at module level (neither do the modules it uses
on the JAX path), so the bench runs where TensorFlow is not installed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

# --------------------------------------------------------------------------------------
# Constants: FLOPs, peaks, reference figures
# --------------------------------------------------------------------------------------

#: Training FLOPs per image of the paper's 227-px two-tower net (3 x 2 x 724.4 M MACs).
PAPER_TRAIN_FLOPS = 4.35e9

#: Keys every result row has.
ROW_KEYS = (
    "backend", "device", "precision", "batch", "path", "images_per_s", "mfu", "steps", "date",
)

#: Dense peak TFLOP/s by device name (regex, first match wins): bf16 (fp16 where the
#: chip has no bf16 tensor cores: V100, T4), tf32 tensor cores (None: none), fp32.
#: Vendor datasheets, dense (no sparsity). Measured on an H200 here: ~790 bf16 on a
#: 8192^3 matmul (docs/perf_log.md); the datasheet figure is the MFU denominator.
PEAKS = (
    (r"H200 NVL|H100 NVL", {"bf16": 835.0, "tf32": 418.0, "fp32": 60.0}),
    (r"H100 PCIe", {"bf16": 756.0, "tf32": 378.0, "fp32": 51.0}),
    (r"GH200|H200|H100|H800", {"bf16": 989.0, "tf32": 495.0, "fp32": 67.0}),
    (r"A100|A800", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    (r"V100", {"bf16": 125.0, "tf32": None, "fp32": 15.7}),
    (r"RTX 4090", {"bf16": 165.0, "tf32": 82.6, "fp32": 82.6}),
    (r"L40S", {"bf16": 362.0, "tf32": 183.0, "fp32": 91.6}),
    (r"L40\b", {"bf16": 181.0, "tf32": 90.5, "fp32": 90.5}),
    (r"\bL4\b", {"bf16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    (r"\bT4\b", {"bf16": 65.0, "tf32": None, "fp32": 8.1}),
)

#: Figures to beat on one NVIDIA H200, synthetic data, mixed_bfloat16 (the issue's
#: anchors: straightforward Keras 3 on JAX), keyed by (path, batch).
H200_ANCHORS = {
    ("step", 128): 22000,
    ("step", 512): 26000,
    ("fit", 128): 21000,
    ("fit", 512): 14600,  # 23,500 with steps_per_execution=8
}
#: Targets on one H200 for the paper's net through the real training path.
H200_TARGETS = {128: 35000, 512: 45000}

PATHS = ("step", "fit", "e2e", "resident", "e2e-resident")
PRECISIONS = ("float32", "mixed_bfloat16")

# The small CPU configuration: the smoke preset's sizes (67 = the smallest input the
# paper's layer stack accepts), 1/8 width.
SMALL = {"data.image_size": 76, "data.crop_size": 67, "model.width": 0.125}


# --------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------


def _walk(layer):
    """The layer and every layer nested in it (functional sub-models included)."""
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is not None:
        yield from flatten(include_self=True, recursive=True)
        return
    yield layer
    for sub in getattr(layer, "layers", []) or []:
        yield from _walk(sub)


def _output_shapes(layer) -> list:
    shapes = []
    for node in getattr(layer, "_inbound_nodes", []) or []:
        outs = getattr(node, "outputs", None) or []
        if outs:
            shapes.append(tuple(outs[0].shape))
    if not shapes:
        try:
            shapes.append(tuple(layer.output.shape))
        except Exception:
            pass
    return shapes


def forward_macs(model) -> int:
    """Multiply-adds of one example's forward pass in conv, dense and locally
    connected layers (everything else is not counted), from the layer shapes.

    A layer with kernel ``K`` and an output of ``P`` positions (the product of the
    output's spatial dimensions) does ``P * K.size`` MACs: that is
    ``out_h*out_w*out_c*(kh*kw*in_c/groups)`` for a (grouped) convolution,
    ``in*out`` for a dense layer. A locally connected layer's kernel already holds
    one matrix per position. A layer with ``mac_fraction`` (the block-diagonal
    tower variant) counts that fraction: the useful work, not the zeros.
    """
    total = 0.0
    seen = set()
    for layer in _walk(model):
        if id(layer) in seen or layer is model:
            continue
        seen.add(id(layer))
        kernel = getattr(layer, "kernel", None)
        if kernel is None or not hasattr(kernel, "shape"):
            continue
        size = int(np.prod(kernel.shape))
        if type(layer).__name__ == "LocallyConnected2D":
            calls = max(1, len(getattr(layer, "_inbound_nodes", []) or []))
            total += calls * size
            continue
        shapes = _output_shapes(layer)
        if not shapes:
            raise ValueError(
                f"cannot count the MACs of layer {layer.name!r}: its output shape is unknown "
                "(only layers of functional models are counted)"
            )
        frac = float(getattr(layer, "mac_fraction", 1.0))
        for shape in shapes:
            positions = int(np.prod([d for d in shape[1:-1]])) if len(shape) > 2 else 1
            total += positions * size * frac
    return int(round(total))


def training_flops(model) -> float:
    """Training FLOPs per example: 6 x forward MACs (2 FLOPs per multiply-add; the
    backward pass does twice the forward's work: gradients w.r.t. inputs and
    weights). The paper's 227-px two-tower net gives 4.35e9."""
    return 6.0 * forward_macs(model)


def count_training_flops(build, *args, **kwargs) -> float:
    """:func:`training_flops` of ``build(*args, **kwargs)`` (a model builder, e.g.
    ``reproduce.model.alexnet``) without initializing its weights: the model is
    built in a Keras StatelessScope that defers initialization, and its
    uninitialized variables are dropped afterwards."""
    import keras

    try:
        from keras.src.backend.common import global_state
    except ImportError:  # pragma: no cover - Keras internals moved: build for real
        return training_flops(build(*args, **kwargs))
    key = "uninitialized_variables"
    before = list(global_state.get_global_attribute(key, []) or [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            return training_flops(build(*args, **kwargs))
    finally:
        after = global_state.get_global_attribute(key, []) or []
        keep = {id(v) for v in before}
        global_state.set_global_attribute(key, [v for v in after if id(v) in keep])


# --------------------------------------------------------------------------------------
# Devices and peaks
# --------------------------------------------------------------------------------------


def peak_tflops(device: str, precision: str) -> tuple[Optional[float], Optional[str]]:
    """(peak TFLOP/s, which peak) for a device description and a Keras precision.

    float32 uses the TF32 tensor-core peak where the chip has one (XLA's default for
    float32 convolutions and matmuls on such GPUs), else plain fp32. (None, None)
    for a device not in :data:`PEAKS` (CPUs among them).
    """
    for pattern, peaks in PEAKS:
        if re.search(pattern, device or "", re.IGNORECASE):
            if precision == "mixed_bfloat16":
                return peaks["bf16"], "bf16"
            if peaks.get("tf32"):
                return peaks["tf32"], "tf32"
            return peaks["fp32"], "fp32"
    return None, None


def _backend() -> str:
    import keras

    return keras.backend.backend()


def _on_accelerator() -> bool:
    from reproduce.train import accelerator

    try:
        return accelerator() is not None
    except Exception:
        return False


def describe_device() -> str:
    from reproduce.train import device_description

    return device_description()


def measure_matmul_tflops(n: int = 8192, dtype: str = "bfloat16", repeats: int = 10) -> Optional[float]:
    """TFLOP/s of an n x n x n matmul on the default device (JAX backend only): the
    attainable peak the log compares MFU with (~790 bf16 on an H200 here)."""
    if _backend() != "jax":
        return None
    import jax
    import jax.numpy as jnp

    if not _on_accelerator():  # a CPU: a small one (8192^3 bf16 takes minutes there)
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


def _is_h200(device: str) -> bool:
    return bool(re.search(r"H200", device or "")) and not re.search(r"NVL", device or "")


# --------------------------------------------------------------------------------------
# Variants (experiments for changes to others' modules; see docs/perf_log.md)
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Variant:
    """What is changed from the project's net for one measurement.

    lrn: "project" (reproduce.layers as it is: a sum-pool over channels; the fused
        TF kernel on TF), "slices" (a sum of `size` shifted channel slices),
        "matmul" (window sum as a matmul with a CxC band matrix), "vjp" (JAX
        custom VJP that keeps only the LRN input for the backward pass and
        recomputes the rest), "bf16" (the whole LRN in the compute dtype).
    towers: "split" (the project's explicit per-tower layers), "grouped" (one
        Conv2D(groups=2) per layer and a grouped LRN: the same function),
        "blockdiag" (dense convolutions with block-diagonal masked kernels: the
        same function again, twice the conv2/4/5 MACs), "dense" (full
        convolutions: NOT the paper's net, the anchors' "dense" comparison).
    augment: False feeds float crops straight to the net (the anchors' setup).
    conv1: "s2d" computes conv1 (11x11 stride 4 on 3 channels, poor tensor-core
        use) as a 3x3 stride-1 convolution on the 4x4 space-to-depth input (48
        channels) with the kernel zero-padded to 12x12 and rearranged: the same
        function and the same 11x11x3 weights, 19% more MACs in better kernels.
    scan: train steps per dispatch (lax.scan; JAX). 0 is the path's default: 1 for
        `step`; for the resident paths, chunks of up to `steps` steps (at most one
        epoch); scan=1 there is one dispatch per step, gathering on the device.
    """

    lrn: str = "project"
    towers: str = "split"
    augment: bool = True
    scan: int = 0
    unroll: int = 1  # lax.scan's unroll (XLA's CPU while loop halves the speed here)
    conv1: str = "plain"  # "s2d": conv1 as a 3x3 conv on a 4x4 space-to-depth input

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


LRN_IMPLS = ("project", "slices", "matmul", "vjp", "bf16")
TOWER_IMPLS = ("split", "grouped", "blockdiag", "dense")


def parse_variant(text: str) -> Variant:
    """'project' or parts joined by '+': lrn=..., towers=..., no_augment, scan=K."""
    v = Variant()
    text = (text or "project").strip()
    if text in ("project", "paper", "default", ""):
        return v
    for part in text.split("+"):
        part = part.strip()
        key, _, val = part.partition("=")
        if key == "lrn" and val in LRN_IMPLS:
            v = dataclasses.replace(v, lrn=val)
        elif key == "towers" and val in TOWER_IMPLS:
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
                f"lrn={'|'.join(LRN_IMPLS)}, towers={'|'.join(TOWER_IMPLS)}, no_augment, scan=K, unroll=U, conv1=s2d"
            )
    return v


def _window_sum(v, size: int, groups: int = 1):
    """Sum over a window of `size` channels centred on each channel, clipped at the
    ends of each of `groups` equal channel groups (keras.ops, any backend)."""
    from keras import ops

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


def _band(channels: int, size: int, groups: int, dtype="float32"):
    r = size // 2
    i = np.arange(channels)
    g = channels // groups
    m = (np.abs(i[:, None] - i[None, :]) <= r) & ((i[:, None] // g) == (i[None, :] // g))
    return m.astype(dtype)


def _pool_window_sum(v, size: int, groups: int = 1):
    """The window sum as reproduce.layers computes it: a 1-D sum-pool (average
    pool x size) along the zero-padded channels, per channel group."""
    from keras import ops

    r = size // 2
    shape = tuple(v.shape)
    cg = shape[-1] // groups
    v = ops.reshape(v, (-1, cg))
    v = ops.pad(v, [[0, 0], [r, r]])
    total = ops.average_pool(ops.reshape(v, (-1, cg + 2 * r, 1)), size, strides=1,
                             padding="valid", data_format="channels_last") * float(size)
    return ops.reshape(total, (-1,) + shape[1:])


def lrn_apply(x, *, size, k, alpha, beta, impl="slices", groups=1, out_dtype=None):
    """Cross-channel LRN of `x` (channels last), alpha already the effective one
    (multiplying the plain sum of squares). `impl` as in :class:`Variant`
    ("project" is the layer's sum-pool form)."""
    from keras import ops

    out_dtype = out_dtype or x.dtype
    if impl == "vjp":
        import keras

        if keras.backend.backend() != "jax":
            impl = "slices"  # the custom VJP is JAX-only; elsewhere the plain form
        else:
            return _lrn_vjp(size, float(k), float(alpha), float(beta), groups)(x).astype(out_dtype)
    if impl == "bf16":
        xf = x  # the compute dtype throughout
    else:
        xf = ops.cast(x, "float32")
    sq = ops.square(xf)
    if impl == "matmul":
        band = ops.convert_to_tensor(_band(x.shape[-1], size, groups), dtype=sq.dtype)
        total = ops.matmul(sq, band)
    elif impl == "project":
        total = _pool_window_sum(sq, size, groups)
    else:
        total = _window_sum(sq, size, groups)
    y = xf / ops.power(k + alpha * total, beta)
    return ops.cast(y, out_dtype)


_VJP_CACHE: dict = {}


def _lrn_vjp(size, k, alpha, beta, groups):
    """JAX LRN with a hand-written VJP. Residual: the input only (in its own dtype,
    usually the bf16 activation the ReLU keeps anyway); the backward pass
    recomputes the denominators in float32 inside one fused kernel instead of
    reading float32 intermediates saved by autodiff. With s = k + alpha * W(x^2)
    (W the symmetric clipped window sum) and y = x s^-beta:
    dx = g s^-beta - 2 alpha beta x W(g x s^(-beta-1))."""
    key = (size, k, alpha, beta, groups)
    if key in _VJP_CACHE:
        return _VJP_CACHE[key]
    import jax
    import jax.numpy as jnp

    def ws(v):
        return _window_sum(v, size, groups)

    def fwd_math(x):
        xf = x.astype(jnp.float32)
        s = k + alpha * ws(xf * xf)
        return xf, s

    @jax.custom_vjp
    def f(x):
        xf, s = fwd_math(x)
        return (xf * s ** (-beta)).astype(x.dtype)

    def fwd(x):
        return f(x), x

    def bwd(x, g):
        xf, s = fwd_math(x)
        d = s ** (-beta)
        gf = g.astype(jnp.float32)
        t = gf * xf * d / s
        dx = gf * d - (2.0 * alpha * beta) * xf * ws(t)
        return (dx.astype(x.dtype),)

    f.defvjp(fwd, bwd)
    _VJP_CACHE[key] = f
    return f


@contextlib.contextmanager
def _lrn_impl(impl: str):
    """Temporarily route reproduce.layers.LocalResponseNormalization through `impl`."""
    if impl == "project":
        yield
        return
    from reproduce import layers as L

    cls = L.LocalResponseNormalization
    orig = cls.call

    def call(self, inputs):
        return lrn_apply(
            inputs, size=self.size, k=self.k, alpha=self.effective_alpha, beta=self.beta,
            impl=impl, out_dtype=self.compute_dtype,
        )

    cls.call = call
    try:
        yield
    finally:
        cls.call = orig


def _variant_layers():
    """Layer classes for the fused-tower prototypes (built on first use)."""
    import keras

    class GroupedLRN(keras.layers.Layer):
        """LRN over `groups` equal channel groups (the towers, side by side)."""

        def __init__(self, size, k, alpha, beta, groups, impl, **kw):
            kw.setdefault("autocast", False)
            super().__init__(**kw)
            self.size, self.k, self.alpha, self.beta = size, k, alpha, beta
            self.groups, self.impl = groups, impl

        def call(self, x):
            return lrn_apply(
                x, size=self.size, k=self.k, alpha=self.alpha, beta=self.beta,
                impl=self.impl, groups=self.groups, out_dtype=self.compute_dtype,
            )

        def compute_output_shape(self, s):
            return s

    class BlockDiagConv2D(keras.layers.Conv2D):
        """A dense Conv2D whose kernel is masked to `blocks` diagonal blocks: the
        function of Conv2D(groups=blocks), computed by a dense convolution."""

        def __init__(self, *a, blocks=2, **kw):
            super().__init__(*a, **kw)
            self.blocks = blocks
            self.mac_fraction = 1.0 / blocks

        def build(self, input_shape):
            super().build(input_shape)
            cin, cout = self.kernel.shape[-2], self.kernel.shape[-1]
            gi, go = cin // self.blocks, cout // self.blocks
            m = (np.arange(cin)[:, None] // gi) == (np.arange(cout)[None, :] // go)
            self._mask = np.broadcast_to(m, tuple(self.kernel.shape)).astype("float32")

        def convolution_op(self, inputs, kernel):
            mask = keras.ops.convert_to_tensor(self._mask, dtype=kernel.dtype)
            return super().convolution_op(inputs, kernel * mask)

    return GroupedLRN, BlockDiagConv2D


def fused_alexnet(model_cfg, image_size, num_classes, weight_decay=0.0, seed=None, *,
                  towers="grouped", lrn_impl="project"):
    """The paper's two-tower net with both towers in one layer per stage.

    ``towers="grouped"``: conv1 and conv3 are single convolutions with both
    towers' kernels, conv2/4/5 are ``Conv2D(groups=2)``, LRN is grouped (windows
    never cross the tower boundary), pools act on both towers at once. The same
    function as :func:`reproduce.model.alexnet` with ``towers=2`` (channel order
    [tower a, tower b] everywhere; :func:`fuse_weights` maps the weights).
    ``"blockdiag"``: the same with dense, block-diagonally masked convolutions.
    ``"dense"``: full convolutions and one LRN over all channels: a different
    (larger) net, the anchors' "dense" comparison.
    """
    import keras

    from reproduce import model as M

    GroupedLRN, BlockDiagConv2D = _variant_layers()
    mc = model_cfg
    mk = M._Init(seed, weight_decay)
    k = [2 * M._scaled(n, mc.width) for n in M._TWO_TOWER_KERNELS]
    fc_units = M._scaled(M._FC_UNITS, mc.width)
    positive = M.POSITIVE_BIAS[mc.init]
    alpha = mc.lrn_alpha / mc.lrn_size if mc.lrn_convention == "cuda-convnet" else mc.lrn_alpha
    act = mc.activation

    def conv(x, filters, size, stride, padding, name, bias, grouped):
        kw = dict(
            strides=stride, padding=padding, activation=act,
            kernel_initializer=mk.normal(0.01), bias_initializer=mk.constant(bias),
            kernel_regularizer=mk.decay(), name=name,
        )
        if grouped and towers == "grouped":
            return keras.layers.Conv2D(filters, size, groups=2, **kw)(x)
        if grouped and towers == "blockdiag":
            return BlockDiagConv2D(filters, size, blocks=2, **kw)(x)
        return keras.layers.Conv2D(filters, size, **kw)(x)

    def norm(x, name):
        if not mc.lrn:
            return x
        groups = 1 if towers == "dense" else 2
        return GroupedLRN(mc.lrn_size, mc.lrn_k, alpha, mc.lrn_beta, groups, lrn_impl, name=name)(x)

    inputs = keras.Input((image_size, image_size, 3), name="image")
    h = conv(inputs, k[0], 11, 4, "valid", "conv1", 0.0, False)
    h = M._alexnet_pool(norm(h, "lrn1"), mc.pooling, "", 1)
    h = conv(h, k[1], 5, 1, "same", "conv2", positive, True)
    h = M._alexnet_pool(norm(h, "lrn2"), mc.pooling, "", 2)
    h = conv(h, k[2], 3, 1, "same", "conv3", 0.0, False)
    h = conv(h, k[3], 3, 1, "same", "conv4", positive, True)
    h = conv(h, k[4], 3, 1, "same", "conv5", positive, True)
    h = M._alexnet_pool(h, mc.pooling, "", 5)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(fc_units, activation=act, kernel_initializer=mk.normal(0.01),
                           bias_initializer=mk.constant(positive), kernel_regularizer=mk.decay(),
                           name="fc6")(h)
    h = keras.layers.Dropout(mc.dropout, seed=mk.next_seed(), name="drop6")(h)
    h = keras.layers.Dense(fc_units, activation=act, kernel_initializer=mk.normal(0.01),
                           bias_initializer=mk.constant(positive), kernel_regularizer=mk.decay(),
                           name="fc7")(h)
    h = keras.layers.Dropout(mc.dropout, seed=mk.next_seed(), name="drop7")(h)
    logits = keras.layers.Dense(num_classes, kernel_initializer=mk.normal(0.01),
                                kernel_regularizer=mk.decay(), name="fc8", dtype="float32")(h)
    return keras.Model(inputs, logits, name=f"alexnet_{towers}")


def fuse_weights(split_net, fused_net) -> None:
    """Copy a two-tower :func:`reproduce.model.alexnet`'s weights into a
    :func:`fused_alexnet` (``grouped`` or ``blockdiag``) so both compute the same."""
    for stage in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        a, b = split_net.get_layer(f"{stage}_a"), split_net.get_layer(f"{stage}_b")
        dst = fused_net.get_layer(stage)
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
        src, dst = split_net.get_layer(name), fused_net.get_layer(name)
        dst.kernel.assign(np.asarray(src.kernel.numpy()))
        dst.bias.assign(np.asarray(src.bias.numpy()))


def space_to_depth_conv(inputs, kernel, stride: int):
    """A valid convolution with `stride` = the kernel's stride, computed as a
    stride-1 convolution on the stride x stride space-to-depth of the input.

    kernel (k, k, C, F) is zero-padded to (k', k') with k' the next multiple of the
    stride and rearranged to (k'/s, k'/s, s*s*C, F); the input is padded (or
    cropped) to s*(out + k'/s - 1) pixels, the rows/columns no output reads (the
    zero taps multiply them). out = (n - k) // s + 1 as for the plain convolution.
    """
    from keras import ops

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


def _s2d_conv_class():
    import keras

    class S2DConv2D(keras.layers.Conv2D):
        """Conv2D that computes a large-stride valid convolution (conv1) by
        space-to-depth; any other convolution is the plain one."""

        def convolution_op(self, inputs, kernel):
            st = tuple(self.strides)
            if (st[0] == st[1] and st[0] > 1 and self.padding == "valid" and self.groups == 1
                    and tuple(self.dilation_rate) == (1, 1) and self.data_format == "channels_last"
                    and self.kernel_size[0] == self.kernel_size[1]):
                return space_to_depth_conv(inputs, kernel, st[0])
            return super().convolution_op(inputs, kernel)

    return S2DConv2D


@contextlib.contextmanager
def _conv1_impl(impl: str):
    """Temporarily make keras.layers.Conv2D (as reproduce.model calls it) the
    space-to-depth form for strided valid convolutions (conv1)."""
    if impl == "plain":
        yield
        return
    import keras

    orig = keras.layers.Conv2D
    keras.layers.Conv2D = _s2d_conv_class()
    try:
        yield
    finally:
        keras.layers.Conv2D = orig


@contextlib.contextmanager
def _variant_net(variant: Variant):
    """Make reproduce.train.build_training_model build the variant's net."""
    from reproduce import model as M

    if variant.towers == "split":
        with _lrn_impl(variant.lrn), _conv1_impl(variant.conv1):
            yield
        return
    orig = M.build_model

    def build_model(model_cfg, image_size, num_classes, weight_decay=0.0, seed=None):
        if model_cfg.arch != "alexnet" or model_cfg.towers != 2:
            return orig(model_cfg, image_size, num_classes, weight_decay, seed)
        return fused_alexnet(model_cfg, image_size, num_classes, weight_decay, seed,
                             towers=variant.towers, lrn_impl=variant.lrn)

    M.build_model = build_model
    try:
        with _lrn_impl(variant.lrn), _conv1_impl(variant.conv1):
            yield
    finally:
        M.build_model = orig


# --------------------------------------------------------------------------------------
# Configuration and data
# --------------------------------------------------------------------------------------


def bench_config(preset: str = "imagenet", overrides=None, small: bool = False, data: str = ""):
    """The configuration measured: a preset (default the paper's), synthetic data
    unless `data`, the small CPU sizes if `small`, then `overrides`."""
    from reproduce.config import apply_overrides, get_config, validate

    cfg = get_config(preset)
    cfg.data.source = data or "synthetic"
    if small:
        apply_overrides(cfg, SMALL)
    apply_overrides(cfg, overrides or [])
    cfg.train.steps_per_epoch = 0
    return validate(cfg)


def _default_preset(data: str) -> str:
    name = os.path.basename(str(data)).lower()
    if "imagenette" in name:
        return "imagenette"
    if "cifar" in name:
        return "cifar10"
    return "imagenet"


_SYNTH: dict = {}


def synthetic_data(n: int, size: int, num_classes: int, seed: int = 0):
    """(images uint8 (n, size, size, 3), labels int32 (n,), stats) of random pixels.

    One set per process, grown when more is asked for (views of it otherwise).
    Stats come from reproduce.data.pixelstats, like real data's.
    """
    key = (size, num_classes, seed)
    have = _SYNTH.get(key)
    if have is None or len(have[1]) < n:
        from reproduce.data.pixelstats import compute_stats

        _SYNTH.clear()  # keep one set: they can be large
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
        labels = rng.integers(0, num_classes, size=(n,)).astype(np.int32)
        _SYNTH[key] = have = (images, labels, compute_stats(images[: min(n, 64)]))
    images, labels, stats = have
    return images[:n], labels[:n], stats


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


def _build(cfg, stats, num_classes, variant: Variant):
    """(model, net, flops per image) for the variant; the model is the trainer's
    uint8 -> Augment -> net, or the bare net for no_augment."""
    import keras

    from reproduce.train import build_training_model

    keras.utils.set_random_seed(cfg.train.seed)
    with _variant_net(variant):
        model, net = build_training_model(cfg, stats, num_classes)
    flops = training_flops(net)
    return (model if variant.augment else net), net, flops


def _compile_like_trainer(model, cfg, steps_per_execution: int):
    """model.compile exactly as reproduce.train compiles it."""
    from reproduce.train import compile_model

    compile_model(model, cfg, steps_per_execution)


def _float_batch(cfg, batch: int, num_classes: int, seed: int = 0):
    """Mean-subtracted-looking float crops and labels: the bare net's input."""
    rng = np.random.default_rng(seed)
    c = cfg.data.crop_size
    x = rng.normal(0.0, 60.0, size=(batch, c, c, 3)).astype(np.float32)
    return x, rng.integers(0, num_classes, size=(batch,)).astype(np.int32)


# --------------------------------------------------------------------------------------
# Path "step": a jitted training step on device-resident data
# --------------------------------------------------------------------------------------


def _jax_train_step(model, optimizer, loss_fn):
    """A stateless train step: (state, x, y) -> (state, loss), state = (trainable,
    non-trainable, optimizer variables)."""
    import jax

    def step(state, x, y):
        tv, ntv, ov = state

        def loss_of(tv, ntv):
            y_pred, ntv2, losses = model.stateless_call(tv, ntv, x, training=True, return_losses=True)
            loss = loss_fn(y, y_pred)
            for extra in losses:
                loss = loss + extra
            return loss, ntv2

        (loss, ntv), grads = jax.value_and_grad(loss_of, has_aux=True)(tv, ntv)
        tv, ov = optimizer.stateless_apply(ov, grads, tv)
        return (tv, ntv, ov), loss

    return step


def _jax_state(model, optimizer):
    optimizer.build(model.trainable_variables)
    return (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )


def _time_windows(run_window, steps, repeats):
    """Seconds of each of `repeats` windows of `steps` steps."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_window(steps)
        times.append(time.perf_counter() - t0)
    return times


def _step_jax(model, cfg, x, y, steps, warmup, repeats, scan, unroll=1):
    import jax
    import keras

    optimizer = keras.optimizers.SGD(learning_rate=cfg.train.learning_rate, momentum=cfg.train.momentum)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    one = _jax_train_step(model, optimizer, loss_fn)
    scan = scan or 1
    if scan > 1:
        def many(state, x, y):
            def body(state, _):
                return one(state, x, y)
            state, losses = jax.lax.scan(body, state, None, length=scan, unroll=unroll)
            return state, losses[-1]
        fn = jax.jit(many, donate_argnums=0)
    else:
        fn = jax.jit(one, donate_argnums=0)
    state = _jax_state(model, optimizer)
    xd, yd = jax.device_put(x), jax.device_put(y)
    holder = {"state": state}

    def run_window(n):
        s = holder["state"]
        loss = None
        for _ in range(n):
            s, loss = fn(s, xd, yd)
        jax.block_until_ready((s, loss))
        holder["state"] = s
        return loss

    t0 = time.perf_counter()
    loss = run_window(1)
    compile_s = time.perf_counter() - t0
    if warmup > 1:
        run_window(warmup - 1)
    calls = max(1, steps // scan)
    times = _time_windows(run_window, calls, repeats)
    finite = bool(np.isfinite(np.asarray(loss)).all())
    return times, calls * scan, compile_s, finite


def _step_tf(model, cfg, x, y, steps, warmup, repeats):
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.SGD(learning_rate=cfg.train.learning_rate, momentum=cfg.train.momentum)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer.build(model.trainable_variables)

    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = loss_fn(y, logits)
            if model.losses:
                loss = loss + tf.add_n(model.losses)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    xd, yd = tf.constant(x), tf.constant(y)
    fn = tf.function(step, jit_compile=True)
    t0 = time.perf_counter()
    try:
        loss = fn(xd, yd).numpy()
    except Exception:  # an op without an XLA kernel: measure the graph without XLA
        fn = tf.function(step, jit_compile=False)
        loss = fn(xd, yd).numpy()
    compile_s = time.perf_counter() - t0

    def run_window(n):
        out = None
        for _ in range(n):
            out = fn(xd, yd)
        return out.numpy()

    if warmup > 1:
        run_window(warmup - 1)
    times = _time_windows(run_window, steps, repeats)
    return times, steps, compile_s, bool(np.isfinite(loss).all())


# --------------------------------------------------------------------------------------
# Paths "fit" and "e2e": model.fit as the trainer runs it
# --------------------------------------------------------------------------------------


def _fit_callbacks():
    import keras

    class Timer(keras.callbacks.Callback):
        """Epoch wall time, first in the list: starts before the first step and
        stops at the first on_epoch_end (after the state sync), so the other
        callbacks' epoch-end work (the trainer's checkpoint) is not in it. No
        batch hooks, so Keras' asynchronous callback dispatch is not disabled."""

        def __init__(self):
            super().__init__()
            self.t0 = self.t1 = None

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.t1 = time.perf_counter()

    class After(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.t = None

        def on_epoch_end(self, epoch, logs=None):
            self.t = time.perf_counter()

    return Timer(), After()


def _cycle(base, n):
    """A PyDataset of `n` batches cycling over `base` (same workers settings)."""
    import keras

    class Cycle(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(
                workers=getattr(base, "workers", 1),
                use_multiprocessing=getattr(base, "use_multiprocessing", False),
                max_queue_size=getattr(base, "max_queue_size", 10),
            )

        def __len__(self):
            return n

        def __getitem__(self, i):
            return base[i % len(base)]

        def on_epoch_end(self):
            if hasattr(base, "on_epoch_end"):
                base.on_epoch_end()

    return Cycle()


def _trainer_callbacks(cfg, run_dir, model, n_train):
    """The callbacks reproduce.train passes to model.fit (None if that API moved)."""
    from reproduce import train as train_lib

    try:
        cbs = train_lib._callbacks(cfg, run_dir, model, {}, n_train)[0]
    except Exception as e:  # pragma: no cover - depends on the trainer's internals
        print(f"[bench] the trainer's callbacks are not available ({e}); fit runs without them",
              file=sys.stderr)
        return None
    cbs = list(cbs)
    import importlib.util

    import keras

    if importlib.util.find_spec("tensorboard") is None:
        # The trainer adds TensorBoard whenever TensorFlow is installed; without the
        # tensorboard package its first summary fails (a trainer bug, reported).
        cbs = [cb for cb in cbs if not isinstance(cb, keras.callbacks.TensorBoard)]
    return cbs


def _fit(model, cfg, images, labels, batch, steps, warmup, spe, callbacks_mode, repeats=1):
    """Seconds of each of `repeats` timed epochs of `steps` steps after a warm-up
    epoch, and the epoch-end overhead of the other callbacks (the trainer's
    checkpoint)."""
    import keras

    from reproduce.data import ArrayBatches

    _compile_like_trainer(model, cfg, spe)
    base = ArrayBatches(images, labels, batch, shuffle=True, seed=cfg.train.seed, epoch=0)
    steps = max(spe, int(math.ceil(steps / spe)) * spe)
    warmup = max(spe, int(math.ceil(warmup / spe)) * spe)
    with tempfile.TemporaryDirectory(prefix="bench-fit-") as run_dir:
        extra = []
        if callbacks_mode == "trainer":
            extra = _trainer_callbacks(cfg, run_dir, model, len(labels)) or []
        timer, after = _fit_callbacks()
        cbs = [timer] + extra + [after]
        # Callbacks with per-batch hooks make Keras dispatch them synchronously,
        # and most read the loss: one host-device sync per execution.
        base_cb = keras.callbacks.Callback
        batch_hooks = sorted(
            type(cb).__name__ for cb in cbs
            if not getattr(cb, "async_safe", False) and (
                type(cb).on_train_batch_end is not base_cb.on_train_batch_end
                or type(cb).on_batch_end is not base_cb.on_batch_end)
        )
        t0 = time.perf_counter()
        # shuffle=False: ArrayBatches shuffles itself (reproduce.data.batches).
        model.fit(_cycle(base, warmup), epochs=1, callbacks=cbs, verbose=0, shuffle=False)
        compile_s = time.perf_counter() - t0
        times = []
        for _ in range(max(1, repeats)):
            model.fit(_cycle(base, steps), epochs=1, callbacks=cbs, verbose=0, shuffle=False)
            times.append(timer.t1 - timer.t0)
        epoch_end_s = (after.t - timer.t1) if after.t is not None else None
    return times, steps, compile_s, epoch_end_s, batch_hooks


# --------------------------------------------------------------------------------------
# Paths "resident" and "e2e-resident": the whole train set on the device (JAX)
# --------------------------------------------------------------------------------------


def _resident_jax(model, cfg, images, labels, batch, steps, warmup, repeats, scan=0, unroll=1):
    """The proposed trainer design: uint8 images and labels on the device, each
    chunk of steps one compiled lax.scan that gathers its batches by index."""
    import jax
    import jax.numpy as jnp
    import keras

    optimizer = keras.optimizers.SGD(learning_rate=cfg.train.learning_rate, momentum=cfg.train.momentum)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    one = _jax_train_step(model, optimizer, loss_fn)
    n = len(labels)
    per_epoch = n // batch
    if per_epoch < 1:
        raise ValueError(f"{n} images are fewer than one batch of {batch}")
    chunk = max(1, min(scan or steps, steps, per_epoch))

    def run_chunk(state, images, labels, idx):
        def body(state, ix):
            return one(state, jnp.take(images, ix, axis=0), jnp.take(labels, ix, axis=0))

        if idx.shape[0] == 1:  # one step per dispatch: no loop
            return body(state, idx[0])
        state, losses = jax.lax.scan(body, state, idx, unroll=unroll)
        return state, losses[-1]

    fn = jax.jit(run_chunk, donate_argnums=0)
    imgs, labs = jax.device_put(np.asarray(images)), jax.device_put(np.asarray(labels))
    rng = np.random.default_rng(cfg.train.seed)
    state = {"s": _jax_state(model, optimizer), "pos": per_epoch, "perm": None}

    def next_idx():
        if state["pos"] + chunk > per_epoch:
            state["perm"] = rng.permutation(n)[: per_epoch * batch].reshape(per_epoch, batch)
            state["pos"] = 0
        idx = state["perm"][state["pos"]: state["pos"] + chunk].astype(np.int32)
        state["pos"] += chunk
        return idx

    def run_window(calls):
        s, loss = state["s"], None
        for _ in range(calls):
            s, loss = fn(s, imgs, labs, next_idx())
        jax.block_until_ready((s, loss))
        state["s"] = s
        return loss

    t0 = time.perf_counter()
    loss = run_window(1)
    compile_s = time.perf_counter() - t0
    if chunk == 1 and warmup > 1:
        run_window(warmup - 1)
    calls = max(1, steps // chunk)
    times = _time_windows(run_window, calls, repeats)
    return times, calls * chunk, compile_s, bool(np.isfinite(np.asarray(loss)).all())


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------


def _release():
    import keras

    keras.backend.clear_session()
    gc.collect()


def _row(**kw) -> dict:
    return kw


def _write(out, rows, meta):
    if not out:
        return
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**meta, "rows": rows}, indent=1, default=str))
    os.replace(tmp, out)


def run(
    *,
    full: Optional[bool] = None,
    preset: Optional[str] = None,
    overrides=None,
    data: str = "",
    paths=None,
    precisions=None,
    batches=None,
    variants=("project",),
    steps: Optional[int] = None,
    warmup: Optional[int] = None,
    repeats: Optional[int] = None,
    steps_per_execution=(1,),
    callbacks: str = "trainer",
    peak: Optional[float] = None,
    out: Optional[str] = "",
    append: bool = False,
    label: str = "",
    time_budget: Optional[float] = None,
    keep_going: bool = False,
    measure_peak: bool = False,
    verbose: bool = True,
) -> list[dict]:
    """Measure and return the rows (also written to `out` as JSON after each row).

    full: the paper's sizes (None: on an accelerator yes, on a CPU no).
    preset/overrides: the configuration (default `imagenet`, i.e. the paper; with
        `data`, the preset its name suggests: imagenette, cifar10).
    data: a folder or archive for the `e2e` path (added to `paths` by default).
    paths: subset of PATHS; default step and fit (and e2e with data).
    precisions: subset of PRECISIONS; default both.
    batches: default 128 and 512 (full) or 8 (small).
    variants: Variant strings (parse_variant); "project" is the project's net.
    steps/warmup/repeats: timed steps per window, warm-up steps (the first one
        compiles), windows (the median is reported); defaults 30/3/3 full, 3/1/2 small.
    steps_per_execution: values tried on the fit paths.
    callbacks: "trainer" (the trainer's callbacks in fit/e2e) or "none".
    peak: peak TFLOP/s for MFU (default: from PEAKS by device name).
    out: the JSON file ("" = <runs root>/bench.json, the root being
        $REPRODUCE_RUNS or ./runs; None = none).
    time_budget: seconds after which no new measurement starts.
    keep_going: a failing measurement is recorded in the JSON's "errors" and the
        others go ahead (else it raises).
    measure_peak: time a bf16 8192^3 matmul first (JAX) and store its TFLOP/s.
    """
    import keras

    t_start = time.perf_counter()
    if out == "":
        from reproduce import runs as runs_lib

        out = str(runs_lib.default_root() / "bench.json")
    backend = keras.backend.backend()
    accel = _on_accelerator()
    if full is None:
        full = accel
    preset = preset or (_default_preset(data) if data else "imagenet")
    paths = list(paths or (["step", "fit"] + (["e2e"] if data else [])))
    for p in paths:
        if p not in PATHS:
            raise ValueError(f"unknown path {p!r}; choose from {', '.join(PATHS)}")
    if any(p.startswith("e2e") for p in paths) and not data:
        raise ValueError("the e2e paths need --data DIR (a cached dataset folder or archive)")
    precisions = list(precisions or PRECISIONS)
    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
    batches = [int(b) for b in (batches or ([128, 512] if full else [8]))]
    steps = int(steps or (30 if full else 10))
    warmup = int(warmup or (3 if full else 2))
    repeats = int(repeats or (3 if full else 2))
    variants = [parse_variant(v) if isinstance(v, str) else v for v in variants]
    device = describe_device()
    date = datetime.date.today().isoformat()
    meta = {
        "tool": "reproduce.bench",
        "backend": backend,
        "device": device,
        "date": date,
        "full": bool(full),
        "preset": preset,
        "overrides": list(overrides or []),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "python": sys.version.split()[0],
        "keras": keras.__version__,
    }
    if backend == "jax":
        import jax

        meta["jax"] = jax.__version__
    rows: list[dict] = []
    errors: list[dict] = []
    if append and out and Path(out).exists():
        try:
            old = json.loads(Path(out).read_text())
            rows, errors = list(old.get("rows", [])), list(old.get("errors", []))
            for k in ("matmul_tflops_bf16",):
                if k in old:
                    meta[k] = old[k]
        except (OSError, ValueError):
            rows = []
    meta["errors"] = errors
    n_before = len(rows)
    if measure_peak and "matmul_tflops_bf16" not in meta:
        try:
            meta["matmul_tflops_bf16"] = round(measure_matmul_tflops(), 1)
            if verbose:
                print(f"[bench] bf16 matmul (8192^3 on an accelerator): {meta['matmul_tflops_bf16']} TFLOP/s", flush=True)
        except Exception as e:  # pragma: no cover - diagnostics only
            meta["matmul_tflops_bf16"] = None
            print(f"[bench] matmul peak not measured: {e}", file=sys.stderr)

    real = None
    if data:
        from reproduce import data as data_lib

        rcfg = bench_config(preset, overrides, small=not full, data=data)
        real = data_lib.load(rcfg.data)
        if not hasattr(real.train, "images"):
            raise ValueError(f"{data} is not an in-memory/cached dataset (got {type(real.train).__name__})")

    fit_ref: dict = {}
    for variant in variants:
        for precision in precisions:
            for batch in batches:
                for path in paths:
                    spes = steps_per_execution if path in ("fit", "e2e") else (1,)
                    for spe in spes:
                        if time_budget and time.perf_counter() - t_start > time_budget:
                            if verbose:
                                print(f"[bench] time budget {time_budget:.0f}s spent; stopping", flush=True)
                            return rows[n_before:]
                        skip = None
                        if path in ("resident", "e2e-resident") and backend != "jax":
                            skip = "the resident paths are JAX-only"
                        elif not variant.augment and path != "step":
                            skip = "no_augment applies to the step path only"
                        elif variant.scan and path not in ("step", "resident", "e2e-resident"):
                            skip = "scan applies to the step and resident paths"
                        elif (variant.lrn == "vjp" or variant.scan > 1) and backend != "jax":
                            skip = "JAX-only variant"
                        if skip:
                            if verbose:
                                print(f"[bench] skip {path} {variant.name}: {skip}", flush=True)
                            continue
                        cfg = bench_config(preset, overrides, small=not full,
                                           data=data if path.startswith("e2e") else "")
                        cfg.train.batch_size = batch
                        try:
                            row = _measure(
                                cfg, variant, precision, batch, path, spe, steps, warmup, repeats,
                                callbacks, real, fit_ref,
                            )
                        except Exception as e:
                            if not keep_going:
                                raise
                            import traceback

                            traceback.print_exc()
                            errors.append(dict(path=path, variant=variant.name, precision=precision,
                                               batch=batch, label=label, error=f"{type(e).__name__}: {e}"[:2000]))
                            _write(out, rows, meta)
                            _release()
                            continue
                        ips = row["images_per_s"]
                        pk, pk_kind = (peak, "given") if peak else peak_tflops(device, precision)
                        row.update(
                            backend=backend, device=device, date=date, label=label,
                            overrides=list(overrides or []), preset=preset,
                            mfu=(round(row["flops_per_image"] * ips / (pk * 1e12), 4) if pk else None),
                            peak_tflops=pk, peak_kind=pk_kind,
                            tflops=round(row["flops_per_image"] * ips / 1e12, 2),
                            xla_flags=os.environ.get("XLA_FLAGS", ""),
                        )
                        if _is_h200(device) and row["precision"] == "mixed_bfloat16" and variant.augment:
                            row["h200_anchor"] = H200_ANCHORS.get((path, batch)) if cfg.data.crop_size == 227 else None
                            row["h200_target"] = H200_TARGETS.get(batch) if cfg.data.crop_size == 227 else None
                        if path == "fit":
                            fit_ref[(variant.name, precision, batch, spe, cfg.data.image_size, cfg.data.crop_size)] = ips
                        if path == "e2e":
                            ref = fit_ref.get((variant.name, precision, batch, spe, cfg.data.image_size, cfg.data.crop_size))
                            row["vs_synthetic_fit"] = round(ips / ref, 3) if ref else None
                        rows.append(row)
                        _write(out, rows, meta)
                        if verbose:
                            print(_line(row), flush=True)
                        _release()
    if verbose:
        print()
        print(format_table(rows[n_before:]))
        if out:
            print(f"\n[bench] {len(rows) - n_before} rows -> {out}")
    return rows[n_before:]


def _measure(cfg, variant, precision, batch, path, spe, steps, warmup, repeats, callbacks, real, fit_ref):
    import keras

    backend = keras.backend.backend()
    keras.mixed_precision.set_global_policy(precision)
    try:
        if path.startswith("e2e"):
            images, labels = real.train.images, real.train.labels
            stats, num_classes = real.stats, real.num_classes
        else:
            # The real data's classes when there are any (so fit and e2e rows compare
            # the same net), else the paper's 1000.
            num_classes = real.num_classes if real is not None else (
                1000 if cfg.model.arch == "alexnet" else 10)
            n = batch * {"step": 1, "fit": 4, "resident": 8}[path]
            images, labels, stats = synthetic_data(n, cfg.data.image_size, num_classes)
        model, net, flops = _build(cfg, stats, num_classes, variant)
        extra = {}
        if path == "step":
            if variant.augment:
                x, y = np.asarray(images[:batch]), np.asarray(labels[:batch])
            else:
                x, y = _float_batch(cfg, batch, num_classes)
            if backend == "jax":
                times, n_steps, compile_s, finite = _step_jax(model, cfg, x, y, steps, warmup, repeats,
                                                                     variant.scan, variant.unroll)
            elif backend == "tensorflow":
                times, n_steps, compile_s, finite = _step_tf(model, cfg, x, y, steps, warmup, repeats)
            else:
                raise ValueError(f"the step path supports jax and tensorflow, not {backend}")
        elif path in ("fit", "e2e"):
            if path == "e2e":
                steps_e = min(steps, max(1, len(labels) // batch))
            else:
                steps_e = steps
            times, n_steps, compile_s, epoch_end_s, batch_hooks = _fit(
                model, cfg, images, labels, batch, steps_e, warmup, spe, callbacks, repeats
            )
            finite = True
            extra.update(callbacks=callbacks, epoch_end_s=(round(epoch_end_s, 3) if epoch_end_s is not None else None),
                         batch_hook_callbacks=batch_hooks)
        else:  # resident paths
            times, n_steps, compile_s, finite = _resident_jax(
                model, cfg, images, labels, batch, steps, warmup, repeats, variant.scan,
                variant.unroll,
            )
        seconds = float(np.median(times))
        extra["windows_s"] = [round(t, 4) for t in times]
        # The best window: on a shared machine the least disturbed one.
        extra["images_per_s_best"] = round(batch * n_steps / min(times), 1)
        ips = batch * n_steps / seconds
        return _row(
            path=path, variant=variant.name, precision=precision, batch=batch,
            images_per_s=round(ips, 1), step_ms=round(1000 * seconds / n_steps, 3),
            steps=n_steps, steps_per_execution=spe, compile_s=round(compile_s, 2),
            flops_per_image=flops, image_size=cfg.data.image_size, crop_size=cfg.data.crop_size,
            width=cfg.model.width, arch=cfg.model.arch, loss_finite=finite,
            data=(cfg.data.source if path.startswith("e2e") else "synthetic"),
            **extra,
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _fmt_int(v):
    return "-" if v is None else f"{v:,.0f}"


def _line(r: dict) -> str:
    mfu = "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%"
    return (
        f"[bench] {r['path']:<12} {r['variant'] + (' [' + r['label'] + ']' if r.get('label') else ''):<28} "
        f"{r['precision']:<15} b={r['batch']:<4} "
        f"spe={r.get('steps_per_execution', 1):<2} {_fmt_int(r['images_per_s']):>9} img/s "
        f"{r['step_ms']:8.2f} ms/step  MFU {mfu:>6}  compile {r['compile_s']:.1f}s"
    )


def format_table(rows: list[dict]) -> str:
    """A short Markdown table of rows (with the H200 anchors and targets when present)."""
    if not rows:
        return "(no rows)"
    anchors = any(r.get("h200_anchor") or r.get("h200_target") for r in rows)
    head = ["path", "variant", "precision", "batch", "spe", "img/s", "ms/step", "MFU", "compile s"]
    mixed = len({(r.get("crop_size"), r.get("width"), r.get("flops_per_image")) for r in rows}) > 1
    if mixed:
        head.insert(1, "crop")
    if any(r.get("vs_synthetic_fit") for r in rows):
        head.append("vs fit")
    if anchors:
        head += ["H200 anchor", "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        variant = r["variant"] + (f" [{r['label']}]" if r.get("label") else "")
        cells = [
            r["path"], variant, "bf16" if r["precision"] == "mixed_bfloat16" else "fp32",
            str(r["batch"]), str(r.get("steps_per_execution", 1)), _fmt_int(r["images_per_s"]),
            f"{r['step_ms']:.2f}", "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%",
            f"{r['compile_s']:.1f}",
        ]
        if mixed:
            cells.insert(1, f"{r.get('crop_size')}" + (f" w{r.get('width')}" if r.get("width") != 1.0 else ""))
        if "vs fit" in head:
            v = r.get("vs_synthetic_fit")
            cells.append("-" if v is None else f"{v:.2f}")
        if anchors:
            cells += [_fmt_int(r.get("h200_anchor")), _fmt_int(r.get("h200_target"))]
        lines.append("| " + " | ".join(cells) + " |")
    r0 = rows[0]
    flops = "; ".join(sorted({f"{r['flops_per_image'] / 1e9:.3g} GFLOP/image at crop {r['crop_size']}, "
                              f"width {r['width']}" for r in rows}))
    lines.append(
        f"\n{r0['backend']} on {r0['device']}, {r0['date']}; model FLOPs {flops}"
        + (f"; MFU vs {r0['peak_tflops']} TFLOP/s ({r0['peak_kind']})" if r0.get("peak_tflops") else "; MFU: peak unknown (--peak-tflops)")
    )
    return "\n".join(lines)


def _csv(text, conv=str):
    if text is None:
        return None
    out = []
    for t in (text if isinstance(text, list) else [text]):
        out += [conv(s) for s in str(t).split(",") if s.strip()]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m reproduce bench",
        description="Training throughput (images/s) and model FLOP utilization; see reproduce/bench.py.",
    )
    p.add_argument("--full", action="store_true", default=None,
                   help="the paper's sizes (227 crops, batches 128 and 512); default on accelerators")
    p.add_argument("--small", dest="full", action="store_false",
                   help="the small CPU configuration (67 crops, width 0.125, batch 8)")
    p.add_argument("--data", default="", help="cached dataset (folder or archive) for the e2e path")
    p.add_argument("--preset", default=None, help="configuration preset (default imagenet: the paper)")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="configuration overrides, as for train")
    p.add_argument("--paths", default=None, help=f"comma-separated, of {', '.join(PATHS)}")
    p.add_argument("--precision", default=None, help="comma-separated: float32,mixed_bfloat16 (default both)")
    p.add_argument("--batch", default=None, help="comma-separated batch sizes")
    p.add_argument("--variant", nargs="*", default=["project"],
                   help="net variants (see Variant): project, lrn=matmul|vjp|bf16, "
                        "towers=grouped|blockdiag|dense, conv1=s2d, no_augment, scan=K, unroll=U; "
                        "join with +")
    p.add_argument("--steps", type=int, default=None, help="timed steps per window")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (the first compiles)")
    p.add_argument("--repeats", type=int, default=None, help="timed windows (median reported)")
    p.add_argument("--steps-per-execution", default="1", help="comma-separated, for fit/e2e")
    p.add_argument("--callbacks", choices=("trainer", "none"), default="trainer",
                   help="fit/e2e with the trainer's callbacks (default) or none")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak TFLOP/s for MFU")
    p.add_argument("--out", default=None,
                   help="JSON output (default $REPRODUCE_RUNS/bench.json, i.e. runs/bench.json; '' for none)")
    p.add_argument("--append", action="store_true", help="add rows to an existing --out")
    p.add_argument("--label", default="", help="a label stored in every row")
    p.add_argument("--time-budget", type=float, default=None, help="stop starting rows after this many seconds")
    p.add_argument("--plan", default=None,
                   help="JSON list of jobs (dicts of reproduce.bench.run arguments) run in this one "
                        "process, in order, into --out; options given here (--small/--full, "
                        "--batch, --steps, --warmup, --repeats, --precision) override the jobs'")
    p.add_argument("--measure-peak", action="store_true", help="time a bf16 matmul first (JAX)")
    p.add_argument("--quiet", action="store_true")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `python -m reproduce bench -- --opt ...`
        argv = argv[1:]
    a = p.parse_args(argv)
    if a.plan:
        return _run_plan(a)
    try:
        rows = run(
            full=a.full, preset=a.preset, overrides=a.overrides, data=a.data,
            paths=_csv(a.paths), precisions=_csv(a.precision), batches=_csv(a.batch, int),
            variants=a.variant, steps=a.steps, warmup=a.warmup, repeats=a.repeats,
            steps_per_execution=_csv(a.steps_per_execution, int) or [1], callbacks=a.callbacks,
            peak=a.peak_tflops, out=_out_arg(a.out), append=a.append, label=a.label,
            time_budget=a.time_budget, verbose=not a.quiet,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.quiet:
        print(format_table(rows))
    return 0 if rows else 1


def _out_arg(value):
    """--out: absent -> "" (the default file), '' -> None (no file), else the path."""
    if value is None:
        return ""
    return value or None


def _run_plan(a) -> int:
    """--plan: every job in one process (XLA's autotuning results are reused across
    jobs), each given what is left of --time-budget; a failing row is recorded in the
    JSON's "errors" and the rest go ahead."""
    try:
        jobs = json.loads(Path(a.plan).read_text())
    except (OSError, ValueError) as e:
        print(f"error: cannot read the plan {a.plan}: {e}", file=sys.stderr)
        return 2
    forced = {}
    if a.full is not None:
        forced["full"] = a.full
    for key, value in (("batches", _csv(a.batch, int)), ("steps", a.steps), ("warmup", a.warmup),
                       ("repeats", a.repeats), ("precisions", _csv(a.precision))):
        if value:
            forced[key] = value
    t0 = time.perf_counter()
    append = a.append
    n = 0
    for i, job in enumerate(jobs):
        kw = dict(job)
        kw.update(forced)
        left = None
        if a.time_budget:
            left = a.time_budget - (time.perf_counter() - t0)
            if left <= 5:
                print(f"[bench] plan: time budget spent before job {i + 1}/{len(jobs)}", flush=True)
                break
        print(f"[bench] plan job {i + 1}/{len(jobs)}: {json.dumps(job)}", flush=True)
        try:
            n += len(run(out=_out_arg(a.out), append=append, time_budget=left, keep_going=True,
                         peak=a.peak_tflops, measure_peak=a.measure_peak and i == 0,
                         verbose=not a.quiet, **kw))
        except Exception as e:  # a job that cannot start (bad arguments, data)
            import traceback

            traceback.print_exc()
            print(f"[bench] plan job {i + 1} failed: {e}", flush=True)
        append = True
    out = _out_arg(a.out)
    if out == "":
        from reproduce import runs as runs_lib

        out = str(runs_lib.default_root() / "bench.json")
    if out and Path(out).exists():
        saved = json.loads(Path(out).read_text())
        print()
        print(format_table(saved.get("rows", [])))
        for err in saved.get("errors", []):
            print(f"error: {err}")
    return 0 if n else 1


if __name__ == "__main__":  # python -m reproduce.bench ARGS
    sys.exit(main())
