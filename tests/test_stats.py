"""reports.stats: intervals against SciPy, the bootstrap, verdict boundaries, epochs to target."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from reports import stats as S
from reports.collect import matches

NAN = float("nan")


# --------------------------------------------------------------------------------------
# mean / sd and t intervals
# --------------------------------------------------------------------------------------


def test_mean_sd():
    m, sd, n = S.mean_sd([0.1, 0.2, 0.4])
    assert (m, sd, n) == pytest.approx((np.mean([0.1, 0.2, 0.4]), np.std([0.1, 0.2, 0.4], ddof=1), 3))
    m, sd, n = S.mean_sd([0.3])
    assert m == 0.3 and math.isnan(sd) and n == 1
    m, sd, n = S.mean_sd([])
    assert math.isnan(m) and n == 0


def test_paired_t_matches_scipy():
    b = np.array([0.40, 0.42, 0.41, 0.43])
    v = np.array([0.415, 0.43, 0.428, 0.44])
    iv = S.paired_t_interval(b, v)
    ci = sps.ttest_rel(v, b).confidence_interval(0.95)
    assert iv.method == "paired t" and iv.n == 4 and iv.df == 3
    assert iv.estimate == pytest.approx((v - b).mean())
    assert (iv.lo, iv.hi) == pytest.approx((ci.low, ci.high), abs=1e-14)
    iv90 = S.paired_t_interval(b, v, level=0.90)
    assert iv90.hi - iv90.lo < iv.hi - iv.lo


def test_welch_matches_scipy():
    b = np.array([0.40, 0.42, 0.41])
    v = np.array([0.45, 0.41])
    iv = S.welch_interval(b, v)
    res = sps.ttest_ind(v, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    assert iv.method == "Welch t" and iv.n == (3, 2)
    assert (iv.lo, iv.hi) == pytest.approx((ci.low, ci.high), abs=1e-14)
    assert iv.df == pytest.approx(res.df)


def test_delta_interval_chooses_paired_or_welch():
    b = {0: 0.40, 1: 0.42, 2: 0.41}
    assert S.delta_interval(b, {0: 0.41, 1: 0.44, 2: 0.42}).method == "paired t"
    assert S.delta_interval(b, {0: 0.41, 1: 0.44}).method == "Welch t"
    assert S.delta_interval(b, {0: 0.41, 1: 0.44, 5: 0.42}).method == "Welch t"  # same n, other seeds
    one = S.delta_interval({0: 0.4}, {0: 0.5})
    assert one.estimate == pytest.approx(0.1) and not one.ok and one.method == "n/a"
    empty = S.delta_interval(b, {})
    assert math.isnan(empty.estimate)


def test_degenerate_interval_when_no_spread():
    iv = S.paired_t_interval([0.40, 0.41], [0.42, 0.43])
    assert iv.lo == pytest.approx(0.02) and iv.hi == pytest.approx(0.02)


# --------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------


def _wrong(p, n, seed):
    return (np.random.default_rng(seed).random(n) < p).astype(float)


def test_paired_bootstrap_reproducible_and_brackets():
    n = 2000
    base = np.stack([_wrong(0.40, n, s) for s in range(3)])
    var = np.stack([_wrong(0.44, n, 10 + s) for s in range(3)])
    a = S.paired_bootstrap(base, var, n_resamples=1000, seed=7)
    b = S.paired_bootstrap(base, var, n_resamples=1000, seed=7)
    c = S.paired_bootstrap(base, var, n_resamples=1000, seed=8)
    assert (a.lo, a.hi) == (b.lo, b.hi)
    assert (a.lo, a.hi) != (c.lo, c.hi)
    d = var.mean(0) - base.mean(0)
    assert a.estimate == pytest.approx(d.mean())
    assert a.lo < a.estimate < a.hi
    # Percentile interval ~ the normal approximation for a mean of n per-image differences.
    half = 1.96 * d.std(ddof=1) / math.sqrt(n)
    assert (a.hi - a.lo) / 2 == pytest.approx(half, rel=0.15)
    assert a.n == n and a.method == "bootstrap (images)"


def test_paired_bootstrap_identical_arms_and_shift():
    w = _wrong(0.3, 500, 0)
    iv = S.paired_bootstrap(w, w, n_resamples=200)
    assert (iv.estimate, iv.lo, iv.hi) == (0.0, 0.0, 0.0)
    sh = S.paired_bootstrap(w, w, n_resamples=200, shift=0.05)
    assert (sh.estimate, sh.lo, sh.hi) == pytest.approx((0.05, 0.05, 0.05))
    with pytest.raises(ValueError):
        S.paired_bootstrap(w, w[:10])


def test_paired_bootstrap_chunking_is_invisible():
    """Large validation sets are resampled in chunks; the draws are the same as one big draw."""
    n = 60_000  # > 2e6 // 2000 = 1000 resamples per chunk -> many chunks
    base, var = _wrong(0.4, n, 1), _wrong(0.41, n, 2)
    iv = S.paired_bootstrap(base, var, n_resamples=40, seed=3)
    rng = np.random.default_rng(3)
    d = var - base
    chunk = max(1, 2_000_000 // n)
    stats = np.concatenate([d[rng.integers(0, n, size=(min(chunk, 40 - s), n))].mean(1) for s in range(0, 40, chunk)])
    assert (iv.lo, iv.hi) == pytest.approx(tuple(np.quantile(stats, [0.025, 0.975])))


# --------------------------------------------------------------------------------------
# Verdict boundaries
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "est, lo, hi, direction, expected",
    [
        (0.02, 0.01, 0.03, +1, S.REPRODUCED),
        (0.02, 1e-12, 0.03, +1, S.REPRODUCED),  # just above 0
        (0.02, 0.0, 0.03, +1, S.SAME_NS),  # touching 0 does not exclude it
        (0.02, -0.01, 0.05, +1, S.SAME_NS),
        (-0.02, -0.05, 0.01, +1, S.OPPOSITE_NS),
        (-0.02, -0.03, 0.0, +1, S.OPPOSITE_NS),  # touching 0 from below
        (-0.02, -0.03, -1e-12, +1, S.CONTRADICTED),
        (0.0, -0.01, 0.01, +1, S.NO_DIFFERENCE),
        (0.0, 0.0, 0.0, +1, S.NO_DIFFERENCE),  # a degenerate interval at 0
        (-0.02, -0.03, -0.01, -1, S.REPRODUCED),  # claimed decrease
        (0.02, 0.01, 0.03, -1, S.CONTRADICTED),
        (-0.02, -0.03, 0.0, -1, S.SAME_NS),
        (0.02, 0.01, 0.03, 0, S.NOT_MEASURABLE),  # no direction
        (0.02, NAN, NAN, +1, S.NOT_MEASURABLE),
        (NAN, 0.01, 0.03, +1, S.NOT_MEASURABLE),
        (0.02, float("inf"), 0.03, +1, S.NOT_MEASURABLE),
    ],
)
def test_verdict_boundaries(est, lo, hi, direction, expected):
    assert S.verdict(est, lo, hi, direction) == expected


def test_verdict_n_claim_and_ratio_null():
    assert S.verdict(0.02, 0.01, 0.03, +1, n=1) == S.NOT_MEASURABLE
    assert S.verdict(0.02, 0.01, 0.03, +1, n=2) == S.REPRODUCED
    assert S.verdict(0.02, 0.01, 0.03, +1, claim=False) == S.NO_CLAIM
    assert S.verdict(NAN, NAN, NAN, +1, claim=False) == S.NO_CLAIM  # no claim wins over missing data
    # Ratios: the null is 1.
    assert S.verdict(5.0, 1.0001, 7.0, +1, null=1.0) == S.REPRODUCED
    assert S.verdict(5.0, 1.0, 7.0, +1, null=1.0) == S.SAME_NS
    assert S.verdict(0.8, 0.7, 0.9, +1, null=1.0) == S.CONTRADICTED
    # Interval endpoints given in either order.
    assert S.verdict(0.02, 0.03, 0.01, +1) == S.REPRODUCED


def test_verdicts_listed():
    assert len(set(S.VERDICTS)) == 7


# --------------------------------------------------------------------------------------
# Epochs to target and ratios
# --------------------------------------------------------------------------------------


def test_epochs_to_target_first_epoch_reaching():
    t = S.epochs_to_target([0.6, 0.4, 0.26, 0.25, 0.20], 0.25)
    assert t.epochs == 4 and t.reached and t.bound == 4 and str(t) == "4"  # <= target counts
    t = S.epochs_to_target([0.6, 0.24, 0.30, 0.10], 0.25)
    assert t.epochs == 2  # the first crossing, even if it goes back up
    t = S.epochs_to_target([0.2], 0.25)
    assert t.epochs == 1


def test_epochs_to_target_never_reached_is_censored():
    t = S.epochs_to_target([0.6, 0.5, 0.4], 0.25)
    assert t.epochs is None and not t.reached
    assert t.observed == 3 and t.bound == 3
    assert str(t) == "> 3 (not reached)"
    assert S.epochs_to_target([], 0.25).observed == 0


def test_epochs_to_target_nan_and_explicit_epochs():
    t = S.epochs_to_target([NAN, None, 0.1], 0.25)
    assert t.epochs == 3
    t = S.epochs_to_target([0.5, 0.2], 0.25, epochs=[4, 7])  # 1-based epochs with gaps
    assert t.epochs == 7
    t = S.epochs_to_target([0.5, NAN], 0.25, epochs=[1, 2])
    assert not t.reached and t.observed == 2


def test_ratio_interval_log_t():
    base = {0: 3, 1: 3, 2: 4}
    var = {0: 15, 1: 18, 2: 22}
    r = S.ratio_interval(base, var)
    lr = np.log([15 / 3, 18 / 3, 22 / 4])
    ci = sps.ttest_1samp(lr, 0.0).confidence_interval(0.95)
    assert r.method == "paired t"
    assert r.estimate == pytest.approx(math.exp(lr.mean()))
    assert (r.lo, r.hi) == pytest.approx((math.exp(ci.low), math.exp(ci.high)))
    ratios = np.exp(lr)
    assert (r.mean, r.sd) == pytest.approx((ratios.mean(), ratios.std(ddof=1)))
    assert r.contains(6.0) == (r.lo <= 6.0 <= r.hi)
    w = S.ratio_interval(base, {0: 15, 1: 18})
    assert w.method == "Welch t" and math.isnan(w.sd)
    one = S.ratio_interval({0: 3}, {0: 15})
    assert one.estimate == pytest.approx(5.0) and not one.ok


def test_config_matching_ignores_allowed_keys_and_float_noise():
    a = {"model.lrn": False, "train.learning_rate": 0.01, "train.epochs": 5}
    assert matches(a, {**a, "train.learning_rate": 0.02}, allowed=["train.learning_rate"])
    assert not matches(a, {**a, "train.learning_rate": 0.02})
    assert matches(a, {**a, "train.learning_rate": 0.1 * 0.1})
    assert not matches(a, {**a, "train.epochs": 6})
    assert not matches(a, {k: v for k, v in a.items() if k != "train.epochs"})
