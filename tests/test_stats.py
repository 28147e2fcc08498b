"""reports.stats: intervals and tests against SciPy, the bootstrap, Holm's correction by hand,
detectable effects by simulation, verdicts, chance levels, epochs to target."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from reports import stats as S
from reports.collect import matches

# Code that runs no Keras model differently per backend: `make test` runs it once.
pytestmark = pytest.mark.one_backend

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


def test_t_p_values_match_scipy():
    b = np.array([0.40, 0.42, 0.41, 0.43])
    v = np.array([0.415, 0.43, 0.428, 0.44])
    assert S.paired_t_interval(b, v).p == pytest.approx(sps.ttest_rel(v, b).pvalue, rel=1e-12)
    w = np.array([0.45, 0.41])
    assert S.welch_interval(b, w).p == pytest.approx(sps.ttest_ind(w, b, equal_var=False).pvalue, rel=1e-12)
    iv = S.paired_t_interval(b, v)
    assert iv.se == pytest.approx((v - b).std(ddof=1) / 2) and iv.sds == pytest.approx(((v - b).std(ddof=1),))


def test_zero_spread_gives_no_point_interval():
    """Two seeds that both move by +3.125 points: a t interval would be the point [d, d]."""
    iv = S.paired_t_interval([0.40, 0.41], [0.43125, 0.44125])
    assert iv.estimate == pytest.approx(0.03125)
    assert not iv.ok and math.isnan(iv.lo) and math.isnan(iv.hi) and math.isnan(iv.p)
    assert "no spread" in iv.reason and iv.method == "paired t"
    # Float noise around identical differences is still no spread.
    assert not S.paired_t_interval([0.45, 0.46, 0.47], [0.48, 0.49, 0.50]).ok
    w = S.welch_interval([0.40, 0.40], [0.45, 0.45, 0.45])
    assert not w.ok and "no spread" in w.reason and w.estimate == pytest.approx(0.05)
    # Spread on one side only is a proper interval: Welch's df reduce to the other arm's
    # n - 1, and the half-width to t(0.975, 2) * sd / sqrt(3) = 4.303 * 0.01 / 1.732.
    w = S.welch_interval([0.40, 0.40], [0.44, 0.45, 0.46])
    assert w.df == pytest.approx(2.0)
    assert (w.lo, w.hi) == pytest.approx((0.05 - 4.302653 * 0.01 / math.sqrt(3), 0.05 + 4.302653 * 0.01 / math.sqrt(3)))


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


def test_paired_bootstrap_identical_arms_is_no_interval():
    """Every image gives the same difference (nets at chance that predict one class):
    the resamples would all be equal, a point interval; none is returned."""
    w = _wrong(0.3, 500, 0)
    iv = S.paired_bootstrap(w, w, n_resamples=200)
    assert iv.estimate == 0.0 and not iv.ok and "no spread" in iv.reason
    sh = S.paired_bootstrap(w, w, n_resamples=200, shift=0.05)
    assert sh.estimate == pytest.approx(0.05) and not sh.ok
    with pytest.raises(ValueError):
        S.paired_bootstrap(w, w[:10])


def test_paired_bootstrap_p_value():
    """p = max(1, 2 min(#{stat <= 0}, #{stat >= 0})) / B, recomputed from the same draws: the
    tail counts of the percentile interval, so interval and test agree at every level."""
    n, B = 400, 500
    base, var = _wrong(0.40, n, 3), _wrong(0.45, n, 4)
    iv = S.paired_bootstrap(base, var, n_resamples=B, seed=5)
    d = var - base
    stats = d[np.random.default_rng(5).integers(0, n, size=(B, n))].mean(1)
    expect = min(1.0, max(1, 2 * min((stats <= 0).sum(), (stats >= 0).sum())) / B)
    assert iv.p == pytest.approx(expect)
    for level in (0.9, 0.95, 0.99):
        other = S.paired_bootstrap(base, var, n_resamples=B, seed=5, level=level)
        lo, hi = other.lo, other.hi
        if (stats <= 0).sum() not in (0, B):  # away from the interpolation's edge
            assert (lo > 0 or hi < 0) == (iv.p < 1 - level) or abs(iv.p - (1 - level)) < 2 / B
    assert iv.se == pytest.approx(stats.std(ddof=1)) and iv.df == math.inf


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
# Bonferroni's correction and its simultaneous intervals
# --------------------------------------------------------------------------------------


def test_bonferroni_hand_worked_caps_at_one_and_skips_missing():
    adj = S.bonferroni({"a": 0.01, "b": 0.04, "c": float("nan"), "d": None, "e": 0.6})
    # m = 3 (nan and None are not tested).
    assert adj["a"] == pytest.approx(0.03) and adj["b"] == pytest.approx(0.12) and adj["e"] == 1.0
    assert math.isnan(adj["c"]) and math.isnan(adj["d"])
    assert S.bonferroni({"a": 0.02}) == {"a": 0.02}  # a family of one is not adjusted


def test_simultaneous_intervals_exclude_zero_exactly_when_the_adjusted_p_rejects():
    """The reason for Bonferroni here: the interval printed beside each verdict agrees
    with it, for every family size and every data set."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        m = int(rng.integers(1, 9))
        level = S.simultaneous_level(m)
        assert level == pytest.approx(1 - 0.05 / m)
        n = int(rng.integers(2, 6))
        b = rng.normal(0.5, 0.02, n)
        v = b + rng.normal(rng.uniform(-0.03, 0.03), 0.01, n)
        iv = S.paired_t_interval(b, v, level)
        p_adj = S.bonferroni({"x": iv.p, **{i: 0.5 for i in range(m - 1)}})["x"]
        assert (p_adj < 0.05) == (iv.lo > 0 or iv.hi < 0)
        ref = sps.ttest_rel(v, b).confidence_interval(level)
        assert (iv.lo, iv.hi) == pytest.approx((ref.low, ref.high), rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------------------
# Detectable effects
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5])
def test_mde_has_the_stated_power_by_simulation(n):
    """Paired differences with true mean = MDE and the observed sd: a two-sided
    one-sample t test at 0.05 rejects in 80% of 40,000 simulated experiments."""
    sd = 0.02
    effect = S.mde(sd / math.sqrt(n), n - 1)
    x = np.random.default_rng(n).normal(effect, sd, size=(40_000, n))
    rate = (sps.ttest_1samp(x, 0.0, axis=1).pvalue < 0.05).mean()
    assert rate == pytest.approx(0.80, abs=0.01)
    # Larger than the normal-theory 2.80 se, and close to (t_.975 + t_.80) se for larger df.
    assert effect > 2.8 * sd / math.sqrt(n)
    approx = (sps.t.ppf(0.975, n - 1) + sps.t.ppf(0.80, n - 1)) * sd / math.sqrt(n)
    assert effect == pytest.approx(approx, rel={2: 0.2, 3: 0.06}.get(n, 0.02))


def test_mde_normal_and_undefined():
    # Normal reference: z_.975 + z_.80, less a hair for the far (wrong-sign) rejection tail.
    z = S.mde(1.0, math.inf)
    assert z == pytest.approx(sps.norm.ppf(0.975) + sps.norm.ppf(0.8), abs=1e-5)
    assert sps.norm.sf(sps.norm.ppf(0.975) - z) + sps.norm.cdf(-sps.norm.ppf(0.975) - z) == pytest.approx(0.8)
    assert math.isnan(S.mde(0.0, 2)) and math.isnan(S.mde(float("nan"), 2))


def test_seeds_needed_against_noncentral_t_power():
    """The fewest seeds per arm whose paired t test has 80% power for the paper's delta,
    with the power computed independently from scipy's noncentral t."""
    iv = S.paired_t_interval([0.40, 0.42, 0.41], [0.415, 0.44, 0.415])
    sd = iv.sds[0]

    def power(n, delta):
        nc, tc = delta / (sd / math.sqrt(n)), sps.t.ppf(0.975, n - 1)
        return sps.nct.sf(tc, n - 1, nc)

    for delta in (0.004, 0.014, 0.05):
        n = S.seeds_needed(delta, iv)
        assert power(n, delta) >= 0.8 - 1e-6 and (n == 2 or power(n - 1, delta) < 0.8)
    assert S.seeds_needed(None, iv) is None
    assert S.seeds_needed(1e-9, iv, cap=50) == 51
    # Welch: equal arms, the two observed sds.
    w = S.welch_interval([0.40, 0.42, 0.41], [0.45, 0.41])
    n = S.seeds_needed(0.03, w)
    v1, v2 = w.sds[0] ** 2, w.sds[1] ** 2
    df = lambda k: (v1 + v2) ** 2 * (k - 1) / (v1**2 + v2**2)  # noqa: E731
    pw = lambda k: sps.nct.sf(sps.t.ppf(0.975, df(k)), df(k), 0.03 / math.sqrt((v1 + v2) / k))  # noqa: E731
    assert pw(n) >= 0.8 - 1e-6 and pw(n - 1) < 0.8


# --------------------------------------------------------------------------------------
# Direction, magnitude, verdict
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "est, p_adj, direction, expected",
    [
        (0.02, 0.01, +1, S.DIR_CLAIMED),
        (0.02, 0.0499, +1, S.DIR_CLAIMED),
        (0.02, 0.05, +1, S.DIR_NS),  # p = alpha does not reject
        (-0.02, 0.01, +1, S.DIR_OPPOSITE),
        (-0.02, 0.01, -1, S.DIR_CLAIMED),  # a claimed decrease
        (0.0, 0.01, +1, S.DIR_NS),
        (0.02, NAN, +1, S.NOT_MEASURABLE),
        (0.02, 0.01, 0, S.NOT_MEASURABLE),
    ],
)
def test_direction_verdict(est, p_adj, direction, expected):
    assert S.direction_verdict(est, p_adj, direction) == expected


def _iv(lo, hi):
    return S.Interval((lo + hi) / 2, lo, hi, "paired t", 3, 2.0)


@pytest.mark.parametrize(
    "lo, hi, paper, mde, bound, expected",
    [
        (0.01, 0.03, 0.014, 0.01, "point", S.MAG_INSIDE),
        (0.01, 0.03, 0.014, 0.02, "point", S.MAG_UNDERPOWERED),  # inside, but the interval is too wide
        (-0.05, 0.08, 0.014, 0.06, "point", S.MAG_UNDERPOWERED),
        (0.02, 0.03, 0.014, 0.005, "point", S.MAG_LARGER),
        (0.001, 0.01, 0.014, 0.005, "point", S.MAG_SMALLER),
        (0.02, 0.03, 0.010, 0.005, "at least", S.MAG_BOUND_MET),  # "over 1%": 2-3 points agree
        (0.010, 0.03, 0.010, 0.005, "at least", S.MAG_BOUND_MET),
        (0.001, 0.008, 0.010, 0.005, "at least", S.MAG_BOUND_BELOW),
        (0.005, 0.03, 0.010, 0.005, "at least", S.MAG_BOUND_INSIDE),
        (0.005, 0.03, 0.010, 0.02, "at least", S.MAG_UNDERPOWERED),
        (0.01, 0.03, None, 0.01, "point", S.MAG_NONE),
    ],
)
def test_magnitude_verdict(lo, hi, paper, mde, bound, expected):
    assert S.magnitude_verdict(_iv(lo, hi), paper, +1, mde, bound=bound) == expected


def test_magnitude_claimed_decrease_and_lower_bounds():
    # direction -1: the paper claims -1.0; a measured [-3, -2] is a larger decrease.
    assert S.magnitude_verdict(_iv(-0.03, -0.02), -0.01, -1, 0.005) == S.MAG_LARGER
    assert S.magnitude_verdict(_iv(-0.005, -0.001), -0.01, -1, 0.002) == S.MAG_SMALLER
    # A censored ratio (log scale): the truth is at least the measured value.
    lg = S.Interval(math.log(5), math.log(4), math.log(7), "paired t", 3, 2.0)
    assert S.magnitude_verdict(lg, math.log(6), +1, 0.1, lower_bound_only=True) == S.MAG_CENSORED
    assert S.magnitude_verdict(lg, math.log(3), +1, 0.1, lower_bound_only=True) == S.MAG_LARGER
    assert S.magnitude_verdict(S.Interval(0.1, NAN, NAN, "n/a"), 0.01, +1, 0.1) == S.NOT_MEASURABLE


@pytest.mark.parametrize(
    "direction, magnitude, expected",
    [
        (S.DIR_CLAIMED, S.MAG_INSIDE, S.REPRODUCED),
        (S.DIR_CLAIMED, S.MAG_NONE, S.REPRODUCED),
        (S.DIR_CLAIMED, S.MAG_BOUND_MET, S.REPRODUCED),
        (S.DIR_CLAIMED, S.MAG_LARGER, S.DIRECTION_ONLY),
        (S.DIR_CLAIMED, S.MAG_BOUND_BELOW, S.DIRECTION_ONLY),
        (S.DIR_CLAIMED, S.MAG_UNDERPOWERED, S.SIZE_UNRESOLVED),
        (S.DIR_CLAIMED, S.MAG_CENSORED, S.SIZE_UNRESOLVED),
        (S.DIR_OPPOSITE, S.MAG_SMALLER, S.CONTRADICTED),
        (S.DIR_NS, S.MAG_UNDERPOWERED, S.UNDERPOWERED),
        (S.DIR_NS, S.MAG_SMALLER, S.NOT_REPRODUCED),
        (S.DIR_NS, S.MAG_INSIDE, S.NOT_SIGNIFICANT),
        (S.DIR_NS, S.MAG_NONE, S.NOT_SIGNIFICANT),
        (S.NOT_MEASURABLE, S.MAG_NONE, S.NOT_MEASURABLE),
    ],
)
def test_claim_verdict(direction, magnitude, expected):
    assert S.claim_verdict(direction, magnitude) == expected


def test_verdicts_listed():
    assert len(set(S.VERDICTS)) == len(S.VERDICTS) == 14
    assert "no difference" not in S.VERDICTS


# --------------------------------------------------------------------------------------
# Chance
# --------------------------------------------------------------------------------------


def test_near_chance():
    # 4 classes: chance 75%; 32 images: 3 binomial se = 3 sqrt(.75 .25 / 32) = 0.2296.
    assert S.near_chance(0.75, 4, 32) and S.near_chance(0.53, 4, 32)
    assert not S.near_chance(0.50, 4, 32)
    # Without a size, 5% of chance: 0.75 - 0.0375.
    assert S.near_chance(0.72, 4) and not S.near_chance(0.70, 4)
    # 1000 classes, 50,000 images: 5% of 99.9% dominates.
    assert S.near_chance(0.96, 1000, 50_000) and not S.near_chance(0.40, 1000, 50_000)
    assert S.near_chance(0.75, None) is None and S.near_chance(NAN, 4) is None


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
    assert r.log.p == pytest.approx(sps.ttest_1samp(lr, 0.0).pvalue)
    tied = S.ratio_interval({0: 3, 1: 4}, {0: 18, 1: 24})  # both seeds x6 exactly: no spread, no interval
    assert tied.estimate == pytest.approx(6.0) and not tied.ok and "no spread" in tied.log.reason


def test_config_matching_ignores_allowed_keys_and_float_noise():
    a = {"model.lrn": False, "train.learning_rate": 0.01, "train.epochs": 5}
    assert matches(a, {**a, "train.learning_rate": 0.02}, allowed=["train.learning_rate"])
    assert not matches(a, {**a, "train.learning_rate": 0.02})
    assert matches(a, {**a, "train.learning_rate": 0.1 * 0.1})
    assert not matches(a, {**a, "train.epochs": 6})
    assert not matches(a, {k: v for k, v in a.items() if k != "train.epochs"})
