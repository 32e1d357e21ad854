"""Metric functions: pure NumPy, truth first.

Gaussian metrics take ``(y_true, y_pred, y_std)``; sample metrics ``(y_true, samples)`` with
the sample axis first. Student-t forms take the predictive *std* and the degrees of freedom
``df`` (> 2, so the std exists): the t's scale is ``std * sqrt((df - 2) / df)``; the
interval metrics take an optional ``df`` and use the t's quantiles where it is given.
Non-finite inputs are never averaged away: a metric over inputs with any NaN or infinity
is NaN (the scorer also counts them).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import stats
from scipy.special import betaln, gammaln, ndtr, ndtri

_CHUNK = 4096  # columns per block: keeps the working set in cache (measured in benchmarks/)
MAX_THREADS: int | None = None  # threads for large CRPS inputs; None = os.cpu_count()


def _arrays(*arrays: np.ndarray) -> list[np.ndarray]:
    out = [np.asarray(a, dtype=np.float64) for a in arrays]
    shape = out[0].shape
    for a in out[1:]:
        if a.shape != shape:
            raise ValueError(f"shape mismatch: {a.shape} vs {shape}")
    return out


def _all_finite(*arrays: np.ndarray) -> bool:
    return all(bool(np.isfinite(a).all()) for a in arrays)


def crps_ensemble(
    y_true: np.ndarray, samples: np.ndarray, fair: bool = True, reduce: bool = True
) -> float | np.ndarray:
    """CRPS of an ensemble forecast, sample axis first: ``samples.shape == (S, *y_true.shape)``.

    ``fair=True`` is the unbiased estimator (Ferro 2008), which needs S >= 2;
    ``fair=False`` the standard (plug-in) estimator. The spread term uses sorted samples,
    sum_ij |x_i - x_j| = 2 sum_k (2k - S - 1) x_(k), so the cost is O(S log S) per target
    and no S x S array is formed.
    """
    y = np.asarray(y_true, dtype=np.float64)
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != y.ndim + 1 or x.shape[1:] != y.shape:
        raise ValueError(f"samples must have shape (S, *{y.shape}); got {x.shape}")
    m = x.shape[0]
    if m < 1:
        raise ValueError("crps_ensemble needs at least one sample")
    if fair and m < 2:
        raise ValueError("the fair CRPS estimator needs at least 2 samples (got 1)")
    y_flat = y.reshape(-1)
    x_flat = x.reshape(m, -1)
    out = np.empty(y_flat.size)
    weights = 2.0 * np.arange(1, m + 1) - m - 1
    spread_norm = 1.0 / (m * (m - 1)) if fair else 1.0 / (m * m)

    def block(j0: int) -> None:
        j1 = min(y_flat.size, j0 + _CHUNK)
        # A contiguous (targets x samples) copy: sorting along the last axis is cache-friendly.
        c = np.ascontiguousarray(x_flat[:, j0:j1].T)
        abs_err = np.abs(c - y_flat[j0:j1, None]).sum(axis=1)
        c.sort(axis=1)
        out[j0:j1] = abs_err / m - (c @ weights) * spread_norm

    starts = range(0, y_flat.size, _CHUNK)
    threads = MAX_THREADS or os.cpu_count() or 1
    if threads > 1 and y_flat.size >= 16 * _CHUNK:  # NumPy releases the GIL in these kernels
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(block, starts))
    else:
        for j0 in starts:
            block(j0)
    nonfinite = ~np.isfinite(x_flat).all(axis=0) | ~np.isfinite(y_flat)
    out[nonfinite] = np.nan
    out = out.reshape(y.shape)
    return float(out.mean()) if reduce else out


def crps_gaussian(
    y_true: np.ndarray, y_pred: np.ndarray, y_std: np.ndarray, reduce: bool = True
) -> float | np.ndarray:
    """Closed-form CRPS of N(y_pred, y_std^2): sigma [z(2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)]."""
    y, mu, sigma = _arrays(y_true, y_pred, y_std)
    z = (y - mu) / sigma
    pdf = np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)
    out = sigma * (z * (2.0 * ndtr(z) - 1.0) + 2.0 * pdf - 1.0 / np.sqrt(np.pi))
    return float(out.mean()) if reduce else out


def nll_gaussian(
    y_true: np.ndarray, y_pred: np.ndarray, y_std: np.ndarray, reduce: bool = True
) -> float | np.ndarray:
    """Negative log-likelihood of y_true under N(y_pred, y_std^2), in nats.

    A zero std is the limit sigma -> 0: +inf for any error, -inf for an exact hit.
    """
    y, mu, sigma = _arrays(y_true, y_pred, y_std)
    zero = sigma == 0
    safe = np.where(zero, 1.0, sigma)
    out = 0.5 * np.log(2.0 * np.pi * safe**2) + 0.5 * ((y - mu) / safe) ** 2
    out = np.where(zero, np.where(y == mu, -np.inf, np.inf), out)
    return float(out.mean()) if reduce else out


def t_scale(y_std: np.ndarray, df: np.ndarray) -> np.ndarray:
    """The scale of a Student-t with ``df`` > 2 degrees of freedom and standard deviation
    ``y_std``: std * sqrt((df - 2) / df)."""
    return np.asarray(y_std, dtype=np.float64) * np.sqrt((df - 2.0) / df)


def crps_student_t(
    y_true: np.ndarray, y_pred: np.ndarray, y_std: np.ndarray, df: np.ndarray,
    reduce: bool = True,
) -> float | np.ndarray:
    """Closed-form CRPS of a Student-t with location y_pred, std y_std and ``df`` > 2
    (Jordan, Krueger & Lerch 2019, scoringRules): with scale s and z = (y - mu) / s,
    s [z (2 F(z) - 1) + 2 f(z) (df + z^2) / (df - 1)
       - 2 sqrt(df) B(1/2, df - 1/2) / ((df - 1) B(1/2, df/2)^2)]."""
    y, mu, sigma, nu = _arrays(y_true, y_pred, y_std, np.broadcast_to(df, np.shape(y_true)))
    s = t_scale(sigma, nu)
    z = (y - mu) / s
    cdf, pdf = stats.t.cdf(z, nu), stats.t.pdf(z, nu)
    const = 2.0 * np.sqrt(nu) * np.exp(betaln(0.5, nu - 0.5) - 2.0 * betaln(0.5, nu / 2.0))
    out = s * (z * (2.0 * cdf - 1.0) + 2.0 * pdf * (nu + z * z) / (nu - 1.0)
               - const / (nu - 1.0))
    return float(out.mean()) if reduce else out


def nll_student_t(
    y_true: np.ndarray, y_pred: np.ndarray, y_std: np.ndarray, df: np.ndarray,
    reduce: bool = True,
) -> float | np.ndarray:
    """Negative log-likelihood (nats) of y_true under a Student-t with location y_pred,
    std y_std and ``df`` > 2 degrees of freedom."""
    y, mu, sigma, nu = _arrays(y_true, y_pred, y_std, np.broadcast_to(df, np.shape(y_true)))
    s = t_scale(sigma, nu)
    z = (y - mu) / s
    out = (gammaln(nu / 2.0) - gammaln((nu + 1.0) / 2.0) + 0.5 * np.log(nu * np.pi)
           + np.log(s) + 0.5 * (nu + 1.0) * np.log1p(z * z / nu))
    return float(out.mean()) if reduce else out


def standard_quantile(level: np.ndarray, df: np.ndarray | None) -> np.ndarray:
    """Quantile of the unit-variance predictive family: Gaussian, or Student-t with ``df``
    (per target; broadcast against ``level``)."""
    if df is None:
        return ndtri(level)
    return stats.t.ppf(level, df) * np.sqrt((df - 2.0) / df)


def spearman_abs_error_std(y_true: np.ndarray, y_pred: np.ndarray, y_std: np.ndarray) -> float:
    """Spearman rank correlation between |y_pred - y_true| and y_std (higher is better)."""
    y, mu, sigma = _arrays(y_true, y_pred, y_std)
    if not _all_finite(y, mu, sigma) or y.size < 2:
        return float("nan")
    return float(stats.spearmanr(np.abs(mu - y).ravel(), sigma.ravel()).statistic)


def robust_location_spread(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample median and IQR / 1.349 (a Gaussian's std) along the first (sample) axis:
    a location and spread that one far sample cannot move much."""
    x = np.asarray(samples, dtype=np.float64)
    q25, q50, q75 = np.percentile(x, [25.0, 50.0, 75.0], axis=0)
    return q50, (q75 - q25) / IQR_PER_STD


def tail_ratio(samples: np.ndarray) -> np.ndarray:
    """Per target, the largest |sample - sample median| over the sample IQR (inf where the
    IQR is zero and a sample differs): about 1-2 for Gaussian samples, large when one
    sample lies far from the rest."""
    x = np.asarray(samples, dtype=np.float64)
    q25, q50, q75 = np.percentile(x, [25.0, 50.0, 75.0], axis=0)
    far = np.abs(x - q50).max(axis=0)
    iqr = q75 - q25
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(far == 0, 0.0, far / iqr)


#: IQR of a standard normal distribution: 2 Phi^-1(0.75).
IQR_PER_STD = 1.3489795003921634


def calibration_curve(
    y_true: np.ndarray, y_pred: np.ndarray, y_std: np.ndarray, n_levels: int = 100,
    df: np.ndarray | None = None, level_map: np.ndarray | None = None,
    base_std: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Expected vs observed proportion in centred Gaussian intervals (uncertainty-toolbox).

    For each expected proportion p in linspace(0, 1, n_levels), the observed proportion is
    the fraction of z = (y_pred - y_true) / y_std inside [Phi^-1(1/2 - p/2), Phi^-1(1/2 + p/2)].
    With ``df`` the intervals are the Student-t's (per target): the observed proportion is
    then the fraction of PIT values F(y) in [1/2 - p/2, 1/2 + p/2]; with a ``level_map``
    (isotonic recalibration) the PIT values are R(F(y)), F at ``base_std``.
    """
    y, mu, sigma = _arrays(y_true, y_pred, y_std)
    expected = np.linspace(0.0, 1.0, n_levels)
    if not _all_finite(y, mu, sigma):
        return expected, np.full(n_levels, np.nan)
    if level_map is not None:
        from uqbench.metrics.level_map import pit

        z = np.sort(pit(y, mu, base_std, level_map, df).ravel())
        lower, upper = 0.5 - expected / 2.0, 0.5 + expected / 2.0
    elif df is None:
        z = np.sort(((mu - y) / sigma).ravel())
        lower = ndtri(0.5 - expected / 2.0)
        upper = ndtri(0.5 + expected / 2.0)
    else:  # the same count on the probability scale: |F(y) - 1/2| <= p / 2
        nu = np.broadcast_to(np.asarray(df, dtype=np.float64), y.shape)
        z = np.sort(stats.t.cdf((mu - y) / t_scale(sigma, nu), nu).ravel())
        lower, upper = 0.5 - expected / 2.0, 0.5 + expected / 2.0
    inside = np.searchsorted(z, upper, side="right") - np.searchsorted(z, lower, side="left")
    return expected, inside / z.size


def miscalibration_area(
    y_true: np.ndarray, y_pred: np.ndarray, y_std: np.ndarray, n_levels: int = 100,
    df: np.ndarray | None = None, level_map: np.ndarray | None = None,
    base_std: np.ndarray | None = None,
) -> float:
    """Area between the calibration curve and the diagonal (uncertainty-toolbox definition).

    Both curves are piecewise linear in p, so the area is integrated exactly, segment by
    segment, splitting a segment where the curves cross.
    """
    expected, observed = calibration_curve(y_true, y_pred, y_std, n_levels, df, level_map,
                                           base_std)
    d = observed - expected
    if not np.isfinite(d).all():
        return float("nan")
    h = np.diff(expected)
    d0, d1 = d[:-1], d[1:]
    same_sign = d0 * d1 >= 0
    trapezoid = 0.5 * (np.abs(d0) + np.abs(d1)) * h
    denom = np.where(same_sign, 1.0, np.abs(d0) + np.abs(d1))
    crossing = 0.5 * h * (d0**2 + d1**2) / denom
    return float(np.sum(np.where(same_sign, trapezoid, crossing)))


def rmse_rmv_curve(
    y_true: np.ndarray, y_pred: np.ndarray, y_std: np.ndarray, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Error-based calibration (Levi et al. 2022): per bin of sorted y_std, (RMV, RMSE).

    Targets are sorted by y_std and split into ``n_bins`` bins of (near-)equal count;
    RMV_b = sqrt(mean sigma^2), RMSE_b = sqrt(mean (y_pred - y_true)^2). Perfect calibration
    puts every point on y = x.
    """
    y, mu, sigma = _arrays(y_true, y_pred, y_std)
    y, mu, sigma = y.ravel(), mu.ravel(), sigma.ravel()
    if not _all_finite(y, mu, sigma):
        return np.full(n_bins, np.nan), np.full(n_bins, np.nan)
    n_bins = max(1, min(n_bins, y.size))
    order = np.argsort(sigma, kind="stable")
    bins = np.array_split(order, n_bins)
    rmv = np.array([np.sqrt(np.mean(sigma[b] ** 2)) for b in bins])
    rmse_b = np.array([np.sqrt(np.mean((mu[b] - y[b]) ** 2)) for b in bins])
    return rmv, rmse_b


def ence(y_true: np.ndarray, y_pred: np.ndarray, y_std: np.ndarray, n_bins: int = 10) -> float:
    """Expected normalised calibration error: mean_b |RMSE_b - RMV_b| / RMV_b (Levi et al.)."""
    rmv, rmse_b = rmse_rmv_curve(y_true, y_pred, y_std, n_bins)
    return float(np.mean(np.abs(rmse_b - rmv) / rmv))


def coverage(
    y_true: np.ndarray, y_pred: np.ndarray, y_std: np.ndarray, level: float = 0.95,
    df: np.ndarray | None = None, level_map: np.ndarray | None = None,
    base_std: np.ndarray | None = None,
) -> float:
    """Fraction of targets inside the central Gaussian (with ``df``: Student-t) interval of
    probability ``level``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level}")
    y, mu, sigma = _arrays(y_true, y_pred, y_std)
    if not _all_finite(y, mu, sigma):
        return float("nan")
    if level_map is not None:  # isotonic recalibration: the central interval of R o F
        from uqbench.metrics.level_map import pit

        return float(np.mean(np.abs(pit(y, mu, base_std, level_map, df) - 0.5)
                             <= level / 2.0))
    q = 0.5 + level / 2.0
    if df is not None:
        df = np.broadcast_to(np.asarray(df, dtype=np.float64), sigma.shape)
    half_width = standard_quantile(np.float64(q), df) * sigma
    return float(np.mean(np.abs(y - mu) <= half_width))


def sharpness(y_std: np.ndarray) -> float:
    """Root mean predicted variance, sqrt(mean sigma^2) (uncertainty-toolbox)."""
    sigma = np.asarray(y_std, dtype=np.float64)
    return float(np.sqrt(np.mean(sigma**2)))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y, mu = _arrays(y_true, y_pred)
    return float(np.sqrt(np.mean((mu - y) ** 2)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y, mu = _arrays(y_true, y_pred)
    return float(np.mean(np.abs(mu - y)))


def ood_auroc(score_id: np.ndarray, score_ood: np.ndarray) -> float:
    """ROC-AUC of separating OOD from ID by an uncertainty score (OOD is the positive class).

    Equals P(score_ood > score_id) + P(tie) / 2, computed from mid-ranks (Mann-Whitney U).
    """
    a = np.asarray(score_id, dtype=np.float64).ravel()
    b = np.asarray(score_ood, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("ood_auroc needs non-empty ID and OOD scores")
    if not _all_finite(a, b):
        return float("nan")
    ranks = stats.rankdata(np.concatenate([a, b]))
    u = ranks[a.size :].sum() - b.size * (b.size + 1) / 2.0
    return float(u / (a.size * b.size))
