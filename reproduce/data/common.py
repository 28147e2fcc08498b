"""Pieces every data source shares: the error type (`reproduce.sources` owns it),
the result types, split names.

Standard library and NumPy only: decode worker processes import this.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from reproduce.sources import IMAGE_EXTENSIONS, DataError  # noqa: F401  (for the data sources)

# Corrupt or unreadable images below this fraction of a split are skipped with a
# warning that names them; above it the build fails (a folder that is mostly broken
# is a wrong path or a bad copy, not a few damaged files). ImageNet's training set
# decodes completely with Pillow, so 1% is generous. Override without code changes
# through $REPRODUCE_MAX_BAD_FRACTION.
MAX_BAD_FRACTION = 0.01

# Requested validation-like split -> folders/splits accepted in its place, in order.
# (CIFAR-10 has train/test, Imagenette train/val, TFDS names it `validation`.)
VAL_ALIASES = ("validation", "val", "valid", "test")


def max_bad_fraction() -> float:
    """$REPRODUCE_MAX_BAD_FRACTION, else MAX_BAD_FRACTION. A value that is not a
    fraction is refused: NaN compares false with every fraction, so every
    unreadable image would be skipped without a stop."""
    env = os.environ.get("REPRODUCE_MAX_BAD_FRACTION")
    if not env:
        return MAX_BAD_FRACTION
    try:
        value = float(env)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not 0 <= value <= 1:
        raise DataError(
            f"REPRODUCE_MAX_BAD_FRACTION={env!r} is not a fraction in [0, 1]: set it to the share "
            f"of a split's images that may be unreadable and skipped (e.g. REPRODUCE_MAX_BAD_FRACTION=0.05), "
            f"or unset it for the default {MAX_BAD_FRACTION:g}."
        )
    return value


def check_bad_images(bad: list, n: int, where: str, split: str, builder) -> list:
    """The names of the unreadable images to skip, with a warning naming them; a
    DataError (after aborting `builder`, the cache entry being built) when they
    are more than `max_bad_fraction()` of the split's `n` images. `bad` holds
    (index, name, error message) triples."""
    if not bad:
        return []
    frac = len(bad) / max(n, 1)
    names = [name for _, name, _ in sorted(bad)]
    shown = "\n  ".join(f"{name}: {msg}" for _, name, msg in sorted(bad)[:20])
    more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
    limit = max_bad_fraction()
    if frac > limit:
        builder.abort()
        raise DataError(
            f"{len(bad)} of {n} images of split {split!r} in {where} cannot be read "
            f"({100 * frac:.1f}% > the {100 * limit:g}% allowed):\n  {shown}{more}\n"
            f"Replace or delete these files (or raise REPRODUCE_MAX_BAD_FRACTION if "
            f"skipping them is acceptable)."
        )
    warnings.warn(
        f"skipping {len(bad)} unreadable image(s) of split {split!r} in {where} "
        f"({100 * frac:.2f}%, limit {100 * limit:g}%):\n  {shown}{more}",
        stacklevel=4,
    )
    return names


def is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def resolve_split(requested: str, available: Sequence[str], where: str) -> str:
    """The split to use for `requested`, given the splits `where` has.

    An exact match wins. A validation-like request (validation/val/valid/test) falls
    back to the first of VAL_ALIASES present, with a warning saying which.
    """
    available = sorted(set(available))
    if requested in available:
        return requested
    if requested in VAL_ALIASES:
        for alt in VAL_ALIASES:
            if alt in available:
                warnings.warn(
                    f"split {requested!r} not found in {where}; using {alt!r} instead "
                    f"(splits present: {', '.join(available)})",
                    stacklevel=3,
                )
                return alt
    raise DataError(
        f"split {requested!r} not found in {where}; splits present: "
        f"{', '.join(available) or 'none'}. Set data.train_split / data.val_split to "
        f"one of them (expected layout <root>/<split>/<class>/<image>)."
    )


FOLDER_CLASSES_FIX = (
    "Each class is a folder <split>/<class>/ holding its images: add the "
    "other classes' folders, or point data.source at the dataset's root."
)


def check_classes(split: str, class_names, where: str, fix: str = FOLDER_CLASSES_FIX) -> None:
    """Classification needs two classes at least: with one, every prediction is
    right and the error is 0.00% whatever the network learns."""
    if len(class_names) < 2:
        raise DataError(
            f"split {split!r} in {where} has {len(class_names)} class "
            f"({', '.join(map(repr, class_names)) or 'none'}); training needs at least two. " + fix
        )


def check_same_classes(split_a: str, names_a, split_b: str, names_b, source: str) -> None:
    """Both splits must have the same class folders (labels index the sorted names)."""
    if list(names_a) == list(names_b):
        return
    a, b = set(names_a), set(names_b)
    raise DataError(
        f"the class folders of split {split_a!r} and split {split_b!r} in {source} differ: "
        f"only in {split_a!r}: {sorted(a - b) or 'none'}; only in {split_b!r}: "
        f"{sorted(b - a) or 'none'}. Every split needs the same <class> folders (with at "
        f"least one image each); add or remove folders so they match."
    )


def subsample_indices(n: int, max_n: int) -> np.ndarray:
    """Which of n images a budgeted run (data.max_train / max_val) uses.

    A fixed random subset (seed 0, independent of the training seed so that every
    run of an experiment shares the cache), kept in the original order so class
    folders stay contiguous on disk.
    """
    if not max_n or max_n >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).permutation(n)[:max_n])


@dataclass
class ImageArrays:
    """One split in memory (or memory-mapped): the paper's §2 SxS uint8 images."""

    images: np.ndarray  # uint8 (N, S, S, 3); np.memmap for cached sources
    labels: np.ndarray  # int32 (N,)
    class_names: list
    split: str = ""  # the split actually used (after any fallback)
    source: str = ""
    cache_path: str | None = None  # the cache entry folder, if any

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])


@dataclass
class Stats:
    """Training-set statistics (§2 mean image, §4.1 PCA of RGB pixel values)."""

    mean_image: np.ndarray  # float32 (S, S, 3), 0-255 scale
    pca_eigvals: np.ndarray  # float32 (3,), descending, (0-255 scale)^2
    pca_eigvecs: np.ndarray  # float32 (3, 3); column i is the eigenvector of eigval i
    num_images: int = 0  # how many training images they were computed from
    num_pixels: int = 0  # how many RGB pixel values the covariance used


@dataclass
class Data:
    """What training needs: both splits, the statistics, the classes."""

    train: object  # ImageArrays, or Stream for large TFDS datasets
    val: object
    stats: Stats
    num_classes: int
    class_names: list = field(default_factory=list)
