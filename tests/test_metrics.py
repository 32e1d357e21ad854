"""Every metric against an independent reference (scoringrules, closed forms, hand cases)."""

import numpy as np
import pytest
import scoringrules as sr
from scipy import stats
from sklearn.metrics import roc_auc_score

from uqbench import metrics as M

RNG = np.random.default_rng(42)


@pytest.fixture(autouse=True)
def _own_generator(request):
    """Each test draws from a generator of its own, seeded by its name: its data do not
    depend on which tests ran before it (alone or in any order)."""
    import zlib

    global RNG
    RNG = np.random.default_rng(zlib.crc32(request.node.name.encode()))


def _naive_crps(y, x, fair):
    m = x.shape[0]
    spread = np.abs(x[:, None] - x[None, :]).sum((0, 1))
    return np.abs(x - y).mean(0) - spread / (2 * m * (m - 1) if fair else 2 * m * m)


@pytest.mark.parametrize("fair", [True, False])
@pytest.mark.parametrize("m", [2, 3, 8, 32])
def test_crps_ensemble_matches_scoringrules(fair, m):
    y = RNG.normal(size=(50, 3))
    x = RNG.normal(size=(m, 50, 3)) * 1.5 + 0.2
    got = M.crps_ensemble(y, x, fair=fair, reduce=False)
    ref = sr.crps_ensemble(y, x, m_axis=0, estimator="fair" if fair else "nrg", backend="numpy")
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got, _naive_crps(y, x, fair), rtol=0, atol=1e-9)
    assert M.crps_ensemble(y, x, fair=fair) == pytest.approx(ref.mean(), abs=1e-9)


def test_crps_ensemble_threaded_path_equals_direct():
    y = RNG.normal(size=200_000)
    x = RNG.normal(size=(4, 200_000))
    got = M.crps_ensemble(y, x, reduce=False)
    np.testing.assert_allclose(got, _naive_crps(y, x, True), atol=1e-12)


def test_crps_hand_case():
    # Two members {0, 2}, y = 1: fair = (1 + 1)/2 - 2*2/(2*2*1) = 0; standard = 1 - 4/8 = 0.5.
    y, x = np.array([1.0]), np.array([[0.0], [2.0]])
    assert M.crps_ensemble(y, x, fair=True) == pytest.approx(0.0, abs=1e-12)
    assert M.crps_ensemble(y, x, fair=False) == pytest.approx(0.5, abs=1e-12)


def test_fair_crps_with_one_sample_is_an_error():
    with pytest.raises(ValueError, match="at least 2 samples"):
        M.crps_ensemble(np.zeros(3), np.zeros((1, 3)), fair=True)
    assert M.crps_ensemble(np.zeros(3), np.ones((1, 3)), fair=False) == pytest.approx(1.0)


def test_crps_shape_checked():
    with pytest.raises(ValueError, match="shape"):
        M.crps_ensemble(np.zeros(3), np.zeros((4, 5)))


def test_crps_gaussian_matches_scoringrules():
    y, mu, sigma = RNG.normal(size=100), RNG.normal(size=100), RNG.uniform(0.1, 2, 100)
    ref = sr.crps_normal(y, mu, sigma, backend="numpy")
    np.testing.assert_allclose(M.crps_gaussian(y, mu, sigma, reduce=False), ref, atol=1e-9)


def test_crps_gaussian_is_limit_of_ensemble():
    """An ensemble at the Gaussian's quantiles (i + 1/2) / n: no sampling noise, and its
    CRPS tends to the closed form as n grows."""
    n = 20_000
    x = (stats.norm.ppf((np.arange(n) + 0.5) / n) * 0.7 + 0.3)[:, None]
    y = np.array([1.1])
    assert M.crps_ensemble(y, x) == pytest.approx(M.crps_gaussian(y, [0.3], [0.7]), abs=1e-4)


def test_nll_gaussian_matches_scipy():
    y, mu, sigma = RNG.normal(size=100), RNG.normal(size=100), RNG.uniform(0.1, 2, 100)
    ref = -stats.norm.logpdf(y, mu, sigma)
    np.testing.assert_allclose(M.nll_gaussian(y, mu, sigma, reduce=False), ref, atol=1e-9)


def test_nll_zero_std_is_infinite_not_nan():
    assert M.nll_gaussian([1.0], [0.0], [0.0]) == np.inf


def test_spearman_matches_ranked_pearson():
    y, mu, sigma = RNG.normal(size=300), RNG.normal(size=300), RNG.uniform(0.1, 2, 300)
    a, b = stats.rankdata(np.abs(mu - y)), stats.rankdata(sigma)
    ref = np.corrcoef(a, b)[0, 1]
    assert M.spearman_abs_error_std(y, mu, sigma) == pytest.approx(ref, abs=1e-9)
    # Perfect ranking: std proportional to |error|.
    assert M.spearman_abs_error_std(y, mu, np.abs(mu - y) * 3) == pytest.approx(1.0)


def test_calibration_and_area_match_uncertainty_toolbox():
    uct = pytest.importorskip("uncertainty_toolbox")
    y, mu = RNG.normal(size=500), RNG.normal(size=500) * 0.5
    sigma = RNG.uniform(0.2, 1.5, 500)
    exp, obs = uct.metrics_calibration.get_proportion_lists_vectorized(
        mu, sigma, y, num_bins=100, prop_type="interval"
    )
    got_exp, got_obs = M.calibration_curve(y, mu, sigma, n_levels=100)
    np.testing.assert_allclose(got_exp, exp, atol=1e-12)
    np.testing.assert_allclose(got_obs, obs, atol=1e-12)
    ref = uct.metrics_calibration.miscalibration_area(mu, sigma, y, num_bins=100)
    assert M.miscalibration_area(y, mu, sigma) == pytest.approx(ref, abs=1e-9)
    ref_sharp = uct.metrics_calibration.sharpness(sigma)
    assert M.sharpness(sigma) == pytest.approx(ref_sharp, abs=1e-12)


def test_miscalibration_area_hand_cases():
    # Zero residuals: every interval (even p = 0, which is [0, 0]) holds all targets, so the
    # curve is 1 everywhere and the area is the integral of 1 - p, 1/2.
    y = np.zeros(10)
    assert M.miscalibration_area(y, y, np.ones(10), n_levels=101) == pytest.approx(0.5)
    # Huge residuals: nothing inside until p = 1 (infinite interval): the curve is 0, then 1.
    # Area = 0.99^2 / 2 + the last segment (0.99 + 0) / 2 * 0.01 = 0.495.
    mu = np.r_[np.full(5, 100.0), np.full(5, -100.0)]
    assert M.miscalibration_area(y, mu, np.ones(10), n_levels=101) == pytest.approx(0.495)


def test_ence_and_rmse_rmv_hand_case():
    # Two bins of two targets: sigma {1, 1} errors {1, 1} -> calibrated; sigma {2, 2}
    # errors {1, 1} -> RMSE 1 vs RMV 2 -> |1 - 2| / 2 = 0.5. ENCE = (0 + 0.5) / 2.
    y = np.zeros(4)
    mu = np.array([1.0, -1.0, 1.0, -1.0])
    sigma = np.array([1.0, 1.0, 2.0, 2.0])
    rmv, rmse_b = M.rmse_rmv_curve(y, mu, sigma, n_bins=2)
    np.testing.assert_allclose(rmv, [1.0, 2.0])
    np.testing.assert_allclose(rmse_b, [1.0, 1.0])
    assert M.ence(y, mu, sigma, n_bins=2) == pytest.approx(0.25)


def test_coverage_hand_case_and_gaussian_limit():
    y = np.array([0.0, 0.0, 0.0, 0.0])
    mu = np.array([0.5, 1.5, 2.5, -1.0])
    sigma = np.ones(4)  # 95 % half width 1.95996
    assert M.coverage(y, mu, sigma, 0.95) == pytest.approx(0.75)
    big = RNG.normal(size=200_000)
    assert M.coverage(big, np.zeros_like(big), np.ones_like(big), 0.9) == pytest.approx(
        0.9, abs=5e-3)
    with pytest.raises(ValueError):
        M.coverage(y, mu, sigma, 1.5)


def test_rmse_mae():
    y, mu = np.array([0.0, 0.0]), np.array([3.0, -4.0])
    assert M.rmse(y, mu) == pytest.approx(np.sqrt(12.5))
    assert M.mae(y, mu) == pytest.approx(3.5)


def test_ood_auroc_matches_sklearn_and_ties():
    a, b = RNG.normal(size=50), RNG.normal(size=70) + 0.5
    ref = roc_auc_score(np.r_[np.zeros(50), np.ones(70)], np.r_[a, b])
    assert M.ood_auroc(a, b) == pytest.approx(ref, abs=1e-12)
    assert M.ood_auroc([1.0, 1.0], [1.0]) == pytest.approx(0.5)
    assert M.ood_auroc([0.0], [1.0]) == 1.0


@pytest.mark.parametrize("fn", [
    lambda y, m, s: M.crps_gaussian(y, m, s),
    lambda y, m, s: M.nll_gaussian(y, m, s),
    lambda y, m, s: M.spearman_abs_error_std(y, m, s),
    lambda y, m, s: M.miscalibration_area(y, m, s),
    lambda y, m, s: M.ence(y, m, s),
    lambda y, m, s: M.coverage(y, m, s),
    lambda y, m, s: M.rmse(y, m),
    lambda y, m, s: M.mae(y, m),
    lambda y, m, s: M.crps_ensemble(y, np.stack([m, m + s])),
    lambda y, m, s: M.ood_auroc(s, s + 1),
])
def test_nonfinite_predictions_are_not_averaged_away(fn):
    y, mu, sigma = RNG.normal(size=30), RNG.normal(size=30), RNG.uniform(0.1, 1, 30)
    assert np.isfinite(fn(y, mu, sigma))
    mu_bad = mu.copy()
    mu_bad[3] = np.nan
    sigma_bad = sigma.copy()
    sigma_bad[5] = np.inf
    assert np.isnan(fn(y, mu_bad, sigma)) or np.isnan(fn(y, mu, sigma_bad))


def test_metric_table_is_complete_and_directions_valid():
    keys = [m.key for m in M.BUILTIN]
    assert len(keys) == len(set(keys))
    for spec in M.BUILTIN:
        assert spec.direction in {"lower", "higher", "target", "reference"}
        assert spec.label and spec.summary
        assert (spec.direction == "target") == (spec.ideal is not None)


def test_student_t_crps_and_nll_match_scoringrules_and_scipy():
    n = 200
    y, mu = RNG.normal(size=n), RNG.normal(size=n)
    sd, nu = RNG.uniform(0.1, 2, n), RNG.uniform(2.1, 40, n)
    scale = sd * np.sqrt((nu - 2) / nu)
    np.testing.assert_allclose(M.t_scale(sd, nu), scale)
    np.testing.assert_allclose(M.crps_student_t(y, mu, sd, nu, reduce=False),
                               sr.crps_t(y, nu, mu, scale, backend="numpy"), atol=1e-9)
    np.testing.assert_allclose(M.nll_student_t(y, mu, sd, nu, reduce=False),
                               -stats.t.logpdf(y, nu, mu, scale), atol=1e-9)
    # the std really is the std: a t with this scale has variance sd^2
    np.testing.assert_allclose(stats.t.std(nu, scale=scale), sd)
    # many degrees of freedom: the Gaussian forms
    np.testing.assert_allclose(M.crps_student_t(y, mu, sd, 1e8), M.crps_gaussian(y, mu, sd),
                               rtol=1e-6)


def test_student_t_intervals_are_the_t_quantiles():
    n, nu = 200_000, 3.0
    sd = RNG.uniform(0.5, 2, n)
    y = stats.t.rvs(nu, scale=sd * np.sqrt((nu - 2) / nu), random_state=RNG)
    mu = np.zeros(n)
    # calibrated as a t; the Gaussian intervals of the same std over-cover at 95 %
    assert abs(M.coverage(y, mu, sd, 0.95, df=np.full(n, nu)) - 0.95) < 0.003
    assert M.coverage(y, mu, sd, 0.95) > 0.955
    assert M.miscalibration_area(y, mu, sd, df=np.full(n, nu)) < 0.005
    assert M.miscalibration_area(y, mu, sd) > 0.02


LEVEL_MAP = np.array([[0, 0], [0.2, 0.05], [0.5, 0.5], [0.8, 0.95], [1, 1.0]])


def _recalibrated_cdf(x, mu, sd):
    return np.interp(stats.norm.cdf((x - mu) / sd), LEVEL_MAP[:, 0], LEVEL_MAP[:, 1])


def test_level_map_scores_match_direct_integration():
    from scipy import integrate

    from uqbench.metrics import level_map as LM

    y, mu, sd = RNG.normal(size=4), RNG.normal(size=4), RNG.uniform(0.3, 2, 4)
    crps = LM.crps(y, mu, sd, LEVEL_MAP, reduce=False)
    nll = LM.nll(y, mu, sd, LEVEL_MAP, reduce=False)
    for j in range(4):
        def sq(x, j=j):
            return (_recalibrated_cdf(x, mu[j], sd[j]) - (x >= y[j])) ** 2

        lo, hi = mu[j] - 12 * sd[j], mu[j] + 12 * sd[j]
        ref = (integrate.quad(sq, lo, y[j], limit=400)[0]
               + integrate.quad(sq, y[j], hi, limit=400)[0])
        assert crps[j] == pytest.approx(ref, rel=1e-4)
        h = 1e-6
        density = (_recalibrated_cdf(y[j] + h, mu[j], sd[j])
                   - _recalibrated_cdf(y[j] - h, mu[j], sd[j])) / (2 * h)
        assert nll[j] == pytest.approx(-np.log(density), rel=1e-6)
    # moments of the standardised recalibrated distribution
    slopes = np.diff(LEVEL_MAP[:, 1]) / np.diff(LEVEL_MAP[:, 0])

    def density(z):
        seg = np.clip(np.searchsorted(LEVEL_MAP[:, 0], stats.norm.cdf(z), side="right") - 1,
                      0, len(slopes) - 1)
        return slopes[seg] * stats.norm.pdf(z)

    m = integrate.quad(lambda z: z * density(z), -12, 12, limit=400)[0]
    v = integrate.quad(lambda z: z * z * density(z), -12, 12, limit=400)[0] - m * m
    assert LM.std_ratio(LEVEL_MAP)[0] == pytest.approx(np.sqrt(v), rel=1e-6)
    assert LM.mean_shift(LEVEL_MAP)[0] == pytest.approx(m, abs=1e-9)


def test_identity_level_map_is_the_base_distribution():
    from uqbench.metrics import level_map as LM

    n = 500
    y, mu, sd = RNG.normal(size=n), RNG.normal(size=n), RNG.uniform(0.3, 2, n)
    nu = RNG.uniform(2.5, 20, n)
    identity = np.array([[0.0, 0.0], [1.0, 1.0]])
    assert LM.crps(y, mu, sd, identity) == pytest.approx(M.crps_gaussian(y, mu, sd), rel=1e-4)
    assert LM.crps(y, mu, sd, identity, df=nu) == pytest.approx(
        M.crps_student_t(y, mu, sd, nu), rel=1e-4)
    assert LM.nll(y, mu, sd, identity) == pytest.approx(M.nll_gaussian(y, mu, sd), rel=1e-10)
    assert LM.nll(y, mu, sd, identity, df=nu) == pytest.approx(
        M.nll_student_t(y, mu, sd, nu), rel=1e-10)
    assert M.coverage(y, mu, sd, 0.9, level_map=identity, base_std=sd) == pytest.approx(
        M.coverage(y, mu, sd, 0.9))
    assert M.miscalibration_area(y, mu, sd, level_map=identity, base_std=sd) == pytest.approx(
        M.miscalibration_area(y, mu, sd), abs=1e-9)
    with pytest.raises(ValueError, match="strictly increasing"):
        LM.check_level_map([[0, 0], [0.5, 0.5], [0.5, 0.7], [1, 1]])


@pytest.mark.parametrize("nu", [2.5, 4.0, 12.0])
def test_level_map_moments_over_a_student_t_base(nu):
    from scipy import integrate

    from uqbench.metrics import level_map as LM

    k = np.sqrt(nu / (nu - 2))
    slopes = np.diff(LEVEL_MAP[:, 1]) / np.diff(LEVEL_MAP[:, 0])

    def density(z):
        level = stats.t.cdf(z * k, nu)
        seg = np.clip(np.searchsorted(LEVEL_MAP[:, 0], level, side="right") - 1, 0,
                      len(slopes) - 1)
        return slopes[seg] * stats.t.pdf(z * k, nu) * k

    m = integrate.quad(lambda z: z * density(z), -np.inf, np.inf, limit=500)[0]
    v = integrate.quad(lambda z: z * z * density(z), -np.inf, np.inf, limit=500)[0] - m * m
    assert LM.std_ratio(LEVEL_MAP, df=np.array([nu]))[0] == pytest.approx(np.sqrt(v), rel=1e-6)
    assert LM.mean_shift(LEVEL_MAP, df=np.array([nu]))[0] == pytest.approx(m, abs=1e-9)
    identity = np.array([[0.0, 0.0], [1.0, 1.0]])
    assert LM.std_ratio(identity, df=np.array([nu]))[0] == pytest.approx(1.0, rel=1e-9)
