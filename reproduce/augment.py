"""Data augmentation on the accelerator (§2, §4.1), in keras.ops: TF and JAX backends.

The host sends uint8 SxS images (§2: shorter side rescaled to S, central SxS
patch); everything below runs inside the compiled train step:

* §2 "subtracting the mean activity over the training set from each pixel": the
  per-pixel mean image (S, S, 3) of the training set.
* §4.1 first form: "extracting random 224x224 patches (and their horizontal
  reflections) from the 256x256 images" -- an independent CxC window and a coin
  flip per image per step.
* §4.1 second form (PCA colour): "To each RGB image pixel I_xy = [R, G, B] we add
  the following quantity: [p1, p2, p3][a1 l1, a2 l2, a3 l3]^T where p_i and l_i are
  the ith eigenvector and eigenvalue of the 3x3 covariance matrix of RGB pixel
  values, respectively, and a_i is the aforementioned random variable", drawn from
  N(0, 0.1) "only once for all the pixels of a particular training image until that
  image is used for training again". We multiply by the eigenvalue l_i, as printed,
  not by its square root (the standard deviation along p_i). fb.resnet.torch's
  `Lighting` transform also multiplies by the eigenvalue: its `eigval` (0.2175,
  0.0188, 0.0045) are the eigenvalues of the covariance of [0, 1] intensities on
  ImageNet (Imagenette's l_1 below, 14408 levels^2, is 0.222 in that unit), the
  same unit as our default pca_unit.

  The printed formula is not scale-free: l_i has units of intensity^2, so the shift
  depends on the intensity unit the formula is evaluated in. `pca_unit` is that
  unit, in our 0-255 levels: the shift in levels is  P (a * l) / pca_unit  with l
  the eigenvalues of the 0-255 covariance (i.e. the formula evaluated on pixel
  values scaled to [0, pca_unit/255]). The default pca_unit=255 evaluates it on
  intensities in [0, 1], which gives the small illumination change the paper
  describes. Measured on Imagenette at 144 px: l = (14408, 1091, 219) levels^2, so
  with a ~ N(0, 0.1) the shift along p_1 has a standard deviation of 5.7 levels
  (CIFAR-10: l_1 = 11173, 4.4 levels). pca_unit=1 is the formula applied literally
  to 0-255 values: 1441 levels along p_1, which saturates every image; the sqrt(l)
  convention gives 12 levels.

* Inference: the central CxC patch minus the mean; `ten_views` gives the §4.1 test
  views (four corners and centre, and their reflections).

Crops are one gather (`ops.take`) of each output pixel's flat index into the
batch, b*S*S + (oy+i)*S + (ox+j), with the reflection folded into the column
index (ox + C-1-j), and the mean image gathered with the same indices. On a GPU,
XLA fuses the index arithmetic, both gathers, the float conversion, the mean and
the colour shift into one memory-bound kernel that reads only the B*C*C*3 uint8
pixels it keeps and writes the float output once (~80 MB for a 128 x 227^2 batch:
tens of microseconds at H200 bandwidth, nothing next to the network), and it is
exact. The alternatives: a one-hot-matrix einsum costs B*C*S*S*6 flops and is not
exact under TF32 matmuls (JAX's default float32 matmul precision on recent GPUs);
vmapped dynamic_slice is JAX-only (tf.vectorized_map of a dynamic slice falls
back to a loop); two take_along_axis passes (rows, then columns) materialise a
(B, C, S, 3) intermediate. On a CPU (JAX, 128 x 256^2 -> 227^2) the flat gather,
the two-pass gather and vmapped dynamic_slice all run at 0.6-1x the speed of a
plain static centre crop with the same mean subtraction.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="reproduce")
class Augment(keras.layers.Layer):
    """uint8 (B, S, S, 3) -> float (B, C, C, 3) in 0-255 minus-mean units.

    Augment(crop_size, crop_flip=True, pca_color=True, pca_std=0.1,
            mean_subtract=True, mean_image=None, pca_eigvals=None,
            pca_eigvecs=None, seed=None, pca_unit=255.0, **layer_kwargs)

    Training (`training=True`): x - mean, then a random CxC window with a random
    horizontal flip per image (crop_flip; else the centre window, unflipped), then
    the PCA colour shift per image (pca_color). Inference: centre window - mean.

    The mean image (S, S, 3) and the PCA eigenvalues (3,) / eigenvectors (3, 3,
    columns) are non-trainable float32 weights, so they are saved with the model;
    they are set from the arguments (e.g. `reproduce.data.Stats`). Every random
    draw comes from `keras.random.SeedGenerator(seed)` (its state is a weight too:
    a restored model continues the same sequence). Output dtype: the layer's
    compute dtype (float32, or bfloat16 under mixed_bfloat16); the arithmetic is
    float32 whatever the policy (the weights are never autocast: a bfloat16 mean
    image would lose its fractional part, bfloat16 has 8 significant bits).
    """

    def __init__(
        self,
        crop_size: int,
        crop_flip: bool = True,
        pca_color: bool = True,
        pca_std: float = 0.1,
        mean_subtract: bool = True,
        mean_image=None,
        pca_eigvals=None,
        pca_eigvecs=None,
        seed=None,
        pca_unit: float = 255.0,
        **kwargs,
    ):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.crop_size = int(crop_size)
        self.crop_flip = bool(crop_flip)
        self.pca_color = bool(pca_color)
        self.pca_std = float(pca_std)
        self.mean_subtract = bool(mean_subtract)
        self.pca_unit = float(pca_unit)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._initial = {
            "mean_image": None if mean_image is None else np.asarray(mean_image, np.float32),
            "pca_eigvals": None if pca_eigvals is None else np.asarray(pca_eigvals, np.float32),
            "pca_eigvecs": None if pca_eigvecs is None else np.asarray(pca_eigvecs, np.float32),
        }
        for key, shape in (("pca_eigvals", (3,)), ("pca_eigvecs", (3, 3))):
            v = self._initial[key]
            if v is not None and v.shape != shape:
                raise ValueError(f"{key} must have shape {shape}, got {v.shape}")
        self.image_size = None
        m = self._initial["mean_image"]
        if m is not None and (m.ndim != 3 or m.shape[0] != m.shape[1] or m.shape[2] != 3):
            raise ValueError(f"mean_image must have shape (S, S, 3), got {m.shape}")
        if m is not None and self.mean_subtract:
            self.build((None,) + m.shape)

    def build(self, input_shape):
        s = input_shape[1]
        if s is None or input_shape[2] != s or input_shape[3] != 3:
            raise ValueError(f"Augment needs (batch, S, S, 3) input with a known S; got {input_shape}")
        s = int(s)
        if s < self.crop_size:
            raise ValueError(f"crop_size={self.crop_size} is larger than the images ({s})")
        self.image_size = s
        if self.mean_subtract:
            self.mean_image = self.add_weight(
                shape=(s, s, 3),
                initializer="zeros",
                trainable=False,
                name="mean_image",
                dtype="float32",
                autocast=False,
            )
            m = self._initial["mean_image"]
            if m is not None:
                if m.shape != (s, s, 3):
                    raise ValueError(f"mean_image has shape {m.shape}; the input is {s}x{s}")
                self.mean_image.assign(m)
        if self.pca_color:
            self.pca_eigvals = self.add_weight(
                shape=(3,), initializer="zeros", trainable=False, name="pca_eigvals", dtype="float32", autocast=False
            )
            self.pca_eigvecs = self.add_weight(
                shape=(3, 3),
                initializer="identity",
                trainable=False,
                name="pca_eigvecs",
                dtype="float32",
                autocast=False,
            )
            if self._initial["pca_eigvals"] is not None:
                self.pca_eigvals.assign(self._initial["pca_eigvals"])
            if self._initial["pca_eigvecs"] is not None:
                self.pca_eigvecs.assign(self._initial["pca_eigvecs"])
        self.built = True

    # -- the random draws, separately so tests can check them ---------------------

    def sample_params(self, batch_size, training: bool = True) -> dict:
        """The draws of one call: crop offsets, flips (int32 (B,)), alphas (B, 3).

        Absent keys mean "centre crop, no flip" / "no colour shift".
        """
        p = {}
        if training and self.crop_flip:
            hi = self.image_size - self.crop_size + 1
            p["offset_y"] = keras.random.randint((batch_size,), 0, hi, dtype="int32", seed=self.seed_generator)
            p["offset_x"] = keras.random.randint((batch_size,), 0, hi, dtype="int32", seed=self.seed_generator)
            p["flip"] = keras.random.randint((batch_size,), 0, 2, dtype="int32", seed=self.seed_generator)
        if training and self.pca_color:
            p["alpha"] = keras.random.normal(
                (batch_size, 3), stddev=self.pca_std, dtype="float32", seed=self.seed_generator
            )
        return p

    def call(self, images, training=None):
        params = self.sample_params(ops.shape(images)[0], bool(training))
        return self.apply_params(images, params)

    def apply_params(self, images, params: dict):
        s, c = self.image_size, self.crop_size
        mean = self.mean_image if self.mean_subtract else None
        if "offset_y" in params:
            x = _random_crops(images, mean, params["offset_y"], params["offset_x"], params["flip"], s, c)
        else:
            o = (s - c) // 2
            x = ops.cast(images[:, o : o + c, o : o + c, :], "float32")
            if mean is not None:
                x = x - mean[o : o + c, o : o + c, :]
        if "alpha" in params:
            x = x + self.pca_shift(params["alpha"])[:, None, None, :]
        return ops.cast(x, self.compute_dtype)

    def pca_shift(self, alpha):
        """(B, 3) RGB shifts in 0-255 levels: P (alpha * lambda) / pca_unit."""
        w = alpha * self.pca_eigvals[None, :]  # (B, 3): a_i l_i
        # sum_i p_i a_i l_i, as an elementwise sum (exact float32; a (B,3)x(3,3)
        # matmul may run in TF32 on a GPU).
        return ops.sum(self.pca_eigvecs[None, :, :] * w[:, None, :], axis=-1) / self.pca_unit

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.crop_size, self.crop_size, 3)

    def get_config(self):
        config = super().get_config()
        config.update(
            crop_size=self.crop_size,
            crop_flip=self.crop_flip,
            pca_color=self.pca_color,
            pca_std=self.pca_std,
            mean_subtract=self.mean_subtract,
            seed=self.seed,
            pca_unit=self.pca_unit,
        )
        return config


def _random_crops(images, mean, oy, ox, flip, s: int, c: int):
    """Per-image CxC windows at (oy, ox), reflected where flip == 1; minus mean."""
    r = ops.arange(c, dtype="int32")
    rows = oy[:, None] + r[None, :]  # (B, C)
    cols = ops.where(
        ops.equal(flip, 1)[:, None],
        ox[:, None] + (c - 1 - r)[None, :],  # the reflection, §4.1
        ox[:, None] + r[None, :],
    )
    spatial = rows[:, :, None] * s + cols[:, None, :]  # (B, C, C) index into S*S
    b = ops.shape(images)[0]
    batch = ops.arange(b, dtype="int32")[:, None, None] * (s * s)
    x = ops.take(ops.reshape(images, (-1, 3)), spatial + batch, axis=0)  # uint8 gather
    x = ops.cast(x, "float32")
    if mean is not None:
        x = x - ops.take(ops.reshape(mean, (-1, 3)), spatial, axis=0)
    return x


def ten_views(images_uint8, crop_size: int, mean_image=None, dtype="float32"):
    """§4.1 test-time views: (10, B, C, C, 3), mean subtracted.

    Order: top-left, top-right, bottom-left, bottom-right, centre, then the same
    five reflected horizontally. "At test time, the network makes a prediction by
    extracting five 224x224 patches (the four corner patches and the center patch)
    as well as their horizontal reflections (hence ten patches in all), and
    averaging the predictions made by the network's softmax layer on the ten
    patches."
    """
    x = ops.cast(images_uint8, "float32")
    if mean_image is not None:
        x = x - ops.cast(ops.convert_to_tensor(mean_image), "float32")
    s = x.shape[1]
    c = int(crop_size)
    if s is None:
        raise ValueError("ten_views needs a known image size S")
    e, m = s - c, (s - c) // 2
    views = [
        x[:, :c, :c, :],
        x[:, :c, e:, :],
        x[:, e:, :c, :],
        x[:, e:, e:, :],
        x[:, m : m + c, m : m + c, :],
    ]
    views += [ops.flip(v, axis=2) for v in views]
    return ops.cast(ops.stack(views, axis=0), dtype)
