"""The report's statistics: small pure functions, no I/O, no run directories.

Conventions
-----------
* A *delta* is always ``variant - baseline`` (the registry's convention), in the
  units the caller passes (the report passes error fractions and prints points).
* Per-seed values are passed as ``{seed: value}`` mappings so that pairing is
  explicit: two arms are *paired* when they were run with exactly the same set of
  seeds (seed ``s`` of the baseline and seed ``s`` of the variant share their
  initialization and data order), otherwise they are compared with Welch's t.
* Intervals are two-sided at ``level`` (0.95 by default). An interval that cannot
  be computed (fewer than two values on a side) has ``lo = hi = nan``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

# Verdicts (see `verdict`).
REPRODUCED = "reproduced"
SAME_NS = "same direction, not significant"
CONTRADICTED = "contradicted"
OPPOSITE_NS = "opposite direction, not significant"
NO_DIFFERENCE = "no difference"
NOT_MEASURABLE = "not measurable"
NO_CLAIM = "no claim"
VERDICTS = (REPRODUCED, SAME_NS, NO_DIFFERENCE, OPPOSITE_NS, CONTRADICTED, NOT_MEASURABLE, NO_CLAIM)

NAN = float("nan")


def _t_ppf(q: float, df: float) -> float:
    from scipy.stats import t  # scipy is imported lazily: `reports` must stay light

    return float(t.ppf(q, df))


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval.

    method: "paired t", "Welch t", "bootstrap (images)", or "n/a" (not computable);
    n: pairs for paired t, ``(n_base, n_variant)`` for Welch, images for the bootstrap.
    """

    estimate: float
    lo: float
    hi: float
    method: str
    n: object = None
    df: float = NAN
    level: float = 0.95

    @property
    def ok(self) -> bool:
        return all(math.isfinite(x) for x in (self.estimate, self.lo, self.hi))

    def contains(self, x: float) -> bool:
        return self.ok and self.lo <= x <= self.hi


def mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation with ddof=1, n). sd is nan for n < 2; mean nan for n = 0."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    n = int(x.size)
    if n == 0:
        return NAN, NAN, 0
    return float(x.mean()), (float(x.std(ddof=1)) if n >= 2 else NAN), n


def paired_t_interval(base: Sequence[float], variant: Sequence[float], level: float = 0.95) -> Interval:
    """Student t interval on the per-pair differences ``variant[i] - base[i]``.

    Needs n >= 2 pairs. Zero spread gives the degenerate interval [d, d].
    """
    b = np.asarray(base, dtype=float)
    v = np.asarray(variant, dtype=float)
    if b.shape != v.shape:
        raise ValueError("paired arms must have the same length")
    d = v - b
    n = int(d.size)
    if n == 0:
        return Interval(NAN, NAN, NAN, "n/a", 0, level=level)
    est = float(d.mean())
    if n < 2:
        return Interval(est, NAN, NAN, "n/a", n, level=level)
    se = float(d.std(ddof=1)) / math.sqrt(n)
    half = _t_ppf(0.5 + level / 2, n - 1) * se
    return Interval(est, est - half, est + half, "paired t", n, float(n - 1), level)


def welch_interval(base: Sequence[float], variant: Sequence[float], level: float = 0.95) -> Interval:
    """Welch's t interval for ``mean(variant) - mean(base)`` (unequal variances).

    Needs n >= 2 on each side. Zero spread on both sides gives [d, d].
    """
    b = np.asarray(base, dtype=float)
    v = np.asarray(variant, dtype=float)
    n1, n2 = int(b.size), int(v.size)
    if n1 == 0 or n2 == 0:
        return Interval(NAN, NAN, NAN, "n/a", (n1, n2), level=level)
    est = float(v.mean() - b.mean())
    if n1 < 2 or n2 < 2:
        return Interval(est, NAN, NAN, "n/a", (n1, n2), level=level)
    a1, a2 = b.var(ddof=1) / n1, v.var(ddof=1) / n2
    se2 = a1 + a2
    if se2 == 0:
        return Interval(est, est, est, "Welch t", (n1, n2), NAN, level)
    df = se2**2 / (a1**2 / (n1 - 1) + a2**2 / (n2 - 1))
    half = _t_ppf(0.5 + level / 2, df) * math.sqrt(se2)
    return Interval(est, est - half, est + half, "Welch t", (n1, n2), float(df), level)


def delta_interval(base: Mapping[int, float], variant: Mapping[int, float], level: float = 0.95) -> Interval:
    """``variant - baseline`` over seeds: paired t when both arms have exactly the
    same seeds, Welch's t otherwise (see the module docstring)."""
    if set(base) == set(variant) and base:
        seeds = sorted(base)
        return paired_t_interval([base[s] for s in seeds], [variant[s] for s in seeds], level)
    return welch_interval(list(base.values()), list(variant.values()), level)


def paired_bootstrap(
    base_wrong,
    variant_wrong,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    shift: float = 0.0,
) -> Interval:
    """Percentile bootstrap over validation images of ``err(variant) - err(base)``.

    ``base_wrong``/``variant_wrong``: arrays of shape (seeds, images) or (images,),
    1 where a run got the image wrong. Seeds are pooled: each image contributes
    ``mean over variant runs - mean over baseline runs`` of its wrongness, and the
    same image indices are drawn for both arms (paired over images). The arms may
    have different numbers of runs but must cover the same images in the same order.
    ``shift`` is added to every resample (a fixed offset, e.g. the train-error part
    of a train/val gap). Reproducible for a given ``seed``.

    This interval reflects only the finite validation set, not seed-to-seed
    training variance; the seed-level t interval is the one verdicts use.
    """
    b = np.atleast_2d(np.asarray(base_wrong, dtype=float))
    v = np.atleast_2d(np.asarray(variant_wrong, dtype=float))
    if b.shape[1] != v.shape[1]:
        raise ValueError(f"arms cover different numbers of images: {b.shape[1]} vs {v.shape[1]}")
    d = v.mean(axis=0) - b.mean(axis=0)
    n = int(d.size)
    if n == 0:
        return Interval(NAN, NAN, NAN, "n/a", 0, level=level)
    est = float(d.mean()) + shift
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // n)  # bounded memory for 50,000-image validation sets
    for start in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(k, n))
        stats[start : start + k] = d[idx].mean(axis=1)
    stats += shift
    lo, hi = np.quantile(stats, [0.5 - level / 2, 0.5 + level / 2])
    return Interval(est, float(lo), float(hi), "bootstrap (images)", n, level=level)


def verdict(
    estimate: float,
    lo: float,
    hi: float,
    direction: int,
    *,
    n: Optional[int] = None,
    claim: bool = True,
    null: float = 0.0,
) -> str:
    """Classify a measured effect against a claim's direction.

    ``direction`` is the claimed sign of ``estimate - null`` (+1 or -1); ``null`` is
    0 for deltas and 1 for ratios. Boundaries, in order:

    * ``claim`` false                                   -> "no claim"
    * any of estimate/lo/hi not finite, ``n`` < 2, or direction not +-1
                                                        -> "not measurable"
    * the interval lies strictly on the claimed side of ``null``
      (an endpoint *equal* to ``null`` does not exclude it)
                                                        -> "reproduced"
    * strictly on the other side                        -> "contradicted"
    * otherwise the interval contains ``null`` (endpoints inclusive), and the sign
      of ``estimate - null`` decides: claimed side -> "same direction, not
      significant", other side -> "opposite direction, not significant", exactly
      ``null`` -> "no difference".

    Only direction and significance are judged, not magnitude: the report says
    separately whether the paper's value lies inside the interval.
    """
    if not claim:
        return NO_CLAIM
    if direction not in (1, -1) or (n is not None and n < 2):
        return NOT_MEASURABLE
    if not all(x is not None and math.isfinite(x) for x in (estimate, lo, hi)):
        return NOT_MEASURABLE
    s_lo, s_hi = sorted((direction * (lo - null), direction * (hi - null)))
    if s_lo > 0:
        return REPRODUCED
    if s_hi < 0:
        return CONTRADICTED
    s = direction * (estimate - null)
    if s > 0:
        return SAME_NS
    if s < 0:
        return OPPOSITE_NS
    return NO_DIFFERENCE


@dataclass(frozen=True)
class TimeToTarget:
    """First epoch (1-based) whose training error is <= the target.

    ``epochs`` is None when the target was never reached in the ``observed``
    epochs: the run is *censored*, and ``bound`` (= observed) is a lower bound.
    """

    epochs: Optional[int]
    observed: int

    @property
    def reached(self) -> bool:
        return self.epochs is not None

    @property
    def bound(self) -> int:
        return self.epochs if self.epochs is not None else self.observed

    def __str__(self) -> str:
        return str(self.epochs) if self.reached else f"> {self.observed} (not reached)"


def epochs_to_target(
    errors: Sequence[Optional[float]], target: float, epochs: Optional[Sequence[int]] = None
) -> TimeToTarget:
    """When a training-error curve first reaches ``target`` (``error <= target``).

    ``errors[i]`` is the error after epoch ``epochs[i]`` (1-based; default i + 1).
    Missing or NaN values (a diverged epoch) never count as reaching the target.
    """
    if epochs is None:
        epochs = list(range(1, len(errors) + 1))
    observed = 0
    for e, err in zip(epochs, errors):
        observed = max(observed, int(e))
        if err is not None and math.isfinite(err) and err <= target:
            return TimeToTarget(int(e), observed)
    return TimeToTarget(None, observed)


@dataclass(frozen=True)
class RatioSummary:
    """variant / baseline over seeds.

    estimate: geometric mean ratio (paired) or ratio of geometric means (Welch);
    lo, hi: its interval from a t interval on log values, exponentiated;
    mean, sd: arithmetic mean and sd of the per-seed ratios (paired only, else nan).
    """

    estimate: float
    lo: float
    hi: float
    mean: float
    sd: float
    method: str
    n: object

    @property
    def ok(self) -> bool:
        return all(math.isfinite(x) for x in (self.estimate, self.lo, self.hi))

    def contains(self, x: float) -> bool:
        return self.ok and self.lo <= x <= self.hi


def ratio_interval(base: Mapping[int, float], variant: Mapping[int, float], level: float = 0.95) -> RatioSummary:
    """Ratio ``variant / base`` with a t interval on the log scale (values must be > 0)."""
    lb = {s: math.log(x) for s, x in base.items()}
    lv = {s: math.log(x) for s, x in variant.items()}
    iv = delta_interval(lb, lv, level)
    mean = sd = NAN
    if set(base) == set(variant) and base:
        ratios = [variant[s] / base[s] for s in sorted(base)]
        mean, sd, _ = mean_sd(ratios)
    exp = lambda x: math.exp(x) if math.isfinite(x) else NAN  # noqa: E731
    return RatioSummary(exp(iv.estimate), exp(iv.lo), exp(iv.hi), mean, sd, iv.method, iv.n)
