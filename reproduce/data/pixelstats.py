"""Training-set statistics: the §2 mean image and the §4.1 PCA of RGB pixel values.

§2: "We did not pre-process the images in any other way, except for subtracting the
mean activity over the training set from each pixel." -> the per-pixel mean image,
(S, S, 3) float32.

§4.1: "we perform PCA on the set of RGB pixel values throughout the ImageNet
training set" -> eigenvalues and eigenvectors of the 3x3 covariance of all pixel
values (0-255 scale). Cached sources use every pixel of every training image
(exact: sums in float64); streamed datasets use every pixel of a sample of
`tfds_source.STREAM_STATS_IMAGES` images.
"""

from __future__ import annotations

import numpy as np

from reproduce.data.common import Stats


class StatsAccumulator:
    """Exact running sums over uint8 (B, S, S, 3) batches."""

    def __init__(self):
        self.n = 0
        self.sum_image = None  # float64 (S, S, 3)
        self.xtx = np.zeros((3, 3), np.float64)

    def update(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch)
        if batch.shape[0] == 0:
            return
        s = batch.sum(axis=0, dtype=np.float64)
        self.sum_image = s if self.sum_image is None else self.sum_image + s
        x = batch.reshape(-1, 3).astype(np.float64)
        self.xtx += x.T @ x  # every product is an integer < 2^53: exact
        self.n += batch.shape[0]

    def result(self) -> Stats:
        if self.n == 0:
            raise ValueError("no images to compute statistics from")
        mean_image = self.sum_image / self.n
        npix = self.n * mean_image.shape[0] * mean_image.shape[1]
        mu = mean_image.reshape(-1, 3).mean(axis=0)
        cov = self.xtx / npix - np.outer(mu, mu)  # population covariance (divide by n)
        eigvals, eigvecs = pca_of_covariance(cov)
        return Stats(
            mean_image=mean_image.astype(np.float32),
            pca_eigvals=eigvals.astype(np.float32),
            pca_eigvecs=eigvecs.astype(np.float32),
            num_images=int(self.n),
            num_pixels=int(npix),
        )


def pca_of_covariance(cov: np.ndarray):
    """Eigenvalues (descending) and eigenvectors (columns) of a symmetric 3x3 matrix.

    Signs are fixed (largest-magnitude component of each eigenvector positive) so the
    cached values are reproducible; the augmentation is symmetric in them anyway
    (alpha ~ N(0, sigma) is symmetric).
    """
    w, v = np.linalg.eigh(np.asarray(cov, np.float64))
    order = np.argsort(w)[::-1]
    w, v = w[order], v[:, order]
    idx = np.argmax(np.abs(v), axis=0)
    v = v * np.sign(v[idx, np.arange(3)])
    return np.maximum(w, 0.0), v


def compute_stats(images: np.ndarray, chunk: int = 256) -> Stats:
    """Mean image and pixel PCA of a uint8 (N, S, S, 3) array (memmap friendly)."""
    acc = StatsAccumulator()
    for i in range(0, images.shape[0], chunk):
        acc.update(images[i : i + chunk])
    return acc.result()
