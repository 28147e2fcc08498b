"""Where the `cifar10` preset's training step spends its time, and faster forms
of its LocallyConnected2D layers.

    python -m experiments.perf.cifar_local_profile --what net --augment \
        --nets slices_einsum,project,no_local,no_lrn --xla true,false --repeats 7 --steps 8
    python -m experiments.perf.cifar_local_profile --what layer --xla false,true
    python -m experiments.perf.cifar_local_profile --what check   # equivalence

Measurements, with ``reproduce``'s public API only:

``net``
    The preset's net (``reproduce.model.build_model`` on ``get_config("cifar10")``,
    batch 128) compiled exactly as the trainer compiles it
    (``reproduce.train.compile_model``: SGD with momentum, sparse cross-entropy,
    the error metrics, ``jit_compile`` from ``reproduce.devices.xla`` and
    ``train.xla``), timed with ``model.train_on_batch`` on one random batch: the
    net on float 24x24 crops, or with ``--augment`` the trainer's model
    (``reproduce.train.build_training_model``: uint8 32x32 -> Augment -> net).
    Variants of the net are made with ``keras.models.clone_model`` (weights
    kept): other forms of the local layers (``LOCAL_FORMS``: ``project`` is
    reproduce.layers as it is, ``slices_einsum`` the form it had before
    2026-12-05), and ablations (a part removed or replaced: ``no_local``,
    ``no_lrn``, ``no_local_no_lrn``, ``local_as_conv``, ``lrn_portable``) that
    show what each part costs.
``layer``
    One LocallyConnected2D alone (local3: 6x6x64 -> 64, local4: 6x6x64 -> 32,
    batch 128): forward and the gradient w.r.t. input and kernel, in one
    ``tf.function(jit_compile=...)`` (TensorFlow) or ``jax.jit`` (JAX).

``check``
    Each form's output and gradients against the first form's (max |difference|).

Every variant is built and compiled first; then the timed windows run
round-robin (variant A, B, C, A, B, C, ...) so a background load hits all of
them alike; the table gives the median and the spread of the windows' img/s and
the median of the ratios to the reference row within the same round.
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np
from keras import ops

from reproduce.config import get_config, validate
from reproduce.data.pixelstats import compute_stats
from reproduce.layers import LocallyConnected2D, LocalResponseNormalization
from reproduce.model import build_model
from reproduce.train import build_training_model, compile_model

BATCH = 128


# --------------------------------------------------------------------------------------
# Forms of the locally connected layer (same weights, same function)
# --------------------------------------------------------------------------------------


def _out_and_pad(n, k, s, padding):
    """Output length and (before, after) zero padding: TensorFlow's "same"/"valid"."""
    if padding == "valid":
        return (n - k) // s + 1, (0, 0)
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return out, (total // 2, total - total // 2)


def _padded(layer, inputs):
    """(padded input, out_h, out_w) from the layer's public settings."""
    (kh, kw), (sh, sw) = layer.kernel_size, layer.strides
    out_h, pad_h = _out_and_pad(inputs.shape[1], kh, sh, layer.padding)
    out_w, pad_w = _out_and_pad(inputs.shape[2], kw, sw, layer.padding)
    x = inputs
    if pad_h != (0, 0) or pad_w != (0, 0):
        x = ops.pad(x, [[0, 0], list(pad_h), list(pad_w), [0, 0]])
    return x, out_h, out_w


def _taps(layer, x, out_h, out_w, h_axis):
    """The kh*kw strided slices of x along (h_axis, h_axis + 1)."""
    (kh, kw), (sh, sw) = layer.kernel_size, layer.strides
    taps = []
    for di in range(kh):
        for dj in range(kw):
            index = [slice(None)] * len(x.shape)
            index[h_axis] = slice(di, di + sh * (out_h - 1) + 1, sh)
            index[h_axis + 1] = slice(dj, dj + sw * (out_w - 1) + 1, sw)
            taps.append(x[tuple(index)])
    return taps


def _finish(layer, y):
    if layer.use_bias:
        y = y + layer.bias
    return layer.activation(y)


class LocalSlicesEinsum(LocallyConnected2D):
    """The layer as it was before 2026-12-05: the kh*kw strided slices stacked into
    (N, L, K) patches, then ``einsum("nlk,lkf->nlf")``."""

    def call(self, inputs):
        x, out_h, out_w = _padded(self, inputs)
        k = self.kernel.shape[1]
        patches = ops.reshape(ops.stack(_taps(self, x, out_h, out_w, 1), axis=3), (-1, out_h * out_w, k))
        y = ops.einsum("nlk,lkf->nlf", patches, self.kernel)
        return _finish(self, ops.reshape(y, (-1, out_h, out_w, self.filters)))


class LocalPNK(LocallyConnected2D):
    """Patches as now (N, L, K), transposed to (L, N, K), then a batched matmul
    with positions as the batch dimension and the result transposed back."""

    def call(self, inputs):
        x, out_h, out_w = _padded(self, inputs)
        k = self.kernel.shape[1]
        patches = ops.reshape(ops.stack(_taps(self, x, out_h, out_w, 1), axis=3), (-1, out_h * out_w, k))
        y = ops.matmul(ops.transpose(patches, (1, 0, 2)), self.kernel)  # (L, N, F)
        y = ops.reshape(ops.transpose(y, (1, 0, 2)), (-1, out_h, out_w, self.filters))
        return _finish(self, y)


class LocalHWNC(LocallyConnected2D):
    """The input transposed to (H, W, N, C) first, so the patches come out as
    (L, N, K) without a transpose of the 9x larger patch tensor; batched matmul;
    the (L, N, F) result transposed back to (N, H, W, F)."""

    def call(self, inputs):
        x, out_h, out_w = _padded(self, inputs)
        k = self.kernel.shape[1]
        x = ops.transpose(x, (1, 2, 0, 3))  # (H, W, N, C)
        patches = ops.stack(_taps(self, x, out_h, out_w, 0), axis=3)  # (oh, ow, N, kh*kw, C)
        patches = ops.reshape(patches, (out_h * out_w, -1, k))
        y = ops.matmul(patches, self.kernel)  # (L, N, F)
        y = ops.transpose(ops.reshape(y, (out_h, out_w, -1, self.filters)), (2, 0, 1, 3))
        return _finish(self, y)


class LocalEinsumLNF(LocallyConnected2D):
    """The project's patches, einsum writing (L, N, F) (its natural batch-major
    output), then one transpose."""

    def call(self, inputs):
        x, out_h, out_w = _padded(self, inputs)
        k = self.kernel.shape[1]
        patches = ops.reshape(ops.stack(_taps(self, x, out_h, out_w, 1), axis=3), (-1, out_h * out_w, k))
        y = ops.einsum("nlk,lkf->lnf", patches, self.kernel)
        y = ops.reshape(ops.transpose(y, (1, 0, 2)), (-1, out_h, out_w, self.filters))
        return _finish(self, y)


class LocalTapSum(LocallyConnected2D):
    """No patch tensor: one batched matmul per kernel offset (K = in_ch), summed."""

    def call(self, inputs):
        x, out_h, out_w = _padded(self, inputs)
        kh, kw = self.kernel_size
        c = inputs.shape[-1]
        kernel = ops.reshape(self.kernel, (out_h * out_w, kh * kw, c, self.filters))
        y = None
        for t, tap in enumerate(_taps(self, x, out_h, out_w, 1)):
            term = ops.einsum("nlc,lcf->nlf", ops.reshape(tap, (-1, out_h * out_w, c)), kernel[:, t])
            y = term if y is None else y + term
        return _finish(self, ops.reshape(y, (-1, out_h, out_w, self.filters)))


class LocalTFPatches(LocallyConnected2D):
    """tf.image.extract_patches (TensorFlow only; its (kh, kw, c) order is the
    kernel's) and the project's einsum."""

    def call(self, inputs):
        import tensorflow as tf

        x, out_h, out_w = _padded(self, inputs)
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        patches = tf.image.extract_patches(x, [1, kh, kw, 1], [1, sh, sw, 1], [1, 1, 1, 1], "VALID")
        patches = ops.reshape(patches, (-1, out_h * out_w, self.kernel.shape[1]))
        y = ops.einsum("nlk,lkf->nlf", patches, self.kernel)
        return _finish(self, ops.reshape(y, (-1, out_h, out_w, self.filters)))


class LocalKerasPatches(LocallyConnected2D):
    """keras.ops.image.extract_patches (a convolution with an identity kernel)."""

    def call(self, inputs):
        x, out_h, out_w = _padded(self, inputs)
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        patches = ops.image.extract_patches(x, (kh, kw), strides=(sh, sw), padding="valid")
        patches = ops.reshape(patches, (-1, out_h * out_w, self.kernel.shape[1]))
        y = ops.einsum("nlk,lkf->nlf", patches, self.kernel)
        return _finish(self, ops.reshape(y, (-1, out_h, out_w, self.filters)))


def _tap_index(layer, out_h, out_w, width):
    """Flat (row * width + col) indices into the padded input of every tap of every
    position, position-major then (kh, kw): shape (L * kh * kw,)."""
    (kh, kw), (sh, sw) = layer.kernel_size, layer.strides
    i = np.arange(out_h)[:, None, None, None] * sh + np.arange(kh)[None, None, :, None]
    j = np.arange(out_w)[None, :, None, None] * sw + np.arange(kw)[None, None, None, :]
    return (i * width + j).reshape(-1).astype("int32")


class LocalGather(LocallyConnected2D):
    """Patches by one gather of the flattened padded input (N, Hp*Wp, C) with
    precomputed indices, then the project's einsum."""

    def call(self, inputs):
        x, out_h, out_w = _padded(self, inputs)
        hp, wp, c = x.shape[1], x.shape[2], x.shape[3]
        idx = _tap_index(self, out_h, out_w, wp)
        patches = ops.take(ops.reshape(x, (-1, hp * wp, c)), idx, axis=1)
        patches = ops.reshape(patches, (-1, out_h * out_w, self.kernel.shape[1]))
        y = ops.einsum("nlk,lkf->nlf", patches, self.kernel)
        return _finish(self, ops.reshape(y, (-1, out_h, out_w, self.filters)))


class LocalGatherPNK(LocallyConnected2D):
    """The input as (Hp*Wp, N, C), one gather of the taps along the first axis, a
    transpose to (L, N, kh*kw*C) and a batched matmul with positions as the batch."""

    def call(self, inputs):
        x, out_h, out_w = _padded(self, inputs)
        hp, wp, c = x.shape[1], x.shape[2], x.shape[3]
        kk = self.kernel_size[0] * self.kernel_size[1]
        idx = _tap_index(self, out_h, out_w, wp)
        xt = ops.reshape(ops.transpose(x, (1, 2, 0, 3)), (hp * wp, -1, c))
        patches = ops.reshape(ops.take(xt, idx, axis=0), (out_h * out_w, kk, -1, c))
        patches = ops.reshape(ops.transpose(patches, (0, 2, 1, 3)), (out_h * out_w, -1, kk * c))
        y = ops.matmul(patches, self.kernel)  # (L, N, F)
        y = ops.reshape(ops.transpose(y, (1, 0, 2)), (-1, out_h, out_w, self.filters))
        return _finish(self, y)


LOCAL_FORMS = {
    "project": LocallyConnected2D,  # reproduce.layers as it is now
    "slices_einsum": LocalSlicesEinsum,
    "pnk": LocalPNK,
    "hwnc": LocalHWNC,
    "einsum_lnf": LocalEinsumLNF,
    "tapsum": LocalTapSum,
    "tf_patches": LocalTFPatches,
    "keras_patches": LocalKerasPatches,
    "gather": LocalGather,
    "gather_pnk": LocalGatherPNK,
}


# --------------------------------------------------------------------------------------
# Nets
# --------------------------------------------------------------------------------------


class PortableLRN(LocalResponseNormalization):
    """The project's LRN (same settings, same function) computed with keras.ops on
    every backend, as reproduce.layers does off TensorFlow: the windowed sum of
    squares over channels as a 1D average pool of the zero-padded squares."""

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        r, channels = self.size // 2, x.shape[-1]
        sq = ops.pad(ops.square(x), [[0, 0]] * 3 + [[r, r]])
        rows = ops.reshape(sq, (-1, channels + 2 * r, 1))
        total = ops.average_pool(rows, self.size, strides=1, padding="valid") * float(self.size)
        denom = ops.power(self.k + self.effective_alpha * ops.reshape(total, ops.shape(x)), self.beta)
        return ops.cast(x / denom, self.compute_dtype)


def preset_config(overrides: dict | None = None):
    cfg = get_config("cifar10")
    for key, value in (overrides or {}).items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    return validate(cfg)


def project_net(cfg):
    return build_model(cfg.model, cfg.data.crop_size, 10, cfg.train.weight_decay, cfg.train.seed)


def _clone(net, swap):
    """clone_model with `swap(layer)` -> a new layer or None (keep), weights copied
    where the shapes still match."""

    def clone_fn(layer):
        new = swap(layer)
        return new if new is not None else layer.__class__.from_config(layer.get_config())

    clone = keras.models.clone_model(net, clone_function=clone_fn)
    for old in net.layers:
        try:
            new = clone.get_layer(old.name)
        except ValueError:
            continue
        ws = old.get_weights()
        if [w.shape for w in ws] == [w.shape for w in new.get_weights()]:
            new.set_weights(ws)
    return clone


def _as_conv(layer):
    """A Conv2D of the same filters/window/activation (shared weights): same output shape."""
    c = layer.get_config()
    return keras.layers.Conv2D(
        c["filters"], c["kernel_size"], padding=c["padding"], activation=c["activation"], name=c["name"]
    )


def net_variant(name: str, base):
    """(net, description). Names: a LOCAL_FORMS key (that form of both local
    layers), or an ablation."""
    if name in LOCAL_FORMS:
        cls = LOCAL_FORMS[name]
        return _clone(
            base, lambda layer: cls.from_config(layer.get_config()) if isinstance(layer, LocallyConnected2D) else None
        ), f"local layers: {cls.__name__}"
    if name == "no_lrn":
        return _clone(
            base,
            lambda layer: (
                keras.layers.Identity(name=layer.name) if isinstance(layer, LocalResponseNormalization) else None
            ),
        ), "lrn1, lrn2 -> identity"
    if name == "lrn_portable":
        return _clone(
            base,
            lambda layer: (
                PortableLRN.from_config(layer.get_config()) if isinstance(layer, LocalResponseNormalization) else None
            ),
        ), "lrn1, lrn2: the portable keras.ops LRN instead of TensorFlow's fused kernel"
    if name == "local_as_conv":
        return _clone(
            base, lambda layer: _as_conv(layer) if isinstance(layer, LocallyConnected2D) else None
        ), "local3, local4 -> Conv2D 3x3 (same shapes, shared weights)"
    if name == "no_local":
        # local3 -> identity (64 -> 64); local4 -> 1x1 conv 64 -> 32 (keeps fc10's shape).
        def swap(layer):
            if layer.name == "local3":
                return keras.layers.Identity(name=layer.name)
            if layer.name == "local4":
                return keras.layers.Conv2D(layer.filters, 1, name=layer.name)
            return None

        return _clone(base, swap), "local3 -> identity, local4 -> 1x1 conv"
    if name == "no_local_no_lrn":
        net, _ = net_variant("no_local", base)
        net, _ = net_variant("no_lrn", net)
        return net, "no_local and no_lrn"
    raise ValueError(f"unknown net variant {name!r}")


def time_nets(names, xla_modes, repeats, steps, warmup, seed=0, augment=False):
    """augment=False: the net on float 24x24 crops; True: the trainer's model
    (``reproduce.train.build_training_model``: uint8 32x32 -> Augment -> net)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, BATCH).astype(np.int32)
    if augment:
        x = rng.integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8)
        stats = compute_stats(x[:64])
    else:
        x = rng.standard_normal((BATCH, 24, 24, 3), np.float32)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        x, y = tf.constant(x), tf.constant(y)
    base = project_net(preset_config())
    runs = []
    for xla in xla_modes:
        cfg = preset_config({"train.xla": xla})
        for name in names:
            net, what = net_variant(name, base)
            if augment:
                net, _ = build_training_model(cfg, stats, 10, build_net=lambda *args, net=net: net)
            compile_model(net, cfg)
            t0 = time.perf_counter()
            net.train_on_batch(x, y)
            first = time.perf_counter() - t0
            for _ in range(warmup):
                net.train_on_batch(x, y)
            label = name if len(xla_modes) == 1 else f"{name} (xla={xla})"
            runs.append(dict(name=label, what=what, net=net, first_s=first, rates=[]))
            print(f"built {label}: first step {first:.1f}s", flush=True)
    for r in range(repeats):
        for run in runs:
            t0 = time.perf_counter()
            for _ in range(steps):
                logs = run["net"].train_on_batch(x, y)
            run["rates"].append(steps * BATCH / (time.perf_counter() - t0))
        print(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{u['name']} {u['rates'][-1]:.0f}" for u in runs), flush=True)
        del logs
    return runs


# --------------------------------------------------------------------------------------
# One layer alone
# --------------------------------------------------------------------------------------

LAYER_SHAPES = {"local3": (64, 64), "local4": (64, 32)}  # (in_ch, filters) at 6x6


def _layer_step(layer, x, jit):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def f(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
                loss = tf.reduce_sum(y * y)
            return tape.gradient(loss, [x, layer.kernel.value])

        fn = tf.function(f, jit_compile=jit)
        xd = tf.constant(x)
        return lambda: [g.numpy() for g in fn(xd)][0]
    if backend == "jax":
        import jax

        kv = layer.kernel.value
        bv = layer.bias.value

        def f(x, k, b):
            y, _ = layer.stateless_call([k, b], [], x)
            return ops.sum(y * y)

        g = jax.jit(jax.grad(f, argnums=(0, 1)))
        xd = jax.device_put(x)
        return lambda: jax.block_until_ready(g(xd, kv, bv))
    raise ValueError(backend)


def time_layers(forms, jit, repeats, steps, warmup):
    rng = np.random.default_rng(1)
    runs = []
    for lname, (cin, filters) in LAYER_SHAPES.items():
        x = rng.standard_normal((BATCH, 6, 6, cin), np.float32)
        for form in forms:
            cls = LOCAL_FORMS[form]
            layer = cls(filters, 3, padding="same", activation="relu", bias_initializer="ones", name=lname)
            layer.build(x.shape)
            fn = _layer_step(layer, x, jit)
            for _ in range(warmup + 1):
                fn()
            runs.append(dict(name=f"{lname} {form}", fn=fn, rates=[], ref=len(runs) - len(runs) % len(forms)))
    for _ in range(repeats):
        for run in runs:
            t0 = time.perf_counter()
            for _ in range(steps):
                run["fn"]()
            run["rates"].append((time.perf_counter() - t0) / steps * 1e3)  # ms per fwd+bwd
    return runs


def check_forms(forms):
    """Max |difference| of each form's output and gradients (input, kernel, bias)
    from the first form's, same weights, float32; local3/local4 shapes and a
    strided, unpadded case. Returns rows (form, case, out, d_x, d_kernel, d_bias)."""
    rows = []
    cases = {"local3": (6, 64, 64, 1, "same"), "local4": (6, 64, 32, 1, "same"), "s2valid": (7, 3, 4, 2, "valid")}
    rng = np.random.default_rng(2)
    for case, (size, cin, filters, stride, padding) in cases.items():
        x = rng.standard_normal((8, size, size + 1, cin), np.float32)
        g = None
        outs = {}
        for form in forms:
            if form == "tf_patches" and keras.backend.backend() != "tensorflow":
                continue
            layer = LOCAL_FORMS[form](filters, 3, strides=stride, padding=padding, activation="relu")
            layer.build(x.shape)
            if form == forms[0]:
                weights = [rng.standard_normal(w.shape, np.float32) * 0.05 for w in layer.get_weights()]
            layer.set_weights(weights)
            out, grads = _value_and_grads(layer, x, g)
            if g is None:
                g = rng.standard_normal(out.shape, np.float32)
                out, grads = _value_and_grads(layer, x, g)
            outs[form] = (out, grads)
            ref = outs[forms[0]]
            rows.append(
                (form, case, float(np.abs(out - ref[0]).max()))
                + tuple(float(np.abs(a - b).max()) for a, b in zip(grads, ref[1]))
            )
    return rows


def _value_and_grads(layer, x, g):
    """layer(x) and the gradients of sum(layer(x) * g) w.r.t. (x, kernel, bias)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xd = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xd)
            y = layer(xd)
            loss = tf.reduce_sum(y * (g if g is not None else 0.0))
        grads = tape.gradient(loss, [xd, layer.kernel.value, layer.bias.value])
        return y.numpy(), [v.numpy() for v in grads]
    import jax

    def f(x, k, b):
        y, _ = layer.stateless_call([k, b], [], x)
        return ops.sum(y * (g if g is not None else 0.0)), y

    (_, y), grads = jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(x, layer.kernel.value, layer.bias.value)
    return np.asarray(y), [np.asarray(v) for v in grads]


# --------------------------------------------------------------------------------------


def _table(runs, unit, higher_better=True, ref_of=lambda run: 0):
    """Median and range of each row's windows, and its speed relative to the row
    ref_of(run) (an index): the ratio of the medians and the median of the ratios
    of windows from the same round (paired, so a load change hits both)."""
    lines = [
        f"| variant | median {unit} | min-max | speed vs ref (medians) | paired |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        ref = runs[ref_of(run)]["rates"]
        med = statistics.median(run["rates"])
        pairs = [a / b if higher_better else b / a for a, b in zip(run["rates"], ref)]
        ratio = med / statistics.median(ref) if higher_better else statistics.median(ref) / med
        lo, hi = min(run["rates"]), max(run["rates"])
        lines.append(
            f"| {run['name']} | {med:.1f} | {lo:.1f}-{hi:.1f} | {ratio:.2f}x | {statistics.median(pairs):.2f}x |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.perf.cifar_local_profile", description=__doc__)
    p.add_argument("--what", choices=("net", "layer", "both", "check"), default="both")
    p.add_argument("--nets", default="slices_einsum,project,no_local,no_lrn,no_local_no_lrn")
    p.add_argument("--layer-forms", default="slices_einsum,project,pnk,hwnc,tf_patches,gather")
    p.add_argument("--xla", default="true", help="comma list of true/false (net: train.xla; layer: jit_compile)")
    p.add_argument("--augment", action="store_true", help="net: time the trainer's uint8 -> Augment -> net model")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args(argv)
    xla_modes = [v.strip().lower() in ("1", "true", "yes") for v in a.xla.split(",")]
    print(f"backend {keras.backend.backend()}, batch {BATCH}", flush=True)
    if a.what == "check":
        print("| form | case | out | d_x | d_kernel | d_bias |\n|---|---|---|---|---|---|")
        for row in check_forms(a.layer_forms.split(",")):
            print("| " + " | ".join(row[:2]) + " | " + " | ".join(f"{v:.1e}" for v in row[2:]) + " |")
        return 0
    if a.what in ("net", "both"):
        runs = time_nets(a.nets.split(","), xla_modes, a.repeats, a.steps, a.warmup, augment=a.augment)
        what = "uint8 32x32 -> Augment -> net" if a.augment else "the net on float 24x24"
        print(f"\ntrain step, img/s ({what}; model.train_on_batch, compiled as reproduce.train does)")
        print(_table(runs, "img/s"))
        for run in runs:
            print(f"  {run['name']}: {run['what']}; first step {run['first_s']:.1f}s")
    if a.what in ("layer", "both"):
        for jit in xla_modes:
            runs = time_layers(a.layer_forms.split(","), jit, a.repeats, a.steps * 3, a.warmup)
            print(f"\none layer, forward + gradient (x, kernel), ms per call, batch {BATCH}, jit={jit}")
            print(_table(runs, "ms", higher_better=False, ref_of=lambda run: run["ref"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
