"""The networks: the paper's two-tower ImageNet net and two CIFAR-10 nets.

* :func:`alexnet`: Krizhevsky, Sutskever & Hinton 2012, §3 and Figure 2, with
  every ablation switch of ``reproduce.config.ModelConfig``.
* :func:`cifar_fig1`: the "four-layer" CIFAR-10 net of Figure 1 (§3.1, ReLU vs
  tanh), after cuda-convnet's ``layers-18pct.cfg``.
* :func:`cifar_local`: the CIFAR-10 net of the §3.3 LRN claim (13% -> 11%), after
  cuda-convnet's ``layers-conv-local-11pct.cfg``.
* :func:`build_model`: a ``ModelConfig`` to a ``keras.Model``.
* :func:`inference_model`: a trained net as a run keeps it (``model.keras``).

All are Keras functional models with stable layer names. Inputs are float images,
channels last, mean-subtracted, on the 0-255 pixel scale (§2); outputs are
logits (the loss applies the softmax), float32 also under ``mixed_bfloat16``.
"""

from __future__ import annotations

import math
import random

import keras

from reproduce.augment import Augment
from reproduce.config import check_value
from reproduce.layers import (
    HostConstant,
    HostNormal,
    LocallyConnected2D,
    LocalResponseNormalization,
)

# Suffixes of the two towers' layer names (§3.2: one tower per GPU).
TOWER_SUFFIXES = ("_a", "_b")

# The smallest input the paper's layer stack accepts: 67 -> conv1 15 -> pool1 7 ->
# pool2 3 -> pool5 1. One pixel less and pool5 gets a 2x2 map, smaller than its
# 3x3 window.
MIN_IMAGE_SIZE = 67


# §5: "We initialized the neuron biases in the second, fourth, and fifth
# convolutional layers, as well as in the fully-connected hidden layers, with the
# constant 1." Caffe's reference model uses 0.1 there, because with 1 its loss did
# not fall. "zero" drops §5's choice (the fair tests of that choice start from it).
POSITIVE_BIAS = {"paper": 1.0, "caffe": 0.1, "zero": 0.0}

# Kernels per tower (§3.5, Fig. 2). Two towers: 48+48, 128+128, 192+192, 192+192,
# 128+128. One tower (§3.2): half of each, except conv5, which keeps 256.
_TWO_TOWER_KERNELS = (48, 128, 192, 192, 128)
_ONE_TOWER_KERNELS = (48, 128, 192, 192, 256)
_FC_UNITS = 4096

# cuda-convnet's initW (std of the zero-mean Gaussian) per layer of its CIFAR nets.
_CIFAR_INIT_STD = {
    "conv1": 1e-4,
    "conv2": 1e-2,
    "conv3": 1e-2,
    "local3": 0.04,
    "local4": 0.04,
    "fc10": 1e-2,
}
# layers-conv-local-11pct's cross-map normalization: `type=cmrnorm`, size=9, and
# from layer-params-conv-local-11pct.cfg scale=0.001, pow=0.75. cuda-convnet's
# parser divides scale by size and its kernel adds 1, so this is our
# `cuda-convnet` convention with k=1.
CIFAR_LRN = dict(lrn_size=9, lrn_k=1.0, lrn_alpha=1e-3, lrn_beta=0.75, lrn_convention="cuda-convnet")


# --------------------------------------------------------------------------------------
# Validation and small helpers
# --------------------------------------------------------------------------------------


# The builders' arguments that are configuration fields, {argument: dotted key}:
# their allowed values are declared once, on the fields of reproduce.config.
_CHECKED = {
    "activation": "model.activation",
    "lrn_convention": "model.lrn_convention",
    "lrn_size": "model.lrn_size",
    "pooling": "model.pooling",
    "dropout": "model.dropout",
    "width": "model.width",
    "init": "model.init",
    "num_classes": "model.num_classes",
    "weight_decay": "train.weight_decay",
}


def _check_common(**kwargs):
    """ValueError (a ConfigError) naming the argument, its value and what is allowed."""
    for name, value in kwargs.items():
        check_value(_CHECKED[name], value, name, optional=False)


def _check_image_size(image_size) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size={image_size!r} must be a positive integer")


def _too_small(arch, image_size, layer, n, k, smallest) -> ValueError:
    return ValueError(
        f"image_size={image_size} is too small for {arch}: {layer} would get a {n}x{n} "
        f"map, smaller than its {k}x{k} window; the smallest valid input is {smallest}"
    )


def _scaled(n: int, width: float) -> int:
    """n * width rounded half up, at least 1."""
    return max(1, int(math.floor(n * width + 0.5)))


class _Init:
    """Seeded initializers and regularizers, one distinct seed per layer.

    The same `seed` gives the same weights on every backend (the draws are
    NumPy's, see reproduce.layers.HostNormal). seed=None takes a seed from
    Python's `random`, which keras.utils.set_random_seed also seeds.
    """

    def __init__(self, seed, weight_decay):
        self.seed = random.randint(0, 2**31 - 2) if seed is None else int(seed)
        self.weight_decay = float(weight_decay)
        self._count = 0

    def next_seed(self):
        self._count += 1
        return (self.seed * 1_000_003 + self._count) % (2**31 - 1)

    def normal(self, std):
        return HostNormal(stddev=std, seed=self.next_seed())

    @staticmethod
    def constant(value):
        return HostConstant(value)

    def decay(self):
        # The paper's update (§5) is v <- 0.9 v - 0.0005 eps w - eps grad: the decay
        # term's gradient is weight_decay * w, which is L2(weight_decay / 2) since
        # Keras' L2(l) adds l * sum(w**2). Kernels only: cuda-convnet puts the
        # weight-decay coefficient `wc` on weights, never on biases.
        return keras.regularizers.L2(self.weight_decay / 2) if self.weight_decay > 0 else None


def _lrn(x, name, size, k, alpha, beta, convention):
    return LocalResponseNormalization(size=size, k=k, alpha=alpha, beta=beta, convention=convention, name=name)(x)


# --------------------------------------------------------------------------------------
# AlexNet
# --------------------------------------------------------------------------------------


def _alexnet_sizes(image_size: int) -> dict:
    """Feature-map side after each stage; raises ValueError naming the layer that fails."""
    sizes = {}
    n = image_size
    if n < 11:
        raise _too_small("alexnet", image_size, "conv1", n, 11, MIN_IMAGE_SIZE)
    n = (n - 11) // 4 + 1
    sizes["conv1"] = n
    for pool, after in (("pool1", "conv2"), ("pool2", "conv3"), ("pool5", None)):
        if n < 3:
            raise _too_small("alexnet", image_size, pool, n, 3, MIN_IMAGE_SIZE)
        n = (n - 3) // 2 + 1
        sizes[pool] = n
        if after:
            sizes[after] = n
    sizes["conv4"] = sizes["conv5"] = sizes["conv3"]
    return sizes


def _alexnet_pool(x, pooling, suffix, index):
    """Max pooling after lrn1, lrn2 and conv5 (§3.4).

    `overlap` is the paper's 3x3 stride 2 (s=2 < z=3). `non_overlap` is 2x2
    stride 2 with the same output size, so the two nets differ only in the
    pooling (the paper's comparison "produces output of equivalent dimensions").
    Both are valid-mode. On an odd map 2m+1 both give m. On an even map 2m, 3x3/2
    gives m-1 and never reads the last row and column, while 2x2/2 gives m; so the
    last row and column, the pixels the overlapping pool ignores, are cropped
    (layer `crop<i><suffix>`) before the 2x2 pool.
    """
    name = f"pool{index}{suffix}"
    if pooling == "overlap":
        return keras.layers.MaxPooling2D(3, strides=2, padding="valid", name=name)(x)
    if x.shape[1] % 2 == 0:
        x = keras.layers.Cropping2D(((0, 1), (0, 1)), name=f"crop{index}{suffix}")(x)
    return keras.layers.MaxPooling2D(2, strides=2, padding="valid", name=name)(x)


def alexnet(
    image_size: int = 227,
    num_classes: int = 1000,
    *,
    activation: str = "relu",
    lrn: bool = True,
    lrn_convention: str = "paper",
    lrn_size: int = 5,
    lrn_k: float = 2.0,
    lrn_alpha: float = 1e-4,
    lrn_beta: float = 0.75,
    pooling: str = "overlap",
    dropout: float = 0.5,
    towers: int = 2,
    width: float = 1.0,
    init: str = "paper",
    weight_decay: float = 0.0,
    seed=None,
    name: str = "alexnet",
) -> keras.Model:
    """The paper's ImageNet network (§3.5, Figure 2). Defaults are the paper.

    Input ``image_size x image_size x 3`` floats, mean-subtracted, 0-255 scale;
    output ``num_classes`` logits (``fc8``; float32 also under mixed precision).

    **Input size 227, not 224.** §3.5 and Figure 2 say the input is 224x224x3
    and that conv1 (96 kernels of 11x11x3, stride 4) gives 55x55 maps. Without
    padding (224 - 11)/4 + 1 = 54.25; 227 is the input size for which an
    unpadded 11x11 stride-4 convolution gives exactly 55 (Caffe's reference
    model made the same choice). The smallest input accepted is
    ``MIN_IMAGE_SIZE`` = 67 (pool5 then gives 1x1).

    Layers (two towers; ``t`` is ``_a`` or ``_b``)::

        conv1_t  48@11x11/4 valid -> act -> lrn1_t -> pool1_t 3x3/2      55 -> 27 at 227
        conv2_t 128@5x5 pad 2    -> act -> lrn2_t -> pool2_t 3x3/2      27 -> 13
        concat3 (both towers)                                          (cross-talk)
        conv3_t 192@3x3 pad 1 -> act, each on concat3                   13
        conv4_t 192@3x3 pad 1 -> act, own tower                         13
        conv5_t 128@3x3 pad 1 -> act -> pool5_t 3x3/2                    13 -> 6
        concat5 -> flatten -> fc6 4096 -> act -> drop6
                           -> fc7 4096 -> act -> drop7 -> fc8 num_classes

    **Towers (§3.2, Fig. 2).** The paper splits the kernels between two GPUs,
    which communicate only in certain layers: "the kernels of layer 3 take input
    from all kernel maps in layer 2", while conv2, conv4 and conv5 see only
    their own GPU's maps. Here each tower is explicit layers with suffixes
    ``TOWER_SUFFIXES`` (not ``Conv2D(groups=2)``), so the towers can be placed
    on devices by name (:func:`tower_layers`). conv3 is ``conv3_a`` and
    ``conv3_b`` with 192 kernels each on the concatenation of both towers:
    mathematically one 384-kernel conv3 on the concatenation, but split the way
    the paper computes it. The fully connected layers are single layers: in the
    paper each GPU holds half of fc6's and fc7's neurons, each connected to all
    of the previous layer's outputs, which is one dense layer. conv1 of both
    towers sees the whole image. Parameter count for 1000 classes: 60,965,224
    ("60 million", §1).

    **One tower** (``towers=1``), the one-GPU net of §3.2: "half as many kernels
    in each convolutional layer", except that "the one-GPU net actually has the
    same number of kernels as the two-GPU net in the final convolutional layer
    ... we did not halve the size of the final convolutional layer (nor the
    fully-connected layers which follow)": 48, 128, 192, 192, 256 kernels,
    fc 4096, 4096. Layer names have no suffix (``conv1``, ``lrn1``, ...).

    Args:
        activation: ``relu`` (§3.1) or ``tanh``, in every hidden layer.
        lrn, lrn_*: §3.3 response normalization after conv1 and conv2 (after the
            activation, before pooling, §3.5); see
            :class:`reproduce.layers.LocalResponseNormalization` for the
            ``paper``/``cuda-convnet`` conventions. ``lrn=False`` removes the
            ``lrn*`` layers and nothing else.
        pooling: ``overlap`` (3x3 stride 2, §3.4) or ``non_overlap`` (2x2
            stride 2, same map sizes; see ``_alexnet_pool``).
        dropout: rate of ``drop6``/``drop7`` after fc6 and fc7 (§4.2); 0 keeps
            the layers as identities so names stay stable.
        towers: 2 (§3.2, the paper's net) or 1 (the one-GPU comparison net).
        width: multiplies every convolution's kernels (per tower) and the fc6/fc7
            units, rounded half up, at least 1; for reduced CPU runs. 1.0 is the
            paper. fc8 keeps ``num_classes``.
        init: ``paper`` (§5): weights N(0, 0.01); biases 1 in conv2, conv4,
            conv5, fc6, fc7 and 0 elsewhere. ``caffe``: the same weights with
            those biases 0.1, as in Caffe's reference model, whose loss did not
            fall with 1.
        weight_decay: the paper's 0.0005 (§5) is ``weight_decay=5e-4``. Kernels
            of every conv and dense layer get ``L2(weight_decay / 2)``, whose
            gradient is ``weight_decay * w``, the paper's update
            ``v <- 0.9 v - 0.0005 eps w - eps grad``. Biases are not decayed:
            cuda-convnet's layer definitions put the weight-decay coefficient on
            weights only.
        seed: the same seed gives the same initial weights, on every backend
            (they are drawn with NumPy: ``reproduce.layers.HostNormal``), and
            the same dropout masks; None follows ``keras.utils.set_random_seed``.

    Raises:
        ValueError naming the argument, its value and the allowed values; for an
        input that is too small, the layer whose map would be empty.
    """
    _check_image_size(image_size)
    _check_common(
        num_classes=num_classes,
        activation=activation,
        lrn_convention=lrn_convention,
        lrn_size=lrn_size,
        pooling=pooling,
        dropout=dropout,
        width=width,
        init=init,
        weight_decay=weight_decay,
    )
    check_value("model.towers", towers, "towers")
    _alexnet_sizes(image_size)  # raises for inputs that are too small

    mk = _Init(seed, weight_decay)
    kernels = [_scaled(n, width) for n in (_TWO_TOWER_KERNELS if towers == 2 else _ONE_TOWER_KERNELS)]
    fc_units = _scaled(_FC_UNITS, width)
    suffixes = TOWER_SUFFIXES if towers == 2 else ("",)
    positive = POSITIVE_BIAS[init]

    def conv(x, filters, size, stride, padding, name, bias):
        return keras.layers.Conv2D(
            filters,
            size,
            strides=stride,
            padding=padding,
            activation=activation,
            kernel_initializer=mk.normal(0.01),
            bias_initializer=mk.constant(bias),
            kernel_regularizer=mk.decay(),
            name=name,
        )(x)

    def dense(x, units, name, bias, act, dtype=None):
        return keras.layers.Dense(
            units,
            activation=act,
            kernel_initializer=mk.normal(0.01),
            bias_initializer=mk.constant(bias),
            kernel_regularizer=mk.decay(),
            name=name,
            dtype=dtype,
        )(x)

    def norm(x, name):
        if not lrn:
            return x
        return _lrn(x, name, lrn_size, lrn_k, lrn_alpha, lrn_beta, lrn_convention)

    def merge(xs, name):
        return keras.layers.Concatenate(axis=-1, name=name)(xs) if len(xs) > 1 else xs[0]

    inputs = keras.Input((image_size, image_size, 3), name="image")

    # Layer 1 (§3.5): 96 kernels of 11x11x3, stride 4, on the whole image in both
    # towers; response-normalized and max-pooled.
    x = []
    for t in suffixes:
        h = conv(inputs, kernels[0], 11, 4, "valid", f"conv1{t}", 0.0)
        h = norm(h, f"lrn1{t}")
        x.append(_alexnet_pool(h, pooling, t, 1))

    # Layer 2: 256 kernels of 5x5x48, each tower on its own layer-1 maps only.
    # "Same" padding is the 2-pixel padding that keeps 27x27.
    for i, t in enumerate(suffixes):
        h = conv(x[i], kernels[1], 5, 1, "same", f"conv2{t}", positive)
        h = norm(h, f"lrn2{t}")
        x[i] = _alexnet_pool(h, pooling, t, 2)

    # Layer 3: 384 kernels of 3x3x256 connected to all layer-2 maps of both
    # towers: the only cross-talk between the convolutional towers (§3.2).
    both = merge(x, "concat3")
    x = [conv(both, kernels[2], 3, 1, "same", f"conv3{t}", 0.0) for t in suffixes]

    # Layers 4 and 5: each tower on its own maps; pool5 after conv5.
    x = [conv(h, kernels[3], 3, 1, "same", f"conv4{t}", positive) for h, t in zip(x, suffixes)]
    x = [conv(h, kernels[4], 3, 1, "same", f"conv5{t}", positive) for h, t in zip(x, suffixes)]
    x = [_alexnet_pool(h, pooling, t, 5) for h, t in zip(x, suffixes)]

    # Classifier: fc6 sees both towers; 4096, 4096, then the logits. fc8 computes
    # in float32 so the logits (and the softmax in the loss) are float32 also
    # under mixed_bfloat16.
    h = keras.layers.Flatten(name="flatten")(merge(x, "concat5"))
    h = dense(h, fc_units, "fc6", positive, activation)
    h = keras.layers.Dropout(dropout, seed=mk.next_seed(), name="drop6")(h)
    h = dense(h, fc_units, "fc7", positive, activation)
    h = keras.layers.Dropout(dropout, seed=mk.next_seed(), name="drop7")(h)
    logits = dense(h, num_classes, "fc8", 0.0, None, dtype="float32")
    return keras.Model(inputs, logits, name=name)


def tower_layers(model: keras.Model, tower) -> list[str]:
    """Names of the layers of one tower (``0``/``1``, ``"a"``/``"b"`` or a suffix).

    Empty for a one-tower model. The layers shared by both towers (``image``,
    ``concat3``, ``concat5``, ``flatten`` and the fully connected layers) are in
    neither.
    """
    if isinstance(tower, int) and not isinstance(tower, bool) and 0 <= tower < len(TOWER_SUFFIXES):
        suffix = TOWER_SUFFIXES[tower]
    elif isinstance(tower, str) and ("_" + tower.lstrip("_")) in TOWER_SUFFIXES:
        suffix = "_" + tower.lstrip("_")
    else:
        raise ValueError(f"tower={tower!r} is not allowed; choose 0, 1, 'a', 'b', '_a' or '_b'")
    return [layer.name for layer in model.layers if layer.name.endswith(suffix)]


# --------------------------------------------------------------------------------------
# CIFAR-10 nets (cuda-convnet)
# --------------------------------------------------------------------------------------


def _cifar_pool_size(n: int) -> int:
    # cuda-convnet's pool layer with start=0, outputsX=0: ceil((n - 3) / 2) + 1
    # windows, the last one clipped at the border.
    return -(-(n - 3) // 2) + 1


def _cifar_pool(x, kind, pooling, name):
    """cuda-convnet's 3x3 stride-2 pooling (ceil mode), or 2x2/2 with equal sizes.

    cuda-convnet gives ceil((n-3)/2)+1 outputs, its last window clipped at the
    border: n/2 for even n (32 -> 16 -> 8 -> 4, 24 -> 12 -> 6), (n-1)/2 for odd
    n. Keras' "same" padding reproduces this exactly for even n (its padding
    is one pixel after, ignored by max and left out of the average's count,
    as cuda-convnet's AvgPooler divides by the clipped region's size) and
    "valid" for odd n. The `non_overlap`
    variant, 2x2 stride 2 valid, gives the same sizes for every n >= 2.
    """
    layer = keras.layers.MaxPooling2D if kind == "max" else keras.layers.AveragePooling2D
    if pooling == "non_overlap":
        return layer(2, strides=2, padding="valid", name=name)(x)
    padding = "same" if x.shape[1] % 2 == 0 else "valid"
    return layer(3, strides=2, padding=padding, name=name)(x)


def _cifar_check(arch, image_size, num_pools, kw):
    _check_image_size(image_size)
    _check_common(
        num_classes=kw["num_classes"],
        activation=kw["activation"],
        lrn_convention=kw["lrn_convention"],
        lrn_size=kw["lrn_size"],
        pooling=kw["pooling"],
        dropout=kw["dropout"],
        width=kw["width"],
        init=kw["init"],
        weight_decay=kw["weight_decay"],
    )
    if kw["dropout"] != 0:
        raise ValueError(
            f"dropout={kw['dropout']!r} is not allowed for {arch}: it has no hidden fully "
            "connected layer (dropout is §4.2's regularizer of fc6/fc7); use dropout=0"
        )
    # Every pool needs at least a 2x2 map (ceil mode), so the smallest input is
    # 2**num_pools.
    n = image_size
    for i in range(1, num_pools + 1):
        if n < 2:
            raise ValueError(
                f"image_size={image_size} is too small for {arch}: pool{i} would get a "
                f"{n}x{n} map and needs at least 2x2; the smallest valid input is {2**num_pools}"
            )
        n = _cifar_pool_size(n)


class _CifarLayers:
    """The layer factories both CIFAR-10 nets are written with: cuda-convnet's
    layer types under one set of switches (width, activation, LRN, pooling,
    init), with one seeded initializer per layer in the order they are made."""

    def __init__(self, arch, image_size, num_pools, kw):
        _cifar_check(arch, image_size, num_pools, kw)
        self.kw = kw
        self.mk = _Init(kw["seed"], kw["weight_decay"])
        # The paper's bias rule (§5) names AlexNet's layers; its reason is to give
        # the ReLUs positive inputs. For these nets: the positive constant in every
        # hidden layer after the first, 0 in the first layer and the output layer
        # (AlexNet's conv1 and fc8 are 0 too). cuda-convnet itself initialised all
        # biases to 0.
        self.positive = POSITIVE_BIAS[kw["init"]]

    def _args(self, filters, name, bias):
        return dict(
            filters=_scaled(filters, self.kw["width"]),
            padding="same",
            activation=self.kw["activation"],
            kernel_initializer=self.mk.normal(_CIFAR_INIT_STD[name]),
            bias_initializer=self.mk.constant(bias),
            kernel_regularizer=self.mk.decay(),
            name=name,
        )

    def conv(self, x, filters, name, bias):
        """cuda-convnet's `conv`: 5x5, stride 1, padding 2."""
        return keras.layers.Conv2D(kernel_size=5, **self._args(filters, name, bias))(x)

    def local(self, x, filters, name):
        """cuda-convnet's `local`: 3x3, padding 1, unshared weights."""
        return LocallyConnected2D(kernel_size=3, **self._args(filters, name, self.positive))(x)

    def norm(self, x, name):
        kw = self.kw
        if not kw["lrn"]:
            return x
        return _lrn(x, name, kw["lrn_size"], kw["lrn_k"], kw["lrn_alpha"], kw["lrn_beta"], kw["lrn_convention"])

    def pool(self, x, kind, name):
        return _cifar_pool(x, kind, self.kw["pooling"], name)

    def classifier(self, inputs, h):
        """flatten -> fc10 logits (float32 also under mixed precision) -> the model."""
        h = keras.layers.Flatten(name="flatten")(h)
        logits = keras.layers.Dense(
            self.kw["num_classes"],
            kernel_initializer=self.mk.normal(_CIFAR_INIT_STD["fc10"]),
            bias_initializer=self.mk.constant(0.0),
            kernel_regularizer=self.mk.decay(),
            name="fc10",
            dtype="float32",
        )(h)
        return keras.Model(inputs, logits, name=self.kw["name"])


def cifar_fig1(
    image_size: int = 32,
    num_classes: int = 10,
    *,
    activation: str = "relu",
    lrn: bool = False,
    lrn_convention: str = CIFAR_LRN["lrn_convention"],
    lrn_size: int = CIFAR_LRN["lrn_size"],
    lrn_k: float = CIFAR_LRN["lrn_k"],
    lrn_alpha: float = CIFAR_LRN["lrn_alpha"],
    lrn_beta: float = CIFAR_LRN["lrn_beta"],
    pooling: str = "overlap",
    dropout: float = 0.0,
    width: float = 1.0,
    init: str = "paper",
    weight_decay: float = 0.0,
    seed=None,
    name: str = "cifar_fig1",
) -> keras.Model:
    """The four-layer CIFAR-10 net of Figure 1 (§3.1: ReLU vs tanh).

    After cuda-convnet's ``layers-18pct.cfg`` (Krizhevsky's CIFAR-10 example, 18%
    test error), three convolutional layers and one fully connected layer::

        conv1 32@5x5 pad 2 -> act -> pool1 max 3x3/2      32 -> 16   (24 -> 12)
        conv2 32@5x5 pad 2 -> act -> pool2 avg 3x3/2      16 -> 8    (12 -> 6)
        conv3 64@5x5 pad 2 -> act -> pool3 avg 3x3/2       8 -> 4    (6 -> 3)
        flatten -> fc10 (logits)

    Pooling is cuda-convnet's ceil mode (see ``_cifar_pool``). Parameters at 32
    px, 10 classes: 89,578.

    **Dropped from layers-18pct:** its two ``rnorm`` layers (after pool1 and
    pool2). Figure 1 says "no regularization of any kind was employed", and
    those layers are cuda-convnet's *same-map* (spatial) normalization, not the
    paper's cross-map LRN. ``lrn=True`` puts the paper's cross-map LRN
    (``lrn1``, ``lrn2``) at those positions, with the given constants (by
    default cuda-convnet's CIFAR values, ``CIFAR_LRN``). ``dropout`` must be 0:
    there is no hidden fully connected layer.

    Initial weights are cuda-convnet's ``initW`` (N(0, 1e-4) for conv1, N(0,
    0.01) after); biases follow ``init`` as in :func:`cifar_local`. ``width``
    scales the convolutions. Other arguments as in :func:`alexnet`; there are
    no towers.
    """
    L = _CifarLayers("cifar_fig1", image_size, 3, dict(locals()))
    inputs = keras.Input((image_size, image_size, 3), name="image")
    # cuda-convnet applies conv1's ReLU after pool1; max pooling commutes with
    # any increasing activation (ReLU, tanh), so conv -> act -> pool is the same.
    h = L.conv(inputs, 32, "conv1", 0.0)
    h = L.norm(L.pool(h, "max", "pool1"), "lrn1")
    h = L.conv(h, 32, "conv2", L.positive)
    h = L.norm(L.pool(h, "avg", "pool2"), "lrn2")
    h = L.conv(h, 64, "conv3", L.positive)
    h = L.pool(h, "avg", "pool3")
    return L.classifier(inputs, h)


def cifar_local(
    image_size: int = 24,
    num_classes: int = 10,
    *,
    activation: str = "relu",
    lrn: bool = True,
    lrn_convention: str = CIFAR_LRN["lrn_convention"],
    lrn_size: int = CIFAR_LRN["lrn_size"],
    lrn_k: float = CIFAR_LRN["lrn_k"],
    lrn_alpha: float = CIFAR_LRN["lrn_alpha"],
    lrn_beta: float = CIFAR_LRN["lrn_beta"],
    pooling: str = "overlap",
    dropout: float = 0.0,
    width: float = 1.0,
    init: str = "paper",
    weight_decay: float = 0.0,
    seed=None,
    name: str = "cifar_local",
) -> keras.Model:
    """The CIFAR-10 net of the §3.3 claim (11% test error with LRN, 13% without).

    After cuda-convnet's ``layers-conv-local-11pct.cfg`` (Krizhevsky's release;
    24x24 crops of the 32x32 images)::

        conv1  64@5x5 pad 2 -> act -> pool1 max 3x3/2 -> lrn1     24 -> 12
        conv2  64@5x5 pad 2 -> act -> lrn2 -> pool2 max 3x3/2     12 -> 6
        local3 64@3x3 pad 1 -> act   (LocallyConnected2D)          6
        local4 32@3x3 pad 1 -> act   (LocallyConnected2D)          6
        flatten -> fc10 (logits)

    Parameters at 24 px, 10 classes: 2,112,970, with or without LRN
    (``lrn=False`` removes ``lrn1`` and ``lrn2`` and changes nothing else).

    **LRN constants.** The release uses cross-map normalization
    (``type=cmrnorm``) with size=9, scale=0.001, pow=0.75
    (``layer-params-conv-local-11pct.cfg``); cuda-convnet divides scale by size
    and adds 1, i.e. the ``cuda-convnet`` convention with k=1, alpha=0.001,
    beta=0.75, size 9. These (``CIFAR_LRN``) are this function's defaults.
    :func:`build_model` passes the ``ModelConfig`` values instead, so a config
    should set them to reproduce the released net.

    Pooling is cuda-convnet's ceil mode (see ``_cifar_pool``). Initial weights
    are the release's ``initW``: N(0, 1e-4) conv1, N(0, 0.01) conv2 and fc10,
    N(0, 0.04) local3/local4. The release starts every bias at 0; here
    ``init`` sets the paper's (1, §5) or Caffe's (0.1) positive bias in every
    hidden layer after the first (conv2, local3, local4) and 0 in conv1 and
    fc10, so the `bias_init` ablation means the same thing on every net.
    cuda-convnet's per-layer weight decay (0 on conv1/conv2, 0.004 on the
    local layers, 0.01 on fc10) is replaced by one ``weight_decay`` on every
    kernel. ``width`` scales conv and local layers. ``dropout`` must be 0.
    """
    L = _CifarLayers("cifar_local", image_size, 2, dict(locals()))
    inputs = keras.Input((image_size, image_size, 3), name="image")
    h = L.conv(inputs, 64, "conv1", 0.0)
    h = L.norm(L.pool(h, "max", "pool1"), "lrn1")
    h = L.norm(L.conv(h, 64, "conv2", L.positive), "lrn2")
    h = L.pool(h, "max", "pool2")
    h = L.local(h, 64, "local3")
    h = L.local(h, 32, "local4")
    return L.classifier(inputs, h)


# --------------------------------------------------------------------------------------
# From the configuration tree
# --------------------------------------------------------------------------------------


def build_model(model_cfg, image_size: int, num_classes: int, weight_decay: float = 0.0, seed=None) -> keras.Model:
    """Build ``model_cfg.arch`` from a :class:`reproduce.config.ModelConfig`.

    Every switch of the dataclass is passed through unchanged, the LRN constants
    too, for every arch: what the config records is what is built. Note that the
    ``ModelConfig`` LRN defaults are the paper's ImageNet values (§3.3: n=5, k=2,
    alpha=1e-4, beta=0.75, printed formula); cuda-convnet's CIFAR-10 net used
    ``CIFAR_LRN`` (n=9, k=1, alpha=1e-3, beta=0.75, ``cuda-convnet``), which a
    CIFAR preset must set to reproduce it. ``towers`` applies to ``alexnet``
    only; the CIFAR nets are single-tower. ``model_cfg.num_classes``, when set,
    must equal ``num_classes`` (the data's).
    """
    arch = model_cfg.arch
    check_value("model.arch", arch, "arch")
    if model_cfg.num_classes is not None and model_cfg.num_classes != num_classes:
        raise ValueError(
            f"model.num_classes={model_cfg.num_classes!r} does not match the data's "
            f"num_classes={num_classes!r}; set model.num_classes=none to take it from the data"
        )
    common = dict(
        activation=model_cfg.activation,
        lrn=model_cfg.lrn,
        lrn_convention=model_cfg.lrn_convention,
        lrn_size=model_cfg.lrn_size,
        lrn_k=model_cfg.lrn_k,
        lrn_alpha=model_cfg.lrn_alpha,
        lrn_beta=model_cfg.lrn_beta,
        pooling=model_cfg.pooling,
        dropout=model_cfg.dropout,
        width=model_cfg.width,
        init=model_cfg.init,
        weight_decay=weight_decay,
        seed=seed,
    )
    if arch == "alexnet":
        return alexnet(image_size, num_classes, towers=model_cfg.towers, **common)
    if arch == "cifar_fig1":
        return cifar_fig1(image_size, num_classes, **common)
    return cifar_local(image_size, num_classes, **common)


# The inference model's layer names (`reproduce.inference` reads the preprocessing
# layer's mean image back by name).
PREPROCESS = "preprocess"
PROBABILITIES = "probabilities"


def inference_model(cfg, net, stats) -> keras.Model:
    """What a finished run keeps as model.keras (`reproduce.runs.write_model`):
    uint8 SxS RGB -> centre crop minus the mean image (§2) -> a float32 copy of
    `net` -> softmax."""
    d = cfg.data
    policy = keras.config.dtype_policy()
    # A float32 copy: a saved model keeps its layers' dtype policies, and one saved
    # as mixed_bfloat16 would compute in bfloat16 on every machine that loads it.
    keras.config.set_dtype_policy("float32")
    try:
        net32 = build_model(
            cfg.model,
            image_size=d.crop_size,
            num_classes=int(net.output_shape[-1]),
            weight_decay=cfg.train.weight_decay,
            seed=cfg.train.seed,
        )
        net32.set_weights(net.get_weights())
        preprocess = Augment(
            crop_size=d.crop_size,
            crop_flip=False,
            pca_color=False,
            mean_subtract=d.mean_subtract,
            mean_image=stats.mean_image if d.mean_subtract else None,
            seed=cfg.train.seed,
            name=PREPROCESS,
        )
        inputs = keras.Input((d.image_size, d.image_size, 3), dtype="uint8", name="image")
        probs = keras.layers.Softmax(name=PROBABILITIES)(net32(preprocess(inputs)))
        return keras.Model(inputs, probs, name=f"{net32.name}_inference")
    finally:
        keras.config.set_dtype_policy(policy)
