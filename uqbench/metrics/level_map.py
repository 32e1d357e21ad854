"""Predictive distributions recalibrated by a map of CDF levels (Kuleshov et al. 2018).

A base predictive per value, Gaussian or Student-t (``df``) with mean ``mu`` and std
``base_std``, has CDF F; a monotone map R of [0, 1] onto itself (``level_map``: knots
``[K, 2]`` of (level, recalibrated level), strictly increasing, from (0, 0) to (1, 1),
linear in between) makes the recalibrated CDF G = R o F. These functions score G exactly
where a closed form exists and by quadrature over its quantiles where not:

- PIT values G(y), hence calibration curves and coverage, are exact;
- the NLL is exact: -log R'(F(y)) - log f(y);
- the CRPS is 2 int_0^1 pinball_tau(y - Q(tau)) dtau with Q = F^-1 o R^-1, by the midpoint
  rule on ``N_LEVELS`` levels (the unbounded quantiles at the ends make the error about
  1 / N_LEVELS: below 1e-5 relative at 4096 levels, tested against direct integration);
- the mean and std of G exactly, from the base family's partial moments on each segment.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.special import ndtr

N_LEVELS = 4096
_CHUNK = 512  # values per block of the quadrature (N_LEVELS x _CHUNK floats in memory)


def check_level_map(level_map: np.ndarray) -> np.ndarray:
    """The knots as a float array [K, 2], checked: strictly increasing in both columns,
    from (0, 0) to (1, 1)."""
    knots = np.asarray(level_map, dtype=np.float64)
    if knots.ndim != 2 or knots.shape[1] != 2 or knots.shape[0] < 2:
        raise ValueError(f"a level map is [K, 2] knots, K >= 2; got shape {knots.shape}")
    x, y = knots[:, 0], knots[:, 1]
    if not (np.all(np.diff(x) > 0) and np.all(np.diff(y) > 0)):
        raise ValueError("a level map must be strictly increasing")
    if x[0] != 0 or y[0] != 0 or x[-1] != 1 or y[-1] != 1:
        raise ValueError("a level map runs from (0, 0) to (1, 1)")
    return knots


def _unit_scale(df: np.ndarray | None) -> np.ndarray | float:
    """z (standardised by the std) times this is the Student-t's own variable."""
    return 1.0 if df is None else np.sqrt(df / (df - 2.0))


def base_cdf(z: np.ndarray, df: np.ndarray | None = None) -> np.ndarray:
    """CDF of the unit-variance base family at z."""
    if df is None:
        return ndtr(z)
    return stats.t.cdf(z * _unit_scale(df), df)


def base_logpdf(z: np.ndarray, df: np.ndarray | None = None) -> np.ndarray:
    """Log density of the unit-variance base family at z."""
    if df is None:
        return stats.norm.logpdf(z)
    k = _unit_scale(df)
    return stats.t.logpdf(z * k, df) + np.log(k)


def base_quantile(level: np.ndarray, df: np.ndarray | None = None) -> np.ndarray:
    """Quantile of the unit-variance base family."""
    if df is None:
        return stats.norm.ppf(level)
    return stats.t.ppf(level, df) / _unit_scale(df)


def pit(y_true, y_pred, base_std, level_map, df=None) -> np.ndarray:
    """G(y) = R(F(y)) per value."""
    knots = check_level_map(level_map)
    z = (np.asarray(y_true, float) - np.asarray(y_pred, float)) / np.asarray(base_std, float)
    return np.interp(base_cdf(z, df), knots[:, 0], knots[:, 1])


def _levels() -> np.ndarray:
    return (np.arange(N_LEVELS) + 0.5) / N_LEVELS


def _standard_quantiles(level_map: np.ndarray, df: np.ndarray | None,
                        index: slice) -> np.ndarray:
    """Q of the standardised G at the quadrature levels [N_LEVELS, n] for values ``index``
    (one column for every value where there is no df)."""
    knots = check_level_map(level_map)
    inner = np.interp(_levels(), knots[:, 1], knots[:, 0])  # R^-1(tau)
    if df is None:
        return base_quantile(inner)[:, None]
    return base_quantile(inner[:, None], np.asarray(df, float)[index][None, :])


def _gaussian_moments(level_map: np.ndarray) -> tuple[float, float]:
    """Mean and std of the standardised G over a Gaussian base, exactly: on each segment of
    R (slope s over base levels [x_k, x_k+1], base values [a, b]) the density is s phi(z),
    and int z phi = phi(a) - phi(b), int z^2 phi = [Phi(z) - z phi(z)]_a^b."""
    knots = check_level_map(level_map)
    slopes = np.diff(knots[:, 1]) / np.diff(knots[:, 0])
    z = stats.norm.ppf(knots[:, 0])  # -inf .. inf at the ends
    pdf = stats.norm.pdf(z)
    finite = np.isfinite(z)
    z_pdf = np.zeros_like(z)
    z_pdf[finite] = z[finite] * pdf[finite]
    first = slopes * (pdf[:-1] - pdf[1:])
    second = slopes * ((knots[1:, 0] - z_pdf[1:]) - (knots[:-1, 0] - z_pdf[:-1]))
    mean = float(first.sum())
    return mean, float(np.sqrt(max(second.sum() - mean**2, 0.0)))


def _student_t_moments(level_map: np.ndarray, df: np.ndarray) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    """Mean and std of the standardised G over a unit-variance Student-t base, per df,
    exactly: on a segment with t-values [a, b], int t f = [-(nu + t^2) f(t) / (nu - 1)]_a^b
    and int t^2 f = nu (nu - 1) / (nu - 2) [F_(nu-2)(t c)]_a^b - nu [F_nu(t)]_a^b, with
    c = sqrt((nu - 2) / nu) (which also turns t into the unit-variance z)."""
    knots = check_level_map(level_map)
    slopes = np.diff(knots[:, 1]) / np.diff(knots[:, 0])
    nu = np.asarray(df, dtype=np.float64)[None, :]
    t = stats.t.ppf(knots[:, 0][:, None], nu)  # [K, n], -inf .. inf at the ends
    f = stats.t.pdf(t, nu)
    edge = np.where(np.isfinite(t), -(nu + np.where(np.isfinite(t), t, 0.0) ** 2) * f
                    / (nu - 1.0), 0.0)
    c = np.sqrt((nu - 2.0) / nu)
    lower_cdf = stats.t.cdf(t * c, nu - 2.0)
    first = (slopes[:, None] * np.diff(edge, axis=0)).sum(0)
    second = (slopes[:, None] * (nu * (nu - 1.0) / (nu - 2.0) * np.diff(lower_cdf, axis=0)
                                 - nu * np.diff(knots[:, 0])[:, None])).sum(0)
    c = c[0]
    mean = c * first
    return mean, np.sqrt(np.maximum(c * c * second - mean**2, 0.0))


def std_ratio(level_map: np.ndarray, df: np.ndarray | None = None, n: int = 1) -> np.ndarray:
    """std(G) / base_std per value ([n], or one value broadcast where there is no df),
    exactly (Gaussian or Student-t base)."""
    if df is None:
        return np.full(n, _gaussian_moments(level_map)[1])
    return _student_t_moments(level_map, df)[1]


def mean_shift(level_map: np.ndarray, df: np.ndarray | None = None,
               n: int = 1) -> np.ndarray:
    """(mean(G) - mu) / base_std per value, exactly."""
    if df is None:
        return np.full(n, _gaussian_moments(level_map)[0])
    return _student_t_moments(level_map, df)[0]


def crps(y_true, y_pred, base_std, level_map, df=None, reduce: bool = True):
    """CRPS of G by the quantile (pinball) form on N_LEVELS midpoint levels."""
    y = np.asarray(y_true, float).ravel()
    mu = np.asarray(y_pred, float).ravel()
    sigma = np.asarray(base_std, float).ravel()
    tau = _levels()[:, None]
    out = np.empty(y.size)
    for j0 in range(0, y.size, _CHUNK):
        block = slice(j0, min(y.size, j0 + _CHUNK))
        q = mu[block] + sigma[block] * _standard_quantiles(level_map, df, block)
        u = y[block] - q
        out[block] = 2.0 * np.mean(u * (tau - (u < 0)), axis=0)
    out = out.reshape(np.shape(y_true))
    return float(out.mean()) if reduce else out


def nll(y_true, y_pred, base_std, level_map, df=None, reduce: bool = True):
    """-log g(y) with g = R'(F(y)) f(y) / base_std (nats)."""
    knots = check_level_map(level_map)
    y = np.asarray(y_true, float)
    sigma = np.asarray(base_std, float)
    z = (y - np.asarray(y_pred, float)) / sigma
    level = base_cdf(z, df)
    slopes = np.diff(knots[:, 1]) / np.diff(knots[:, 0])
    segment = np.clip(np.searchsorted(knots[:, 0], level, side="right") - 1, 0,
                      len(slopes) - 1)
    out = -np.log(slopes[segment]) - base_logpdf(z, df) + np.log(sigma)
    return float(out.mean()) if reduce else out


def fit_level_map(levels: np.ndarray, n_knots: int = 256) -> np.ndarray:
    """R from the PIT values ``levels`` of a calibration set: the isotonic regression of the
    empirical frequency P(F(Y) <= p) on p (Kuleshov et al. 2018). For these pairs, sorted by
    p, the frequencies already increase, so the regression is the PIT's empirical CDF
    itself; it is kept at ``n_knots`` quantiles (linear between) and made strictly
    increasing, from (0, 0) to (1, 1)."""
    p = np.sort(np.asarray(levels, float).ravel())
    p = p[np.isfinite(p)]
    if p.size == 0:
        return np.array([[0.0, 0.0], [1.0, 1.0]])
    k = min(n_knots, p.size)
    y = np.arange(1, k + 1) / (k + 1)
    x = np.quantile(p, y)
    x = np.clip(x, 1e-12, 1 - 1e-12)
    x, first = np.unique(x, return_index=True)  # tied PIT values: one knot
    y = y[first]
    knots = np.column_stack([np.r_[0.0, x, 1.0], np.r_[0.0, y, 1.0]])
    return check_level_map(knots)
