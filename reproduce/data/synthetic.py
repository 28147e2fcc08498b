"""The `synthetic` source: class-dependent images a small net learns in seconds.

Class k of K has its own colour cast (hue k/K) and its own stripe pattern
(orientation and frequency); each image draws a random stripe phase, contrast and
brightness and adds Gaussian noise. Colour alone separates the classes, so random
crops, flips and PCA colour noise (which moves all pixels by a few levels) keep the
task learnable (>90% accuracy in a few epochs); the stripes give convolutions edges
to find. Deterministic given (seed, n, size, classes). NumPy only.
"""

from __future__ import annotations

import colorsys

import numpy as np

# Fixed: every run of an experiment sees the same synthetic data set, whatever its
# training seed (as with real data). The validation split uses SEED + 1.
SEED = 2012


def synthetic_arrays(n: int, num_classes: int, size: int, seed: int = SEED):
    """(uint8 (n, size, size, 3), int32 (n,)) with balanced, shuffled labels."""
    if num_classes < 2:
        raise ValueError(f"synthetic data needs >= 2 classes, got {num_classes}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int32)

    k = np.arange(num_classes)
    colours = np.array([colorsys.hsv_to_rgb(h, 0.7, 1.0) for h in k / num_classes])
    casts = (colours - colours.mean(axis=1, keepdims=True)) * 90.0  # (K, 3), +-35 levels
    theta = np.pi * k / num_classes  # stripe orientation
    freq = 2.0 + (k % 3)  # cycles per image side
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    proj = (np.cos(theta)[:, None, None] * xx + np.sin(theta)[:, None, None] * yy) / size
    arg = 2 * np.pi * freq[:, None, None] * proj  # (K, S, S)
    sin_k, cos_k = np.sin(arg).astype(np.float32), np.cos(arg).astype(np.float32)

    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(0, n, 256):
        lab = labels[i : i + 256]
        b = len(lab)
        phase = rng.uniform(0, 2 * np.pi, b).astype(np.float32)[:, None, None]
        stripes = np.sin(phase) * cos_k[lab] + np.cos(phase) * sin_k[lab]  # sin(arg + phase)
        contrast = rng.uniform(25, 45, b).astype(np.float32)[:, None, None, None]
        bright = rng.uniform(-15, 15, b).astype(np.float32)[:, None, None, None]
        x = rng.standard_normal((b, size, size, 3), dtype=np.float32)
        x *= 20.0
        x += contrast * stripes[..., None]
        x += 120.0 + bright + casts[lab][:, None, None, :].astype(np.float32)
        np.rint(x, out=x)
        np.clip(x, 0, 255, out=x)
        images[i : i + b] = x
    return images, labels
