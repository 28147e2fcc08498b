"""The report's statistics: small pure functions, no I/O, no run directories.

Conventions
-----------
* A *delta* is always ``variant - baseline`` (the registry's convention), in the
  units the caller passes (the report passes error fractions and prints points).
* Per-seed values are passed as ``{seed: value}`` mappings so that pairing is
  explicit: two arms are *paired* when they were run with exactly the same set of
  seeds (seed ``s`` of the baseline and seed ``s`` of the variant share their
  initialization and data order), otherwise they are compared with Welch's t.
* Intervals are two-sided at ``level`` (0.95 by default) and carry the two-sided
  p-value of "no difference". An interval that cannot be computed has
  ``lo = hi = nan`` and says why in ``reason``: fewer than two values on a side,
  or no spread at all. A zero-width interval is never returned: identical
  per-seed differences (likely with integer epoch counts or small validation
  sets) say nothing about the seed-to-seed spread, and a t interval built on a
  zero standard deviation would be a point.

From intervals to verdicts (the report applies them per preset)
----------------------------------------------------------------
1. `bonferroni` adjusts the p-values of the claims of one preset (one p-value
   per claim, from its primary metric), and `simultaneous_level` gives the level
   of the intervals printed beside the verdicts: a Bonferroni interval at
   ``1 - alpha/m`` excludes the null exactly when the adjusted p < alpha, so an
   interval and its verdict never disagree (Holm's step-down test is a little
   more powerful but has no intervals that match it).
2. `direction_verdict`: the sign is significant when the adjusted p < alpha.
3. `magnitude_verdict`: the paper's value against the interval, judged only when
   the comparison could detect the paper's effect (`mde`, the minimum detectable
   effect at 80% power); a claim stated as a lower bound ("over 1%") is compared
   as a bound.
4. `claim_verdict` combines the two into one word for the summary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

NAN = float("nan")
ALPHA = 0.05
POWER = 0.80

# Direction of a tested claim, after the multiple-comparison correction.
DIR_CLAIMED = "claimed direction"
DIR_OPPOSITE = "opposite direction"
DIR_NS = "not significant"

# The paper's value against the measured interval.
MAG_INSIDE = "paper's value inside the interval"
MAG_SMALLER = "smaller than the paper's"
MAG_LARGER = "larger than the paper's"
MAG_UNDERPOWERED = "underpowered"  # the paper's effect is below the detectable effect
MAG_BOUND_MET = "meets the paper's bound"
MAG_BOUND_INSIDE = "paper's bound inside the interval"
MAG_BOUND_BELOW = "below the paper's bound"
MAG_CENSORED = "not resolved (lower bound only)"
MAG_NONE = "no size claimed"

# One word per claim (see `claim_verdict`), and for rows that are not tested.
REPRODUCED = "reproduced"
DIRECTION_ONLY = "direction reproduced, size differs"
SIZE_UNRESOLVED = "direction reproduced, size unresolved"
CONTRADICTED = "contradicted"
NOT_REPRODUCED = "not reproduced"
UNDERPOWERED = "underpowered"
NOT_SIGNIFICANT = "not significant"
NOT_MEASURABLE = "not measurable"
NO_CLAIM = "no claim"
SECONDARY = "secondary (not tested)"
# A claim one of whose arms has no finished run: nothing measured, nothing judged.
NOT_RUN = "not run yet"
# Verdicts withheld before any test: the comparison cannot speak to the claim.
COLLAPSED = "collapsed (training diverged; claim untested)"  # an arm at chance in some seed
CONFOUNDED = "confounded: untested"  # the comparison mixes the claim's choice with another factor
NOT_TESTABLE = "not testable at this budget"  # an overfitting claim, and the baseline does not overfit
# Given after the test, across budgets: the effect shrinks as the budget grows.
BUDGET_LIMITED = "budget-limited"
VERDICTS = (
    REPRODUCED,
    DIRECTION_ONLY,
    SIZE_UNRESOLVED,
    NOT_SIGNIFICANT,
    UNDERPOWERED,
    NOT_REPRODUCED,
    CONTRADICTED,
    BUDGET_LIMITED,
    COLLAPSED,
    CONFOUNDED,
    NOT_TESTABLE,
    NOT_MEASURABLE,
    NO_CLAIM,
    SECONDARY,
)
WITHHELD = (COLLAPSED, CONFOUNDED, NOT_TESTABLE)

# Below this, a standard deviation is float noise around zero (errors are
# fractions; a 50,000-image validation set resolves 2e-5).
_ZERO_SD = 1e-12


def _t():
    from scipy import stats  # scipy is imported lazily: `reports` must stay light

    return stats


def _finite(*xs) -> bool:
    return all(x is not None and math.isfinite(x) for x in xs)


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval and its test.

    method: "paired t", "Welch t", "bootstrap (images)", or "n/a";
    n: pairs for paired t, ``(n_base, n_variant)`` for Welch, images for the bootstrap;
    p: two-sided p-value of "the true value is ``null``" (nan when not computable);
    se, df: the standard error and degrees of freedom (df inf: normal);
    sds: the spread the design scales with the number of seeds (paired: the sd of
    the differences; Welch: the two arms' sds), for `seeds_needed`;
    reason: why ``lo``/``hi`` are nan, when they are.
    """

    estimate: float
    lo: float
    hi: float
    method: str
    n: object = None
    df: float = NAN
    level: float = 0.95
    p: float = NAN
    se: float = NAN
    sds: tuple = ()
    reason: str = ""

    @property
    def ok(self) -> bool:
        return _finite(self.estimate, self.lo, self.hi)

    def contains(self, x: float) -> bool:
        return self.ok and self.lo <= x <= self.hi


def _na(estimate, method, n, level, reason, df=NAN, sds=()) -> Interval:
    return Interval(estimate, NAN, NAN, method, n, df, level, NAN, NAN, sds, reason)


def _t_interval(est, se, df, n, method, level, sds, null=0.0) -> Interval:
    st = _t()
    half = float(st.t.ppf(0.5 + level / 2, df)) * se
    p = float(2 * st.t.sf(abs(est - null) / se, df))
    return Interval(est, est - half, est + half, method, n, float(df), level, p, se, sds)


def mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation with ddof=1, n). sd is nan for n < 2; mean nan for n = 0."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    n = int(x.size)
    if n == 0:
        return NAN, NAN, 0
    return float(x.mean()), (float(x.std(ddof=1)) if n >= 2 else NAN), n


def paired_t_interval(base: Sequence[float], variant: Sequence[float], level: float = 0.95) -> Interval:
    """Student t interval and test on the per-pair differences ``variant[i] - base[i]``.

    Needs n >= 2 pairs and some spread between the differences."""
    b = np.asarray(base, dtype=float)
    v = np.asarray(variant, dtype=float)
    if b.shape != v.shape:
        raise ValueError("paired arms must have the same length")
    d = v - b
    n = int(d.size)
    if n == 0:
        return _na(NAN, "n/a", 0, level, "no pairs")
    est = float(d.mean())
    if n < 2:
        return _na(est, "n/a", n, level, "one seed per arm")
    sd = float(d.std(ddof=1))
    if sd <= _ZERO_SD * max(1.0, abs(est)):
        return _na(
            est, "paired t", n, level, f"no spread: all {n} seeds gave the same difference", float(n - 1), (0.0,)
        )
    return _t_interval(est, sd / math.sqrt(n), n - 1, n, "paired t", level, (sd,))


def welch_interval(base: Sequence[float], variant: Sequence[float], level: float = 0.95) -> Interval:
    """Welch's t interval and test for ``mean(variant) - mean(base)`` (unequal variances).

    Needs n >= 2 on each side and some spread on at least one."""
    b = np.asarray(base, dtype=float)
    v = np.asarray(variant, dtype=float)
    n1, n2 = int(b.size), int(v.size)
    if n1 == 0 or n2 == 0:
        return _na(NAN, "n/a", (n1, n2), level, "an arm has no seeds")
    est = float(v.mean() - b.mean())
    if n1 < 2 or n2 < 2:
        return _na(est, "n/a", (n1, n2), level, "an arm has one seed")
    s1, s2 = float(b.std(ddof=1)), float(v.std(ddof=1))
    a1, a2 = s1**2 / n1, s2**2 / n2
    if max(s1, s2) <= _ZERO_SD * max(1.0, abs(est)):
        return _na(
            est, "Welch t", (n1, n2), level, "no spread: every seed of each arm gave the same value", sds=(0.0, 0.0)
        )
    df = (a1 + a2) ** 2 / (a1**2 / (n1 - 1) + a2**2 / (n2 - 1))
    return _t_interval(est, math.sqrt(a1 + a2), df, (n1, n2), "Welch t", level, (s1, s2))


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

    p is the two-sided bootstrap p-value of "no difference",
    ``min(1, max(1, 2 min(#{stat <= 0}, #{stat >= 0})) / resamples)``: the same tail
    counts as the percentile interval's, so the interval at level 1 - a excludes 0
    when p < a (up to the quantiles' interpolation), and never 0; se is
    the resamples' sd (for `mde`, with a normal reference). When every image gives
    the same difference the interval is not computed (it would be a point).

    This interval reflects only the finite validation set, not seed-to-seed
    training variance; the report uses it only when the seeds give no spread.
    """
    b = np.atleast_2d(np.asarray(base_wrong, dtype=float))
    v = np.atleast_2d(np.asarray(variant_wrong, dtype=float))
    if b.shape[1] != v.shape[1]:
        raise ValueError(f"arms cover different numbers of images: {b.shape[1]} vs {v.shape[1]}")
    d = v.mean(axis=0) - b.mean(axis=0)
    n = int(d.size)
    method = "bootstrap (images)"
    if n == 0:
        return _na(NAN, "n/a", 0, level, "no images")
    est = float(d.mean()) + shift
    if float(np.ptp(d)) == 0.0:
        return _na(est, method, n, level, "no spread: every image gives the same difference", math.inf)
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // n)  # bounded memory for 50,000-image validation sets
    for start in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(k, n))
        stats[start : start + k] = d[idx].mean(axis=1)
    stats += shift
    lo, hi = np.quantile(stats, [0.5 - level / 2, 0.5 + level / 2])
    below, above = int((stats <= 0).sum()), int((stats >= 0).sum())
    p = min(1.0, max(1, 2 * min(below, above)) / n_resamples)
    se = float(stats.std(ddof=1))
    return Interval(est, float(lo), float(hi), method, n, math.inf, level, p, se, ())


# --------------------------------------------------------------------------------------
# Multiple comparisons, detectable effects, verdicts
# --------------------------------------------------------------------------------------


def bonferroni(pvalues: Mapping) -> dict:
    """Bonferroni-adjusted p-values, ``{key: min(1, m p)}`` over the m finite ones.

    Rejecting where the adjusted p < alpha controls the family-wise error rate at
    alpha under any dependence; keys whose p is not finite are returned as nan and
    do not count in m. Its intervals are `simultaneous_level`'s."""
    m = sum(1 for p in pvalues.values() if p is not None and math.isfinite(p))
    return {k: (min(1.0, m * p) if p is not None and math.isfinite(p) else NAN) for k, p in pvalues.items()}


def simultaneous_level(m: int, alpha: float = ALPHA) -> float:
    """The confidence level of intervals that hold together for a family of m
    claims at family-wise level 1 - alpha (Bonferroni): ``1 - alpha/m``. Each
    such interval excludes the null exactly when `bonferroni`'s adjusted p <
    alpha. A family of one (or none) is the ordinary 1 - alpha."""
    return 1.0 - alpha / max(1, int(m))


def power(effect: float, se: float, df: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided t test at level alpha when the true value differs
    from the null by `effect` and the estimate has standard error `se` (noncentral
    t with df degrees of freedom; df inf: normal)."""
    st = _t()
    nc = abs(effect) / se
    if math.isinf(df):
        z = st.norm.ppf(1 - alpha / 2)
        return float(st.norm.sf(z - nc) + st.norm.cdf(-z - nc))
    tc = st.t.ppf(1 - alpha / 2, df)
    lower = float(st.nct.cdf(-tc, df, nc))  # negligible; scipy returns nan for some far tails
    return float(st.nct.sf(tc, df, nc)) + (lower if math.isfinite(lower) else 0.0)


def mde(se: float, df: float, alpha: float = ALPHA, target_power: float = POWER) -> float:
    """Minimum detectable effect: the smallest true difference that the two-sided
    test at level `alpha` detects with probability `target_power`, for an estimate
    with standard error `se` and `df` degrees of freedom (solved on the noncentral
    t; close to ``(t_{1-alpha/2,df} + t_{power,df}) se`` for large df). nan when se
    is not finite or not positive."""
    if not _finite(se, df if math.isfinite(df) else 0.0) or se <= 0 or not df > 0:
        return NAN
    from scipy.optimize import brentq

    st = _t()
    q = st.norm if math.isinf(df) else st.t(df)
    hi = float(q.ppf(1 - alpha / 2) + q.ppf(target_power))
    while power(hi, 1.0, df, alpha) < target_power:
        hi *= 2
    return float(brentq(lambda e: power(e, 1.0, df, alpha) - target_power, 0.0, hi, xtol=1e-10)) * se


def design_mde(iv: Interval, n: int, alpha: float = ALPHA, target_power: float = POWER) -> float:
    """The detectable effect of the same design with `n` seeds per arm, at the
    spread `iv` observed (paired t: sd of the differences / sqrt(n), n - 1 df;
    Welch t: the two sds, equal arms, Welch's df)."""
    if iv.method == "paired t" and len(iv.sds) == 1 and iv.sds[0] > 0 and n >= 2:
        return mde(iv.sds[0] / math.sqrt(n), n - 1, alpha, target_power)
    if iv.method == "Welch t" and len(iv.sds) == 2 and max(iv.sds) > 0 and n >= 2:
        v1, v2 = iv.sds[0] ** 2, iv.sds[1] ** 2
        df = (v1 + v2) ** 2 * (n - 1) / (v1**2 + v2**2)
        return mde(math.sqrt((v1 + v2) / n), df, alpha, target_power)
    return NAN


def seeds_needed(
    effect: float | None, iv: Interval, alpha: float = ALPHA, target_power: float = POWER, cap: int = 10_000
) -> int | None:
    """The fewest seeds per arm for which `design_mde` <= |effect| (None: not
    computable for this design or effect; ``cap + 1``: more than `cap`)."""
    if effect is None or not math.isfinite(effect) or effect == 0 or iv.method not in ("paired t", "Welch t"):
        return None
    if not iv.sds or not max(iv.sds) > 0:
        return None
    ok = lambda n: design_mde(iv, n, alpha, target_power) <= abs(effect)  # noqa: E731
    if not ok(cap):
        return cap + 1
    lo, hi = 1, 2  # ok(lo) is false (n = 1 has no test); find hi with ok(hi)
    while not ok(hi):
        lo, hi = hi, min(cap, hi * 2)
    while hi - lo > 1:  # the detectable effect falls with n
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def direction_verdict(
    estimate: float, p_adjusted: float, direction: int, alpha: float = ALPHA, null: float = 0.0
) -> str:
    """The claimed sign is established when the adjusted p < alpha and the estimate
    lies on the claimed side of `null` (the opposite side: `DIR_OPPOSITE`)."""
    if direction not in (1, -1) or not _finite(estimate, p_adjusted):
        return NOT_MEASURABLE
    if p_adjusted >= alpha or estimate == null:
        return DIR_NS
    return DIR_CLAIMED if direction * (estimate - null) > 0 else DIR_OPPOSITE


def magnitude_verdict(
    iv: Interval,
    paper: float | None,
    direction: int,
    detectable: float,
    *,
    bound: str = "point",
    null: float = 0.0,
    lower_bound_only: bool = False,
) -> str:
    """The paper's value against the interval `iv` (all on the same scale).

    paper None: `MAG_NONE`. A point claim: outside the interval, the measured effect
    is smaller or larger than the paper's (in the claimed direction); inside it,
    the paper's value is `MAG_INSIDE` only when the comparison could detect an
    effect that size (|paper - null| >= `detectable`), else `MAG_UNDERPOWERED`:
    a wide interval contains everything and is no evidence. ``bound="at least"``:
    the paper's value is a lower bound on the effect ("over 1%"); met when the
    whole interval lies at or beyond it. ``lower_bound_only``: the measured
    quantity is itself a lower bound on the truth (censored runs), so only "larger
    than the paper's" can be concluded."""
    if paper is None:
        return MAG_NONE
    if not iv.ok or direction not in (1, -1):
        return NOT_MEASURABLE
    e_lo, e_hi = sorted((direction * (iv.lo - null), direction * (iv.hi - null)))
    e_p = direction * (paper - null)
    powered = math.isfinite(detectable) and abs(e_p) >= detectable
    if lower_bound_only:
        return MAG_LARGER if e_lo > e_p else MAG_CENSORED
    if bound == "at least":
        if e_lo >= e_p:
            return MAG_BOUND_MET
        if e_hi < e_p:
            return MAG_BOUND_BELOW
        return MAG_BOUND_INSIDE if powered else MAG_UNDERPOWERED
    if e_p > e_hi:
        return MAG_SMALLER
    if e_p < e_lo:
        return MAG_LARGER
    return MAG_INSIDE if powered else MAG_UNDERPOWERED


def claim_verdict(direction: str, magnitude: str) -> str:
    """One word for a claim from its direction (after the correction) and magnitude:

    * `REPRODUCED`: the claimed sign is significant and the size agrees (paper's
      value inside an adequately powered interval, or its bound met or inside),
      or the claim has no size;
    * `DIRECTION_ONLY`: the sign is significant but the size differs;
    * `SIZE_UNRESOLVED`: the sign is significant, the size cannot be judged;
    * `CONTRADICTED`: the opposite sign is significant;
    * not significant: `UNDERPOWERED` when the paper's effect is below the
      detectable effect, `NOT_REPRODUCED` when the interval excludes the paper's
      effect, else `NOT_SIGNIFICANT`.
    """
    if direction == NOT_MEASURABLE or magnitude == NOT_MEASURABLE:
        return NOT_MEASURABLE
    if direction == DIR_OPPOSITE:
        return CONTRADICTED
    if direction == DIR_CLAIMED:
        if magnitude in (MAG_NONE, MAG_INSIDE, MAG_BOUND_MET, MAG_BOUND_INSIDE):
            return REPRODUCED
        if magnitude in (MAG_SMALLER, MAG_LARGER, MAG_BOUND_BELOW):
            return DIRECTION_ONLY
        return SIZE_UNRESOLVED
    if magnitude == MAG_UNDERPOWERED:
        return UNDERPOWERED
    if magnitude in (MAG_SMALLER, MAG_BOUND_BELOW):
        return NOT_REPRODUCED
    return NOT_SIGNIFICANT


def collapsed(error: float, num_classes: int | None, n_val: int | None = None) -> bool | None:
    """Whether a top-1 error cannot be told from chance, ``1 - 1/num_classes``: within
    three binomial standard errors of a chance-level classifier on `n_val` images
    (1% of the chance error when `n_val` is unknown). Tighter than `near_chance`: a
    slow arm that has begun to learn (85.8% error with 10 classes on 3,925 images is
    nine standard errors from chance) has not collapsed. None when num_classes is
    unknown."""
    if not num_classes or num_classes < 2 or not _finite(error):
        return None
    chance = 1.0 - 1.0 / num_classes
    margin = 3.0 * math.sqrt(chance * (1.0 - chance) / n_val) if n_val else 0.01 * chance
    return error >= chance - margin


def near_chance(error: float, num_classes: int | None, n_val: int | None = None) -> bool | None:
    """Whether a top-1 error is within a margin of chance, ``1 - 1/num_classes``.

    The margin is the larger of 5% of the chance error and three binomial
    standard errors of a chance-level classifier on `n_val` images: a net that
    never learned sits there, and differences between such nets are noise. None
    when num_classes is unknown."""
    if not num_classes or num_classes < 2 or not _finite(error):
        return None
    chance = 1.0 - 1.0 / num_classes
    margin = 0.05 * chance
    if n_val:
        margin = max(margin, 3.0 * math.sqrt(chance * (1.0 - chance) / n_val))
    return error >= chance - margin


@dataclass(frozen=True)
class TimeToTarget:
    """First epoch (1-based) whose training error is <= the target.

    ``epochs`` is None when the target was never reached in the ``observed``
    epochs: the run is *censored*, and ``bound`` (= observed) is a lower bound.
    """

    epochs: int | None
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
    errors: Sequence[float | None], target: float, epochs: Sequence[int] | None = None
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


def fractional_epochs_to_target(
    errors: Sequence[float | None], target: float, start: float, at: float = 1.0
) -> float | None:
    """When a training-error curve crosses ``target``, in fractional epochs: the
    curve is taken as linear between its points, from ``start`` (the error before
    training: chance) at 0 through ``errors[i]`` at epoch ``i + at``: ``at=1`` reads
    each value as the error at the end of its epoch, ``at=0.5`` as the error half way
    through it (an epoch's running mean, which is what a training log records). None
    when it never gets there."""
    prev_x, prev = 0.0, start
    for i, err in enumerate(errors):
        if err is None or not math.isfinite(err):
            return None
        x = i + at
        if err <= target:
            if prev <= target:  # only the start can be: already there before training
                return prev_x
            return prev_x + (x - prev_x) * (prev - target) / (prev - err)
        prev_x, prev = x, err
    return None


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
    log: Interval | None = None  # the interval on log values (its p, se, df, reason)

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
    return RatioSummary(exp(iv.estimate), exp(iv.lo), exp(iv.hi), mean, sd, iv.method, iv.n, iv)
